//! Layered configuration: defaults → `portcullis.toml` (or `--config`) → `PORTCULLIS_*`
//! environment variables → command-line flags.

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

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
    pub database_max_connections: u32,
    /// Seconds between database health probes.
    pub health_check_interval_secs: u64,
    /// Log format: `text` or `json`.
    pub log_format: LogFormat,
    pub auth: AuthConfig,
    pub login: LoginConfig,
    pub mail: MailConfig,
    pub sessions: SessionConfig,
    pub network: NetworkConfig,
    pub providers: ProvidersConfig,
    pub engine: EngineSettings,
    pub tls: TlsConfig,
    pub limits: LimitsConfig,
    pub metrics: MetricsConfig,
    pub webhooks: WebhooksConfig,
    pub notifications: NotificationsConfig,
    /// Key (base64 of 32 bytes, the same on every replica) under which secrets the server must
    /// read back are kept in the database: token signing keys, webhook secrets. Without it,
    /// signing keys are stored in the clear and webhooks cannot be created.
    pub sealing_key: Option<Secret>,
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
    pub database_refresh_secs: u64,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { listen: None, allow_remote: false, database_refresh_secs: 10 }
    }
}

impl MetricsConfig {
    /// Refuses a `/metrics` that other machines reach, unless `allow_remote` says so.
    pub fn check(&self) -> Result<(), String> {
        match self.listen {
            Some(listen) if !listen.ip().is_loopback() && !self.allow_remote => Err(format!(
                "refusing to serve /metrics on {listen}: it has no authentication and tells what the server is \
                 doing; listen on loopback (127.0.0.1:9090), or set metrics.allow_remote = true for a network only \
                 your scraper reaches"
            )),
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
    pub expiry_warning_minutes: u32,
    /// How often due warnings are looked for.
    pub poll_interval_ms: u64,
}

impl Default for NotificationsConfig {
    fn default() -> Self {
        NotificationsConfig { expiry_warning_minutes: 10, poll_interval_ms: 15_000 }
    }
}

/// Webhook delivery.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// The old name of the top-level `sealing_key`.
    pub secret_key: Option<Secret>,
    /// URL prefixes (for example `http://10.0.0.5:8080/`) that may be plain http or reach
    /// private, loopback or link-local addresses; every other URL must be https to a public one.
    pub allowed_private_endpoints: Vec<String>,
    /// The longest one delivery attempt may take, connecting included.
    pub timeout_secs: u64,
    /// Milliseconds before the first retry of a failed delivery; each further one waits
    /// twice as long (at most an hour), with jitter.
    pub retry_base_ms: u64,
    /// How long a delivery is retried before it is marked failed.
    pub retry_hours: u64,
    /// A webhook whose deliveries have failed without a success for this long is disabled.
    pub disable_after_days: u64,
    /// How often the outbox is looked at when nothing wakes it.
    pub poll_interval_ms: u64,
    /// Most deliveries in flight at once on one replica.
    pub concurrency: usize,
    /// Most deliveries of one organization in flight at once, across replicas: one
    /// organization's slow receivers never hold every slot.
    pub max_in_flight_per_organization: usize,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            secret_key: None,
            allowed_private_endpoints: Vec::new(),
            timeout_secs: 10,
            retry_base_ms: 5000,
            retry_hours: 24,
            disable_after_days: 5,
            poll_interval_ms: 1000,
            concurrency: 64,
            max_in_flight_per_organization: 8,
        }
    }
}

/// What one caller or one connection may hold.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Open WatchSession streams per caller (one API key or one login session) on this server.
    pub max_watch_streams_per_caller: u32,
    /// Open WatchSession streams per user on this server, whatever credentials they use.
    pub max_watch_streams_per_user: u32,
    /// Live (neither revoked nor expired) API keys per user.
    pub max_api_keys_per_user: u32,
    /// Webhooks per organization.
    pub max_webhooks_per_organization: u32,
    /// The largest request message accepted, in bytes.
    pub max_request_bytes: usize,
    /// How often an HTTP/2 ping checks a quiet connection.
    pub keepalive_interval_secs: u64,
    /// How long a ping may go unanswered before the connection is closed as dead.
    pub keepalive_timeout_secs: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_watch_streams_per_caller: 100,
            max_watch_streams_per_user: 200,
            max_api_keys_per_user: 100,
            max_webhooks_per_organization: 50,
            max_request_bytes: 1024 * 1024,
            keepalive_interval_secs: 30,
            keepalive_timeout_secs: 10,
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

/// Session engine tuning.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineSettings {
    /// Seconds a claim on a resource and its rules lasts unless renewed (it is renewed every
    /// quarter of it while work runs); after a crash, the dead process's claims wait this long.
    pub lease_secs: u64,
    /// Seconds any one provider call may take before it is abandoned and retried; with the
    /// renewal interval it must stay below `lease_secs`.
    pub provider_timeout_secs: u64,
    /// Most resources worked on at once; each works independently of the others. A resource
    /// whose provider quota is spent takes no slot until its calls' tokens are near.
    pub max_concurrent_resources: usize,
    /// Most rules of one resource claimed at once.
    pub batch: u64,
    /// About how many seconds between reconciles of each resource (by any replica); 0
    /// disables them.
    pub reconcile_interval_secs: Option<u64>,
    /// Deprecated name of `reconcile_interval_secs`, still read when that is not set.
    pub sweep_interval_secs: Option<u64>,
    /// Seconds after it was applied before a rule absent from the provider's listing counts as
    /// missing and is re-applied.
    pub repair_grace_secs: u64,
    /// Most sessions kept in memory as last read (GetSession and WatchSession read them there).
    pub cached_sessions: usize,
    /// About how many seconds between checks of each resource's firewall (by any replica): a
    /// check that starts failing is audited as `resource.check_failed`; 0 disables them.
    pub check_interval_secs: u64,
}

impl EngineSettings {
    /// Seconds between reconcile passes, from the current key or its deprecated name.
    pub fn reconcile_interval_secs(&self) -> u64 {
        self.reconcile_interval_secs.or(self.sweep_interval_secs).unwrap_or(60)
    }

    /// The deadline of every provider call.
    pub fn provider_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.provider_timeout_secs.max(1))
    }
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            lease_secs: 12,
            provider_timeout_secs: 8,
            max_concurrent_resources: 32,
            batch: 500,
            reconcile_interval_secs: None,
            sweep_interval_secs: None,
            repair_grace_secs: 30,
            cached_sessions: 20_000,
            check_interval_secs: 1800,
        }
    }
}

/// Provider settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProvidersConfig {
    /// Mirror the memory provider's rules to this JSON file, so they survive restarts.
    pub memory_state_file: Option<std::path::PathBuf>,
    /// Call GCP without credentials: only for emulators and fakes (with `endpoint_url`).
    pub gcp_anonymous: bool,
    /// Call Azure Resource Manager without a token: only for fakes (with `endpoint_url`).
    pub azure_anonymous: bool,
    /// Endpoints a resource's `endpoint_url` may name besides the clouds' own (HTTPS on
    /// `*.amazonaws.com`, `*.googleapis.com`, Azure Resource Manager's hosts):
    /// `scheme://host:port`, the port `*` for any.
    pub allowed_endpoints: Vec<String>,
    /// How fast this server calls EC2, per account and region.
    pub aws_quota: AwsQuota,
    /// How fast this server writes GCP firewall rules, per project.
    pub gcp_quota: GcpQuota,
    /// How fast this server writes Azure security rules, per subscription.
    pub azure_quota: AzureQuota,
    /// The part of each cloud quota this server spends: the replicas of one deployment share an
    /// account's (a project's) quota, so each of three sets 0.33.
    pub quota_share: f64,
}

impl Default for ProvidersConfig {
    fn default() -> Self {
        ProvidersConfig {
            memory_state_file: None,
            gcp_anonymous: false,
            azure_anonymous: false,
            allowed_endpoints: Vec::new(),
            aws_quota: AwsQuota::default(),
            gcp_quota: GcpQuota::default(),
            azure_quota: AzureQuota::default(),
            quota_share: 1.0,
        }
    }
}

impl ProvidersConfig {
    /// Refuses settings the providers cannot work with.
    pub fn check(&self) -> Result<(), String> {
        if !(self.quota_share > 0.0 && self.quota_share <= 1.0) {
            return Err(format!("providers.quota_share must be above 0 and at most 1, not {}", self.quota_share));
        }
        let rates = [("aws_quota.mutating", self.aws_quota.mutating), ("aws_quota.describe", self.aws_quota.describe)];
        let writes = [("gcp_quota.writes", self.gcp_quota.writes), ("azure_quota.writes", self.azure_quota.writes)];
        for (name, rate) in rates.into_iter().chain(writes) {
            if rate.burst == 0 || !(rate.per_second > 0.0 && rate.per_second.is_finite()) {
                return Err(format!("providers.{name} needs a burst and a rate per second above 0"));
            }
        }
        Ok(())
    }
}

/// EC2 throttles each API on a token bucket of its own per account and region; the engine paces
/// its calls to stay within them. The defaults are EC2's buckets for mutating and describe calls.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AwsQuota {
    /// Each of AuthorizeSecurityGroupIngress and RevokeSecurityGroupIngress.
    pub mutating: Rate,
    /// Each of DescribeSecurityGroupRules and DescribeSecurityGroups.
    pub describe: Rate,
    /// Least milliseconds from one write to a security group answering to the next write to it
    /// starting: sessions started together on one group go out in a call or two instead of one
    /// per wave, at the price of up to this much more wait for those arriving just after a call.
    /// 0 writes as soon as there is work and a token.
    pub group_write_interval_ms: u64,
    /// A group waiting out its write interval is written as soon as no further work for it has
    /// come for this many milliseconds: a burst of sessions goes out once it ends, not a whole
    /// interval after the last write. 0 always waits out the interval.
    pub group_write_quiet_ms: u64,
}

impl AwsQuota {
    pub fn group_write_interval(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.group_write_interval_ms)
    }

    pub fn group_write_quiet(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.group_write_quiet_ms)
    }
}

/// Compute Engine counts a project's firewall writes (insert, patch, delete) per minute: the
/// default bucket never spends more than 1,500 in any minute (25 at once, then 24/s).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GcpQuota {
    pub writes: Rate,
}

impl Default for GcpQuota {
    fn default() -> Self {
        GcpQuota { writes: Rate { burst: 25, per_second: 24.0 } }
    }
}

/// Resource Manager throttles a subscription's writes on a token bucket: 200 at once, then 10
/// a second (its documented default); security rule PUTs and DELETEs count against it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AzureQuota {
    pub writes: Rate,
}

impl Default for AzureQuota {
    fn default() -> Self {
        AzureQuota { writes: Rate { burst: 200, per_second: 10.0 } }
    }
}

/// A token bucket's size: `burst` calls at once, then `per_second`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    pub burst: u32,
    pub per_second: f64,
}

impl Default for AwsQuota {
    fn default() -> Self {
        AwsQuota {
            mutating: Rate { burst: 50, per_second: 5.0 },
            describe: Rate { burst: 100, per_second: 20.0 },
            group_write_interval_ms: 1000,
            group_write_quiet_ms: 100,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            database_url: Secret("sqlite://portcullis.db?mode=rwc".to_owned()),
            database_max_connections: 16,
            health_check_interval_secs: 5,
            log_format: LogFormat::Text,
            auth: AuthConfig::default(),
            login: LoginConfig::default(),
            mail: MailConfig::default(),
            sessions: SessionConfig::default(),
            network: NetworkConfig::default(),
            providers: ProvidersConfig::default(),
            engine: EngineSettings::default(),
            tls: TlsConfig::default(),
            limits: LimitsConfig::default(),
            metrics: MetricsConfig::default(),
            webhooks: WebhooksConfig::default(),
            notifications: NotificationsConfig::default(),
            sealing_key: None,
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
    pub access_token_minutes: u32,
    /// Seconds an authenticated caller is remembered; a revocation, disable or suspension made
    /// on another replica takes up to this long to apply here. 0 disables the cache.
    pub caller_cache_secs: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            jwt_algorithm: TokenAlgorithm::HS256,
            jwt_secret: None,
            jwt_issuer: "portcullis".to_owned(),
            jwt_audience: "portcullis".to_owned(),
            access_token_minutes: 15,
            caller_cache_secs: 5,
        }
    }
}

/// The emailed one-time-code login.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoginConfig {
    /// Minutes a mailed code stays valid.
    pub code_minutes: u32,
    /// Wrong tries that use a code up.
    pub max_code_attempts: u32,
    /// Consecutive failed logins that lock the account for a while (or until an admin unlocks it).
    pub lock_after_failures: u32,
    /// How long the first lockout lasts; each one after it, until a login succeeds, twice as long.
    pub lock_minutes: u32,
    /// The longest a lockout lasts.
    pub max_lock_hours: u32,
    /// What a login (or one ExtendLoginSession) grants, in hours from then.
    pub session_hours: u32,
    /// Longest total life of a login session, however often it is extended, in hours.
    pub max_lifetime_hours: u32,
    /// A login session unused this long is over.
    pub idle_timeout_minutes: u32,
    /// StartLogin calls allowed per email address per hour.
    pub starts_per_email_per_hour: u32,
    /// StartLogin calls allowed per client address (IPv6: per /64) per hour.
    pub starts_per_ip_per_hour: u32,
    /// VerifyLogin calls allowed per client address (IPv6: per /64) per hour.
    pub verifies_per_ip_per_hour: u32,
}

impl Default for LoginConfig {
    fn default() -> Self {
        LoginConfig {
            code_minutes: 10,
            max_code_attempts: 5,
            lock_after_failures: 100,
            lock_minutes: 15,
            max_lock_hours: 24,
            session_hours: 12,
            max_lifetime_hours: 72,
            idle_timeout_minutes: 60,
            starts_per_email_per_hour: 5,
            starts_per_ip_per_hour: 30,
            verifies_per_ip_per_hour: 60,
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
    pub fn check(&self, listen: std::net::SocketAddr) -> Result<(), String> {
        if self.transport == MailTransport::Log && !listen.ip().is_loopback() && !self.allow_log {
            return Err(format!(
                "refusing to serve on {listen} with mail.transport = \"log\": login codes for any account would be \
                 written to the server log, and whoever reads it could log in as anyone; set mail.transport = \"smtp\", \
                 or mail.allow_log = true for a server nobody else can reach"
            ));
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
    pub default_duration_hours: u32,
    /// Longest session a USER may start.
    pub max_hours_user: u32,
    /// Longest session an ADMIN may start.
    pub max_hours_admin: u32,
}

impl SessionConfig {
    /// The longest session a user of `role` may hold, on top of the tier's limit.
    pub fn max_hours_for(&self, role: crate::domain::Role) -> u32 {
        match role {
            crate::domain::Role::User => self.max_hours_user,
            crate::domain::Role::Admin => self.max_hours_admin,
            // Operators are members of no organization and hold no sessions.
            crate::domain::Role::Operator => 0,
        }
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig { default_duration_hours: 1, max_hours_user: 24, max_hours_admin: 24 }
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
    pub fn sealing_key(&self) -> Result<Option<std::sync::Arc<crate::sealing::SealingKey>>, String> {
        let (setting, text) = match (&self.sealing_key, &self.webhooks.secret_key) {
            (Some(key), Some(old)) if key != old => {
                return Err("sealing_key and webhooks.secret_key (its old name) differ: keep sealing_key only".into());
            }
            (Some(key), _) => ("sealing_key", key),
            (None, Some(old)) => ("webhooks.secret_key", old),
            (None, None) => return Ok(None),
        };
        crate::sealing::SealingKey::from_base64(setting, text.expose()).map(|key| Some(std::sync::Arc::new(key)))
    }

    /// Reads the layers below the command line: defaults, then the config file, then the environment.
    /// An explicitly named file must exist; the default one is optional.
    pub fn load(file: Option<&Path>) -> Result<Config, Box<figment::Error>> {
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
        figment = figment.merge(env);
        figment.extract().map_err(Box::new)
    }
}

/// The top-level keys of [`Config`], read off its serialized form.
fn top_level_keys() -> Vec<String> {
    match serde_json::to_value(Config::default()) {
        Ok(serde_json::Value::Object(map)) => map.into_iter().map(|(key, _)| key).collect(),
        _ => Vec::new(),
    }
}

/// A value that never appears in logs or `Debug` output. For URLs, only the password is hidden.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url_password(&self.0).unwrap_or_else(|| "[redacted]".to_owned()))
    }
}

/// `scheme://user:password@host/…?password=…` → `scheme://user:[redacted]@host/…?password=[redacted]`;
/// `None` for anything that is not a URL we can show safely. PostgreSQL takes a password in the
/// query too (`password`, and `sslpassword` for a client key).
fn redact_url_password(value: &str) -> Option<String> {
    let (scheme, rest) = value.split_once("://")?;
    let (rest, query) = match rest.split_once('?') {
        Some((rest, query)) => (rest, Some(query)),
        None => (rest, None),
    };
    let mut shown = match rest.rsplit_once('@') {
        Some((credentials, host)) => {
            let user = credentials.split_once(':').map_or(credentials, |(user, _)| user);
            format!("{scheme}://{user}:[redacted]@{host}")
        }
        None => format!("{scheme}://{rest}"),
    };
    if let Some(query) = query {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if name.to_ascii_lowercase().contains("password") => format!("{name}=[redacted]"),
                _ => pair.to_owned(),
            })
            .collect();
        shown = format!("{shown}?{}", pairs.join("&"));
    }
    Some(shown)
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
            let config = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(config.listen.port(), 7000);
            assert_eq!(config.sessions.max_hours_user, 4);
            assert_eq!(config.auth.jwt_issuer, "issuer-from-env");
            assert_eq!(config.sessions.default_duration_hours, 1);
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn every_section_is_read_from_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("PORTCULLIS_TLS__CERT_FILE", "/etc/portcullis/cert.pem");
            jail.set_env("PORTCULLIS_TLS__ALLOW_PLAINTEXT", "true");
            jail.set_env("PORTCULLIS_ENGINE__PROVIDER_TIMEOUT_SECS", "5");
            jail.set_env("PORTCULLIS_PROVIDERS__QUOTA_SHARE", "0.33");
            jail.set_env("PORTCULLIS_PROVIDERS__AWS_QUOTA__MUTATING", "{ burst = 200, per_second = 10.0 }");
            jail.set_env("PORTCULLIS_METRICS__LISTEN", "127.0.0.1:9090");
            jail.set_env("PORTCULLIS_WEBHOOKS__ALLOWED_PRIVATE_ENDPOINTS", r#"["http://10.0.0.5:8080/"]"#);
            jail.set_env("PORTCULLIS_NOTIFICATIONS__EXPIRY_WARNING_MINUTES", "15");
            let config = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(config.metrics.listen, Some("127.0.0.1:9090".parse().unwrap()));
            assert_eq!(config.webhooks.allowed_private_endpoints, ["http://10.0.0.5:8080/"]);
            assert_eq!(config.notifications.expiry_warning_minutes, 15);
            assert_eq!(config.providers.quota_share, 0.33);
            assert_eq!(config.providers.aws_quota.mutating, Rate { burst: 200, per_second: 10.0 });
            assert_eq!(config.providers.check(), Ok(()));
            let mut none = config.providers.clone();
            none.quota_share = 0.0;
            assert!(none.check().is_err(), "a server that may never call EC2 is refused at start");
            assert_eq!(config.tls.cert_file.as_deref(), Some(Path::new("/etc/portcullis/cert.pem")));
            assert!(config.tls.allow_plaintext);
            assert_eq!(config.engine.provider_timeout_secs, 5);
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn unknown_keys_are_errors() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("custom.toml", "lisen = \"127.0.0.1:6000\"\n")?;
            assert!(Config::load(Some(Path::new("custom.toml"))).is_err());
            assert!(Config::load(Some(Path::new("missing.toml"))).is_err());
            Ok(())
        });
    }
}
