//! Every firewall provider passes one conformance suite; the AWS provider runs against moto's
//! EC2 server (`PORTCULLIS_TEST_MOTO_URL`, started by scripts/test.sh) and is checked through an
//! independent client (boto3); the host provider with the real agent in process, its nftables
//! table in a network namespace.

#[cfg(any(feature = "aws", feature = "gcp", feature = "azure"))]
use crate::common;
use chrono::TimeDelta;
use portcullis::domain::{MemoryProvider, ProviderConfig, now};
use portcullis::provider::memory::MemoryFirewall;
use portcullis::provider::{
    CheckOutcome, FirewallProvider, Owner, RuleRef, RuleRequest, Target, is_owned_description, is_unmanaged,
};
#[cfg(any(feature = "aws", feature = "gcp", feature = "azure"))]
use portcullis::settings::{Count, Millis, Seconds};
use std::collections::BTreeSet;
use std::net::IpAddr;

#[cfg(feature = "aws")]
mod aws;
#[cfg(feature = "azure")]
mod azure;
#[cfg(feature = "gcp")]
mod gcp;
mod host;

const V4: &str = "203.0.113.10";
const V6: &str = "2001:db8::10";
/// Opened by someone else before the suite runs; must survive it untouched.
const FOREIGN: &str = "198.51.100.7";

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn request(address: &str, session_id: &str) -> RuleRequest {
    RuleRequest {
        address: ip(address),
        owner: Owner { session_id: session_id.into(), expires_at: now() + TimeDelta::hours(1) },
    }
}

/// How a provider keeps its rules, where providers legitimately differ.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Rules {
    /// A rule per address, described with its owner; a foreign rule for an address is ridden on.
    PerAddress,
    /// Many addresses share one rule per family (GCP, Azure, a host's sets), described with the
    /// resource.
    Shared,
}

/// What every provider must do, whatever its API: the behaviours below, each starting from
/// the state the one before left. `target` must hold the FOREIGN rule and no rule of ours; the
/// caller checks afterwards that the foreign rule is intact.
async fn conformance(provider: &dyn FirewallProvider, target: &Target, rules: Rules) {
    checks_the_firewall_and_lists_nothing_foreign_as_ours(provider, target).await;
    let opened = opens_a_batch_of_both_families_in_order(provider, target, rules).await;
    applying_again_answers_the_existing_rule(provider, target, &opened).await;
    never_takes_over_a_foreign_rule(provider, target, rules).await;
    revokes_by_id_and_by_address_and_a_removed_rule_again(provider, target, &opened).await;
}

async fn checks_the_firewall_and_lists_nothing_foreign_as_ours(provider: &dyn FirewallProvider, target: &Target) {
    assert!(matches!(provider.check(target).await, CheckOutcome::Ok(_)), "check of an existing firewall");
    assert_eq!(provider.list_owned(target).await.unwrap(), [], "foreign rules are never listed as ours");
}

/// One batch, both address families: one rule id per address, in request order, listed as ours.
async fn opens_a_batch_of_both_families_in_order(
    provider: &dyn FirewallProvider,
    target: &Target,
    rules: Rules,
) -> Vec<String> {
    let batch = [request(V4, "session-a"), request(V6, "session-b")];
    let opened: Vec<String> = provider.apply(target, &batch).await.into_iter().map(Result::unwrap).collect();
    assert_eq!(opened.len(), 2);
    assert_ne!(opened[0], opened[1]);
    let owned = provider.list_owned(target).await.unwrap();
    assert!(owned.iter().all(|rule| is_owned_description(&rule.description)), "{owned:?}");
    if rules == Rules::PerAddress {
        let descriptions: BTreeSet<String> = owned.iter().map(|rule| rule.description.clone()).collect();
        let owners: BTreeSet<String> = batch.iter().map(|request| request.owner.description()).collect();
        assert_eq!(descriptions, owners, "each rule names its owner");
    }
    let listed: BTreeSet<(IpAddr, String)> = owned.into_iter().map(|rule| (rule.address, rule.rule_id)).collect();
    let expected: BTreeSet<(IpAddr, String)> =
        batch.iter().zip(&opened).map(|(request, id)| (request.address, id.clone())).collect();
    assert_eq!(listed, expected, "listed rules are the opened ones");
    opened
}

/// After a crash the engine may apply an address again: the answer is the rule already open.
async fn applying_again_answers_the_existing_rule(provider: &dyn FirewallProvider, target: &Target, opened: &[String]) {
    let again = provider.apply(target, &[request(V4, "session-c")]).await;
    assert_eq!(again, [Ok(opened[0].clone())]);
}

/// An address a foreign rule already opens: ridden on (never taken over), or opened in our own
/// rule and removed from it again; either way the foreign rule stays.
async fn never_takes_over_a_foreign_rule(provider: &dyn FirewallProvider, target: &Target, rules: Rules) {
    let foreign = provider.apply(target, &[request(FOREIGN, "session-d")]).await;
    let [Ok(foreign_id)] = &foreign[..] else { panic!("foreign address: {foreign:?}") };
    assert_eq!(is_unmanaged(foreign_id), rules == Rules::PerAddress, "{foreign_id}");
    if !is_unmanaged(foreign_id) {
        let ours = RuleRef { address: ip(FOREIGN), rule_id: Some(foreign_id.clone()) };
        assert_eq!(provider.revoke(target, &[ours]).await, [Ok(())]);
    }
}

/// Revoke by id, and by address when the id was never recorded; then once more: already gone
/// counts as removed.
async fn revokes_by_id_and_by_address_and_a_removed_rule_again(
    provider: &dyn FirewallProvider,
    target: &Target,
    opened: &[String],
) {
    let refs =
        [RuleRef { address: ip(V4), rule_id: Some(opened[0].clone()) }, RuleRef { address: ip(V6), rule_id: None }];
    assert_eq!(provider.revoke(target, &refs).await, [Ok(()), Ok(())]);
    assert_eq!(provider.list_owned(target).await.unwrap(), []);
    assert_eq!(provider.revoke(target, &refs[..1]).await, [Ok(())], "revoking a removed rule succeeds");
}

/// A second engine on the test server's database, as another replica would run; send true to
/// stop it, then await it.
#[cfg(any(feature = "gcp", feature = "azure"))]
fn second_replica(db: &sea_orm::DatabaseConnection) -> (tokio::sync::watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let config = common::test_config();
    let second = portcullis::engine::Engine::new(
        db.clone(),
        db.clone(),
        portcullis::provider::Providers::new(
            MemoryFirewall::in_process(),
            &config.providers,
            config.engine.provider_timeout(),
        ),
        portcullis::engine::EngineConfig::default(),
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    (stop, tokio::spawn(async move { second.run(stopped).await }))
}

/// A server that reconciles every second and repairs at once, holding one resource on
/// `provider` with an ACTIVE session for V4; answers the database (keep it), the fixture and the
/// resource's id.
#[cfg(any(feature = "gcp", feature = "azure"))]
async fn reconciling_with_a_session(
    provider: portcullis::pb::v1::resource::Provider,
) -> (common::TestDb, common::Fixture, String) {
    let db = common::TestDb::sqlite();
    let mut config = common::test_config();
    config.engine.reconcile_interval_secs = Some(Seconds::of::<1>());
    config.engine.repair_grace_secs = Seconds::of::<0>();
    let mut f = common::Fixture::with_server(common::TestServer::start_with(&db, config).await).await;
    let resource_id = f.resource_on("bastion", provider).await;
    let key = f.user_key.clone();
    let session = f.start(&key, Some(V4), None).await.unwrap();
    f.watch_until(&key, &session.id, portcullis::pb::v1::SessionStatus::Active).await;
    (db, f, resource_id)
}

/// How long the cloud tests wait for the reconciler to repair drift.
#[cfg(any(feature = "gcp", feature = "azure"))]
const TEN_SECONDS: std::time::Duration = std::time::Duration::from_secs(10);

/// A memory firewall holding the FOREIGN rule, and its target.
fn memory_with_foreign_rule() -> (MemoryFirewall, Target) {
    let memory = MemoryFirewall::in_process();
    let target = Target {
        resource_id: "memory-1".into(),
        organization_id: "organization-1".into(),
        config: ProviderConfig::Memory(MemoryProvider::default()),
    };
    memory.plant(&target.resource_id, ip(FOREIGN), "office VPN").unwrap();
    (memory, target)
}

#[tokio::test]
async fn memory_provider_conforms() {
    let (memory, target) = memory_with_foreign_rule();
    conformance(&memory, &target, Rules::PerAddress).await;
    let left: Vec<IpAddr> = memory.rules(&target.resource_id).into_keys().collect();
    assert_eq!(left, [ip(FOREIGN)], "only the foreign rule is left");
}

/// The suite again through what the engine calls: the provider the registry hands out, inside
/// the decorator that bounds every call by the deadline and counts its errors (`Bounded`).
#[tokio::test]
async fn the_registrys_bounded_provider_conforms() {
    let (memory, target) = memory_with_foreign_rule();
    let config = portcullis::provider::ProvidersConfig::default();
    let providers = portcullis::provider::Providers::new(memory, &config, std::time::Duration::from_secs(5));
    let bounded = providers.for_config(&target.config, &portcullis::domain::CloudScopes::unrestricted()).unwrap();
    conformance(bounded.as_ref(), &target, Rules::PerAddress).await;
    let left: Vec<IpAddr> = providers.memory().rules(&target.resource_id).into_keys().collect();
    assert_eq!(left, [ip(FOREIGN)], "only the foreign rule is left");
}
