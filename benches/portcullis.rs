//! `cargo bench`: starts the real server binary (release build) on a temporary SQLite database
//! (or PostgreSQL: PORTCULLIS_BENCH_DATABASE_URL) and prints figures, each beside its target
//! from the performance issue, ending with one `ID VALUE UNIT target OP GOAL met|short` line per
//! target (scripts/bench.sh takes the median of three runs):
//! - P1 GetSession requests/s as a share of the same server's `grpc.health.v1.Health/Check`;
//! - P2 StartSession → ACTIVE throughput and p99 at 64 clients (1 and 16 are printed too);
//! - P3a one change → its only watcher while 10,000 streams watch other sessions;
//! - P3b one change → the last of 10,000 watchers of one session;
//! - P3c server RSS per idle WatchSession stream;
//! - P4 50 sessions on each of 20 AWS security groups (1,000 sessions, 20 users) started within a
//!   second, against moto (PORTCULLIS_BENCH_MOTO_URL; scripts/bench.sh starts it) behind the
//!   tests' proxy, which refuses calls beyond EC2's request buckets (burst 50, 5/s per mutating
//!   API) as EC2 does;
//! - P5 5,000 sessions expiring within one minute: each rule's removal after its session's
//!   `expires_at` (p99), and revoke calls per resource per expiry batch (counted from the memory
//!   provider's log line for each call);
//! - P6 (PostgreSQL only) three replicas on one database, 10,000 sessions on 200 moto security
//!   groups started across them and watched on another replica, one replica killed -9 midway:
//!   duplicate Authorize calls for one (group, address), sessions settled, each change's delay to
//!   its watcher (p99), and how soon the killed replica's claimed rules were applied by the others.
//!
//! Figures only: nothing here asserts a speed.

use futures::StreamExt;
#[cfg(feature = "aws")]
use portcullis::pb::v1::auth_service_client::AuthServiceClient;
use portcullis::pb::v1::organization_service_client::OrganizationServiceClient;
use portcullis::pb::v1::resource_service_client::ResourceServiceClient;
use portcullis::pb::v1::session_service_client::SessionServiceClient;
use portcullis::pb::v1::user_service_client::UserServiceClient;
use portcullis::pb::v1::*;
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

// moto and the metering proxy of the AWS tests.
#[cfg(feature = "aws")]
#[allow(dead_code)]
#[path = "../tests/it/common/moto.rs"]
mod moto;

/// One measured figure and its target.
struct Figure {
    id: &'static str,
    value: f64,
    unit: &'static str,
    /// true: the value must be at least the target; false: at most.
    at_least: bool,
    target: f64,
}

impl Figure {
    fn line(&self) -> String {
        let (op, met) =
            if self.at_least { (">=", self.value >= self.target) } else { ("<=", self.value <= self.target) };
        format!(
            "{} {:.1} {} target {op} {} {}",
            self.id,
            self.value,
            self.unit,
            self.target,
            if met { "met" } else { "short" }
        )
    }
}

type Figures = Vec<Figure>;

fn main() {
    // `cargo test --all-targets` runs bench binaries too: only measure under `cargo bench`.
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("portcullis bench: run with `cargo bench`");
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(run());
}

struct Server {
    child: Child,
    address: String,
    key: String,
    /// The platform operator's key (tiers are the operator's to set).
    operator_key: String,
    /// Revoke calls the memory provider logged, by resource id.
    revokes: Arc<Mutex<HashMap<String, u32>>>,
    /// The login codes the server logged (mail.transport = log), by email.
    #[cfg_attr(not(feature = "aws"), allow(dead_code))]
    codes: Arc<Mutex<HashMap<String, String>>>,
    /// The engine's id, which starts the holder of each lease it takes.
    #[cfg_attr(not(feature = "aws"), allow(dead_code))]
    owner: Arc<Mutex<Option<String>>>,
    _dir: Arc<tempfile::TempDir>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server binary with the bench's settings, on `database_url`, run in `dir`.
fn server_command(dir: &std::path::Path, database_url: &str, args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .current_dir(dir)
        .env("PORTCULLIS_DATABASE_URL", database_url)
        // 10,000 watchers share one key here; a server's default allows a caller 100.
        .env("PORTCULLIS_LIMITS__MAX_WATCH_STREAMS_PER_CALLER", "100000")
        .env("PORTCULLIS_LIMITS__MAX_WATCH_STREAMS_PER_USER", "100000")
        // P4 and P6 log in hundreds of users from one address.
        .env("PORTCULLIS_LOGIN__STARTS_PER_IP_PER_HOUR", "100000")
        .env("PORTCULLIS_LOGIN__VERIFIES_PER_IP_PER_HOUR", "100000")
        // P4's and P6's groups are on moto, behind a proxy on loopback.
        .env("PORTCULLIS_PROVIDERS__ALLOWED_ENDPOINTS", r#"["http://127.0.0.1:*"]"#)
        .env("RUST_LOG", "warn,portcullis=info,portcullis::provider::memory=debug");
    command
}

/// A new database at `database_url`: its admin's API key and an operator key.
fn init_database(dir: &std::path::Path, database_url: &str) -> (String, String) {
    let run = |args: &[&str]| {
        let output = server_command(dir, database_url, args).output().expect("run the server binary");
        assert!(output.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    };
    (run(&["init", "--admin-email", "bench@example.com"]), run(&["operator-key", "--name", "bench"]))
}

async fn start_server() -> Server {
    let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
    let database_url = match std::env::var("PORTCULLIS_BENCH_DATABASE_URL") {
        Ok(postgres) => fresh_postgres_database(&postgres).await,
        Err(_) => format!("sqlite://{}?mode=rwc", dir.path().join("bench.db").display()),
    };
    let (key, operator_key) = init_database(dir.path(), &database_url);
    let server = serve(dir, &database_url, key, operator_key, &[]);
    println!(
        "server: {BIN} on {}, database {}",
        server.address,
        if database_url.starts_with("sqlite") { "SQLite" } else { "PostgreSQL" }
    );
    server
}

/// Starts `serve` on an initialized database, with `env` on top of the bench's settings.
fn serve(
    dir: Arc<tempfile::TempDir>,
    database_url: &str,
    key: String,
    operator_key: String,
    env: &[(&str, &str)],
) -> Server {
    let mut child = server_command(dir.path(), database_url, &["serve", "--listen", "127.0.0.1:0"])
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let field = |line: &str, name: &str| {
        line.split(name).nth(1).and_then(|rest| rest.split_whitespace().next()).map(str::to_owned)
    };
    let address = loop {
        let line = lines.next().expect("server exited").expect("log line");
        if let Some(address) = field(&line, "address=") {
            break address;
        }
    };
    let revokes = Arc::new(Mutex::new(HashMap::new()));
    let codes = Arc::new(Mutex::new(HashMap::new()));
    let owner = Arc::new(Mutex::new(None));
    let (counted, mailed, engine) = (revokes.clone(), codes.clone(), owner.clone());
    // PORTCULLIS_BENCH_LOGS=<dir> keeps each server's log there, to see what a figure hides.
    let mut kept = std::env::var_os("PORTCULLIS_BENCH_LOGS").map(|logs| {
        let path = std::path::Path::new(&logs).join(format!("server-{}.log", child.id()));
        std::io::LineWriter::new(std::fs::File::create(path).expect("create the server log"))
    });
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if let Some(kept) = kept.as_mut() {
                let _ = writeln!(kept, "{line}");
            }
            if let (Some(email), Some(code)) =
                (field(&line, "email="), line.split("login code: ").nth(1).and_then(|rest| rest.get(..6)))
            {
                mailed.lock().expect("codes").insert(email, code.to_owned());
            }
            if line.contains("engine started") {
                *engine.lock().expect("owner") = field(&line, "owner=");
            }
            if line.contains("memory firewall revoke")
                && let Some(resource) = field(&line, "resource_id=")
            {
                *counted.lock().expect("counts").entry(resource).or_insert(0) += 1;
            }
        }
    });
    Server { child, address, key, operator_key, revokes, codes, owner, _dir: dir }
}

#[cfg(feature = "aws")]
fn bearer<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("ascii"));
    request
}

fn authed<T>(message: T, key: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("x-api-key", key.parse().expect("ascii"));
    request
}

async fn channel(address: &str) -> Channel {
    Channel::from_shared(format!("http://{address}")).expect("uri").connect().await.expect("connect")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// A unique benchmark address (198.18.0.0/15 is reserved for benchmarks).
fn address(n: u32) -> String {
    format!("198.{}.{}.{}", 18 + (n >> 16) % 2, (n >> 8) & 0xff, n & 0xff)
}

/// The bench admin's user.
async fn admin(server: &Server, channel: &Channel) -> User {
    let me = UserServiceClient::new(channel.clone())
        .get_current_user(authed(GetCurrentUserRequest {}, &server.key))
        .await
        .expect("me");
    me.into_inner().user.expect("user")
}

/// Raises the bench organization to the enterprise tier (the most sessions per user).
async fn enterprise(server: &Server, channel: &Channel, organization_id: String) {
    let enterprise = UpdateOrganizationRequest {
        organization: Some(Organization { id: organization_id, tier: Tier::Enterprise.into(), ..Default::default() }),
        update_mask: Some(prost_types::FieldMask { paths: vec!["tier".into()] }),
    };
    let mut organizations = OrganizationServiceClient::new(channel.clone());
    organizations.update_organization(authed(enterprise, &server.operator_key)).await.expect("tier");
}

async fn setup(server: &Server) {
    let channel = channel(&server.address).await;
    let key = &server.key;
    let me = admin(server, &channel).await;
    let (user_id, organization_id) = (me.id, me.organization_id);
    let resource = Resource {
        name: "bench".into(),
        provider: Some(resource::Provider::Memory(MemoryProvider::default())),
        ..Default::default()
    };
    let mut resources = ResourceServiceClient::new(channel.clone());
    let created = resources
        .create_resource(authed(CreateResourceRequest { resource: Some(resource) }, key))
        .await
        .expect("resource");
    let resource_id = created.into_inner().resource.expect("resource").id;
    resources.assign_resource(authed(AssignResourceRequest { resource_id, user_id }, key)).await.expect("assign");
    enterprise(server, &channel, organization_id).await;
}

async fn bench_start(server: &Server, counter: &Arc<AtomicU32>, figures: &mut Figures) {
    println!("\n## StartSession → ACTIVE (memory provider)");
    println!("{:>8} {:>10} {:>12} {:>12} {:>12}", "clients", "sessions", "sessions/s", "p50", "p99");
    let channels: Vec<Channel> = futures::future::join_all((0..4).map(|_| channel(&server.address))).await;
    for clients in [1usize, 16, 64] {
        let per_client = (2000 / clients).max(20);
        let began = Instant::now();
        let tasks = (0..clients).map(|c| {
            let mut client = SessionServiceClient::new(channels[c % channels.len()].clone());
            let key = server.key.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(per_client);
                for _ in 0..per_client {
                    let began = Instant::now();
                    active_session(&mut client, &key, &counter).await;
                    latencies.push(began.elapsed());
                }
                latencies
            })
        });
        let mut latencies: Vec<Duration> =
            futures::future::join_all(tasks).await.into_iter().flat_map(|r| r.expect("client task")).collect();
        let elapsed = began.elapsed();
        latencies.sort();
        let throughput = latencies.len() as f64 / elapsed.as_secs_f64();
        println!(
            "{clients:>8} {:>10} {throughput:>12.0} {:>12} {:>12}",
            latencies.len(),
            ms(percentile(&latencies, 0.5)),
            ms(percentile(&latencies, 0.99))
        );
        if clients == 64 {
            // PostgreSQL has a target of its own (and figures of its own in scripts/bench.sh's table).
            let postgres = std::env::var("PORTCULLIS_BENCH_DATABASE_URL").is_ok();
            let (id, p99_id, target) = if postgres { ("P2-pg", "P2-pg-p99", 1000.0) } else { ("P2", "P2-p99", 2000.0) };
            figures.push(Figure { id, value: throughput, unit: "sessions/s", at_least: true, target });
            let p99 = percentile(&latencies, 0.99).as_secs_f64() * 1000.0;
            figures.push(Figure { id: p99_id, value: p99, unit: "ms", at_least: false, target: 50.0 });
        }
    }
}

fn server_rss_kib(server: &Server) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.child.id())).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// How many changes a watch part measures: `default`, or more from `variable` for a window long
/// enough to profile (each change extends the session a minute, so at most about 1,400 fit in a
/// session's 24 hours).
fn changes_to_measure(variable: &str, default: usize) -> usize {
    std::env::var(variable).ok().and_then(|n| n.parse().ok()).unwrap_or(default)
}

/// CPU seconds (user and system) that process `pid` has used so far.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command's closing parenthesis: utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let ticks: f64 = [11, 12].iter().filter_map(|&i| fields.get(i)?.parse::<f64>().ok()).sum();
    // USER_HZ is 100 on Linux.
    ticks / 100.0
}

/// Starts a session for a unique address and answers its id once it is ACTIVE.
async fn active_session(client: &mut SessionServiceClient<Channel>, key: &str, counter: &AtomicU32) -> String {
    let request = StartSessionRequest {
        ipv4_address: Some(address(counter.fetch_add(1, Ordering::Relaxed))),
        duration_hours: Some(1),
        ..Default::default()
    };
    let id = client.start_session(authed(request, key)).await.expect("start").into_inner().session.expect("s").id;
    let mut stream =
        client.watch_session(authed(WatchSessionRequest { id: id.clone() }, key)).await.expect("watch").into_inner();
    while let Some(message) = stream.message().await.expect("message") {
        let status = message.session.expect("session").status();
        if status == SessionStatus::Active {
            break;
        }
        assert!(status == SessionStatus::Pending, "unexpected {status:?}");
    }
    id
}

/// Open WatchSession streams; every message after the first is reported as (stream, revision,
/// when it arrived).
struct Watchers {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    received: tokio::sync::mpsc::UnboundedReceiver<(usize, u64, Instant)>,
    /// How long each change's ExtendSession took to answer: the write path's share of a delivery.
    answered: Vec<Duration>,
}

impl Watchers {
    /// `per_session` streams on each of `ids`, 100 streams per connection as a fleet of clients
    /// would spread them; returns once every stream has its first message.
    async fn open(server: &Server, ids: &[String], per_session: usize) -> Watchers {
        let total = ids.len() * per_session;
        let connections: Vec<Channel> =
            futures::future::join_all((0..total.div_ceil(100)).map(|_| channel(&server.address))).await;
        let (sender, received) = tokio::sync::mpsc::unbounded_channel();
        let ready = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::with_capacity(total);
        for w in 0..total {
            let mut watcher = SessionServiceClient::new(connections[w / 100].clone());
            let request = authed(WatchSessionRequest { id: ids[w / per_session].clone() }, &server.key);
            let (sender, ready) = (sender.clone(), ready.clone());
            tasks.push(tokio::spawn(async move {
                let mut stream = watcher.watch_session(request).await.expect("watch").into_inner();
                let _first = stream.message().await;
                ready.fetch_add(1, Ordering::Relaxed);
                while let Ok(Some(message)) = stream.message().await {
                    let _ = sender.send((w, message.session.map_or(0, |s| s.revision), Instant::now()));
                }
            }));
        }
        while ready.load(Ordering::Relaxed) < total as u64 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Watchers { tasks, received, answered: Vec::new() }
    }

    /// Makes `changes` changes (ExtendSession) of `id`, one at a time; for each, the time until
    /// each of `expected` streams had it (the last one's time first).
    async fn deliveries(
        &mut self,
        client: &mut SessionServiceClient<Channel>,
        key: &str,
        id: &str,
        changes: usize,
        expected: usize,
    ) -> Vec<Vec<Duration>> {
        let mut all = Vec::with_capacity(changes);
        for _ in 0..changes {
            let sent = Instant::now();
            let request = ExtendSessionRequest { id: id.to_owned(), additional_hours: 0, additional_minutes: 1 };
            let revision = client
                .extend_session(authed(request, key))
                .await
                .expect("extend")
                .into_inner()
                .session
                .expect("s")
                .revision;
            self.answered.push(sent.elapsed());
            let mut times = Vec::with_capacity(expected);
            while times.len() < expected {
                match tokio::time::timeout(Duration::from_secs(30), self.received.recv()).await {
                    Ok(Some((_, seen, at))) if seen >= revision => times.push(at - sent),
                    Ok(Some(_)) => {}
                    _ => break,
                }
            }
            times.sort();
            times.reverse();
            all.push(times);
        }
        all
    }
}

impl Drop for Watchers {
    fn drop(&mut self) {
        self.tasks.iter().for_each(|task| task.abort());
    }
}

async fn bench_watch(server: &Server, counter: &Arc<AtomicU32>, figures: &mut Figures) {
    let mut client = SessionServiceClient::new(channel(&server.address).await);
    let key = server.key.as_str();

    println!("\n## WatchSession: one change → its only watcher, beside 10,000 streams on 100 other sessions");
    let mut others = Vec::new();
    for _ in 0..100 {
        others.push(active_session(&mut client, key, counter).await);
    }
    let rss_before = server_rss_kib(server);
    let idle = Watchers::open(server, &others, 100).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let per_stream_kb = server_rss_kib(server).saturating_sub(rss_before) as f64 / 10_000.0;
    let watched = active_session(&mut client, key, counter).await;
    let mut only = Watchers::open(server, std::slice::from_ref(&watched), 1).await;
    let changes = changes_to_measure("PORTCULLIS_BENCH_P3A_CHANGES", 100);
    println!("measuring {changes} changes");
    let mut latencies: Vec<Duration> =
        only.deliveries(&mut client, key, &watched, changes, 1).await.into_iter().flatten().collect();
    latencies.sort();
    let p99 = percentile(&latencies, 0.99);
    println!("{:>9} samples, p50 {}, p99 {}", latencies.len(), ms(percentile(&latencies, 0.5)), ms(p99));
    // Where a delivery's time goes: the change's own write (ExtendSession answering) and the rest.
    only.answered.sort();
    println!(
        "          of which ExtendSession answering: p50 {}, p99 {}",
        ms(percentile(&only.answered, 0.5)),
        ms(percentile(&only.answered, 0.99))
    );
    println!("server RSS per idle stream (10,000 streams over 100 connections): {per_stream_kb:.1} KB");
    figures.push(Figure { id: "P3a", value: p99.as_secs_f64() * 1000.0, unit: "ms", at_least: false, target: 5.0 });
    figures.push(Figure { id: "P3c", value: per_stream_kb, unit: "KB", at_least: false, target: 16.0 });
    drop((idle, only));

    println!("\n## WatchSession: one change → all 10,000 watchers of one session");
    let shared = active_session(&mut client, key, counter).await;
    let mut crowd = Watchers::open(server, std::slice::from_ref(&shared), 10_000).await;
    // Who used the two cores meanwhile: the server, or the 10,000 watchers in this process.
    let server_pid = server.child.id().to_string();
    let (server_cpu, clients_cpu, began) = (cpu_seconds(&server_pid), cpu_seconds("self"), Instant::now());
    let changes = changes_to_measure("PORTCULLIS_BENCH_P3B_CHANGES", 20);
    println!("measuring {changes} changes");
    let deliveries = crowd.deliveries(&mut client, key, &shared, changes, 10_000).await;
    let wall = began.elapsed().as_secs_f64();
    println!(
        "over the changes' {wall:.2} s: server CPU {:.2} s, watchers' (this process) CPU {:.2} s, of {:.2} s the two cores had",
        cpu_seconds(&server_pid) - server_cpu,
        cpu_seconds("self") - clients_cpu,
        2.0 * wall
    );
    let mut last: Vec<Duration> = deliveries.iter().filter_map(|times| times.first().copied()).collect();
    let mut each: Vec<Duration> = deliveries.into_iter().flatten().collect();
    last.sort();
    each.sort();
    println!(
        "{} changes: every delivery p50 {}, p99 {}; last delivery p50 {}, p99 {}",
        last.len(),
        ms(percentile(&each, 0.5)),
        ms(percentile(&each, 0.99)),
        ms(percentile(&last, 0.5)),
        ms(percentile(&last, 0.99))
    );
    let p99_last = percentile(&last, 0.99).as_secs_f64() * 1000.0;
    figures.push(Figure { id: "P3b", value: p99_last, unit: "ms", at_least: false, target: 100.0 });
}

/// A new user of the bench's organization, logged in with the code the server logged; answers
/// their id and access token.
#[cfg(feature = "aws")]
async fn logged_in_user(server: &Server, channel: &Channel, email: &str) -> (String, String) {
    let user = User { email: email.to_owned(), role: Role::User.into(), ..Default::default() };
    let created = UserServiceClient::new(channel.clone())
        .create_user(authed(CreateUserRequest { user: Some(user) }, &server.key))
        .await
        .expect("create user");
    let user_id = created.into_inner().user.expect("user").id;
    let mut auth = AuthServiceClient::new(channel.clone());
    let request = StartLoginRequest { email: email.to_owned(), ..Default::default() };
    let code_id = auth.start_login(request).await.expect("start login").into_inner().verification_code_id;
    let code = loop {
        if let Some(code) = server.codes.lock().expect("codes").remove(email) {
            break code;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let verify = VerifyLoginRequest { verification_code_id: code_id, code };
    (user_id, auth.verify_login(verify).await.expect("verify login").into_inner().access_token)
}

/// Creates an AWS resource for `group_id` reached through `endpoint` and assigns it to `user_id`.
#[cfg(feature = "aws")]
async fn aws_resource(server: &Server, channel: &Channel, endpoint: &str, group_id: &str, user_id: &str) {
    let mut resources = ResourceServiceClient::new(channel.clone());
    let resource = Resource {
        name: format!("aws-{group_id}"),
        provider: Some(moto::resource_on_moto(endpoint, group_id)),
        ..Default::default()
    };
    let created = resources
        .create_resource(authed(CreateResourceRequest { resource: Some(resource) }, &server.key))
        .await
        .expect("aws resource");
    let resource_id = created.into_inner().resource.expect("resource").id;
    let assign = AssignResourceRequest { resource_id, user_id: user_id.to_owned() };
    resources.assign_resource(authed(assign, &server.key)).await.expect("assign");
}

/// Reads `ids` with the admin's key every `every` until each satisfies `reached`, or `patience`
/// runs out; answers those that did, as last read.
async fn wait_until(
    server: &Server,
    channel: &Channel,
    ids: &[String],
    reached: fn(&Session) -> bool,
    every: Duration,
    patience: Duration,
) -> Vec<Session> {
    let mut waiting = ids.to_vec();
    let mut done = Vec::with_capacity(ids.len());
    let give_up = Instant::now() + patience;
    while !waiting.is_empty() && Instant::now() < give_up {
        let fetched: Vec<Session> = futures::stream::iter(waiting.clone())
            .map(|id| {
                let mut client = SessionServiceClient::new(channel.clone());
                let request = authed(GetSessionRequest { id }, &server.key);
                async move { client.get_session(request).await.expect("get").into_inner().session.expect("session") }
            })
            .buffer_unordered(32)
            .collect()
            .await;
        let (ready, open): (Vec<Session>, Vec<Session>) = fetched.into_iter().partition(reached);
        done.extend(ready);
        waiting = open.into_iter().map(|s| s.id).collect();
        if !waiting.is_empty() {
            tokio::time::sleep(every).await;
        }
    }
    done
}

/// Waits until each of `ids` is no longer PENDING; answers those that are not. Polls seldom: the
/// polls' GetSessions would compete with the work measured, whose end is the rules' applied_at.
#[cfg(feature = "aws")]
async fn settled(server: &Server, channel: &Channel, ids: &[String], patience: Duration) -> Vec<Session> {
    let not_pending = |s: &Session| s.status() != SessionStatus::Pending;
    wait_until(server, channel, ids, not_pending, Duration::from_millis(250), patience).await
}

/// P4: 50 sessions on each of 20 security groups (each group assigned to a user of its own),
/// started within a second against moto behind a proxy that refuses what EC2's request buckets
/// would (burst 50, 5/s per mutating API; describe 100, 20/s).
#[cfg(feature = "aws")]
async fn bench_quota(server: &Server, counter: &Arc<AtomicU32>, figures: &mut Figures) {
    const GROUPS: usize = 20;
    const PER_GROUP: usize = 50;
    let Ok(moto_url) = std::env::var("PORTCULLIS_BENCH_MOTO_URL") else {
        println!("\n## P4 skipped: PORTCULLIS_BENCH_MOTO_URL is not set (scripts/bench.sh starts moto)");
        return;
    };
    println!("\n## {PER_GROUP} sessions on each of {GROUPS} AWS security groups, EC2's request buckets enforced");
    let rate = |burst, per_second| moto::Rate { burst, per_second };
    let proxy = moto::Ec2Proxy::with_quota(&moto_url, rate(50, 5.0), rate(100, 20.0)).await;
    let channel = channel(&server.address).await;
    let mut users = Vec::with_capacity(GROUPS);
    for n in 0..GROUPS {
        let run = counter.load(Ordering::Relaxed);
        users.push(logged_in_user(server, &channel, &format!("aws-{n}-{run}@bench.example")).await);
    }
    // One call's latency: a session alone on a group of its own, start to ACTIVE.
    let mut fresh_groups = moto::new_groups(&moto_url, GROUPS + 1);
    let solo_group = fresh_groups.pop().expect("a group");
    let (solo_user, solo_token) =
        logged_in_user(server, &channel, &format!("aws-solo-{}@bench.example", counter.load(Ordering::Relaxed))).await;
    aws_resource(server, &channel, &proxy.url, &solo_group, &solo_user).await;
    let began_at = now_seconds();
    let request = StartSessionRequest {
        ipv4_address: Some(address(counter.fetch_add(1, Ordering::Relaxed))),
        ..Default::default()
    };
    let solo = SessionServiceClient::new(channel.clone())
        .start_session(bearer(request, &solo_token))
        .await
        .expect("solo start")
        .into_inner()
        .session
        .expect("session");
    let solo = settled(server, &channel, &[solo.id], Duration::from_secs(30)).await;
    // Times end at the rules' own applied_at (the server's clock, on this machine), not when a
    // poll happened to see them.
    let one_call = Duration::from_secs_f64((last_applied(&solo) - began_at).max(0.0));

    let groups = fresh_groups;
    for ((user_id, _), group_id) in users.iter().zip(&groups) {
        aws_resource(server, &channel, &proxy.url, group_id, user_id).await;
    }
    let before = proxy.writes_by_group();
    let refused_before = proxy.refused_by_quota();
    let moto_before = proxy.upstream_busy();
    let (began, began_at) = (Instant::now(), now_seconds());
    let starts = (0..GROUPS * PER_GROUP).map(|n| {
        let mut client = SessionServiceClient::new(channel.clone());
        let token = users[n % GROUPS].1.clone();
        let ip = address(counter.fetch_add(1, Ordering::Relaxed));
        async move {
            let request = StartSessionRequest { ipv4_address: Some(ip), ..Default::default() };
            client.start_session(bearer(request, &token)).await.expect("start").into_inner().session.expect("s").id
        }
    });
    let ids: Vec<String> = futures::stream::iter(starts).buffer_unordered(64).collect().await;
    let started_in = began.elapsed();
    let sessions = settled(server, &channel, &ids, Duration::from_secs(120)).await;
    let wall = Duration::from_secs_f64((last_applied(&sessions) - began_at).max(0.0));

    let rules: Vec<&ResourceIp> = sessions.iter().flat_map(|s| &s.resource_ips).collect();
    let applied = rules.iter().filter(|r| r.status() == ResourceIpStatus::Applied).count();
    let failed = rules.iter().filter(|r| r.status() == ResourceIpStatus::Failed).count();
    let throttled_rules = rules.iter().filter(|r| r.error_message.contains("RequestLimitExceeded")).count();
    let after = proxy.writes_by_group();
    let writes: Vec<usize> =
        groups.iter().map(|g| after.get(g).copied().unwrap_or(0) - before.get(g).copied().unwrap_or(0)).collect();
    let total_writes: usize = writes.iter().sum();
    let refused = proxy.refused_by_quota() - refused_before;
    let moto_time = proxy.upstream_busy() - moto_before;
    print_moto_timeline(&proxy.calls(), began, wall);
    // The time EC2's bucket needs for the mutating calls made (burst 50, then 5/s), plus one call.
    let bucket_time = Duration::from_secs_f64(total_writes.saturating_sub(50) as f64 / 5.0);
    let bound = (bucket_time + one_call).mul_f64(1.2);
    println!(
        "started {} in {:.2} s; {} rules: {applied} APPLIED, {failed} FAILED, {throttled_rules} showing throttling; \
         {} still PENDING after 2 minutes",
        ids.len(),
        started_in.as_secs_f64(),
        rules.len(),
        ids.len() - sessions.len()
    );
    println!(
        "mutating calls per group {writes:?} ({total_writes} in all); refused by the buckets: {refused}; \
         one call alone {}; all ACTIVE after {} (bound 1.2 × ({} bucket + {} call) = {}); \
         moto busy with a call for {} of it",
        ms(one_call),
        ms(wall),
        ms(bucket_time),
        ms(one_call),
        ms(bound),
        ms(moto_time)
    );
    let complete = sessions.len() == ids.len() && applied == rules.len();
    figures.push(Figure {
        id: "P4-applied",
        value: if complete { applied as f64 } else { 0.0 },
        unit: "rules",
        at_least: true,
        target: (GROUPS * PER_GROUP) as f64,
    });
    figures.push(Figure {
        id: "P4-throttled",
        value: (refused + throttled_rules) as f64,
        unit: "refusals",
        at_least: false,
        target: 0.0,
    });
    let most = writes.iter().copied().max().unwrap_or(0);
    figures.push(Figure { id: "P4-calls", value: most as f64, unit: "calls/group", at_least: false, target: 2.0 });
    figures.push(Figure {
        id: "P4-wall",
        value: wall.as_secs_f64() / (bucket_time + one_call).as_secs_f64(),
        unit: "x(bucket+call)",
        at_least: false,
        target: 1.2,
    });
    // moto answers one call at a time (EC2 does not): the same bound with moto's busy time as the call time.
    figures.push(Figure {
        id: "P4-wall-moto",
        value: wall.as_secs_f64() / (bucket_time + moto_time).as_secs_f64(),
        unit: "x(bucket+moto)",
        at_least: false,
        target: 1.2,
    });
}

/// When the last rule of `sessions` was applied (seconds since the epoch; NaN if none was).
#[cfg(feature = "aws")]
fn last_applied(sessions: &[Session]) -> f64 {
    sessions.iter().flat_map(|s| &s.resource_ips).map(|rule| seconds(&rule.applied_at)).fold(f64::NAN, f64::max)
}

/// Where P4's wall time went: when moto had no call in hand, and when each round of the groups'
/// writes went out (times from the first start).
#[cfg(feature = "aws")]
fn print_moto_timeline(calls: &[moto::Call], began: Instant, wall: Duration) {
    let at = |instant: Instant| instant.saturating_duration_since(began).as_secs_f64();
    let mut calls: Vec<&moto::Call> = calls.iter().filter(|call| call.sent >= began).collect();
    calls.sort_by_key(|call| call.sent);
    let mut gaps = Vec::new();
    let mut free_since = began;
    for call in &calls {
        if call.sent > free_since {
            gaps.push((free_since, call.sent));
        }
        free_since = free_since.max(call.answered);
    }
    gaps.push((free_since, began + wall));
    let idle: f64 = gaps.iter().map(|(from, to)| to.saturating_duration_since(*from).as_secs_f64()).sum();
    let long: Vec<String> = gaps
        .iter()
        .filter(|(from, to)| to.saturating_duration_since(*from) >= Duration::from_millis(50))
        .map(|(from, to)| format!("{:.2}–{:.2}", at(*from), at(*to)))
        .collect();
    println!("moto idle {:.2} s in all; gaps of 50 ms or more at (s): {}", idle, long.join(", "));
    let mut rounds: Vec<Vec<f64>> = Vec::new();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for call in &calls {
        if let Some(group) = &call.group {
            let round = seen.entry(group).or_default();
            if rounds.len() <= *round {
                rounds.push(Vec::new());
            }
            rounds[*round].push(at(call.sent));
            *round += 1;
        }
    }
    for (n, sent) in rounds.iter().enumerate() {
        let (first, last) = sent.iter().fold((f64::MAX, 0.0_f64), |(lo, hi), t| (lo.min(*t), hi.max(*t)));
        println!("write {} of a group: {} sent between {first:.2} and {last:.2} s", n + 1, sent.len());
    }
}

/// A database of its own on the PostgreSQL server of `url` (same credentials), so every run
/// starts empty whatever the given database holds.
async fn fresh_postgres_database(url: &str) -> String {
    use sea_orm::ConnectionTrait;
    let name = format!(
        "portcullis_bench_{}_{}",
        std::process::id(),
        portcullis::domain::new_id().to_lowercase().replace(|c: char| !c.is_ascii_alphanumeric(), "_")
    );
    let db = sea_orm::Database::connect(url).await.expect("connect to PostgreSQL");
    db.execute_unprepared(&format!("CREATE DATABASE {name}")).await.expect("create the bench database");
    let (base, query) = url.split_once('?').map_or((url, None), |(base, query)| (base, Some(query)));
    let server = base.rsplit_once('/').map_or(base, |(server, _)| server);
    match query {
        Some(query) => format!("{server}/{name}?{query}"),
        None => format!("{server}/{name}"),
    }
}

/// Seconds since the epoch, now.
fn now_seconds() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs_f64()
}

/// What a watcher saw of a session until it left PENDING: the session then, and how long after
/// its last rule was applied the change reached the watcher (None when the first message already
/// showed it settled, or no rule was applied).
#[cfg(feature = "aws")]
struct Watched {
    session: Option<Session>,
    delay: Option<f64>,
}

#[cfg(feature = "aws")]
async fn watch_until_settled(mut client: SessionServiceClient<Channel>, id: String, key: String) -> Watched {
    let unseen = Watched { session: None, delay: None };
    let Ok(stream) = client.watch_session(authed(WatchSessionRequest { id }, &key)).await else { return unseen };
    let mut stream = stream.into_inner();
    let mut saw_pending = false;
    while let Ok(Some(message)) = stream.message().await {
        let received = now_seconds();
        let Some(session) = message.session else { continue };
        if session.status() == SessionStatus::Pending {
            saw_pending = true;
            continue;
        }
        let changed = session.resource_ips.iter().map(|rule| seconds(&rule.applied_at)).fold(f64::NAN, f64::max);
        let delay = (saw_pending && changed.is_finite()).then(|| (received - changed).max(0.0));
        return Watched { session: Some(session), delay };
    }
    unseen
}

/// The rules whose claims `owner`'s engine held (its lease holders start with its id).
#[cfg(feature = "aws")]
async fn claimed_by(db: &sea_orm::DatabaseConnection, owner: &str) -> Vec<String> {
    use sea_orm::{ConnectionTrait, DbBackend, Statement};
    let query = Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT id FROM resource_ips WHERE lease_owner LIKE $1",
        [format!("{owner}:%").into()],
    );
    let rows = db.query_all_raw(query).await.expect("read the claims");
    rows.iter().map(|row| row.try_get::<String>("", "id").expect("id")).collect()
}

/// How long after `killed_at` every one of `abandoned` was taken up by another engine (claimed
/// under another holder, or settled), polled every 100 ms for up to two minutes.
#[cfg(feature = "aws")]
async fn taken_over(db: sea_orm::DatabaseConnection, abandoned: Vec<String>, owner: String, killed_at: f64) -> f64 {
    use sea_orm::{ConnectionTrait, DbBackend, Statement};
    let placeholders: Vec<String> = (2..abandoned.len() + 2).map(|n| format!("${n}")).collect();
    let sql = format!(
        "SELECT count(*) AS waiting FROM resource_ips WHERE id IN ({}) AND status = 'PENDING' \
         AND (lease_owner IS NULL OR lease_owner LIKE $1)",
        placeholders.join(", ")
    );
    let values = std::iter::once(format!("{owner}:%")).chain(abandoned).map(sea_orm::Value::from);
    let query = Statement::from_sql_and_values(DbBackend::Postgres, sql, values);
    let give_up = Instant::now() + Duration::from_secs(120);
    while Instant::now() < give_up {
        let row = db.query_one_raw(query.clone()).await.expect("read the claims").expect("a count");
        if row.try_get::<i64>("", "waiting").expect("count") == 0 {
            return now_seconds() - killed_at;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    f64::INFINITY
}

/// P6: three replicas on one PostgreSQL database, `GROUPS` security groups on moto behind the
/// proxy (EC2's request buckets enforced, which the replicas share), `PER_GROUP` sessions on each,
/// started across the replicas and watched on another one; the third replica is killed -9 once
/// half the sessions are started and it holds claims on rules.
#[cfg(feature = "aws")]
async fn bench_replicas(counter: &Arc<AtomicU32>, figures: &mut Figures) {
    const REPLICAS: usize = 3;
    const GROUPS: usize = 200;
    const PER_GROUP: usize = 50;
    const SESSIONS: usize = GROUPS * PER_GROUP;
    let postgres = std::env::var("PORTCULLIS_BENCH_DATABASE_URL").ok().filter(|url| url.starts_with("postgres"));
    let (Ok(moto_url), Some(postgres)) = (std::env::var("PORTCULLIS_BENCH_MOTO_URL"), postgres) else {
        println!(
            "\n## P6 skipped: it needs PostgreSQL (PORTCULLIS_BENCH_DATABASE_URL) and moto \
             (PORTCULLIS_BENCH_MOTO_URL); scripts/bench.sh starts both"
        );
        return;
    };
    println!(
        "\n## {REPLICAS} replicas on one PostgreSQL: {SESSIONS} sessions on {GROUPS} AWS security groups, \
         one replica killed -9 midway"
    );
    let database_url = fresh_postgres_database(&postgres).await;
    let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
    let (key, operator_key) = init_database(dir.path(), &database_url);
    // The replicas share the account's request buckets: each paces itself to a third of them.
    // moto answers one call at a time and scans the region's every rule for each describe
    // (0.45-0.57 s at 9,000 rules on this 2-core machine, measured with boto3 after a run), so
    // the account's describe bucket is set to what moto keeps up with: at 5/s (or EC2's 20/s)
    // calls queue in moto past their 8 s deadline and are made again, and sessions never settle.
    let settings = [
        ("PORTCULLIS_PROVIDERS__QUOTA_SHARE", "0.33"),
        ("PORTCULLIS_PROVIDERS__AWS_QUOTA__DESCRIBE__BURST", "6"),
        ("PORTCULLIS_PROVIDERS__AWS_QUOTA__DESCRIBE__PER_SECOND", "1.8"),
    ];
    let mut replicas: Vec<Server> = (0..REPLICAS)
        .map(|_| serve(dir.clone(), &database_url, key.clone(), operator_key.clone(), &settings))
        .collect();
    let channels: Vec<Channel> = futures::future::join_all(replicas.iter().map(|r| channel(&r.address))).await;
    let organization_id = admin(&replicas[0], &channels[0]).await.organization_id;
    enterprise(&replicas[0], &channels[0], organization_id).await;
    let rate = |burst, per_second| moto::Rate { burst, per_second };
    let proxy = moto::Ec2Proxy::with_quota(&moto_url, rate(50, 5.0), rate(20, 5.0)).await;
    let groups = moto::new_groups(&moto_url, GROUPS);
    let run = counter.load(Ordering::Relaxed);
    // Each user logs in on one replica (its code is in that replica's log); the token is good on all.
    let users: Vec<(String, String)> = futures::stream::iter(0..GROUPS)
        .map(|n| {
            let (server, channel, group, proxy) =
                (&replicas[n % REPLICAS], &channels[n % REPLICAS], &groups[n], &proxy);
            async move {
                let user = logged_in_user(server, channel, &format!("p6-{n}-{run}@bench.example")).await;
                aws_resource(server, channel, &proxy.url, group, &user.0).await;
                user
            }
        })
        .buffered(8)
        .collect()
        .await;

    // Session n starts on replica n % `replicas` and is watched on one of the survivors, over
    // connections of their own (100 streams each), so watchers never queue the starts.
    let victim = REPLICAS - 1;
    let watch_channels: Vec<Channel> =
        futures::future::join_all((0..SESSIONS / 100).map(|c| channel(&replicas[c % victim].address))).await;
    let start = |n: usize, replicas: usize| {
        let mut client = SessionServiceClient::new(channels[n % replicas].clone());
        let watcher = SessionServiceClient::new(watch_channels[n / 100].clone());
        let (token, key) = (users[n % GROUPS].1.clone(), key.clone());
        let ip = address(counter.fetch_add(1, Ordering::Relaxed));
        async move {
            let request = StartSessionRequest { ipv4_address: Some(ip), ..Default::default() };
            let started = client.start_session(bearer(request, &token)).await.expect("start");
            let id = started.into_inner().session.expect("session").id;
            (id.clone(), tokio::spawn(watch_until_settled(watcher, id, key)))
        }
    };
    let began = Instant::now();
    let mut started: Vec<_> =
        futures::stream::iter(0..SESSIONS / 2).map(|n| start(n, REPLICAS)).buffer_unordered(64).collect().await;

    let db = sea_orm::Database::connect(&database_url).await.expect("connect to the bench database");
    let owner = replicas[victim].owner.lock().expect("owner").clone().expect("the victim's engine id");
    let give_up = Instant::now() + Duration::from_secs(30);
    while claimed_by(&db, &owner).await.is_empty() && Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let killed_at = now_seconds();
    let victim_server = &mut replicas[victim];
    victim_server.child.kill().expect("kill -9");
    victim_server.child.wait().expect("reap");
    // What it held when it died, and so left to the others.
    let abandoned: HashSet<String> = claimed_by(&db, &owner).await.into_iter().collect();
    let takeover = tokio::spawn(taken_over(db.clone(), abandoned.iter().cloned().collect(), owner, killed_at));
    started.extend(
        futures::stream::iter(SESSIONS / 2..SESSIONS)
            .map(|n| start(n, victim))
            .buffer_unordered(64)
            .collect::<Vec<_>>()
            .await,
    );
    let started_in = began.elapsed();

    let mut delays = Vec::new();
    let mut settled = HashMap::new();
    // One deadline for them all: sessions that never settle are counted, not waited for in turn.
    let patience = tokio::time::Instant::now() + Duration::from_secs(300);
    for (id, watch) in started {
        let watched = tokio::time::timeout_at(patience, watch).await.ok().and_then(Result::ok);
        if let Some(Watched { session: Some(session), delay }) = watched {
            delays.extend(delay);
            settled.insert(id, session);
        }
    }
    let wall = began.elapsed();
    let active = settled.values().filter(|s| s.status() == SessionStatus::Active).count();
    let rules: Vec<&ResourceIp> = settled.values().flat_map(|s| &s.resource_ips).collect();
    // When each rule the victim had claimed was finally applied, after the kill.
    let resumed: Vec<f64> = rules
        .iter()
        .filter(|rule| abandoned.contains(&rule.id))
        .map(|rule| seconds(&rule.applied_at) - killed_at)
        .collect();
    let finished_abandoned = resumed.iter().copied().fold(f64::NAN, f64::max);
    let authorized = proxy.authorized_by_address();
    let duplicates: usize = authorized.values().map(|calls| calls.saturating_sub(1)).sum();
    let mut delays: Vec<Duration> = delays.into_iter().map(Duration::from_secs_f64).collect();
    delays.sort();
    println!(
        "started {SESSIONS} in {:.2} s; {} settled ({active} ACTIVE) after {:.2} s; {} addresses opened, \
         {duplicates} opened more than once; {} calls refused by the buckets",
        started_in.as_secs_f64(),
        settled.len(),
        wall.as_secs_f64(),
        authorized.len(),
        proxy.refused_by_quota()
    );
    println!("calls through the proxy: {:?}", proxy.actions());
    let taken_over_in = if abandoned.is_empty() { f64::INFINITY } else { takeover.await.unwrap_or(f64::INFINITY) };
    println!(
        "killed replica {victim} holding {} claimed rules: all taken up by the others {taken_over_in:.2} s after the \
         kill, all applied after {finished_abandoned:.2} s ({} found among the settled sessions; they wait their turn \
         in the survivors' share of the request buckets)",
        abandoned.len(),
        resumed.len()
    );
    println!(
        "a change to its watcher on another replica or the same: p50 {} p99 {} ({} changes seen happen)",
        ms(percentile(&delays, 0.5)),
        ms(percentile(&delays, 0.99)),
        delays.len()
    );
    figures.push(Figure { id: "P6-duplicates", value: duplicates as f64, unit: "calls", at_least: false, target: 0.0 });
    figures.push(Figure {
        id: "P6-settled",
        value: active as f64,
        unit: "sessions",
        at_least: true,
        target: SESSIONS as f64,
    });
    let p99 = percentile(&delays, 0.99).as_secs_f64() * 1000.0;
    figures.push(Figure { id: "P6-watch-p99", value: p99, unit: "ms", at_least: false, target: 250.0 });
    figures.push(Figure { id: "P6-resume", value: taken_over_in, unit: "s", at_least: false, target: 15.0 });
}

/// Seconds since the epoch of a protobuf timestamp.
fn seconds(at: &Option<prost_types::Timestamp>) -> f64 {
    at.as_ref().map_or(f64::NAN, |at| at.seconds as f64 + f64::from(at.nanos) / 1e9)
}

/// P5: `SESSIONS` one-minute sessions, started as fast as 64 clients can, each on the bench
/// resource and three more (memory provider, 50 ms per call), all expiring within the same
/// minute. Once they have ended: how long after `expires_at` each rule was removed, and how many
/// revoke calls each resource took per expiry batch (sessions ended together share `ended_at`).
async fn bench_expiry(server: &Server, counter: &Arc<AtomicU32>, figures: &mut Figures) {
    const SESSIONS: usize = 5000;
    const CLIENTS: usize = 64;
    println!(
        "\n## Expiry burst: {SESSIONS} one-minute sessions, each on the bench resource and 3 more (50 ms per call)"
    );
    let channel = channel(&server.address).await;
    let key = server.key.clone();
    let me = admin(server, &channel).await;
    let mut resources = ResourceServiceClient::new(channel.clone());
    for n in 0..3 {
        let resource = Resource {
            name: format!("expiry-{n}"),
            provider: Some(resource::Provider::Memory(MemoryProvider { latency_ms: 50, ..Default::default() })),
            ..Default::default()
        };
        let created = resources
            .create_resource(authed(CreateResourceRequest { resource: Some(resource) }, &key))
            .await
            .expect("resource");
        let resource_id = created.into_inner().resource.expect("resource").id;
        let assign = AssignResourceRequest { resource_id, user_id: me.id.clone() };
        resources.assign_resource(authed(assign, &key)).await.expect("assign");
    }
    server.revokes.lock().expect("counts").clear();
    let began = Instant::now();
    let starts = (0..CLIENTS).map(|c| {
        let mut client = SessionServiceClient::new(channel.clone());
        let (key, counter) = (key.clone(), counter.clone());
        tokio::spawn(async move {
            let mut started = Vec::new();
            for _ in (c..SESSIONS).step_by(CLIENTS) {
                let request = StartSessionRequest {
                    ipv4_address: Some(address(counter.fetch_add(1, Ordering::Relaxed))),
                    duration_minutes: Some(1),
                    ..Default::default()
                };
                let session = client.start_session(authed(request, &key)).await.expect("start").into_inner();
                started.push(session.session.expect("session"));
            }
            started
        })
    });
    let started: Vec<Session> =
        futures::future::join_all(starts).await.into_iter().flat_map(|r| r.expect("start task")).collect();
    let first = started.iter().map(|s| seconds(&s.expires_at)).fold(f64::INFINITY, f64::min);
    let last = started.iter().map(|s| seconds(&s.expires_at)).fold(f64::NEG_INFINITY, f64::max);
    println!(
        "started {} in {:.1} s; they expire over {:.1} s",
        started.len(),
        began.elapsed().as_secs_f64(),
        last - first
    );

    tokio::time::sleep(Duration::from_secs_f64((last - now_seconds()).max(0.0) + 1.0)).await;
    let ids: Vec<String> = started.into_iter().map(|s| s.id).collect();
    // Read once a second, so the polling weighs little on the server while it works.
    let expired = |s: &Session| s.status() == SessionStatus::Expired;
    let ended = wait_until(server, &channel, &ids, expired, Duration::from_secs(1), Duration::from_secs(120)).await;
    let still_live = ids.len() - ended.len();
    let mut after: Vec<Duration> = ended
        .iter()
        .flat_map(|s| {
            let expires = seconds(&s.expires_at);
            s.resource_ips
                .iter()
                .map(move |rule| Duration::from_secs_f64((seconds(&rule.removed_at) - expires).max(0.0)))
        })
        .collect();
    after.sort();
    let batches: HashSet<(i64, i32)> =
        ended.iter().filter_map(|s| s.ended_at.as_ref().map(|at| (at.seconds, at.nanos))).collect();
    let revokes = server.revokes.lock().expect("counts").clone();
    let most = revokes.values().copied().max().unwrap_or(0);
    println!(
        "{} rules removed after expires_at: p50 {}, p99 {}, max {}; {} still live after 2 minutes",
        after.len(),
        ms(percentile(&after, 0.5)),
        ms(percentile(&after, 0.99)),
        ms(after.last().copied().unwrap_or_default()),
        still_live
    );
    println!(
        "{} expiry batches; revoke calls per resource: {:?} (at most {most})",
        batches.len(),
        revokes.values().collect::<Vec<_>>()
    );
    let p99 = if still_live == 0 { percentile(&after, 0.99).as_secs_f64() * 1000.0 } else { f64::INFINITY };
    figures.push(Figure { id: "P5", value: p99, unit: "ms", at_least: false, target: 5000.0 });
    let per_batch = f64::from(most) / batches.len().max(1) as f64;
    figures.push(Figure {
        id: "P5-calls",
        value: per_batch,
        unit: "calls/resource/batch",
        at_least: false,
        target: 1.0,
    });
}

/// Runs `call` from `clients` concurrent tasks for `duration`; returns calls per second.
async fn rps<F, Fut>(clients: usize, duration: Duration, call: F) -> f64
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + duration;
    let tasks = (0..clients).map(|c| {
        let call = call.clone();
        let done = done.clone();
        tokio::spawn(async move {
            while Instant::now() < deadline {
                call(c).await;
                done.fetch_add(1, Ordering::Relaxed);
            }
        })
    });
    futures::future::join_all(tasks).await;
    done.load(Ordering::Relaxed) as f64 / duration.as_secs_f64()
}

async fn bench_unary(server: &Server, counter: &Arc<AtomicU32>, figures: &mut Figures) {
    println!("\n## Unary requests/s on the same server (32 concurrent clients over 4 connections, 5 s each)");
    let mut client = SessionServiceClient::new(channel(&server.address).await);
    let id = active_session(&mut client, &server.key, counter).await;
    let channels: Vec<Channel> = futures::future::join_all((0..4).map(|_| channel(&server.address))).await;

    // The baseline: the cheapest call this server answers, through the same layers and connections.
    let health_channels = channels.clone();
    let health = rps(32, Duration::from_secs(5), move |c| {
        let mut health = tonic_health::pb::health_client::HealthClient::new(health_channels[c % 4].clone());
        async move {
            health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.expect("check");
        }
    })
    .await;
    let key = server.key.clone();
    let get = rps(32, Duration::from_secs(5), move |c| {
        let mut sessions = SessionServiceClient::new(channels[c % 4].clone());
        let request = authed(GetSessionRequest { id: id.clone() }, &key);
        async move {
            sessions.get_session(request).await.expect("get");
        }
    })
    .await;
    println!("{:<40} {:>10.0} req/s", "grpc.health.v1.Health/Check", health);
    println!("{:<40} {:>10.0} req/s", "GetSession (API key)", get);
    let ratio = 100.0 * get / health;
    println!("{:<40} {:>10.1} %", "ratio", ratio);
    figures.push(Figure { id: "P1", value: ratio, unit: "%", at_least: true, target: 60.0 });
}

async fn run() {
    let server = start_server().await;
    setup(&server).await;
    let counter = Arc::new(AtomicU32::new(1));
    let mut figures = Figures::new();
    // PORTCULLIS_BENCH_ONLY=P2 (or P1, P3, comma-separated) runs only those, while iterating.
    let only = std::env::var("PORTCULLIS_BENCH_ONLY").unwrap_or_default();
    let wanted = |id: &str| only.is_empty() || only.split(',').any(|part| part.trim() == id);
    if wanted("P1") {
        bench_unary(&server, &counter, &mut figures).await;
    }
    if wanted("P2") {
        bench_start(&server, &counter, &mut figures).await;
    }
    if wanted("P3") {
        bench_watch(&server, &counter, &mut figures).await;
    }
    #[cfg(feature = "aws")]
    if wanted("P4") {
        bench_quota(&server, &counter, &mut figures).await;
    }
    if wanted("P5") {
        bench_expiry(&server, &counter, &mut figures).await;
    }
    #[cfg(feature = "aws")]
    if wanted("P6") {
        bench_replicas(&counter, &mut figures).await;
    }
    println!("\n## Targets");
    figures.iter().for_each(|figure| println!("{}", figure.line()));
}
