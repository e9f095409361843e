//! moto's EC2 server for the AWS tests (`PORTCULLIS_TEST_MOTO_URL`, started by scripts/moto.sh),
//! an independent boto3 client to look at it, and a proxy that holds calls in flight and counts them.

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
