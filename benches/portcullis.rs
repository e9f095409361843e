//! `cargo bench`: starts the real server binary (release build) on a temporary SQLite database
//! (or PostgreSQL: PORTCULLIS_BENCH_DATABASE_URL) and prints figures:
//! - StartSession → ACTIVE throughput and latency at 1, 16 and 64 concurrent clients;
//! - WatchSession change → client latency with 1, 1,000 and 10,000 watchers, and server RSS per idle stream;
//! - GetSession requests/s next to a bare tonic server (health Check) measured by the same client.
//!
//! Figures only: nothing here asserts a speed.

use portcullis::pb::v1::organization_service_client::OrganizationServiceClient;
use portcullis::pb::v1::resource_service_client::ResourceServiceClient;
use portcullis::pb::v1::session_service_client::SessionServiceClient;
use portcullis::pb::v1::user_service_client::UserServiceClient;
use portcullis::pb::v1::*;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

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
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server() -> Server {
    let dir = tempfile::tempdir().expect("temp dir");
    let database_url = std::env::var("PORTCULLIS_BENCH_DATABASE_URL")
        .unwrap_or_else(|_| format!("sqlite://{}?mode=rwc", dir.path().join("bench.db").display()));
    let command = |args: &[&str]| {
        let mut command = Command::new(BIN);
        command
            .args(args)
            .current_dir(dir.path())
            .env("PORTCULLIS_DATABASE_URL", &database_url)
            // 10,000 watchers share one key here; a server's default allows a caller 100.
            .env("PORTCULLIS_LIMITS__MAX_WATCH_STREAMS_PER_CALLER", "100000")
            .env("RUST_LOG", "warn,portcullis=info");
        command
    };
    let init = command(&["init", "--admin-email", "bench@example.com"]).output().expect("init");
    assert!(init.status.success(), "init failed: {}", String::from_utf8_lossy(&init.stderr));
    let key = String::from_utf8_lossy(&init.stdout).trim().to_owned();
    let mut child = command(&["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let address = loop {
        let line = lines.next().expect("server exited").expect("log line");
        if let Some(rest) = line.split("address=").nth(1) {
            break rest.split_whitespace().next().unwrap_or_default().to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines.by_ref() {});
    println!(
        "server: {BIN} on {address}, database {}",
        if database_url.starts_with("sqlite") { "SQLite" } else { "PostgreSQL" }
    );
    Server { child, address, key, _dir: dir }
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

async fn setup(server: &Server) {
    let channel = channel(&server.address).await;
    let key = &server.key;
    let me = UserServiceClient::new(channel.clone())
        .get_current_user(authed(GetCurrentUserRequest {}, key))
        .await
        .expect("me");
    let user_id = me.into_inner().user.expect("user").id;
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
    let enterprise = UpdateOrganizationRequest {
        organization: Some(Organization { tier: Tier::Enterprise.into(), ..Default::default() }),
        update_mask: Some(prost_types::FieldMask { paths: vec!["tier".into()] }),
    };
    OrganizationServiceClient::new(channel).update_organization(authed(enterprise, key)).await.expect("tier");
}

async fn start_and_wait_active(client: &mut SessionServiceClient<Channel>, key: &str, n: u32) -> Duration {
    let began = Instant::now();
    let request = StartSessionRequest {
        ipv4_address: Some(address(n)),
        duration_hours: Some(1),
        ipv6_address: None,
        duration_minutes: None,
        heartbeat_seconds: None,
    };
    let session =
        client.start_session(authed(request, key)).await.expect("start").into_inner().session.expect("session");
    let mut stream =
        client.watch_session(authed(WatchSessionRequest { id: session.id }, key)).await.expect("watch").into_inner();
    while let Some(message) = stream.message().await.expect("message") {
        let status = message.session.expect("session").status();
        if status == SessionStatus::Active {
            break;
        }
        assert!(status == SessionStatus::Pending, "unexpected {status:?}");
    }
    began.elapsed()
}

async fn bench_start(server: &Server, counter: &Arc<AtomicU32>) {
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
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    latencies.push(start_and_wait_active(&mut client, &key, n).await);
                }
                latencies
            })
        });
        let mut latencies: Vec<Duration> =
            futures::future::join_all(tasks).await.into_iter().flat_map(|r| r.expect("client task")).collect();
        let elapsed = began.elapsed();
        latencies.sort();
        println!(
            "{clients:>8} {:>10} {:>12.0} {:>12} {:>12}",
            latencies.len(),
            latencies.len() as f64 / elapsed.as_secs_f64(),
            ms(percentile(&latencies, 0.5)),
            ms(percentile(&latencies, 0.99))
        );
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

async fn bench_watch(server: &Server, counter: &Arc<AtomicU32>) {
    println!("\n## WatchSession: change → watcher latency (ExtendSession as the change)");
    println!("{:>9} {:>9} {:>12} {:>12} {:>16}", "watchers", "samples", "p50", "p99", "server RSS/idle");
    let control = channel(&server.address).await;
    for watchers in [1usize, 1_000, 10_000] {
        let mut client = SessionServiceClient::new(control.clone());
        let n = counter.fetch_add(1, Ordering::Relaxed);
        let request = StartSessionRequest {
            ipv4_address: Some(address(n)),
            duration_hours: Some(1),
            ipv6_address: None,
            duration_minutes: None,
            heartbeat_seconds: None,
        };
        let id = client
            .start_session(authed(request, &server.key))
            .await
            .expect("start")
            .into_inner()
            .session
            .expect("s")
            .id;
        start_watchers_until_active(&mut client, &server.key, &id).await;

        let rss_before = server_rss_kib(server);
        // ~100 streams per connection, as a fleet of clients would spread them.
        let connections: Vec<Channel> =
            futures::future::join_all((0..watchers.div_ceil(100)).map(|_| channel(&server.address))).await;
        let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel::<(u64, Instant)>();
        let ready = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for w in 0..watchers {
            let mut watcher = SessionServiceClient::new(connections[w / 100].clone());
            let request = authed(WatchSessionRequest { id: id.clone() }, &server.key);
            let sender = sender.clone();
            let ready = ready.clone();
            tasks.push(tokio::spawn(async move {
                let mut stream = watcher.watch_session(request).await.expect("watch").into_inner();
                let _first = stream.message().await;
                ready.fetch_add(1, Ordering::Relaxed);
                while let Ok(Some(message)) = stream.message().await {
                    let revision = message.session.map_or(0, |s| s.revision);
                    let _ = sender.send((revision, Instant::now()));
                }
            }));
        }
        drop(sender);
        while ready.load(Ordering::Relaxed) < watchers as u64 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let rss_per_stream = server_rss_kib(server).saturating_sub(rss_before) as f64 * 1024.0 / watchers as f64;

        let mut latencies = Vec::new();
        for _ in 0..20 {
            let sent = Instant::now();
            let extended = client
                .extend_session(authed(
                    ExtendSessionRequest { id: id.clone(), additional_hours: 1, additional_minutes: 0 },
                    &server.key,
                ))
                .await
                .expect("extend")
                .into_inner()
                .session
                .expect("session");
            let mut received = 0;
            while received < watchers {
                let Ok(Some((revision, at))) = tokio::time::timeout(Duration::from_secs(30), receiver.recv()).await
                else {
                    break;
                };
                if revision >= extended.revision {
                    latencies.push(at - sent);
                    received += 1;
                }
            }
        }
        latencies.sort();
        println!(
            "{watchers:>9} {:>9} {:>12} {:>12} {:>13.1} KB",
            latencies.len(),
            ms(percentile(&latencies, 0.5)),
            ms(percentile(&latencies, 0.99)),
            rss_per_stream / 1024.0
        );
        for task in tasks {
            task.abort();
        }
        client.stop_session(authed(StopSessionRequest { id }, &server.key)).await.expect("stop");
    }
}

async fn start_watchers_until_active(client: &mut SessionServiceClient<Channel>, key: &str, id: &str) {
    let mut stream =
        client.watch_session(authed(WatchSessionRequest { id: id.into() }, key)).await.expect("watch").into_inner();
    while let Some(message) = stream.message().await.expect("message") {
        if message.session.expect("session").status() == SessionStatus::Active {
            return;
        }
    }
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

async fn bench_unary(server: &Server, counter: &Arc<AtomicU32>) {
    println!("\n## Unary requests/s (32 concurrent clients over 4 connections, 5 s each)");
    let mut client = SessionServiceClient::new(channel(&server.address).await);
    let n = counter.fetch_add(1, Ordering::Relaxed);
    let request = StartSessionRequest {
        ipv4_address: Some(address(n)),
        duration_hours: Some(1),
        ipv6_address: None,
        duration_minutes: None,
        heartbeat_seconds: None,
    };
    let id =
        client.start_session(authed(request, &server.key)).await.expect("start").into_inner().session.expect("s").id;

    // A bare tonic server with only the health service, on its own runtime in this process.
    let hello_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    hello_listener.set_nonblocking(true).expect("nonblocking");
    let hello_address = hello_listener.local_addr().expect("addr").to_string();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
        runtime.block_on(async move {
            let (_reporter, health) = tonic_health::server::health_reporter();
            let listener = tokio::net::TcpListener::from_std(hello_listener).expect("listener");
            let _ = tonic::transport::Server::builder()
                .add_service(health)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await;
        });
    });
    let hello_channels: Vec<Channel> = futures::future::join_all((0..4).map(|_| channel(&hello_address))).await;
    let hello = rps(32, Duration::from_secs(5), move |c| {
        let mut health = tonic_health::pb::health_client::HealthClient::new(hello_channels[c % 4].clone());
        async move {
            health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.expect("check");
        }
    })
    .await;

    let channels: Vec<Channel> = futures::future::join_all((0..4).map(|_| channel(&server.address))).await;
    let key = server.key.clone();
    let get = rps(32, Duration::from_secs(5), move |c| {
        let mut sessions = SessionServiceClient::new(channels[c % 4].clone());
        let request = authed(GetSessionRequest { id: id.clone() }, &key);
        async move {
            sessions.get_session(request).await.expect("get");
        }
    })
    .await;
    println!("{:<40} {:>10.0} req/s", "tonic hello-world (health Check)", hello);
    println!("{:<40} {:>10.0} req/s", "portcullis GetSession (API key auth)", get);
    println!("{:<40} {:>10.1} %", "ratio", 100.0 * get / hello);
}

async fn run() {
    let server = start_server();
    setup(&server).await;
    let counter = Arc::new(AtomicU32::new(1));
    bench_start(&server, &counter).await;
    bench_watch(&server, &counter).await;
    bench_unary(&server, &counter).await;
}
