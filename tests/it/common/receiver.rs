//! A webhook receiver for tests: a real HTTP server on loopback that records every POST and
//! answers 500 to as many of them as it is told to, and an independent check of the Standard
//! Webhooks signature, written from the specification (not the server's code).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One POST as it arrived.
#[derive(Debug, Clone)]
pub struct Received {
    pub id: String,
    pub timestamp: i64,
    pub signatures: Vec<String>,
    pub body: String,
    pub json: serde_json::Value,
    /// When it arrived, in seconds since the epoch.
    pub arrived_at: i64,
    /// What the receiver answered.
    pub answered: u16,
}

impl Received {
    pub fn event_type(&self) -> &str {
        self.json["type"].as_str().unwrap_or_default()
    }
}

#[derive(Default)]
struct Shared {
    received: Mutex<Vec<Received>>,
    failures_left: AtomicUsize,
}

pub struct Receiver {
    pub url: String,
    shared: Arc<Shared>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let shared = Arc::new(Shared::default());
        let app = axum::Router::new().route("/hook", axum::routing::post(accept)).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { url, shared }
    }

    /// Answers 500 to the next `count` posts.
    pub fn fail_next(&self, count: usize) {
        self.shared.failures_left.store(count, Ordering::SeqCst);
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// The posts it accepted (answered 2xx).
    pub fn accepted(&self) -> Vec<Received> {
        self.received().into_iter().filter(|r| r.answered == 200).collect()
    }

    /// Waits (up to 30 s) until `done` holds for what arrived; answers what arrived.
    pub async fn wait_for(&self, what: &str, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let found = super::eventually(what, Duration::from_secs(30), async || {
            let received = self.received();
            let seen: Vec<_> = received.iter().map(|r| (r.event_type().to_owned(), r.answered)).collect();
            if done(&received) { Ok(received) } else { Err(seen) }
        });
        found.await
    }
}

async fn accept(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let fail = shared.failures_left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
    let status = if fail { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::OK };
    let body = String::from_utf8_lossy(&body).into_owned();
    shared.received.lock().unwrap().push(Received {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp").parse().unwrap_or_default(),
        signatures: header("webhook-signature").split(' ').map(str::to_owned).collect(),
        json: serde_json::from_str(&body).unwrap_or_default(),
        body,
        arrived_at: chrono::Utc::now().timestamp(),
        answered: status.as_u16(),
    });
    status
}

/// Whether one of the post's signatures is HMAC-SHA256 over "{id}.{timestamp}.{body}" under
/// `secret` (`whsec_` + base64 key), as a receiver checks it.
pub fn signed_with(secret: &str, post: &Received) -> bool {
    signed_with_parts(secret, &post.id, post.timestamp, &post.body, &post.signatures)
}

pub fn signed_with_parts(secret: &str, id: &str, timestamp: i64, body: &str, signatures: &[String]) -> bool {
    let Some(key) = secret.strip_prefix("whsec_").and_then(|key| STANDARD.decode(key).ok()) else { return false };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key);
    let expected = ring::hmac::sign(&key, format!("{id}.{timestamp}.{body}").as_bytes());
    signatures
        .iter()
        .filter_map(|s| s.strip_prefix("v1,"))
        .filter_map(|s| STANDARD.decode(s).ok())
        .any(|given| given == expected.as_ref())
}
