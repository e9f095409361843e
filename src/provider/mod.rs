//! Cloud firewalls behind one trait. Each provider lives in its own module; the engine only
//! sees [`FirewallProvider`].

pub mod memory;

use crate::domain::ProviderConfig;
use async_trait::async_trait;
use std::net::IpAddr;
use std::sync::Arc;

/// The firewall a call is about.
#[derive(Debug, Clone)]
pub struct Target {
    pub resource_id: String,
    pub config: ProviderConfig,
}

/// A rule to open: one host address, and the ownership marker the provider stores with it.
#[derive(Debug, Clone)]
pub struct RuleRequest {
    pub address: IpAddr,
    /// Names the owner (session, expiry) so orphans can be found and foreign rules left alone.
    pub description: String,
}

/// A rule to remove: by its provider id when known, else by address.
#[derive(Debug, Clone)]
pub struct RuleRef {
    pub address: IpAddr,
    pub rule_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// Worth retrying: throttling, timeouts, 5xx.
    #[error("temporary provider failure: {0}")]
    Transient(String),
    /// Retrying will not help: the provider refused the rule (quota, invalid address, no access).
    #[error("{0}")]
    Rejected(String),
}

/// One firewall API. Calls are batched: one call carries every address for one resource.
#[async_trait]
pub trait FirewallProvider: Send + Sync {
    /// Opens each address. Idempotent: an address that is already open answers with its
    /// existing rule id. One result per request, in order.
    async fn apply(&self, target: &Target, rules: &[RuleRequest]) -> Vec<Result<String, ProviderError>>;

    /// Removes each rule. A rule that is already gone counts as removed. One result per rule, in order.
    async fn revoke(&self, target: &Target, rules: &[RuleRef]) -> Vec<Result<(), ProviderError>>;
}

/// The providers this server was built with.
#[derive(Clone)]
pub struct Providers {
    memory: Arc<memory::MemoryFirewall>,
}

impl Providers {
    pub fn new(memory: memory::MemoryFirewall) -> Providers {
        Providers { memory: Arc::new(memory) }
    }

    /// The in-memory provider (tests and demos read its rules).
    pub fn memory(&self) -> &Arc<memory::MemoryFirewall> {
        &self.memory
    }

    /// The provider for a resource, or a rejection when this server cannot reach it.
    pub fn for_config(&self, config: &ProviderConfig) -> Result<Arc<dyn FirewallProvider>, ProviderError> {
        match config {
            ProviderConfig::Memory(_) => Ok(self.memory.clone()),
            other => {
                Err(ProviderError::Rejected(format!("this server was built without the {} provider", other.kind())))
            }
        }
    }
}
