//! The `portcullis` binary: init, serve, graceful shutdown.

mod common;

use portcullis::pb::v1::resource_service_client::ResourceServiceClient;
use portcullis::pb::v1::session_service_client::SessionServiceClient;
use portcullis::pb::v1::user_service_client::UserServiceClient;
use portcullis::pb::v1::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

fn portcullis(dir: &std::path::Path, args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command.current_dir(dir).args(args).env("RUST_LOG", "info").env_remove("PORTCULLIS_DATABASE_URL");
    command
}

#[test]
fn init_prints_only_the_key_and_refuses_a_second_time() {
    let dir = tempfile::tempdir().unwrap();
    let output = portcullis(dir.path(), &["init", "--admin-email", "admin@example.com"]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "stdout: {stdout:?}");
    assert!(lines[0].starts_with("pcl_") && lines[0].len() == 50, "{stdout:?}");
    assert!(dir.path().join("portcullis.db").exists(), "the default database is ./portcullis.db");
    assert!(!String::from_utf8_lossy(&output.stderr).contains(lines[0]), "the key is not logged");

    let again = portcullis(dir.path(), &["init", "--admin-email", "other@example.com"]).output().unwrap();
    assert!(!again.status.success());
    assert!(again.stdout.is_empty());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already has an organization"));
}

#[test]
fn flags_override_environment_and_bad_config_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("portcullis.toml"), "listen = \"not an address\"\n").unwrap();
    let output = portcullis(dir.path(), &["migrate"]).output().unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("configuration"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    std::fs::write(dir.path().join("portcullis.toml"), "database_url = \"sqlite://from-file.db?mode=rwc\"\n").unwrap();
    let output = portcullis(dir.path(), &["migrate"])
        .env("PORTCULLIS_DATABASE_URL", "sqlite://from-env.db?mode=rwc")
        .arg("--database-url")
        .arg("sqlite://from-flag.db?mode=rwc")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(dir.path().join("from-flag.db").exists());
    assert!(!dir.path().join("from-env.db").exists());
    assert!(!dir.path().join("from-file.db").exists());
}

#[tokio::test]
async fn serve_answers_health_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let init = portcullis(dir.path(), &["init", "--admin-email", "admin@example.com"]).output().unwrap();
    let key = String::from_utf8(init.stdout).unwrap().trim().to_owned();
    let mut child = portcullis(dir.path(), &["serve", "--listen", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // The server logs the address it bound.
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let address = loop {
        let line = rx.recv_timeout(Duration::from_secs(30)).expect("server logs its address");
        if let Some(rest) = line.split("address=").nth(1) {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    let channel = tonic::transport::Channel::from_shared(format!("http://{address}")).unwrap().connect().await.unwrap();
    let mut health = HealthClient::new(channel.clone());
    let status = health.check(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner();
    assert_eq!(status.status(), ServingStatus::Serving);

    // An open WatchSession stream must not hold up the shutdown.
    let mut watch = open_watch(channel.clone(), &key).await;
    assert!(watch.message().await.unwrap().is_some(), "the first message arrives");

    let pid = i32::try_from(child.id()).unwrap();
    Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    // Changes may still arrive (the session turning ACTIVE); then the stream ends with a status.
    let ended = loop {
        match watch.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream ended without telling the watcher to reconnect"),
            Err(status) => break status,
        }
    };
    assert_eq!(ended.code(), tonic::Code::Unavailable, "watchers are told to reconnect");
    let exit = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert!(exit.success(), "graceful shutdown exits 0: {exit:?}");
    let logged: Vec<String> = rx.try_iter().collect();
    assert!(logged.iter().any(|l| l.contains("terminate received")), "{logged:?}");
}

/// Creates a memory resource, assigns it to the admin, starts a session and watches it.
async fn open_watch(channel: tonic::transport::Channel, key: &str) -> tonic::Streaming<WatchSessionResponse> {
    let me = UserServiceClient::new(channel.clone())
        .get_current_user(common::with_key(GetCurrentUserRequest {}, key))
        .await
        .unwrap();
    let user_id = me.into_inner().user.unwrap().id;
    let mut resources = ResourceServiceClient::new(channel.clone());
    let resource = Resource {
        name: "r".into(),
        provider: Some(resource::Provider::Memory(MemoryProvider::default())),
        ..Default::default()
    };
    let resource_id = resources
        .create_resource(common::with_key(CreateResourceRequest { resource: Some(resource) }, key))
        .await
        .unwrap()
        .into_inner()
        .resource
        .unwrap()
        .id;
    resources.assign_resource(common::with_key(AssignResourceRequest { resource_id, user_id }, key)).await.unwrap();
    let mut sessions = SessionServiceClient::new(channel);
    let start = StartSessionRequest { ipv4_address: Some("203.0.113.50".into()), ..Default::default() };
    let id = sessions.start_session(common::with_key(start, key)).await.unwrap().into_inner().session.unwrap().id;
    sessions.watch_session(common::with_key(WatchSessionRequest { id }, key)).await.unwrap().into_inner()
}
