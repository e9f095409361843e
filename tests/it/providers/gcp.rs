//! The GCP provider against a faithful fake of the Compute Engine firewall API.

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
    let results =
        GcpFirewall::new(true, &Default::default(), 1.0).apply(&target, &[request(V4, "s"), request(V6, "s")]).await;
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
    let cidrs = |addresses: &[String]| -> BTreeSet<String> { addresses.iter().map(|a| format!("{a}/32")).collect() };
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
    common::eventually("the orphan outlived the passes", TEN_SECONDS, async || {
        let ranges = ranges(&fake.rule(PROJECT, &name).unwrap());
        common::when(!ranges.contains(&format!("{FOREIGN}/32")), ranges)
    })
    .await;
    assert_eq!(ranges(&fake.rule(PROJECT, &name).unwrap()), BTreeSet::from([format!("{V4}/32")]));

    // Someone deletes our rule by hand (a racing PATCH or a restore could lose it too).
    assert!(fake.remove_rule(PROJECT, &name));
    common::eventually("the missing rule was never put back", TEN_SECONDS, async || {
        fake.rule(PROJECT, &name).ok_or("no rule")
    })
    .await;
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
        for id in &started {
            common::eventually("every session active", std::time::Duration::from_secs(20), async || {
                let record = portcullis::store::queries::sessions::load(&f.server.db, id).await.unwrap();
                common::when(record.session.status == portcullis::domain::SessionStatus::Active, record)
            })
            .await;
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
