//! The `portcullis` binary: init, serve, graceful shutdown.

use crate::common;

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

/// A `portcullis serve` on a database `init` made in `dir`, and its log lines as they come.
struct Served {
    child: std::process::Child,
    log: std::sync::mpsc::Receiver<String>,
    key: String,
}

impl Served {
    fn start(dir: &std::path::Path, env: &[(&str, &str)]) -> Served {
        let init = portcullis(dir, &["init", "--admin-email", "admin@example.com"]).output().unwrap();
        let key = String::from_utf8(init.stdout).unwrap().trim().to_owned();
        let mut child = portcullis(dir, &["serve", "--listen", "127.0.0.1:0"])
            .envs(env.iter().copied())
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, log) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Served { child, log, key }
    }

    /// The address the first log line containing `message` names.
    fn logged_address(&self, message: &str) -> String {
        loop {
            let line = self.log.recv_timeout(Duration::from_secs(30)).expect("server logs its address");
            if line.contains(message)
                && let Some(rest) = line.split("address=").nth(1)
            {
                return rest.split_whitespace().next().unwrap().to_owned();
            }
        }
    }

    async fn channel(address: &str) -> tonic::transport::Channel {
        tonic::transport::Channel::from_shared(format!("http://{address}")).unwrap().connect().await.unwrap()
    }

    fn send_sigterm(&self) {
        let pid = i32::try_from(self.child.id()).unwrap();
        Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    }

    /// Sends SIGTERM and waits for a clean exit; answers what was logged meanwhile.
    async fn terminate(self) -> Vec<String> {
        self.send_sigterm();
        self.exited().await
    }

    /// Waits for a clean exit; answers what was logged meanwhile.
    async fn exited(mut self) -> Vec<String> {
        let exit = tokio::task::spawn_blocking(move || self.child.wait()).await.unwrap().unwrap();
        assert!(exit.success(), "graceful shutdown exits 0: {exit:?}");
        self.log.try_iter().collect()
    }
}

#[tokio::test]
async fn serve_answers_health_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(dir.path(), &[]);
    // The server logs the address it bound.
    let channel = Served::channel(&served.logged_address(": listening")).await;
    let mut health = HealthClient::new(channel.clone());
    let status = health.check(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner();
    assert_eq!(status.status(), ServingStatus::Serving);

    // An open WatchSession stream must not hold up the shutdown.
    let (mut watch, _) = open_watch(channel.clone(), &served.key).await;
    assert!(watch.message().await.unwrap().is_some(), "the first message arrives");

    served.send_sigterm();
    // Changes may still arrive (the session turning ACTIVE); then the stream ends with a status.
    let ended = loop {
        match watch.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream ended without telling the watcher to reconnect"),
            Err(status) => break status,
        }
    };
    assert_eq!(ended.code(), tonic::Code::Unavailable, "watchers are told to reconnect");
    let logged = served.exited().await;
    assert!(logged.iter().any(|l| l.contains("terminate received")), "{logged:?}");
}

/// The `/metrics` page of `address`.
async fn scrape(address: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut connection = tokio::net::TcpStream::connect(address).await.unwrap();
    connection.write_all(b"GET /metrics HTTP/1.0\r\nHost: portcullis\r\n\r\n").await.unwrap();
    let mut page = String::new();
    connection.read_to_string(&mut page).await.unwrap();
    assert!(page.starts_with("HTTP/1.0 200") || page.starts_with("HTTP/1.1 200"), "{page}");
    page
}

/// The value of the sample `name` with exactly `labels` on `page`; 0 when there is none.
fn sample(page: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let wanted: std::collections::BTreeSet<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    for line in page.lines().filter(|line| !line.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let (series_name, series_labels) = match series.split_once('{') {
            Some((series_name, rest)) => (series_name, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let have: std::collections::BTreeSet<String> =
            series_labels.split(',').filter(|label| !label.is_empty()).map(str::to_owned).collect();
        if series_name == name && have == wanted {
            return value.parse().unwrap();
        }
    }
    0.0
}

/// The counters of `/metrics` follow a session's life: the calls made, the rule applied then
/// removed, the session's status, the open stream.
#[tokio::test]
async fn metrics_follow_a_session_from_start_to_stop() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(
        dir.path(),
        &[("PORTCULLIS_METRICS__LISTEN", "127.0.0.1:0"), ("PORTCULLIS_METRICS__DATABASE_REFRESH_SECS", "0")],
    );
    let channel = Served::channel(&served.logged_address(": listening")).await;
    let metrics = served.logged_address("metrics listening");
    let before = scrape(&metrics).await;
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(sample(&before, "portcullis_build_info", &[("version", version)]), 1.0, "{before}");
    assert_eq!(sample(&before, "portcullis_sessions", &[("status", "ACTIVE")]), 0.0, "{before}");

    let (mut watch, session_id) = open_watch(channel.clone(), &served.key).await;
    while watch.message().await.unwrap().unwrap().session.unwrap().status() != SessionStatus::Active {}
    let mut sessions = SessionServiceClient::new(channel.clone());
    let unauthenticated = sessions.get_session(GetSessionRequest { id: session_id.clone() }).await.unwrap_err();
    assert_eq!(unauthenticated.code(), tonic::Code::Unauthenticated);
    let invalid = sessions.get_session(common::with_key(GetSessionRequest { id: String::new() }, &served.key)).await;
    assert_eq!(invalid.unwrap_err().code(), tonic::Code::InvalidArgument);

    let open = scrape(&metrics).await;
    let calls = |page: &str, method: &str, code: &str| {
        let labels = [("service", "portcullis.v1.SessionService"), ("method", method), ("code", code)];
        sample(page, "portcullis_grpc_requests_total", &labels)
    };
    assert_eq!(calls(&open, "StartSession", "OK"), 1.0, "{open}");
    assert_eq!(calls(&open, "GetSession", "UNAUTHENTICATED"), 1.0, "{open}");
    assert_eq!(calls(&open, "GetSession", "INVALID_ARGUMENT"), 1.0, "{open}");
    let timed = [("service", "portcullis.v1.SessionService"), ("method", "StartSession")];
    assert_eq!(sample(&open, "portcullis_grpc_request_duration_seconds_count", &timed), 1.0, "{open}");
    assert_eq!(sample(&open, "portcullis_sessions", &[("status", "ACTIVE")]), 1.0, "{open}");
    assert_eq!(sample(&open, "portcullis_rules", &[("status", "APPLIED")]), 1.0, "{open}");
    let outcome = |page: &str, outcome: &str| {
        sample(page, "portcullis_rule_outcomes_total", &[("provider", "memory"), ("outcome", outcome)])
    };
    assert_eq!(outcome(&open, "applied"), 1.0, "{open}");
    let apply_calls = [("provider", "memory"), ("operation", "apply")];
    assert_eq!(sample(&open, "portcullis_provider_call_duration_seconds_count", &apply_calls), 1.0, "{open}");
    assert_eq!(sample(&open, "portcullis_watch_streams", &[]), 1.0, "{open}");
    assert_eq!(sample(&open, "portcullis_due_rules", &[]), 0.0, "{open}");
    let connections = ["in_use", "idle"]
        .iter()
        .map(|state| sample(&open, "portcullis_db_connections", &[("pool", "writer"), ("state", state)]))
        .sum::<f64>();
    assert!(connections >= 1.0, "{open}");

    sessions.stop_session(common::with_key(StopSessionRequest { id: session_id }, &served.key)).await.unwrap();
    // The stream ends after the terminal state.
    while watch.message().await.unwrap().is_some() {}
    let stopped =
        common::eventually("the watch stream was never counted as gone", Duration::from_secs(5), async || {
            let scraped = scrape(&metrics).await;
            common::when(sample(&scraped, "portcullis_watch_streams", &[]) == 0.0, scraped)
        })
        .await;
    assert_eq!(sample(&stopped, "portcullis_watch_streams", &[]), 0.0, "{stopped}");
    assert_eq!(sample(&stopped, "portcullis_sessions", &[("status", "ACTIVE")]), 0.0, "{stopped}");
    assert_eq!(sample(&stopped, "portcullis_sessions", &[("status", "CANCELLED")]), 1.0, "{stopped}");
    assert_eq!(sample(&stopped, "portcullis_rules", &[("status", "APPLIED")]), 0.0, "{stopped}");
    assert_eq!(outcome(&stopped, "removed"), 1.0, "{stopped}");
    assert_eq!(calls(&stopped, "StopSession", "OK"), 1.0, "{stopped}");
    served.terminate().await;
}

/// Creates a memory resource, assigns it to the admin, starts a session and watches it; answers
/// the stream and the session's id.
async fn open_watch(channel: tonic::transport::Channel, key: &str) -> (tonic::Streaming<WatchSessionResponse>, String) {
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
    let watch = sessions.watch_session(common::with_key(WatchSessionRequest { id: id.clone() }, key)).await.unwrap();
    (watch.into_inner(), id)
}
