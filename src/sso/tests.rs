//! ID tokens crafted with a key made here, served from a small discovery and key endpoint:
//! every forgery the provider client must refuse, and a key rotation it must follow.

use super::http::IdpHttp;
use super::oidc::{Provider, Refreshed, SsoError, discover};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const CLIENT: &str = "portcullis";
const NONCE: &str = "nonce-0123456789";

/// A signing key of the test provider, with its key id.
struct Key {
    kid: String,
    pair: EcdsaKeyPair,
}

impl Key {
    fn new(kid: &str) -> Key {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
        Key { kid: kid.to_owned(), pair }
    }

    /// The public key as a JWK.
    fn jwk(&self) -> Value {
        let point = self.pair.public_key().as_ref();
        json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": self.kid,
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        })
    }

    /// A compact JWS of `claims` with `header` (its kid filled in when absent).
    fn sign(&self, mut header: Value, claims: &Value) -> String {
        header.as_object_mut().unwrap().entry("kid").or_insert(json!(self.kid));
        let input = format!("{}.{}", encode(&header), encode(claims));
        let signature = self.pair.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
    }
}

fn encode(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
}

/// A discovery document and a key set (changeable, for rotation) on loopback.
struct TestIdp {
    issuer: String,
    keys: Arc<Mutex<Vec<Value>>>,
    /// What the token endpoint answers: a status and a JSON body.
    token_answer: Arc<Mutex<(u16, Value)>>,
}

impl TestIdp {
    async fn start(keys: Vec<Value>) -> TestIdp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let keys = Arc::new(Mutex::new(keys));
        let discovery = json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{issuer}/auth"),
            "token_endpoint": format!("{issuer}/token"),
            "jwks_uri": format!("{issuer}/keys"),
            "userinfo_endpoint": format!("{issuer}/userinfo"),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
        });
        let served = keys.clone();
        let token_answer = Arc::new(Mutex::new((500, json!({}))));
        let answered = token_answer.clone();
        let app = axum::Router::new()
            .route(
                "/userinfo",
                axum::routing::get(|| async { axum::Json(json!({ "sub": "user-1", "groups": ["ops"] })) }),
            )
            .route(
                "/token",
                axum::routing::post(move || {
                    let (status, body) = answered.lock().unwrap().clone();
                    async move { (http::StatusCode::from_u16(status).unwrap(), axum::Json(body)) }
                }),
            )
            .route(
                "/.well-known/openid-configuration",
                axum::routing::get(move || {
                    let discovery = discovery.clone();
                    async move { axum::Json(discovery) }
                }),
            )
            .route(
                "/keys",
                axum::routing::get(move || {
                    let keys = served.lock().unwrap().clone();
                    async move { axum::Json(json!({ "keys": keys })) }
                }),
            );
        tokio::spawn(async move { axum::serve(listener, app).await });
        TestIdp { issuer, keys, token_answer }
    }

    async fn provider(&self) -> Arc<Provider> {
        let http = IdpHttp::new(vec![format!("{}/", self.issuer)], Duration::from_secs(5)).unwrap();
        let metadata = discover(&http, &self.issuer).await.unwrap();
        Provider::new(http, metadata, CLIENT, "client-secret", "https://portcullis.example.com/sso/callback", "groups")
            .unwrap()
    }

    /// Standard claims of a good token, `now` ± the given seconds.
    fn claims(&self) -> Value {
        let now = chrono::Utc::now().timestamp();
        json!({
            "iss": self.issuer, "sub": "user-1", "aud": CLIENT, "iat": now, "exp": now + 300, "nonce": NONCE,
            "email": "Ada@Example.com", "email_verified": true, "name": "Ada", "groups": ["ops", "dev"],
        })
    }
}

fn es256() -> Value {
    json!({ "alg": "ES256", "typ": "JWT" })
}

#[tokio::test]
async fn a_well_signed_token_names_the_user_and_their_groups() {
    let key = Key::new("k1");
    let idp = TestIdp::start(vec![key.jwk()]).await;
    let provider = idp.provider().await;
    let identity = provider.verify_raw(&key.sign(es256(), &idp.claims()), NONCE).await.unwrap();
    assert_eq!((identity.subject.as_str(), identity.email.as_str()), ("user-1", "ada@example.com"));
    assert_eq!(identity.issuer, idp.issuer);
    assert_eq!(identity.groups, ["ops", "dev"]);
    assert_eq!(identity.name.as_deref(), Some("Ada"));
}

#[tokio::test]
async fn every_forgery_is_refused() {
    let key = Key::new("k1");
    let idp = TestIdp::start(vec![key.jwk()]).await;
    let provider = idp.provider().await;
    let with = |field: &str, value: Value| {
        let mut claims = idp.claims();
        claims[field] = value;
        claims
    };
    let stranger = Key::new("k1");
    let unknown = Key::new("k-unknown");
    let now = chrono::Utc::now().timestamp();
    let unsigned = format!("{}.{}.", encode(&json!({ "alg": "none" })), encode(&idp.claims()));
    let hmac = {
        let input = format!("{}.{}", encode(&json!({ "alg": "HS256" })), encode(&idp.claims()));
        let tag = ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"client-secret"), input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    };
    let cases = [
        ("another issuer", key.sign(es256(), &with("iss", json!("https://evil.example.com")))),
        ("another audience", key.sign(es256(), &with("aud", json!("someone-else")))),
        ("another nonce", key.sign(es256(), &with("nonce", json!("replayed")))),
        ("expired", key.sign(es256(), &with("exp", json!(now - 600)))),
        ("alg none", unsigned),
        ("HS256 with the client secret", hmac),
        ("signed by another key with the same kid", stranger.sign(es256(), &idp.claims())),
        ("an unknown key id", unknown.sign(es256(), &idp.claims())),
        ("an unverified email", key.sign(es256(), &with("email_verified", json!(false)))),
        ("no email", key.sign(es256(), &with("email", Value::Null))),
    ];
    for (what, token) in cases {
        match provider.verify_raw(&token, NONCE).await {
            Err(SsoError::Refused(why)) => assert!(!why.is_empty(), "{what}"),
            other => panic!("{what}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_rotated_key_is_read_again_once() {
    let old = Key::new("k1");
    let idp = TestIdp::start(vec![old.jwk()]).await;
    let provider = idp.provider().await;
    let new = Key::new("k2");
    *idp.keys.lock().unwrap() = vec![old.jwk(), new.jwk()];
    let identity = provider.verify_raw(&new.sign(es256(), &idp.claims()), NONCE).await;
    assert_eq!(identity.map(|identity| identity.subject).ok().as_deref(), Some("user-1"));
    assert!(provider.verify_raw(&old.sign(es256(), &idp.claims()), NONCE).await.is_ok(), "the old key still counts");
}

#[tokio::test]
async fn the_authorization_url_carries_pkce_state_and_nonce() {
    let idp = TestIdp::start(vec![Key::new("k1").jwk()]).await;
    let provider = idp.provider().await;
    let first = provider.authorize(&["openid".into(), "email".into(), "groups".into()]);
    let second = provider.authorize(&[]);
    assert_ne!(first.state, second.state);
    assert_ne!(first.nonce, second.nonce);
    let url = url::Url::parse(&first.url).unwrap();
    let query: std::collections::HashMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(query.get("code_challenge_method").map(String::as_str), Some("S256"));
    assert_eq!(query.get("state"), Some(&first.state));
    assert_eq!(query.get("nonce"), Some(&first.nonce));
    assert_eq!(query.get("client_id").map(String::as_str), Some(CLIENT));
    assert_eq!(query.get("scope").map(String::as_str), Some("openid email groups"));
    assert!(first.url.starts_with(&format!("{}/auth?", idp.issuer)), "{}", first.url);
}

#[tokio::test]
async fn a_private_issuer_is_refused_unless_the_operator_allows_it() {
    let idp = TestIdp::start(vec![Key::new("k1").jwk()]).await;
    let strict = IdpHttp::new(Vec::new(), Duration::from_secs(2)).unwrap();
    let refused = discover(&strict, &idp.issuer).await.err().map(|err| err.to_string()).unwrap_or_default();
    assert!(refused.contains("may not be fetched"), "{refused}");
}

#[tokio::test]
async fn only_a_refused_grant_says_the_user_lost_access() {
    let idp = TestIdp::start(vec![Key::new("k1").jwk()]).await;
    let provider = idp.provider().await;
    let error = |code: &str| json!({ "error": code, "error_description": "from the test" });
    let cases = [
        (400, error("invalid_grant"), true),
        (400, error("invalid_request"), true),
        (401, error("invalid_client"), false),
        (400, error("unauthorized_client"), false),
        (400, error("invalid_scope"), false),
        (500, error("invalid_request"), false),
        (503, json!({}), false),
    ];
    for (status, body, refused) in cases {
        *idp.token_answer.lock().unwrap() = (status, body.clone());
        match provider.refresh("a-refresh-token").await {
            Ok(Refreshed::Revoked(_)) => assert!(refused, "{status} {body} must not disable anyone"),
            Err(_) => assert!(!refused, "{status} {body} is a refused grant"),
            Ok(valid) => panic!("{status} {body}: {valid:?}"),
        }
    }
}

#[tokio::test]
async fn a_refresh_without_an_id_token_reads_the_groups_from_userinfo() {
    let idp = TestIdp::start(vec![Key::new("k1").jwk()]).await;
    let provider = idp.provider().await;
    let tokens = json!({ "access_token": "at-2", "token_type": "Bearer", "refresh_token": "rt-2" });
    *idp.token_answer.lock().unwrap() = (200, tokens);
    match provider.refresh("rt-1").await {
        Ok(Refreshed::Valid { groups, refresh_token }) => {
            assert_eq!(groups.as_deref(), Some(&["ops".to_owned()][..]), "the groups as userinfo has them now");
            assert_eq!(refresh_token.as_deref(), Some("rt-2"));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_refreshed_id_token_without_the_groups_claim_reads_them_from_userinfo() {
    let key = Key::new("k1");
    let idp = TestIdp::start(vec![key.jwk()]).await;
    let provider = idp.provider().await;
    // Providers leave an empty groups claim out (Dex does): that must not read as "unchanged".
    let mut claims = idp.claims();
    claims.as_object_mut().unwrap().remove("groups");
    let id_token = key.sign(es256(), &claims);
    let tokens =
        json!({ "access_token": "at-2", "token_type": "Bearer", "refresh_token": "rt-2", "id_token": id_token });
    *idp.token_answer.lock().unwrap() = (200, tokens);
    match provider.refresh("rt-1").await {
        Ok(Refreshed::Valid { groups, .. }) => {
            assert_eq!(groups.as_deref(), Some(&["ops".to_owned()][..]), "the groups as userinfo has them now");
        }
        other => panic!("{other:?}"),
    }
}
