//! The web page and browsers' access to the API on the serving port: the page over HTTP/1.1
//! with its security headers, gRPC-Web calls under the same authentication and size limit as
//! gRPC, and cross-origin calls only from the origins the operator allows. (The page itself is
//! driven in a real browser by web/tests, which scripts/test.sh runs.)

use crate::common::{TestDb, TestServer, test_config};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use portcullis::pb::v1::{GetCurrentUserRequest, GetCurrentUserResponse};
use prost::Message;

/// A client that speaks HTTP/1.1 only, as a browser's first request often does.
fn browser() -> reqwest::Client {
    reqwest::Client::builder().http1_only().build().unwrap()
}

/// The served bytes are those committed in web/dist: the binary carries the page, so serving
/// it needs no Node (nor any file beside the binary).
#[tokio::test]
async fn the_page_is_served_over_http1_with_a_strict_content_security_policy() {
    let db = TestDb::sqlite();
    let server = TestServer::start(&db).await;
    let base = format!("http://{}", server.addr);
    let page = browser().get(format!("{base}/")).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert_eq!(page.version(), reqwest::Version::HTTP_11);
    let header =
        |name: &str| page.headers().get(name).and_then(|value| value.to_str().ok()).unwrap_or_default().to_owned();
    assert!(header("content-type").starts_with("text/html"), "{}", header("content-type"));
    let csp = header("content-security-policy");
    for directive in ["default-src 'none'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"] {
        assert!(csp.contains(directive), "CSP {csp:?} lacks {directive:?}");
    }
    assert!(!csp.contains("unsafe-inline"), "CSP {csp:?} allows inline code");
    assert_eq!(header("referrer-policy"), "no-referrer");
    assert_eq!(header("x-content-type-options"), "nosniff");
    let html = page.text().await.unwrap();
    assert_eq!(html, include_str!("../../web/dist/index.html"));
    assert!(html.contains(r#"<script type="module" src="/app.js"></script>"#), "{html}");

    for (path, committed, kind) in [
        ("/app.js", include_str!("../../web/dist/app.js"), "text/javascript"),
        ("/app.css", include_str!("../../web/dist/app.css"), "text/css"),
    ] {
        let asset = browser().get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(asset.status().as_u16(), 200, "{path}");
        let content_type = asset.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(content_type.starts_with(kind), "{path}: {content_type}");
        assert!(asset.headers().contains_key("content-security-policy"), "{path}");
        assert_eq!(asset.text().await.unwrap(), committed, "{path} as committed in web/dist");
    }
    server.stop().await;
}

/// One gRPC-Web call in base64 text, as `@connectrpc/connect-web` sends it with the text format.
async fn grpc_web_text(server: &TestServer, method: &str, frames: &[u8], key: Option<&str>) -> reqwest::Response {
    let mut request = browser()
        .post(format!("http://{}/portcullis.v1.{method}", server.addr))
        .header("content-type", "application/grpc-web-text")
        .header("accept", "application/grpc-web-text")
        .header("x-grpc-web", "1")
        .body(STANDARD.encode(frames));
    if let Some(key) = key {
        request = request.header("x-api-key", key);
    }
    request.send().await.unwrap()
}

fn frame(flag: u8, payload: &[u8]) -> Vec<u8> {
    let mut framed = vec![flag];
    framed.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
    framed.extend_from_slice(payload);
    framed
}

/// The answer's message and trailers, from a gRPC-Web (text) body.
fn read_frames(text: &str) -> (Vec<u8>, String) {
    // Each chunk of the answer is encoded on its own, padding included: decode 4 characters at
    // a time.
    let text = text.replace(['\r', '\n'], "");
    let body: Vec<u8> =
        text.as_bytes().chunks(4).flat_map(|quad| STANDARD.decode(quad).expect("base64 answer")).collect();
    let (mut message, mut trailers, mut rest) = (Vec::new(), String::new(), &body[..]);
    while rest.len() >= 5 {
        let length = u32::from_be_bytes(rest[1..5].try_into().unwrap()) as usize;
        let payload = &rest[5..5 + length];
        if rest[0] & 0x80 == 0 {
            message = payload.to_vec();
        } else {
            trailers = String::from_utf8_lossy(payload).into_owned();
        }
        rest = &rest[5 + length..];
    }
    (message, trailers)
}

fn grpc_status(answer: &reqwest::Response) -> Option<String> {
    answer.headers().get("grpc-status").map(|value| value.to_str().unwrap().to_owned())
}

#[tokio::test]
async fn browsers_call_the_api_through_grpc_web_under_the_same_authentication_and_size_limit() {
    let db = TestDb::sqlite();
    let server = TestServer::start(&db).await;
    let request = frame(0, &GetCurrentUserRequest {}.encode_to_vec());

    let anonymous = grpc_web_text(&server, "UserService/GetCurrentUser", &request, None).await;
    assert_eq!(anonymous.status().as_u16(), 200);
    assert_eq!(grpc_status(&anonymous).as_deref(), Some("16"), "no credential: UNAUTHENTICATED");

    let answer = grpc_web_text(&server, "UserService/GetCurrentUser", &request, Some(&server.admin_key)).await;
    let content_type = answer.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("application/grpc-web-text"), "{content_type} ({:?})", answer.headers());
    let (message, trailers) = read_frames(&answer.text().await.unwrap());
    assert!(trailers.contains("grpc-status:0"), "trailers: {trailers:?}");
    let current = GetCurrentUserResponse::decode(&message[..]).unwrap();
    assert_eq!(current.user.map(|user| user.email).as_deref(), Some("admin@example.com"));
    // The page caps its duration picker with these.
    assert_eq!(current.max_session_minutes, 120, "the free tier's two hours");
    assert_eq!(current.default_session_minutes, 60);

    // The size layer reads the decoded gRPC framing: a message announced above the limit is
    // refused before it is read, however it was encoded.
    let oversized = [&[0u8][..], &(2u32 << 20).to_be_bytes(), &[0u8; 64]].concat();
    let refused = grpc_web_text(&server, "UserService/GetCurrentUser", &oversized, Some(&server.admin_key)).await;
    let refused_status = match grpc_status(&refused) {
        Some(status) => status,
        None => read_frames(&refused.text().await.unwrap()).1,
    };
    assert!(refused_status.contains('8'), "RESOURCE_EXHAUSTED expected, got {refused_status:?}");
    server.stop().await;
}

async fn preflight(server: &TestServer, origin: &str) -> reqwest::Response {
    browser()
        .request(reqwest::Method::OPTIONS, format!("http://{}/portcullis.v1.UserService/GetCurrentUser", server.addr))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type,x-grpc-web,authorization")
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn pages_elsewhere_call_the_api_only_from_allowed_origins() {
    let db = TestDb::sqlite();
    let closed = TestServer::start(&db).await;
    let answer = preflight(&closed, "https://pages.example.com").await;
    assert!(!answer.headers().contains_key("access-control-allow-origin"), "no origin is allowed by default");
    closed.stop().await;

    let mut config = test_config();
    config.web.allowed_origins = vec!["https://Pages.example.com:443".into()];
    let other_db = TestDb::sqlite();
    let open = TestServer::start_with(&other_db, config).await;
    let allowed = preflight(&open, "https://pages.example.com").await;
    assert_eq!(allowed.headers().get("access-control-allow-origin").unwrap(), "https://pages.example.com");
    let methods = allowed.headers()["access-control-allow-methods"].to_str().unwrap().to_owned();
    assert!(methods.contains("POST"), "{methods}");
    let other = preflight(&open, "https://evil.example.com").await;
    assert!(!other.headers().contains_key("access-control-allow-origin"), "another origin is not allowed");
    open.stop().await;
}
