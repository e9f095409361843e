//! moto's EC2 server for the AWS tests (`PORTCULLIS_TEST_MOTO_URL`, started by scripts/moto.sh),
//! an independent boto3 client to look at it, a proxy that holds calls in flight and counts them,
//! and a proxy that injects EC2's failures at random.

use portcullis::pb::v1 as pb;
use portcullis::provider::aws::RESOURCE_TAG;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering::SeqCst;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

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
    let name = format!("portcullis-{}", portcullis::domain::new_id());
    ec2(endpoint, &["create-group", &name])["group_id"].as_str().unwrap().to_owned()
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

/// A loopback proxy to moto that holds every request for a delay before passing it on (so a
/// test can kill the server while its EC2 calls are in flight) and counts the EC2 actions called.
pub struct Ec2Proxy {
    pub url: String,
    actions: Arc<Mutex<BTreeMap<String, usize>>>,
    access_keys: Arc<Mutex<BTreeSet<String>>>,
    throttled: Arc<std::sync::atomic::AtomicU32>,
}

/// What EC2 answers a client that calls too fast.
fn throttled_response() -> String {
    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>RequestLimitExceeded</Code>\
                <Message>Request limit exceeded.</Message></Error></Errors><RequestID>1</RequestID></Response>";
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/xml\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

impl Ec2Proxy {
    pub async fn start(endpoint: &str, delay: Duration) -> Ec2Proxy {
        let upstream = endpoint.trim_start_matches("http://").to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let actions: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
        let access_keys: Arc<Mutex<BTreeSet<String>>> = Arc::default();
        let throttled: Arc<std::sync::atomic::AtomicU32> = Arc::default();
        let (counted, signers, throttling) = (actions.clone(), access_keys.clone(), throttled.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let (upstream, counted, signers, throttling) =
                    (upstream.clone(), counted.clone(), signers.clone(), throttling.clone());
                tokio::spawn(async move {
                    // Each EC2 call is a POST; while throttling, answer it ourselves and hang up.
                    let mut first = [0; 4];
                    if client.peek(&mut first).await.is_ok_and(|n| n == 4 && &first == b"POST")
                        && throttling.fetch_update(SeqCst, SeqCst, |left| left.checked_sub(1)).is_ok()
                    {
                        let _ = client.write_all(throttled_response().as_bytes()).await;
                        return;
                    }
                    let Ok(server) = TcpStream::connect(&upstream).await else { return };
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    let requests = async {
                        let mut buffer = vec![0; 64 * 1024];
                        while let Ok(n @ 1..) = client_read.read(&mut buffer).await {
                            count_actions(&buffer[..n], &counted);
                            record_signers(&buffer[..n], &signers);
                            tokio::time::sleep(delay).await;
                            if server_write.write_all(&buffer[..n]).await.is_err() {
                                break;
                            }
                        }
                    };
                    let answers = async {
                        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                    };
                    tokio::join!(requests, answers);
                });
            }
        });
        Ec2Proxy { url, actions, access_keys, throttled }
    }

    /// The next `count` calls answer 503 RequestLimitExceeded, as EC2 does under throttling.
    pub fn throttle_next(&self, count: u32) {
        self.throttled.store(count, SeqCst);
    }

    /// How many times each EC2 action was called through the proxy.
    pub fn actions(&self) -> BTreeMap<String, usize> {
        self.actions.lock().unwrap().clone()
    }

    /// The access key ids that signed the calls through the proxy.
    pub fn access_keys(&self) -> BTreeSet<String> {
        self.access_keys.lock().unwrap().clone()
    }
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

/// EC2's query protocol names the action in the form body: `Action=AuthorizeSecurityGroupIngress&…`.
fn count_actions(bytes: &[u8], counted: &Mutex<BTreeMap<String, usize>>) {
    let text = String::from_utf8_lossy(bytes);
    for part in text.split(['&', '\n']).filter_map(|part| part.trim().strip_prefix("Action=")) {
        *counted.lock().unwrap().entry(part.to_owned()).or_default() += 1;
    }
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
    client: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http_body_util::Full<bytes::Bytes>,
    >,
    transient: f64,
    hang: f64,
    hold: Duration,
    injected: Arc<Mutex<Injected>>,
}

impl FaultyEc2 {
    pub async fn start(endpoint: &str, transient: f64, hang: f64, hold: Duration) -> FaultyEc2 {
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
        let injected: Arc<Mutex<Injected>> = Arc::default();
        let faults = Faults {
            upstream: endpoint.trim_end_matches('/').to_owned(),
            client,
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

fn throttled() -> axum::response::Response {
    let body = throttled_response();
    let xml = body.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    let mut response = axum::response::Response::new(axum::body::Body::from(xml));
    *response.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/xml"));
    response
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
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut forward = http::Request::builder().method(parts.method).uri(format!("{}{path}", faults.upstream));
    for (name, value) in &parts.headers {
        if name != http::header::HOST {
            forward = forward.header(name, value);
        }
    }
    let Ok(forward) = forward.body(http_body_util::Full::new(bytes)) else { return throttled() };
    let Ok(answer) = faults.client.request(forward).await else { return throttled() };
    let (parts, body) = answer.into_parts();
    let Ok(collected) = http_body_util::BodyExt::collect(body).await else { return throttled() };
    if hang {
        count(|injected| injected.lost_answers += 1);
        tokio::time::sleep(faults.hold).await;
    }
    axum::response::Response::from_parts(parts, axum::body::Body::from(collected.to_bytes()))
}
