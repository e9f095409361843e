//! moto's EC2 server for the AWS tests (`PORTCULLIS_TEST_MOTO_URL`, started by scripts/moto.sh),
//! an independent boto3 client to look at it, a proxy that counts, holds, throttles or meters the
//! calls as EC2's request buckets do, and a proxy that injects EC2's failures at random.

use portcullis::pb::v1 as pb;
use portcullis::provider::aws::RESOURCE_TAG;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering::SeqCst;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

pub const REGION: &str = "us-east-1";

/// moto's endpoint, or None (the test is skipped) when the suite runs without it.
pub fn moto() -> Option<String> {
    let url = std::env::var("PORTCULLIS_TEST_MOTO_URL").ok();
    if url.is_none() {
        eprintln!("skipped: PORTCULLIS_TEST_MOTO_URL is not set (scripts/test.sh starts moto)");
    }
    url
}

/// Runs tests/support/ec2.py, the independent boto3 client.
pub fn ec2(endpoint: &str, args: &[&str]) -> Value {
    let python = std::env::var("PORTCULLIS_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/ec2.py");
    let output = std::process::Command::new(python)
        .arg(script)
        .args([endpoint, REGION])
        .args(args)
        .output()
        .expect("run tests/support/ec2.py");
    assert!(output.status.success(), "ec2.py {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

pub fn new_group(endpoint: &str) -> String {
    new_groups(endpoint, 1).remove(0)
}

/// `count` new security groups, made in one run of the boto3 client.
pub fn new_groups(endpoint: &str, count: usize) -> Vec<String> {
    let names: Vec<String> = (0..count).map(|_| format!("portcullis-{}", portcullis::domain::new_id())).collect();
    let mut args = vec!["create-group"];
    args.extend(names.iter().map(String::as_str));
    let created = ec2(endpoint, &args);
    created["group_ids"].as_array().unwrap().iter().map(|id| id.as_str().unwrap().to_owned()).collect()
}

/// The group's ingress rules as boto3 sees them: (cidr, description, resource tag).
pub fn rules_in(endpoint: &str, group_id: &str) -> BTreeSet<(String, String, String)> {
    ec2(endpoint, &["rules", group_id])
        .as_array()
        .unwrap()
        .iter()
        .map(|rule| {
            let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
            (text(&rule["cidr"]), text(&rule["description"]), text(&rule["tags"][RESOURCE_TAG]))
        })
        .collect()
}

/// A ResourceService provider for `group_id` on moto: SSH.
pub fn resource_on_moto(endpoint: &str, group_id: &str) -> pb::resource::Provider {
    pb::resource::Provider::AwsSecurityGroup(pb::AwsSecurityGroup {
        region: REGION.into(),
        group_id: group_id.into(),
        protocol: "tcp".into(),
        from_port: 22,
        to_port: 22,
        endpoint_url: Some(endpoint.into()),
        ..Default::default()
    })
}

type HttpClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Full<bytes::Bytes>,
>;

fn http_client() -> HttpClient {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

/// Passes one call on to moto; None when moto did not answer.
async fn forward(
    client: &HttpClient,
    upstream: &str,
    parts: http::request::Parts,
    body: bytes::Bytes,
) -> Option<axum::response::Response> {
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut request = http::Request::builder().method(parts.method).uri(format!("{upstream}{path}"));
    for (name, value) in &parts.headers {
        if name != http::header::HOST {
            request = request.header(name, value);
        }
    }
    let answer = client.request(request.body(http_body_util::Full::new(body)).ok()?).await.ok()?;
    let (parts, body) = answer.into_parts();
    let collected = http_body_util::BodyExt::collect(body).await.ok()?;
    Some(axum::response::Response::from_parts(parts, axum::body::Body::from(collected.to_bytes())))
}

/// A loopback HTTP proxy to moto that counts the EC2 actions called and who signed them, can
/// hold every call for a delay before passing it on (so a test can kill the server while its EC2
/// calls are in flight), throttle the next calls, or enforce EC2's request buckets.
pub struct Ec2Proxy {
    pub url: String,
    relay: Arc<Relay>,
}

struct Relay {
    upstream_url: String,
    client: HttpClient,
    delay: Duration,
    actions: Arc<Mutex<BTreeMap<String, usize>>>,
    /// Mutating calls (every action but Describe*) by the security group they name.
    writes: Arc<Mutex<BTreeMap<String, usize>>>,
    /// AuthorizeSecurityGroupIngress calls that reached EC2, by the (security group, CIDR) they open.
    authorized: Arc<Mutex<BTreeMap<(String, String), usize>>>,
    /// Calls in moto's hands, since when, and how long it has had at least one, in all.
    upstream: Arc<Mutex<(usize, std::time::Instant, Duration)>>,
    /// Every call that reached moto, in the order it was answered.
    answered: Mutex<Vec<Call>>,
    access_keys: Arc<Mutex<BTreeSet<String>>>,
    throttle_next: Arc<std::sync::atomic::AtomicU32>,
    quota: Option<Arc<Quota>>,
}

/// EC2's request rate limiting as its documentation describes it: each API has a token bucket
/// of its own per account and region; a call that finds it empty is refused with
/// RequestLimitExceeded (written here independently of the server's own pacing).
struct Quota {
    mutating: Rate,
    describe: Rate,
    buckets: Mutex<BTreeMap<String, (f64, std::time::Instant)>>,
    refused: std::sync::atomic::AtomicUsize,
}

/// A call that reached moto: its action, the security group it wrote (none for a describe),
/// and when moto had it. Read by the benchmark (benches/portcullis.rs includes this file).
#[allow(dead_code)]
#[derive(Debug, Clone)]
pub struct Call {
    pub action: String,
    pub group: Option<String>,
    pub sent: std::time::Instant,
    pub answered: std::time::Instant,
}

/// A bucket's size: `burst` calls at once, then `per_second`.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    pub burst: u32,
    pub per_second: f64,
}

impl Quota {
    /// Takes a token of `action`'s bucket; false when it is empty.
    fn admit(&self, action: &str) -> bool {
        let rate = if action.starts_with("Describe") { self.describe } else { self.mutating };
        let mut buckets = self.buckets.lock().unwrap();
        let now = std::time::Instant::now();
        let (tokens, since) = buckets.entry(action.to_owned()).or_insert((f64::from(rate.burst), now));
        *tokens = (*tokens + now.duration_since(*since).as_secs_f64() * rate.per_second).min(f64::from(rate.burst));
        *since = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            self.refused.fetch_add(1, SeqCst);
            false
        }
    }
}

/// What EC2 answers a client that calls too fast.
fn throttled() -> axum::response::Response {
    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>RequestLimitExceeded</Code>\
                <Message>Request limit exceeded.</Message></Error></Errors><RequestID>1</RequestID></Response>";
    let mut response = axum::response::Response::new(axum::body::Body::from(body));
    *response.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/xml"));
    response
}

impl Ec2Proxy {
    pub async fn start(endpoint: &str, delay: Duration) -> Ec2Proxy {
        Ec2Proxy::serve(endpoint, delay, None).await
    }

    /// A proxy that enforces EC2's request buckets: `mutating` for each mutating API,
    /// `describe` for each Describe API.
    pub async fn with_quota(endpoint: &str, mutating: Rate, describe: Rate) -> Ec2Proxy {
        let quota = Quota { mutating, describe, buckets: Mutex::default(), refused: Default::default() };
        Ec2Proxy::serve(endpoint, Duration::ZERO, Some(Arc::new(quota))).await
    }

    async fn serve(endpoint: &str, delay: Duration, quota: Option<Arc<Quota>>) -> Ec2Proxy {
        let relay = Arc::new(Relay {
            upstream_url: endpoint.trim_end_matches('/').to_owned(),
            client: http_client(),
            delay,
            actions: Arc::default(),
            writes: Arc::default(),
            authorized: Arc::default(),
            upstream: Arc::new(Mutex::new((0, std::time::Instant::now(), Duration::ZERO))),
            answered: Mutex::default(),
            access_keys: Arc::default(),
            throttle_next: Arc::default(),
            quota,
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new().fallback(relay_call).with_state(relay.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Ec2Proxy { url, relay }
    }

    /// The next `count` calls answer 503 RequestLimitExceeded, as EC2 does under throttling.
    pub fn throttle_next(&self, count: u32) {
        self.relay.throttle_next.store(count, SeqCst);
    }

    /// How many times each EC2 action was called through the proxy.
    pub fn actions(&self) -> BTreeMap<String, usize> {
        self.relay.actions.lock().unwrap().clone()
    }

    /// The access key ids that signed the calls through the proxy.
    pub fn access_keys(&self) -> BTreeSet<String> {
        self.relay.access_keys.lock().unwrap().clone()
    }

    /// How many calls the request buckets refused.
    pub fn refused_by_quota(&self) -> usize {
        self.relay.quota.as_ref().map_or(0, |quota| quota.refused.load(SeqCst))
    }
}

/// What the benchmark reads (benches/portcullis.rs includes this file); the tests do not.
#[allow(dead_code)]
impl Ec2Proxy {
    /// How many mutating calls named each security group.
    pub fn writes_by_group(&self) -> BTreeMap<String, usize> {
        self.relay.writes.lock().unwrap().clone()
    }

    /// How many AuthorizeSecurityGroupIngress calls opened each (security group, CIDR).
    pub fn authorized_by_address(&self) -> BTreeMap<(String, String), usize> {
        self.relay.authorized.lock().unwrap().clone()
    }

    /// How long moto has had at least one call in hand.
    pub fn upstream_busy(&self) -> Duration {
        self.relay.upstream.lock().unwrap().2
    }

    /// The calls that reached moto, in the order they were answered.
    pub fn calls(&self) -> Vec<Call> {
        self.relay.answered.lock().unwrap().clone()
    }
}

async fn relay_call(
    axum::extract::State(relay): axum::extract::State<Arc<Relay>>,
    request: axum::extract::Request,
) -> axum::response::Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, usize::MAX).await else { return throttled() };
    if let Some(signed) = parts.headers.get(http::header::AUTHORIZATION) {
        record_signers(signed.as_bytes(), &relay.access_keys);
    }
    let action = form_value(&body, "Action");
    let mut opens = Vec::new();
    let mut written = None;
    if let Some(action) = &action {
        *relay.actions.lock().unwrap().entry(action.clone()).or_default() += 1;
        if !action.starts_with("Describe")
            && let Some(group) = form_value(&body, "GroupId")
        {
            written = Some(group.clone());
            if action == "AuthorizeSecurityGroupIngress" {
                let cidrs = form_values(&body, ".CidrIp").into_iter().chain(form_values(&body, ".CidrIpv6"));
                opens.extend(cidrs.map(|cidr| (group.clone(), cidr)));
            }
            *relay.writes.lock().unwrap().entry(group).or_default() += 1;
        }
    }
    if relay.throttle_next.fetch_update(SeqCst, SeqCst, |left| left.checked_sub(1)).is_ok() {
        return throttled();
    }
    if let (Some(quota), Some(action)) = (&relay.quota, &action)
        && !quota.admit(action)
    {
        return throttled();
    }
    // Only calls that reach EC2 can open anything: refused ones are not counted here.
    {
        let mut authorized = relay.authorized.lock().unwrap();
        opens.into_iter().for_each(|open| *authorized.entry(open).or_default() += 1);
    }
    tokio::time::sleep(relay.delay).await;
    let sent = std::time::Instant::now();
    {
        let mut upstream = relay.upstream.lock().unwrap();
        if upstream.0 == 0 {
            upstream.1 = sent;
        }
        upstream.0 += 1;
    }
    let answer = forward(&relay.client, &relay.upstream_url, parts, body).await;
    let call = Call { action: action.unwrap_or_default(), group: written, sent, answered: std::time::Instant::now() };
    relay.answered.lock().unwrap().push(call);
    let mut upstream = relay.upstream.lock().unwrap();
    upstream.0 -= 1;
    if upstream.0 == 0 {
        let held = upstream.1.elapsed();
        upstream.2 += held;
    }
    drop(upstream);
    answer.unwrap_or_else(throttled)
}

/// SigV4 names the signer in the Authorization header: `Credential=<access key id>/<scope>`.
fn record_signers(bytes: &[u8], signers: &Mutex<BTreeSet<String>>) {
    let text = String::from_utf8_lossy(bytes);
    for signed in text.split("Credential=").skip(1) {
        if let Some((key, _)) = signed.split_once('/') {
            signers.lock().unwrap().insert(key.to_owned());
        }
    }
}

/// A parameter of EC2's query protocol, sent as a form body: `Action=AuthorizeSecurityGroupIngress&GroupId=sg-…&…`.
fn form_value(body: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    text.split('&').find_map(|part| part.trim().strip_prefix(name)?.strip_prefix('=')).map(str::to_owned)
}

/// Every value of the parameters whose name ends with `suffix` (`IpPermissions.1.IpRanges.2.CidrIp=…`), decoded.
fn form_values(body: &[u8], suffix: &str) -> Vec<String> {
    let text = String::from_utf8_lossy(body);
    text.split('&')
        .filter_map(|part| part.trim().split_once('='))
        .filter(|(name, _)| name.ends_with(suffix))
        .map(|(_, value)| value.replace("%2F", "/").replace("%3A", ":"))
        .collect()
}

/// What [`FaultyEc2`] did to the calls through it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Injected {
    pub calls: usize,
    pub throttled: usize,
    /// Held past the caller's deadline before reaching moto.
    pub lost_requests: usize,
    /// Done by moto, the answer held past the caller's deadline: the worst case for a write.
    pub lost_answers: usize,
}

/// A loopback HTTP proxy to moto that fails calls at random the way EC2 and networks do:
/// `transient` of them answer 503 RequestLimitExceeded, `hang` of them are held for `hold` (past
/// the server's provider deadline), half before they reach moto, half after moto has done them.
pub struct FaultyEc2 {
    pub url: String,
    injected: Arc<Mutex<Injected>>,
}

#[derive(Clone)]
struct Faults {
    upstream: String,
    client: HttpClient,
    transient: f64,
    hang: f64,
    hold: Duration,
    injected: Arc<Mutex<Injected>>,
}

impl FaultyEc2 {
    pub async fn start(endpoint: &str, transient: f64, hang: f64, hold: Duration) -> FaultyEc2 {
        let injected: Arc<Mutex<Injected>> = Arc::default();
        let faults = Faults {
            upstream: endpoint.trim_end_matches('/').to_owned(),
            client: http_client(),
            transient,
            hang,
            hold,
            injected: injected.clone(),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new().fallback(faulty_call).with_state(faults);
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FaultyEc2 { url, injected }
    }

    pub fn injected(&self) -> Injected {
        *self.injected.lock().unwrap()
    }
}

async fn faulty_call(
    axum::extract::State(faults): axum::extract::State<Faults>,
    request: axum::extract::Request,
) -> axum::response::Response {
    use rand::Rng;
    let roll: f64 = rand::rng().random();
    let before: bool = rand::rng().random();
    let count = |bump: fn(&mut Injected)| bump(&mut faults.injected.lock().unwrap());
    count(|injected| injected.calls += 1);
    if roll < faults.transient {
        count(|injected| injected.throttled += 1);
        return throttled();
    }
    let hang = roll < faults.transient + faults.hang;
    if hang && before {
        count(|injected| injected.lost_requests += 1);
        tokio::time::sleep(faults.hold).await;
        return throttled();
    }
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else { return throttled() };
    let Some(answer) = forward(&faults.client, &faults.upstream, parts, bytes).await else { return throttled() };
    if hang {
        count(|injected| injected.lost_answers += 1);
        tokio::time::sleep(faults.hold).await;
    }
    answer
}
