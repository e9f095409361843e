//! Shared test harness: a fresh database per test on every configured backend, and a real
//! server on 127.0.0.1:0.

#[cfg(feature = "azure")]
pub mod arm_fake;
pub mod certs;
pub mod dex;
#[cfg(feature = "gcp")]
pub mod gcp_fake;
#[cfg(feature = "aws")]
pub mod moto;
pub mod raw_grpc;
pub mod receiver;
pub mod smtp;
#[cfg(feature = "azure")]
pub mod tls_listener;

use portcullis::config::Config;
use portcullis::domain::{CloudScopes, Permission, new_id, now};
use portcullis::pb::v1::resource_service_client::ResourceServiceClient;
use portcullis::pb::v1::session_service_client::SessionServiceClient;
use portcullis::pb::v1::*;
use portcullis::provider::Providers;
use portcullis::provider::memory::MemoryFirewall;
use portcullis::server::ServeOptions;
use portcullis::service::credentials::{KeyKind, generate_api_key};
use portcullis::service::{Services, create_operator_key, initialize};
use portcullis::settings::Seconds;
use portcullis::store::entity::{api_key, organization, user};
use portcullis::store::{self, queries};
use sea_orm::{ConnectionTrait, DatabaseConnection};
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tonic::transport::Channel;

/// A fresh, empty database on one backend.
pub struct TestDb {
    pub backend: &'static str,
    pub url: String,
    /// PostgreSQL: the server-level URL and the database name, to drop it afterwards.
    postgres: Option<(String, String)>,
    _dir: Option<TempDir>,
}

/// Runs `test` once per backend: SQLite always, PostgreSQL when `PORTCULLIS_TEST_DATABASE_URL` is set.
pub async fn each_backend<F, Fut>(test: F)
where
    F: Fn(TestDb) -> Fut,
    Fut: Future<Output = ()>,
{
    test(TestDb::sqlite()).await;
    if let Some(db) = postgres_if_configured("PostgreSQL").await {
        test(db).await;
    }
}

/// Asks `probe` until it answers `Ok` (every 50 ms, for at most `within`) and returns that;
/// otherwise fails the test saying what never happened and what `probe` last saw. The one way
/// a test waits for something the server does on its own.
pub async fn eventually<T, E: std::fmt::Debug>(
    what: &str,
    within: Duration,
    mut probe: impl AsyncFnMut() -> Result<T, E>,
) -> T {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match probe().await {
            Ok(found) => return found,
            Err(seen) => {
                assert!(tokio::time::Instant::now() < deadline, "{what} (within {within:?}); last seen: {seen:?}")
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `Ok` when `done`, else `Err` of what was seen: a probe's answer for [`eventually`].
pub fn when<T>(done: bool, seen: T) -> Result<T, T> {
    if done { Ok(seen) } else { Err(seen) }
}

/// A fresh PostgreSQL database when `PORTCULLIS_TEST_DATABASE_URL` is set; otherwise says that
/// `what` is not tested. Replicas share a database only on PostgreSQL, so their tests need one.
pub async fn postgres_if_configured(what: &str) -> Option<TestDb> {
    match std::env::var("PORTCULLIS_TEST_DATABASE_URL") {
        Ok(url) => Some(TestDb::postgres(&url).await),
        Err(_) => {
            eprintln!("PORTCULLIS_TEST_DATABASE_URL is not set: {what} not tested");
            None
        }
    }
}

impl TestDb {
    pub fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("portcullis.db").display());
        TestDb { backend: "sqlite", url, postgres: None, _dir: Some(dir) }
    }

    /// Creates a database of its own on the server at `server_url`, so tests never share state.
    pub async fn postgres(server_url: &str) -> TestDb {
        let name = format!("portcullis_test_{}", new_id().replace('-', ""));
        let admin = store::connect(server_url, 1).await.expect("connect to PORTCULLIS_TEST_DATABASE_URL");
        admin.execute_unprepared(&format!("CREATE DATABASE \"{name}\"")).await.expect("create test database");
        TestDb {
            backend: "postgres",
            url: with_database(server_url, &name),
            postgres: Some((server_url.to_owned(), name)),
            _dir: None,
        }
    }

    pub async fn connect(&self) -> DatabaseConnection {
        store::connect(&self.url, 8).await.expect("connect to test database")
    }

    /// Drops the database (PostgreSQL only), terminating its connections: the database "goes away".
    pub async fn drop_database(&self) {
        if let Some((server, name)) = &self.postgres {
            let admin = store::connect(server, 1).await.expect("connect");
            admin.execute_unprepared(&format!("DROP DATABASE \"{name}\" WITH (FORCE)")).await.expect("drop");
        }
    }

    /// Creates the database again after [`TestDb::drop_database`].
    pub async fn recreate_database(&self) {
        if let Some((server, name)) = &self.postgres {
            let admin = store::connect(server, 1).await.expect("connect");
            admin.execute_unprepared(&format!("CREATE DATABASE \"{name}\"")).await.expect("create");
        }
    }

    pub fn is_postgres(&self) -> bool {
        self.postgres.is_some()
    }
}

/// `postgres://host/olddb?opts` → `postgres://host/NAME?opts`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_part = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{host_part}/{name}?{q}"),
        None => format!("{host_part}/{name}"),
    }
}

/// A running server with an initialized organization.
pub struct TestServer {
    pub addr: SocketAddr,
    pub db: DatabaseConnection,
    pub admin_key: String,
    /// A platform operator key (ROLE_OPERATOR).
    pub operator_key: String,
    pub admin_id: String,
    pub organization_id: String,
    pub services: Services,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// What `portcullis init` created, which every replica of a server shares.
struct Identity {
    admin_key: String,
    operator_key: String,
    admin_id: String,
    organization_id: String,
}

/// Short, so a test can outwait a change made behind the server's back.
pub const CALLER_CACHE_TTL: Duration = Duration::from_secs(1);

pub fn test_config() -> Config {
    let mut config = Config::default();
    config.auth.caller_cache_secs = Seconds::try_from(CALLER_CACHE_TTL.as_secs()).unwrap();
    // The GCP and server-level Azure tests talk to fakes that take no credentials.
    #[cfg(feature = "gcp")]
    {
        config.providers.gcp_anonymous = true;
    }
    #[cfg(feature = "azure")]
    {
        config.providers.azure_anonymous = true;
    }
    // moto, the Compute fake and the test proxies listen on loopback.
    config.providers.allowed_endpoints = vec!["http://127.0.0.1:*".into()];
    config.auth.jwt_secret = Some(portcullis::config::Secret("test-secret-with-enough-entropy-0123456789".into()));
    config
}

impl TestServer {
    pub async fn start(db: &TestDb) -> TestServer {
        TestServer::start_with(db, test_config()).await
    }

    pub async fn start_with(db: &TestDb, config: Config) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        TestServer::start_on(db, config, listener).await
    }

    /// Starts on `listener`, bound beforehand (so the config can name its address, as
    /// `server.public_url` does).
    pub async fn start_on(db: &TestDb, config: Config, listener: tokio::net::TcpListener) -> TestServer {
        // Server logs show up with a failing test's output.
        portcullis::telemetry::init(portcullis::config::LogFormat::Text);
        let connection = db.connect().await;
        store::migrate(&connection).await.expect("migrate");
        let created = initialize(&connection, "admin@example.com", "Acme").await.expect("init");
        let (_, operator_key) = create_operator_key(&connection, "test operator").await.expect("operator key");
        let identity = Identity {
            admin_key: created.api_key,
            operator_key,
            admin_id: created.admin.id,
            organization_id: created.organization.id,
        };
        TestServer::serve(db, connection, config, identity, listener).await
    }

    /// Another server on the same database, as a second replica behind a load balancer is.
    pub async fn replica(&self, db: &TestDb, config: Config) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        TestServer::serve(db, db.connect().await, config, self.identity(), listener).await
    }

    /// Stops this server and starts it again on the same address and database.
    pub async fn restart(mut self, db: &TestDb, config: Config) -> TestServer {
        let (identity, addr) = (self.identity(), self.addr);
        self.halt().await;
        let listener = tokio::net::TcpListener::bind(addr).await.expect("the old address is free again");
        TestServer::serve(db, db.connect().await, config, identity, listener).await
    }

    fn identity(&self) -> Identity {
        Identity {
            admin_key: self.admin_key.clone(),
            operator_key: self.operator_key.clone(),
            admin_id: self.admin_id.clone(),
            organization_id: self.organization_id.clone(),
        }
    }

    async fn serve(
        db: &TestDb,
        connection: DatabaseConnection,
        config: Config,
        identity: Identity,
        listener: tokio::net::TcpListener,
    ) -> TestServer {
        let providers =
            Providers::new(MemoryFirewall::in_process(), &config.providers, config.engine.provider_timeout());
        let reader = store::connect_reader(&db.url, &connection).await.expect("reader");
        let services = Services::with_reader(connection.clone(), reader, &config, providers).await.expect("services");
        let options =
            ServeOptions { health_check_interval: Duration::from_millis(200), ..ServeOptions::from_config(&config) };
        let addr = listener.local_addr().expect("addr");
        let (shutdown, stopped) = oneshot::channel::<()>();
        let served = services.clone();
        let task = tokio::spawn(async move {
            portcullis::server::serve(listener, served, options, async {
                let _ = stopped.await;
            })
            .await
            .expect("serve");
        });
        TestServer {
            addr,
            db: connection,
            admin_key: identity.admin_key,
            operator_key: identity.operator_key,
            admin_id: identity.admin_id,
            organization_id: identity.organization_id,
            services,
            shutdown: Some(shutdown),
            task: Some(task),
        }
    }

    /// The rules the memory provider holds on a resource.
    pub fn memory_rules(&self, resource_id: &str) -> Vec<std::net::IpAddr> {
        self.services.engine.providers().memory().rules(resource_id).into_keys().collect()
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr)).expect("uri").connect().await.expect("connect")
    }

    pub async fn stop(mut self) {
        self.halt().await;
    }

    async fn halt(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// The operator sets the organization's tier.
    pub async fn set_tier(&self, tier: Tier) {
        let organization = Organization { id: self.organization_id.clone(), tier: tier.into(), ..Default::default() };
        let request = UpdateOrganizationRequest {
            organization: Some(organization),
            update_mask: Some(prost_types::FieldMask { paths: vec!["tier".into()] }),
        };
        self.organizations().await.update_organization(with_key(request, &self.operator_key)).await.expect("set tier");
    }

    /// The operator suspends the organization, or lifts its suspension.
    pub async fn set_suspended(&self, suspended: bool) {
        let mut organizations = self.organizations().await;
        let organization_id = self.organization_id.clone();
        if suspended {
            let request = SuspendOrganizationRequest { organization_id, reason: "test".into() };
            organizations.suspend_organization(with_key(request, &self.operator_key)).await.expect("suspend");
        } else {
            let request = ResumeOrganizationRequest { organization_id };
            organizations.resume_organization(with_key(request, &self.operator_key)).await.expect("resume");
        }
    }

    async fn organizations(&self) -> organization_service_client::OrganizationServiceClient<Channel> {
        organization_service_client::OrganizationServiceClient::new(self.channel().await)
    }

    /// Inserts a user straight into the store (no audit event), returning its id.
    pub async fn insert_user(&self, organization_id: &str, email: &str, role: &str) -> String {
        let at = now();
        queries::users::insert(
            &self.db,
            user::Model::new_member(
                organization_id,
                email.to_owned(),
                String::new(),
                role.parse().expect("a role's name"),
                at,
            ),
        )
        .await
        .expect("insert user")
        .id
    }

    /// Inserts a second organization with an admin; returns (organization id, admin key).
    pub async fn insert_organization(&self, name: &str, admin_email: &str) -> (String, String) {
        let at = now();
        let org = queries::organizations::insert(
            &self.db,
            organization::Model {
                id: new_id(),
                name: name.to_owned(),
                tier: portcullis::domain::Tier::Free,
                suspended: false,
                allow_private_addresses: false,
                created_at: at,
                updated_at: at,
                cloud_scopes: queries::organizations::encode_cloud_scopes(&CloudScopes::unrestricted()),
            },
        )
        .await
        .expect("insert organization");
        let admin = self.insert_user(&org.id, admin_email, "ADMIN").await;
        let key = self.insert_api_key(&admin, Permission::ALL, None).await;
        (org.id, key)
    }

    /// Inserts an API key for `user_id`; returns the secret.
    pub async fn insert_api_key(
        &self,
        user_id: &str,
        permissions: &[Permission],
        expires_at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> String {
        insert_api_key(&self.db, user_id, permissions, expires_at).await
    }
}

/// Inserts an API key for `user_id` straight into the store; returns the secret.
pub async fn insert_api_key(
    db: &DatabaseConnection,
    user_id: &str,
    permissions: &[Permission],
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
) -> String {
    let user = queries::users::get_any(db, user_id).await.expect("user");
    let key = generate_api_key(KeyKind::Member);
    queries::api_keys::insert(
        db,
        api_key::Model {
            id: new_id(),
            organization_id: user.organization_id,
            user_id: user_id.to_owned(),
            name: "test".into(),
            prefix: key.lookup.clone(),
            secret_hash: key.secret_hash.clone(),
            permissions: Permission::join(permissions),
            created_at: now(),
            last_used_at: None,
            expires_at,
            revoked_at: None,
            parent_id: None,
        },
    )
    .await
    .expect("insert api key");
    key.secret
}

/// Wraps `message` with an `x-api-key` header.
pub fn with_key<T>(message: T, key: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("x-api-key", key.parse().expect("ascii key"));
    request
}

/// Wraps `message` with an `authorization: Bearer` header.
pub fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("ascii token"));
    request
}

/// The ErrorInfo reason of a failed call.
pub fn reason(status: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    status.get_error_details().error_info().map(|info| info.reason.clone()).unwrap_or_default()
}

/// The BadRequest field names of a failed call.
pub fn violated_fields(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt;
    status
        .get_error_details()
        .bad_request()
        .map(|br| br.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

/// A server with a USER holding an all-permission key, and clients for sessions and resources.
pub struct Fixture {
    pub server: TestServer,
    pub sessions: SessionServiceClient<Channel>,
    pub resources: ResourceServiceClient<Channel>,
    pub user_id: String,
    pub user_key: String,
}

impl Fixture {
    pub async fn new(db: &TestDb) -> Fixture {
        Fixture::with_server(TestServer::start(db).await).await
    }

    pub async fn with_server(server: TestServer) -> Fixture {
        let user_id = server.insert_user(&server.organization_id, "user@example.com", "USER").await;
        let user_key = server.insert_api_key(&user_id, Permission::ALL, None).await;
        let channel = server.channel().await;
        Fixture {
            sessions: SessionServiceClient::new(channel.clone()),
            resources: ResourceServiceClient::new(channel),
            server,
            user_id,
            user_key,
        }
    }

    /// Creates a memory resource and assigns it to the fixture's user.
    pub async fn resource(&mut self, name: &str, memory: MemoryProvider) -> String {
        self.resource_on(name, resource::Provider::Memory(memory)).await
    }

    /// Creates a resource on any provider and assigns it to the fixture's user.
    pub async fn resource_on(&mut self, name: &str, provider: resource::Provider) -> String {
        let key = self.server.admin_key.clone();
        let request = CreateResourceRequest {
            resource: Some(Resource { name: name.into(), provider: Some(provider), ..Default::default() }),
        };
        let id =
            self.resources.create_resource(with_key(request, &key)).await.unwrap().into_inner().resource.unwrap().id;
        self.assign(&id, &self.user_id.clone()).await;
        id
    }

    pub async fn assign(&mut self, resource_id: &str, user_id: &str) {
        let request = AssignResourceRequest { resource_id: resource_id.into(), user_id: user_id.into() };
        self.resources.assign_resource(with_key(request, &self.server.admin_key)).await.unwrap();
    }

    pub async fn start(&mut self, key: &str, ipv4: Option<&str>, ipv6: Option<&str>) -> Result<Session, tonic::Status> {
        let request = StartSessionRequest {
            duration_hours: None,
            ipv4_address: ipv4.map(str::to_owned),
            ipv6_address: ipv6.map(str::to_owned),
            duration_minutes: None,
            heartbeat_seconds: None,
            ..Default::default()
        };
        self.sessions.start_session(with_key(request, key)).await.map(|r| r.into_inner().session.unwrap())
    }

    /// Watches a session until it reaches a terminal state or `until`, returning every message.
    /// A fixture whose user has a memory resource "db" and a session on `ipv4` that is ACTIVE;
    /// answers it with the user's key and the session as started.
    pub async fn with_active_session(db: &TestDb, ipv4: &str) -> (Fixture, String, Session) {
        let mut f = Fixture::new(db).await;
        f.resource("db", MemoryProvider::default()).await;
        let key = f.user_key.clone();
        let session = f.start(&key, Some(ipv4), None).await.unwrap();
        f.watch_until(&key, &session.id, SessionStatus::Active).await;
        (f, key, session)
    }

    pub async fn watch_until(&mut self, key: &str, id: &str, until: SessionStatus) -> Vec<Session> {
        let mut stream = self
            .sessions
            .watch_session(with_key(WatchSessionRequest { id: id.into() }, key))
            .await
            .unwrap()
            .into_inner();
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while let Ok(Some(message)) = tokio::time::timeout_at(deadline, stream.message())
            .await
            .unwrap_or_else(|_| panic!("watch timed out waiting for {until:?}; saw {seen:#?}"))
        {
            let session = message.session.unwrap();
            let status = session.status();
            seen.push(session);
            if status == until {
                break;
            }
        }
        seen
    }

    /// Starts a session on each IPv4 address, one after another, each ACTIVE before the next
    /// starts; answers their ids.
    pub async fn start_one_by_one(&mut self, key: &str, addresses: impl IntoIterator<Item = String>) -> Vec<String> {
        let mut ids = Vec::new();
        for address in addresses {
            let session = self.start(key, Some(&address), None).await.unwrap();
            self.watch_until(key, &session.id, SessionStatus::Active).await;
            ids.push(session.id);
        }
        ids
    }

    /// Stops each session, one after another, each CANCELLED before the next stops (the cloud
    /// providers' tests).
    #[cfg(any(feature = "aws", feature = "gcp"))]
    pub async fn stop_one_by_one(&mut self, key: &str, ids: &[String]) {
        for id in ids {
            self.stop(key, id).await;
            self.watch_until(key, id, SessionStatus::Cancelled).await;
        }
    }

    pub async fn stop(&mut self, key: &str, id: &str) -> Session {
        self.sessions
            .stop_session(with_key(StopSessionRequest { id: id.into() }, key))
            .await
            .unwrap()
            .into_inner()
            .session
            .unwrap()
    }
}

/// Inserts an open login session for `user_id` straight into the store; returns its id.
/// An identity provider of `organization_id`, stored as is (no discovery): an object to aim at.
pub async fn insert_identity_provider(db: &DatabaseConnection, organization_id: &str) -> String {
    use portcullis::store::entity::identity_provider;
    use sea_orm::ActiveModelTrait;
    let at = now();
    let model = identity_provider::Model {
        id: portcullis::domain::new_id(),
        organization_id: organization_id.to_owned(),
        display_name: "Okta".into(),
        issuer_url: "https://example.okta.com".into(),
        client_id: "portcullis".into(),
        client_secret_sealed: None,
        scopes: r#"["openid"]"#.into(),
        groups_claim: "groups".into(),
        allowed_email_domains: "[]".into(),
        group_mappings: "[]".into(),
        jit_users: false,
        sso_required: false,
        created_at: at,
        updated_at: at,
    };
    identity_provider::ActiveModel::from(model).insert(db).await.expect("identity provider").id
}

pub async fn insert_login_session(db: &DatabaseConnection, user_id: &str) -> String {
    let user = queries::users::get_any(db, user_id).await.expect("user");
    let at = now();
    queries::login_sessions::insert(
        db,
        portcullis::store::entity::login_session::Model {
            id: new_id(),
            organization_id: user.organization_id,
            user_id: user_id.to_owned(),
            created_at: at,
            active_at: at,
            expires_at: at + chrono::TimeDelta::hours(1),
            idle_timeout_minutes: 60,
            ip: "203.0.113.7".into(),
            user_agent: "test".into(),
            authenticators: "otp".into(),
            closed_at: None,
        },
    )
    .await
    .expect("insert login session")
    .id
}
