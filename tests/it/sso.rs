//! Single sign-on against a real Dex: the provider client runs the whole code flow (discovery,
//! the password form, the code exchange with PKCE, ID token checks), and a refresh holds until
//! Dex's admin revokes the user's tokens.

use crate::common::dex::{self, Dex, User};
use crate::common::{self, TestDb, TestServer, test_config, with_key, with_token};
use portcullis::pb::v1::auth_service_client::AuthServiceClient;
use portcullis::pb::v1::identity_provider_service_client::IdentityProviderServiceClient;
use portcullis::pb::v1::resource_service_client::ResourceServiceClient;
use portcullis::pb::v1::session_service_client::SessionServiceClient;
use portcullis::pb::v1::*;
use portcullis::settings::Seconds;
use portcullis::sso::http::IdpHttp;
use portcullis::sso::oidc::{Provider, Refreshed, discover};
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::Channel;

/// Where Dex sends the browser back; the test reads the code off the redirect, so nothing listens.
const REDIRECT: &str = "http://127.0.0.1:9/sso/callback";
const SCOPES: [&str; 5] = ["openid", "email", "profile", "groups", "offline_access"];

async fn provider(dex: &Dex) -> Arc<Provider> {
    let http = IdpHttp::new(vec![dex.origin.clone()], Duration::from_secs(10)).unwrap();
    let metadata = discover(&http, &dex.issuer).await.unwrap();
    Provider::new(http, metadata, dex::CLIENT_ID, dex::CLIENT_SECRET, REDIRECT, "groups").unwrap()
}

#[tokio::test]
async fn a_dex_login_names_the_user_with_groups_and_a_refresh_holds_until_dex_revokes_it() {
    let Some(binary) = dex::binary() else { return };
    let dir = tempfile::tempdir().unwrap();
    let ada = User::new("ada@example.com", &["ops"]);
    let dex = Dex::start(&binary, dir.path(), std::slice::from_ref(&ada), REDIRECT).await;
    let provider = provider(&dex).await;

    let scopes: Vec<String> = SCOPES.iter().map(|scope| (*scope).to_owned()).collect();
    let authorization = provider.authorize(&scopes);
    let (code, state) = dex.log_in(&authorization.url, &ada.email).await;
    assert_eq!(state, authorization.state, "the callback carries the state this server made");
    let identity = provider.finish(&code, &authorization.pkce_verifier, &authorization.nonce).await.unwrap();
    assert_eq!((identity.email.as_str(), identity.issuer.as_str()), (ada.email.as_str(), dex.issuer.as_str()));
    assert_eq!(identity.groups, ["ops"]);
    let refresh_token = identity.refresh_token.clone().expect("offline_access gives a refresh token");
    assert!(
        provider.finish(&code, &authorization.pkce_verifier, &authorization.nonce).await.is_err(),
        "a code is good once"
    );

    // Still a user: the refresh holds, with the groups as they are now.
    let refresh_token = match provider.refresh(&refresh_token).await.unwrap() {
        Refreshed::Valid { groups, refresh_token: next } => {
            assert_eq!(groups.as_deref(), Some(&["ops".to_owned()][..]));
            next.filter(|next| *next != refresh_token).expect("Dex rotates refresh tokens")
        }
        revoked => panic!("refused while still a user: {revoked:?}"),
    };

    // The IdP's admin revokes the user's tokens (as when someone leaves): the refresh is a
    // refused grant, which is what disables a user; Dex says so with 400 invalid_request.
    dex.revoke_refresh(&identity.subject);
    match provider.refresh(&refresh_token).await {
        Ok(Refreshed::Revoked(why)) => assert!(why.contains("invalid_request"), "{why}"),
        other => panic!("a revoked refresh token must read as a refused grant: {other:?}"),
    }
}

/// A server whose organization logs in through a Dex, both on this machine: the server's public
/// URL is its own loopback address, Dex is an allowed private issuer, and each refresh check is
/// due after `refresh_check_secs`.
struct SsoSetup {
    server: TestServer,
    dex: Dex,
    auth: AuthServiceClient<Channel>,
    providers: IdentityProviderServiceClient<Channel>,
    resources: ResourceServiceClient<Channel>,
    _dir: tempfile::TempDir,
}

const SEALING_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

impl SsoSetup {
    async fn start(db: &TestDb, binary: &std::path::Path, users: &[User], refresh_check_secs: u64) -> SsoSetup {
        let seconds = Seconds::try_from(refresh_check_secs).unwrap();
        SsoSetup::start_with(db, binary, users, |config| config.sso.refresh_check_secs = seconds).await
    }

    async fn start_with(
        db: &TestDb,
        binary: &std::path::Path,
        users: &[User],
        adjust: impl FnOnce(&mut portcullis::config::Config),
    ) -> SsoSetup {
        let dir = tempfile::tempdir().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let public_url = format!("http://{}", listener.local_addr().unwrap());
        let dex = Dex::start(binary, dir.path(), users, &format!("{public_url}/sso/callback")).await;
        let mut config = test_config();
        config.sealing_key = Some(portcullis::config::Secret(SEALING_KEY.into()));
        config.server.public_url = Some(public_url);
        config.sso.allowed_private_issuers = vec![dex.origin.clone()];
        adjust(&mut config);
        let server = TestServer::start_on(db, config, listener).await;
        let channel = server.channel().await;
        SsoSetup {
            auth: AuthServiceClient::new(channel.clone()),
            providers: IdentityProviderServiceClient::new(channel.clone()),
            resources: ResourceServiceClient::new(channel),
            server,
            dex,
            _dir: dir,
        }
    }

    async fn resource(&mut self, name: &str) -> String {
        self.resource_on(name, resource::Provider::Memory(MemoryProvider::default())).await
    }

    async fn resource_on(&mut self, name: &str, provider: resource::Provider) -> String {
        let request = CreateResourceRequest {
            resource: Some(Resource { name: name.into(), provider: Some(provider), ..Default::default() }),
        };
        let created = self.resources.create_resource(with_key(request, &self.server.admin_key)).await.unwrap();
        created.into_inner().resource.unwrap().id
    }

    /// Dex as the organization's provider: `ops` maps to USER with `resources`, and first
    /// logins create users.
    async fn register_dex(&mut self, resources: &[String]) -> IdentityProvider {
        let provider = IdentityProvider {
            display_name: "Dex".into(),
            issuer_url: self.dex.issuer.clone(),
            client_id: dex::CLIENT_ID.into(),
            client_secret: dex::CLIENT_SECRET.into(),
            scopes: SCOPES.iter().map(|scope| (*scope).to_owned()).collect(),
            group_mappings: vec![GroupMapping {
                group: "ops".into(),
                role: Role::User.into(),
                resource_ids: resources.to_vec(),
            }],
            jit_users: true,
            ..Default::default()
        };
        let request = CreateIdentityProviderRequest { identity_provider: Some(provider) };
        let created = self.providers.create_identity_provider(with_key(request, &self.server.admin_key)).await.unwrap();
        created.into_inner().identity_provider.unwrap()
    }

    /// `email` logs in as `pcl login --sso` does: starts the login, follows its URL through
    /// Dex's form to this server's callback (answered with `callback_status`), and waits.
    async fn sso_login(&mut self, email: &str, callback_status: u16) -> Result<VerifyLoginResponse, tonic::Status> {
        let request =
            StartSsoLoginRequest { organization_id: self.server.organization_id.clone(), ..Default::default() };
        let started = self.auth.start_sso_login(request).await.unwrap().into_inner();
        let wait = WaitSsoLoginRequest { sso_login_id: started.sso_login_id, poll_secret: started.poll_secret };
        let mut stream = self.auth.wait_sso_login(wait).await?.into_inner();
        let first = stream.message().await?.expect("a first message");
        assert_eq!(first.state(), SsoLoginState::Waiting, "the browser has not come back yet");
        let back = self.dex.log_in_to_redirect(&started.authorization_url, email).await;
        let page = reqwest::get(&back).await.unwrap();
        assert_eq!(page.status().as_u16(), callback_status, "{}", page.text().await.unwrap_or_default());
        let last = stream.message().await?.expect("the outcome");
        assert_eq!(last.state(), SsoLoginState::Done);
        Ok(last.login.unwrap())
    }

    async fn assigned_to(&mut self, token: &str) -> Vec<String> {
        let listed = self.resources.list_resources(with_token(ListResourcesRequest::default(), token)).await.unwrap();
        let mut ids: Vec<String> = listed.into_inner().resources.into_iter().map(|resource| resource.id).collect();
        ids.sort();
        ids
    }
}

#[tokio::test]
async fn a_dex_login_through_the_server_creates_the_mapped_user_whose_session_opens_the_firewall() {
    let Some(binary) = dex::binary() else { return };
    let db = TestDb::sqlite();
    let (ada, bob) = (User::new("ada@example.com", &["ops"]), User::new("bob@example.com", &["sales"]));
    let mut setup = SsoSetup::start(&db, &binary, &[ada.clone(), bob.clone()], 900).await;
    let (mapped, by_hand) = (setup.resource("db").await, setup.resource("bastion").await);
    let registered = setup.register_dex(std::slice::from_ref(&mapped)).await;
    assert!(registered.client_secret.is_empty() && registered.client_secret_set, "the secret is never shown");

    // Ada's first login creates her with the role and resource `ops` maps to.
    let login = setup.sso_login(&ada.email, 200).await.unwrap();
    assert_eq!(login.login_session.as_ref().unwrap().authenticators, ["sso"]);
    let token = login.access_token.clone();
    let current = setup.auth.get_current_login(with_token(GetCurrentLoginRequest {}, &token)).await.unwrap();
    let current = current.into_inner();
    assert_eq!((current.alias.as_str(), current.groups.as_slice()), (ada.email.as_str(), &["ops".to_owned()][..]));
    assert_eq!(current.roles, [i32::from(Role::User)]);
    assert_eq!(setup.assigned_to(&token).await, std::slice::from_ref(&mapped));

    // Her session opens the firewall.
    let mut sessions = SessionServiceClient::new(setup.server.channel().await);
    let start = StartSessionRequest { ipv4_address: Some("203.0.113.7".into()), ..Default::default() };
    let session = sessions.start_session(with_token(start, &token)).await.unwrap().into_inner().session.unwrap();
    let server = &setup.server;
    common::eventually("the rule of the SSO user's session", Duration::from_secs(10), async || {
        let rules = server.memory_rules(&mapped);
        common::when(rules.contains(&"203.0.113.7".parse().unwrap()), rules)
    })
    .await;
    assert!(!session.id.is_empty());

    // A hand-made assignment survives her next login, which applies the mapping again.
    let assign = AssignResourceRequest { resource_id: by_hand.clone(), user_id: current.user_id.clone() };
    setup.resources.assign_resource(with_key(assign, &setup.server.admin_key)).await.unwrap();
    let again = setup.sso_login(&ada.email, 200).await.unwrap();
    let mut both = vec![mapped.clone(), by_hand.clone()];
    both.sort();
    assert_eq!(setup.assigned_to(&again.access_token).await, both);

    // Bob is in no mapped group: refused, and told why.
    let refused = setup.sso_login(&bob.email, 400).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert_eq!(common::reason(&refused), "ERROR_REASON_SSO_ACCESS_DENIED");
    assert!(refused.message().contains("none of your groups"), "{}", refused.message());
    setup.server.stop().await;
}

#[tokio::test]
async fn a_replayed_callback_or_a_wrong_poll_secret_is_refused() {
    let Some(binary) = dex::binary() else { return };
    let db = TestDb::sqlite();
    let ada = User::new("ada@example.com", &["ops"]);
    let mut setup = SsoSetup::start(&db, &binary, std::slice::from_ref(&ada), 900).await;
    setup.register_dex(&[]).await;
    let request = StartSsoLoginRequest { organization_id: setup.server.organization_id.clone(), ..Default::default() };
    let started = setup.auth.start_sso_login(request).await.unwrap().into_inner();
    let wrong = WaitSsoLoginRequest { sso_login_id: started.sso_login_id.clone(), poll_secret: "guess".into() };
    let refused = setup.auth.wait_sso_login(wrong).await.map(drop).unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);

    let back = setup.dex.log_in_to_redirect(&started.authorization_url, &ada.email).await;
    assert_eq!(reqwest::get(&back).await.unwrap().status().as_u16(), 200);
    let replayed = reqwest::get(&back).await.unwrap();
    assert_eq!(replayed.status().as_u16(), 400, "a state works once");
    assert!(replayed.text().await.unwrap().contains("already used"));
    let forged = back.replace("state=", "state=x");
    assert_eq!(reqwest::get(&forged).await.unwrap().status().as_u16(), 400, "an unknown state");

    let wait = WaitSsoLoginRequest { sso_login_id: started.sso_login_id.clone(), poll_secret: started.poll_secret };
    let mut stream = setup.auth.wait_sso_login(wait.clone()).await.unwrap().into_inner();
    assert_eq!(stream.message().await.unwrap().unwrap().state(), SsoLoginState::Done);
    let twice = setup.auth.wait_sso_login(wait).await.map(drop).unwrap_err();
    assert_eq!(twice.code(), tonic::Code::FailedPrecondition, "the token is delivered once: {twice:?}");
    setup.server.stop().await;
}

#[tokio::test]
async fn leaving_the_group_or_the_provider_closes_the_firewall_within_the_refresh_interval() {
    let Some(binary) = dex::binary() else { return };
    let db = TestDb::sqlite();
    let ada = User::new("ada@example.com", &["ops"]);
    let mut setup = SsoSetup::start(&db, &binary, std::slice::from_ref(&ada), 1).await;
    let (mapped, by_hand) = (setup.resource("db").await, setup.resource("bastion").await);
    setup.register_dex(std::slice::from_ref(&mapped)).await;
    let login = setup.sso_login(&ada.email, 200).await.unwrap();
    let token = login.access_token.clone();
    let user_id = login.login_session.unwrap().user_id;
    let assign = AssignResourceRequest { resource_id: by_hand.clone(), user_id: user_id.clone() };
    setup.resources.assign_resource(with_key(assign, &setup.server.admin_key)).await.unwrap();
    let api_key = setup.server.insert_api_key(&user_id, portcullis::domain::Permission::ALL, None).await;
    let mut sessions = SessionServiceClient::new(setup.server.channel().await);
    let start = StartSessionRequest { ipv4_address: Some("203.0.113.7".into()), ..Default::default() };
    let session = sessions.start_session(with_token(start, &token)).await.unwrap().into_inner().session.unwrap();
    let address: std::net::IpAddr = "203.0.113.7".parse().unwrap();
    let server = &setup.server;
    common::eventually("both rules open", Duration::from_secs(10), async || {
        let open = server.memory_rules(&mapped).contains(&address) && server.memory_rules(&by_hand).contains(&address);
        common::when(open, ())
    })
    .await;

    // (a) Ada leaves `ops` at Dex: the next refresh check takes the mapped resource and its
    // rule away; she stays enabled, and keeps the resource an admin gave her.
    let left = std::time::Instant::now();
    setup.dex.restart(&[User::new(&ada.email, &[])]).await;
    let server = &setup.server;
    common::eventually("the mapped rule removed", Duration::from_secs(30), async || {
        let rules = server.memory_rules(&mapped);
        common::when(!rules.contains(&address), rules)
    })
    .await;
    println!(
        "left the group: mapped rule removed after {:.1} s (refresh_check_secs = 1)",
        left.elapsed().as_secs_f64()
    );
    assert_eq!(setup.assigned_to(&token).await, std::slice::from_ref(&by_hand), "only the mapped slice goes");
    assert!(setup.server.memory_rules(&by_hand).contains(&address), "the hand-made resource's rule stays");
    let current = setup.auth.get_current_login(with_token(GetCurrentLoginRequest {}, &token)).await.unwrap();
    assert!(current.into_inner().groups.is_empty(), "the groups Dex reports now");

    // (b) Ada is deleted at Dex, her grants revoked: the next check is a refused grant, so she
    // is disabled, her session ends with every rule removed, and her token and key stop working.
    let deleted = std::time::Instant::now();
    setup.dex.revoke_refresh(&dex_subject(&setup, &ada).await);
    setup.dex.restart(&[]).await;
    let server = &setup.server;
    common::eventually("every rule removed", Duration::from_secs(30), async || {
        let rules = server.memory_rules(&by_hand);
        common::when(!rules.contains(&address), rules)
    })
    .await;
    println!("deleted at the provider: every rule removed after {:.1} s", deleted.elapsed().as_secs_f64());
    let ended = sessions.get_session(with_key(GetSessionRequest { id: session.id.clone() }, &setup.server.admin_key));
    assert_eq!(ended.await.unwrap().into_inner().session.unwrap().status(), SessionStatus::Cancelled);
    tokio::time::sleep(common::CALLER_CACHE_TTL).await;
    let refused = setup.auth.get_current_login(with_token(GetCurrentLoginRequest {}, &token)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    let refused = setup.resources.list_resources(with_key(ListResourcesRequest::default(), &api_key)).await;
    assert!(refused.is_err(), "a departed user's API key stops working");
    setup.server.stop().await;
}

/// The subject Dex gives `user` (its connector id and user id, encoded), as stored at login.
async fn dex_subject(setup: &SsoSetup, user: &User) -> String {
    use portcullis::store::entity::{user as user_entity, user_identity};
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let row = user_entity::Entity::find()
        .filter(user_entity::Column::Email.eq(user.email.as_str()))
        .one(&setup.server.db)
        .await
        .unwrap()
        .unwrap();
    let identity =
        user_identity::Entity::find().filter(user_identity::Column::UserId.eq(row.id)).one(&setup.server.db).await;
    identity.unwrap().unwrap().subject
}

/// The same login on a real cloud API: the mapped resource is a security group on moto's EC2,
/// and the SSO user's session puts their address in it.
#[cfg(feature = "aws")]
#[tokio::test]
async fn an_sso_users_session_opens_the_security_group_on_moto() {
    use crate::common::moto::{moto, new_group, resource_on_moto, rules_in};
    let (Some(binary), Some(endpoint)) = (dex::binary(), moto()) else { return };
    let db = TestDb::sqlite();
    let ada = User::new("ada@example.com", &["ops"]);
    let mut setup = SsoSetup::start(&db, &binary, std::slice::from_ref(&ada), 900).await;
    let group = new_group(&endpoint);
    let mapped = setup.resource_on("bastion", resource_on_moto(&endpoint, &group)).await;
    setup.register_dex(std::slice::from_ref(&mapped)).await;
    let login = setup.sso_login(&ada.email, 200).await.unwrap();
    let mut sessions = SessionServiceClient::new(setup.server.channel().await);
    let start = StartSessionRequest { ipv4_address: Some("203.0.113.7".into()), ..Default::default() };
    sessions.start_session(with_token(start, &login.access_token)).await.unwrap();
    common::eventually("the SSO user's address in the security group", Duration::from_secs(20), async || {
        let rules = rules_in(&endpoint, &group);
        common::when(rules.iter().any(|(cidr, _, _)| cidr == "203.0.113.7/32"), rules)
    })
    .await;
    setup.server.stop().await;
}

/// An organization that requires single sign-on gets no login codes (a mail says how to log in
/// instead), and an update is checked like a creation: no operator role, no foreign resource.
#[tokio::test]
async fn sso_required_stops_login_codes_and_updates_are_checked() {
    use crate::common::smtp::MailServer;
    let (Some(binary), Some(mail)) = (dex::binary(), MailServer::start().await) else { return };
    let db = TestDb::sqlite();
    let mut setup = SsoSetup::start_with(&db, &binary, &[], |config| {
        config.mail.transport = portcullis::config::MailTransport::Smtp;
        config.mail.smtp_host = "127.0.0.1".into();
        config.mail.smtp_port = mail.port;
        config.mail.smtp_security = portcullis::config::SmtpSecurity::None;
    })
    .await;
    let registered = setup.register_dex(&[]).await;
    let admin = setup.server.admin_key.clone();
    let update = |provider: IdentityProvider, paths: &[&str]| UpdateIdentityProviderRequest {
        identity_provider: Some(provider),
        update_mask: Some(prost_types::FieldMask { paths: paths.iter().map(|path| (*path).to_owned()).collect() }),
    };

    let operator = GroupMapping { group: "ops".into(), role: Role::Operator.into(), resource_ids: Vec::new() };
    let bad = IdentityProvider { id: registered.id.clone(), group_mappings: vec![operator], ..Default::default() };
    let refused = setup.providers.update_identity_provider(with_key(update(bad, &["group_mappings"]), &admin)).await;
    let refused = refused.unwrap_err();
    assert_eq!(common::violated_fields(&refused), ["identity_provider.group_mappings[0].role"]);
    let foreign =
        GroupMapping { group: "ops".into(), role: Role::User.into(), resource_ids: vec![portcullis::domain::new_id()] };
    let bad = IdentityProvider { id: registered.id.clone(), group_mappings: vec![foreign], ..Default::default() };
    let refused = setup.providers.update_identity_provider(with_key(update(bad, &["group_mappings"]), &admin)).await;
    assert_eq!(
        common::violated_fields(&refused.unwrap_err()),
        ["identity_provider.group_mappings[0].resource_ids"],
        "a resource the organization does not have"
    );

    let required = IdentityProvider { id: registered.id.clone(), sso_required: true, ..Default::default() };
    let updated = setup.providers.update_identity_provider(with_key(update(required, &["sso_required"]), &admin)).await;
    let updated = updated.unwrap().into_inner().identity_provider.unwrap();
    assert!(updated.sso_required && updated.client_secret_set, "only the named field changed");
    assert_eq!(updated.group_mappings, registered.group_mappings);

    let start = StartLoginRequest { email: "admin@example.com".into(), ..Default::default() };
    setup.auth.start_login(start).await.expect("answered like any other address");
    let mail = &mail;
    common::eventually("the single sign-on mail", Duration::from_secs(10), async || {
        let messages = mail.messages();
        common::when(messages.iter().any(|message| message.contains("log in with single sign-on")), messages)
    })
    .await;
    assert!(mail.codes_for("admin@example.com").is_empty(), "no code for an organization that requires SSO");
    setup.server.stop().await;
}
