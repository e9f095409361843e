//! The Azure provider against a faithful fake of Azure Resource Manager.

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
    assert_eq!(fake.rule(SUBSCRIPTION, RG, NSG, "office-vpn").unwrap(), office_vpn(), "the foreign rule is untouched");
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
    let results =
        AzureFirewall::with_credential(credential, &Default::default(), 1.0).apply(&target, &[request(V4, "s")]).await;
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
                for id in ids {
                    common::eventually("every session settled", std::time::Duration::from_secs(30), async || {
                        let record = portcullis::store::queries::sessions::load(&db, &id).await.unwrap();
                        common::when(record.session.status == status, record)
                    })
                    .await;
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
    common::eventually("the orphan outlived the passes", TEN_SECONDS, async || {
        let rule = fake.rule(SUBSCRIPTION, RG, NSG, &name);
        common::when(rule.as_ref().is_some_and(|rule| sources(rule) == only_live), rule)
    })
    .await;
    assert!(fake.remove_rule(SUBSCRIPTION, RG, NSG, &name));
    common::eventually("the missing rule was never put back", TEN_SECONDS, async || {
        fake.rule(SUBSCRIPTION, RG, NSG, &name).ok_or("no rule")
    })
    .await;
    assert_eq!(sources(&fake.rule(SUBSCRIPTION, RG, NSG, &name).unwrap()), BTreeSet::from([format!("{V4}/32")]));
    assert_eq!(fake.rule(SUBSCRIPTION, RG, NSG, "office-vpn").unwrap(), office_vpn());
    f.server.stop().await;
}
