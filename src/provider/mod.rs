//! Cloud firewalls behind one trait. Each provider lives in its own module (and, for the cloud
//! ones, behind a Cargo feature); the engine only sees [`FirewallProvider`].

#[cfg(feature = "aws")]
pub mod aws;
#[cfg(feature = "azure")]
pub mod azure;
mod bounded;
#[cfg(any(feature = "gcp", feature = "azure"))]
mod family;
#[cfg(feature = "gcp")]
pub mod gcp;
pub mod host;
pub mod memory;
pub mod quota;
mod registry;

pub use registry::{Providers, ProvidersConfig};

use crate::domain::ProviderConfig;
use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

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

impl Pass {
    /// The writes of a pass to a firewall written once per change (GCP, Azure): one for the
    /// removals and one for the additions, none for a listing.
    pub fn writes(self) -> usize {
        match self {
            Pass::Listing => 0,
            Pass::Rules { removes, applies, .. } => usize::from(removes) + usize::from(applies),
        }
    }
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

    /// Reserves the quota a pass over the firewall configured as `config` needs, if `claim`
    /// gets it (see [`Providers::admit`]); otherwise answers how long until it would. A
    /// provider without quotas needs nothing.
    fn admit(&self, config: &ProviderConfig, pass: Pass, claim: quota::Claim) -> Result<Vec<quota::Ticket>, Duration> {
        let _ = (config, pass, claim);
        Ok(Vec::new())
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
}
