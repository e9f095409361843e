//! Keys and tokens: weak secrets refused, revoked keys refused, a key never outliving the key that made it, signing keys sealed and shared by replicas.

use super::*;

/// An HS256 secret short enough to guess offline from one token is refused at start.
#[tokio::test]
async fn a_short_jwt_secret_is_refused_at_start() {
    let db = TestDb::sqlite();
    let connection = db.connect().await;
    portcullis::store::migrate(&connection).await.unwrap();
    let providers = || {
        portcullis::provider::Providers::new(
            portcullis::provider::memory::MemoryFirewall::in_process(),
            &Default::default(),
            Duration::from_secs(8),
        )
    };
    let mut config = common::test_config();
    config.auth.jwt_secret = Some(portcullis::config::Secret("password123".into()));
    let refused = portcullis::service::Services::new(connection.clone(), &config, providers()).await;
    assert!(refused.is_err(), "an 11-byte secret must be refused");
    config.auth.jwt_secret = Some(portcullis::config::Secret("0123456789abcdef0123456789abcdef".into()));
    assert!(portcullis::service::Services::new(connection, &config, providers()).await.is_ok());
}

/// A revoked operator key stops working.
#[tokio::test]
async fn a_revoked_operator_key_is_refused() {
    let db = TestDb::sqlite();
    let server = TestServer::start(&db).await;
    let (id, key) = portcullis::service::create_operator_key(&server.db, "ci").await.unwrap();
    let mut orgs = organizations(&server.channel().await);
    orgs.list_organizations(with_key(ListOrganizationsRequest::default(), &key)).await.unwrap();
    portcullis::service::revoke_operator_key(&server.db, &id).await.unwrap();
    tokio::time::sleep(common::CALLER_CACHE_TTL + Duration::from_millis(100)).await;
    let err = orgs.list_organizations(with_key(ListOrganizationsRequest::default(), &key)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let err = portcullis::service::revoke_operator_key(&server.db, &id).await.unwrap_err();
    assert!(matches!(err, portcullis::error::Error::NotFound { .. }), "{err:?}");
    server.stop().await;
}

/// A key made with a key cannot outlive it: it expires no later than its parent (inheriting the
/// parent's expiry when it names none) and stops working when the parent is revoked.
#[tokio::test]
async fn a_key_made_with_a_key_never_outlives_it() {
    use portcullis::domain::Permission;
    use portcullis::pb::v1::auth_service_client::AuthServiceClient;
    common::each_backend(|db: TestDb| async move {
        let server = TestServer::start(&db).await;
        let channel = server.channel().await;
        let mut keys = AuthServiceClient::new(channel.clone());
        let in_a_day = portcullis::domain::now() + chrono::TimeDelta::days(1);
        let parent = server.insert_api_key(&server.admin_id, Permission::ALL, Some(in_a_day)).await;
        let at = |time: chrono::DateTime<chrono::Utc>| prost_types::Timestamp { seconds: time.timestamp(), nanos: 0 };
        let create = |name: &str, expires_at: Option<chrono::DateTime<chrono::Utc>>| CreateApiKeyRequest {
            name: name.into(),
            permissions: vec!["sessions:read".into(), "sessions:write".into()],
            expires_at: expires_at.map(at),
        };

        let err = keys
            .create_api_key(with_key(create("longer", Some(in_a_day + chrono::TimeDelta::days(30))), &parent))
            .await
            .unwrap_err();
        assert_eq!(common::violated_fields(&err), ["expires_at"], "{}: {err:?}", db.backend);
        let child = keys.create_api_key(with_key(create("child", None), &parent)).await.unwrap().into_inner();
        assert_eq!(child.api_key.unwrap().expires_at.unwrap().seconds, in_a_day.timestamp(), "inherits the expiry");
        let grandchild = keys.create_api_key(with_key(create("grandchild", None), &child.secret)).await.unwrap();
        let grandchild = grandchild.into_inner().secret;

        let whoami = |key: String| {
            let channel = channel.clone();
            async move {
                UserServiceClient::new(channel).get_current_user(with_key(GetCurrentUserRequest {}, &key)).await
            }
        };
        whoami(grandchild.clone()).await.expect("works while its ancestors do");
        let listed = keys.list_api_keys(with_key(ListApiKeysRequest::default(), &server.admin_key)).await.unwrap();
        let parent_id = listed.into_inner().api_keys.into_iter().find(|key| parent.starts_with(&key.prefix)).unwrap().id;
        keys.revoke_api_key(with_key(RevokeApiKeyRequest { id: parent_id }, &server.admin_key)).await.unwrap();
        for key in [child.secret, grandchild] {
            let err = whoami(key).await.unwrap_err();
            assert_eq!(err.code(), tonic::Code::Unauthenticated, "revoked with its parent");
        }
        server.stop().await;
    })
    .await;
}

/// A copy of the database alone mints no token: with `sealing_key` set, the stored signing keys
/// are sealed, those stored in the clear before it was set are sealed at start, and tokens
/// signed before keep working (the key is the same, only kept differently).
#[tokio::test]
async fn a_database_copy_alone_mints_no_token() {
    use portcullis::service::credentials::Claims;
    let db = TestDb::sqlite();
    let mut clear = common::test_config();
    clear.auth.jwt_secret = None;
    let server = TestServer::start_with(&db, clear.clone()).await;
    let login = common::insert_login_session(&server.db, &server.admin_id).await;
    let claims = |server: &TestServer| Claims {
        sub: server.admin_id.clone(),
        org: server.organization_id.clone(),
        sid: login.clone(),
        iss: clear.auth.jwt_issuer.clone(),
        aud: clear.auth.jwt_audience.clone(),
        iat: portcullis::domain::now().timestamp(),
        nbf: portcullis::domain::now().timestamp(),
        exp: portcullis::domain::now().timestamp() + 600,
    };
    let whoami = |server: &TestServer, token: String| {
        let addr = server.addr;
        async move {
            let channel = Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
            UserServiceClient::new(channel).get_current_user(common::with_token(GetCurrentUserRequest {}, &token)).await
        }
    };
    let issued = server.services.auth.token_keys().sign(claims(&server)).unwrap();
    // Without a sealing key (the server warns about it) a copy is enough: what this test guards.
    let copied = forged(&server.db, claims(&server), &clear).await;
    assert_eq!(copied.len(), 1);
    whoami(&server, copied[0].clone()).await.expect("stored in the clear, the key signs");

    let mut sealed = clear.clone();
    sealed.sealing_key = Some(portcullis::config::Secret("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=".into()));
    let restarted = server.replica(&db, sealed.clone()).await;
    server.stop().await;
    let rows = portcullis::store::queries::signing_keys::all(&restarted.db).await.unwrap();
    assert!(rows.iter().all(|row| row.secret.starts_with("sealed:")), "every stored key sealed at start");
    for token in forged(&restarted.db, claims(&restarted), &sealed).await {
        let refused = whoami(&restarted, token).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    }
    whoami(&restarted, issued).await.expect("a token signed before sealing still verifies");
    let rotated = portcullis::service::rotate_token_key(
        &restarted.db,
        sealed.auth.jwt_algorithm,
        sealed.sealing_key().unwrap().as_deref(),
    )
    .await
    .unwrap();
    let rows = portcullis::store::queries::signing_keys::all(&restarted.db).await.unwrap();
    let new = rows.iter().find(|row| row.id == rotated).unwrap();
    assert!(new.secret.starts_with("sealed:"), "a rotated key is stored sealed");
    restarted.stop().await;
}

/// The tokens someone holding a copy of the signing_keys table could sign, one per key they
/// can read (stored in the clear, base64) among the active ones.
async fn forged(
    db: &sea_orm::DatabaseConnection,
    claims: portcullis::service::credentials::Claims,
    config: &portcullis::config::Config,
) -> Vec<String> {
    use portcullis::service::credentials::{SigningKey, TokenKeys};
    let rows = portcullis::store::queries::signing_keys::active(db).await.unwrap();
    rows.into_iter()
        .filter_map(|row| {
            let algorithm = portcullis::config::TokenAlgorithm::parse(&row.algorithm)?;
            let key = SigningKey::from_encoded(row.id, algorithm, &row.secret)?;
            let keys = TokenKeys::new(vec![key], config.auth.jwt_issuer.clone(), config.auth.jwt_audience.clone())?;
            keys.sign(claims.clone()).ok()
        })
        .collect()
}

/// Replicas starting together on an empty database end with one signing key, and follow a
/// rotation or a retirement at once: the new key's tokens work everywhere, the retired key's
/// nowhere (PostgreSQL, where replicas share a database).
#[tokio::test]
async fn replicas_share_one_signing_key_and_follow_its_changes_at_once() {
    use portcullis::service::{Authenticator, CallerCache, retire_token_key, rotate_token_key};
    let Some(db) = common::postgres_if_configured("signing keys across replicas").await else { return };
    let mut config = common::test_config();
    config.auth.jwt_secret = None;
    let connection = db.connect().await;
    portcullis::store::migrate(&connection).await.unwrap();
    let starting = || {
        Authenticator::new(connection.clone(), connection.clone(), &config.auth, CallerCache::new(Duration::ZERO), None)
    };
    let (first, second) = tokio::join!(starting(), starting());
    let (first, second) = (first.unwrap(), second.unwrap());
    let stored = portcullis::store::queries::signing_keys::active(&connection).await.unwrap();
    assert_eq!(stored.len(), 1, "one key for both");
    let claims = |login: &str, user: &str, organization: &str| portcullis::service::credentials::Claims {
        sub: user.into(),
        org: organization.into(),
        sid: login.into(),
        iss: String::new(),
        aud: String::new(),
        iat: portcullis::domain::now().timestamp(),
        nbf: portcullis::domain::now().timestamp(),
        exp: portcullis::domain::now().timestamp() + 600,
    };
    let token = first.token_keys().sign(claims("s", "u", "o")).unwrap();
    assert!(second.token_keys().verify(&token).is_ok(), "what one replica signs, the other verifies");

    let server = TestServer::start_with(&db, config.clone()).await;
    let replica = server.replica(&db, config.clone()).await;
    let login = common::insert_login_session(&server.db, &server.admin_id).await;
    let sign = |server: &TestServer| {
        server.services.auth.token_keys().sign(claims(&login, &server.admin_id, &server.organization_id)).unwrap()
    };
    let kid = |token: &str| jsonwebtoken::decode_header(token).unwrap().kid.unwrap();
    let whoami = |server: &TestServer, token: String| {
        let addr = server.addr;
        async move {
            let channel = Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
            UserServiceClient::new(channel).get_current_user(common::with_token(GetCurrentUserRequest {}, &token)).await
        }
    };
    let old = sign(&server);
    whoami(&replica, old.clone()).await.expect("the shared key verifies");

    let rotated = rotate_token_key(&server.db, config.auth.jwt_algorithm, None).await.unwrap();
    common::eventually("the server never signed with the new key", Duration::from_secs(5), async || {
        let signed_with = kid(&sign(&server));
        common::when(signed_with == rotated, signed_with)
    })
    .await;
    // The other replica hears of the rotation on its own listener: within the announcement delay.
    common::eventually("the other replica never knew the new key", Duration::from_secs(5), async || {
        whoami(&replica, sign(&server)).await
    })
    .await;
    retire_token_key(&server.db, &kid(&old)).await.unwrap();
    common::eventually("the retired key's token still works", Duration::from_secs(5), async || {
        match whoami(&replica, old.clone()).await {
            Ok(email) => Err(email),
            Err(refused) => Ok(refused),
        }
    })
    .await;
    replica.stop().await;
    server.stop().await;
}

/// Login codes that ended are forgotten (their hashes and the addresses they were mailed to):
/// the first StartLogin on a server purges those over for an hour, and hourly after that.
#[tokio::test]
async fn ended_login_codes_are_purged() {
    use portcullis::pb::v1::auth_service_client::AuthServiceClient;
    use sea_orm::EntityTrait;
    let db = TestDb::sqlite();
    let server = TestServer::start(&db).await;
    let code = |id: &str, expires_at| portcullis::store::entity::verification_code::Model {
        id: id.into(),
        user_id: None,
        email: "someone@example.com".into(),
        code_hash: "x".into(),
        failed_attempts: 0,
        client_ip: "203.0.113.9".into(),
        authenticators: "otp".into(),
        created_at: portcullis::domain::now() - chrono::TimeDelta::hours(3),
        expires_at,
        consumed_at: None,
    };
    let (old, live) = (portcullis::domain::new_id(), portcullis::domain::new_id());
    let queries = portcullis::store::queries::login_sessions::insert_code;
    queries(&server.db, code(&old, portcullis::domain::now() - chrono::TimeDelta::hours(2))).await.unwrap();
    queries(&server.db, code(&live, portcullis::domain::now() + chrono::TimeDelta::minutes(5))).await.unwrap();
    let request = StartLoginRequest { email: "nobody@example.com".into(), ..Default::default() };
    AuthServiceClient::new(server.channel().await).start_login(request).await.unwrap();
    let left: Vec<String> = portcullis::store::entity::verification_code::Entity::find()
        .all(&server.db)
        .await
        .unwrap()
        .into_iter()
        .map(|code| code.id)
        .collect();
    assert!(!left.contains(&old), "an ended code is still kept");
    assert!(left.contains(&live), "a live code was purged");
    server.stop().await;
}
