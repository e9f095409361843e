//! The AWS provider against moto's EC2 server, and the engine's pacing of EC2's request buckets.

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
    conformance(&AwsFirewall::new(&Default::default(), 1.0), &target(group(&endpoint, &group_id)), Rules::PerAddress)
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
        assert!(matches!(result, Err(ProviderError::Rejected(message)) if message.contains("is full")), "{result:?}");
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
        assert!(description.starts_with(&format!("portcullis session {} until ", session.id)), "{cidr}: {description}");
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
    let pb::resource::Provider::AwsSecurityGroup(old) = resource_on_moto(&endpoint, &old_group) else { unreachable!() };
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
    assert!(record.rules[0].attempts > 0, "the throttling reached the engine, which retried it: {:?}", record.rules);
    assert_eq!(rules_in(&endpoint, &group_id).len(), 1);
    f.server.stop().await;
}

/// A proxy to moto enforcing EC2's request buckets of (burst, per second) for the mutating
/// and the describe APIs, and a server config pacing itself to them.
async fn metered(endpoint: &str, mutating: (u32, f64), describe: (u32, f64)) -> (Ec2Proxy, portcullis::config::Config) {
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
        let has =
            |cidr: &str, description: &str, tag: &str| rules.contains(&(cidr.into(), description.into(), tag.into()));
        let orphan_gone = !rules.iter().any(|(_, description, tag)| description == lost && *tag == resource_id);
        let repaired = rules.iter().any(|(cidr, _, tag)| cidr == "203.0.113.10/32" && *tag == resource_id);
        let foreign_intact = has("198.51.100.1/32", "web from the office", "")
            && has("198.51.100.2/32", "office VPN", "")
            && has("198.51.100.3/32", lost, "another-resource");
        (orphan_gone && repaired && foreign_intact && rules.len() == 4).then_some(()).ok_or(rules)
    };
    common::eventually("drift outlived the passes", std::time::Duration::from_secs(15), async || converged()).await;
    common::eventually("the repaired rule id was never recorded", std::time::Duration::from_secs(15), async || {
        let record = portcullis::store::queries::sessions::load(&f.server.db, &session.id).await.unwrap();
        let rule = record.rules[0].clone();
        common::when(
            rule.status.as_str() == "APPLIED" && rule.provider_rule_id.as_deref() != Some(first_rule_id.as_str()),
            rule,
        )
    })
    .await;
    f.server.stop().await;
}
