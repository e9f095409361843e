//! TLS: what the listener serves, whom mutual TLS lets in, and certificates that change under a running server.

use super::*;

/// Whether `server` serves a certificate `ca` signed: a whole call goes through trusting only it.
async fn served_by(server: &TestServer, ca: &TestCa) -> Result<String, String> {
    let channel = tls_channel(server, &ca.pem(), None).await.map_err(|err| err.to_string())?;
    whoami(server, channel).await.map_err(|status| status.to_string())
}

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

/// With `tls.client_crl_file`, a client certificate its CA revoked is refused, the others are not.
#[tokio::test]
async fn a_revoked_client_certificate_is_refused() {
    let db = TestDb::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("portcullis test CA");
    let clients = TestCa::new("client CA");
    let client_ca = clients.write(dir.path(), "clients.pem");
    let (revoked, kept) =
        (clients.client_numbered(dir.path(), "revoked", 4242), clients.client_numbered(dir.path(), "kept", 4343));
    let mut config = tls_config(dir.path(), &ca, Some(client_ca));
    config.tls.client_crl_file = Some(clients.revocations(dir.path(), "clients.crl", &[4242]));
    let server = TestServer::start_with(&db, config).await;
    let presenting = |issued: &common::certs::Issued| Some((issued.cert_pem.clone(), issued.key_pem.clone()));
    let revoked_identity = presenting(&revoked);
    let revoked_identity = revoked_identity.as_ref().map(|(cert, key)| (cert.as_str(), key.as_str()));
    assert!(turned_away(&server, &ca.pem(), revoked_identity).await, "a revoked client certificate is refused");
    let channel = tls_channel(&server, &ca.pem(), Some((&kept.cert_pem, &kept.key_pem))).await.unwrap();
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
    common::eventually("the renewed certificate was never served", Duration::from_secs(20), async || {
        served_by(&server, &new_ca).await
    })
    .await;
    assert!(tls_channel(&server, &old_ca.pem(), None).await.is_err(), "new connections get the new certificate");
    assert_eq!(whoami(&server, before).await.unwrap(), "admin@example.com", "the old connection still works");
    server.stop().await;
}

/// SIGHUP reloads the certificate at once, even when its files look unchanged (a renewal that
/// kept the files' times, which the change poll cannot see).
#[tokio::test]
async fn sighup_reloads_the_certificate() {
    let db = TestDb::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let old_ca = TestCa::new("old CA");
    let server = TestServer::start_with(&db, tls_config(dir.path(), &old_ca, None)).await;
    let before = tls_channel(&server, &old_ca.pem(), None).await.unwrap();
    assert!(whoami(&server, before).await.is_ok());
    // The reload task listens for SIGHUP from its first run on; give it that.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let keep_times = |file: &str| {
        let path = dir.path().join(file);
        let saved = dir.path().join(format!("{file}.times"));
        std::fs::copy(&path, &saved).unwrap();
        let copied = std::process::Command::new("touch").arg("-r").arg(&path).arg(&saved).status().unwrap();
        assert!(copied.success());
        move || {
            let restored = std::process::Command::new("touch").arg("-r").arg(&saved).arg(&path).status().unwrap();
            assert!(restored.success());
        }
    };
    let restore_cert = keep_times("server.pem");
    let restore_key = keep_times("server.key");
    let new_ca = TestCa::new("new CA");
    new_ca.server(dir.path(), "server");
    restore_cert();
    restore_key();
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(tls_channel(&server, &new_ca.pem(), None).await.is_err(), "the poll saw no change");

    let sent = std::process::Command::new("kill").args(["-HUP", &std::process::id().to_string()]).status().unwrap();
    assert!(sent.success());
    common::eventually("SIGHUP did not reload the certificate", Duration::from_secs(3), async || {
        served_by(&server, &new_ca).await
    })
    .await;
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
/// TLS-terminating proxy (`tls.allow_plaintext`), and refuses to write login codes to its log
/// (`mail.transport = "log"`, the default) unless told nobody else reads it (`mail.allow_log`);
/// `/metrics` off loopback needs `metrics.allow_remote`.
#[test]
fn plaintext_or_codes_in_the_log_off_loopback_need_an_explicit_yes() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    // Whether `serve` with `settings` starts listening, and what it said until then.
    let serve = |settings: &[(&str, &str)]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"));
        command.current_dir(dir.path()).args(["serve", "--listen", "0.0.0.0:0"]).env("RUST_LOG", "info");
        command.env_remove("PORTCULLIS_DATABASE_URL").stdout(std::process::Stdio::null());
        command.envs(settings.iter().copied()).stderr(std::process::Stdio::piped());
        let mut child = command.spawn().unwrap();
        let mut said = String::new();
        let mut listening = false;
        for line in BufReader::new(child.stderr.take().unwrap()).lines().map_while(Result::ok) {
            said.push_str(&line);
            said.push('\n');
            if line.contains("listening") {
                listening = true;
                break;
            }
        }
        let _ = child.kill();
        child.wait().unwrap();
        (listening, said)
    };
    let (listening, said) = serve(&[]);
    assert!(!listening && said.contains("refusing to serve plaintext on 0.0.0.0"), "{said}");

    let (listening, said) = serve(&[("PORTCULLIS_TLS__ALLOW_PLAINTEXT", "true")]);
    assert!(!listening, "codes would go to the log of a server others reach");
    assert!(said.contains("mail.transport = \"log\""), "{said}");

    let (listening, said) =
        serve(&[("PORTCULLIS_TLS__ALLOW_PLAINTEXT", "true"), ("PORTCULLIS_MAIL__ALLOW_LOG", "true")]);
    assert!(listening, "with tls.allow_plaintext and mail.allow_log the server starts: {said}");

    // /metrics has no authentication: off loopback only when the operator says so.
    let allowed = [("PORTCULLIS_TLS__ALLOW_PLAINTEXT", "true"), ("PORTCULLIS_MAIL__ALLOW_LOG", "true")];
    let remote_metrics = [allowed[0], allowed[1], ("PORTCULLIS_METRICS__LISTEN", "0.0.0.0:0")];
    let (listening, said) = serve(&remote_metrics);
    assert!(!listening && said.contains("refusing to serve /metrics on 0.0.0.0"), "{said}");
    let (listening, said) =
        serve(&[remote_metrics[0], remote_metrics[1], remote_metrics[2], ("PORTCULLIS_METRICS__ALLOW_REMOTE", "true")]);
    assert!(listening, "with metrics.allow_remote the server starts: {said}");
}
