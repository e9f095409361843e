//! Cloud firewalls behind one trait. Each provider lives in its own module (and, for the cloud
//! ones, behind a Cargo feature); the engine only sees [`FirewallProvider`].

#[cfg(feature = "aws")]
pub mod aws;
#[cfg(feature = "azure")]
pub mod azure;
#[cfg(any(feature = "gcp", feature = "azure"))]
mod family;
#[cfg(feature = "gcp")]
pub mod gcp;
pub mod memory;
pub mod quota;

use crate::domain::{CloudScopes, ProviderConfig, ProviderKind};
use crate::monitoring;
use crate::settings::Unworkable;
use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// The `[providers]` settings; each cloud's quota lives with its provider.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProvidersConfig {
    /// Mirror the memory provider's rules to this JSON file, so they survive restarts.
    pub memory_state_file: Option<std::path::PathBuf>,
    /// Endpoints a resource's `endpoint_url` may name besides the clouds' own (HTTPS on
    /// `*.amazonaws.com`, `*.googleapis.com`, Azure Resource Manager's hosts):
    /// `scheme://host:port`, the port `*` for any.
    pub allowed_endpoints: Vec<String>,
    /// The part of each cloud quota this server spends: the replicas of one deployment share an
    /// account's (a project's) quota, so each of three sets 0.33.
    pub quota_share: f64,
    /// How fast this server calls EC2, per account and region.
    #[cfg(feature = "aws")]
    pub aws_quota: aws::AwsQuota,
    /// Call GCP without credentials: only for emulators and fakes (with `endpoint_url`).
    #[cfg(feature = "gcp")]
    pub gcp_anonymous: bool,
    /// How fast this server writes GCP firewall rules, per project.
    #[cfg(feature = "gcp")]
    pub gcp_quota: gcp::GcpQuota,
    /// Call Azure Resource Manager without a token: only for fakes (with `endpoint_url`).
    #[cfg(feature = "azure")]
    pub azure_anonymous: bool,
    /// How fast this server writes Azure security rules, per subscription.
    #[cfg(feature = "azure")]
    pub azure_quota: azure::AzureQuota,
}

impl Default for ProvidersConfig {
    fn default() -> Self {
        ProvidersConfig {
            memory_state_file: None,
            allowed_endpoints: Vec::new(),
            quota_share: 1.0,
            #[cfg(feature = "aws")]
            aws_quota: aws::AwsQuota::default(),
            #[cfg(feature = "gcp")]
            gcp_anonymous: false,
            #[cfg(feature = "gcp")]
            gcp_quota: gcp::GcpQuota::default(),
            #[cfg(feature = "azure")]
            azure_anonymous: false,
            #[cfg(feature = "azure")]
            azure_quota: azure::AzureQuota::default(),
        }
    }
}

impl ProvidersConfig {
    /// Refuses settings the providers cannot work with.
    pub fn check(&self) -> Result<(), Unworkable> {
        if !(self.quota_share > 0.0 && self.quota_share <= 1.0) {
            return Err(format!("providers.quota_share must be above 0 and at most 1, not {}", self.quota_share).into());
        }
        #[cfg(feature = "aws")]
        {
            self.aws_quota.mutating.check("providers.aws_quota.mutating")?;
            self.aws_quota.describe.check("providers.aws_quota.describe")?;
        }
        #[cfg(feature = "gcp")]
        self.gcp_quota.writes.check("providers.gcp_quota.writes")?;
        #[cfg(feature = "azure")]
        self.azure_quota.writes.check("providers.azure_quota.writes")?;
        Ok(())
    }
}

/// Starts the description of every rule Portcullis opens; rules without it are never touched.
pub const OWNERSHIP_MARKER: &str = "portcullis";

/// The firewall a call is about.
#[derive(Debug, Clone)]
pub struct Target {
    pub resource_id: String,
    /// The resource's organization: AWS role assumption names it as the ExternalId.
    pub organization_id: String,
    pub config: ProviderConfig,
}

/// The session a rule is opened for; providers store it with the rule as the ownership marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub session_id: String,
    pub expires_at: DateTime<Utc>,
}

impl Owner {
    /// `portcullis session <id> until <RFC 3339>`: within the character set and length every
    /// provider accepts in a rule description.
    pub fn description(&self) -> String {
        format!(
            "{OWNERSHIP_MARKER} session {} until {}",
            self.session_id,
            self.expires_at.to_rfc3339_opts(SecondsFormat::Secs, true)
        )
    }
}

/// Whether a provider-side description carries our ownership marker.
pub fn is_owned_description(description: &str) -> bool {
    description.strip_prefix(OWNERSHIP_MARKER).is_some_and(|rest| rest.starts_with(' '))
}

/// Marks the id of a rule someone else opened for the same address: a session may ride on it,
/// but Portcullis never removes it.
const UNMANAGED_PREFIX: &str = "unmanaged:";

/// Past this many cached clients (one per endpoint, region, role: values tenants choose), the
/// cache starts over instead of growing; a client dropped is rebuilt on its next use.
#[cfg(any(feature = "aws", feature = "gcp"))]
const KEPT_CLIENTS: usize = 64;

/// Makes room in a client cache for one more (see [`KEPT_CLIENTS`]).
#[cfg(any(feature = "aws", feature = "gcp"))]
fn make_room<K, V>(clients: &mut std::collections::HashMap<K, V>) {
    if clients.len() >= KEPT_CLIENTS {
        clients.clear();
    }
}

/// The rule id to record for a foreign rule that already opens the address.
pub fn unmanaged_rule_id(provider_rule_id: &str) -> String {
    format!("{UNMANAGED_PREFIX}{provider_rule_id}")
}

/// Whether a recorded rule id belongs to a foreign rule (see [`unmanaged_rule_id`]).
pub fn is_unmanaged(rule_id: &str) -> bool {
    rule_id.starts_with(UNMANAGED_PREFIX)
}

/// The one-host network of an address: `/32` or `/128`.
#[cfg(any(feature = "aws", feature = "gcp", feature = "azure"))]
pub(crate) fn host_cidr(address: IpAddr) -> String {
    match address {
        IpAddr::V4(v4) => format!("{v4}/32"),
        IpAddr::V6(v6) => format!("{v6}/128"),
    }
}

/// The host a provider range names, if it names exactly one: `a.b.c.d/32`, `x::y/128` or a bare
/// address (GCP and Azure accept those).
#[cfg(any(feature = "aws", feature = "gcp", feature = "azure"))]
pub(crate) fn single_host(range: &str) -> Option<IpAddr> {
    let net: ipnet::IpNet = range.parse().or_else(|_| range.parse::<IpAddr>().map(ipnet::IpNet::from)).ok()?;
    (net.prefix_len() == net.max_prefix_len()).then(|| net.addr())
}

/// The same error for each of `count` items of a batch that failed as a whole.
pub(crate) fn fail_all<T>(count: usize, err: &ProviderError) -> Vec<Result<T, ProviderError>> {
    (0..count).map(|_| Err(err.clone())).collect()
}

/// A rule to open: one host address and its owner.
#[derive(Debug, Clone)]
pub struct RuleRequest {
    pub address: IpAddr,
    pub owner: Owner,
}

/// A rule to remove: by its provider id when known, else by address.
#[derive(Debug, Clone)]
pub struct RuleRef {
    pub address: IpAddr,
    pub rule_id: Option<String>,
}

/// What a firewall holds, as the reconciler compares it with the database.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// The rules that carry our ownership marker for the resource.
    pub owned: Vec<OwnedRule>,
    /// The single hosts that someone else's rules open with the resource's grant: sessions may
    /// ride on those (`unmanaged:` rule ids), never remove them.
    pub foreign: BTreeSet<IpAddr>,
}

/// A rule on a firewall that carries our ownership marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedRule {
    pub rule_id: String,
    pub address: IpAddr,
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// Worth retrying: timeouts, 5xx.
    #[error("temporary provider failure: {0}")]
    Transient(String),
    /// The provider's request quota was spent (throttling): retried like [`Self::Transient`].
    #[error("temporary provider failure: {0}")]
    Throttled(String),
    /// Retrying will not help: the provider refused the rule (quota, invalid address, no access).
    #[error("{0}")]
    Rejected(String),
    /// Not sent: the operator's policy does not allow this call (an endpoint not allowed).
    /// Sending it would hand the server's cloud credentials over, so rules wait instead.
    #[error("not sent: {0}")]
    Forbidden(String),
}

impl ProviderError {
    /// The error's kind, as metrics label it.
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderError::Transient(_) => "transient",
            ProviderError::Throttled(_) => "throttled",
            ProviderError::Rejected(_) => "rejected",
            ProviderError::Forbidden(_) => "forbidden",
        }
    }
}

/// What one pass over a resource will call, so its calls' quota can be reserved before it
/// starts (see [`Providers::admit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// The rule worker's: for each of removing and applying, a listing then a write.
    /// `unchanged_for`: how long since the last of the resource's due rules became due.
    Rules { removes: bool, applies: bool, unchanged_for: Duration },
    /// The reconciler's: one listing (what it then repairs is the worker's to call; an orphan's
    /// removal, rare, waits its turn as it goes).
    Listing,
}

/// What CheckResource found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckOutcome {
    Ok(String),
    NotFound(String),
    AccessDenied(String),
    Unreachable(String),
    Unsupported(String),
}

impl CheckOutcome {
    /// The status of a check that passed, as [`CheckOutcome::status`] names it.
    pub const OK: &'static str = "OK";

    /// The API's `CheckStatus` name without its prefix: how the finding is stored and audited.
    pub fn status(&self) -> &'static str {
        match self {
            CheckOutcome::Ok(_) => CheckOutcome::OK,
            CheckOutcome::NotFound(_) => "NOT_FOUND",
            CheckOutcome::AccessDenied(_) => "ACCESS_DENIED",
            CheckOutcome::Unreachable(_) => "UNREACHABLE",
            CheckOutcome::Unsupported(_) => "UNSUPPORTED",
        }
    }

    pub fn message(&self) -> &str {
        match self {
            CheckOutcome::Ok(message)
            | CheckOutcome::NotFound(message)
            | CheckOutcome::AccessDenied(message)
            | CheckOutcome::Unreachable(message)
            | CheckOutcome::Unsupported(message) => message,
        }
    }
}

/// One firewall API. Calls are batched: one call carries every address for one resource.
/// Callers serialize calls per resource (see the engine), so a provider need not.
#[async_trait]
pub trait FirewallProvider: Send + Sync {
    /// Opens each address. Idempotent: an address that is already open answers with its
    /// existing rule id. One result per request, in order.
    async fn apply(&self, target: &Target, rules: &[RuleRequest]) -> Vec<Result<String, ProviderError>>;

    /// Removes each rule. A rule that is already gone counts as removed. One result per rule, in order.
    async fn revoke(&self, target: &Target, rules: &[RuleRef]) -> Vec<Result<(), ProviderError>>;

    /// The firewall's rules: ours (carrying our ownership marker) and the hosts foreign rules
    /// open with the resource's grant.
    async fn list(&self, target: &Target) -> Result<Listing, ProviderError>;

    /// Every rule on the firewall that carries our ownership marker (never any other).
    async fn list_owned(&self, target: &Target) -> Result<Vec<OwnedRule>, ProviderError> {
        Ok(self.list(target).await?.owned)
    }

    /// Whether the firewall exists and the configured credentials can read it.
    async fn check(&self, target: &Target) -> CheckOutcome;
}

/// Wraps a provider so every call ends by a deadline: a call still running then is abandoned
/// (dropping it cancels its request) and answers a transient error, retried with backoff. This
/// bounds whatever the provider does inside a call: paging, operation polling, latency. Waits
/// for the quota's tokens do not count: behind a backlog of our own calls, a call that never
/// reached the provider would otherwise time out and back off while the bucket serves others
/// (the lease is renewed through the wait, and dropped work makes no call).
struct Bounded {
    inner: Arc<dyn FirewallProvider>,
    deadline: Duration,
    /// The provider's kind, as metrics name it.
    kind: ProviderKind,
}

impl Bounded {
    fn timed_out(&self) -> ProviderError {
        ProviderError::Transient(format!("the provider did not answer within {}s", self.deadline.as_secs_f64()))
    }

    /// `call`'s answer, or None once it has spent the deadline outside its waits for tokens;
    /// timed (without those waits) as `operation`.
    async fn bounded<T>(&self, operation: &'static str, call: impl std::future::Future<Output = T>) -> Option<T> {
        let paced = quota::PacedTime::default();
        let call = paced.count(call);
        tokio::pin!(call);
        let began = tokio::time::Instant::now();
        // Moves on with every wait counted; None (past any instant) only for an endless wait.
        let end = || began.checked_add(self.deadline.saturating_add(paced.total()));
        let answer = loop {
            let Some(until) = end() else { break Some(call.await) };
            tokio::select! {
                answer = &mut call => break Some(answer),
                () = tokio::time::sleep_until(until) => {
                    if end() == Some(until) {
                        break None;
                    }
                }
            }
        };
        monitoring::provider_call(self.kind.as_str(), operation, began.elapsed().saturating_sub(paced.total()));
        if answer.is_none() {
            monitoring::provider_error(self.kind.as_str(), operation, "timeout");
        }
        answer
    }

    /// Counts each kind of error among a call's answers once.
    fn count_errors<'a>(&self, operation: &'static str, errors: impl Iterator<Item = &'a ProviderError>) {
        let mut kinds: Vec<&'static str> = errors.map(ProviderError::kind).collect();
        kinds.sort_unstable();
        kinds.dedup();
        for kind in kinds {
            monitoring::provider_error(self.kind.as_str(), operation, kind);
        }
    }
}

#[async_trait]
impl FirewallProvider for Bounded {
    async fn apply(&self, target: &Target, rules: &[RuleRequest]) -> Vec<Result<String, ProviderError>> {
        let Some(answers) = self.bounded("apply", self.inner.apply(target, rules)).await else {
            return fail_all(rules.len(), &self.timed_out());
        };
        self.count_errors("apply", answers.iter().filter_map(|answer| answer.as_ref().err()));
        answers
    }

    async fn revoke(&self, target: &Target, rules: &[RuleRef]) -> Vec<Result<(), ProviderError>> {
        let Some(answers) = self.bounded("revoke", self.inner.revoke(target, rules)).await else {
            return fail_all(rules.len(), &self.timed_out());
        };
        self.count_errors("revoke", answers.iter().filter_map(|answer| answer.as_ref().err()));
        answers
    }

    async fn list(&self, target: &Target) -> Result<Listing, ProviderError> {
        let answer = self.bounded("list", self.inner.list(target)).await.unwrap_or_else(|| Err(self.timed_out()));
        self.count_errors("list", answer.as_ref().err().into_iter());
        answer
    }

    async fn check(&self, target: &Target) -> CheckOutcome {
        self.bounded("check", self.inner.check(target))
            .await
            .unwrap_or_else(|| CheckOutcome::Unreachable(self.timed_out().to_string()))
    }
}

/// The providers this server was built with.
#[derive(Clone)]
pub struct Providers {
    memory: Arc<memory::MemoryFirewall>,
    #[cfg(feature = "aws")]
    aws: Arc<aws::AwsFirewall>,
    #[cfg(feature = "gcp")]
    gcp: Arc<gcp::GcpFirewall>,
    #[cfg(feature = "azure")]
    azure: Arc<azure::AzureFirewall>,
    /// The longest any one call may take.
    deadline: Duration,
    /// Endpoints besides the clouds' own that resources may call (`providers.allowed_endpoints`).
    allowed_endpoints: Arc<[String]>,
}

impl Providers {
    /// Every provider this server was built with; each call ends within `deadline`.
    pub fn new(memory: memory::MemoryFirewall, config: &ProvidersConfig, deadline: Duration) -> Providers {
        #[cfg(not(any(feature = "aws", feature = "gcp", feature = "azure")))]
        let _ = config;
        Providers {
            memory: Arc::new(memory),
            #[cfg(feature = "aws")]
            aws: Arc::new(aws::AwsFirewall::new(&config.aws_quota, config.quota_share)),
            #[cfg(feature = "gcp")]
            gcp: Arc::new(gcp::GcpFirewall::new(config.gcp_anonymous, &config.gcp_quota, config.quota_share)),
            #[cfg(feature = "azure")]
            azure: Arc::new(azure::AzureFirewall::new(config.azure_anonymous, &config.azure_quota, config.quota_share)),
            deadline,
            allowed_endpoints: config.allowed_endpoints.clone().into(),
        }
    }

    /// Why calls for a resource configured as `config`, of an organization with `scopes`, may
    /// not be sent, with the config field that makes it so: they would carry the server's cloud
    /// identity to an endpoint the operator does not allow, or to a target outside the scopes.
    pub fn refusal(&self, config: &ProviderConfig, scopes: &CloudScopes) -> Option<(&'static str, String)> {
        match config.endpoint_url() {
            Some(url) if !crate::domain::endpoint_allowed(url, config.kind(), &self.allowed_endpoints) => Some((
                "endpoint_url",
                format!("endpoint {url} is not among the operator's allowed endpoints (providers.allowed_endpoints)"),
            )),
            _ => scopes.refusal(config),
        }
    }

    /// Reserves the quota a pass over a resource configured as `config` needs, if `claim` gets
    /// it: the pass runs its calls with these tickets ([`quota::Prepaid`]). Otherwise answers how
    /// long until it would, so the engine spends no slot, lease or claim on a resource that
    /// would only wait, and takes work up in due order as tokens come.
    pub fn admit(
        &self,
        config: &ProviderConfig,
        pass: Pass,
        claim: quota::Claim,
    ) -> Result<Vec<quota::Ticket>, Duration> {
        #[cfg(not(any(feature = "aws", feature = "gcp", feature = "azure")))]
        let _ = (pass, claim);
        match config {
            #[cfg(feature = "aws")]
            ProviderConfig::AwsSecurityGroup(group) => self.aws.admit(group, pass, claim),
            #[cfg(feature = "gcp")]
            ProviderConfig::GcpFirewall(firewall) => self.gcp.admit(firewall, pass, claim),
            #[cfg(feature = "azure")]
            ProviderConfig::AzureNetworkSecurityGroup(group) => self.azure.admit(group, pass, claim),
            _ => Ok(Vec::new()),
        }
    }

    /// The provider kinds ([`ProviderConfig::kind`]) this server was built with.
    pub fn kinds(&self) -> Vec<ProviderKind> {
        let built = [
            (ProviderKind::Memory, true),
            (ProviderKind::Aws, cfg!(feature = "aws")),
            (ProviderKind::Gcp, cfg!(feature = "gcp")),
            (ProviderKind::Azure, cfg!(feature = "azure")),
        ];
        built.into_iter().filter_map(|(kind, built)| built.then_some(kind)).collect()
    }

    /// The in-memory provider (tests and demos read its rules).
    pub fn memory(&self) -> &Arc<memory::MemoryFirewall> {
        &self.memory
    }

    /// The provider for a resource of an organization with `scopes`, its calls bounded by the
    /// deadline; a rejection when this server cannot reach it, Forbidden when it may not (see
    /// [`Providers::refusal`]).
    pub fn for_config(
        &self,
        config: &ProviderConfig,
        scopes: &CloudScopes,
    ) -> Result<Arc<dyn FirewallProvider>, ProviderError> {
        // A stored endpoint from before origins were enforced: its calls could land anywhere.
        if let Some(Err(why)) = config.endpoint_url().map(crate::domain::plain_origin) {
            return Err(ProviderError::Rejected(format!("endpoint_url {why}")));
        }
        if let Some((_, why)) = self.refusal(config, scopes) {
            return Err(ProviderError::Forbidden(why));
        }
        let inner: Arc<dyn FirewallProvider> = match config {
            ProviderConfig::Memory(_) => self.memory.clone(),
            #[cfg(feature = "aws")]
            ProviderConfig::AwsSecurityGroup(_) => self.aws.clone(),
            #[cfg(feature = "gcp")]
            ProviderConfig::GcpFirewall(_) => self.gcp.clone(),
            #[cfg(feature = "azure")]
            ProviderConfig::AzureNetworkSecurityGroup(_) => self.azure.clone(),
            #[allow(unreachable_patterns)]
            other => {
                return Err(ProviderError::Rejected(format!(
                    "this server was built without the {} provider",
                    other.kind()
                )));
            }
        };
        Ok(Arc::new(Bounded { inner, deadline: self.deadline, kind: config.kind() }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_carry_the_marker() {
        let owner = Owner {
            session_id: "0192".into(),
            expires_at: DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default(),
        };
        assert_eq!(owner.description(), "portcullis session 0192 until 2027-01-15T08:00:00Z");
        assert!(is_owned_description(&owner.description()));
        assert!(!is_owned_description("portcullisX session"));
        assert!(!is_owned_description("ssh from the office"));
    }

    /// A provider whose every call first waits for a token of one shared bucket (one call per
    /// 300 ms), then spends `on_the_wire` at the provider.
    struct Paced {
        bucket: quota::TokenBucket,
        on_the_wire: Duration,
    }

    #[async_trait]
    impl FirewallProvider for Paced {
        async fn apply(&self, _: &Target, rules: &[RuleRequest]) -> Vec<Result<String, ProviderError>> {
            self.bucket.take().await;
            tokio::time::sleep(self.on_the_wire).await;
            rules.iter().map(|rule| Ok(format!("rule-{}", rule.address))).collect()
        }

        async fn revoke(&self, _: &Target, rules: &[RuleRef]) -> Vec<Result<(), ProviderError>> {
            rules.iter().map(|_| Ok(())).collect()
        }

        async fn list(&self, _: &Target) -> Result<Listing, ProviderError> {
            Ok(Listing::default())
        }

        async fn check(&self, _: &Target) -> CheckOutcome {
            CheckOutcome::Ok("paced".into())
        }
    }

    /// Five calls at once, each bounded by `deadline`: their answers.
    async fn five_calls_at_once(on_the_wire: Duration, deadline: Duration) -> Vec<Result<String, ProviderError>> {
        let paced =
            Paced { bucket: quota::TokenBucket::new(quota::Rate { burst: 1, per_second: 1.0 / 0.3 }), on_the_wire };
        let bounded = Bounded { inner: Arc::new(paced), deadline, kind: ProviderKind::Memory };
        let target = Target {
            resource_id: "r".into(),
            organization_id: "o".into(),
            config: ProviderConfig::Memory(Default::default()),
        };
        let owner = Owner { session_id: "s".into(), expires_at: Utc::now() };
        let calls = (1..=5u8).map(|n| {
            let rule = RuleRequest { address: IpAddr::from([198, 51, 100, n]), owner: owner.clone() };
            let (bounded, target) = (&bounded, &target);
            async move { bounded.apply(target, &[rule]).await.remove(0) }
        });
        futures::future::join_all(calls).await
    }

    #[tokio::test]
    async fn waiting_for_the_quota_does_not_count_against_the_deadline() {
        // The fifth call waits 1.2 s for its token, beyond the 1 s deadline, then answers at once.
        let answers = five_calls_at_once(Duration::from_millis(10), Duration::from_secs(1)).await;
        let failed: Vec<_> = answers.iter().filter_map(|answer| answer.as_ref().err()).collect();
        assert!(failed.is_empty(), "calls behind our own pacing timed out: {failed:?}");
    }

    #[tokio::test]
    async fn a_provider_slower_than_the_deadline_still_times_out() {
        let answers = five_calls_at_once(Duration::from_secs(5), Duration::from_secs(1)).await;
        for answer in answers {
            let err = answer.expect_err("a call 5 s on the wire ends at the 1 s deadline");
            assert!(err.to_string().contains("did not answer within 1s"), "{err}");
        }
    }
}
