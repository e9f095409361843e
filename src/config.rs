//! Layered configuration: defaults → `portcullis.toml` (or `--config`) → `PORTCULLIS_*`
//! environment variables → command-line flags.

use crate::settings::Unworkable;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::Path;

use crate::engine::EngineConfig;
use crate::provider::ProvidersConfig;
pub use crate::settings::Secret;
use crate::settings::{Count, Hours, Millis, Minutes, Seconds};
use crate::sso::SsoConfig;
use crate::webhook::WebhooksConfig;

/// The default config file, read from the working directory when present.
pub const DEFAULT_CONFIG_FILE: &str = "portcullis.toml";

/// Everything the server can be told.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the gRPC server listens on.
    pub listen: SocketAddr,
    /// Database URL: `sqlite://FILE?mode=rwc` or `postgres://USER:PASSWORD@HOST/DB`.
    pub database_url: Secret,
    /// Connections in the database pool.
    pub database_max_connections: Count<1, 1_000>,
    /// Seconds between database health probes.
    pub health_check_interval_secs: Seconds<1, 3_600>,
    /// Log format: `text` or `json`.
    pub log_format: LogFormat,
    pub auth: AuthConfig,
    pub login: LoginConfig,
    pub mail: MailConfig,
    pub sessions: SessionConfig,
    pub network: NetworkConfig,
    pub providers: ProvidersConfig,
    pub engine: EngineConfig,
    pub tls: TlsConfig,
    pub limits: LimitsConfig,
    pub metrics: MetricsConfig,
    pub webhooks: WebhooksConfig,
    pub notifications: NotificationsConfig,
    pub server: ServerConfig,
    pub sso: SsoConfig,
    pub web: WebConfig,
    /// Key (base64 of 32 bytes, the same on every replica) under which secrets the server must
    /// read back are kept in the database: token signing keys, webhook secrets. Without it,
    /// signing keys are stored in the clear and webhooks cannot be created.
    pub sealing_key: Option<Secret>,
}

/// How the server is reached from outside.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// The origin browsers reach this server at, for example `https://portcullis.example.com`:
    /// identity providers send people back to `{public_url}/sso/callback`. Needed once an
    /// organization has an identity provider; https, or http on a loopback host.
    pub public_url: Option<String>,
}

impl ServerConfig {
    /// Refuses a public URL that is no origin, or that would carry login codes in the clear
    /// off this machine.
    pub fn check(&self) -> Result<(), Unworkable> {
        let Some(url) = &self.public_url else { return Ok(()) };
        let origin =
            crate::domain::plain_origin(url).map_err(|why| Unworkable::from(format!("server.public_url: {why}")))?;
        let loopback = |host: &str| {
            host == "localhost"
                || host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        };
        match origin.split_once("://") {
            Some(("https", _)) => Ok(()),
            Some(("http", authority)) if loopback(host_of(authority)) => Ok(()),
            _ => Err(format!(
                "server.public_url {url:?} must be https (plain http only on a loopback host): identity providers send \
                 login codes to it"
            )
            .into()),
        }
    }

    /// Where identity providers send people back after they log in (`None` until the public
    /// URL is set).
    pub fn sso_callback(&self) -> Option<String> {
        let origin = crate::domain::plain_origin(self.public_url.as_deref()?).ok()?;
        Some(format!("{origin}/sso/callback"))
    }
}

/// The web page and browsers calling the API through gRPC-Web.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebConfig {
    /// Origins (`https://host[:port]`) of pages hosted elsewhere that may call the API from a
    /// browser. Empty by default: the page this server serves at `/` is same-origin and needs none.
    pub allowed_origins: Vec<String>,
}

impl WebConfig {
    /// Refuses an allowed origin that is no plain origin (a browser's `Origin` header never
    /// carries a path, so one with a path would silently match nothing).
    pub fn check(&self) -> Result<(), Unworkable> {
        for origin in &self.allowed_origins {
            crate::domain::plain_origin(origin).map_err(|why| format!("web.allowed_origins: {why}"))?;
        }
        Ok(())
    }

    /// The allowed origins as browsers send them: lowercase, no default port.
    pub fn origins(&self) -> Vec<String> {
        self.allowed_origins.iter().filter_map(|origin| crate::domain::plain_origin(origin).ok()).collect()
    }
}

/// The host of an authority (`host`, `host:port`, `[v6]` or `[v6]:port`).
fn host_of(authority: &str) -> &str {
    match authority.rsplit_once(':') {
        Some((host, port)) if !port.ends_with(']') => host,
        _ => authority,
    }
}

/// The Prometheus endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address serving `/metrics` over plain HTTP (for example `127.0.0.1:9090`); off when unset.
    /// Keep it off the public network: the page shows what the server is doing.
    pub listen: Option<SocketAddr>,
    /// Whether `listen` may be an address other machines reach (a scraper on a private network
    /// the operator trusts); refused at start otherwise.
    pub allow_remote: bool,
    /// The deployment-wide figures count whole tables: they are read at most this often (in
    /// seconds), however often the page is scraped; 0 reads them on every scrape.
    pub database_refresh_secs: Seconds<0, 3_600>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { listen: None, allow_remote: false, database_refresh_secs: Seconds::of::<10>() }
    }
}

impl MetricsConfig {
    /// Refuses a `/metrics` that other machines reach, unless `allow_remote` says so.
    pub fn check(&self) -> Result<(), Unworkable> {
        match self.listen {
            Some(listen) if !listen.ip().is_loopback() && !self.allow_remote => Err(format!(
                "refusing to serve /metrics on {listen}: it has no authentication and tells what the server is \
                 doing; listen on loopback (127.0.0.1:9090), or set metrics.allow_remote = true for a network only \
                 your scraper reaches"
            )
            .into()),
            _ => Ok(()),
        }
    }
}

/// Warnings before a session expires.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotificationsConfig {
    /// Minutes before its end that a session is warned about (a `session.expiring_soon` event
    /// and a mail to its user), for sessions lasting more than twice that; 0 sends none.
    pub expiry_warning_minutes: Minutes<0, 10_080>,
    /// How often due warnings are looked for.
    pub poll_interval_ms: Millis<10, 3_600_000>,
}

impl Default for NotificationsConfig {
    fn default() -> Self {
        NotificationsConfig { expiry_warning_minutes: Minutes::of::<10>(), poll_interval_ms: Millis::of::<15_000>() }
    }
}

/// What one caller or one connection may hold.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Open WatchSession streams per caller (one API key or one login session) on this server.
    pub max_watch_streams_per_caller: Count<1, 1_000_000>,
    /// Open WatchSession streams per user on this server, whatever credentials they use.
    pub max_watch_streams_per_user: Count<1, 1_000_000>,
    /// Live (neither revoked nor expired) API keys per user.
    pub max_api_keys_per_user: Count<1, 1_000_000>,
    /// Webhooks per organization.
    pub max_webhooks_per_organization: Count<1, 1_000_000>,
    /// The largest request message accepted, in bytes; at most 4 MiB, tonic's own ceiling
    /// (past which it answers OUT_OF_RANGE itself).
    pub max_request_bytes: Count<1_024, 4_194_304>,
    /// How often an HTTP/2 ping checks a quiet connection.
    pub keepalive_interval_secs: Seconds<1, 3_600>,
    /// How long a ping may go unanswered before the connection is closed as dead.
    pub keepalive_timeout_secs: Seconds<1, 600>,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_watch_streams_per_caller: Count::of::<100>(),
            max_watch_streams_per_user: Count::of::<200>(),
            max_api_keys_per_user: Count::of::<100>(),
            max_webhooks_per_organization: Count::of::<50>(),
            max_request_bytes: Count::of::<1_048_576>(),
            keepalive_interval_secs: Seconds::of::<30>(),
            keepalive_timeout_secs: Seconds::of::<10>(),
        }
    }
}

/// TLS for the gRPC listener (rustls). Plaintext is allowed only on loopback addresses unless
/// `allow_plaintext` says the server sits behind a TLS-terminating proxy.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first. Reloaded on change and on SIGHUP.
    pub cert_file: Option<std::path::PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<std::path::PathBuf>,
    /// PEM CA certificates: when set, clients must present a certificate they signed (mTLS).
    pub client_ca_file: Option<std::path::PathBuf>,
    /// PEM certificate revocation lists of the client CA: client certificates they list are
    /// refused (reloaded with the other files).
    pub client_crl_file: Option<std::path::PathBuf>,
    /// Serve plaintext on a non-loopback address (behind a TLS-terminating proxy only).
    pub allow_plaintext: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            database_url: Secret("sqlite://portcullis.db?mode=rwc".to_owned()),
            database_max_connections: Count::of::<16>(),
            health_check_interval_secs: Seconds::of::<5>(),
            log_format: LogFormat::Text,
            auth: AuthConfig::default(),
            login: LoginConfig::default(),
            mail: MailConfig::default(),
            sessions: SessionConfig::default(),
            network: NetworkConfig::default(),
            providers: ProvidersConfig::default(),
            engine: EngineConfig::default(),
            tls: TlsConfig::default(),
            limits: LimitsConfig::default(),
            metrics: MetricsConfig::default(),
            webhooks: WebhooksConfig::default(),
            notifications: NotificationsConfig::default(),
            server: ServerConfig::default(),
            sso: SsoConfig::default(),
            web: WebConfig::default(),
            sealing_key: None,
        }
    }
}

impl TlsConfig {
    /// Refuses a configuration that would send credentials in the clear off this machine, or
    /// that names half a certificate.
    pub fn check(&self, listen: SocketAddr) -> Result<(), Unworkable> {
        match (&self.cert_file, &self.key_file) {
            (Some(_), Some(_)) => Ok(()),
            (Some(_), None) | (None, Some(_)) => Err("tls.cert_file and tls.key_file go together".into()),
            (None, None) if self.client_ca_file.is_some() => {
                Err("tls.client_ca_file needs tls.cert_file and tls.key_file".into())
            }
            _ if self.client_crl_file.is_some() && self.client_ca_file.is_none() => {
                Err("tls.client_crl_file revokes client certificates: it needs tls.client_ca_file".into())
            }
            (None, None) if listen.ip().is_loopback() || self.allow_plaintext => Ok(()),
            (None, None) => Err(format!(
                "refusing to serve plaintext on {listen}: API keys and tokens would cross the network in the clear; \
                 set tls.cert_file and tls.key_file, or tls.allow_plaintext = true behind a TLS-terminating proxy"
            )
            .into()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Access token settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Algorithm of issued access tokens: `HS256` or `EdDSA` (Ed25519).
    pub jwt_algorithm: TokenAlgorithm,
    /// HS256 signing secret. Absent: a key is generated and kept in the database.
    pub jwt_secret: Option<Secret>,
    /// `iss` of issued tokens, required of presented ones.
    pub jwt_issuer: String,
    /// `aud` of issued tokens, required of presented ones.
    pub jwt_audience: String,
    /// Lifetime of access tokens, in minutes.
    pub access_token_minutes: Minutes<1, 1_440>,
    /// Seconds an authenticated caller is remembered; a revocation, disable or suspension made
    /// on another replica takes up to this long to apply here. 0 disables the cache.
    pub caller_cache_secs: Seconds<0, 3_600>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            jwt_algorithm: TokenAlgorithm::HS256,
            jwt_secret: None,
            jwt_issuer: "portcullis".to_owned(),
            jwt_audience: "portcullis".to_owned(),
            access_token_minutes: Minutes::of::<15>(),
            caller_cache_secs: Seconds::of::<5>(),
        }
    }
}

/// The emailed one-time-code login.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoginConfig {
    /// Minutes a mailed code stays valid.
    pub code_minutes: Minutes<1, 1_440>,
    /// Wrong tries that use a code up.
    pub max_code_attempts: Count<1, 1_000>,
    /// Consecutive failed logins that lock the account for a while (or until an admin unlocks it).
    pub lock_after_failures: Count<1, 1_000_000>,
    /// How long the first lockout lasts; each one after it, until a login succeeds, twice as long.
    pub lock_minutes: Minutes<1, 10_080>,
    /// The longest a lockout lasts.
    pub max_lock_hours: Hours<1, 8_760>,
    /// What a login (or one ExtendLoginSession) grants, in hours from then.
    pub session_hours: Hours<1, 8_760>,
    /// Longest total life of a login session, however often it is extended, in hours.
    pub max_lifetime_hours: Hours<1, 87_600>,
    /// A login session unused this long is over.
    pub idle_timeout_minutes: Minutes<1, 525_600>,
    /// StartLogin calls allowed per email address per hour.
    pub starts_per_email_per_hour: Count<1, 1_000_000>,
    /// StartLogin calls allowed per client address (IPv6: per /64) per hour.
    pub starts_per_ip_per_hour: Count<1, 1_000_000>,
    /// VerifyLogin calls allowed per client address (IPv6: per /64) per hour.
    pub verifies_per_ip_per_hour: Count<1, 1_000_000>,
}

impl Default for LoginConfig {
    fn default() -> Self {
        LoginConfig {
            code_minutes: Minutes::of::<10>(),
            max_code_attempts: Count::of::<5>(),
            lock_after_failures: Count::of::<100>(),
            lock_minutes: Minutes::of::<15>(),
            max_lock_hours: Hours::of::<24>(),
            session_hours: Hours::of::<12>(),
            max_lifetime_hours: Hours::of::<72>(),
            idle_timeout_minutes: Minutes::of::<60>(),
            starts_per_email_per_hour: Count::of::<5>(),
            starts_per_ip_per_hour: Count::of::<30>(),
            verifies_per_ip_per_hour: Count::of::<60>(),
        }
    }
}

/// How login codes are delivered.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MailConfig {
    /// `log` prints codes to the server log (development); `smtp` sends mail.
    pub transport: MailTransport,
    /// The From address of login mails.
    pub from: String,
    pub smtp_host: String,
    pub smtp_port: u16,
    /// `starttls` (upgrade after connecting), `tls` (TLS from the start) or `none` (loopback relays only).
    pub smtp_security: SmtpSecurity,
    pub smtp_username: Option<String>,
    pub smtp_password: Option<Secret>,
    /// Whether `transport = "log"` may be used serving off loopback: whoever reads that log
    /// could log in as anyone.
    pub allow_log: bool,
}

impl MailConfig {
    /// Refuses to serve on `listen` with login codes written to the log, off loopback, unless
    /// `allow_log` says so.
    pub fn check(&self, listen: std::net::SocketAddr) -> Result<(), Unworkable> {
        if self.transport == MailTransport::Log && !listen.ip().is_loopback() && !self.allow_log {
            return Err(format!(
                "refusing to serve on {listen} with mail.transport = \"log\": login codes for any account would be \
                 written to the server log, and whoever reads it could log in as anyone; set mail.transport = \"smtp\", \
                 or mail.allow_log = true for a server nobody else can reach"
            )
            .into());
        }
        Ok(())
    }
}

impl Default for MailConfig {
    fn default() -> Self {
        MailConfig {
            transport: MailTransport::Log,
            from: "Portcullis <portcullis@localhost>".to_owned(),
            smtp_host: "localhost".to_owned(),
            smtp_port: 587,
            smtp_security: SmtpSecurity::Starttls,
            smtp_username: None,
            smtp_password: None,
            allow_log: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MailTransport {
    Log,
    Smtp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    Starttls,
    Tls,
    None,
}

/// The algorithms access tokens may be signed with: one per key, chosen by configuration, and
/// pinned per key at verification (`alg` in a token header is never trusted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TokenAlgorithm {
    /// HMAC-SHA256 with a shared secret.
    HS256,
    /// Ed25519 signatures: other services can verify with the public key alone.
    EdDSA,
}

impl TokenAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenAlgorithm::HS256 => "HS256",
            TokenAlgorithm::EdDSA => "EdDSA",
        }
    }

    pub fn parse(stored: &str) -> Option<TokenAlgorithm> {
        match stored {
            "HS256" => Some(TokenAlgorithm::HS256),
            "EdDSA" => Some(TokenAlgorithm::EdDSA),
            _ => None,
        }
    }
}

/// Session limits beyond the organization tier's.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    /// Duration of a session started without one.
    pub default_duration_hours: Count<1, 8_760>,
    /// Longest session a USER may start.
    pub max_hours_user: Count<1, 8_760>,
    /// Longest session an ADMIN may start.
    pub max_hours_admin: Count<1, 8_760>,
}

impl SessionConfig {
    /// The longest session a user of `role` may hold, on top of the tier's limit.
    pub fn max_hours_for(&self, role: crate::domain::Role) -> u32 {
        match role {
            crate::domain::Role::User => self.max_hours_user.as_u32(),
            crate::domain::Role::Admin => self.max_hours_admin.as_u32(),
            // Operators are members of no organization and hold no sessions.
            crate::domain::Role::Operator => 0,
        }
    }

    /// The longest session a user of `role` may hold in an organization on `tier`.
    pub fn max_hours_within(&self, role: crate::domain::Role, tier: crate::domain::Tier) -> u32 {
        tier.max_session_hours().min(self.max_hours_for(role))
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            default_duration_hours: Count::of::<1>(),
            max_hours_user: Count::of::<24>(),
            max_hours_admin: Count::of::<24>(),
        }
    }
}

/// How client addresses are found.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    /// Peers whose `x-forwarded-for` / `x-real-ip` are believed (CIDRs, e.g. "10.0.0.0/8").
    pub trusted_proxies: Vec<IpNet>,
}

impl Config {
    /// The sealing key: `sealing_key`, or its old name `webhooks.secret_key`.
    pub fn sealing_key(&self) -> Result<Option<std::sync::Arc<crate::sealing::SealingKey>>, ConfigError> {
        let (setting, text) = match (&self.sealing_key, &self.webhooks.secret_key) {
            (Some(key), Some(old)) if key != old => {
                return Err(Unworkable::from(
                    "sealing_key and webhooks.secret_key (its old name) differ: keep sealing_key only",
                )
                .into());
            }
            (Some(key), _) => ("sealing_key", key),
            (None, Some(old)) => ("webhooks.secret_key", old),
            (None, None) => return Ok(None),
        };
        let key = crate::sealing::SealingKey::from_base64(setting, text.expose())?;
        Ok(Some(std::sync::Arc::new(key)))
    }

    /// Reads every layer (defaults, the config file, the environment, then `flags`) and
    /// checks the result: a value out of its range, or settings that cannot work together, stop
    /// the server here with a message naming the key. An explicitly named file must exist; the
    /// default one is optional.
    pub fn load(file: Option<&Path>, flags: &Flags) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        figment = match file {
            Some(path) => figment.merge(Toml::file_exact(path)),
            None => figment.merge(Toml::file(DEFAULT_CONFIG_FILE)),
        };
        // PORTCULLIS_DATABASE_URL → database_url; PORTCULLIS_TLS__CERT_FILE → tls.cert_file.
        // Other PORTCULLIS_* variables (for example the test suite's) are not ours to reject. The
        // known keys come from the struct itself, so a new section works from the environment too.
        let known = top_level_keys();
        let env = Env::prefixed("PORTCULLIS_")
            .filter(move |key| {
                let top = key.as_str().split("__").next().unwrap_or_default();
                known.iter().any(|known| top.eq_ignore_ascii_case(known))
            })
            .split("__");
        let config: Config = figment
            .merge(env)
            .merge(Serialized::defaults(flags))
            .extract()
            .map_err(|err| ConfigError::Read(Box::new(err)))?;
        config.validate()?;
        Ok(config)
    }

    /// What no single value's range can say: settings that must agree with each other or with
    /// the address served on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.engine.check()?;
        self.providers.check()?;
        self.tls.check(self.listen)?;
        self.mail.check(self.listen)?;
        self.metrics.check()?;
        self.server.check()?;
        self.sso.check()?;
        self.web.check()?;
        self.sealing_key()?;
        Ok(())
    }
}

/// Settings given as command-line flags: the last layer, over file and environment.
#[derive(Debug, Default, Serialize)]
pub struct Flags {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
}

/// Why the server cannot start with its configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file that cannot be read, an unknown key, or a value of the wrong type or out of its
    /// range (the message names the key).
    #[error("configuration: {0}")]
    Read(Box<figment::Error>),
    /// Settings that cannot work together.
    #[error("configuration: {0}")]
    Invalid(#[from] Unworkable),
    /// A sealing key that cannot be used.
    #[error("configuration: {0}")]
    Sealing(#[from] crate::sealing::SealingError),
}

/// The top-level keys of [`Config`], read off its serialized form.
fn top_level_keys() -> Vec<String> {
    match serde_json::to_value(Config::default()) {
        Ok(serde_json::Value::Object(map)) => map.into_iter().map(|(key, _)| key).collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_in_debug() {
        let config = Config {
            database_url: Secret("postgres://app:hunter2@db/portcullis".into()),
            auth: AuthConfig { jwt_secret: Some(Secret("jwt-key".into())), ..AuthConfig::default() },
            ..Config::default()
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("jwt-key"), "{shown}");
        assert!(shown.contains("postgres://app:[redacted]@db/portcullis"), "{shown}");
        assert!(format!("{:?}", Config::default().database_url).contains("sqlite://portcullis.db?mode=rwc"));
        let in_query =
            Secret("postgres://db/portcullis?user=app&password=hunter2&sslpassword=k3y&sslmode=require".into());
        let shown = format!("{in_query:?}");
        assert!(!shown.contains("hunter2") && !shown.contains("k3y"), "{shown}");
        assert!(shown.contains("user=app") && shown.contains("sslmode=require"), "{shown}");
    }

    // figment's Jail returns its own (large) error type.
    #[test]
    #[allow(clippy::result_large_err)]
    fn layers_apply_in_order() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(DEFAULT_CONFIG_FILE, "listen = \"127.0.0.1:6000\"\n[sessions]\nmax_hours_user = 4\n")?;
            jail.set_env("PORTCULLIS_LISTEN", "127.0.0.1:7000");
            jail.set_env("PORTCULLIS_AUTH__JWT_ISSUER", "issuer-from-env");
            jail.set_env("PORTCULLIS_TEST_DATABASE_URL", "postgres://elsewhere");
            let config = Config::load(None, &Flags::default()).map_err(|e| e.to_string())?;
            assert_eq!(config.listen.port(), 7000);
            assert_eq!(config.sessions.max_hours_user.get(), 4);
            assert_eq!(config.auth.jwt_issuer, "issuer-from-env");
            assert_eq!(config.sessions.default_duration_hours.get(), 1);
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn every_section_is_read_from_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("PORTCULLIS_TLS__CERT_FILE", "/etc/portcullis/cert.pem");
            jail.set_env("PORTCULLIS_TLS__KEY_FILE", "/etc/portcullis/key.pem");
            jail.set_env("PORTCULLIS_TLS__ALLOW_PLAINTEXT", "true");
            jail.set_env("PORTCULLIS_ENGINE__PROVIDER_TIMEOUT_SECS", "5");
            jail.set_env("PORTCULLIS_PROVIDERS__QUOTA_SHARE", "0.33");
            #[cfg(feature = "aws")]
            jail.set_env("PORTCULLIS_PROVIDERS__AWS_QUOTA__MUTATING", "{ burst = 200, per_second = 10.0 }");
            jail.set_env("PORTCULLIS_METRICS__LISTEN", "127.0.0.1:9090");
            jail.set_env("PORTCULLIS_WEBHOOKS__ALLOWED_PRIVATE_ENDPOINTS", r#"["http://10.0.0.5:8080/"]"#);
            jail.set_env("PORTCULLIS_NOTIFICATIONS__EXPIRY_WARNING_MINUTES", "15");
            let config = Config::load(None, &Flags::default()).map_err(|e| e.to_string())?;
            assert_eq!(config.metrics.listen, Some("127.0.0.1:9090".parse().unwrap()));
            assert_eq!(config.webhooks.allowed_private_endpoints, ["http://10.0.0.5:8080/"]);
            assert_eq!(config.notifications.expiry_warning_minutes.count(), 15);
            assert_eq!(config.providers.quota_share, 0.33);
            #[cfg(feature = "aws")]
            assert_eq!(
                config.providers.aws_quota.mutating,
                crate::provider::quota::Rate { burst: 200, per_second: 10.0 }
            );
            assert_eq!(config.providers.check(), Ok(()));
            let mut none = config.providers.clone();
            none.quota_share = 0.0;
            assert!(none.check().is_err(), "a server that may never call EC2 is refused at start");
            assert_eq!(config.tls.cert_file.as_deref(), Some(Path::new("/etc/portcullis/cert.pem")));
            assert!(config.tls.allow_plaintext);
            assert_eq!(config.engine.provider_timeout(), std::time::Duration::from_secs(5));
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn unknown_keys_are_errors() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("custom.toml", "lisen = \"127.0.0.1:6000\"\n")?;
            assert!(Config::load(Some(Path::new("custom.toml")), &Flags::default()).is_err());
            assert!(Config::load(Some(Path::new("missing.toml")), &Flags::default()).is_err());
            Ok(())
        });
    }

    /// What `portcullis serve` says when started with `toml` as its config file.
    #[allow(clippy::result_large_err)]
    fn start_with(toml: &str, flags: Flags) -> Result<Config, ConfigError> {
        let mut result = Err(ConfigError::Invalid(Unworkable::from("not loaded")));
        figment::Jail::expect_with(|jail| {
            jail.create_file("portcullis.toml", toml)?;
            result = Config::load(Some(Path::new("portcullis.toml")), &flags);
            Ok(())
        });
        result
    }

    /// `toml` stops the start with a message that names every one of `names`.
    fn refused(toml: &str, names: &[&str]) {
        match start_with(toml, Flags::default()) {
            Ok(_) => panic!("started with {toml:?}"),
            Err(refusal) => {
                let message = refusal.to_string();
                for name in names {
                    assert!(
                        message.contains(name),
                        "{toml:?} was refused, but the message does not name {name:?}: {message}"
                    );
                }
            }
        }
    }

    #[test]
    fn top_level_settings_out_of_range_stop_the_start() {
        refused("database_max_connections = 0", &["database_max_connections", "from 1 to 1000"]);
        refused("health_check_interval_secs = 0", &["health_check_interval_secs", "from 1 to 3600 seconds"]);
        refused("sealing_key = \"c2hvcnQ=\"", &["sealing_key"]);
    }

    #[test]
    fn engine_settings_out_of_range_stop_the_start() {
        refused("[engine]\nlease_secs = 1", &["engine", "lease_secs", "from 2 to 3600 seconds"]);
        refused("[engine]\nbatch = 0", &["batch", "from 1 to 10000"]);
        refused("[engine]\nmax_concurrent_resources = 0", &["max_concurrent_resources", "from 1"]);
        refused("[engine]\ncached_sessions = 0", &["cached_sessions", "from 1"]);
        refused(
            "[engine]\nlease_secs = 10\nprovider_timeout_secs = 8",
            &["engine.provider_timeout_secs", "engine.lease_secs"],
        );
    }

    #[test]
    fn provider_settings_out_of_range_stop_the_start() {
        refused("[providers]\nquota_share = 0.0", &["providers.quota_share", "above 0 and at most 1"]);
        #[cfg(feature = "aws")]
        refused(
            "[providers.aws_quota]\nmutating = { burst = 0, per_second = 5.0 }",
            &["providers.aws_quota.mutating", "burst and a rate per second above 0"],
        );
        #[cfg(feature = "aws")]
        refused(
            "[providers.aws_quota]\ngroup_write_quiet_ms = 600001",
            &["group_write_quiet_ms", "from 0 to 600000 milliseconds"],
        );
        #[cfg(feature = "gcp")]
        refused("[providers.gcp_quota]\nwrites = { burst = 5, per_second = 0.0 }", &["providers.gcp_quota.writes"]);
    }

    #[test]
    fn webhook_settings_out_of_range_stop_the_start() {
        refused("[webhooks]\ntimeout_secs = 0", &["timeout_secs", "from 1 to 60 seconds"]);
        refused("[webhooks]\nconcurrency = 0", &["concurrency", "from 1 to 4096"]);
        refused("[webhooks]\npoll_interval_ms = 5", &["poll_interval_ms", "from 10 to 3600000 milliseconds"]);
        refused("[webhooks]\nmax_in_flight_per_organization = 0", &["max_in_flight_per_organization"]);
    }

    #[test]
    fn limits_out_of_range_stop_the_start() {
        refused("[limits]\nmax_request_bytes = 8388608", &["max_request_bytes", "from 1024 to 4194304"]);
        refused("[limits]\nmax_watch_streams_per_caller = 0", &["max_watch_streams_per_caller", "from 1"]);
        refused("[limits]\nkeepalive_timeout_secs = 0", &["keepalive_timeout_secs", "from 1 to 600 seconds"]);
    }

    #[test]
    fn login_and_auth_settings_out_of_range_stop_the_start() {
        refused("[login]\ncode_minutes = 0", &["code_minutes", "from 1 to 1440 minutes"]);
        refused("[login]\nstarts_per_ip_per_hour = 0", &["starts_per_ip_per_hour", "from 1"]);
        refused("[login]\nmax_lock_hours = 0", &["max_lock_hours", "from 1 to 8760 hours"]);
        refused("[auth]\naccess_token_minutes = 0", &["access_token_minutes", "from 1 to 1440 minutes"]);
        refused("[auth]\ncaller_cache_secs = 86400", &["caller_cache_secs", "from 0 to 3600 seconds"]);
    }

    #[test]
    fn session_and_notification_settings_out_of_range_stop_the_start() {
        refused("[sessions]\nmax_hours_user = 0", &["max_hours_user", "from 1 to 8760"]);
        refused("[sessions]\ndefault_duration_hours = 0", &["default_duration_hours"]);
        refused("[notifications]\npoll_interval_ms = 0", &["poll_interval_ms", "from 10"]);
        refused("[metrics]\ndatabase_refresh_secs = 7200", &["database_refresh_secs", "from 0 to 3600 seconds"]);
    }

    #[test]
    fn settings_that_expose_the_server_off_loopback_stop_the_start() {
        let public = || Flags { listen: Some("0.0.0.0:50051".parse().unwrap()), ..Flags::default() };
        let refused_on_public = |toml: &str, name: &str| {
            let message = start_with(toml, public()).err().map(|err| err.to_string()).unwrap_or_default();
            assert!(message.contains(name), "{toml:?} off loopback: {message}");
        };
        refused_on_public("[tls]\nallow_plaintext = false\n[mail]\ntransport = \"smtp\"", "tls.cert_file");
        refused_on_public("[tls]\nallow_plaintext = true", "mail.transport");
        refused_on_public(
            "[tls]\nallow_plaintext = true\n[mail]\ntransport = \"smtp\"\n[metrics]\nlisten = \"0.0.0.0:9090\"",
            "metrics.allow_remote",
        );
        refused("[tls]\ncert_file = \"cert.pem\"", &["tls.cert_file and tls.key_file go together"]);
        let started = start_with("[tls]\nallow_plaintext = true\n[mail]\ntransport = \"smtp\"", public());
        assert!(started.is_ok(), "{started:?}");
    }

    #[test]
    fn single_sign_on_settings_are_checked_at_start() {
        refused("[server]\npublic_url = \"http://portcullis.example.com\"", &["server.public_url", "https"]);
        refused("[server]\npublic_url = \"https://portcullis.example.com/app\"", &["server.public_url", "origin"]);
        refused("[sso]\nrefresh_check_secs = 0", &["refresh_check_secs", "from 1 to 86400 seconds"]);
        refused("[sso]\nlogin_minutes = 61", &["login_minutes", "from 1 to 60"]);
        refused("[sso]\nallowed_private_issuers = [\"127.0.0.1:5556\"]", &["sso.allowed_private_issuers"]);
        for url in ["https://portcullis.example.com", "http://127.0.0.1:8080", "http://localhost", "http://[::1]:80"] {
            let started = start_with(&format!("[server]\npublic_url = \"{url}\""), Flags::default());
            assert!(started.is_ok(), "{url}: {started:?}");
        }
        let config = start_with("[server]\npublic_url = \"https://Portcullis.example.com:443/\"", Flags::default());
        let callback = config.ok().and_then(|config| config.server.sso_callback());
        assert_eq!(callback.as_deref(), Some("https://portcullis.example.com/sso/callback"));
    }

    #[test]
    fn allowed_web_origins_are_plain_origins() {
        refused("[web]\nallowed_origins = [\"https://pages.example.com/app\"]", &["web.allowed_origins", "origin"]);
        refused("[web]\nallowed_origins = [\"pages.example.com\"]", &["web.allowed_origins"]);
        let config = start_with("[web]\nallowed_origins = [\"https://Pages.example.com:443\"]", Flags::default());
        assert_eq!(config.map(|config| config.web.origins()).ok(), Some(vec!["https://pages.example.com".to_owned()]));
    }

    #[test]
    fn the_flags_layer_is_checked_too() {
        let started = start_with("", Flags { listen: Some("127.0.0.1:6001".parse().unwrap()), ..Flags::default() });
        assert_eq!(started.map(|config| config.listen.port()).ok(), Some(6001));
    }
}
