//! What the serving port answers over plain HTTP beside the gRPC API: the web page at `/`
//! (built in `web/`, embedded here, so serving it needs no Node) and the page identity providers
//! send browsers back to after a login (`/sso/callback`). The page calls the API through
//! gRPC-Web on the same port.

use crate::service::SsoLogins;
use axum::extract::{Query, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// The paths of [`router`], which the API's authentication lets through (each is public).
pub const PATHS: &[&str] = &["/", "/app.js", "/app.css", "/sso/callback"];

/// The page's files, as `npm run build` in `web/` left them.
const INDEX_HTML: &str = include_str!("../web/dist/index.html");
const APP_JS: &str = include_str!("../web/dist/app.js");
const APP_CSS: &str = include_str!("../web/dist/app.css");

/// Scripts and styles from this origin only (none inline), calls to this origin only, never in
/// a frame: a page that holds an access token keeps to what it was built with.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
     img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The HTTP routes, to be served beside the gRPC services.
pub fn router(sso: SsoLogins) -> axum::Router {
    axum::Router::new()
        .route("/", axum::routing::get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }))
        .route("/app.js", axum::routing::get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
        .route("/app.css", axum::routing::get(|| async { asset("text/css; charset=utf-8", APP_CSS) }))
        .route("/sso/callback", axum::routing::get(sso_callback))
        .with_state(sso)
        .layer(axum::middleware::map_response(secure))
}

/// Lets pages served from `origins` call the API from a browser; `None` when there are none, so
/// no cross-origin call is answered at all.
pub fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let origins: Vec<HeaderValue> = origins.iter().filter_map(|origin| HeaderValue::from_str(origin).ok()).collect();
    let names = |names: &[&'static str]| names.iter().map(|name| HeaderName::from_static(name)).collect::<Vec<_>>();
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::POST])
            .allow_headers(names(&[
                "content-type",
                "authorization",
                "x-api-key",
                "x-grpc-web",
                "x-user-agent",
                "grpc-timeout",
            ]))
            .expose_headers(names(&["grpc-status", "grpc-message", "grpc-status-details-bin"]))
            .max_age(std::time::Duration::from_secs(3_600)),
    )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    // Revalidated on each load: the files change with the server, under the same names.
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

/// The headers every page of ours carries.
async fn secure(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (HeaderName::from_static("cross-origin-opener-policy"), "same-origin"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// What an identity provider appends to the callback URL (RFC 6749 §4.1.2).
#[derive(Debug, Deserialize)]
struct Callback {
    #[serde(default)]
    state: String,
    code: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

async fn sso_callback(State(sso): State<SsoLogins>, Query(callback): Query<Callback>) -> (StatusCode, Html<String>) {
    let error = callback.error.as_deref().map(|error| match callback.error_description.as_deref() {
        Some(description) => format!("{error} ({description})"),
        None => error.to_owned(),
    });
    match sso.callback(&callback.state, callback.code.as_deref(), error.as_deref()).await {
        Ok(()) => (
            StatusCode::OK,
            page(
                "Logged in",
                "You are logged in to Portcullis. Go back to where you started the login; you may close this page.",
            ),
        ),
        Err(refusal) => (StatusCode::BAD_REQUEST, page("Login refused", &refusal.message)),
    }
}

fn page(title: &str, message: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Portcullis: {title}</title>\
         <meta name=\"viewport\" content=\"width=device-width\"><link rel=\"stylesheet\" href=\"/app.css\"></head>\
         <body><main class=\"notice\"><h1>{title}</h1><p>{}</p></main></body></html>",
        escape(message)
    ))
}

/// `text` safe inside HTML element content.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            other => escaped.push(other),
        }
    }
    escaped
}
