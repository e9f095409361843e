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
    portcullis_with_lease(dir, database_url, 4, 2)
}

/// The server binary with the given claim lease and provider deadline.
fn portcullis_with_lease(dir: &Path, database_url: &str, lease_secs: u64, provider_timeout_secs: u64) -> Command {
    let mut command = Command::new(BIN);
    command
        .current_dir(dir)
        .env("PORTCULLIS_DATABASE_URL", database_url)
        .env("PORTCULLIS_PROVIDERS__MEMORY_STATE_FILE", dir.join("memory-rules.json"))
        // Claims of the killed process expire quickly so the restarted one resumes them.
        .env("PORTCULLIS_ENGINE__LEASE_SECS", lease_secs.to_string())
        .env("PORTCULLIS_ENGINE__PROVIDER_TIMEOUT_SECS", provider_timeout_secs.to_string())
        .env("RUST_LOG", "info");
    command
}

/// Starts `serve` on a free port and returns the process and its address.
fn serve(dir: &Path, database_url: &str) -> (Child, String) {
    serve_command(portcullis(dir, database_url))
}

fn serve_command(mut command: Command) -> (Child, String) {
    let mut child = command
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
    wait_for_within(address, key, ids, wanted, Duration::from_secs(60)).await
}

async fn wait_for_within(address: &str, key: &str, ids: &[String], wanted: SessionStatus, bound: Duration) {
    let deadline = tokio::time::Instant::now() + bound;
    while tokio::time::Instant::now() < deadline {
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

/// The hung call's injected latency: far beyond what any wait below allows.
const HUNG_MS: u32 = 60_000;

/// One resource's provider hangs (every call sleeps a minute). While that call is pending,
/// another user's session on a healthy resource still opens and closes, and SIGTERM still ends
/// the server by the provider deadline, the hung rule left PENDING for the next start.
#[tokio::test]
async fn a_hung_provider_delays_only_its_own_rules_and_shutdown() {
    let db = common::TestDb::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let command = || portcullis_with_lease(dir.path(), &db.url, 10, 5);
    let init = command().args(["init", "--admin-email", "admin@example.com"]).output().unwrap();
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    let admin_key = String::from_utf8(init.stdout).unwrap().trim().to_owned();
    let (mut server, address) = serve_command(command());

    let mut users = UserServiceClient::new(channel(&address).await);
    let admin = users.get_current_user(common::with_key(GetCurrentUserRequest {}, &admin_key)).await.unwrap();
    let admin_id = admin.into_inner().user.unwrap().id;
    let ada = User { email: "ada@example.com".into(), role: Role::User.into(), ..Default::default() };
    let ada = users.create_user(common::with_key(CreateUserRequest { user: Some(ada) }, &admin_key)).await.unwrap();
    let ada_id = ada.into_inner().user.unwrap().id;
    let ada_key = common::insert_api_key(&db.connect().await, &ada_id, portcullis::domain::Permission::ALL, None).await;

    let mut resources = ResourceServiceClient::new(channel(&address).await);
    let mut create = async |name: &str, latency_ms: u32, user_id: &str| {
        let provider = resource::Provider::Memory(MemoryProvider { latency_ms, ..Default::default() });
        let resource = Resource { name: name.into(), provider: Some(provider), ..Default::default() };
        let request = common::with_key(CreateResourceRequest { resource: Some(resource) }, &admin_key);
        let id = resources.create_resource(request).await.unwrap().into_inner().resource.unwrap().id;
        let assign = AssignResourceRequest { resource_id: id.clone(), user_id: user_id.into() };
        resources.assign_resource(common::with_key(assign, &admin_key)).await.unwrap();
        id
    };
    let hung = create("hung", HUNG_MS, &ada_id).await;
    create("healthy", 0, &admin_id).await;

    let mut sessions = SessionServiceClient::new(channel(&address).await);
    let mut start = async |key: &str, ip: &str| {
        let request = StartSessionRequest { ipv4_address: Some(ip.into()), ..Default::default() };
        sessions.start_session(common::with_key(request, key)).await.unwrap().into_inner().session.unwrap().id
    };
    let stuck = vec![start(&ada_key, "203.0.113.30").await];
    let healthy = vec![start(&admin_key, "203.0.113.31").await];

    let bound = Duration::from_secs(20);
    wait_for_within(&address, &admin_key, &healthy, SessionStatus::Active, bound).await;
    SessionServiceClient::new(channel(&address).await)
        .stop_session(common::with_key(StopSessionRequest { id: healthy[0].clone() }, &admin_key))
        .await
        .unwrap();
    wait_for_within(&address, &admin_key, &healthy, SessionStatus::Cancelled, bound).await;
    assert_eq!(statuses(&address, &ada_key, &stuck).await, [SessionStatus::Pending], "the hung rule is still pending");
    assert_eq!(memory_rules(dir.path()), 0, "the hung call never returned; the healthy rule is gone");

    // SIGTERM: the server stops within the provider deadline (5 s) and a margin, long before
    // the hung call would have returned.
    let signalled = std::time::Instant::now();
    assert!(Command::new("kill").args(["-TERM", &server.id().to_string()]).status().unwrap().success());
    let exit = loop {
        if let Some(status) = server.try_wait().unwrap() {
            break status;
        }
        assert!(
            signalled.elapsed() < Duration::from_millis(u64::from(HUNG_MS) / 2),
            "SIGTERM waited for the hung call"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(exit.success(), "{exit:?}");
    assert_eq!(memory_rules(dir.path()), 0, "nothing was opened on the hung firewall");

    // The unfinished rule is picked up by the next start, once the firewall answers again.
    let (mut server, address) = serve_command(command());
    let fixed = Resource {
        id: hung,
        provider: Some(resource::Provider::Memory(MemoryProvider::default())),
        ..Default::default()
    };
    let update = UpdateResourceRequest { resource: Some(fixed), update_mask: Some(mask(&["provider"])) };
    ResourceServiceClient::new(channel(&address).await)
        .update_resource(common::with_key(update, &admin_key))
        .await
        .unwrap();
    wait_for(&address, &ada_key, &stuck, SessionStatus::Active).await;
    assert_eq!(memory_rules(dir.path()), 1);
    kill_hard(&mut server);
}

fn mask(paths: &[&str]) -> prost_types::FieldMask {
    prost_types::FieldMask { paths: paths.iter().map(|p| (*p).to_owned()).collect() }
}
