//! What the serving port answers over plain HTTP beside the gRPC API: the page identity
//! providers send browsers back to after a login (`/sso/callback`).

use crate::service::SsoLogins;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Html;
use serde::Deserialize;

/// The paths of [`router`], which the API's authentication lets through (each is public).
pub const PATHS: &[&str] = &["/sso/callback"];

/// The HTTP routes, to be served beside the gRPC services.
pub fn router(sso: SsoLogins) -> axum::Router {
    axum::Router::new().route("/sso/callback", axum::routing::get(sso_callback)).with_state(sso)
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
         <meta name=\"viewport\" content=\"width=device-width\"></head>\
         <body style=\"font-family:sans-serif;max-width:36em;margin:4em auto\"><h1>{title}</h1><p>{}</p></body></html>",
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
