//! Crash safety: the real server binary is killed with SIGKILL while rules are being applied
//! and again while they are being removed; restarted on the same database, it brings every
//! session to its correct final state and leaves no rule behind in the provider: the memory
//! provider (state file) and, with moto, AWS security groups.

use portcullis::pb::v1::resource_service_client::ResourceServiceClient;
use portcullis::pb::v1::session_service_client::SessionServiceClient;
use portcullis::pb::v1::user_service_client::UserServiceClient;
use portcullis::pb::v1::*;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tonic::transport::Channel;

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");
const SESSIONS: usize = 6;

fn portcullis(dir: &Path, database_url: &str) -> Command {
    let mut command = Command::new(BIN);
    command
        .current_dir(dir)
        .env("PORTCULLIS_DATABASE_URL", database_url)
        .env("PORTCULLIS_PROVIDERS__MEMORY_STATE_FILE", dir.join("memory-rules.json"))
        // Claims of the killed process expire quickly so the restarted one resumes them.
        .env("PORTCULLIS_ENGINE__LEASE_SECS", "2")
        .env("RUST_LOG", "info");
    command
}

/// Starts `serve` on a free port and returns the process and its address.
fn serve(dir: &Path, database_url: &str) -> (Child, String) {
    let mut child = portcullis(dir, database_url)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let address = loop {
        let line = lines.next().expect("server exited before listening").unwrap();
        if let Some(rest) = line.split("address=").nth(1) {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    // Keep draining the log so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines.by_ref() {});
    (child, address)
}

fn kill_hard(child: &mut Child) {
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}

fn memory_rules(dir: &Path) -> usize {
    let Ok(bytes) = std::fs::read(dir.join("memory-rules.json")) else { return 0 };
    let state: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    state["rules"]
        .as_object()
        .map_or(0, |resources| resources.values().map(|r| r.as_object().map_or(0, |m| m.len())).sum())
}

async fn channel(address: &str) -> Channel {
    Channel::from_shared(format!("http://{address}")).unwrap().connect().await.unwrap()
}

async fn statuses(address: &str, key: &str, ids: &[String]) -> Vec<SessionStatus> {
    let mut sessions = SessionServiceClient::new(channel(address).await);
    let mut out = Vec::new();
    for id in ids {
        let session = sessions.get_session(common::with_key(GetSessionRequest { id: id.clone() }, key)).await.unwrap();
        out.push(session.into_inner().session.unwrap().status());
    }
    out
}

/// Polls until every session is in `wanted` (bounded: 60 s).
async fn wait_for(address: &str, key: &str, ids: &[String], wanted: SessionStatus) {
    for _ in 0..300 {
        if statuses(address, key, ids).await.iter().all(|s| *s == wanted) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("sessions never all reached {wanted:?}: {:?}", statuses(address, key, ids).await);
}

/// Where the crash test opens its rules.
enum Firewall {
    /// The memory provider, slowed to 400 ms per call, mirrored to a state file.
    Memory,
    /// Security groups on moto, reached through a proxy that holds each call 400 ms.
    #[cfg(feature = "aws")]
    Moto { endpoint: String, proxy: common::moto::Ec2Proxy, groups: Vec<String> },
}

impl Firewall {
    /// The provider of the crash test's `index`th resource.
    #[cfg_attr(not(feature = "aws"), allow(unused_variables))]
    fn provider(&self, index: usize) -> resource::Provider {
        match self {
            Firewall::Memory => resource::Provider::Memory(MemoryProvider { latency_ms: 400, ..Default::default() }),
            #[cfg(feature = "aws")]
            Firewall::Moto { proxy, groups, .. } => common::moto::resource_on_moto(&proxy.url, &groups[index]),
        }
    }

    fn rules_left(&self, dir: &Path) -> usize {
        match self {
            Firewall::Memory => memory_rules(dir),
            #[cfg(feature = "aws")]
            Firewall::Moto { endpoint, groups, .. } => {
                groups.iter().map(|group| common::moto::rules_in(endpoint, group).len()).sum()
            }
        }
    }
}

#[tokio::test]
async fn sigkill_during_apply_and_remove_leaves_nothing_behind() {
    common::each_backend(|db: common::TestDb| async move { crash_and_recover(&db, &Firewall::Memory).await }).await;
}

#[cfg(feature = "aws")]
#[tokio::test]
async fn sigkill_with_aws_security_groups_leaves_nothing_behind() {
    let Some(endpoint) = common::moto::moto() else { return };
    common::each_backend(|db: common::TestDb| {
        let endpoint = endpoint.clone();
        async move {
            let proxy = common::moto::Ec2Proxy::start(&endpoint, Duration::from_millis(400)).await;
            let groups = vec![common::moto::new_group(&endpoint), common::moto::new_group(&endpoint)];
            crash_and_recover(&db, &Firewall::Moto { endpoint, proxy, groups }).await
        }
    })
    .await;
}

async fn crash_and_recover(db: &common::TestDb, firewall: &Firewall) {
    let database_url = db.url.as_str();
    let dir = tempfile::tempdir().unwrap();
    let init =
        portcullis(dir.path(), database_url).args(["init", "--admin-email", "admin@example.com"]).output().unwrap();
    assert!(init.status.success(), "{database_url}: {}", String::from_utf8_lossy(&init.stderr));
    let key = String::from_utf8(init.stdout).unwrap().trim().to_owned();

    let (mut server, address) = serve(dir.path(), database_url);
    let me = UserServiceClient::new(channel(&address).await)
        .get_current_user(common::with_key(GetCurrentUserRequest {}, &key))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    let mut resources = ResourceServiceClient::new(channel(&address).await);
    for (index, name) in ["slow-a", "slow-b"].into_iter().enumerate() {
        let resource = Resource { name: name.into(), provider: Some(firewall.provider(index)), ..Default::default() };
        let created = resources
            .create_resource(common::with_key(CreateResourceRequest { resource: Some(resource) }, &key))
            .await
            .unwrap();
        let id = created.into_inner().resource.unwrap().id;
        resources
            .assign_resource(common::with_key(AssignResourceRequest { resource_id: id, user_id: me.id.clone() }, &key))
            .await
            .unwrap();
    }
    let mut sessions = SessionServiceClient::new(channel(&address).await);
    let mut ids = Vec::new();
    for i in 0..SESSIONS {
        let request = StartSessionRequest { ipv4_address: Some(format!("203.0.113.{}", 20 + i)), ..Default::default() };
        ids.push(
            sessions.start_session(common::with_key(request, &key)).await.unwrap().into_inner().session.unwrap().id,
        );
    }

    // Killed while the provider calls are in flight.
    tokio::time::sleep(Duration::from_millis(250)).await;
    kill_hard(&mut server);

    let (mut server, address) = serve(dir.path(), database_url);
    wait_for(&address, &key, &ids, SessionStatus::Active).await;
    assert_eq!(firewall.rules_left(dir.path()), 2 * SESSIONS, "one rule per session per resource");

    let mut sessions = SessionServiceClient::new(channel(&address).await);
    for id in &ids {
        sessions.stop_session(common::with_key(StopSessionRequest { id: id.clone() }, &key)).await.unwrap();
    }
    // Killed while the removals are in flight.
    tokio::time::sleep(Duration::from_millis(250)).await;
    kill_hard(&mut server);

    let (mut server, address) = serve(dir.path(), database_url);
    wait_for(&address, &key, &ids, SessionStatus::Cancelled).await;
    assert_eq!(firewall.rules_left(dir.path()), 0, "no rule outlives its session");
    kill_hard(&mut server);
}
