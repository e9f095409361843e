//! The attack matrix: what an attacker on the network or with a stolen piece could try, and
//! what the server answers.

mod common;

use common::certs::TestCa;
use common::{TestDb, TestServer, with_key};
use portcullis::pb::v1::user_service_client::UserServiceClient;
use portcullis::pb::v1::*;
use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// A TLS channel to `server` that trusts `ca_pem`, presenting `identity` (cert, key) if given.
async fn tls_channel(
    server: &TestServer,
    ca_pem: &str,
    identity: Option<(&str, &str)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem)).domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Channel::from_shared(format!("https://{}", server.addr)).unwrap().tls_config(tls)?.connect().await
}

/// Whether `server` turns away a TLS client that trusts `ca_pem` and presents `identity`: at
/// the handshake, or at the first call.
async fn turned_away(server: &TestServer, ca_pem: &str, identity: Option<(&str, &str)>) -> bool {
    match tls_channel(server, ca_pem, identity).await {
        Ok(channel) => whoami(server, channel).await.is_err(),
        Err(_) => true,
    }
}

/// Who the admin key belongs to, over `channel`: proves a whole authenticated call went through.
async fn whoami(server: &TestServer, channel: Channel) -> Result<String, tonic::Status> {
    let answer =
        UserServiceClient::new(channel).get_current_user(with_key(GetCurrentUserRequest {}, &server.admin_key)).await?;
    Ok(answer.into_inner().user.unwrap_or_default().email)
}

fn tls_config(dir: &std::path::Path, ca: &TestCa, client_ca: Option<std::path::PathBuf>) -> portcullis::config::Config {
    let issued = ca.server(dir, "server");
    let mut config = common::test_config();
    config.tls.cert_file = Some(issued.cert_file);
    config.tls.key_file = Some(issued.key_file);
    config.tls.client_ca_file = client_ca;
    config
}

/// With a certificate configured the server speaks TLS only: a client that trusts its CA gets
/// through, a plaintext client does not, and neither does one that trusts another CA.
#[tokio::test]
async fn the_server_speaks_tls() {
    let db = TestDb::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("portcullis test CA");
    let server = TestServer::start_with(&db, tls_config(dir.path(), &ca, None)).await;

    let channel = tls_channel(&server, &ca.pem(), None).await.unwrap();
    assert_eq!(whoami(&server, channel).await.unwrap(), "admin@example.com");

    let plaintext = Channel::from_shared(format!("http://{}", server.addr)).unwrap().connect().await;
    let refused = match plaintext {
        Ok(channel) => whoami(&server, channel).await.is_err(),
        Err(_) => true,
    };
    assert!(refused, "a plaintext client must not get through");
    let stranger = TestCa::new("someone else's CA");
    assert!(
        tls_channel(&server, &stranger.pem(), None).await.is_err(),
        "a server certificate from an unknown CA is refused"
    );
    server.stop().await;
}

/// With `tls.client_ca_file` (mutual TLS) a client without a certificate, or with one from
/// another CA, is refused during the handshake; one with a certificate the CA signed gets in.
#[tokio::test]
async fn mutual_tls_refuses_clients_without_a_certificate() {
    let db = TestDb::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("portcullis test CA");
    let clients = TestCa::new("client CA");
    let client_ca = clients.write(dir.path(), "clients.pem");
    let server = TestServer::start_with(&db, tls_config(dir.path(), &ca, Some(client_ca))).await;

    assert!(turned_away(&server, &ca.pem(), None).await, "a client without a certificate is refused");
    let forged = TestCa::new("forger").client(dir.path(), "forged");
    let forged = Some((forged.cert_pem.as_str(), forged.key_pem.as_str()));
    assert!(turned_away(&server, &ca.pem(), forged).await, "a client certificate from another CA is refused");
    let client = clients.client(dir.path(), "client");
    let channel = tls_channel(&server, &ca.pem(), Some((&client.cert_pem, &client.key_pem))).await.unwrap();
    assert_eq!(whoami(&server, channel).await.unwrap(), "admin@example.com");
    server.stop().await;
}

/// A renewed certificate is picked up from its files without a restart; connections made
/// before keep working.
#[tokio::test]
async fn a_renewed_certificate_is_served_without_dropping_connections() {
    let db = TestDb::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let old_ca = TestCa::new("old CA");
    let server = TestServer::start_with(&db, tls_config(dir.path(), &old_ca, None)).await;
    let before = tls_channel(&server, &old_ca.pem(), None).await.unwrap();
    assert!(whoami(&server, before.clone()).await.is_ok());

    // Renewed in place (same file names), by another CA so the test can tell them apart.
    let new_ca = TestCa::new("new CA");
    new_ca.server(dir.path(), "server");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(channel) = tls_channel(&server, &new_ca.pem(), None).await
            && whoami(&server, channel).await.is_ok()
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the renewed certificate was never served");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(tls_channel(&server, &old_ca.pem(), None).await.is_err(), "new connections get the new certificate");
    assert_eq!(whoami(&server, before).await.unwrap(), "admin@example.com", "the old connection still works");
    server.stop().await;
}

/// grpcurl, as the README shows it, against the TLS server with the CA made here. (Several
/// threads: grpcurl is waited for on this one while the server answers on another.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_reaches_the_tls_server_with_its_ca() {
    let Ok(grpcurl) = which("grpcurl") else {
        eprintln!("skipped: grpcurl is not on PATH (scripts/test.sh installs it)");
        return;
    };
    let db = TestDb::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("portcullis test CA");
    let ca_file = ca.write(dir.path(), "ca.pem");
    let server = TestServer::start_with(&db, tls_config(dir.path(), &ca, None)).await;
    let address = format!("localhost:{}", server.addr.port());
    let run = |args: &[&str]| {
        let output = std::process::Command::new(&grpcurl).args(args).output().unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr),
        )
    };
    let ca_arg = ca_file.to_str().unwrap();
    let (ok, listed) = run(&["-cacert", ca_arg, &address, "list"]);
    assert!(ok && listed.contains("portcullis.v1.SessionService"), "{listed}");
    let header = format!("x-api-key: {}", server.admin_key);
    let (ok, me) = run(&["-cacert", ca_arg, "-H", &header, &address, "portcullis.v1.UserService/GetCurrentUser"]);
    assert!(ok && me.contains("admin@example.com"), "{me}");
    let (ok, _) = run(&["-plaintext", &address, "list"]);
    assert!(!ok, "plaintext is refused");
    server.stop().await;
}

fn which(program: &str) -> Result<std::path::PathBuf, ()> {
    let path = std::env::var_os("PATH").ok_or(())?;
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|candidate| candidate.is_file()).ok_or(())
}

/// `serve` on an address other machines reach refuses plaintext, unless told it sits behind a
/// TLS-terminating proxy (`tls.allow_plaintext`).
#[test]
fn plaintext_off_loopback_needs_an_explicit_yes() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let serve = || {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"));
        command.current_dir(dir.path()).args(["serve", "--listen", "0.0.0.0:0"]).env("RUST_LOG", "info");
        command.env_remove("PORTCULLIS_DATABASE_URL").stdout(std::process::Stdio::null());
        command
    };
    let refused = serve().output().unwrap();
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("refusing to serve plaintext on 0.0.0.0"), "{said}");

    let mut allowed =
        serve().env("PORTCULLIS_TLS__ALLOW_PLAINTEXT", "true").stderr(std::process::Stdio::piped()).spawn().unwrap();
    let listening = BufReader::new(allowed.stderr.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .any(|line| line.contains("listening"));
    allowed.kill().unwrap();
    allowed.wait().unwrap();
    assert!(listening, "with tls.allow_plaintext the server starts");
}

/// A listener that counts the connections made to it: where an attacker would collect the
/// server's credentials.
async fn trap() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let caught = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = caught.clone();
    tokio::spawn(async move {
        while let Ok((connection, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(connection);
        }
    });
    (url, caught)
}

fn aws_on(endpoint: &str) -> resource::Provider {
    resource::Provider::AwsSecurityGroup(AwsSecurityGroup {
        region: "eu-west-1".into(),
        group_id: "sg-0123456789abcdef0".into(),
        protocol: "tcp".into(),
        from_port: 22,
        to_port: 22,
        endpoint_url: Some(endpoint.into()),
        ..Default::default()
    })
}

/// `endpoint_url` must be a cloud endpoint or one the operator allows: anything else is refused
/// when the resource is written, and a stored resource whose endpoint is no longer allowed gets
/// no call at all (its rules wait, with the reason, and the audit trail says so).
#[tokio::test]
async fn no_call_goes_to_an_endpoint_the_operator_does_not_allow() {
    use portcullis::pb::v1::resource_service_client::ResourceServiceClient;
    use portcullis::pb::v1::session_service_client::SessionServiceClient;
    let db = TestDb::sqlite();
    let (url, caught) = trap().await;
    let server = TestServer::start(&db).await;
    let mut resources = ResourceServiceClient::new(server.channel().await);
    let create = |name: &str, endpoint: &str| CreateResourceRequest {
        resource: Some(Resource { name: name.into(), provider: Some(aws_on(endpoint)), ..Default::default() }),
    };
    for elsewhere in ["https://attacker.example", "http://10.0.0.1:8080", "https://ec2.amazonaws.com@attacker.example"]
    {
        let err = resources.create_resource(with_key(create("evil", elsewhere), &server.admin_key)).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{elsewhere}");
        assert_eq!(common::violated_fields(&err), ["resource.aws_security_group.endpoint_url"], "{elsewhere}");
    }
    // Allowed by the test configuration (loopback), so it is stored...
    let created = resources.create_resource(with_key(create("trapped", &url), &server.admin_key)).await.unwrap();
    let resource_id = created.into_inner().resource.unwrap().id;
    let assign = AssignResourceRequest { resource_id: resource_id.clone(), user_id: server.admin_id.clone() };
    resources.assign_resource(with_key(assign, &server.admin_key)).await.unwrap();

    // ...and then the operator narrows the list to the clouds' own endpoints and restarts.
    let mut narrowed = common::test_config();
    narrowed.providers.allowed_endpoints.clear();
    let restarted = server.replica(&db, narrowed).await;
    server.stop().await;
    let server = restarted;
    let request = StartSessionRequest { ipv4_address: Some("203.0.113.50".into()), ..Default::default() };
    let session = SessionServiceClient::new(server.channel().await)
        .start_session(with_key(request, &server.admin_key))
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let rule = loop {
        let record = portcullis::store::queries::sessions::load(&server.db, &session.id).await.unwrap();
        if record.rules[0].error_message.is_some() {
            break record.rules[0].clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "the refusal was never recorded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(rule.status, "PENDING", "the rule waits; it neither fails nor opens");
    assert!(rule.error_message.unwrap().contains("not among the operator's allowed endpoints"));
    assert_eq!(caught.load(std::sync::atomic::Ordering::SeqCst), 0, "no connection reached the endpoint");
    let request = ListAuditEventsRequest { types: vec!["resource.call_refused".into()], ..Default::default() };
    let events = portcullis::pb::v1::audit_service_client::AuditServiceClient::new(server.channel().await)
        .list_audit_events(with_key(request, &server.admin_key))
        .await
        .unwrap()
        .into_inner()
        .audit_events;
    assert!(events.iter().any(|event| event.target_id == resource_id), "{events:?}");
    server.stop().await;
}

/// CheckResource is no oracle for what answers at an endpoint: whatever an endpoint sends back
/// (an internal page, say), callers read only the provider's error code or the kind of failure.
#[tokio::test]
async fn provider_errors_never_echo_what_an_endpoint_answered() {
    use portcullis::pb::v1::resource_service_client::ResourceServiceClient;
    const SECRET: &str = "internal-admin-page-SECRET-42";
    let app = axum::Router::new().fallback(|| async {
        (axum::http::StatusCode::INTERNAL_SERVER_ERROR, format!("<html>{SECRET} http://10.0.0.7/metadata</html>"))
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let db = TestDb::sqlite();
    let server = TestServer::start(&db).await;
    let mut resources = ResourceServiceClient::new(server.channel().await);
    let gcp = resource::Provider::GcpFirewall(GcpFirewall {
        project: "acme".into(),
        network: "default".into(),
        protocol: "tcp".into(),
        ports: vec!["22".into()],
        priority: 1000,
        endpoint_url: Some(endpoint.clone()),
        ..Default::default()
    });
    for (name, provider) in [("aws", aws_on(&endpoint)), ("gcp", gcp)] {
        let request = CreateResourceRequest {
            resource: Some(Resource { name: name.into(), provider: Some(provider), ..Default::default() }),
        };
        let id = resources
            .create_resource(with_key(request, &server.admin_key))
            .await
            .unwrap()
            .into_inner()
            .resource
            .unwrap()
            .id;
        let checked = resources.check_resource(with_key(CheckResourceRequest { id }, &server.admin_key)).await;
        let said = format!("{checked:?}");
        assert!(!said.contains("SECRET") && !said.contains("10.0.0.7"), "{name}: {said}");
    }
    server.stop().await;
}

/// Behind a trusted proxy the audit trail records the client the proxy names, not the proxy;
/// a malformed rightmost `x-forwarded-for` hop is refused, never a reason to believe
/// `x-real-ip` instead; and tunnel or translator addresses carrying a refused host are refused.
#[tokio::test]
async fn addresses_come_from_trusted_proxies_and_are_held_to_the_policy() {
    use portcullis::pb::v1::audit_service_client::AuditServiceClient;
    use portcullis::pb::v1::session_service_client::SessionServiceClient;
    let db = TestDb::sqlite();
    let mut config = common::test_config();
    config.network.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    let server = TestServer::start_with(&db, config).await;
    fn forwarded<T>(message: T, key: &str, xff: &str, real: Option<&str>) -> tonic::Request<T> {
        let mut request = with_key(message, key);
        request.metadata_mut().insert("x-forwarded-for", xff.parse().unwrap());
        if let Some(real) = real {
            request.metadata_mut().insert("x-real-ip", real.parse().unwrap());
        }
        request
    }
    let key = server.admin_key.clone();
    let user = User { email: "ada@example.com".into(), role: Role::User.into(), ..Default::default() };
    UserServiceClient::new(server.channel().await)
        .create_user(forwarded(CreateUserRequest { user: Some(user) }, &key, "198.51.100.77", None))
        .await
        .unwrap();
    let request = ListAuditEventsRequest { types: vec!["user.created".into()], ..Default::default() };
    let events = AuditServiceClient::new(server.channel().await)
        .list_audit_events(with_key(request, &server.admin_key))
        .await
        .unwrap()
        .into_inner()
        .audit_events;
    assert_eq!(events[0].client_ip, "198.51.100.77", "the client the proxy named, not the proxy");

    let mut sessions = SessionServiceClient::new(server.channel().await);
    let start = StartSessionRequest::default();
    let err = sessions.start_session(forwarded(start, &key, "203.0.113.5, not-an-address", Some("203.0.113.6"))).await;
    let err = err.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert_eq!(common::violated_fields(&err), ["x-forwarded-for"]);
    for carried in ["2002:0a00:0001::1", "64:ff9b::7f00:1", "::203.0.113.9", "240.0.0.1"] {
        let field = if carried.contains(':') { "ipv6_address" } else { "ipv4_address" };
        let mut request = StartSessionRequest::default();
        if carried.contains(':') {
            request.ipv6_address = Some(carried.into());
        } else {
            request.ipv4_address = Some(carried.into());
        }
        let err = sessions.start_session(with_key(request, &server.admin_key)).await.unwrap_err();
        assert_eq!(common::violated_fields(&err), [field], "{carried}");
    }
    server.stop().await;
}

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

/// An admin's key that carries only session permissions cannot revoke another user's keys:
/// that is user administration (`users:write`), whatever the key owner's role.
#[tokio::test]
async fn revoking_another_users_key_needs_users_write_on_the_calling_key() {
    use portcullis::domain::Permission;
    use portcullis::pb::v1::auth_service_client::AuthServiceClient;
    common::each_backend(|db: TestDb| async move {
        let server = TestServer::start(&db).await;
        let narrow =
            server.insert_api_key(&server.admin_id, &[Permission::SessionsRead, Permission::SessionsWrite], None).await;
        let user = server.insert_user(&server.organization_id, "ada@example.com", "USER").await;
        let user_key = server.insert_api_key(&user, Permission::ALL, None).await;
        let mut keys = AuthServiceClient::new(server.channel().await);
        let request =
            CreateApiKeyRequest { name: "ci".into(), permissions: vec!["sessions:read".into()], expires_at: None };
        let target = keys.create_api_key(with_key(request, &user_key)).await.unwrap().into_inner().api_key.unwrap().id;

        let err = keys.revoke_api_key(with_key(RevokeApiKeyRequest { id: target.clone() }, &narrow)).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{}: {err:?}", db.backend);
        assert_eq!(common::reason(&err), "ERROR_REASON_PERMISSION_MISSING");
        let revoked =
            keys.revoke_api_key(with_key(RevokeApiKeyRequest { id: target }, &server.admin_key)).await.unwrap();
        assert!(revoked.into_inner().api_key.unwrap().revoked_at.is_some());
        server.stop().await;
    })
    .await;
}
