//! Notifications. Webhooks against real receivers: every event of a session's life arrives
//! signed, repeats carry the same `webhook-id`, failing receivers are retried, secrets rotate
//! without a gap, and WebhookService validates what it is given. Expiry warnings: once per end
//! of a session, by webhook and by mail (a real SMTP server). On SQLite and PostgreSQL.

use crate::common;
use portcullis::settings::{Count, Millis, Seconds};

use crate::common::receiver::{Receiver, signed_with, signed_with_parts};
use crate::common::{Fixture, TestDb, TestServer, each_backend, reason, test_config, violated_fields, with_key};
use portcullis::config::{Config, Secret};
use portcullis::pb::v1::webhook_service_client::WebhookServiceClient;
use portcullis::pb::v1::*;
use tonic::Code;
use tonic::transport::Channel;

/// A server that delivers quickly to receivers on loopback.
fn webhook_config() -> Config {
    let mut config = test_config();
    config.webhooks.secret_key = Some(Secret("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=".into()));
    config.webhooks.allowed_private_endpoints = vec!["http://127.0.0.1:*".into()];
    config.webhooks.poll_interval_ms = Millis::of::<50>();
    config.webhooks.retry_base_ms = Millis::of::<100>();
    config
}

async fn fixture(db: &TestDb) -> (Fixture, WebhookServiceClient<Channel>) {
    let f = Fixture::with_server(TestServer::start_with(db, webhook_config()).await).await;
    let client = WebhookServiceClient::new(f.server.channel().await);
    (f, client)
}

async fn create(
    client: &mut WebhookServiceClient<Channel>,
    key: &str,
    url: &str,
    types: &[&str],
) -> Result<CreateWebhookResponse, tonic::Status> {
    let request = CreateWebhookRequest {
        url: url.into(),
        event_types: types.iter().map(|t| t.to_string()).collect(),
        description: "test receiver".into(),
    };
    client.create_webhook(with_key(request, key)).await.map(|answer| answer.into_inner())
}

async fn deliveries(client: &mut WebhookServiceClient<Channel>, key: &str, webhook_id: &str) -> Vec<WebhookDelivery> {
    let request = ListWebhookDeliveriesRequest { webhook_id: webhook_id.into(), ..Default::default() };
    client.list_webhook_deliveries(with_key(request, key)).await.unwrap().into_inner().deliveries
}

/// The webhook's deliveries once there are `count` and none is PENDING: a receiver has its POST
/// a moment before the server has recorded the answer.
async fn settled_deliveries(
    client: &mut WebhookServiceClient<Channel>,
    key: &str,
    webhook_id: &str,
    count: usize,
) -> Vec<WebhookDelivery> {
    common::eventually("deliveries never settled", std::time::Duration::from_secs(10), async || {
        let listed = deliveries(client, key, webhook_id).await;
        let settled = listed.iter().all(|d| d.status() != WebhookDeliveryStatus::Pending);
        common::when(listed.len() == count && settled, listed)
    })
    .await
}

fn types_of(received: &[common::receiver::Received]) -> Vec<String> {
    received.iter().filter(|r| r.answered == 200).map(|r| r.event_type().to_owned()).collect()
}

#[tokio::test]
async fn every_event_of_a_session_arrives_signed_at_each_receiver() {
    each_backend(|db| async move {
        let (mut f, mut webhooks) = fixture(&db).await;
        let admin = f.server.admin_key.clone();
        let (everything, sessions_only) = (Receiver::start().await, Receiver::start().await);
        let all = create(&mut webhooks, &admin, &everything.url, &[]).await.unwrap();
        let some =
            create(&mut webhooks, &admin, &sessions_only.url, &["session.active", "session.ended", "rule.failed"])
                .await
                .unwrap();
        assert!(all.secret.starts_with("whsec_"), "{}", all.secret);
        f.resource("db", MemoryProvider { fail_addresses: vec!["198.51.100.99".into()], ..Default::default() }).await;
        let key = f.user_key.clone();
        let session = f.start(&key, Some("198.51.100.7"), None).await.unwrap();
        f.watch_until(&key, &session.id, SessionStatus::Active).await;
        f.stop(&key, &session.id).await;
        f.watch_until(&key, &session.id, SessionStatus::Cancelled).await;
        let failing = f.start(&key, Some("198.51.100.99"), None).await.unwrap();
        f.watch_until(&key, &failing.id, SessionStatus::Failed).await;

        let received = everything
            .wait_for("every event", |r| {
                let types = types_of(r);
                ["session.started", "session.active", "session.ended", "rule.failed", "session.failed"]
                    .iter()
                    .all(|t| types.iter().any(|got| got == t))
            })
            .await;
        // The second webhook and the resource came after the first: it heard of them too.
        let types = types_of(&received);
        for admin_event in ["webhook.created", "resource.created", "resource.assigned"] {
            assert!(types.iter().any(|t| t == admin_event), "{admin_event} missing from {types:?}");
        }
        for post in &received {
            assert!(signed_with(&all.secret, post), "bad signature on {}", post.body);
            assert!(!signed_with(&some.secret, post), "signed with another webhook's secret");
            assert_eq!(post.json["data"]["auditEvent"]["id"], post.id.as_str(), "webhook-id is the event's id");
            assert!((post.arrived_at - post.timestamp).abs() <= 5, "webhook-timestamp is the sending time");
        }
        let ended = received.iter().find(|r| r.event_type() == "session.ended").unwrap();
        assert_eq!(ended.json["data"]["session"]["id"], session.id.as_str());
        assert_eq!(ended.json["data"]["session"]["status"], "SESSION_STATUS_CANCELLED");
        assert_eq!(ended.json["data"]["session"]["endedReason"], "ENDED_REASON_MANUAL");
        let rule_failed = received.iter().find(|r| r.event_type() == "rule.failed").unwrap();
        assert_eq!(rule_failed.json["data"]["session"]["id"], failing.id.as_str());
        assert_eq!(rule_failed.json["data"]["auditEvent"]["details"]["address"], "198.51.100.99");

        let wanted = sessions_only
            .wait_for("the subscribed events", |r| {
                let types = types_of(r);
                ["session.active", "session.ended", "rule.failed"].iter().all(|t| types.iter().any(|got| got == t))
            })
            .await;
        let mut types = types_of(&wanted);
        types.sort();
        assert_eq!(types, ["rule.failed", "session.active", "session.ended"], "only what it asked for, each once");
        assert!(wanted.iter().all(|post| signed_with(&some.secret, post)));

        let listed = settled_deliveries(&mut webhooks, &admin, &some.webhook.as_ref().unwrap().id, 3).await;
        for delivery in listed {
            assert_eq!(delivery.status(), WebhookDeliveryStatus::Delivered);
            assert_eq!((delivery.attempts, delivery.last_response_code), (1, 200));
        }
        f.server.stop().await;
        db.drop_database().await;
    })
    .await;
}

#[tokio::test]
async fn a_failing_receiver_gets_the_same_event_again_until_it_accepts() {
    each_backend(|db| async move {
        let (f, mut webhooks) = fixture(&db).await;
        let admin = f.server.admin_key.clone();
        let receiver = Receiver::start().await;
        receiver.fail_next(2);
        let created = create(&mut webhooks, &admin, &receiver.url, &["resource.created"]).await.unwrap();
        let mut resources = f.resources.clone();
        let request = CreateResourceRequest {
            resource: Some(Resource {
                name: "db".into(),
                provider: Some(resource::Provider::Memory(MemoryProvider::default())),
                ..Default::default()
            }),
        };
        resources.create_resource(with_key(request, &admin)).await.unwrap();
        let posts = receiver.wait_for("the third attempt", |r| r.iter().any(|post| post.answered == 200)).await;
        assert_eq!(posts.iter().map(|p| p.answered).collect::<Vec<_>>(), [500, 500, 200]);
        assert!(posts.iter().all(|p| p.id == posts[0].id && p.body == posts[0].body), "one event, the same bytes");
        assert!(posts.iter().all(|p| signed_with(&created.secret, p)), "each attempt signed afresh");
        let listed = settled_deliveries(&mut webhooks, &admin, &created.webhook.as_ref().unwrap().id, 1).await;
        assert_eq!(listed[0].status(), WebhookDeliveryStatus::Delivered);
        assert_eq!((listed[0].attempts, listed[0].last_response_code), (3, 200));

        // Sent again on request, under the same id.
        let request = RedeliverWebhookRequest { delivery_id: listed[0].id.clone() };
        webhooks.redeliver_webhook(with_key(request, &admin)).await.unwrap();
        let posts = receiver.wait_for("the redelivery", |r| r.iter().filter(|p| p.answered == 200).count() == 2).await;
        assert_eq!(posts.last().unwrap().id, posts[0].id);
        f.server.stop().await;
        db.drop_database().await;
    })
    .await;
}

#[tokio::test]
async fn a_replayed_delivery_is_detectably_stale_and_a_rotated_secret_overlaps() {
    let db = TestDb::sqlite();
    let (f, mut webhooks) = fixture(&db).await;
    let admin = f.server.admin_key.clone();
    let receiver = Receiver::start().await;
    let created = create(&mut webhooks, &admin, &receiver.url, &[]).await.unwrap();
    let webhook_id = created.webhook.as_ref().unwrap().id.clone();
    let rotated = webhooks
        .rotate_webhook_secret(with_key(RotateWebhookSecretRequest { id: webhook_id.clone() }, &admin))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(rotated.secret, created.secret);
    assert!(rotated.webhook.unwrap().previous_secret_expires_at.is_some());
    // The rotation is an event too: it goes out signed with both secrets.
    let posts =
        receiver.wait_for("the rotation event", |r| r.iter().any(|p| p.event_type() == "webhook.secret_rotated")).await;
    let post = posts.iter().find(|p| p.event_type() == "webhook.secret_rotated").unwrap();
    assert_eq!(post.signatures.len(), 2, "{:?}", post.signatures);
    assert!(signed_with(&created.secret, post) && signed_with(&rotated.secret, post));
    // The timestamp is signed: a replay cannot pass an old delivery off as fresh.
    let fresh = post.timestamp + 600;
    assert!(!signed_with_parts(&rotated.secret, &post.id, fresh, &post.body, &post.signatures));
    assert!(chrono::Utc::now().timestamp() - post.timestamp < 300, "inside a 5-minute tolerance now");
    f.server.stop().await;
}

#[tokio::test]
async fn bad_webhooks_are_refused_with_the_field_at_fault() {
    let db = TestDb::sqlite();
    let (f, mut webhooks) = fixture(&db).await;
    let admin = f.server.admin_key.clone();
    let cases: &[(&str, &[&str], &str)] = &[
        ("http://hooks.example.com/portcullis", &[], "url"),
        ("https://169.254.169.254/latest", &[], "url"),
        ("https://10.1.2.3/hook", &[], "url"),
        ("https://user:pw@hooks.example.com/", &[], "url"),
        ("not a url", &[], "url"),
        ("https://hooks.example.com/", &["session.exploded"], "event_types"),
    ];
    for (url, types, field) in cases {
        let refused = create(&mut webhooks, &admin, url, types).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{url}: {refused:?}");
        assert_eq!(violated_fields(&refused), [*field], "{url}");
    }
    // Only admins.
    let refused = create(&mut webhooks, &f.user_key, "https://hooks.example.com/", &[]).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    // Another organization sees none of them.
    let created = create(&mut webhooks, &admin, "https://hooks.example.com/", &[]).await.unwrap();
    let (_, other_admin) = f.server.insert_organization("Other", "admin@other.example").await;
    let request = GetWebhookRequest { id: created.webhook.unwrap().id };
    let hidden = webhooks.get_webhook(with_key(request, &other_admin)).await.unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound);
    f.server.stop().await;

    // Without a key to keep secrets under, the server says what is missing.
    let db = TestDb::sqlite();
    let server = TestServer::start_with(&db, test_config()).await;
    let mut webhooks = WebhookServiceClient::new(server.channel().await);
    let refused = create(&mut webhooks, &server.admin_key, "https://hooks.example.com/", &[]).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(reason(&refused), "ERROR_REASON_NOT_CONFIGURED");
    server.stop().await;
}

/// A webhook whose name resolves to a private address is never posted to, and its deliveries
/// say only that the destination was not allowed or reachable (the detail is in the log).
#[tokio::test]
async fn a_name_that_resolves_to_a_private_address_is_never_posted_to() {
    let db = TestDb::sqlite();
    let mut config = webhook_config();
    config.webhooks.allowed_private_endpoints.clear();
    let server = TestServer::start_with(&db, config).await;
    let mut webhooks = WebhookServiceClient::new(server.channel().await);
    let created = create(&mut webhooks, &server.admin_key, "https://localhost:9/hook", &[]).await.unwrap();
    let id = created.webhook.unwrap().id;
    // Its own creation is the first event; the attempt is refused before connecting.
    let delivery = common::eventually("no attempt was made", std::time::Duration::from_secs(20), async || {
        let listed = deliveries(&mut webhooks, &server.admin_key, &id).await;
        listed.iter().find(|d| d.attempts > 0).cloned().ok_or(listed)
    })
    .await;
    // The owner learns that it was not posted, not how this server resolves names.
    assert_eq!(delivery.last_error, "destination not allowed or not reachable");
    assert_eq!(delivery.last_response_code, 0);
    server.stop().await;
}

/// A webhook sends only what its owner (who last set its URL or events) may read, checked at
/// each delivery: a key holding only `webhooks:write` cannot subscribe to session events, nor
/// receive them by asking for every type; an owner whose key is revoked stops its webhook's
/// events; and ListWebhookDeliveries shows a payload only to a caller who may read its event.
#[tokio::test]
async fn a_webhook_sends_only_what_its_owner_may_read() {
    use portcullis::pb::v1::auth_service_client::AuthServiceClient;
    let db = TestDb::sqlite();
    let (mut f, mut webhooks) = fixture(&db).await;
    let mut auth = AuthServiceClient::new(f.server.channel().await);
    let mint = |permissions: &[&str]| CreateApiKeyRequest {
        name: "hooks".into(),
        permissions: permissions.iter().map(|p| p.to_string()).collect(),
        expires_at: None,
    };
    let hooks_only =
        auth.create_api_key(with_key(mint(&["webhooks:write"]), &f.server.admin_key)).await.unwrap().into_inner();
    let refused =
        create(&mut webhooks, &hooks_only.secret, "http://127.0.0.1:9/hook", &["session.active"]).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&refused), ["event_types"]);

    let (narrow, full, revoked) = (Receiver::start().await, Receiver::start().await, Receiver::start().await);
    create(&mut webhooks, &hooks_only.secret, &narrow.url, &[]).await.unwrap();
    let everything = create(&mut webhooks, &f.server.admin_key, &full.url, &[]).await.unwrap();
    let admin_key = auth
        .create_api_key(with_key(mint(&["users:read", "webhooks:write"]), &f.server.admin_key))
        .await
        .unwrap()
        .into_inner();
    create(&mut webhooks, &admin_key.secret, &revoked.url, &["session.active", "session.ended"]).await.unwrap();
    let revoke = RevokeApiKeyRequest { id: admin_key.api_key.unwrap().id };
    auth.revoke_api_key(with_key(revoke, &f.server.admin_key)).await.unwrap();

    f.resource("db", MemoryProvider::default()).await;
    let key = f.user_key.clone();
    let session = f.start(&key, Some("198.51.100.40"), None).await.unwrap();
    f.watch_until(&key, &session.id, SessionStatus::Active).await;
    full.wait_for("the session", |r| types_of(r).iter().any(|t| t == "session.active")).await;
    // The admin's receiver heard it all: the others had their chance.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let heard = types_of(&narrow.received());
    assert!(heard.iter().all(|t| t.starts_with("webhook.")), "a webhooks:write key's webhook heard {heard:?}");
    assert!(heard.iter().any(|t| t == "webhook.created"), "it hears what its owner may read: {heard:?}");
    assert!(revoked.received().is_empty(), "a revoked owner's webhook still posted {:?}", revoked.received());

    let listed = |key: String| {
        let mut webhooks = webhooks.clone();
        let id = everything.webhook.clone().unwrap().id;
        async move { deliveries(&mut webhooks, &key, &id).await }
    };
    let seen_by_admin = listed(f.server.admin_key.clone()).await;
    let active = seen_by_admin.iter().find(|d| d.event_type == "session.active").expect("a session.active delivery");
    assert!(active.payload.contains(&session.id), "{}", active.payload);
    let seen_by_key = listed(hooks_only.secret.clone()).await;
    for delivery in &seen_by_key {
        let readable = delivery.event_type.starts_with("webhook.");
        assert_eq!(!delivery.payload.is_empty(), readable, "{} shown: {}", delivery.event_type, delivery.payload);
    }
    f.server.stop().await;
}

/// One organization whose receivers never answer holds at most its share of the delivery slots
/// (`webhooks.max_in_flight_per_organization`): another organization's event is delivered at
/// once, not after the slow one's backlog.
#[tokio::test]
async fn a_slow_organization_holds_only_its_share_of_delivery_slots() {
    use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
    let db = TestDb::sqlite();
    let mut config = webhook_config();
    config.webhooks.concurrency = Count::of::<8>();
    config.webhooks.max_in_flight_per_organization = Count::of::<3>();
    config.webhooks.timeout_secs = Seconds::of::<5>();
    let mut f = Fixture::with_server(TestServer::start_with(&db, config).await).await;
    let mut webhooks = WebhookServiceClient::new(f.server.channel().await);
    // A tarpit: connections are accepted and never answered.
    let tarpit = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tarpit_url = format!("http://{}/hook", tarpit.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((connection, _)) = tarpit.accept().await {
            held.push(connection);
        }
    });
    let (slow_org, slow_admin) = f.server.insert_organization("Slow", "admin@slow.example").await;
    for _ in 0..12 {
        create(&mut webhooks, &slow_admin, &tarpit_url, &[]).await.unwrap();
    }
    // Each webhook hears of the ones made after it: a backlog of 78 deliveries that never end.
    let deliveries = portcullis::store::entity::webhook_delivery::Entity::find;
    let column = portcullis::store::entity::webhook_delivery::Column::OrganizationId;
    let what = "the slow organization's backlog was never enqueued";
    common::eventually(what, std::time::Duration::from_secs(10), async || {
        let enqueued = deliveries().filter(column.eq(slow_org.as_str())).count(&f.server.db).await.unwrap();
        common::when(enqueued >= 78, enqueued)
    })
    .await;

    let receiver = common::receiver::Receiver::start().await;
    create(&mut webhooks, &f.server.admin_key, &receiver.url, &["resource.created"]).await.unwrap();
    let began = std::time::Instant::now();
    f.resource("db", MemoryProvider::default()).await;
    receiver.wait_for("resource.created", |r| types_of(r).iter().any(|t| t == "resource.created")).await;
    let waited = began.elapsed();
    let held = deliveries()
        .filter(column.eq(slow_org.as_str()))
        .filter(portcullis::store::entity::webhook_delivery::Column::LeaseExpiresAt.gt(portcullis::domain::now()))
        .count(&f.server.db)
        .await
        .unwrap();
    assert!(held <= 3, "the slow organization holds {held} slots");
    assert!(waited < std::time::Duration::from_secs(4), "the other organization's event waited {waited:?}");
    f.server.stop().await;
}

/// Every replica runs a dispatcher; between them each event is enqueued and posted once.
#[tokio::test]
async fn two_replicas_deliver_each_event_once() {
    let Some(db) = common::postgres_if_configured("webhooks across replicas").await else { return };
    let (mut f, mut webhooks) = fixture(&db).await;
    let replica = f.server.replica(&db, webhook_config()).await;
    let admin = f.server.admin_key.clone();
    let receiver = Receiver::start().await;
    let created = create(&mut webhooks, &admin, &receiver.url, &["session.started", "session.active"]).await.unwrap();
    f.resource("db", MemoryProvider::default()).await;
    let key = f.user_key.clone();
    let addresses: Vec<String> = (1..=20).map(|i| format!("198.51.100.{i}")).collect();
    let ids = f.start_one_by_one(&key, addresses).await;
    let received = receiver.wait_for("40 events", |r| r.len() >= 40).await;
    // Both dispatchers had their chance before counting.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let received = if receiver.received().len() > received.len() { receiver.received() } else { received };
    assert_eq!(received.len(), 40, "{} posts for 40 events", received.len());
    let mut events: Vec<&str> = received.iter().map(|post| post.id.as_str()).collect();
    events.sort_unstable();
    events.dedup();
    assert_eq!(events.len(), 40, "each event posted once");
    for id in &ids {
        let of_session: Vec<&str> = received
            .iter()
            .filter(|post| post.json["data"]["session"]["id"] == id.as_str())
            .map(|post| post.event_type())
            .collect();
        assert_eq!(of_session.len(), 2, "{id}: {of_session:?}");
    }
    assert!(received.iter().all(|post| signed_with(&created.secret, post)));
    replica.stop().await;
    f.server.stop().await;
    db.drop_database().await;
}

/// Moves a session's start and end by `minutes` behind the server's back, as time passing would.
async fn shift(server: &TestServer, id: &str, minutes: i64) {
    use portcullis::store::entity::session;
    use sea_orm::sea_query::Expr;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let current = session::Entity::find_by_id(id).one(&server.db).await.unwrap().unwrap();
    let by = chrono::TimeDelta::minutes(minutes);
    session::Entity::update_many()
        .col_expr(session::Column::StartedAt, Expr::value(current.started_at + by))
        .col_expr(session::Column::ExpiresAt, Expr::value(current.expires_at + by))
        .filter(session::Column::Id.eq(id))
        .exec(&server.db)
        .await
        .unwrap();
}

async fn extend(f: &mut Fixture, key: &str, id: &str, minutes: u32) {
    let request = ExtendSessionRequest { id: id.into(), additional_minutes: minutes, ..Default::default() };
    f.sessions.extend_session(with_key(request, key)).await.unwrap();
}

fn warnings(receiver: &Receiver) -> Vec<common::receiver::Received> {
    receiver.accepted().into_iter().filter(|post| post.event_type() == "session.expiring_soon").collect()
}

#[tokio::test]
async fn a_session_is_warned_of_its_end_once_per_end_by_webhook_and_mail() {
    let mail = common::smtp::MailServer::start().await;
    each_backend(|db| {
        let mail = mail.as_ref();
        async move {
            let mut config = webhook_config();
            config.notifications.poll_interval_ms = Millis::of::<50>();
            if let Some(mail) = mail {
                config.mail.transport = portcullis::config::MailTransport::Smtp;
                config.mail.smtp_host = "127.0.0.1".into();
                config.mail.smtp_port = mail.port;
                config.mail.smtp_security = portcullis::config::SmtpSecurity::None;
            }
            let mut f = Fixture::with_server(TestServer::start_with(&db, config).await).await;
            let mut webhooks = WebhookServiceClient::new(f.server.channel().await);
            let receiver = Receiver::start().await;
            create(&mut webhooks, &f.server.admin_key.clone(), &receiver.url, &["session.expiring_soon"])
                .await
                .unwrap();
            f.resource("staging-db", MemoryProvider::default()).await;
            let key = f.user_key.clone();
            let start = |minutes: u32, ip: &'static str| StartSessionRequest {
                ipv4_address: Some(ip.into()),
                duration_minutes: Some(minutes),
                ..Default::default()
            };
            let long = f.sessions.start_session(with_key(start(60, "198.51.100.20"), &key)).await.unwrap();
            let long = long.into_inner().session.unwrap().id;
            // Twenty minutes is not more than twice the ten-minute window: never warned.
            let short = f.sessions.start_session(with_key(start(20, "198.51.100.21"), &key)).await.unwrap();
            let short = short.into_inner().session.unwrap().id;
            f.watch_until(&key, &long, SessionStatus::Active).await;
            let mails_for = |id: &str| mail.map(|mail| mail.messages().iter().filter(|m| m.contains(id)).count());

            // Fifty-five minutes on, five are left: the warning goes out, once.
            shift(&f.server, &long, -55).await;
            shift(&f.server, &short, -15).await;
            receiver.wait_for("the warning", |_| warnings(&receiver).len() == 1).await;
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            let sent = warnings(&receiver);
            assert_eq!(sent.len(), 1, "once per end");
            assert_eq!(sent[0].json["data"]["session"]["id"], long.as_str());
            let left = sent[0].json["data"]["auditEvent"]["details"]["minutes_left"].as_str().unwrap().to_owned();
            assert!(["5", "6"].contains(&left.as_str()), "{left}");
            if let Some(mail) = mail {
                common::eventually("no warning mail", std::time::Duration::from_secs(10), async || {
                    let mails = mails_for(&long);
                    common::when(mails == Some(1), mails)
                })
                .await;
                let messages = mail.messages();
                let message = messages.iter().find(|m| m.contains(&long)).expect("a warning mail");
                assert!(message.contains("To: user@example.com"), "{message}");
                assert!(message.contains("staging-db") && message.contains("pcl session extend"), "{message}");
            }

            // An extension arms the next warning (for the new end: eight minutes left).
            extend(&mut f, &key, &long, 30).await;
            shift(&f.server, &long, -27).await;
            receiver.wait_for("the second warning", |_| warnings(&receiver).len() == 2).await;

            // Mail off: the next warning is a webhook event only.
            let off = UpdateCurrentUserRequest { expiry_emails: Some(false) };
            let user = portcullis::pb::v1::user_service_client::UserServiceClient::new(f.server.channel().await)
                .update_current_user(with_key(off, &key))
                .await
                .unwrap()
                .into_inner()
                .user
                .unwrap();
            assert!(!user.expiry_emails);
            extend(&mut f, &key, &long, 20).await;
            shift(&f.server, &long, -22).await;
            receiver.wait_for("the third warning", |_| warnings(&receiver).len() == 3).await;
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            assert_eq!(mails_for(&long).unwrap_or(2), 2, "no mail once turned off");
            assert!(warnings(&receiver).iter().all(|post| post.json["data"]["session"]["id"] == long.as_str()));
            assert!(mails_for(&short).unwrap_or(0) == 0);
            f.server.stop().await;
            db.drop_database().await;
        }
    })
    .await;
}

/// A resource's last periodic check, as an admin reads it.
async fn last_check(f: &mut Fixture, id: &str) -> Option<ResourceCheck> {
    let request = GetResourceRequest { id: id.into() };
    let key = f.server.admin_key.clone();
    f.resources.get_resource(with_key(request, &key)).await.unwrap().into_inner().resource.unwrap().last_check
}

/// Polls the resource until its last check satisfies `done`.
async fn wait_for_check(f: &mut Fixture, id: &str, what: &str, done: impl Fn(&ResourceCheck) -> bool) -> ResourceCheck {
    common::eventually(
        &format!("the resource's check never showed {what}"),
        std::time::Duration::from_secs(10),
        async || {
            let check = last_check(f, id).await;
            match check {
                Some(check) if done(&check) => Ok(check),
                other => Err(other),
            }
        },
    )
    .await
}

fn checked_at(check: &ResourceCheck) -> i64 {
    check.checked_at.as_ref().map_or(0, |at| at.seconds * 1_000_000_000 + i64::from(at.nanos))
}

#[tokio::test]
async fn a_resource_whose_checks_start_failing_is_reported_once_and_again_when_it_recovers() {
    each_backend(|db| async move {
        let mut config = webhook_config();
        config.engine.check_interval_secs = Seconds::of::<1>();
        let mut f = Fixture::with_server(TestServer::start_with(&db, config).await).await;
        let mut webhooks = WebhookServiceClient::new(f.server.channel().await);
        let receiver = Receiver::start().await;
        let admin = f.server.admin_key.clone();
        let types = ["resource.check_failed", "resource.check_recovered"];
        create(&mut webhooks, &admin, &receiver.url, &types).await.unwrap();
        let id = f.resource("db", MemoryProvider::default()).await;
        // A new resource is checked at once.
        let passed = wait_for_check(&mut f, &id, "a pass", |c| c.status() == CheckStatus::Ok).await;

        let memory = f.server.services.engine.providers().memory().clone();
        memory.refuse_checks(&id, Some("the role's trust policy no longer names this server")).unwrap();
        let failed = receiver.wait_for("check_failed", |r| !types_of(r).is_empty()).await;
        let event = &failed[0].json["data"]["auditEvent"];
        assert_eq!(failed[0].event_type(), "resource.check_failed");
        assert_eq!(event["targetId"], id.as_str());
        assert_eq!(event["details"]["status"], "ACCESS_DENIED");
        assert_eq!(event["details"]["message"], "the role's trust policy no longer names this server");
        let shown = wait_for_check(&mut f, &id, "the failure", |c| c.status() == CheckStatus::AccessDenied).await;
        assert_eq!(shown.message, "the role's trust policy no longer names this server");
        assert!(checked_at(&shown) > checked_at(&passed));

        // Two more failing checks, and no second report of the same failure.
        let since = checked_at(&shown);
        wait_for_check(&mut f, &id, "two more checks", |c| checked_at(c) > since + 1_500_000_000).await;
        assert_eq!(types_of(&receiver.received()), ["resource.check_failed"]);

        memory.refuse_checks(&id, None).unwrap();
        let both = receiver.wait_for("check_recovered", |r| types_of(r).len() == 2).await;
        assert_eq!(types_of(&both), types);
        assert_eq!(both[1].json["data"]["auditEvent"]["details"]["status"], "OK");
        wait_for_check(&mut f, &id, "a pass again", |c| c.status() == CheckStatus::Ok).await;
        f.server.stop().await;
        db.drop_database().await;
    })
    .await;
}

async fn get_webhook(client: &mut WebhookServiceClient<Channel>, key: &str, id: &str) -> Webhook {
    let request = GetWebhookRequest { id: id.into() };
    client.get_webhook(with_key(request, key)).await.unwrap().into_inner().webhook.unwrap()
}

#[tokio::test]
async fn a_receiver_failing_for_days_is_disabled_with_an_audit_event_and_can_be_turned_back_on() {
    use portcullis::store::entity::webhook;
    use sea_orm::sea_query::Expr;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    each_backend(|db| async move {
        let (mut f, mut webhooks) = fixture(&db).await;
        let admin = f.server.admin_key.clone();
        let (failing, watcher) = (Receiver::start().await, Receiver::start().await);
        failing.fail_next(usize::MAX);
        let hook = create(&mut webhooks, &admin, &failing.url, &["session.started"]).await.unwrap().webhook.unwrap();
        create(&mut webhooks, &admin, &watcher.url, &["webhook.disabled"]).await.unwrap();
        f.resource("db", MemoryProvider::default()).await;
        let key = f.user_key.clone();
        let first = f.start(&key, Some("198.51.100.7"), None).await.unwrap();
        failing.wait_for("a failed attempt", |r| !r.is_empty()).await;
        // The receiver has answered 500; the server records that once the answer reaches it.
        common::eventually("the failed attempt was never recorded", std::time::Duration::from_secs(10), async || {
            let hook = get_webhook(&mut webhooks, &admin, &hook.id).await;
            common::when(hook.failing_since.is_some(), hook)
        })
        .await;

        // Five days and a minute of failures, as time passing would make them.
        let since = chrono::Utc::now() - chrono::TimeDelta::days(5) - chrono::TimeDelta::minutes(1);
        webhook::Entity::update_many()
            .col_expr(webhook::Column::FailingSince, Expr::value(since))
            .filter(webhook::Column::Id.eq(hook.id.as_str()))
            .exec(&f.server.db)
            .await
            .unwrap();
        let told = watcher.wait_for("webhook.disabled", |r| !types_of(r).is_empty()).await;
        assert_eq!(told[0].json["data"]["auditEvent"]["targetId"], hook.id.as_str());
        let shown = get_webhook(&mut webhooks, &admin, &hook.id).await;
        assert!(shown.disabled, "{shown:?}");
        assert!(shown.disabled_reason.starts_with("every delivery since"), "{}", shown.disabled_reason);
        let listed = deliveries(&mut webhooks, &admin, &hook.id).await;
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].status(), WebhookDeliveryStatus::Failed, "{:?}", listed[0]);
        assert_eq!(listed[0].last_error, "the webhook was disabled");

        // Fixed and turned back on by an admin, it gets what happens next.
        failing.fail_next(0);
        let request = UpdateWebhookRequest {
            webhook: Some(Webhook { id: hook.id.clone(), disabled: false, ..Default::default() }),
            update_mask: Some(prost_types::FieldMask { paths: vec!["disabled".into()] }),
        };
        let enabled = webhooks.update_webhook(with_key(request, &admin)).await.unwrap().into_inner().webhook.unwrap();
        assert!(!enabled.disabled && enabled.failing_since.is_none(), "{enabled:?}");
        f.stop(&key, &first.id).await;
        let next = f.start(&key, Some("198.51.100.8"), None).await.unwrap();
        let accepted = failing.wait_for("the next event", |_| !failing.accepted().is_empty()).await;
        let delivered: Vec<_> = accepted.iter().filter(|post| post.answered == 200).collect();
        assert_eq!(delivered.len(), 1);
        assert_eq!(delivered[0].json["data"]["session"]["id"], next.id.as_str());
        f.server.stop().await;
        db.drop_database().await;
    })
    .await;
}

#[tokio::test]
async fn a_new_resource_is_checked_at_once_and_again_when_its_firewall_changes() {
    each_backend(|db| async move {
        // The default half-hour interval: only the creation and the change bring a check sooner.
        let mut f = Fixture::with_server(TestServer::start_with(&db, webhook_config()).await).await;
        let id = f.resource("db", MemoryProvider::default()).await;
        wait_for_check(&mut f, &id, "a first check", |c| c.status() == CheckStatus::Ok).await;

        f.server.services.engine.providers().memory().refuse_checks(&id, Some("no longer readable")).unwrap();
        let request = UpdateResourceRequest {
            resource: Some(Resource {
                id: id.clone(),
                provider: Some(resource::Provider::Memory(MemoryProvider { latency_ms: 5, ..Default::default() })),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask { paths: vec!["provider".into()] }),
        };
        let admin = f.server.admin_key.clone();
        f.resources.update_resource(with_key(request, &admin)).await.unwrap();
        let check = wait_for_check(&mut f, &id, "the new firewall's check", |c| c.status() != CheckStatus::Ok).await;
        assert_eq!((check.status(), check.message.as_str()), (CheckStatus::AccessDenied, "no longer readable"));
        f.server.stop().await;
        db.drop_database().await;
    })
    .await;
}
