//! GCP VPC firewall rules.
//!
//! Strategy: one rule per resource and address family (GCP allows one family per rule), named
//! `portcullis-<resource id>-v4` / `-v6`, whose `sourceRanges` hold every live address. A
//! project has a quota of firewall rules, so a rule per grant would run out where this does not.
//! The price is that classic firewalls have no fingerprint: a PATCH replaces the whole list, so
//! writes to one resource must never interleave — the engine serializes them, across replicas too
//! (a database lease per resource). Every write carries a fresh `requestId` (the client's own
//! retries are then idempotent) and waits for its operation to finish. A list that would become
//! empty deletes the rule instead: an ingress rule without sources would allow everyone.
//!
//! Ownership: the rule's name is derived from the resource id and its description starts with
//! the marker; a rule of that name without the marker is someone else's and is never changed.

mod settings;

use super::family::{self, Family, FamilyRules, HostsChange, Updated, rule_description, rule_name};
use super::quota::{Buckets, Claim, Rate, Ticket};
use super::{
    CheckOutcome, FirewallProvider, Listing, OwnedRule, Pass, ProviderError, RuleRef, RuleRequest, Target, host_cidr,
    single_host,
};
use crate::domain::{GcpFirewall as GcpFirewallConfig, ProviderConfig};
use async_trait::async_trait;
use google_cloud_compute_v1::client::Firewalls;
use google_cloud_compute_v1::model::Firewall;
use google_cloud_compute_v1::model::firewall::{Allowed, Direction};
use google_cloud_gax::error::rpc::{Code, StatusDetails};
use google_cloud_lro::Poller;
pub use settings::GcpQuota;
use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::Duration;
use tokio::sync::Mutex;

type GcpError = google_cloud_compute_v1::Error;

/// One client per endpoint, built on first use, and one write bucket per endpoint and project.
pub struct GcpFirewall {
    anonymous: bool,
    clients: Mutex<HashMap<Option<String>, Firewalls>>,
    writes: Rate,
    /// By endpoint and project.
    buckets: Buckets<(Option<String>, String)>,
}

fn is_ours(rule: &Firewall, resource_id: &str) -> bool {
    rule.description.as_deref() == Some(rule_description(resource_id).as_str())
}

/// The single hosts a rule lets in.
fn hosts_of(rule: &Firewall) -> BTreeSet<IpAddr> {
    rule.source_ranges.iter().filter_map(|range| single_host(range)).collect()
}

fn config_of(target: &Target) -> Result<&GcpFirewallConfig, ProviderError> {
    match &target.config {
        ProviderConfig::GcpFirewall(config) => Ok(config),
        _ => Err(ProviderError::Rejected("not a GCP firewall resource".into())),
    }
}

fn network_url(config: &GcpFirewallConfig) -> String {
    if config.network.contains("/networks/") {
        config.network.clone()
    } else {
        format!("projects/{}/global/networks/{}", config.project, config.network)
    }
}

fn is_not_found(err: &GcpError) -> bool {
    err.http_status_code() == Some(404)
}

/// Reasons Compute gives for throttling: retried.
const THROTTLING_REASONS: &[&str] = &["rateLimitExceeded", "userRateLimitExceeded"];
/// Reasons Compute gives for its own failures: retried.
const TRANSIENT_REASONS: &[&str] = &["backendError", "internalError"];

/// The `errors[].reason` values of a Compute error (the client keeps them as ErrorInfo details).
fn reasons(err: &GcpError) -> Vec<&str> {
    err.status()
        .map(|status| {
            status
                .details
                .iter()
                .filter_map(|detail| match detail {
                    StatusDetails::ErrorInfo(info) => Some(info.reason.as_str()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Throttling (403 `rateLimitExceeded`, 429), 5xx and anything that never got an answer are
/// transient; an answered refusal is not.
/// What a caller may read about a failed Compute call: the HTTP status and Compute's reasons,
/// or the failed operation's code. Never the response body, headers or URL; the whole error
/// goes to the server log.
fn summary(err: &GcpError) -> String {
    tracing::debug!(error = %err, "compute call failed");
    let reasons = reasons(err).join(", ");
    match (err.http_status_code(), err.status().map(|status| status.code)) {
        (Some(http), _) if reasons.is_empty() => format!("Compute Engine answered HTTP {http}"),
        (Some(http), _) => format!("Compute Engine answered HTTP {http} ({reasons})"),
        (None, Some(code)) => format!("the Compute Engine operation failed: {code:?}"),
        (None, None) if err.is_authentication() => "no usable credentials for Compute Engine".to_owned(),
        (None, None) if err.is_timeout() => "Compute Engine did not answer in time".to_owned(),
        (None, None) => "Compute Engine could not be reached".to_owned(),
    }
}

fn classify(err: &GcpError) -> ProviderError {
    let text = summary(err);
    let reasons = reasons(err);
    if reasons.iter().any(|reason| THROTTLING_REASONS.contains(reason)) {
        return ProviderError::Throttled(text);
    }
    if reasons.iter().any(|reason| TRANSIENT_REASONS.contains(reason)) {
        return ProviderError::Transient(text);
    }
    match (err.http_status_code(), err.status().map(|status| status.code)) {
        (Some(429), _) => ProviderError::Throttled(text),
        (Some(500..), _) => ProviderError::Transient(text),
        (Some(_), _) => ProviderError::Rejected(text),
        // A failed operation: its status says why.
        (None, Some(Code::ResourceExhausted | Code::Unavailable | Code::Internal | Code::DeadlineExceeded)) => {
            ProviderError::Transient(text)
        }
        (None, Some(_)) => ProviderError::Rejected(text),
        (None, None) if err.is_authentication() => ProviderError::Rejected(text),
        (None, None) => ProviderError::Transient(text),
    }
}

/// The bucket a project's writes are paced on (per endpoint, so a fake never shares Compute's).
fn write_bucket(config: &GcpFirewallConfig) -> (Option<String>, String) {
    (config.endpoint_url.clone(), config.project.clone())
}

/// GCP wants a UUID; ours are time-ordered, which also reads well in its audit logs.
fn request_id() -> String {
    crate::domain::new_id()
}

impl GcpFirewall {
    /// `anonymous` sends no credentials (emulators and fakes); otherwise Application Default
    /// Credentials are used.
    /// Writes are paced to `quota`, of which this server spends `share`.
    pub fn new(anonymous: bool, quota: &GcpQuota, share: f64) -> GcpFirewall {
        GcpFirewall {
            anonymous,
            clients: Mutex::default(),
            writes: quota.writes.share(share),
            buckets: Buckets::default(),
        }
    }

    /// Waits until a write to `config`'s project fits its quota.
    async fn pace_write(&self, config: &GcpFirewallConfig) {
        self.buckets.take(write_bucket(config), self.writes).await;
    }

    /// Tickets for the writes of `pass` over `config`'s rule (one for removing, one for
    /// applying; reads are not paced) if `claim` gets them all.
    fn admit_for(&self, config: &GcpFirewallConfig, pass: Pass, claim: Claim) -> Result<Vec<Ticket>, Duration> {
        (0..pass.writes()).map(|_| self.buckets.admit(write_bucket(config), self.writes, claim)).collect()
    }

    async fn client(&self, config: &GcpFirewallConfig) -> Result<Firewalls, ProviderError> {
        let mut clients = self.clients.lock().await;
        if let Some(client) = clients.get(&config.endpoint_url) {
            return Ok(client.clone());
        }
        // Firewall operations finish in seconds: poll briskly at first.
        let polling = google_cloud_gax::exponential_backoff::ExponentialBackoffBuilder::new()
            .with_initial_delay(Duration::from_millis(100))
            .with_maximum_delay(Duration::from_secs(5))
            .clamp();
        let mut builder = Firewalls::builder().with_polling_backoff_policy(polling);
        if let Some(endpoint) = &config.endpoint_url {
            builder = builder.with_endpoint(endpoint);
        }
        if self.anonymous {
            builder = builder.with_credentials(google_cloud_auth::credentials::anonymous::Builder::new().build());
        }
        let client = builder
            .build()
            .await
            .map_err(|err| ProviderError::Transient(format!("building the GCP client failed: {err}")))?;
        super::make_room(&mut clients);
        clients.insert(config.endpoint_url.clone(), client.clone());
        Ok(client)
    }

    /// The rule, or None when it does not exist.
    async fn get(
        &self,
        client: &Firewalls,
        config: &GcpFirewallConfig,
        name: &str,
    ) -> Result<Option<Firewall>, ProviderError> {
        match client.get().set_project(&config.project).set_firewall(name).send().await {
            Ok(rule) => Ok(Some(rule)),
            Err(err) if is_not_found(&err) => Ok(None),
            Err(err) => Err(classify(&err)),
        }
    }

    /// Makes the family's rule hold exactly `hosts`: inserts, patches or deletes it, and waits.
    async fn write(
        &self,
        client: &Firewalls,
        target: &Target,
        config: &GcpFirewallConfig,
        family: Family,
        current: Option<&Firewall>,
        hosts: &BTreeSet<IpAddr>,
    ) -> Result<(), ProviderError> {
        let name = rule_name(&target.resource_id, family);
        let ranges: Vec<String> = hosts.iter().copied().map(host_cidr).collect();
        let unchanged = match current {
            None => hosts.is_empty(),
            Some(rule) => !hosts.is_empty() && hosts_of(rule) == *hosts,
        };
        if unchanged {
            return Ok(());
        }
        self.pace_write(config).await;
        let outcome = match (current, hosts.is_empty()) {
            (None, true) => return Ok(()),
            (None, false) => {
                let allowed = Allowed::new().set_ip_protocol(&config.protocol).set_ports(config.ports.clone());
                let rule = Firewall::new()
                    .set_name(&name)
                    .set_description(rule_description(&target.resource_id))
                    .set_network(network_url(config))
                    .set_direction(Direction::Ingress)
                    .set_priority(i32::from(config.priority))
                    .set_allowed([allowed])
                    .set_source_ranges(ranges)
                    .set_target_tags(config.target_tags.clone())
                    .set_target_service_accounts(config.target_service_accounts.clone());
                client
                    .insert()
                    .set_project(&config.project)
                    .set_request_id(request_id())
                    .set_body(rule)
                    .poller()
                    .until_done()
                    .await
            }
            (Some(_), true) => {
                client
                    .delete()
                    .set_project(&config.project)
                    .set_firewall(&name)
                    .set_request_id(request_id())
                    .poller()
                    .until_done()
                    .await
            }
            (Some(_), false) => {
                client
                    .patch()
                    .set_project(&config.project)
                    .set_firewall(&name)
                    .set_request_id(request_id())
                    .set_body(Firewall::new().set_source_ranges(ranges))
                    .poller()
                    .until_done()
                    .await
            }
        };
        match outcome {
            Ok(_) => Ok(()),
            // Deleted meanwhile: nothing is left to remove.
            Err(err) if hosts.is_empty() && is_not_found(&err) => Ok(()),
            // Created meanwhile (409) or any other race: the retry starts from a fresh read.
            Err(err) if err.http_status_code() == Some(409) => Err(ProviderError::Transient(summary(&err))),
            Err(err) => Err(classify(&err)),
        }
    }
}

#[async_trait]
impl FamilyRules for GcpFirewall {
    async fn update(
        &self,
        target: &Target,
        family: Family,
        change: &HostsChange<'_>,
    ) -> Result<Updated, ProviderError> {
        let config = config_of(target)?;
        let client = self.client(config).await?;
        let name = rule_name(&target.resource_id, family);
        let current = self.get(&client, config, &name).await?;
        if let Some(rule) = &current
            && !is_ours(rule, &target.resource_id)
        {
            return Ok(Updated::Foreign(name));
        }
        let mut hosts = current.as_ref().map(hosts_of).unwrap_or_default();
        change(&mut hosts);
        self.write(&client, target, config, family, current.as_ref(), &hosts).await?;
        Ok(Updated::Written(name))
    }
}

#[async_trait]
impl FirewallProvider for GcpFirewall {
    fn admit(&self, config: &ProviderConfig, pass: Pass, claim: Claim) -> Result<Vec<Ticket>, Duration> {
        match config {
            ProviderConfig::GcpFirewall(config) => self.admit_for(config, pass, claim),
            _ => Ok(Vec::new()),
        }
    }

    #[tracing::instrument(name = "provider.gcp.apply", skip_all, fields(resource_id = %target.resource_id, count = rules.len()))]
    async fn apply(&self, target: &Target, rules: &[RuleRequest]) -> Vec<Result<String, ProviderError>> {
        family::apply(self, target, rules).await
    }

    #[tracing::instrument(name = "provider.gcp.revoke", skip_all, fields(resource_id = %target.resource_id, count = rules.len()))]
    async fn revoke(&self, target: &Target, rules: &[RuleRef]) -> Vec<Result<(), ProviderError>> {
        family::revoke(self, target, rules).await
    }

    #[tracing::instrument(name = "provider.gcp.list", skip_all, fields(resource_id = %target.resource_id))]
    /// Sessions never ride on foreign GCP rules (ours hold whole lists), so only ours are read.
    async fn list(&self, target: &Target) -> Result<Listing, ProviderError> {
        let config = config_of(target)?;
        let client = self.client(config).await?;
        let mut owned = Vec::new();
        for family in Family::BOTH {
            let name = rule_name(&target.resource_id, family);
            let Some(rule) = self.get(&client, config, &name).await? else { continue };
            if !is_ours(&rule, &target.resource_id) {
                continue;
            }
            let description = rule.description.clone().unwrap_or_default();
            owned.extend(hosts_of(&rule).into_iter().map(|address| OwnedRule {
                rule_id: name.clone(),
                address,
                description: description.clone(),
            }));
        }
        Ok(Listing { owned, foreign: BTreeSet::new() })
    }

    #[tracing::instrument(name = "provider.gcp.check", skip_all, fields(resource_id = %target.resource_id))]
    async fn check(&self, target: &Target) -> CheckOutcome {
        let config = match config_of(target) {
            Ok(config) => config,
            Err(err) => return CheckOutcome::Unsupported(err.to_string()),
        };
        let client = match self.client(config).await {
            Ok(client) => client,
            Err(err) => return CheckOutcome::Unreachable(err.to_string()),
        };
        match client.list().set_project(&config.project).set_max_results(1_u32).send().await {
            Ok(_) => CheckOutcome::Ok(format!("firewall rules of project {} are readable", config.project)),
            Err(err) => match err.http_status_code() {
                Some(404) => CheckOutcome::NotFound(format!("project {} not found", config.project)),
                Some(401 | 403) => CheckOutcome::AccessDenied(format!(
                    "the credentials cannot read project {}: {}",
                    config.project,
                    summary(&err)
                )),
                _ => CheckOutcome::Unreachable(summary(&err)),
            },
        }
    }
}
