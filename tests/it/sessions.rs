//! The session engine end to end over gRPC, with the memory provider, on every backend.

use crate::common;
use portcullis::settings::{Count, Seconds};

use crate::common::{Fixture, TestDb, TestServer, each_backend, reason, violated_fields, with_key};
use portcullis::domain::Permission;
use portcullis::engine::pauses::Point;
use portcullis::pb::v1::resource_ip_service_client::ResourceIpServiceClient;
use portcullis::pb::v1::session_service_client::SessionServiceClient;
use portcullis::pb::v1::*;
use prost_types::FieldMask;
use sea_orm::ConnectionTrait;
use std::net::IpAddr;
use std::time::Duration;
use tonic::Code;
use tonic::transport::Channel;

const IPV4: &str = "203.0.113.10";
const IPV6: &str = "2001:db8::10";

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

#[tokio::test]
async fn session_opens_every_resource_and_closes_on_stop() {
    each_backend(|db: TestDb| async move {
        let mut f = Fixture::new(&db).await;
        let db_resource = f.resource("db", MemoryProvider::default()).await;
        let web_resource = f.resource("web", MemoryProvider { latency_ms: 20, ..Default::default() }).await;
        let key = f.user_key.clone();

        let started = f.start(&key, Some(IPV4), Some(IPV6)).await.unwrap();
        assert_eq!(started.status(), SessionStatus::Pending, "{}: StartSession returns at once", db.backend);
        assert_eq!(started.resource_ips.len(), 4, "one rule per resource per address");
        assert!(started.resource_ips.iter().all(|r| r.status() == ResourceIpStatus::Pending));
        assert_eq!(started.user_email, "user@example.com");
        let expected_duration = started.expires_at.unwrap().seconds - started.started_at.unwrap().seconds;
        assert_eq!(expected_duration, 3600, "the configured default duration");

        let seen = f.watch_until(&key, &started.id, SessionStatus::Active).await;
        let active = seen.last().unwrap();
        assert_eq!(active.status(), SessionStatus::Active);
        assert!(
            active
                .resource_ips
                .iter()
                .all(|r| r.status() == ResourceIpStatus::Applied && !r.provider_rule_id.is_empty())
        );
        assert_eq!(f.server.memory_rules(&db_resource), vec![ip(IPV4), ip(IPV6)]);
        assert_eq!(f.server.memory_rules(&web_resource), vec![ip(IPV4), ip(IPV6)]);

        let stopping = f.stop(&key, &started.id).await;
        assert!(matches!(stopping.status(), SessionStatus::Expiring | SessionStatus::Cancelled));
        assert_eq!(stopping.ended_reason(), EndedReason::Manual);
        let seen = f.watch_until(&key, &started.id, SessionStatus::Cancelled).await;
        let ended = seen.last().unwrap();
        assert_eq!(ended.status(), SessionStatus::Cancelled);
        assert!(ended.ended_at.is_some());
        assert!(ended.resource_ips.iter().all(|r| r.status() == ResourceIpStatus::Removed && r.removed_at.is_some()));
        assert!(f.server.memory_rules(&db_resource).is_empty(), "no rule outlives the session");
        assert!(f.server.memory_rules(&web_resource).is_empty());

        // Stopping again changes nothing.
        let again = f.stop(&key, &started.id).await;
        assert_eq!(again.status(), SessionStatus::Cancelled);
        assert_eq!(again.revision, ended.revision);

        // Every transition is in the audit trail.
        let events = portcullis::pb::v1::audit_service_client::AuditServiceClient::new(f.server.channel().await)
            .list_audit_events(with_key(ListAuditEventsRequest::default(), &f.server.admin_key))
            .await
            .unwrap()
            .into_inner()
            .audit_events;
        let for_session: Vec<&str> =
            events.iter().filter(|e| e.target_id == started.id).map(|e| e.r#type.as_str()).collect();
        assert_eq!(for_session, ["session.cancelled", "session.expiring", "session.active", "session.started"]);
        f.server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn failures_roll_up_to_partial_and_failed_and_can_be_retried() {
    each_backend(|db: TestDb| async move {
        let mut f = Fixture::new(&db).await;
        f.resource("good", MemoryProvider::default()).await;
        let bad = f.resource("bad", MemoryProvider { fail_addresses: vec![IPV4.into()], ..Default::default() }).await;
        let key = f.user_key.clone();
        let session = f.start(&key, Some(IPV4), None).await.unwrap();
        let partial = f.watch_until(&key, &session.id, SessionStatus::Partial).await.pop().unwrap();
        assert_eq!(partial.status(), SessionStatus::Partial, "{}", db.backend);
        let failed_rule = partial.resource_ips.iter().find(|r| r.resource_id == bad).unwrap();
        assert_eq!(failed_rule.status(), ResourceIpStatus::Failed);
        assert!(failed_rule.error_message.contains("refused"), "{}", failed_rule.error_message);

        // Fix the resource and retry the failed rule: the session becomes ACTIVE.
        let fixed = UpdateResourceRequest {
            resource: Some(Resource {
                id: bad.clone(),
                provider: Some(resource::Provider::Memory(MemoryProvider::default())),
                ..Default::default()
            }),
            update_mask: Some(FieldMask { paths: vec!["provider".into()] }),
        };
        f.resources.update_resource(with_key(fixed, &f.server.admin_key)).await.unwrap();
        let mut rules = ResourceIpServiceClient::new(f.server.channel().await);
        let retried = rules
            .retry_resource_ip(with_key(RetryResourceIpRequest { id: failed_rule.id.clone() }, &key))
            .await
            .unwrap();
        assert_eq!(retried.into_inner().resource_ip.unwrap().status(), ResourceIpStatus::Pending);
        let active = f.watch_until(&key, &session.id, SessionStatus::Active).await.pop().unwrap();
        assert_eq!(active.status(), SessionStatus::Active);
        let err = rules
            .retry_resource_ip(with_key(RetryResourceIpRequest { id: failed_rule.id.clone() }, &key))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "only FAILED rules are retried");
        f.stop(&key, &session.id).await;

        // Every rule refused: FAILED, terminal, and the address can start again.
        let refusing = MemoryProvider { fail_addresses: vec![IPV6.into()], ..Default::default() };
        let only_bad_db = TestDb::sqlite();
        let only_bad = TestServer::start(&only_bad_db).await;
        let mut g = Fixture::with_server(only_bad).await;
        g.resource("refusing", refusing).await;
        let key = g.user_key.clone();
        let session = g.start(&key, None, Some(IPV6)).await.unwrap();
        let seen = g.watch_until(&key, &session.id, SessionStatus::Failed).await;
        assert_eq!(seen.last().unwrap().status(), SessionStatus::Failed);
        let again = g.start(&key, None, Some(IPV6)).await;
        assert!(again.is_ok(), "a FAILED session does not block the address: {again:?}");
        g.server.stop().await;
        f.server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn transient_provider_errors_are_retried_not_failed() {
    each_backend(|db: TestDb| async move {
        let mut f = Fixture::new(&db).await;
        let resource = f.resource("flaky", MemoryProvider { transient_failures: 3, ..Default::default() }).await;
        let key = f.user_key.clone();
        let session = f.start(&key, Some(IPV4), None).await.unwrap();
        let seen = f.watch_until(&key, &session.id, SessionStatus::Active).await;
        assert_eq!(seen.last().unwrap().status(), SessionStatus::Active, "{}", db.backend);
        assert!(seen.iter().all(|s| s.status() != SessionStatus::Failed));
        assert_eq!(f.server.memory_rules(&resource), vec![ip(IPV4)]);
        f.server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn start_session_refuses_what_it_must() {
    each_backend(|db: TestDb| async move {
        let mut f = Fixture::new(&db).await;
        let key = f.user_key.clone();

        let err = f.start(&key, Some(IPV4), None).await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{}: no resource assigned", db.backend);
        assert_eq!(reason(&err), "ERROR_REASON_NO_ASSIGNED_RESOURCES");

        f.resource("db", MemoryProvider::default()).await;
        for (bad, field) in [
            ("127.0.0.1", "ipv4_address"),
            ("10.0.0.1", "ipv4_address"),
            ("203.0.113.0/24", "ipv4_address"),
            ("nonsense", "ipv4_address"),
        ] {
            let err = f.start(&key, Some(bad), None).await.unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument, "{bad}");
            assert_eq!(violated_fields(&err), [field]);
            assert_eq!(reason(&err), "ERROR_REASON_INVALID_IP_ADDRESS");
        }
        let err = f.start(&key, None, Some("fe80::1")).await.unwrap_err();
        assert_eq!(violated_fields(&err), ["ipv6_address"]);
        // Without explicit addresses the peer (loopback here) is used, and refused.
        let err = f.start(&key, None, None).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains("127.0.0.1") || violated_fields(&err) == ["ipv4_address"]);

        // FREE tier: 2 hours at most, never silently capped.
        let too_long = StartSessionRequest {
            duration_hours: Some(3),
            ipv4_address: Some(IPV4.into()),
            ipv6_address: None,
            duration_minutes: None,
            heartbeat_seconds: None,
            ..Default::default()
        };
        let err = f.sessions.start_session(with_key(too_long.clone(), &key)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert_eq!(reason(&err), "ERROR_REASON_DURATION_EXCEEDS_MAXIMUM");
        assert_eq!(violated_fields(&err), ["duration_hours"]);
        f.server.set_tier(Tier::Business).await;
        let session = f.sessions.start_session(with_key(too_long, &key)).await.unwrap().into_inner().session.unwrap();
        assert_eq!(session.expires_at.unwrap().seconds - session.started_at.unwrap().seconds, 3 * 3600);

        let err = f.start(&key, Some(IPV4), None).await.unwrap_err();
        assert_eq!(err.code(), Code::AlreadyExists, "same user and address while live");
        assert_eq!(reason(&err), "ERROR_REASON_SESSION_ALREADY_ACTIVE");

        let read_only = f.server.insert_api_key(&f.user_id, &[Permission::SessionsRead], None).await;
        let err = f.start(&read_only, Some("203.0.113.99"), None).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied);

        f.server.set_suspended(true).await;
        let err = f.start(&key, Some("203.0.113.98"), None).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied);
        assert_eq!(reason(&err), "ERROR_REASON_ORGANIZATION_SUSPENDED");
        f.server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn admins_see_and_stop_sessions_of_their_organization_only() {
    each_backend(|db: TestDb| async move {
        let (mut f, key, session) = Fixture::with_active_session(&db, IPV4).await;

        // Another user of the same organization cannot see it.
        let other = f.server.insert_user(&f.server.organization_id, "other@example.com", "USER").await;
        let other_key = f.server.insert_api_key(&other, Permission::ALL, None).await;
        let err = f
            .sessions
            .get_session(with_key(GetSessionRequest { id: session.id.clone() }, &other_key))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{}", db.backend);
        let listed =
            f.sessions.list_sessions(with_key(ListSessionsRequest::default(), &other_key)).await.unwrap().into_inner();
        assert!(listed.sessions.is_empty());
        // Nor can another organization's admin.
        let (_, foreign_admin) = f.server.insert_organization("Other", "boss@other.example").await;
        let err = f
            .sessions
            .stop_session(with_key(StopSessionRequest { id: session.id.clone() }, &foreign_admin))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound);

        // The organization's admin lists it and stops it: ended_reason ADMIN.
        let admin_key = f.server.admin_key.clone();
        let listed = f
            .sessions
            .list_sessions(with_key(
                ListSessionsRequest { statuses: vec![SessionStatus::Active.into()], ..Default::default() },
                &admin_key,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(listed.sessions.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), [session.id.as_str()]);
        let stopped = f.stop(&admin_key, &session.id).await;
        assert_eq!(stopped.ended_reason(), EndedReason::Admin);
        let ended = f.watch_until(&key, &session.id, SessionStatus::Cancelled).await.pop().unwrap();
        assert_eq!(ended.status(), SessionStatus::Cancelled);
        f.server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn extend_only_live_sessions_within_the_maximum() {
    each_backend(|db: TestDb| async move {
        let (mut f, key, session) = Fixture::with_active_session(&db, IPV4).await;
        let extend =
            |hours| ExtendSessionRequest { id: session.id.clone(), additional_hours: hours, additional_minutes: 0 };

        let extended =
            f.sessions.extend_session(with_key(extend(1), &key)).await.unwrap().into_inner().session.unwrap();
        assert_eq!(extended.expires_at.unwrap().seconds - session.expires_at.unwrap().seconds, 3600, "{}", db.backend);
        assert!(extended.revision > session.revision);
        // FREE tier: 2 hours in all; the refusal says until when the session can still go.
        let err = f.sessions.extend_session(with_key(extend(1), &key)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert_eq!(violated_fields(&err), ["additional_hours"]);
        assert_eq!(reason(&err), "ERROR_REASON_DURATION_EXCEEDS_MAXIMUM");
        let metadata = {
            use tonic_types::StatusExt;
            err.get_error_details().error_info().map(|info| info.metadata.clone()).unwrap_or_default()
        };
        assert_eq!(metadata.get("max_hours").map(String::as_str), Some("2"));
        let latest: prost_types::Timestamp = metadata["latest_expires_at"].parse().unwrap();
        assert_eq!(latest.seconds, session.started_at.unwrap().seconds + 2 * 3600, "{metadata:?}");
        let err = f.sessions.extend_session(with_key(extend(0), &key)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);

        f.stop(&key, &session.id).await;
        let err = f.sessions.extend_session(with_key(extend(1), &key)).await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "ended sessions cannot be extended");
        f.server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn sessions_expire_on_time() {
    each_backend(|db: TestDb| async move {
        let mut f = Fixture::new(&db).await;
        let resource = f.resource("db", MemoryProvider::default()).await;
        let key = f.user_key.clone();
        let session = f.start(&key, Some(IPV4), None).await.unwrap();
        f.watch_until(&key, &session.id, SessionStatus::Active).await;
        // Move the expiry into the past, as if the hour had gone by.
        use sea_orm::{ActiveModelTrait, ActiveValue::Set, IntoActiveModel};
        let row = portcullis::store::queries::sessions::get(&f.server.db, &session.id).await.unwrap();
        let mut active = row.into_active_model();
        active.expires_at = Set(portcullis::domain::now() - chrono::TimeDelta::seconds(1));
        active.update(&f.server.db).await.unwrap();
        f.server.services.engine.reschedule_expiry();

        let ended = f.watch_until(&key, &session.id, SessionStatus::Expired).await.pop().unwrap();
        assert_eq!(ended.status(), SessionStatus::Expired, "{}", db.backend);
        assert_eq!(ended.ended_reason(), EndedReason::Expired);
        assert!(f.server.memory_rules(&resource).is_empty());
        f.server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn sessions_that_expire_together_are_removed_in_one_call_per_resource() {
    each_backend(|db: TestDb| async move {
        let mut f = Fixture::new(&db).await;
        let resources =
            [f.resource("db", MemoryProvider::default()).await, f.resource("ssh", MemoryProvider::default()).await];
        let key = f.user_key.clone();
        let ids = f.start_one_by_one(&key, (1..=40).map(|n| format!("198.51.100.{n}"))).await;
        let memory = f.server.services.engine.providers().memory().clone();
        let writes_before: Vec<u32> = resources.iter().map(|r| memory.writes(r)).collect();
        // Their hour is up for all of them at once.
        use sea_orm::EntityTrait;
        let due = portcullis::domain::now() - chrono::TimeDelta::seconds(1);
        portcullis::store::entity::session::Entity::update_many()
            .col_expr(portcullis::store::entity::session::Column::ExpiresAt, sea_orm::sea_query::Expr::value(due))
            .exec(&f.server.db)
            .await
            .unwrap();
        f.server.services.engine.reschedule_expiry();

        for id in &ids {
            f.watch_until(&key, id, SessionStatus::Expired).await;
        }
        for (resource, before) in resources.iter().zip(writes_before) {
            assert!(f.server.memory_rules(resource).is_empty(), "{}", db.backend);
            assert_eq!(memory.writes(resource) - before, 1, "one revoke call per resource on {}", db.backend);
        }
        f.server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn shared_addresses_share_one_rule_until_the_last_session_ends() {
    each_backend(|db: TestDb| async move {
        let mut f = Fixture::new(&db).await;
        let resource = f.resource("db", MemoryProvider::default()).await;
        let second = f.server.insert_user(&f.server.organization_id, "colleague@example.com", "USER").await;
        let second_key = f.server.insert_api_key(&second, Permission::ALL, None).await;
        f.assign(&resource, &second).await;
        let key = f.user_key.clone();

        // Two people behind one NAT.
        let first_session = f.start(&key, Some(IPV4), None).await.unwrap();
        let second_session = f.start(&second_key, Some(IPV4), None).await.unwrap();
        let a = f.watch_until(&key, &first_session.id, SessionStatus::Active).await.pop().unwrap();
        let b = f.watch_until(&second_key, &second_session.id, SessionStatus::Active).await.pop().unwrap();
        assert_eq!(
            a.resource_ips[0].provider_rule_id, b.resource_ips[0].provider_rule_id,
            "{}: one shared rule",
            db.backend
        );
        assert_eq!(f.server.memory_rules(&resource), vec![ip(IPV4)]);

        f.stop(&key, &first_session.id).await;
        f.watch_until(&key, &first_session.id, SessionStatus::Cancelled).await;
        assert_eq!(f.server.memory_rules(&resource), vec![ip(IPV4)], "still held by the second session");

        f.stop(&second_key, &second_session.id).await;
        f.watch_until(&second_key, &second_session.id, SessionStatus::Cancelled).await;
        assert!(f.server.memory_rules(&resource).is_empty(), "removed with its last holder");
        f.server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn watch_streams_every_change_in_order_and_ends_at_a_terminal_state() {
    each_backend(|db: TestDb| async move {
        // A thousand watchers on one key: past a caller's default share.
        let mut config = common::test_config();
        config.limits.max_watch_streams_per_caller = Count::of::<2000>();
        config.limits.max_watch_streams_per_user = Count::of::<2000>();
        let mut f = Fixture::with_server(TestServer::start_with(&db, config).await).await;
        f.resource("a", MemoryProvider { latency_ms: 30, ..Default::default() }).await;
        f.resource("b", MemoryProvider { latency_ms: 60, ..Default::default() }).await;
        let key = f.user_key.clone();
        let session = f.start(&key, Some(IPV4), None).await.unwrap();

        let mut stream = f
            .sessions
            .watch_session(with_key(WatchSessionRequest { id: session.id.clone() }, &key))
            .await
            .unwrap()
            .into_inner();
        let first = stream.message().await.unwrap().unwrap().session.unwrap();
        assert_eq!(first.id, session.id, "{}: the first message is the session as it is", db.backend);
        assert!(first.revision >= session.revision);

        // A thousand more watchers, all of which must see the end.
        let mut watchers = Vec::new();
        for _ in 0..1000 {
            let mut client = f.sessions.clone();
            let request = with_key(WatchSessionRequest { id: session.id.clone() }, &key);
            watchers.push(tokio::spawn(async move {
                let mut stream = client.watch_session(request).await.unwrap().into_inner();
                let mut last = None;
                while let Some(message) = stream.message().await.unwrap() {
                    last = Some(message.session.unwrap().status());
                }
                last
            }));
        }

        let mut revisions = vec![first.revision];
        let mut statuses = vec![first.status()];
        let mut stopped = false;
        loop {
            let message = tokio::time::timeout(Duration::from_secs(20), stream.message()).await.expect("timely");
            let Some(message) = message.unwrap() else { break };
            let current = message.session.unwrap();
            revisions.push(current.revision);
            statuses.push(current.status());
            if current.status() == SessionStatus::Active && !stopped {
                stopped = true;
                f.stop(&key, &session.id).await;
            }
        }
        assert!(revisions.windows(2).all(|w| w[0] < w[1]), "strictly increasing revisions: {revisions:?}");
        assert_eq!(statuses.last(), Some(&SessionStatus::Cancelled), "the stream ends after the terminal state");
        assert!(statuses.contains(&SessionStatus::Active));
        assert!(statuses.contains(&SessionStatus::Expiring));
        for watcher in watchers {
            assert_eq!(watcher.await.unwrap(), Some(SessionStatus::Cancelled));
        }

        // A watcher that connects after the end gets the final state and the stream ends.
        let late = f.watch_until(&key, &session.id, SessionStatus::Cancelled).await;
        assert_eq!(late.len(), 1);
        f.server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn forwarded_addresses_are_believed_only_from_trusted_proxies() {
    let db = TestDb::sqlite();
    let mut config = common::test_config();
    config.network.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    let mut f = Fixture::with_server(TestServer::start_with(&db, config).await).await;
    f.resource("db", MemoryProvider::default()).await;
    let key = f.user_key.clone();
    let mut request = with_key(StartSessionRequest::default(), &key);
    request.metadata_mut().insert("x-forwarded-for", "198.51.100.200, 203.0.113.77, 127.0.0.1".parse().unwrap());
    let session = f.sessions.start_session(request).await.unwrap().into_inner().session.unwrap();
    assert_eq!(session.ipv4_address, "203.0.113.77", "the rightmost untrusted hop");
    assert_eq!(session.resource_ips[0].ip_address, "203.0.113.77");
    f.server.stop().await;

    // From an untrusted peer, a spoofed header is ignored: the (loopback) peer address is used.
    let untrusted_db = TestDb::sqlite();
    let mut g = Fixture::new(&untrusted_db).await;
    g.resource("db", MemoryProvider::default()).await;
    let key = g.user_key.clone();
    let mut request = with_key(StartSessionRequest::default(), &key);
    request.metadata_mut().insert("x-forwarded-for", "203.0.113.77".parse().unwrap());
    let err = g.sessions.start_session(request).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("127.0.0.1"), "{}", err.message());
    g.server.stop().await;
}

#[tokio::test]
async fn resource_ips_are_listed_by_session_or_resource() {
    each_backend(|db: TestDb| async move {
        let mut f = Fixture::new(&db).await;
        let first = f.resource("a", MemoryProvider::default()).await;
        f.resource("b", MemoryProvider { fail_addresses: vec![IPV6.into()], ..Default::default() }).await;
        let key = f.user_key.clone();
        let session = f.start(&key, Some(IPV4), Some(IPV6)).await.unwrap();
        f.watch_until(&key, &session.id, SessionStatus::Partial).await;
        let mut rules = ResourceIpServiceClient::new(f.server.channel().await);

        let all = rules
            .list_resource_ips(with_key(
                ListResourceIpsRequest { session_id: session.id.clone(), ..Default::default() },
                &key,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(all.resource_ips.len(), 4, "{}", db.backend);
        let failed = rules
            .list_resource_ips(with_key(
                ListResourceIpsRequest {
                    session_id: session.id.clone(),
                    statuses: vec![ResourceIpStatus::Failed.into()],
                    ..Default::default()
                },
                &key,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(failed.resource_ips.len(), 1);
        assert_eq!(failed.resource_ips[0].ip_address, IPV6);
        assert_eq!(failed.resource_ips[0].ip_version, 6);

        // Pages of one, newest first, nothing lost.
        let mut token = String::new();
        let mut seen = Vec::new();
        loop {
            let page = rules
                .list_resource_ips(with_key(
                    ListResourceIpsRequest {
                        session_id: session.id.clone(),
                        page_size: 1,
                        page_token: token,
                        ..Default::default()
                    },
                    &key,
                ))
                .await
                .unwrap()
                .into_inner();
            seen.extend(page.resource_ips.into_iter().map(|r| r.id));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        let mut expected: Vec<String> = all.resource_ips.iter().map(|r| r.id.clone()).collect();
        expected.sort();
        expected.reverse();
        assert_eq!(seen, expected);

        let one = rules.get_resource_ip(with_key(GetResourceIpRequest { id: seen[0].clone() }, &key)).await.unwrap();
        assert_eq!(one.into_inner().resource_ip.unwrap().session_id, session.id);

        // By resource: admins only.
        let by_resource = ListResourceIpsRequest { resource_id: first.clone(), ..Default::default() };
        let err = rules.list_resource_ips(with_key(by_resource.clone(), &key)).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied);
        let listed = rules.list_resource_ips(with_key(by_resource, &f.server.admin_key)).await.unwrap().into_inner();
        assert_eq!(listed.resource_ips.len(), 2);
        assert!(listed.resource_ips.iter().all(|r| r.resource_id == first));
        let err = rules.list_resource_ips(with_key(ListResourceIpsRequest::default(), &key)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);

        // Another user sees none of it.
        let other = f.server.insert_user(&f.server.organization_id, "other@example.com", "USER").await;
        let other_key = f.server.insert_api_key(&other, Permission::ALL, None).await;
        let err = rules
            .get_resource_ip(with_key(GetResourceIpRequest { id: seen[0].clone() }, &other_key))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        let err = rules
            .list_resource_ips(with_key(
                ListResourceIpsRequest { session_id: session.id.clone(), ..Default::default() },
                &other_key,
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        f.server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_reconnecting_watcher_misses_nothing() {
    each_backend(|db: TestDb| async move {
        let mut f = Fixture::new(&db).await;
        f.resource("db", MemoryProvider { latency_ms: 50, ..Default::default() }).await;
        let key = f.user_key.clone();
        let session = f.start(&key, Some(IPV4), None).await.unwrap();
        let watch = || with_key(WatchSessionRequest { id: session.id.clone() }, &key);

        let mut first = f.sessions.watch_session(watch()).await.unwrap().into_inner();
        let seen = first.message().await.unwrap().unwrap().session.unwrap();
        drop(first); // the connection drops mid-session
        f.watch_until(&key, &session.id, SessionStatus::Active).await;
        f.stop(&key, &session.id).await;

        // Reconnecting: the current state comes first, newer than anything seen before.
        let mut again = f.sessions.watch_session(watch()).await.unwrap().into_inner();
        let current = again.message().await.unwrap().unwrap().session.unwrap();
        assert!(current.revision > seen.revision, "{}", db.backend);
        assert!(matches!(current.status(), SessionStatus::Expiring | SessionStatus::Cancelled));
        let mut last = current;
        while let Some(message) = again.message().await.unwrap() {
            last = message.session.unwrap();
        }
        assert_eq!(last.status(), SessionStatus::Cancelled);
        // Streams that clients dropped are released by the server shortly after.
        let hub = f.server.services.engine.hub().clone();
        common::eventually("no channel outlives its watchers", Duration::from_secs(2), async || {
            let remaining = hub.watched_sessions();
            common::when(remaining == 0, remaining)
        })
        .await;
        f.server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_watch_on_one_replica_sees_changes_made_on_another() {
    let Some(db) = common::postgres_if_configured("replicas").await else { return };
    let mut f = Fixture::new(&db).await;
    f.resource("db", MemoryProvider::default()).await;
    let key = f.user_key.clone();
    let session = f.start(&key, Some(IPV4), None).await.unwrap();
    let active = f.watch_until(&key, &session.id, SessionStatus::Active).await.pop().unwrap();

    let other = f.server.replica(&db, common::test_config()).await;
    let mut other_sessions = SessionServiceClient::new(other.channel().await);
    let watch = with_key(WatchSessionRequest { id: session.id.clone() }, &key);
    let mut stream = other_sessions.watch_session(watch).await.unwrap().into_inner();
    let mut next = async || {
        let message = tokio::time::timeout(Duration::from_secs(10), stream.message()).await;
        message.expect("the other replica's watch heard of the change").unwrap().map(|m| m.session.unwrap())
    };
    assert_eq!(next().await.unwrap().revision, active.revision);

    // The replicas' listening connections drop; they listen again and catch up by themselves.
    let terminated = f
        .server
        .db
        .execute_unprepared(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND query LIKE 'LISTEN %'",
        )
        .await
        .unwrap();
    assert_eq!(terminated.rows_affected(), 2, "one listener per replica");

    // Extending involves no engine: only the announcement tells the other replica.
    let extend = ExtendSessionRequest { id: session.id.clone(), additional_hours: 1, additional_minutes: 0 };
    let extended = f.sessions.extend_session(with_key(extend, &key)).await.unwrap().into_inner().session.unwrap();
    let seen = next().await.unwrap();
    assert_eq!((seen.revision, seen.expires_at), (extended.revision, extended.expires_at));

    f.stop(&key, &session.id).await;
    let mut last = seen;
    while let Some(session) = next().await {
        assert!(session.revision > last.revision);
        last = session;
    }
    assert_eq!(last.status(), SessionStatus::Cancelled);
    other.stop().await;
    f.server.stop().await;
}

/// Starts that arrive together are committed together; one start's refusal (its address is
/// already live, even from a start in the same batch) fails no other.
#[tokio::test]
async fn concurrent_starts_each_get_their_own_answer() {
    each_backend(|db: TestDb| async move {
        let mut f = Fixture::new(&db).await;
        f.resource("db", MemoryProvider::default()).await;
        f.server.set_tier(Tier::Business).await;
        let key = f.user_key.clone();
        // 40 starts for 20 addresses: each address asked for twice, all at once.
        let starts = (0..40).map(|n| {
            let mut sessions = f.sessions.clone();
            let request = StartSessionRequest {
                ipv4_address: Some(format!("203.0.113.{}", 100 + n % 20)),
                duration_minutes: Some(30),
                ..Default::default()
            };
            let request = with_key(request, &key);
            async move { sessions.start_session(request).await }
        });
        let answers = futures::future::join_all(starts).await;
        let mut started = std::collections::BTreeMap::new();
        for answer in answers {
            match answer {
                Ok(response) => {
                    let session = response.into_inner().session.unwrap();
                    assert!(started.insert(session.ipv4_address.clone(), session.id).is_none(), "{}", db.backend);
                }
                Err(status) => {
                    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
                    assert_eq!(reason(&status), "ERROR_REASON_SESSION_ALREADY_ACTIVE");
                }
            }
        }
        assert_eq!(started.len(), 20, "one session per address: {started:?}");
        for id in started.values() {
            f.watch_until(&key, id, SessionStatus::Active).await;
        }
        f.server.stop().await;
    })
    .await;
}

/// Sessions are served from memory, yet every read shows the newest state: a replica's own
/// change at once, a renamed owner at once, another replica's change once announced.
#[tokio::test]
async fn reads_of_a_session_show_every_change() {
    each_backend(|db: TestDb| async move {
        let (mut f, key, session) = Fixture::with_active_session(&db, IPV4).await;
        let get = |sessions: &mut SessionServiceClient<Channel>| {
            let request = with_key(GetSessionRequest { id: session.id.clone() }, &key);
            let mut sessions = sessions.clone();
            async move { sessions.get_session(request).await.unwrap().into_inner().session.unwrap() }
        };
        let before = get(&mut f.sessions).await;

        let extend = ExtendSessionRequest { id: session.id.clone(), additional_hours: 0, additional_minutes: 5 };
        let extended = f.sessions.extend_session(with_key(extend, &key)).await.unwrap().into_inner().session.unwrap();
        let after = get(&mut f.sessions).await;
        assert_eq!(after.expires_at.unwrap().seconds, before.expires_at.unwrap().seconds + 300, "{}", db.backend);
        assert_eq!(after.revision, extended.revision);

        let renamed = User { id: f.user_id.clone(), full_name: "Grace Hopper".into(), ..Default::default() };
        let update =
            UpdateUserRequest { user: Some(renamed), update_mask: Some(FieldMask { paths: vec!["full_name".into()] }) };
        portcullis::pb::v1::user_service_client::UserServiceClient::new(f.server.channel().await)
            .update_user(with_key(update, &f.server.admin_key))
            .await
            .unwrap();
        assert_eq!(get(&mut f.sessions).await.user_name, "Grace Hopper", "{}", db.backend);

        if db.backend == "postgres" {
            let other = f.server.replica(&db, common::test_config()).await;
            let mut elsewhere = SessionServiceClient::new(other.channel().await);
            assert_eq!(get(&mut elsewhere).await.revision, after.revision);
            let stopped = f.stop(&key, &session.id).await;
            common::eventually("the other replica never saw the stop", Duration::from_secs(10), async || {
                let seen = get(&mut elsewhere).await;
                common::when(seen.revision >= stopped.revision, seen.revision)
            })
            .await;
            other.stop().await;
        }
        f.server.stop().await;
    })
    .await;
}

/// The reconciler removes our orphans, puts back a rule deleted behind our back (with a
/// `rule.repaired` event), and never touches a foreign rule. The interval is set through its
/// deprecated name, which keeps working.
#[tokio::test]
async fn the_reconciler_repairs_drift_both_ways_and_never_touches_foreign_rules() {
    each_backend(|db| async move {
        let mut config = common::test_config();
        config.engine.sweep_interval_secs = Some(Seconds::of::<1>());
        config.engine.repair_grace_secs = Seconds::of::<0>();
        let mut f = Fixture::with_server(TestServer::start_with(&db, config).await).await;
        let resource_id = f.resource("db", MemoryProvider::default()).await;
        let key = f.user_key.clone();
        let session = f.start(&key, Some(IPV4), None).await.unwrap();
        f.watch_until(&key, &session.id, SessionStatus::Active).await;

        let memory = f.server.services.engine.providers().memory().clone();
        let orphan = ip("198.51.100.1");
        memory.plant(&resource_id, orphan, "portcullis session 0192-lost until 2026-01-01T00:00:00Z").unwrap();
        memory.plant(&resource_id, ip("198.51.100.2"), "office VPN").unwrap();
        memory.pull(&resource_id, ip(IPV4)).unwrap();
        let wanted = [ip("198.51.100.2"), ip(IPV4)];
        common::eventually(
            &format!("{}: drift outlived the passes", db.backend),
            Duration::from_secs(10),
            async || {
                let open = f.server.memory_rules(&resource_id);
                common::when(open == wanted, open)
            },
        )
        .await;
        // The firewall holds it again a moment before the worker records it.
        let what = format!("{}: the repair was never recorded", db.backend);
        let repaired = common::eventually(&what, Duration::from_secs(10), async || {
            let record = settled(&f.server, &session.id, SessionStatus::Active).await;
            common::when(record.rules[0].status.as_str() == "APPLIED", record)
        })
        .await;
        let rule_id = repaired.rules[0].id.clone();
        let events = audit_details(&f.server, &rule_id, "rule.repaired").await;
        assert_eq!(events[0].get("address").map(String::as_str), Some(IPV4), "{}", db.backend);
        f.server.stop().await;
    })
    .await;
}

/// Polls the store until the session reaches `status` (bounded: 20 s).
async fn settled(
    server: &TestServer,
    id: &str,
    status: SessionStatus,
) -> portcullis::store::queries::sessions::SessionRecord {
    let wanted = status.as_str_name().trim_start_matches("SESSION_STATUS_");
    common::eventually(&format!("session {id} never reached {status:?}"), Duration::from_secs(20), async || {
        let record = portcullis::store::queries::sessions::load(&server.db, id).await.unwrap();
        let reached = record.session.status.as_str() == wanted;
        common::when(reached, record)
    })
    .await
}

/// The `details` of the audit events about `target_id` of type `event_type`.
async fn audit_details(
    server: &TestServer,
    target_id: &str,
    event_type: &str,
) -> Vec<std::collections::HashMap<String, String>> {
    let request = ListAuditEventsRequest { types: vec![event_type.into()], ..Default::default() };
    portcullis::pb::v1::audit_service_client::AuditServiceClient::new(server.channel().await)
        .list_audit_events(with_key(request, &server.admin_key))
        .await
        .unwrap()
        .into_inner()
        .audit_events
        .into_iter()
        .filter(|event| event.target_id == target_id)
        .map(|event| event.details)
        .collect()
}

/// Disabling a user ends its live sessions at once and closes their rules; so does suspending
/// its organization. Their open watches end too.
#[tokio::test]
async fn disabling_a_user_or_suspending_its_organization_closes_the_firewall() {
    each_backend(|db: TestDb| async move {
        let mut f = Fixture::new(&db).await;
        let resource = f.resource("db", MemoryProvider::default()).await;
        let key = f.user_key.clone();
        let admin = f.server.admin_key.clone();
        let session = f.start(&key, Some(IPV4), None).await.unwrap();
        f.watch_until(&key, &session.id, SessionStatus::Active).await;
        let mut watch = f
            .sessions
            .watch_session(with_key(WatchSessionRequest { id: session.id.clone() }, &key))
            .await
            .unwrap()
            .into_inner();
        watch.message().await.unwrap();

        let mut users = portcullis::pb::v1::user_service_client::UserServiceClient::new(f.server.channel().await);
        users.disable_user(with_key(DisableUserRequest { id: f.user_id.clone() }, &admin)).await.unwrap();
        let ended = settled(&f.server, &session.id, SessionStatus::Cancelled).await;
        assert_eq!(ended.session.ended_reason.map(|reason| reason.as_str()), Some("ADMIN"), "{}", db.backend);
        assert!(f.server.memory_rules(&resource).is_empty(), "{}: the disabled user's address is closed", db.backend);
        let causes = audit_details(&f.server, &session.id, "session.expiring").await;
        assert_eq!(causes[0].get("cause").map(String::as_str), Some("user disabled"));
        // The watch ends: with the session's end, or refused once the credential is re-checked.
        loop {
            match tokio::time::timeout(Duration::from_secs(20), watch.message()).await.expect("the watch stayed open") {
                Ok(Some(message)) if message.session.as_ref().unwrap().status() == SessionStatus::Cancelled => break,
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the watch ended before the session did"),
                Err(err) => {
                    assert_eq!(err.code(), Code::Unauthenticated, "{}: {err:?}", db.backend);
                    break;
                }
            }
        }

        // Suspension ends every live session of the organization.
        let other = f.server.insert_user(&f.server.organization_id, "other@example.com", "USER").await;
        let other_key = f.server.insert_api_key(&other, Permission::ALL, None).await;
        f.assign(&resource, &other).await;
        let second = f.start(&other_key, Some("203.0.113.11"), None).await.unwrap();
        f.watch_until(&other_key, &second.id, SessionStatus::Active).await;
        f.server.set_suspended(true).await;
        let ended = settled(&f.server, &second.id, SessionStatus::Cancelled).await;
        assert_eq!(ended.session.ended_reason.map(|reason| reason.as_str()), Some("ADMIN"));
        assert!(
            f.server.memory_rules(&resource).is_empty(),
            "{}: the suspended organization's addresses are closed",
            db.backend
        );
        f.server.set_suspended(false).await;
        let causes = audit_details(&f.server, &second.id, "session.expiring").await;
        assert_eq!(causes[0].get("cause").map(String::as_str), Some("organization suspended"));
        f.server.stop().await;
    })
    .await;
}

/// Unassigning a resource takes its rules out of the user's live sessions at once; the session
/// rolls up from what it keeps, and one left with nothing ends.
#[tokio::test]
async fn unassigning_a_resource_removes_its_rules_from_live_sessions() {
    each_backend(|db: TestDb| async move {
        let mut f = Fixture::new(&db).await;
        let first = f.resource("db", MemoryProvider::default()).await;
        let second = f.resource("web", MemoryProvider::default()).await;
        let key = f.user_key.clone();
        let admin = f.server.admin_key.clone();
        let session = f.start(&key, Some(IPV4), None).await.unwrap();
        f.watch_until(&key, &session.id, SessionStatus::Active).await;

        let unassign =
            |resource_id: &str| UnassignResourceRequest { resource_id: resource_id.into(), user_id: f.user_id.clone() };
        let request = unassign(&first);
        f.resources.unassign_resource(with_key(request, &admin)).await.unwrap();
        let what = format!("{}: the unassigned resource is closed", db.backend);
        common::eventually(&what, Duration::from_secs(10), async || {
            let open = f.server.memory_rules(&first);
            common::when(open.is_empty(), open)
        })
        .await;
        assert_eq!(f.server.memory_rules(&second), vec![ip(IPV4)], "the other resource stays open");
        let kept = settled(&f.server, &session.id, SessionStatus::Active).await;
        let by_resource = |id: &str| kept.rules.iter().find(|rule| rule.resource_id == id).unwrap().status.as_str();
        assert_eq!(by_resource(&second), "APPLIED");
        assert!(matches!(by_resource(&first), "REMOVING" | "REMOVED"));

        let request = unassign(&second);
        f.resources.unassign_resource(with_key(request, &admin)).await.unwrap();
        let ended = settled(&f.server, &session.id, SessionStatus::Cancelled).await;
        assert_eq!(
            ended.session.ended_reason.map(|reason| reason.as_str()),
            Some("ADMIN"),
            "{}: nothing left to keep",
            db.backend
        );
        assert!(f.server.memory_rules(&second).is_empty());
        f.server.stop().await;
    })
    .await;
}

/// ExtendSession checks that the session's resources are still assigned to its user.
#[tokio::test]
async fn extending_needs_the_resources_still_assigned() {
    each_backend(|db: TestDb| async move {
        let (mut f, key, session) = Fixture::with_active_session(&db, IPV4).await;
        // Unassigned behind the server's back, as a racing replica's unassignment might be.
        f.server.db.execute_unprepared("DELETE FROM resource_assignments").await.unwrap();
        let request = ExtendSessionRequest { id: session.id.clone(), additional_hours: 1, additional_minutes: 0 };
        let err = f.sessions.extend_session(with_key(request, &key)).await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{}: {err:?}", db.backend);
        assert_eq!(reason(&err), "ERROR_REASON_NO_ASSIGNED_RESOURCES");
        f.server.stop().await;
    })
    .await;
}

/// A lower maximum (tier or role) shortens live sessions to it, counted from their start; a
/// session already past it ends.
#[tokio::test]
async fn a_lower_maximum_shortens_live_sessions() {
    each_backend(|db: TestDb| async move {
        let mut config = common::test_config();
        config.sessions.max_hours_user = Count::of::<4>();
        let server = TestServer::start_with(&db, config).await;
        let mut f = Fixture::with_server(server).await;
        let resource = f.resource("db", MemoryProvider::default()).await;
        let admin = f.server.admin_key.clone();
        f.server.set_tier(Tier::Business).await;

        // An admin's 10-hour session; demoted to USER (4 h at most) it ends 4 hours after it began.
        let boss = f.server.insert_user(&f.server.organization_id, "boss@example.com", "ADMIN").await;
        let boss_key = f.server.insert_api_key(&boss, Permission::ALL, None).await;
        f.assign(&resource, &boss).await;
        let start = |ip: &str| StartSessionRequest {
            duration_hours: Some(10),
            ipv4_address: Some(ip.into()),
            ipv6_address: None,
            duration_minutes: None,
            heartbeat_seconds: None,
            ..Default::default()
        };
        let long =
            f.sessions.start_session(with_key(start(IPV4), &boss_key)).await.unwrap().into_inner().session.unwrap();
        f.watch_until(&boss_key, &long.id, SessionStatus::Active).await;
        let demote = User { id: boss.clone(), role: Role::User.into(), ..Default::default() };
        let update =
            UpdateUserRequest { user: Some(demote), update_mask: Some(FieldMask { paths: vec!["role".into()] }) };
        portcullis::pb::v1::user_service_client::UserServiceClient::new(f.server.channel().await)
            .update_user(with_key(update, &admin))
            .await
            .unwrap();
        let shortened = portcullis::store::queries::sessions::get(&f.server.db, &long.id).await.unwrap();
        assert_eq!(shortened.expires_at - shortened.started_at, chrono::TimeDelta::hours(4), "{}", db.backend);
        assert_eq!(shortened.status.as_str(), "ACTIVE");

        // The tier goes back to FREE (2 h): a 3-hour-old session ends at once, a new one is cut to 2 h.
        let old = f.start(&f.user_key.clone(), Some("203.0.113.12"), None).await.unwrap();
        f.watch_until(&f.user_key.clone(), &old.id, SessionStatus::Active).await;
        f.server
            .db
            .execute_unprepared(&format!(
                "UPDATE sessions SET started_at = '{}' WHERE id = '{}'",
                (portcullis::domain::now() - chrono::TimeDelta::hours(3)).format("%Y-%m-%d %H:%M:%S%.6f+00:00"),
                old.id
            ))
            .await
            .unwrap();
        f.server.set_tier(Tier::Free).await;
        let ended = settled(&f.server, &old.id, SessionStatus::Expired).await;
        assert_eq!(ended.session.ended_reason.map(|reason| reason.as_str()), Some("EXPIRED"));
        let cut = portcullis::store::queries::sessions::get(&f.server.db, &long.id).await.unwrap();
        assert_eq!(cut.expires_at - cut.started_at, chrono::TimeDelta::hours(2), "{}", db.backend);
        assert_eq!(f.server.memory_rules(&resource), vec![ip(IPV4)], "only the session within the maximum stays open");
        let causes = audit_details(&f.server, &long.id, "session.shortened").await;
        assert_eq!(causes.len(), 2);
        f.server.stop().await;
    })
    .await;
}

/// A watch whose API key is revoked ends with UNAUTHENTICATED within the caller cache's life.
#[tokio::test]
async fn a_watch_ends_when_its_key_is_revoked() {
    each_backend(|db: TestDb| async move {
        let mut f = Fixture::new(&db).await;
        f.resource("db", MemoryProvider::default()).await;
        let mut keys = portcullis::pb::v1::auth_service_client::AuthServiceClient::new(f.server.channel().await);
        let request = CreateApiKeyRequest {
            name: "watcher".into(),
            permissions: vec!["sessions:read".into(), "sessions:write".into()],
            expires_at: None,
        };
        let created = keys.create_api_key(with_key(request, &f.user_key)).await.unwrap().into_inner();
        let session = f.start(&created.secret, Some(IPV4), None).await.unwrap();
        let mut watch = f
            .sessions
            .watch_session(with_key(WatchSessionRequest { id: session.id.clone() }, &created.secret))
            .await
            .unwrap()
            .into_inner();
        watch.message().await.unwrap();
        let revoke = RevokeApiKeyRequest { id: created.api_key.unwrap().id };
        keys.revoke_api_key(with_key(revoke, &f.server.admin_key)).await.unwrap();
        let err = loop {
            match tokio::time::timeout(Duration::from_secs(20), watch.message())
                .await
                .expect("the watch outlived its key")
            {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the watch ended without an error"),
                Err(err) => break err,
            }
        };
        assert_eq!(err.code(), Code::Unauthenticated, "{}", db.backend);
        f.server.stop().await;
    })
    .await;
}

/// A removal is only REMOVED once the provider confirms it: while the resource's provider
/// cannot be reached (here its stored config is unreadable), the rule stays REMOVING with an
/// error operators can see, and it is retried until the provider answers.
#[tokio::test]
async fn a_removal_waits_for_a_reachable_provider() {
    each_backend(|db: TestDb| async move {
        let mut f = Fixture::new(&db).await;
        let resource = f.resource("db", MemoryProvider::default()).await;
        let key = f.user_key.clone();
        let session = f.start(&key, Some(IPV4), None).await.unwrap();
        f.watch_until(&key, &session.id, SessionStatus::Active).await;
        let stored = portcullis::store::queries::resources::get_by_id(&f.server.db, &resource).await.unwrap();
        let set_config =
            |config: &str| format!("UPDATE resources SET provider_config = '{config}' WHERE id = '{resource}'");
        f.server.db.execute_unprepared(&set_config(r#"{"kind":"unknown"}"#)).await.unwrap();

        f.stop(&key, &session.id).await;
        let what = format!("{}: the removal never reported its problem", db.backend);
        let rule = common::eventually(&what, Duration::from_secs(10), async || {
            let record = portcullis::store::queries::sessions::load(&f.server.db, &session.id).await.unwrap();
            let rule = record.rules[0].clone();
            common::when(rule.error_message.is_some(), rule)
        })
        .await;
        assert_eq!(rule.status.as_str(), "REMOVING", "{}: never REMOVED without the provider", db.backend);
        assert!(rule.error_message.unwrap().contains("cannot remove"));
        assert_eq!(f.server.memory_rules(&resource), vec![ip(IPV4)], "the address is still open at the provider");

        f.server.db.execute_unprepared(&set_config(stored.provider_config.text())).await.unwrap();
        settled(&f.server, &session.id, SessionStatus::Cancelled).await;
        assert!(f.server.memory_rules(&resource).is_empty(), "{}", db.backend);
        f.server.stop().await;
    })
    .await;
}

/// Sessions in minutes, for CI jobs: `duration_minutes` and `additional_minutes`, each
/// exclusive with its hours twin and held to the same maximum; no amount of time asked for can
/// break the server.
#[tokio::test]
async fn sessions_in_minutes_and_any_amount_of_time_asked_for() {
    each_backend(|db: TestDb| async move {
        let mut f = Fixture::new(&db).await;
        f.resource("db", MemoryProvider::default()).await;
        let key = f.user_key.clone();
        let start = |hours: Option<u32>, minutes: Option<u32>| StartSessionRequest {
            duration_hours: hours,
            duration_minutes: minutes,
            ipv4_address: Some(IPV4.into()),
            ipv6_address: None,
            heartbeat_seconds: None,
            ..Default::default()
        };
        for (hours, minutes, field) in [
            (Some(1), Some(15), "duration_minutes"),
            (None, Some(121), "duration_minutes"),
            (None, Some(0), "duration_minutes"),
            (Some(u32::MAX), None, "duration_hours"),
            (None, Some(u32::MAX), "duration_minutes"),
        ] {
            let err = f.sessions.start_session(with_key(start(hours, minutes), &key)).await.unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument, "{hours:?} h {minutes:?} min: {err:?}");
            assert_eq!(violated_fields(&err), [field], "{hours:?} h {minutes:?} min");
        }
        let session = f
            .sessions
            .start_session(with_key(start(None, Some(15)), &key))
            .await
            .unwrap()
            .into_inner()
            .session
            .unwrap();
        assert_eq!(
            session.expires_at.unwrap().seconds - session.started_at.unwrap().seconds,
            15 * 60,
            "{}",
            db.backend
        );
        f.watch_until(&key, &session.id, SessionStatus::Active).await;

        let extend = |hours: u32, minutes: u32| ExtendSessionRequest {
            id: session.id.clone(),
            additional_hours: hours,
            additional_minutes: minutes,
        };
        let extended = f.sessions.extend_session(with_key(extend(0, 30), &key)).await.unwrap().into_inner();
        let expires_at = extended.session.unwrap().expires_at.unwrap().seconds;
        assert_eq!(expires_at - session.expires_at.unwrap().seconds, 30 * 60);
        for (hours, minutes, field) in [
            (u32::MAX, 0, "additional_hours"),
            (0, u32::MAX, "additional_minutes"),
            (1, 1, "additional_minutes"),
            (0, 0, "additional_hours"),
            (2, 0, "additional_hours"),
        ] {
            let err = f.sessions.extend_session(with_key(extend(hours, minutes), &key)).await.unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument, "{hours} h {minutes} min: {err:?}");
            assert_eq!(violated_fields(&err), [field], "{hours} h {minutes} min");
        }
        f.server.stop().await;
    })
    .await;
}

/// A worker whose lease is taken over while its provider call runs abandons the call at its
/// next renewal: the rule is never opened by it nor recorded, and is opened once the firewall
/// is free again.
#[tokio::test]
async fn a_worker_that_loses_its_lease_stops_writing() {
    each_backend(|db: TestDb| async move {
        // Renewals every second; the provider call takes 1.8 s, within its 2 s deadline.
        let mut f = Fixture::with_server(TestServer::start_with(&db, short_leases()).await).await;
        let resource = f.resource("db", MemoryProvider { latency_ms: 1800, ..Default::default() }).await;
        let key = f.user_key.clone();
        let session = f.start(&key, Some(IPV4), None).await.unwrap();
        leased(&f.server.db, &resource).await;
        // Another worker takes the firewall over while the call is in flight.
        let until = (portcullis::domain::now() + chrono::TimeDelta::minutes(10)).format("%Y-%m-%d %H:%M:%S%.6f+00:00");
        let steal = format!(
            "UPDATE resource_leases SET holder = 'thief', expires_at = '{until}' WHERE resource_id = '{resource}'"
        );
        assert_eq!(
            f.server.db.execute_unprepared(&steal).await.unwrap().rows_affected(),
            1,
            "{}: the worker held the lease",
            db.backend
        );
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(f.server.memory_rules(&resource).is_empty(), "{}: the call was abandoned before it wrote", db.backend);
        let record = portcullis::store::queries::sessions::load(&f.server.db, &session.id).await.unwrap();
        assert_eq!(
            record.rules[0].status.as_str(),
            "PENDING",
            "{}: nothing recorded by the worker that lost the lease",
            db.backend
        );

        f.server
            .db
            .execute_unprepared(&format!("DELETE FROM resource_leases WHERE resource_id = '{resource}'"))
            .await
            .unwrap();
        settled(&f.server, &session.id, SessionStatus::Active).await;
        assert_eq!(f.server.memory_rules(&resource), vec![ip(IPV4)]);
        f.server.stop().await;
    })
    .await;
}

/// A session with a heartbeat lives while a watch of its owner is open — on any replica — and
/// ends CANCELLED / CLIENT_GONE, its rules removed, once none has been open that long: a client
/// that dies, even by kill -9, does not leave its address open. Another user's watch (an
/// admin's) does not keep it alive.
#[tokio::test]
async fn a_session_bound_to_its_client_ends_when_the_client_is_gone() {
    each_backend(|db: TestDb| async move {
        let mut f = Fixture::new(&db).await;
        let resource = f.resource("db", MemoryProvider::default()).await;
        let key = f.user_key.clone();
        let start = |heartbeat_seconds: Option<u32>| StartSessionRequest {
            ipv4_address: Some(IPV4.into()),
            heartbeat_seconds,
            ..Default::default()
        };
        let err = f.sessions.start_session(with_key(start(Some(1)), &key)).await.unwrap_err();
        assert_eq!(violated_fields(&err), ["heartbeat_seconds"], "{err:?}");
        let session =
            f.sessions.start_session(with_key(start(Some(5)), &key)).await.unwrap().into_inner().session.unwrap();
        assert_eq!(session.heartbeat_seconds, Some(5));

        // The owner's watch keeps it alive past its heartbeat; an admin's watch alongside does not count.
        let watch = |key: String| {
            let mut sessions = f.sessions.clone();
            let id = session.id.clone();
            async move { sessions.watch_session(with_key(WatchSessionRequest { id }, &key)).await.unwrap().into_inner() }
        };
        let mut owners = watch(key.clone()).await;
        let mut admins = watch(f.server.admin_key.clone()).await;
        owners.message().await.unwrap();
        admins.message().await.unwrap();
        tokio::time::sleep(Duration::from_secs(8)).await;
        let alive = portcullis::store::queries::sessions::get(&f.server.db, &session.id).await.unwrap();
        assert_eq!(alive.status.as_str(), "ACTIVE", "{}: watched by its owner", db.backend);

        // The client goes (its stream simply stops): within the heartbeat the session ends.
        drop(owners);
        let ended = settled(&f.server, &session.id, SessionStatus::Cancelled).await;
        assert_eq!(ended.session.ended_reason.map(|reason| reason.as_str()), Some("CLIENT_GONE"));
        assert!(f.server.memory_rules(&resource).is_empty(), "{}: its address is closed", db.backend);
        let mut last = None;
        while let Ok(Some(message)) = admins.message().await {
            last = message.session.map(|s| s.ended_reason());
        }
        assert_eq!(last, Some(EndedReason::ClientGone), "watchers hear why");

        // A session whose client never watches ends too.
        let lonely = f.sessions.start_session(with_key(start(Some(5)), &key)).await.unwrap().into_inner().session.unwrap();
        let ended = settled(&f.server, &lonely.id, SessionStatus::Cancelled).await;
        assert_eq!(ended.session.ended_reason.map(|reason| reason.as_str()), Some("CLIENT_GONE"));
        f.server.stop().await;
    })
    .await;
}

/// GetClientAddress answers the address the server sees: the peer, or through a trusted proxy
/// the client it names.
#[tokio::test]
async fn get_client_address_tells_the_address_the_server_sees() {
    let db = TestDb::sqlite();
    let mut config = common::test_config();
    config.network.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    let f = Fixture::with_server(TestServer::start_with(&db, config).await).await;
    let mut sessions = f.sessions.clone();
    let direct = sessions.get_client_address(with_key(GetClientAddressRequest {}, &f.user_key)).await.unwrap();
    assert_eq!(direct.into_inner(), GetClientAddressResponse { ip_address: "127.0.0.1".into(), ip_version: 4 });
    let mut relayed = with_key(GetClientAddressRequest {}, &f.user_key);
    relayed.metadata_mut().insert("x-forwarded-for", "2001:db8::7, 127.0.0.1".parse().unwrap());
    let relayed = sessions.get_client_address(relayed).await.unwrap().into_inner();
    assert_eq!((relayed.ip_address.as_str(), relayed.ip_version), ("2001:db8::7", 6));
    f.server.stop().await;
}

/// ChangeSessionAddress moves a live session to a new address with no moment where neither is
/// open: the old rule is removed only once the new one is applied. Audited; an ended session
/// cannot change.
#[tokio::test]
async fn a_session_changes_address_without_a_gap() {
    each_backend(|db: TestDb| async move {
        let mut f = Fixture::new(&db).await;
        // Slow enough that a gap would be seen between removing one rule and applying the other.
        let resource = f.resource("db", MemoryProvider { latency_ms: 300, ..Default::default() }).await;
        let key = f.user_key.clone();
        let session = f.start(&key, Some(IPV4), None).await.unwrap();
        f.watch_until(&key, &session.id, SessionStatus::Active).await;

        let firewall = f.server.services.engine.providers().memory().clone();
        let watched = resource.clone();
        let (stop_sampling, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let sampler = tokio::spawn(async move {
            let (mut gaps, mut overlaps) = (0, 0);
            loop {
                let open = firewall.rules(&watched).len();
                gaps += usize::from(open == 0);
                overlaps += usize::from(open == 2);
                if stopped.try_recv().is_ok() {
                    return (gaps, overlaps);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        let moved = "203.0.113.77";
        let request = ChangeSessionAddressRequest {
            id: session.id.clone(),
            ipv4_address: Some(moved.into()),
            ipv6_address: None,
        };
        let changed =
            f.sessions.change_session_address(with_key(request, &key)).await.unwrap().into_inner().session.unwrap();
        assert_eq!(changed.ipv4_address, moved, "{}", db.backend);
        common::eventually("never moved", Duration::from_secs(20), async || {
            let open = f.server.memory_rules(&resource);
            common::when(open == vec![ip(moved)], open)
        })
        .await;
        stop_sampling.send(()).unwrap();
        let (gaps, overlaps) = sampler.await.unwrap();
        assert_eq!(gaps, 0, "{}: a moment with neither address open", db.backend);
        assert!(overlaps > 0, "both were open while the new one was applied");
        // The provider answers before the worker records it: wait for the record.
        let wanted = [(IPV4.to_owned(), "REMOVED".to_owned()), (moved.to_owned(), "APPLIED".to_owned())];
        common::eventually("the move was never recorded", Duration::from_secs(10), async || {
            let settled = settled(&f.server, &session.id, SessionStatus::Active).await;
            let statuses: Vec<(String, String)> =
                settled.rules.iter().map(|rule| (rule.ip_address.clone(), rule.status.as_str().to_owned())).collect();
            common::when(wanted.iter().all(|rule| statuses.contains(rule)), statuses)
        })
        .await;
        let changes = audit_details(&f.server, &session.id, "session.address_changed").await;
        assert_eq!(changes[0].get("ipv4_to").map(String::as_str), Some(moved));

        f.stop(&key, &session.id).await;
        let request =
            ChangeSessionAddressRequest { id: session.id.clone(), ipv4_address: Some(IPV4.into()), ipv6_address: None };
        let err = f.sessions.change_session_address(with_key(request, &key)).await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
        f.server.stop().await;
    })
    .await;
}

// Races between two paths. Each test holds one path at a named point (`engine.pauses()`),
// makes the other happen in the window, checks that it did, then lets the first go on.

/// A retry of a FAILED rule that was checked while its session still lived, and is written after
/// the session's last rule failed, must not open the address of a FAILED session (nothing would
/// ever close it).
#[tokio::test]
async fn a_retry_racing_the_sessions_failure_opens_nothing() {
    each_backend(|db: TestDb| async move {
        let mut f = Fixture::new(&db).await;
        let refusing = MemoryProvider { fail_addresses: vec![IPV4.into()], ..Default::default() };
        let fast = f.resource("fast", refusing.clone()).await;
        let slow = f.resource("slow", MemoryProvider { latency_ms: 1500, ..refusing }).await;
        let key = f.user_key.clone();
        let session = f.start(&key, Some(IPV4), None).await.unwrap();
        let failed_rule = loop {
            let current = f.sessions.get_session(with_key(GetSessionRequest { id: session.id.clone() }, &key));
            let current = current.await.unwrap().into_inner().session.unwrap();
            let fast_rule = current.resource_ips.iter().find(|r| r.resource_id == fast).unwrap().clone();
            if fast_rule.status() == ResourceIpStatus::Failed {
                assert_eq!(current.status(), SessionStatus::Pending, "the slow resource's rule is still pending");
                break fast_rule;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        // The fast firewall would take the address now.
        let fixed = UpdateResourceRequest {
            resource: Some(Resource {
                id: fast.clone(),
                provider: Some(resource::Provider::Memory(MemoryProvider::default())),
                ..Default::default()
            }),
            update_mask: Some(FieldMask { paths: vec!["provider".into()] }),
        };
        f.resources.update_resource(with_key(fixed, &f.server.admin_key)).await.unwrap();

        let gate = f.server.services.engine.pauses().arm(Point::RetryBeforeWrite);
        let mut rules = ResourceIpServiceClient::new(f.server.channel().await);
        let retry = tokio::spawn({
            let request = with_key(RetryResourceIpRequest { id: failed_rule.id.clone() }, &key);
            async move { rules.retry_resource_ip(request).await }
        });
        gate.reached().await;
        // While the retry is held after its checks, the slow rule fails: the session is FAILED.
        let failed = settled(&f.server, &session.id, SessionStatus::Failed).await;
        assert!(!retry.is_finished(), "{}: the retry was held while the session failed", db.backend);
        assert!(failed.rules.iter().all(|rule| rule.status.as_str() == "FAILED"), "{:?}", failed.rules);
        gate.release();

        let answer = retry.await.unwrap();
        let err = answer.expect_err("a rule of a FAILED session is not retried");
        assert_eq!(err.code(), Code::FailedPrecondition, "{}: {err:?}", db.backend);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = portcullis::store::queries::sessions::load(&f.server.db, &session.id).await.unwrap();
        assert_eq!(after.session.status.as_str(), "FAILED");
        assert!(after.rules.iter().all(|rule| rule.status.as_str() == "FAILED"), "{}: {:?}", db.backend, after.rules);
        assert!(f.server.memory_rules(&fast).is_empty(), "{}: nothing opened for a FAILED session", db.backend);
        assert!(f.server.memory_rules(&slow).is_empty());
        f.server.stop().await;
    })
    .await;
}

/// How an admin takes away the right to start.
#[derive(Debug, Clone, Copy)]
enum Revocation {
    DisableUser,
    UnassignResource,
    SuspendOrganization,
}

/// Starts already past their checks when the right is taken away never commit: 0 of them open
/// an address, and each says why.
#[tokio::test]
async fn starts_in_flight_do_not_survive_a_revocation() {
    const IN_FLIGHT: usize = 8;
    for revocation in [Revocation::DisableUser, Revocation::UnassignResource, Revocation::SuspendOrganization] {
        each_backend(|db: TestDb| async move {
            let mut f = Fixture::new(&db).await;
            let resource = f.resource("db", MemoryProvider::default()).await;
            let key = f.user_key.clone();
            let gate = f.server.services.engine.pauses().arm(Point::StartBeforeWrite);
            let starts: Vec<_> = (0..IN_FLIGHT)
                .map(|n| {
                    let mut sessions = f.sessions.clone();
                    let request = StartSessionRequest {
                        ipv6_address: Some(format!("2001:db8::{:x}", n + 1)),
                        ..Default::default()
                    };
                    let request = with_key(request, &key);
                    tokio::spawn(async move { sessions.start_session(request).await })
                })
                .collect();
            gate.reached().await;
            // Every start has passed authentication and the service's checks and waits at the writer.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let admin = f.server.admin_key.clone();
            match revocation {
                Revocation::DisableUser => {
                    let mut users = user_service_client::UserServiceClient::new(f.server.channel().await);
                    users.disable_user(with_key(DisableUserRequest { id: f.user_id.clone() }, &admin)).await.unwrap();
                }
                Revocation::UnassignResource => {
                    let request = UnassignResourceRequest { resource_id: resource.clone(), user_id: f.user_id.clone() };
                    f.resources.unassign_resource(with_key(request, &admin)).await.unwrap();
                }
                Revocation::SuspendOrganization => f.server.set_suspended(true).await,
            }
            assert!(starts.iter().all(|start| !start.is_finished()), "every start was still in flight");
            gate.release();

            let (mut survived, mut refused_at_commit) = (0, 0);
            for start in starts {
                match start.await.unwrap() {
                    Ok(_) => survived += 1,
                    // Past every check before the revocation, refused when it came to commit.
                    Err(err) if err.code() == Code::FailedPrecondition => refused_at_commit += 1,
                    // A start slow enough to meet the revocation at authentication.
                    Err(err) => assert!(
                        matches!(err.code(), Code::Unauthenticated | Code::PermissionDenied),
                        "{revocation:?} {}: {err:?}",
                        db.backend
                    ),
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            let open = f.server.memory_rules(&resource);
            assert_eq!((survived, open.len()), (0, 0), "{revocation:?} {}: {open:?}", db.backend);
            // At least the start the writer was held with had passed every check: the window was hit.
            assert!(refused_at_commit >= 1, "{revocation:?} {}: no start was in flight", db.backend);
            if matches!(revocation, Revocation::SuspendOrganization) {
                f.server.set_suspended(false).await;
            }
            f.server.stop().await;
        })
        .await;
    }
}

/// A → B (B's rule fails) → C: once C is open, neither A nor B is.
#[tokio::test]
async fn an_address_left_behind_a_failed_one_is_closed() {
    const B: &str = "203.0.113.20";
    const C: &str = "203.0.113.30";
    each_backend(|db: TestDb| async move {
        let mut f = Fixture::new(&db).await;
        let resource = f.resource("db", MemoryProvider { fail_addresses: vec![B.into()], ..Default::default() }).await;
        let key = f.user_key.clone();
        let session = f.start(&key, Some(IPV4), None).await.unwrap();
        f.watch_until(&key, &session.id, SessionStatus::Active).await;
        let change = |address: &str| {
            let request = ChangeSessionAddressRequest {
                id: session.id.clone(),
                ipv4_address: Some(address.into()),
                ipv6_address: None,
            };
            with_key(request, &key)
        };
        f.sessions.change_session_address(change(B)).await.unwrap();
        let partial = f.watch_until(&key, &session.id, SessionStatus::Partial).await.pop().unwrap();
        let b_rule = partial.resource_ips.iter().find(|rule| rule.ip_address == B).unwrap();
        assert_eq!(b_rule.status(), ResourceIpStatus::Failed, "{}", db.backend);
        assert_eq!(f.server.memory_rules(&resource), [ip(IPV4)], "A stays open while B failed");

        f.sessions.change_session_address(change(C)).await.unwrap();
        let what = format!("{}: still open after the move to C", db.backend);
        common::eventually(&what, Duration::from_secs(10), async || {
            let open = f.server.memory_rules(&resource);
            common::when(open == [ip(C)], open)
        })
        .await;
        let moved = f.sessions.get_session(with_key(GetSessionRequest { id: session.id.clone() }, &key));
        let moved = moved.await.unwrap().into_inner().session.unwrap();
        assert_eq!((moved.status(), moved.ipv4_address.as_str()), (SessionStatus::Active, C));
        f.server.stop().await;
    })
    .await;
}

/// The expiry scheduler read a session as due, then its owner's watch renewed the heartbeat:
/// the session lives on.
#[tokio::test]
async fn expiry_never_ends_a_session_renewed_after_it_was_read() {
    each_backend(|db: TestDb| async move {
        let mut f = Fixture::new(&db).await;
        f.resource("db", MemoryProvider::default()).await;
        let key = f.user_key.clone();
        let gate = f.server.services.engine.pauses().arm(Point::ExpiryBeforeWrite);
        let request =
            StartSessionRequest { ipv4_address: Some(IPV4.into()), heartbeat_seconds: Some(5), ..Default::default() };
        let session = f.sessions.start_session(with_key(request, &key)).await.unwrap().into_inner().session.unwrap();
        // No watch: five seconds on, the scheduler finds the client gone and is held.
        tokio::time::timeout(Duration::from_secs(20), gate.reached()).await.expect("the session fell due");
        let mut watch = f
            .sessions
            .watch_session(with_key(WatchSessionRequest { id: session.id.clone() }, &key))
            .await
            .unwrap()
            .into_inner();
        let first = watch.message().await.unwrap().unwrap().session.unwrap();
        assert!(first.status().eq(&SessionStatus::Active) || first.status() == SessionStatus::Pending, "{first:?}");
        gate.release();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let record = portcullis::store::queries::sessions::load(&f.server.db, &session.id).await.unwrap();
        assert!(
            matches!(record.session.status.as_str(), "ACTIVE" | "PENDING"),
            "{}: ended though its client came back: {} {:?}",
            db.backend,
            record.session.status,
            record.session.ended_reason
        );
        f.server.stop().await;
    })
    .await;
}

/// PostgreSQL: a change of firewall checks for live rules while a start that will add one is not
/// yet committed; the two must not pass each other (the start's rule would stay on the old firewall).
#[cfg(feature = "aws")]
#[tokio::test]
async fn a_start_and_a_change_of_firewall_never_pass_each_other() {
    let Some(db) = common::postgres_if_configured("the start / UpdateResource race").await else { return };
    let mut f = Fixture::new(&db).await;
    let resource = f.resource("db", MemoryProvider::default()).await;
    let key = f.user_key.clone();
    let gate = f.server.services.engine.pauses().arm(Point::StartBeforeCommit);
    let start = tokio::spawn({
        let mut sessions = f.sessions.clone();
        let request = with_key(StartSessionRequest { ipv4_address: Some(IPV4.into()), ..Default::default() }, &key);
        async move { sessions.start_session(request).await }
    });
    gate.reached().await;
    let elsewhere = AwsSecurityGroup {
        region: "eu-west-1".into(),
        group_id: "sg-0123456789abcdef0".into(),
        protocol: "tcp".into(),
        from_port: 22,
        to_port: 22,
        endpoint_url: Some("http://127.0.0.1:1".into()),
        ..Default::default()
    };
    let update = tokio::spawn({
        let mut resources = f.resources.clone();
        let request = UpdateResourceRequest {
            resource: Some(Resource {
                id: resource.clone(),
                provider: Some(resource::Provider::AwsSecurityGroup(elsewhere)),
                ..Default::default()
            }),
            update_mask: Some(FieldMask { paths: vec!["provider".into()] }),
        };
        let request = with_key(request, &f.server.admin_key);
        async move { resources.update_resource(request).await }
    });
    // The change reaches its check while the start holds its transaction open.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let overtook = update.is_finished();
    gate.release();
    start.await.unwrap().expect("the start commits");
    let err = update.await.unwrap().expect_err("the firewall holds a live session's rule now");
    assert!(!overtook, "the change waited for the start");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert_eq!(reason(&err), "ERROR_REASON_RESOURCE_IN_USE");
    f.server.stop().await;
}

/// Defence in depth: should a race ever leave an ended session with a rule that holds (or is
/// about to hold) an address, the reconciler and the worker take it off the firewall rather than
/// count it as wanted or open it.
#[tokio::test]
async fn rules_of_ended_sessions_are_removed_as_orphans() {
    each_backend(|first: TestDb| async move {
        // The reconciler finds an APPLIED rule of a session recorded FAILED; the worker (with the
        // reconciler off) finds one put back PENDING.
        let second = match first.is_postgres() {
            true => common::postgres_if_configured("PostgreSQL").await.unwrap(),
            false => TestDb::sqlite(),
        };
        for (db, reconcile, rule_status) in [(first, Seconds::of::<1>(), "APPLIED"), (second, Seconds::of::<0>(), "PENDING")] {
            let mut config = common::test_config();
            config.engine.reconcile_interval_secs = Some(reconcile);
            let mut f = Fixture::with_server(TestServer::start_with(&db, config).await).await;
            let resource = f.resource("db", MemoryProvider::default()).await;
            let key = f.user_key.clone();
            let session = f.start(&key, Some(IPV4), None).await.unwrap();
            f.watch_until(&key, &session.id, SessionStatus::Active).await;
            let id = &session.id;
            let slipped = [
                format!("UPDATE sessions SET status = 'FAILED' WHERE id = '{id}'"),
                format!("UPDATE resource_ips SET status = '{rule_status}', next_attempt_at = created_at WHERE session_id = '{id}'"),
            ];
            for statement in slipped {
                f.server.db.execute_unprepared(&statement).await.unwrap();
            }
            f.server.services.engine.wake();
            let what = format!("{} {rule_status}: still held", db.backend);
            common::eventually(&what, Duration::from_secs(15), async || {
                let rules = portcullis::store::queries::sessions::rules_of(&f.server.db, id).await.unwrap();
                let open = f.server.memory_rules(&resource);
                let statuses: Vec<String> = rules.iter().map(|rule| rule.status.as_str().to_owned()).collect();
                common::when(open.is_empty() && statuses.iter().all(|status| status == "REMOVED"), (open, statuses))
            })
            .await;
            f.server.stop().await;
        }
    })
    .await;
}

/// The holder of `resource_id`'s lease and when it runs out (as stored), read on `db`.
async fn lease_of(
    db: &sea_orm::DatabaseConnection,
    resource_id: &str,
) -> Option<(String, chrono::DateTime<chrono::Utc>)> {
    use portcullis::store::entity::resource_lease;
    use sea_orm::EntityTrait;
    resource_lease::Entity::find_by_id(resource_id).one(db).await.unwrap().map(|lease| (lease.holder, lease.expires_at))
}

/// Waits until `resource_id` is leased (20 s at most); answers the lease.
async fn leased(db: &sea_orm::DatabaseConnection, resource_id: &str) -> (String, chrono::DateTime<chrono::Utc>) {
    let what = format!("resource {resource_id} was never leased");
    common::eventually(&what, Duration::from_secs(20), async || lease_of(db, resource_id).await.ok_or("no lease")).await
}

/// Leases of four seconds renewed every second; a call of 1.8 s within its 2 s deadline.
fn short_leases() -> portcullis::config::Config {
    let mut config = common::test_config();
    config.engine.lease_secs = Seconds::of::<4>();
    config.engine.provider_timeout_secs = Seconds::of::<2>();
    config
}

/// PostgreSQL: while every connection of the shared pool is busy, a worker in the middle of a
/// provider call still renews its lease (renewals have connections of their own); a renewal
/// queued behind the pool would let the lease run out under a call still running.
#[tokio::test]
async fn a_lease_is_renewed_while_the_shared_pool_is_busy() {
    let Some(db) = common::postgres_if_configured("lease renewals beside a busy pool").await else { return };
    let mut f = Fixture::with_server(TestServer::start_with(&db, short_leases()).await).await;
    let resource = f.resource("db", MemoryProvider { latency_ms: 1800, ..Default::default() }).await;
    let key = f.user_key.clone();
    let observer = db.connect().await;
    let session = f.start(&key, Some(IPV4), None).await.unwrap();
    let (holder, first_end) = leased(&observer, &resource).await;
    // Every connection of the server's pool (8) is taken by someone else's long transactions.
    let mut busy = Vec::new();
    for _ in 0..8 {
        busy.push(sea_orm::TransactionTrait::begin(&f.server.db).await.unwrap());
    }
    // Past the end the lease had when the call started.
    tokio::time::sleep_until(tokio::time::Instant::now() + (first_end - portcullis::domain::now()).to_std().unwrap())
        .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let lease = lease_of(&observer, &resource).await;
    let now = portcullis::store::database_time(&observer).await.unwrap();
    drop(busy);
    let (still, until) = lease.expect("the lease is still held while its work is unfinished");
    assert_eq!(still, holder);
    assert!(until > now, "the lease ran out at {until} (now {now}) while its holder was still working");
    settled(&f.server, &session.id, SessionStatus::Active).await;
    f.server.stop().await;
}

/// PostgreSQL: a replica whose clock runs a minute ahead neither takes a lease another replica
/// holds (on its own clock that lease looks long expired) nor writes one that outlasts its
/// length: lease times are the database's.
#[tokio::test]
async fn a_replica_with_a_wrong_clock_keeps_to_the_database_clock() {
    let Some(db) = common::postgres_if_configured("leases across replicas' clocks").await else { return };
    let mut f = Fixture::with_server(TestServer::start_with(&db, short_leases()).await).await;
    let resource = f.resource("db", MemoryProvider { latency_ms: 1800, ..Default::default() }).await;
    let ahead = f.server.replica(&db, short_leases()).await;
    let clock = ahead.services.engine.clock();
    clock.skew_local_clock(chrono::TimeDelta::seconds(60));
    clock.measure(&ahead.db).await.unwrap();
    let key = f.user_key.clone();
    let observer = db.connect().await;
    // Sessions on the same firewall through both replicas: each has work there.
    f.start(&key, Some(IPV4), None).await.unwrap();
    let mut on_ahead = SessionServiceClient::new(ahead.channel().await);
    let request = StartSessionRequest { ipv6_address: Some("2001:db8::11".into()), ..Default::default() };
    on_ahead.start_session(with_key(request, &key)).await.unwrap();
    let (holder, _) = leased(&observer, &resource).await;
    // Until the holder's call (1.8 s from when it took the lease) is done, the lease is its own,
    // and it never runs further ahead than its length.
    let watched_until = tokio::time::Instant::now() + Duration::from_millis(1200);
    while tokio::time::Instant::now() < watched_until {
        let Some((now_held_by, until)) = lease_of(&observer, &resource).await else { break };
        let now = portcullis::store::database_time(&observer).await.unwrap();
        assert_eq!(now_held_by, holder, "the lease changed hands under a running call");
        assert!(until - now <= chrono::TimeDelta::milliseconds(4500), "a 4 s lease runs until {until} at {now}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ahead.stop().await;
    f.server.stop().await;
}
