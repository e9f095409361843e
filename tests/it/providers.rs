//! Every firewall provider passes one conformance suite; the AWS provider runs against moto's
//! EC2 server (`PORTCULLIS_TEST_MOTO_URL`, started by scripts/test.sh) and is checked through an
//! independent client (boto3).

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
    /// Many addresses share one rule per family (GCP, Azure), described with the resource.
    #[cfg_attr(not(any(feature = "gcp", feature = "azure")), allow(dead_code))]
    Shared,
}

/// What every provider must do, whatever its API. `target` must hold the FOREIGN rule and no
/// rule of ours; the caller checks afterwards that the foreign rule is intact.
async fn conformance(provider: &dyn FirewallProvider, target: &Target, rules: Rules) {
    assert!(matches!(provider.check(target).await, CheckOutcome::Ok(_)), "check of an existing firewall");
    assert_eq!(provider.list_owned(target).await.unwrap(), [], "foreign rules are never listed as ours");

    // One batch, both address families, in request order.
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

    // Applying again answers the existing rule: after a crash the engine may re-apply.
    let again = provider.apply(target, &[request(V4, "session-c")]).await;
    assert_eq!(again, [Ok(opened[0].clone())]);

    // An address a foreign rule already opens: ridden on (never taken over), or opened in our own
    // rule and removed from it again; either way the foreign rule stays.
    let foreign = provider.apply(target, &[request(FOREIGN, "session-d")]).await;
    let [Ok(foreign_id)] = &foreign[..] else { panic!("foreign address: {foreign:?}") };
    assert_eq!(is_unmanaged(foreign_id), rules == Rules::PerAddress, "{foreign_id}");
    if !is_unmanaged(foreign_id) {
        let ours = RuleRef { address: ip(FOREIGN), rule_id: Some(foreign_id.clone()) };
        assert_eq!(provider.revoke(target, &[ours]).await, [Ok(())]);
    }

    // Revoke by id, and by address when the id was never recorded; then once more: already gone.
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

/// Waits (up to 10 s) until `done` holds.
#[cfg(any(feature = "gcp", feature = "azure"))]
async fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

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

#[cfg(feature = "aws")]
mod aws {
    use super::*;
    use common::moto::{Ec2Proxy, REGION, ec2, moto, new_group, resource_on_moto, rules_in};
    use common::{Fixture, TestDb, TestServer, with_key};
    use portcullis::domain::AwsSecurityGroup;
    use portcullis::pb::v1::{self as pb, SessionStatus};
    use portcullis::provider::ProviderError;

    use portcullis::provider::aws::{AwsFirewall, RESOURCE_TAG};

    fn group(endpoint: &str, group_id: &str) -> AwsSecurityGroup {
        AwsSecurityGroup {
            region: REGION.into(),
            group_id: group_id.into(),
            protocol: "tcp".into(),
            from_port: 22,
            to_port: 22,
            endpoint_url: Some(endpoint.into()),
            role_arn: None,
            max_rules: None,
        }
    }

    fn target(config: AwsSecurityGroup) -> Target {
        Target {
            resource_id: portcullis::domain::new_id(),
            organization_id: portcullis::domain::new_id(),
            config: ProviderConfig::AwsSecurityGroup(config),
        }
    }

    #[tokio::test]
    async fn aws_provider_conforms() {
        let Some(endpoint) = moto() else { return };
        let group_id = new_group(&endpoint);
        ec2(&endpoint, &["plant", &group_id, &format!("{FOREIGN}/32"), "office VPN"]);
        conformance(
            &AwsFirewall::new(&Default::default(), 1.0),
            &target(group(&endpoint, &group_id)),
            Rules::PerAddress,
        )
        .await;
        let left = rules_in(&endpoint, &group_id);
        assert_eq!(left, BTreeSet::from([(format!("{FOREIGN}/32"), "office VPN".into(), String::new())]));
    }

    /// An endpoint that pages `nextToken` forever (broken or hostile) cannot keep the provider
    /// listing: it gives up after a bounded number of pages with a transient error.
    #[tokio::test]
    async fn aws_listing_stops_at_an_endless_pager() {
        // moto's environment provides the (dummy) credentials the SDK signs with.
        let Some(_) = moto() else { return };
        let pages = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let served = pages.clone();
        let app = axum::Router::new().fallback(move || {
            served.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async {
                "<DescribeSecurityGroupRulesResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\">\
                 <requestId>1</requestId><securityGroupRuleSet/><nextToken>again</nextToken>\
                 </DescribeSecurityGroupRulesResponse>"
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endless = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let listing = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            AwsFirewall::new(&Default::default(), 1.0).list(&target(group(&endless, "sg-0123456789abcdef0"))),
        )
        .await
        .expect("the listing never ended");
        let Err(ProviderError::Transient(message)) = listing else { panic!("{listing:?}") };
        assert!(message.contains("pages"), "{message}");
        assert!((2..=10).contains(&pages.load(std::sync::atomic::Ordering::SeqCst)), "pages read");
    }

    #[tokio::test]
    async fn aws_check_tells_a_missing_group() {
        let Some(endpoint) = moto() else { return };
        let outcome =
            AwsFirewall::new(&Default::default(), 1.0).check(&target(group(&endpoint, "sg-0000000000deadbee"))).await;
        assert!(matches!(outcome, CheckOutcome::NotFound(_)), "{outcome:?}");
    }

    /// A resource's role is assumed through STS (moto's, via AWS_ENDPOINT_URL_STS from
    /// scripts/moto.sh) and its temporary credentials sign every EC2 call.
    #[tokio::test]
    async fn aws_role_arn_is_assumed_for_ec2_calls() {
        let Some(endpoint) = moto() else { return };
        assert!(std::env::var("AWS_ENDPOINT_URL_STS").is_ok(), "scripts/moto.sh exports AWS_ENDPOINT_URL_STS");
        let group_id = new_group(&endpoint);
        let proxy = Ec2Proxy::start(&endpoint, std::time::Duration::ZERO).await;
        let role = AwsSecurityGroup {
            role_arn: Some("arn:aws:iam::123456789012:role/portcullis".into()),
            ..group(&proxy.url, &group_id)
        };
        let target = target(role);
        ec2(&endpoint, &["start-recording"]);
        let results = AwsFirewall::new(&Default::default(), 1.0).apply(&target, &[request(V4, "session-r")]).await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert_eq!(rules_in(&endpoint, &group_id).len(), 1);
        let signers = proxy.access_keys();
        // STS hands out temporary keys (ASIA…); the environment's own key is "testing".
        assert!(!signers.is_empty() && signers.iter().all(|key| key.starts_with("ASIA")), "{signers:?}");
        // The role was assumed naming the resource's organization as the ExternalId.
        let calls = ec2(&endpoint, &["assume-role-calls"]);
        let ours: Vec<&serde_json::Value> = calls
            .as_array()
            .unwrap()
            .iter()
            .filter(|call| call["RoleArn"] == "arn:aws:iam::123456789012:role/portcullis")
            .collect();
        assert!(!ours.is_empty(), "moto recorded no AssumeRole: {calls}");
        assert!(
            ours.iter().any(|call| call["ExternalId"] == target.organization_id.as_str()),
            "no AssumeRole named the organization: {calls}"
        );
    }

    /// moto enforces EC2's 60-rule quota: a batch past it fails only the addresses beyond it.
    #[tokio::test]
    async fn aws_quota_fails_only_what_does_not_fit() {
        let Some(endpoint) = moto() else { return };
        let group_id = new_group(&endpoint);
        let target = target(group(&endpoint, &group_id));
        let batch: Vec<RuleRequest> = (1..=62).map(|n| request(&format!("192.0.2.{n}"), "session-q")).collect();
        let results = AwsFirewall::new(&Default::default(), 1.0).apply(&target, &batch).await;
        let opened = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(opened, 60, "the group's room is used");
        for result in &results[60..] {
            assert!(
                matches!(result, Err(ProviderError::Rejected(message)) if message.contains("is full")),
                "{result:?}"
            );
        }
        assert_eq!(rules_in(&endpoint, &group_id).len(), 60);
    }

    /// A session on a moto security group opens our rules (seen through boto3) and removes them
    /// when stopped.
    #[tokio::test]
    async fn aws_session_opens_and_closes_rules() {
        let Some(endpoint) = moto() else { return };
        let group_id = new_group(&endpoint);
        let db = TestDb::sqlite();
        let mut f = Fixture::new(&db).await;
        let resource_id = f.resource_on("bastion", resource_on_moto(&endpoint, &group_id)).await;
        let key = f.user_key.clone();
        let session = f.start(&key, Some(V4), Some(V6)).await.unwrap();
        let seen = f.watch_until(&key, &session.id, SessionStatus::Active).await;
        let active = seen.last().unwrap();
        assert_eq!(active.status(), SessionStatus::Active, "{active:#?}");
        assert!(active.resource_ips.iter().all(|rule| rule.provider_rule_id.starts_with("sgr-")), "{active:#?}");

        let held = rules_in(&endpoint, &group_id);
        let cidrs: BTreeSet<&str> = held.iter().map(|(cidr, _, _)| cidr.as_str()).collect();
        assert_eq!(cidrs, BTreeSet::from(["203.0.113.10/32", "2001:db8::10/128"]));
        for (cidr, description, tag) in &held {
            assert!(
                description.starts_with(&format!("portcullis session {} until ", session.id)),
                "{cidr}: {description}"
            );
            assert_eq!(tag, &resource_id, "{cidr} is tagged with its resource");
        }

        f.stop(&key, &session.id).await;
        let seen = f.watch_until(&key, &session.id, SessionStatus::Cancelled).await;
        assert_eq!(seen.last().unwrap().status(), SessionStatus::Cancelled);
        assert_eq!(rules_in(&endpoint, &group_id), BTreeSet::new(), "every rule is gone");
        f.server.stop().await;
    }

    /// Moving a resource to another security group (or another port) while a session holds
    /// rules on it is refused, so the old group never keeps a rule nobody removes; the name
    /// and the quota stay editable, and once the session has ended the move is allowed.
    #[tokio::test]
    async fn aws_resource_cannot_move_away_from_its_live_rules() {
        let Some(endpoint) = moto() else { return };
        let (old_group, new_group_id) = (new_group(&endpoint), new_group(&endpoint));
        let db = TestDb::sqlite();
        let mut f = Fixture::new(&db).await;
        let resource_id = f.resource_on("bastion", resource_on_moto(&endpoint, &old_group)).await;
        let key = f.user_key.clone();
        let session = f.start(&key, Some(V4), None).await.unwrap();
        f.watch_until(&key, &session.id, SessionStatus::Active).await;

        let admin = f.server.admin_key.clone();
        let update = |provider: pb::resource::Provider, paths: &[&str]| pb::UpdateResourceRequest {
            resource: Some(pb::Resource {
                id: resource_id.clone(),
                name: "bastion-renamed".into(),
                provider: Some(provider),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask { paths: paths.iter().map(|p| (*p).to_owned()).collect() }),
        };
        let moved = resource_on_moto(&endpoint, &new_group_id);
        let pb::resource::Provider::AwsSecurityGroup(old) = resource_on_moto(&endpoint, &old_group) else {
            unreachable!()
        };
        let other_port = pb::resource::Provider::AwsSecurityGroup(pb::AwsSecurityGroup { to_port: 23, ..old.clone() });
        for refused in [moved.clone(), other_port] {
            let err = f.resources.update_resource(with_key(update(refused, &["provider"]), &admin)).await.unwrap_err();
            assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
            assert_eq!(common::reason(&err), "ERROR_REASON_RESOURCE_IN_USE");
        }
        let quota = pb::resource::Provider::AwsSecurityGroup(pb::AwsSecurityGroup { max_rules: Some(50), ..old });
        f.resources.update_resource(with_key(update(quota.clone(), &["name", "provider"]), &admin)).await.unwrap();

        f.stop(&key, &session.id).await;
        f.watch_until(&key, &session.id, SessionStatus::Cancelled).await;
        assert_eq!(rules_in(&endpoint, &old_group), BTreeSet::new(), "the old group holds no rule of ours");
        f.resources.update_resource(with_key(update(moved, &["provider"]), &admin)).await.unwrap();
        let again = f.start(&key, Some(V4), None).await.unwrap();
        f.watch_until(&key, &again.id, SessionStatus::Active).await;
        assert_eq!(rules_in(&endpoint, &old_group), BTreeSet::new());
        assert_eq!(rules_in(&endpoint, &new_group_id).len(), 1, "the next session opens the new group");
        f.server.stop().await;
    }

    /// EC2 throttling (more than the SDK's own retries absorb) delays a session, never fails it.
    #[tokio::test]
    async fn aws_throttling_is_retried_not_failed() {
        let Some(endpoint) = moto() else { return };
        let group_id = new_group(&endpoint);
        let proxy = Ec2Proxy::start(&endpoint, std::time::Duration::ZERO).await;
        let db = TestDb::sqlite();
        let mut f = Fixture::new(&db).await;
        f.resource_on("bastion", resource_on_moto(&proxy.url, &group_id)).await;
        // More than the SDK's three attempts can absorb even if a reconcile pass's listing (three
        // attempts at most) takes its share.
        proxy.throttle_next(7);
        let key = f.user_key.clone();
        let session = f.start(&key, Some(V4), None).await.unwrap();
        let seen = f.watch_until(&key, &session.id, SessionStatus::Active).await;
        let statuses: Vec<SessionStatus> = seen.iter().map(|s| s.status()).collect();
        assert_eq!(statuses.last(), Some(&SessionStatus::Active), "{statuses:?}");
        // Read from the store: a watcher may be offered only the newest state, past the retry.
        let record = portcullis::store::queries::sessions::load(&f.server.db, &session.id).await.unwrap();
        assert!(
            record.rules[0].attempts > 0,
            "the throttling reached the engine, which retried it: {:?}",
            record.rules
        );
        assert_eq!(rules_in(&endpoint, &group_id).len(), 1);
        f.server.stop().await;
    }

    /// A proxy to moto enforcing EC2's request buckets of (burst, per second) for the mutating
    /// and the describe APIs, and a server config pacing itself to them.
    async fn metered(
        endpoint: &str,
        mutating: (u32, f64),
        describe: (u32, f64),
    ) -> (Ec2Proxy, portcullis::config::Config) {
        // EC2's buckets hold one call more than the server's: a call paced exactly after the
        // last may reach it a little sooner than that.
        let rate = |(burst, per_second)| common::moto::Rate { burst: burst + 1, per_second };
        let proxy = Ec2Proxy::with_quota(endpoint, rate(mutating), rate(describe)).await;
        let mut config = common::test_config();
        let rate = |(burst, per_second)| portcullis::provider::quota::Rate { burst, per_second };
        config.providers.aws_quota.mutating = rate(mutating);
        config.providers.aws_quota.describe = rate(describe);
        (proxy, config)
    }

    /// The engine paces its EC2 calls to the account's request buckets: sessions opened and
    /// closed one after another, against a proxy that meters calls as EC2 does with small
    /// buckets, are never refused for calling too fast.
    #[tokio::test]
    async fn aws_calls_stay_within_the_request_buckets() {
        let Some(endpoint) = moto() else { return };
        let group_id = new_group(&endpoint);
        let (proxy, config) = metered(&endpoint, (3, 4.0), (6, 8.0)).await;
        let db = TestDb::sqlite();
        let mut f = Fixture::with_server(TestServer::start_with(&db, config).await).await;
        f.resource_on("bastion", resource_on_moto(&proxy.url, &group_id)).await;
        let key = f.user_key.clone();
        let ids = f.start_one_by_one(&key, (1..=10).map(|n| format!("203.0.113.{n}"))).await;
        assert_eq!(rules_in(&endpoint, &group_id).len(), 10);
        f.stop_one_by_one(&key, &ids).await;
        assert_eq!(rules_in(&endpoint, &group_id), BTreeSet::new());
        assert_eq!(proxy.refused_by_quota(), 0, "calls refused for going too fast; calls made: {:?}", proxy.actions());
        f.server.stop().await;
    }

    /// A server with one resource on a fresh moto group, behind a counting proxy, whose user's
    /// first session is ACTIVE: the group was just written.
    struct JustWritten {
        endpoint: String,
        group_id: String,
        proxy: Ec2Proxy,
        f: Fixture,
        _db: TestDb,
    }

    impl JustWritten {
        async fn start(endpoint: String, config: portcullis::config::Config) -> JustWritten {
            let group_id = new_group(&endpoint);
            let proxy = Ec2Proxy::start(&endpoint, std::time::Duration::ZERO).await;
            let db = TestDb::sqlite();
            let mut f = Fixture::with_server(TestServer::start_with(&db, config).await).await;
            f.resource_on("bastion", resource_on_moto(&proxy.url, &group_id)).await;
            let key = f.user_key.clone();
            let first = f.start(&key, Some(V4), None).await.unwrap();
            f.watch_until(&key, &first.id, SessionStatus::Active).await;
            JustWritten { endpoint, group_id, proxy, f, _db: db }
        }

        /// Waits for `ids` to be ACTIVE, then asserts that the group holds them and the first
        /// session's rule, opened in two authorize calls in all.
        async fn opened_in_two_calls(mut self, ids: &[String]) {
            let key = self.f.user_key.clone();
            for id in ids {
                self.f.watch_until(&key, id, SessionStatus::Active).await;
            }
            assert_eq!(rules_in(&self.endpoint, &self.group_id).len(), ids.len() + 1);
            let authorizes = self.proxy.actions().get("AuthorizeSecurityGroupIngress").copied().unwrap_or(0);
            assert_eq!(authorizes, 2, "calls made: {:?}", self.proxy.actions());
            self.f.server.stop().await;
        }
    }

    /// Sessions that start on one group while its last write is recent gather for one write: a
    /// first session, then four more a few hundred milliseconds apart (each sooner than the quiet
    /// time after the one before), cost the account's bucket two authorize calls, not one per arrival.
    #[tokio::test]
    async fn sessions_starting_one_after_another_on_a_group_share_its_next_write() {
        let Some(endpoint) = moto() else { return };
        let mut config = common::test_config();
        config.providers.aws_quota.group_write_quiet_ms = Millis::of::<500>();
        let mut group = JustWritten::start(endpoint, config).await;
        let key = group.f.user_key.clone();
        let mut ids = Vec::new();
        for n in 1..=4 {
            tokio::time::sleep(std::time::Duration::from_millis(150)).await;
            ids.push(group.f.start(&key, Some(&format!("203.0.113.{n}")), None).await.unwrap().id);
        }
        group.opened_in_two_calls(&ids).await;
    }

    /// A burst of sessions on a group written a moment ago goes out once the burst has ended (the
    /// quiet time), not when the group's write interval is over: with an interval of a minute,
    /// four sessions started together just after a first are ACTIVE within the watch's 20 s, in
    /// one more call.
    #[tokio::test]
    async fn a_burst_on_a_recently_written_group_goes_out_once_it_ends() {
        let Some(endpoint) = moto() else { return };
        let mut config = common::test_config();
        config.providers.aws_quota.group_write_interval_ms = Millis::of::<60_000>();
        let group = JustWritten::start(endpoint, config).await;
        let burst = futures::future::join_all((1..=4).map(|n| {
            let mut sessions = group.f.sessions.clone();
            let key = group.f.user_key.clone();
            async move {
                let request =
                    pb::StartSessionRequest { ipv4_address: Some(format!("203.0.113.{n}")), ..Default::default() };
                sessions.start_session(common::with_key(request, &key)).await.unwrap().into_inner().session.unwrap().id
            }
        }))
        .await;
        group.opened_in_two_calls(&burst).await;
    }

    /// The reconciler lists firewalls with the describe quota the worker leaves: a server that
    /// starts with many resources to reconcile and a describe bucket of one call a second opens
    /// a session at its next token, not after listing every other firewall.
    #[tokio::test]
    async fn reconciling_never_makes_a_session_wait_for_quota() {
        let Some(endpoint) = moto() else { return };
        let (proxy, mut config) = metered(&endpoint, (50, 5.0), (1, 1.0)).await;
        let db = TestDb::sqlite();
        // Resources are made on a server that neither reconciles nor checks them (its calls
        // would draw on the account's bucket beside the next server's)...
        let mut setup = config.clone();
        setup.engine.reconcile_interval_secs = Some(Seconds::of::<0>());
        setup.engine.check_interval_secs = Seconds::of::<0>();
        let mut f = Fixture::with_server(TestServer::start_with(&db, setup).await).await;
        let groups = common::moto::new_groups(&endpoint, 11);
        f.resource_on("bastion", resource_on_moto(&proxy.url, &groups[0])).await;
        // Ten more nobody opens: only the reconciler calls them.
        for (n, group_id) in groups[1..].iter().enumerate() {
            let resource = pb::Resource {
                name: format!("group-{n}"),
                provider: Some(resource_on_moto(&proxy.url, group_id)),
                ..Default::default()
            };
            let request = pb::CreateResourceRequest { resource: Some(resource) };
            f.resources.create_resource(with_key(request, &f.server.admin_key)).await.unwrap();
        }
        // ...and served by one that finds all of them due as it starts.
        config.engine.reconcile_interval_secs = Some(Seconds::of::<30>());
        let restarted = f.server.replica(&db, config).await;
        std::mem::replace(&mut f.server, restarted).stop().await;
        f.sessions = portcullis::pb::v1::session_service_client::SessionServiceClient::new(f.server.channel().await);
        let listed = |proxy: &Ec2Proxy| proxy.actions().get("DescribeSecurityGroupRules").copied().unwrap_or(0);
        let before = listed(&proxy);
        let key = f.user_key.clone();
        let session = f.start(&key, Some(V4), None).await.unwrap();
        f.watch_until(&key, &session.id, SessionStatus::Active).await;
        let meanwhile = listed(&proxy) - before;
        // The worker's own listing, and at most the reconciler's that was under way.
        assert!(meanwhile <= 2, "{meanwhile} listings went out before the session's rule: {:?}", proxy.actions());
        assert_eq!(proxy.refused_by_quota(), 0, "calls refused for going too fast: {:?}", proxy.actions());
        f.server.stop().await;
    }

    /// Sessions started together share EC2 calls: one describe and one authorize per batch.
    #[tokio::test]
    async fn aws_sessions_started_together_share_calls() {
        let Some(endpoint) = moto() else { return };
        let group_id = new_group(&endpoint);
        let proxy = Ec2Proxy::start(&endpoint, std::time::Duration::ZERO).await;
        let db = TestDb::sqlite();
        let mut f = Fixture::new(&db).await;
        f.resource_on("bastion", resource_on_moto(&proxy.url, &group_id)).await;
        let key = f.user_key.clone();
        const SESSIONS: usize = 50;
        let started = futures::future::join_all((1..=SESSIONS).map(|n| {
            let mut sessions = f.sessions.clone();
            let key = key.clone();
            async move {
                let request =
                    pb::StartSessionRequest { ipv4_address: Some(format!("203.0.113.{n}")), ..Default::default() };
                sessions.start_session(common::with_key(request, &key)).await.unwrap().into_inner().session.unwrap().id
            }
        }))
        .await;
        for id in &started {
            f.watch_until(&key, id, SessionStatus::Active).await;
        }
        let opened = proxy.actions();
        futures::future::join_all(started.iter().map(|id| {
            let mut sessions = f.sessions.clone();
            let key = key.clone();
            async move {
                sessions.stop_session(common::with_key(pb::StopSessionRequest { id: id.clone() }, &key)).await.unwrap()
            }
        }))
        .await;
        for id in &started {
            f.watch_until(&key, id, SessionStatus::Cancelled).await;
        }
        let all = proxy.actions();
        let authorize = opened.get("AuthorizeSecurityGroupIngress").copied().unwrap_or(0);
        let revoke = all.get("RevokeSecurityGroupIngress").copied().unwrap_or(0);
        eprintln!("aws: {SESSIONS} sessions started together: {opened:?}; after stopping them together: {all:?}");
        assert!((1..SESSIONS).contains(&authorize), "{authorize} authorize calls for {SESSIONS} sessions");
        assert!((1..SESSIONS).contains(&revoke), "{revoke} revoke calls for {SESSIONS} sessions");
        assert_eq!(rules_in(&endpoint, &group_id), BTreeSet::new());
        f.server.stop().await;
    }

    /// The reconciler on moto: our orphan goes, a rule deleted behind our back comes back (a
    /// new rule id recorded), foreign rules and another resource's rules stay.
    #[tokio::test]
    async fn aws_reconciler_repairs_drift_and_never_touches_foreign_rules() {
        let Some(endpoint) = moto() else { return };
        let group_id = new_group(&endpoint);
        let db = TestDb::sqlite();
        let mut config = common::test_config();
        config.engine.reconcile_interval_secs = Some(Seconds::of::<1>());
        config.engine.repair_grace_secs = Seconds::of::<0>();
        let mut f = Fixture::with_server(TestServer::start_with(&db, config).await).await;
        let resource_id = f.resource_on("bastion", resource_on_moto(&endpoint, &group_id)).await;
        let key = f.user_key.clone();
        let session = f.start(&key, Some(V4), None).await.unwrap();
        let active = f.watch_until(&key, &session.id, SessionStatus::Active).await.pop().unwrap();
        let first_rule_id = active.resource_ips[0].provider_rule_id.clone();

        let ours = format!("{RESOURCE_TAG}={resource_id}");
        let lost = "portcullis session 0192-lost until 2026-01-01T00:00:00Z";
        ec2(&endpoint, &["plant", &group_id, "198.51.100.1/32", lost, &ours]);
        ec2(&endpoint, &["plant", &group_id, "198.51.100.2/32", "office VPN"]);
        // Someone else's rule for the orphan's address (HTTPS): it stays when the orphan goes.
        ec2(&endpoint, &["plant-port", &group_id, "443", "198.51.100.1/32", "web from the office"]);
        // Marked, but for another Portcullis resource on the same group: not this resource's orphan.
        let other = format!("{RESOURCE_TAG}=another-resource");
        ec2(&endpoint, &["plant", &group_id, "198.51.100.3/32", lost, &other]);
        // Someone deletes the session's rule by hand.
        ec2(&endpoint, &["revoke", &group_id, &first_rule_id]);
        let converged = || {
            let rules = rules_in(&endpoint, &group_id);
            let has = |cidr: &str, description: &str, tag: &str| {
                rules.contains(&(cidr.into(), description.into(), tag.into()))
            };
            let orphan_gone = !rules.iter().any(|(_, description, tag)| description == lost && *tag == resource_id);
            let repaired = rules.iter().any(|(cidr, _, tag)| cidr == "203.0.113.10/32" && *tag == resource_id);
            let foreign_intact = has("198.51.100.1/32", "web from the office", "")
                && has("198.51.100.2/32", "office VPN", "")
                && has("198.51.100.3/32", lost, "another-resource");
            (orphan_gone && repaired && foreign_intact && rules.len() == 4).then_some(()).ok_or(rules)
        };
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
        while let Err(rules) = converged() {
            assert!(tokio::time::Instant::now() < deadline, "drift outlived the passes: {rules:?}");
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
        loop {
            let record = portcullis::store::queries::sessions::load(&f.server.db, &session.id).await.unwrap();
            let rule = &record.rules[0];
            if rule.status.as_str() == "APPLIED" && rule.provider_rule_id.as_deref() != Some(first_rule_id.as_str()) {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "the repaired rule id was never recorded: {rule:?}");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        f.server.stop().await;
    }
}

#[cfg(feature = "gcp")]
mod gcp {
    use super::*;
    use common::gcp_fake::FakeCompute;
    use common::{Fixture, TestDb};
    use portcullis::domain::GcpFirewall as GcpConfig;
    use portcullis::pb::v1::{self as pb, SessionStatus};
    use portcullis::provider::ProviderError;
    use portcullis::provider::gcp::GcpFirewall;
    use serde_json::{Value, json};

    const PROJECT: &str = "acme-prod";

    fn config(endpoint: &str) -> GcpConfig {
        GcpConfig {
            project: PROJECT.into(),
            network: "default".into(),
            protocol: "tcp".into(),
            ports: vec!["22".into()],
            target_tags: vec!["bastion".into()],
            target_service_accounts: Vec::new(),
            priority: 900,
            endpoint_url: Some(endpoint.into()),
        }
    }

    fn resource_on_fake(endpoint: &str) -> pb::resource::Provider {
        pb::resource::Provider::GcpFirewall(pb::GcpFirewall {
            project: PROJECT.into(),
            network: "default".into(),
            protocol: "tcp".into(),
            ports: vec!["22".into()],
            target_tags: vec!["bastion".into()],
            priority: 900,
            endpoint_url: Some(endpoint.into()),
            ..Default::default()
        })
    }

    fn office_vpn() -> Value {
        json!({"name": "office-vpn", "description": "office VPN", "direction": "INGRESS",
               "network": format!("projects/{PROJECT}/global/networks/default"),
               "allowed": [{"IPProtocol": "tcp", "ports": ["22"]}], "sourceRanges": [format!("{FOREIGN}/32")]})
    }

    /// The single hosts a rule lets in, as the API shows them.
    fn ranges(rule: &Value) -> BTreeSet<String> {
        rule["sourceRanges"].as_array().unwrap().iter().map(|range| range.as_str().unwrap().to_owned()).collect()
    }

    fn rule_name(resource_id: &str, family: &str) -> String {
        format!("portcullis-{}-{family}", resource_id.replace('-', ""))
    }

    #[tokio::test]
    async fn gcp_provider_conforms() {
        let fake = FakeCompute::start().await;
        fake.put_rule(PROJECT, office_vpn());
        let target = Target {
            resource_id: portcullis::domain::new_id(),
            organization_id: portcullis::domain::new_id(),
            config: ProviderConfig::GcpFirewall(config(&fake.url)),
        };
        conformance(&GcpFirewall::new(true, &Default::default(), 1.0), &target, Rules::Shared).await;
        assert_eq!(fake.rule_names(PROJECT), ["office-vpn"], "emptied rules are deleted, never left open to all");
        assert_eq!(fake.rule(PROJECT, "office-vpn").unwrap(), office_vpn(), "the foreign rule is untouched");
    }

    #[tokio::test]
    async fn gcp_rules_carry_the_resource_settings_one_family_each() {
        let fake = FakeCompute::start().await;
        let target = Target {
            resource_id: portcullis::domain::new_id(),
            organization_id: portcullis::domain::new_id(),
            config: ProviderConfig::GcpFirewall(config(&fake.url)),
        };
        let results = GcpFirewall::new(true, &Default::default(), 1.0)
            .apply(&target, &[request(V4, "s"), request(V6, "s")])
            .await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        let v4 = fake.rule(PROJECT, &rule_name(&target.resource_id, "v4")).expect("IPv4 rule");
        assert_eq!(v4["direction"], "INGRESS");
        assert_eq!(v4["network"], format!("projects/{PROJECT}/global/networks/default"));
        assert_eq!(v4["priority"], 900);
        assert_eq!(v4["allowed"], json!([{"IPProtocol": "tcp", "ports": ["22"]}]));
        assert_eq!(v4["targetTags"], json!(["bastion"]));
        assert_eq!(ranges(&v4), BTreeSet::from([format!("{V4}/32")]));
        let v6 = fake.rule(PROJECT, &rule_name(&target.resource_id, "v6")).expect("IPv6 rule");
        assert_eq!(ranges(&v6), BTreeSet::from([format!("{V6}/128")]));
    }

    #[tokio::test]
    async fn gcp_never_changes_a_foreign_rule_under_our_name() {
        let fake = FakeCompute::start().await;
        let target = Target {
            resource_id: portcullis::domain::new_id(),
            organization_id: portcullis::domain::new_id(),
            config: ProviderConfig::GcpFirewall(config(&fake.url)),
        };
        let squatter = json!({"name": rule_name(&target.resource_id, "v4"), "description": "hand made",
                              "sourceRanges": ["0.0.0.0/0"]});
        fake.put_rule(PROJECT, squatter.clone());
        let results = GcpFirewall::new(true, &Default::default(), 1.0).apply(&target, &[request(V4, "s")]).await;
        assert!(
            matches!(&results[..], [Err(ProviderError::Rejected(message))] if message.contains("not managed by Portcullis")),
            "{results:?}"
        );
        assert_eq!(fake.rule(PROJECT, &rule_name(&target.resource_id, "v4")).unwrap(), squatter);
    }

    /// Writes are paced to the project's quota: sessions opened and closed one after another,
    /// against a fake that refuses writes beyond a small quota as Compute does, are never refused.
    #[tokio::test]
    async fn gcp_writes_stay_within_the_project_quota() {
        let fake = FakeCompute::start().await;
        fake.limit_writes(2, 4.0);
        let mut config = common::test_config();
        config.providers.gcp_quota.writes = portcullis::provider::quota::Rate { burst: 2, per_second: 4.0 };
        let db = TestDb::sqlite();
        let mut f = Fixture::with_server(common::TestServer::start_with(&db, config).await).await;
        let resource_id = f.resource_on("bastion", resource_on_fake(&fake.url)).await;
        let key = f.user_key.clone();
        let ids = f.start_one_by_one(&key, (1..=6).map(|n| format!("203.0.113.{n}"))).await;
        f.stop_one_by_one(&key, &ids).await;
        assert_eq!(fake.rule(PROJECT, &rule_name(&resource_id, "v4")), None);
        assert_eq!(fake.refused_writes(), 0, "writes refused past the quota; calls: {:?}", fake.calls());
        f.server.stop().await;
    }

    /// A project whose write quota is spent holds none of the worker's slots: a session on a
    /// memory resource, started while three GCP firewalls wait for their writes behind a single
    /// slot, is ACTIVE while the GCP session still waits.
    #[tokio::test]
    async fn a_firewall_waiting_for_its_quota_holds_up_no_other() {
        let fake = FakeCompute::start().await;
        let mut config = common::test_config();
        // One write every 4 s after the first, and one worker slot.
        config.providers.gcp_quota.writes = portcullis::provider::quota::Rate { burst: 1, per_second: 0.25 };
        config.engine.max_concurrent_resources = Count::of::<1>();
        let db = TestDb::sqlite();
        let mut f = Fixture::with_server(common::TestServer::start_with(&db, config).await).await;
        for name in ["bastion-1", "bastion-2", "bastion-3"] {
            f.resource_on(name, resource_on_fake(&fake.url)).await;
        }
        let key = f.user_key.clone();
        let waiting = f.start(&key, Some("203.0.113.7"), None).await.unwrap();

        let server = &f.server;
        let other = server.insert_user(&server.organization_id, "other@example.com", "USER").await;
        let other_key = server.insert_api_key(&other, portcullis::domain::Permission::ALL, None).await;
        let request = pb::CreateResourceRequest {
            resource: Some(pb::Resource {
                name: "db".into(),
                provider: Some(pb::resource::Provider::Memory(Default::default())),
                ..Default::default()
            }),
        };
        let admin_key = server.admin_key.clone();
        let created = f.resources.create_resource(common::with_key(request, &admin_key)).await.unwrap();
        f.assign(&created.into_inner().resource.unwrap().id, &other).await;
        let memory = f.start(&other_key, Some("198.51.100.9"), None).await.unwrap();
        f.watch_until(&other_key, &memory.id, SessionStatus::Active).await;

        let request = common::with_key(pb::GetSessionRequest { id: waiting.id.clone() }, &key);
        let gcp = f.sessions.get_session(request).await.unwrap().into_inner().session.unwrap();
        let applied = gcp.resource_ips.iter().filter(|rule| rule.status() == pb::ResourceIpStatus::Applied).count();
        assert!(applied < 3, "the memory session waited for every GCP write: {gcp:#?}");
        f.watch_until(&key, &waiting.id, SessionStatus::Active).await;
        f.server.stop().await;
    }

    /// Fifty sessions started and stopped at once against one resource, with the API throttling
    /// some calls: the rule always holds exactly the live addresses (no lost update).
    #[tokio::test]
    async fn gcp_fifty_concurrent_sessions_keep_exactly_the_live_addresses() {
        let fake = FakeCompute::start().await;
        let db = TestDb::sqlite();
        let mut f = Fixture::new(&db).await;
        let resource_id = f.resource_on("bastion", resource_on_fake(&fake.url)).await;
        let key = f.user_key.clone();
        fake.rate_limit_next(3);
        let addresses: Vec<String> = (1..=50).map(|n| format!("203.0.113.{n}")).collect();
        let started = futures::future::join_all(addresses.iter().map(|address| {
            let mut sessions = f.sessions.clone();
            let key = key.clone();
            async move {
                let request = pb::StartSessionRequest { ipv4_address: Some(address.clone()), ..Default::default() };
                sessions.start_session(common::with_key(request, &key)).await.unwrap().into_inner().session.unwrap().id
            }
        }))
        .await;
        for id in &started {
            let seen = f.watch_until(&key, id, SessionStatus::Active).await;
            assert_eq!(seen.last().unwrap().status(), SessionStatus::Active);
        }
        let rule = || fake.rule(PROJECT, &rule_name(&resource_id, "v4"));
        let cidrs =
            |addresses: &[String]| -> BTreeSet<String> { addresses.iter().map(|a| format!("{a}/32")).collect() };
        assert_eq!(ranges(&rule().unwrap()), cidrs(&addresses));

        let (stopping, staying) = started.split_at(25);
        futures::future::join_all(stopping.iter().map(|id| {
            let mut sessions = f.sessions.clone();
            let key = key.clone();
            async move {
                sessions.stop_session(common::with_key(pb::StopSessionRequest { id: id.clone() }, &key)).await.unwrap()
            }
        }))
        .await;
        for id in stopping {
            f.watch_until(&key, id, SessionStatus::Cancelled).await;
        }
        assert_eq!(ranges(&rule().unwrap()), cidrs(&addresses[25..]));
        for id in staying {
            f.stop(&key, id).await;
            f.watch_until(&key, id, SessionStatus::Cancelled).await;
        }
        assert_eq!(rule(), None, "the last removal deletes the rule");
        let writes = fake.calls().iter().filter(|call| !call.starts_with("GET")).count();
        eprintln!("gcp: 50 sessions started and stopped with {writes} write calls");
        f.server.stop().await;
    }

    /// The reconciler on the Compute fake: our orphan address goes, our rule deleted behind our
    /// back comes back with the live address, the foreign rule stays untouched.
    #[tokio::test]
    async fn gcp_reconciler_repairs_drift_and_never_touches_foreign_rules() {
        let fake = FakeCompute::start().await;
        fake.put_rule(PROJECT, office_vpn());
        let (_db, f, resource_id) = reconciling_with_a_session(resource_on_fake(&fake.url)).await;

        let name = rule_name(&resource_id, "v4");
        let mut ours = fake.rule(PROJECT, &name).unwrap();
        // The orphan is an address the foreign rule opens too: only ours loses it.
        ours["sourceRanges"] = json!([format!("{V4}/32"), format!("{FOREIGN}/32")]);
        fake.put_rule(PROJECT, ours);
        eventually("the orphan outlived the passes", || {
            !ranges(&fake.rule(PROJECT, &name).unwrap()).contains(&format!("{FOREIGN}/32"))
        })
        .await;
        assert_eq!(ranges(&fake.rule(PROJECT, &name).unwrap()), BTreeSet::from([format!("{V4}/32")]));

        // Someone deletes our rule by hand (a racing PATCH or a restore could lose it too).
        assert!(fake.remove_rule(PROJECT, &name));
        eventually("the missing rule was never put back", || fake.rule(PROJECT, &name).is_some()).await;
        assert_eq!(ranges(&fake.rule(PROJECT, &name).unwrap()), BTreeSet::from([format!("{V4}/32")]));
        assert_eq!(fake.rule(PROJECT, "office-vpn").unwrap(), office_vpn());
        f.server.stop().await;
    }

    /// Two replicas on one database work the same resource at once: the resource lease keeps
    /// their whole-list writes from interleaving, so no address is lost.
    #[tokio::test]
    async fn gcp_two_replicas_never_lose_each_others_addresses() {
        common::each_backend(|db: TestDb| async move {
            let fake = FakeCompute::start().await;
            let mut f = Fixture::new(&db).await;
            let resource_id = f.resource_on("bastion", resource_on_fake(&fake.url)).await;
            let (stop, replica) = second_replica(&f.server.db);

            let key = f.user_key.clone();
            let addresses: Vec<String> = (1..=40).map(|n| format!("203.0.113.{n}")).collect();
            let mut started = Vec::new();
            for address in &addresses {
                started.push(f.start(&key, Some(address), None).await.unwrap().id);
            }
            // Read from the store: on SQLite the bare second engine announces its changes to no
            // one, so the server's watchers and session cache never hear of the rules it applied.
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
            for id in &started {
                loop {
                    let record = portcullis::store::queries::sessions::load(&f.server.db, id).await.unwrap();
                    if record.session.status == portcullis::domain::SessionStatus::Active {
                        break;
                    }
                    assert!(tokio::time::Instant::now() < deadline, "{record:#?}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
            let rule = fake.rule(PROJECT, &rule_name(&resource_id, "v4")).unwrap();
            let expected: BTreeSet<String> = addresses.iter().map(|a| format!("{a}/32")).collect();
            assert_eq!(ranges(&rule), expected);
            stop.send(true).unwrap();
            replica.await.unwrap();
            f.server.stop().await;
        })
        .await;
    }
}

#[cfg(feature = "azure")]
mod azure {
    use super::*;
    use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
    use azure_core::credentials::{Secret, TokenCredential};
    use azure_core::http::{ClientOptions, Transport};
    use azure_identity::{ClientSecretCredential, ClientSecretCredentialOptions};
    use common::arm_fake::FakeArm;
    use common::certs::TestCa;
    use common::{Fixture, TestDb};
    use portcullis::domain::AzureNetworkSecurityGroup as NsgConfig;
    use portcullis::pb::v1 as pb;
    use portcullis::provider::ProviderError;
    use portcullis::provider::azure::AzureFirewall;
    use serde_json::{Value, json};
    use std::sync::Arc;

    const SUBSCRIPTION: &str = "6f1c3a52-9d0e-4b8f-a1c2-3d4e5f607182";
    const RG: &str = "rg-prod";
    const NSG: &str = "nsg-bastion";
    const SECRET: &str = "client-secret-for-the-fake";

    fn config(endpoint: &str) -> NsgConfig {
        NsgConfig {
            subscription_id: SUBSCRIPTION.into(),
            resource_group: RG.into(),
            nsg_name: NSG.into(),
            protocol: "Tcp".into(),
            destination_port_ranges: vec!["22".into()],
            destination_address_prefix: "*".into(),
            priority_first: 3000,
            priority_last: 3099,
            endpoint_url: Some(endpoint.into()),
        }
    }

    fn target(config: NsgConfig) -> Target {
        Target {
            resource_id: portcullis::domain::new_id(),
            organization_id: portcullis::domain::new_id(),
            config: ProviderConfig::AzureNetworkSecurityGroup(config),
        }
    }

    /// A rule of someone else's: the office VPN on SSH, at priority 3000.
    fn office_vpn() -> Value {
        json!({"name": "office-vpn", "properties": {"description": "office VPN", "protocol": "Tcp",
               "sourcePortRange": "*", "destinationPortRange": "22", "sourceAddressPrefix": FOREIGN,
               "destinationAddressPrefix": "*", "access": "Allow", "priority": 3000, "direction": "Inbound",
               "provisioningState": "Succeeded"}})
    }

    fn rule_name(resource_id: &str, family: &str) -> String {
        format!("portcullis-{}-{family}", resource_id.replace('-', ""))
    }

    fn sources(rule: &Value) -> BTreeSet<String> {
        let prefixes = rule["properties"]["sourceAddressPrefixes"].as_array().unwrap();
        prefixes.iter().map(|prefix| prefix.as_str().unwrap().to_owned()).collect()
    }

    /// A fake that wants tokens, and the real azure_identity client-credentials flow getting
    /// them from its Entra ID endpoint (over TLS, trusting the test CA).
    async fn fake_with_credential() -> (FakeArm, Arc<dyn TokenCredential>, tempfile::TempDir) {
        let fake = FakeArm::start().await;
        fake.create_group(SUBSCRIPTION, RG, NSG);
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("entra test CA");
        let authority = fake.require_tokens(SECRET, &ca.server(dir.path(), "entra")).await;
        let trusting = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap())
            .build()
            .unwrap();
        let mut cloud = CustomConfiguration::default();
        cloud.authority_host = authority;
        let client_options = ClientOptions {
            cloud: Some(Arc::new(CloudConfiguration::from(cloud))),
            transport: Some(Transport::new(Arc::new(trusting))),
            ..Default::default()
        };
        let options = ClientSecretCredentialOptions { client_options };
        let tenant = "72f988bf-86f1-41af-91ab-2d7cd011db47";
        let credential =
            ClientSecretCredential::new(tenant, "portcullis-app".into(), Secret::new(SECRET), Some(options)).unwrap();
        (fake, credential, dir)
    }

    #[tokio::test]
    async fn azure_provider_conforms() {
        let (fake, credential, _dir) = fake_with_credential().await;
        fake.put_rule(SUBSCRIPTION, RG, NSG, office_vpn());
        let provider = AzureFirewall::with_credential(credential, &Default::default(), 1.0);
        conformance(&provider, &target(config(&fake.url)), Rules::Shared).await;
        assert_eq!(fake.rule_names(SUBSCRIPTION, RG, NSG), ["office-vpn"], "emptied rules are deleted");
        assert_eq!(
            fake.rule(SUBSCRIPTION, RG, NSG, "office-vpn").unwrap(),
            office_vpn(),
            "the foreign rule is untouched"
        );
        let polled = fake.calls().iter().filter(|call| call.contains("/operations/")).count();
        assert!(polled > 0, "writes waited for their operations: {:?}", fake.calls());
    }

    #[tokio::test]
    async fn azure_refuses_a_call_without_a_token_it_issued() {
        let (fake, _, _dir) = fake_with_credential().await;
        let anonymous = AzureFirewall::new(true, &Default::default(), 1.0);
        let results = anonymous.apply(&target(config(&fake.url)), &[request(V4, "s")]).await;
        assert!(
            matches!(&results[..], [Err(ProviderError::Rejected(m))] if m.contains("InvalidAuthenticationToken")),
            "{results:?}"
        );
        assert_eq!(fake.rule_names(SUBSCRIPTION, RG, NSG), Vec::<String>::new());
    }

    #[tokio::test]
    async fn azure_rules_carry_the_resource_settings_at_free_priorities() {
        let fake = FakeArm::start().await;
        fake.create_group(SUBSCRIPTION, RG, NSG);
        fake.put_rule(SUBSCRIPTION, RG, NSG, office_vpn());
        let mut settings = config(&fake.url);
        settings.destination_port_ranges = vec!["22".into(), "5432-5433".into()];
        settings.destination_address_prefix = "10.0.1.0/24".into();
        let target = target(settings);
        let provider = AzureFirewall::new(true, &Default::default(), 1.0);
        let results = provider.apply(&target, &[request(V4, "s"), request(V6, "s")]).await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        let v4 = fake.rule(SUBSCRIPTION, RG, NSG, &rule_name(&target.resource_id, "v4")).expect("IPv4 rule");
        let properties = &v4["properties"];
        assert_eq!(properties["direction"], "Inbound");
        assert_eq!(properties["access"], "Allow");
        assert_eq!(properties["protocol"], "Tcp");
        assert_eq!(properties["destinationPortRanges"], json!(["22", "5432-5433"]));
        assert_eq!(properties["destinationAddressPrefix"], "10.0.1.0/24");
        assert_eq!(properties["provisioningState"], "Succeeded", "the operation was waited for");
        assert_eq!(sources(&v4), BTreeSet::from([format!("{V4}/32")]));
        let v6 = fake.rule(SUBSCRIPTION, RG, NSG, &rule_name(&target.resource_id, "v6")).expect("IPv6 rule");
        assert_eq!(sources(&v6), BTreeSet::from([format!("{V6}/128")]));
        // 3000 is the office VPN's; ours take the next free ones and keep them.
        let priority = |rule: &Value| rule["properties"]["priority"].as_u64().unwrap();
        let priorities = BTreeSet::from([priority(&v4), priority(&v6)]);
        assert_eq!(priorities, BTreeSet::from([3001, 3002]));
        provider.apply(&target, &[request("203.0.113.11", "t")]).await.into_iter().for_each(|r| assert!(r.is_ok()));
        let v4 = fake.rule(SUBSCRIPTION, RG, NSG, &rule_name(&target.resource_id, "v4")).unwrap();
        assert_eq!(sources(&v4).len(), 2);
        assert!(priorities.contains(&priority(&v4)), "an updated rule keeps its priority");
        assert_eq!(fake.rule(SUBSCRIPTION, RG, NSG, "office-vpn").unwrap(), office_vpn());
    }

    #[tokio::test]
    async fn azure_a_full_priority_range_fails_the_rule_with_a_clear_message() {
        let fake = FakeArm::start().await;
        fake.create_group(SUBSCRIPTION, RG, NSG);
        fake.put_rule(SUBSCRIPTION, RG, NSG, office_vpn());
        let mut settings = config(&fake.url);
        settings.priority_last = 3000;
        let results =
            AzureFirewall::new(true, &Default::default(), 1.0).apply(&target(settings), &[request(V4, "s")]).await;
        assert!(
            matches!(&results[..], [Err(ProviderError::Rejected(m))] if m.contains("no free priority in 3000..3000")),
            "{results:?}"
        );
    }

    #[tokio::test]
    async fn azure_never_changes_a_foreign_rule_under_our_name() {
        let fake = FakeArm::start().await;
        fake.create_group(SUBSCRIPTION, RG, NSG);
        let target = target(config(&fake.url));
        let squatter = json!({"name": rule_name(&target.resource_id, "v4"), "properties": {
            "description": "hand made", "protocol": "*", "sourceAddressPrefix": "*", "destinationAddressPrefix": "*",
            "access": "Allow", "priority": 100, "direction": "Inbound"}});
        fake.put_rule(SUBSCRIPTION, RG, NSG, squatter.clone());
        let provider = AzureFirewall::new(true, &Default::default(), 1.0);
        let results = provider.apply(&target, &[request(V4, "s")]).await;
        assert!(
            matches!(&results[..], [Err(ProviderError::Rejected(m))] if m.contains("not managed by Portcullis")),
            "{results:?}"
        );
        let revoked = provider.revoke(&target, &[RuleRef { address: ip(V4), rule_id: None }]).await;
        assert_eq!(revoked, [Ok(())]);
        assert_eq!(fake.rule(SUBSCRIPTION, RG, NSG, &rule_name(&target.resource_id, "v4")).unwrap(), squatter);
    }

    #[tokio::test]
    async fn azure_check_reports_a_missing_group_and_a_missing_write_permission() {
        let fake = FakeArm::start().await;
        fake.create_group(SUBSCRIPTION, RG, NSG);
        let provider = AzureFirewall::new(true, &Default::default(), 1.0);
        let existing = target(config(&fake.url));
        assert!(matches!(provider.check(&existing).await, CheckOutcome::Ok(_)));
        fake.set_permissions(&["*/read"], &[]);
        let outcome = provider.check(&existing).await;
        assert!(matches!(&outcome, CheckOutcome::AccessDenied(m) if m.contains("securityRules/write")), "{outcome:?}");
        fake.set_permissions(&["*"], &["Microsoft.Network/networkSecurityGroups/securityRules/*"]);
        assert!(matches!(provider.check(&existing).await, CheckOutcome::AccessDenied(_)));
        fake.forbid_reads(true);
        let outcome = provider.check(&existing).await;
        assert!(matches!(&outcome, CheckOutcome::AccessDenied(m) if m.contains("AuthorizationFailed")), "{outcome:?}");
        fake.forbid_reads(false);
        let missing = target(NsgConfig { nsg_name: "nsg-gone".into(), ..config(&fake.url) });
        assert!(matches!(provider.check(&missing).await, CheckOutcome::NotFound(_)));
    }

    #[tokio::test]
    async fn azure_throttled_calls_wait_for_retry_after_and_go_through() {
        let fake = FakeArm::start().await;
        fake.create_group(SUBSCRIPTION, RG, NSG);
        fake.throttle_next(2);
        let target = target(config(&fake.url));
        let began = std::time::Instant::now();
        let results = AzureFirewall::new(true, &Default::default(), 1.0).apply(&target, &[request(V4, "s")]).await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert!(began.elapsed() >= std::time::Duration::from_secs(2), "each 429 waited its Retry-After");
        assert!(fake.rule(SUBSCRIPTION, RG, NSG, &rule_name(&target.resource_id, "v4")).is_some());
    }

    #[tokio::test]
    async fn azure_operations_known_only_by_location_are_followed_to_their_end() {
        let fake = FakeArm::start().await;
        fake.create_group(SUBSCRIPTION, RG, NSG);
        fake.location_only();
        let target = target(config(&fake.url));
        let provider = AzureFirewall::new(true, &Default::default(), 1.0);
        assert_eq!(provider.apply(&target, &[request(V4, "s")]).await, [Ok(rule_name(&target.resource_id, "v4"))]);
        let rule = fake.rule(SUBSCRIPTION, RG, NSG, &rule_name(&target.resource_id, "v4")).unwrap();
        assert_eq!(rule["properties"]["provisioningState"], "Succeeded");
        assert_eq!(provider.revoke(&target, &[RuleRef { address: ip(V4), rule_id: None }]).await, [Ok(())]);
        assert_eq!(fake.rule_names(SUBSCRIPTION, RG, NSG), Vec::<String>::new(), "the delete was waited for");
        assert!(fake.calls().iter().any(|call| call.contains("/operationResults/")), "{:?}", fake.calls());
    }

    /// A change Microsoft.Network refuses only while applying it fails the rule with the
    /// operation's own code and message; a racing one is retried.
    #[tokio::test]
    async fn azure_a_failed_operation_fails_the_rule_with_its_code() {
        let fake = FakeArm::start().await;
        fake.create_group(SUBSCRIPTION, RG, NSG);
        let target = target(config(&fake.url));
        let provider = AzureFirewall::new(true, &Default::default(), 1.0);
        fake.fail_next_operation("SecurityRuleInvalidAddressPrefix", "Security rule has invalid Address prefix.");
        let results = provider.apply(&target, &[request(V4, "s")]).await;
        let expected =
            "the Azure operation failed (SecurityRuleInvalidAddressPrefix: Security rule has invalid Address prefix.)";
        assert_eq!(results, [Err(ProviderError::Rejected(expected.into()))]);
        fake.fail_next_operation("AnotherOperationInProgress", "Another operation on this resource is in progress.");
        let results = provider.apply(&target, &[request(V4, "s")]).await;
        assert!(matches!(&results[..], [Err(ProviderError::Transient(_))]), "{results:?}");
        assert_eq!(provider.apply(&target, &[request(V4, "s")]).await, [Ok(rule_name(&target.resource_id, "v4"))]);
    }

    /// An endpoint whose operation URLs point elsewhere never gets the token sent there.
    #[tokio::test]
    async fn azure_tokens_never_follow_an_operation_url_to_another_host() {
        let (fake, credential, _dir) = fake_with_credential().await;
        let elsewhere = FakeArm::start().await;
        fake.operations_at(&elsewhere.url);
        let target = target(config(&fake.url));
        let results = AzureFirewall::with_credential(credential, &Default::default(), 1.0)
            .apply(&target, &[request(V4, "s")])
            .await;
        assert!(matches!(&results[..], [Err(ProviderError::Rejected(m))] if m.contains("another host")), "{results:?}");
        assert_eq!(elsewhere.calls(), Vec::<String>::new(), "nothing reached the other host");
    }

    /// An endpoint with a path and a fragment would put every URL the provider builds — with the
    /// server's token — on another subscription's rule (the provider's own path lands in the
    /// fragment): such an endpoint is refused at the API, and a stored one before any call.
    #[tokio::test]
    async fn azure_an_endpoint_with_a_path_never_reaches_another_subscription() {
        const OTHER: &str = "0b9d8e7f-1a2b-4c3d-8e9f-a0b1c2d3e4f5";
        let (fake, credential, _dir) = fake_with_credential().await;
        fake.create_group(OTHER, RG, NSG);
        let mut theirs = office_vpn();
        theirs["name"] = json!("SSH");
        fake.put_rule(OTHER, RG, NSG, theirs.clone());
        let escape = format!(
            "{}/subscriptions/{OTHER}/resourceGroups/{RG}/providers/Microsoft.Network/networkSecurityGroups/{NSG}\
             /securityRules/SSH?api-version=2024-05-01#",
            fake.url
        );
        let results = AzureFirewall::with_credential(credential, &Default::default(), 1.0)
            .apply(&target(config(&escape)), &[request(V4, "s")])
            .await;
        assert_eq!(fake.rule(OTHER, RG, NSG, "SSH").unwrap(), theirs, "the other subscription's rule is untouched");
        assert!(matches!(&results[..], [Err(ProviderError::Rejected(m))] if m.contains("origin")), "{results:?}");
        assert!(fake.calls().iter().all(|call| !call.contains(OTHER)), "{:?}", fake.calls());

        let mut f = Fixture::new(&TestDb::sqlite()).await;
        let resource =
            pb::Resource { name: "escape".into(), provider: Some(resource_on_fake(&escape)), ..Default::default() };
        let request = common::with_key(pb::CreateResourceRequest { resource: Some(resource) }, &f.server.admin_key);
        let err = f.resources.create_resource(request).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert_eq!(common::violated_fields(&err), ["resource.azure_network_security_group.endpoint_url"]);
        f.server.stop().await;
    }

    fn resource_on_fake(endpoint: &str) -> pb::resource::Provider {
        pb::resource::Provider::AzureNetworkSecurityGroup(pb::AzureNetworkSecurityGroup {
            subscription_id: SUBSCRIPTION.into(),
            resource_group: RG.into(),
            nsg_name: NSG.into(),
            protocol: "tcp".into(),
            destination_port_ranges: vec!["22".into()],
            endpoint_url: Some(endpoint.into()),
            ..Default::default()
        })
    }

    /// Two replicas on one database work the same resource at once: the resource lease keeps
    /// their whole-rule PUTs from interleaving (Azure has no If-Match to do it), so no address
    /// is lost; sessions that end take their addresses out again.
    #[tokio::test]
    async fn azure_two_replicas_never_lose_each_others_addresses() {
        common::each_backend(|db: TestDb| async move {
            let fake = FakeArm::start().await;
            fake.create_group(SUBSCRIPTION, RG, NSG);
            let mut f = Fixture::new(&db).await;
            let resource_id = f.resource_on("bastion", resource_on_fake(&fake.url)).await;
            let (stop, replica) = second_replica(&f.server.db);

            let key = f.user_key.clone();
            let addresses: Vec<String> = (1..=30).map(|n| format!("203.0.113.{n}")).collect();
            let mut started = Vec::new();
            for address in &addresses {
                started.push(f.start(&key, Some(address), None).await.unwrap().id);
            }
            let store = f.server.db.clone();
            let settle = move |status: portcullis::domain::SessionStatus, ids: Vec<String>| {
                let db = store.clone();
                async move {
                    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
                    for id in ids {
                        loop {
                            let record = portcullis::store::queries::sessions::load(&db, &id).await.unwrap();
                            if record.session.status == status {
                                break;
                            }
                            assert!(tokio::time::Instant::now() < deadline, "{record:#?}");
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        }
                    }
                }
            };
            settle(portcullis::domain::SessionStatus::Active, started.clone()).await;
            let rule = || fake.rule(SUBSCRIPTION, RG, NSG, &rule_name(&resource_id, "v4"));
            let expected: BTreeSet<String> = addresses.iter().map(|a| format!("{a}/32")).collect();
            assert_eq!(sources(&rule().unwrap()), expected, "{}", db.backend);

            let (stopping, staying) = started.split_at(20);
            for id in stopping {
                f.stop(&key, id).await;
            }
            settle(portcullis::domain::SessionStatus::Cancelled, stopping.to_vec()).await;
            let left: BTreeSet<String> = addresses[20..].iter().map(|a| format!("{a}/32")).collect();
            assert_eq!(sources(&rule().unwrap()), left, "{}", db.backend);
            for id in staying {
                f.stop(&key, id).await;
            }
            settle(portcullis::domain::SessionStatus::Cancelled, staying.to_vec()).await;
            assert_eq!(rule(), None, "the last removal deletes the rule");
            stop.send(true).unwrap();
            replica.await.unwrap();
            f.server.stop().await;
        })
        .await;
    }

    /// The reconciler on the fake: a rule deleted in the portal comes back with the live
    /// address; an address someone added to ours goes; the foreign rule stays untouched.
    #[tokio::test]
    async fn azure_reconciler_repairs_drift_and_never_touches_foreign_rules() {
        let fake = FakeArm::start().await;
        fake.create_group(SUBSCRIPTION, RG, NSG);
        fake.put_rule(SUBSCRIPTION, RG, NSG, office_vpn());
        let (_db, f, resource_id) = reconciling_with_a_session(resource_on_fake(&fake.url)).await;

        let name = rule_name(&resource_id, "v4");
        let mut ours = fake.rule(SUBSCRIPTION, RG, NSG, &name).unwrap();
        ours["properties"]["sourceAddressPrefixes"] = json!([format!("{V4}/32"), format!("{FOREIGN}/32")]);
        fake.put_rule(SUBSCRIPTION, RG, NSG, ours);
        let only_live = BTreeSet::from([format!("{V4}/32")]);
        eventually("the orphan outlived the passes", || {
            fake.rule(SUBSCRIPTION, RG, NSG, &name).is_some_and(|rule| sources(&rule) == only_live)
        })
        .await;
        assert!(fake.remove_rule(SUBSCRIPTION, RG, NSG, &name));
        eventually("the missing rule was never put back", || fake.rule(SUBSCRIPTION, RG, NSG, &name).is_some()).await;
        assert_eq!(sources(&fake.rule(SUBSCRIPTION, RG, NSG, &name).unwrap()), BTreeSet::from([format!("{V4}/32")]));
        assert_eq!(fake.rule(SUBSCRIPTION, RG, NSG, "office-vpn").unwrap(), office_vpn());
        f.server.stop().await;
    }
}
