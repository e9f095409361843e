//! Dex, a real OpenID Connect provider (`PORTCULLIS_TEST_DEX`, built by scripts/dex.sh), started
//! per test with a generated configuration: static users with groups, this server as a
//! confidential client, SQLite storage in the test's directory. Shared with pcl's tests, so it
//! stands alone (no other test helper).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The client Dex knows this server as.
pub const CLIENT_ID: &str = "portcullis";
pub const CLIENT_SECRET: &str = "portcullis-test-secret";
/// Every static user's password.
pub const PASSWORD: &str = "password";
/// bcrypt of PASSWORD (cost 10), as Dex's own examples spell it.
const PASSWORD_HASH: &str = "$2a$10$2b2cU8CPhOTaGrs1HRQuAueS7JTT5ZHsHSzYiFPm1leZck7Mc8T4W";

/// The Dex binary, or None (and a note) when the tests run without it.
pub fn binary() -> Option<PathBuf> {
    let binary = std::env::var_os("PORTCULLIS_TEST_DEX").map(PathBuf::from);
    if binary.is_none() {
        eprintln!("skipped: PORTCULLIS_TEST_DEX is not set (scripts/test.sh builds Dex)");
    }
    binary
}

/// A user Dex logs in with PASSWORD.
#[derive(Clone)]
pub struct User {
    pub email: String,
    pub user_id: String,
    pub groups: Vec<String>,
}

impl User {
    pub fn new(email: &str, groups: &[&str]) -> User {
        let user_id = format!("{:016x}", stable_hash(email));
        User { email: email.to_owned(), user_id, groups: groups.iter().map(|group| (*group).to_owned()).collect() }
    }
}

/// A stable id per email, so a user keeps their `sub` across restarts.
fn stable_hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3))
}

/// A running Dex; stopped when dropped.
pub struct Dex {
    pub issuer: String,
    /// Where the issuer's URLs live: `http://127.0.0.1:PORT/`, for `sso.allowed_private_issuers`.
    pub origin: String,
    /// Dex's gRPC API (with reflection), for what an IdP admin does: revoking a user's tokens.
    api: String,
    redirect_uri: String,
    binary: PathBuf,
    dir: PathBuf,
    child: Child,
}

impl Dex {
    /// Starts Dex in `dir` (its configuration and database) with `users`, accepting
    /// `redirect_uri` for this server's client.
    pub async fn start(binary: &Path, dir: &Path, users: &[User], redirect_uri: &str) -> Dex {
        let free_port = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let (port, api) = (free_port(), format!("127.0.0.1:{}", free_port()));
        let origin = format!("http://127.0.0.1:{port}/");
        let issuer = format!("http://127.0.0.1:{port}/dex");
        let mut dex = Dex {
            issuer,
            origin,
            api,
            redirect_uri: redirect_uri.to_owned(),
            binary: binary.to_owned(),
            dir: dir.to_owned(),
            child: Command::new("true").spawn().unwrap(),
        };
        dex.launch(users).await;
        dex
    }

    /// Stops Dex and starts it again with `users` (the same address, client and database, so
    /// refresh tokens survive): what an IdP admin's change to its users looks like.
    pub async fn restart(&mut self, users: &[User]) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.launch(users).await;
    }

    async fn launch(&mut self, users: &[User]) {
        let passwords: Vec<serde_json::Value> = users
            .iter()
            .map(|user| {
                serde_json::json!({
                    "email": user.email, "hash": PASSWORD_HASH, "username": user.email,
                    "userID": user.user_id, "groups": user.groups,
                })
            })
            .collect();
        let listen = self.origin.trim_start_matches("http://").trim_end_matches('/').to_owned();
        // JSON is YAML: no YAML writer needed.
        let config = serde_json::json!({
            "issuer": self.issuer,
            "storage": { "type": "sqlite3", "config": { "file": self.dir.join("dex.db") } },
            "web": { "http": listen },
            "grpc": { "addr": self.api, "reflection": true },
            "oauth2": { "skipApprovalScreen": true, "responseTypes": ["code"] },
            "enablePasswordDB": true,
            "staticPasswords": passwords,
            "staticClients": [{
                "id": CLIENT_ID, "secret": CLIENT_SECRET, "name": "Portcullis",
                "redirectURIs": [self.redirect_uri],
            }],
            "logger": { "level": "warn" },
        });
        let file = self.dir.join("dex.yaml");
        std::fs::write(&file, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("dex.log")).unwrap();
        self.child = Command::new(&self.binary)
            .arg("serve")
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start dex");
        let discovery = format!("{}/.well-known/openid-configuration", self.issuer);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while reqwest::get(&discovery).await.and_then(|answer| answer.error_for_status()).is_err() {
            assert!(std::time::Instant::now() < deadline, "dex never answered discovery; see {}", self.dir.display());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Revokes the refresh tokens Dex issued to this server's client for the user whose ID
    /// tokens carry `subject`, through Dex's API (grpcurl, which scripts/test.sh installs):
    /// what an IdP does when someone leaves.
    pub fn revoke_refresh(&self, subject: &str) {
        let request = serde_json::json!({ "user_id": subject, "client_id": CLIENT_ID }).to_string();
        let output = Command::new("grpcurl")
            .args(["-plaintext", "-d", &request, &self.api, "api.Dex/RevokeRefresh"])
            .output()
            .expect("grpcurl (scripts/test.sh installs it)");
        let answer = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success() && !answer.contains("notFound"), "RevokeRefresh: {answer} {:?}", output);
    }

    /// Logs `email` in as a browser would: follows `authorization_url` through Dex's password
    /// form to the redirect back to this server; answers that redirect's `code` and `state`.
    pub async fn log_in(&self, authorization_url: &str, email: &str) -> (String, String) {
        let back = url::Url::parse(&self.log_in_to_redirect(authorization_url, email).await).unwrap();
        let query: std::collections::HashMap<String, String> = back.query_pairs().into_owned().collect();
        let code = query.get("code").cloned().unwrap_or_else(|| panic!("no code in {back}"));
        (code, query.get("state").cloned().unwrap_or_default())
    }

    /// As [`Self::log_in`], answering the whole URL Dex sends the browser back to.
    pub async fn log_in_to_redirect(&self, authorization_url: &str, email: &str) -> String {
        let browser = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let mut url = authorization_url.to_owned();
        let mut form_posted = false;
        for _ in 0..10 {
            if url.starts_with(&self.redirect_uri) {
                return url;
            }
            let answer = browser.get(&url).send().await.unwrap();
            let answer = if answer.status() == reqwest::StatusCode::OK && !form_posted {
                form_posted = true;
                let form = url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("login", email)
                    .append_pair("password", PASSWORD)
                    .finish();
                let post =
                    browser.post(&url).header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded");
                post.body(form).send().await.unwrap()
            } else {
                answer
            };
            let location = answer
                .headers()
                .get(reqwest::header::LOCATION)
                .unwrap_or_else(|| panic!("dex answered {} at {url} without a redirect", answer.status()))
                .to_str()
                .unwrap()
                .to_owned();
            url = if location.starts_with("http") {
                location
            } else {
                format!("{}{}", self.origin.trim_end_matches('/'), location)
            };
        }
        panic!("the login never came back to {}", self.redirect_uri);
    }
}

impl Drop for Dex {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
