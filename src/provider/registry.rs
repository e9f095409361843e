//! The providers this server was built with, by kind, and their settings.

#[cfg(feature = "aws")]
use super::aws;
#[cfg(feature = "azure")]
use super::azure;
use super::bounded::Bounded;
#[cfg(feature = "gcp")]
use super::gcp;
use super::{FirewallProvider, Pass, ProviderError, memory, quota};
use crate::domain::{CloudScopes, ProviderConfig, ProviderKind};
use crate::settings::Unworkable;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
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

/// The providers this server was built with.
#[derive(Clone)]
pub struct Providers {
    by_kind: BTreeMap<ProviderKind, Arc<dyn FirewallProvider>>,
    memory: Arc<memory::MemoryFirewall>,
    /// The longest any one call may take.
    deadline: Duration,
    /// Endpoints besides the clouds' own that resources may call (`providers.allowed_endpoints`).
    allowed_endpoints: Arc<[String]>,
}

impl Providers {
    /// Every provider this server was built with; each call ends within `deadline`.
    pub fn new(memory: memory::MemoryFirewall, config: &ProvidersConfig, deadline: Duration) -> Providers {
        let memory = Arc::new(memory);
        let mut by_kind: BTreeMap<ProviderKind, Arc<dyn FirewallProvider>> = BTreeMap::new();
        by_kind.insert(ProviderKind::Memory, memory.clone());
        #[cfg(feature = "aws")]
        by_kind.insert(ProviderKind::Aws, Arc::new(aws::AwsFirewall::new(&config.aws_quota, config.quota_share)));
        #[cfg(feature = "gcp")]
        by_kind.insert(
            ProviderKind::Gcp,
            Arc::new(gcp::GcpFirewall::new(config.gcp_anonymous, &config.gcp_quota, config.quota_share)),
        );
        #[cfg(feature = "azure")]
        by_kind.insert(
            ProviderKind::Azure,
            Arc::new(azure::AzureFirewall::new(config.azure_anonymous, &config.azure_quota, config.quota_share)),
        );
        Providers { by_kind, memory, deadline, allowed_endpoints: config.allowed_endpoints.clone().into() }
    }

    /// The same, with host resources served through `hosts` (which needs the database).
    pub fn with_hosts(mut self, hosts: super::host::HostFirewalls) -> Providers {
        self.by_kind.insert(ProviderKind::Host, Arc::new(hosts));
        self
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
        match self.by_kind.get(&config.kind()) {
            Some(provider) => provider.admit(config, pass, claim),
            None => Ok(Vec::new()),
        }
    }

    /// The provider kinds ([`ProviderConfig::kind`]) this server was built with.
    pub fn kinds(&self) -> Vec<ProviderKind> {
        self.by_kind.keys().copied().collect()
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
        let Some(inner) = self.by_kind.get(&config.kind()).cloned() else {
            return Err(ProviderError::Rejected(format!(
                "this server was built without the {} provider",
                config.kind()
            )));
        };
        Ok(Arc::new(Bounded { inner, deadline: self.deadline, kind: config.kind() }))
    }
}
