//! Azure network security groups, through Resource Manager's REST API (no maintained Rust crate
//! covers Microsoft.Network), with tokens from `azure_identity`.
//!
//! Strategy, as for GCP: one inbound Allow rule per resource and address family, named
//! `portcullis-<resource id>-v4` / `-v6`, whose `sourceAddressPrefixes` hold every live address
//! (Azure allows thousands per rule), its description carrying the ownership marker; a list
//! that would become empty deletes the rule. A PUT replaces a rule whole, and Microsoft.Network
//! offers no conditional write to guard it: the REST specification declares no `If-Match` for
//! `SecurityRules_CreateOrUpdate`, and Azure/azure-rest-api-specs#6789 reports the ETag ignored
//! on security group PUTs. So writes to one resource are serialized by the engine's lease per
//! resource, across replicas too, and the ETag is not sent.
//!
//! Priorities: inbound rules of one group need distinct priorities. Ours keep theirs; a new one
//! takes the lowest of the resource's range that no other inbound rule holds. Two resources on
//! one group racing for a priority meet Azure's `SecurityRuleConflict`, retried from a fresh read.
//!
//! Writes are long-running operations: the `Azure-AsyncOperation` (else `Location`) URL is
//! polled until the operation ends, within the engine's deadline for the call. Polls and calls
//! go only to the endpoint the resource names (the token never follows a URL elsewhere, nor a
//! redirect). 429 and 5xx answers are retried after their `Retry-After`; other refusals fail
//! with Resource Manager's error code and message only.

mod settings;

use super::family::{self, Family, FamilyRules, HostsChange, Updated, rule_description, rule_name};
use super::quota::{Buckets, Claim, Rate, Ticket};
use super::{
    CheckOutcome, FirewallProvider, Listing, OwnedRule, Pass, ProviderError, RuleRef, RuleRequest, Target, host_cidr,
    single_host,
};
use crate::domain::{AZURE_RESOURCE_MANAGERS, AzureNetworkSecurityGroup, ProviderConfig, glob_matches};
use async_trait::async_trait;
use azure_core::credentials::{Secret, TokenCredential};
use azure_identity::{
    ClientSecretCredential, ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId,
    WorkloadIdentityCredential,
};
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{Method, StatusCode, Url};
use serde_json::{Value, json};
pub use settings::AzureQuota;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// The Microsoft.Network API version every call uses.
pub const API_VERSION: &str = "2024-05-01";
/// The Microsoft.Authorization API version of the permissions read by CheckResource.
const PERMISSIONS_API_VERSION: &str = "2022-04-01";
/// Resource Manager of the public cloud: where calls go unless the resource names another.
const PUBLIC_RESOURCE_MANAGER: &str = "https://management.azure.com";
/// The action our writes need on the group.
pub const WRITE_ACTION: &str = "Microsoft.Network/networkSecurityGroups/securityRules/write";
/// Retries of one request answered 429 or 5xx, each after its `Retry-After`.
const RETRIES: u32 = 3;
/// The longest `Retry-After` waited inside a call; longer ones go back to the engine's backoff.
const LONGEST_RETRY_AFTER: Duration = Duration::from_secs(10);
/// Operation polls start this soon and double up to [`POLL_MAX`]; a `Retry-After` is a ceiling
/// (Microsoft.Network asks for 10 s where its operations end in one or two).
const POLL_FIRST: Duration = Duration::from_millis(200);
const POLL_MAX: Duration = Duration::from_secs(2);

/// Where tokens come from.
enum Credential {
    /// No token (fakes only: `providers.azure_anonymous`).
    Anonymous,
    Token(Arc<dyn TokenCredential>),
    /// The environment named a credential that cannot be built; every call says why.
    Unusable(String),
}

/// Calls for every Azure resource, paced per endpoint and subscription.
pub struct AzureFirewall {
    http: reqwest::Client,
    credential: Credential,
    writes: Rate,
    /// By endpoint and subscription.
    buckets: Buckets<(Option<String>, String)>,
}

/// The resource's settings.
fn config_of(target: &Target) -> Result<&AzureNetworkSecurityGroup, ProviderError> {
    match &target.config {
        ProviderConfig::AzureNetworkSecurityGroup(config) => Ok(config),
        _ => Err(ProviderError::Rejected("not an Azure network security group resource".into())),
    }
}

/// The Resource Manager the resource's calls go to, as a parsed origin. An endpoint with a path,
/// query or fragment would carry the token to another tenant's resource: it is refused.
fn resource_manager(config: &AzureNetworkSecurityGroup) -> Result<Url, ProviderError> {
    let origin = match config.endpoint_url.as_deref() {
        Some(endpoint) => crate::domain::plain_origin(endpoint)
            .map_err(|why| ProviderError::Rejected(format!("endpoint_url {why}")))?,
        None => PUBLIC_RESOURCE_MANAGER.to_owned(),
    };
    Url::parse(&origin).map_err(|_| ProviderError::Rejected(format!("endpoint_url {origin:?} is not a URL")))
}

/// `url` with `segments` appended, each encoded as one segment (a `/`, `?` or `#` in a name
/// stays inside it).
fn with_segments<'a>(mut url: Url, segments: impl IntoIterator<Item = &'a str>) -> Result<Url, ProviderError> {
    url.path_segments_mut()
        .map_err(|()| ProviderError::Rejected("Azure Resource Manager's URL cannot hold a path".into()))?
        .extend(segments);
    Ok(url)
}

fn group_url(config: &AzureNetworkSecurityGroup) -> Result<Url, ProviderError> {
    let group = [
        "subscriptions",
        config.subscription_id.as_str(),
        "resourceGroups",
        config.resource_group.as_str(),
        "providers",
        "Microsoft.Network",
        "networkSecurityGroups",
        config.nsg_name.as_str(),
    ];
    with_segments(resource_manager(config)?, group)
}

fn rule_url(config: &AzureNetworkSecurityGroup, name: &str) -> Result<Url, ProviderError> {
    with_segments(group_url(config)?, ["securityRules", name])
}

/// Whether `url` is one the resource's calls may go to: on its Resource Manager and inside its
/// subscription (checked against the organization's scopes when the provider was chosen). Our
/// URLs are; this holds the operation URLs Resource Manager hands back to the same.
fn within_scope(url: &Url, config: &AzureNetworkSecurityGroup) -> Result<(), ProviderError> {
    let base = resource_manager(config)?;
    let same_origin = url.scheme() == base.scheme()
        && url.host_str() == base.host_str()
        && url.port_or_known_default() == base.port_or_known_default();
    if !same_origin {
        return Err(ProviderError::Rejected(
            "Azure Resource Manager pointed at another host; the call was not followed".into(),
        ));
    }
    let mut segments = url.path_segments().into_iter().flatten();
    let in_subscription = segments.next() == Some("subscriptions")
        && segments.next().is_some_and(|id| id.eq_ignore_ascii_case(&config.subscription_id));
    if !in_subscription {
        return Err(ProviderError::Rejected(
            "Azure Resource Manager pointed outside the resource's subscription; the call was not followed".into(),
        ));
    }
    Ok(())
}

/// The token scope for the Resource Manager `url` is on: a sovereign cloud's own, else the
/// public one (a private endpoint or a test server stands in for it).
fn token_scope(url: &Url) -> String {
    match url.host_str().filter(|host| AZURE_RESOURCE_MANAGERS.contains(host)) {
        Some(host) => format!("https://{host}/.default"),
        None => format!("{PUBLIC_RESOURCE_MANAGER}/.default"),
    }
}

/// The bucket a subscription's writes are paced on (per endpoint, so a fake never shares Azure's).
fn write_bucket(config: &AzureNetworkSecurityGroup) -> (Option<String>, String) {
    (config.endpoint_url.clone(), config.subscription_id.to_ascii_lowercase())
}

/// A rule as Resource Manager shows it (the parts we read).
struct SecurityRule {
    name: String,
    description: String,
    priority: Option<u16>,
    inbound: bool,
    sources: BTreeSet<IpAddr>,
    /// A write Azure failed to apply leaves the rule `Failed`: it is written again whatever
    /// it holds.
    failed: bool,
}

impl SecurityRule {
    fn from_json(rule: &Value) -> SecurityRule {
        let properties = &rule["properties"];
        let text = |value: &Value| value.as_str().unwrap_or_default().to_owned();
        let mut sources: BTreeSet<IpAddr> = properties["sourceAddressPrefixes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|prefix| prefix.as_str().and_then(single_host))
            .collect();
        sources.extend(properties["sourceAddressPrefix"].as_str().and_then(single_host));
        SecurityRule {
            name: text(&rule["name"]),
            description: text(&properties["description"]),
            priority: properties["priority"].as_u64().and_then(|p| u16::try_from(p).ok()),
            inbound: properties["direction"].as_str().is_some_and(|d| d.eq_ignore_ascii_case("Inbound")),
            sources,
            failed: properties["provisioningState"].as_str() == Some("Failed"),
        }
    }

    fn is_ours(&self, resource_id: &str) -> bool {
        self.description == rule_description(resource_id)
    }
}

/// Resource Manager's error body: `{"error": {"code", "message"}}`. Nothing else an endpoint
/// answers is ever repeated (it could be any page).
fn arm_error(body: &[u8]) -> Option<(String, String)> {
    let body: Value = serde_json::from_slice(body).ok()?;
    let error = &body["error"];
    let code = error["code"].as_str()?.chars().take(100).collect();
    let message = error["message"].as_str().unwrap_or_default().chars().take(300).collect();
    Some((code, message))
}

/// Codes Resource Manager gives for a write that raced another: retried from a fresh read.
const RACING_CODES: &[&str] = &["AnotherOperationInProgress", "SecurityRuleConflict", "RetryableError", "Conflict"];

/// What a refused request means for the rule.
fn classify(status: StatusCode, body: &[u8]) -> ProviderError {
    let said = arm_error(body);
    let text = match &said {
        Some((code, message)) => {
            format!("Azure Resource Manager answered HTTP {} ({code}: {message})", status.as_u16())
        }
        None => format!("Azure Resource Manager answered HTTP {}", status.as_u16()),
    };
    let code = said.as_ref().map(|(code, _)| code.as_str()).unwrap_or_default();
    match status.as_u16() {
        429 => ProviderError::Throttled(text),
        500.. => ProviderError::Transient(text),
        _ if RACING_CODES.contains(&code) => ProviderError::Transient(text),
        _ => ProviderError::Rejected(text),
    }
}

/// How long a 429 or 5xx answer asks to wait (seconds; the HTTP-date form is read as 1 s).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    Some(value.trim().parse::<u64>().map(Duration::from_secs).unwrap_or(Duration::from_secs(1)))
}

/// An answer read whole.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

impl AzureFirewall {
    /// Tokens from the environment: a service principal (`AZURE_TENANT_ID`, `AZURE_CLIENT_ID`,
    /// `AZURE_CLIENT_SECRET`), else workload identity (`AZURE_FEDERATED_TOKEN_FILE`), else the
    /// managed identity (user-assigned when `AZURE_CLIENT_ID` names one); `anonymous` sends none.
    /// Writes are paced to `quota`, of which this server spends `share`.
    pub fn new(anonymous: bool, quota: &AzureQuota, share: f64) -> AzureFirewall {
        let credential = if anonymous { Credential::Anonymous } else { credential_from_environment() };
        AzureFirewall::with(credential, quota, share)
    }

    /// Tokens from `credential`.
    pub fn with_credential(credential: Arc<dyn TokenCredential>, quota: &AzureQuota, share: f64) -> AzureFirewall {
        AzureFirewall::with(Credential::Token(credential), quota, share)
    }

    fn with(credential: Credential, quota: &AzureQuota, share: f64) -> AzureFirewall {
        // No redirects: a token must never follow a Location elsewhere.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        AzureFirewall { http, credential, writes: quota.writes.share(share), buckets: Buckets::default() }
    }

    /// Tickets for the writes of `pass` over `config`'s rules (one for removing, one for
    /// applying; reads are not paced) if `claim` gets them all.
    fn admit_for(&self, config: &AzureNetworkSecurityGroup, pass: Pass, claim: Claim) -> Result<Vec<Ticket>, Duration> {
        (0..pass.writes()).map(|_| self.buckets.admit(write_bucket(config), self.writes, claim)).collect()
    }

    async fn token(&self, url: &Url) -> Result<Option<Secret>, ProviderError> {
        match &self.credential {
            Credential::Anonymous => Ok(None),
            Credential::Unusable(why) => Err(ProviderError::Rejected(why.clone())),
            Credential::Token(credential) => {
                let scope = token_scope(url);
                match credential.get_token(&[scope.as_str()], None).await {
                    Ok(token) => Ok(Some(token.token)),
                    Err(err) => {
                        tracing::warn!(error = %err, "azure token request failed");
                        Err(ProviderError::Transient("no Azure token could be obtained".into()))
                    }
                }
            }
        }
    }

    /// Sends one request to `url` (which must be [`within_scope`]), retrying 429 and 5xx after
    /// their `Retry-After`, and reads the answer whole.
    async fn send(
        &self,
        config: &AzureNetworkSecurityGroup,
        method: Method,
        mut url: Url,
        body: Option<&Value>,
    ) -> Result<Answer, ProviderError> {
        within_scope(&url, config)?;
        let token = self.token(&url).await?;
        // Operation URLs come with their api-version; ours get the Network one.
        if !url.query_pairs().any(|(name, _)| name == "api-version") {
            url.query_pairs_mut().append_pair("api-version", API_VERSION);
        }
        let mut attempt = 0;
        loop {
            let mut request = self.http.request(method.clone(), url.clone());
            if let Some(token) = &token {
                request = request.bearer_auth(token.secret());
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = request.send().await.map_err(|err| {
                tracing::debug!(error = %err, "azure resource manager call failed");
                ProviderError::Transient("Azure Resource Manager could not be reached".into())
            })?;
            let (status, headers) = (response.status(), response.headers().clone());
            let body = response
                .bytes()
                .await
                .map_err(|_| ProviderError::Transient("Azure Resource Manager's answer was cut off".into()))?
                .to_vec();
            let retryable = status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
            match retry_after(&headers).filter(|wait| retryable && attempt < RETRIES && *wait <= LONGEST_RETRY_AFTER) {
                Some(wait) => {
                    attempt += 1;
                    tokio::time::sleep(wait).await;
                }
                None => return Ok(Answer { status, headers, body }),
            }
        }
    }

    /// The group, or a refusal (a missing group is one: its sessions cannot be served).
    async fn group(&self, config: &AzureNetworkSecurityGroup) -> Result<Value, ProviderError> {
        let answer = self.send(config, Method::GET, group_url(config)?, None).await?;
        match answer.status {
            status if status.is_success() => Ok(answer.json()),
            StatusCode::NOT_FOUND => Err(ProviderError::Rejected(format!(
                "network security group {} not found in resource group {}",
                config.nsg_name, config.resource_group
            ))),
            status => Err(classify(status, &answer.body)),
        }
    }

    /// Waits for the long-running operation a write started, if it started one.
    async fn finish(&self, config: &AzureNetworkSecurityGroup, started: &Answer) -> Result<(), ProviderError> {
        let header = |name: &str| started.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let (url, by_status) = match (header("azure-asyncoperation"), header("location")) {
            (Some(url), _) => (url, false),
            (None, Some(url)) => (url, true),
            (None, None) => return Ok(()),
        };
        let url = Url::parse(&url).map_err(|_| {
            ProviderError::Transient("Azure Resource Manager answered an operation URL that is not one".into())
        })?;
        let mut wait = POLL_FIRST;
        loop {
            tokio::time::sleep(wait).await;
            let answer = self.send(config, Method::GET, url.clone(), None).await?;
            if by_status {
                // A Location URL answers 202 while the operation runs.
                match answer.status {
                    StatusCode::ACCEPTED => {}
                    status if status.is_success() => return Ok(()),
                    status => return Err(classify(status, &answer.body)),
                }
            } else {
                if !answer.status.is_success() {
                    return Err(classify(answer.status, &answer.body));
                }
                let operation = answer.json();
                match operation["status"].as_str().unwrap_or_default() {
                    "Succeeded" => return Ok(()),
                    "Failed" | "Canceled" => {
                        return Err(match arm_error(&answer.body) {
                            Some((code, message)) if RACING_CODES.contains(&code.as_str()) => {
                                ProviderError::Transient(format!("the Azure operation failed ({code}: {message})"))
                            }
                            Some((code, message)) => {
                                ProviderError::Rejected(format!("the Azure operation failed ({code}: {message})"))
                            }
                            None => ProviderError::Transient("the Azure operation failed".into()),
                        });
                    }
                    _ => {}
                }
            }
            let asked = retry_after(&answer.headers).unwrap_or(POLL_MAX);
            wait = (wait * 2).min(POLL_MAX).min(asked.max(POLL_FIRST));
        }
    }

    /// Makes the family's rule hold exactly `hosts`: creates, replaces or deletes it, and waits.
    async fn write(
        &self,
        config: &AzureNetworkSecurityGroup,
        target: &Target,
        name: &str,
        current: Option<&SecurityRule>,
        taken: &BTreeSet<u16>,
        hosts: &BTreeSet<IpAddr>,
    ) -> Result<(), ProviderError> {
        let unchanged = match current {
            None => hosts.is_empty(),
            Some(rule) => !hosts.is_empty() && rule.sources == *hosts && !rule.failed,
        };
        if unchanged {
            return Ok(());
        }
        let url = rule_url(config, name)?;
        if hosts.is_empty() {
            self.buckets.take(write_bucket(config), self.writes).await;
            let answer = self.send(config, Method::DELETE, url, None).await?;
            return match answer.status {
                // Gone already (204), or deleted (200, 202 then the operation).
                StatusCode::NO_CONTENT | StatusCode::NOT_FOUND => Ok(()),
                status if status.is_success() => self.finish(config, &answer).await,
                status => Err(classify(status, &answer.body)),
            };
        }
        let priority = match current.and_then(|rule| rule.priority) {
            Some(priority) => priority,
            None => (config.priority_first..=config.priority_last).find(|p| !taken.contains(p)).ok_or_else(|| {
                ProviderError::Rejected(format!(
                    "no free priority in {}..{} on network security group {}: other inbound rules hold every one",
                    config.priority_first, config.priority_last, config.nsg_name
                ))
            })?,
        };
        let sources: Vec<String> = hosts.iter().copied().map(host_cidr).collect();
        let body = json!({"properties": {
            "description": rule_description(&target.resource_id),
            "protocol": config.protocol,
            "sourcePortRange": "*",
            "destinationPortRanges": config.destination_port_ranges,
            "sourceAddressPrefixes": sources,
            "destinationAddressPrefix": config.destination_address_prefix,
            "access": "Allow",
            "priority": priority,
            "direction": "Inbound",
        }});
        self.buckets.take(write_bucket(config), self.writes).await;
        let answer = self.send(config, Method::PUT, url, Some(&body)).await?;
        match answer.status {
            status if status.is_success() => self.finish(config, &answer).await,
            status => Err(classify(status, &answer.body)),
        }
    }

    /// What the identity may do on the group, read from Microsoft.Authorization; None when the
    /// permissions cannot be read.
    async fn can_write(&self, config: &AzureNetworkSecurityGroup) -> Option<bool> {
        let mut url =
            with_segments(group_url(config).ok()?, ["providers", "Microsoft.Authorization", "permissions"]).ok()?;
        url.query_pairs_mut().append_pair("api-version", PERMISSIONS_API_VERSION);
        let answer = self.send(config, Method::GET, url, None).await.ok()?;
        answer.status.is_success().then(|| grants(&answer.json(), WRITE_ACTION))
    }
}

/// Whether a permissions listing (`{"value": [{"actions", "notActions"}]}`) grants `action`:
/// some entry's actions match it and none of that entry's notActions do.
fn grants(permissions: &Value, action: &str) -> bool {
    let matches = |patterns: &Value| {
        // Azure compares actions without regard to case.
        let action = action.to_ascii_lowercase();
        patterns
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .any(|pattern| glob_matches(&pattern.to_ascii_lowercase(), &action))
    };
    permissions["value"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|entry| matches(&entry["actions"]) && !matches(&entry["notActions"]))
}

fn credential_from_environment() -> Credential {
    let var = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
    let made: azure_core::Result<Arc<dyn TokenCredential>> =
        match (var("AZURE_TENANT_ID"), var("AZURE_CLIENT_ID"), var("AZURE_CLIENT_SECRET")) {
            (Some(tenant), Some(client), Some(secret)) => {
                ClientSecretCredential::new(&tenant, client, Secret::new(secret), None)
                    .map(|c| c as Arc<dyn TokenCredential>)
            }
            _ if var("AZURE_FEDERATED_TOKEN_FILE").is_some() => {
                WorkloadIdentityCredential::new(None).map(|c| c as Arc<dyn TokenCredential>)
            }
            _ => {
                let user_assigned_id = var("AZURE_CLIENT_ID").map(UserAssignedId::ClientId);
                let options = ManagedIdentityCredentialOptions { user_assigned_id, ..Default::default() };
                ManagedIdentityCredential::new(Some(options)).map(|c| c as Arc<dyn TokenCredential>)
            }
        };
    match made {
        Ok(credential) => Credential::Token(credential),
        Err(err) => Credential::Unusable(format!("no usable Azure credentials: {err}")),
    }
}

#[async_trait]
impl FamilyRules for AzureFirewall {
    async fn update(
        &self,
        target: &Target,
        family: Family,
        change: &HostsChange<'_>,
    ) -> Result<Updated, ProviderError> {
        let config = config_of(target)?;
        let group = self.group(config).await?;
        let name = rule_name(&target.resource_id, family);
        let rules: Vec<SecurityRule> = group["properties"]["securityRules"]
            .as_array()
            .into_iter()
            .flatten()
            .map(SecurityRule::from_json)
            .collect();
        let current = rules.iter().find(|rule| rule.name.eq_ignore_ascii_case(&name));
        if let Some(rule) = current
            && !rule.is_ours(&target.resource_id)
        {
            return Ok(Updated::Foreign(name));
        }
        let taken: BTreeSet<u16> = rules
            .iter()
            .filter(|rule| rule.inbound && !rule.name.eq_ignore_ascii_case(&name))
            .filter_map(|rule| rule.priority)
            .collect();
        let mut hosts = current.map(|rule| rule.sources.clone()).unwrap_or_default();
        change(&mut hosts);
        self.write(config, target, &name, current, &taken, &hosts).await?;
        Ok(Updated::Written(name))
    }
}

#[async_trait]
impl FirewallProvider for AzureFirewall {
    fn admit(&self, config: &ProviderConfig, pass: Pass, claim: Claim) -> Result<Vec<Ticket>, Duration> {
        match config {
            ProviderConfig::AzureNetworkSecurityGroup(config) => self.admit_for(config, pass, claim),
            _ => Ok(Vec::new()),
        }
    }

    #[tracing::instrument(name = "provider.azure.apply", skip_all, fields(resource_id = %target.resource_id, count = rules.len()))]
    async fn apply(&self, target: &Target, rules: &[RuleRequest]) -> Vec<Result<String, ProviderError>> {
        family::apply(self, target, rules).await
    }

    #[tracing::instrument(name = "provider.azure.revoke", skip_all, fields(resource_id = %target.resource_id, count = rules.len()))]
    async fn revoke(&self, target: &Target, rules: &[RuleRef]) -> Vec<Result<(), ProviderError>> {
        family::revoke(self, target, rules).await
    }

    /// Sessions never ride on foreign rules here (ours hold whole lists), so only ours are read.
    #[tracing::instrument(name = "provider.azure.list", skip_all, fields(resource_id = %target.resource_id))]
    async fn list(&self, target: &Target) -> Result<Listing, ProviderError> {
        let config = config_of(target)?;
        let group = self.group(config).await?;
        let names: Vec<String> = Family::BOTH.iter().map(|family| rule_name(&target.resource_id, *family)).collect();
        let mut owned = Vec::new();
        for rule in group["properties"]["securityRules"].as_array().into_iter().flatten().map(SecurityRule::from_json) {
            if !names.iter().any(|name| name.eq_ignore_ascii_case(&rule.name)) || !rule.is_ours(&target.resource_id) {
                continue;
            }
            owned.extend(rule.sources.iter().map(|address| OwnedRule {
                rule_id: rule.name.clone(),
                address: *address,
                description: rule.description.clone(),
            }));
        }
        Ok(Listing { owned, foreign: BTreeSet::new() })
    }

    #[tracing::instrument(name = "provider.azure.check", skip_all, fields(resource_id = %target.resource_id))]
    async fn check(&self, target: &Target) -> CheckOutcome {
        let (config, url) = match config_of(target).and_then(|config| Ok((config, group_url(config)?))) {
            Ok(found) => found,
            Err(err) => return CheckOutcome::Unsupported(err.to_string()),
        };
        let answer = match self.send(config, Method::GET, url, None).await {
            Ok(answer) => answer,
            Err(err) => return CheckOutcome::Unreachable(err.to_string()),
        };
        let group = &config.nsg_name;
        match answer.status {
            status if status.is_success() => match self.can_write(config).await {
                Some(true) => CheckOutcome::Ok(format!("network security group {group} is readable and writable")),
                Some(false) => CheckOutcome::AccessDenied(format!(
                    "network security group {group} is readable, but the identity may not write its rules \
                     ({WRITE_ACTION})"
                )),
                None => CheckOutcome::Ok(format!(
                    "network security group {group} is readable (the identity's permissions could not be read)"
                )),
            },
            StatusCode::NOT_FOUND => CheckOutcome::NotFound(format!(
                "network security group {group} not found in resource group {}",
                config.resource_group
            )),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => CheckOutcome::AccessDenied(format!(
                "the identity cannot read network security group {group}: {}",
                classify(answer.status, &answer.body)
            )),
            status => CheckOutcome::Unreachable(classify(status, &answer.body).to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_patterns_grant_as_azure_reads_them() {
        let listing = |actions: &[&str], not: &[&str]| json!({"value": [{"actions": actions, "notActions": not}]});
        assert!(grants(&listing(&["*"], &[]), WRITE_ACTION));
        assert!(grants(&listing(&["Microsoft.Network/networkSecurityGroups/*"], &[]), WRITE_ACTION));
        assert!(grants(&listing(&["microsoft.network/networksecuritygroups/securityrules/write"], &[]), WRITE_ACTION));
        assert!(!grants(&listing(&["*/read"], &[]), WRITE_ACTION));
        assert!(!grants(&listing(&["*"], &["Microsoft.Network/*/write"]), WRITE_ACTION));
        assert!(!grants(&json!({}), WRITE_ACTION));
    }

    #[test]
    fn only_resource_managers_error_shape_is_repeated() {
        let said = classify(StatusCode::FORBIDDEN, br#"{"error": {"code": "AuthorizationFailed", "message": "no"}}"#);
        assert_eq!(
            said,
            ProviderError::Rejected("Azure Resource Manager answered HTTP 403 (AuthorizationFailed: no)".into())
        );
        let page = classify(StatusCode::BAD_REQUEST, b"<html>internal SECRET</html>");
        assert_eq!(page, ProviderError::Rejected("Azure Resource Manager answered HTTP 400".into()));
        let racing = classify(StatusCode::CONFLICT, br#"{"error": {"code": "AnotherOperationInProgress"}}"#);
        assert!(matches!(racing, ProviderError::Transient(_)), "{racing:?}");
        assert!(matches!(classify(StatusCode::TOO_MANY_REQUESTS, b""), ProviderError::Throttled(_)));
    }

    fn group_on(endpoint: Option<&str>) -> AzureNetworkSecurityGroup {
        AzureNetworkSecurityGroup {
            subscription_id: "6f1c3a52-9d0e-4b8f-a1c2-3d4e5f607182".into(),
            resource_group: "rg".into(),
            nsg_name: "nsg".into(),
            protocol: "Tcp".into(),
            destination_port_ranges: vec!["22".into()],
            destination_address_prefix: "*".into(),
            priority_first: 3000,
            priority_last: 3099,
            endpoint_url: endpoint.map(str::to_owned),
        }
    }

    #[test]
    fn tokens_are_asked_for_the_cloud_the_resource_calls() {
        let scope = |endpoint| token_scope(&group_url(&group_on(endpoint)).unwrap());
        assert_eq!(scope(None), "https://management.azure.com/.default");
        assert_eq!(
            scope(Some("https://management.usgovcloudapi.net/")),
            "https://management.usgovcloudapi.net/.default"
        );
        // A private endpoint or a test server stands in for the public cloud.
        assert_eq!(scope(Some("http://127.0.0.1:9000")), "https://management.azure.com/.default");
        assert_eq!(
            group_url(&group_on(Some("http://127.0.0.1:9000/"))).unwrap().as_str(),
            "http://127.0.0.1:9000/subscriptions/6f1c3a52-9d0e-4b8f-a1c2-3d4e5f607182/resourceGroups/rg/providers/\
             Microsoft.Network/networkSecurityGroups/nsg"
        );
    }

    #[test]
    fn names_stay_inside_their_segment() {
        let url = rule_url(&group_on(None), "a/../../x?y#z").unwrap();
        assert!(url.path().ends_with("/securityRules/a%2F..%2F..%2Fx%3Fy%23z"), "{url}");
        assert!(url.query().is_none() && url.fragment().is_none(), "{url}");
    }

    #[test]
    fn calls_stay_on_the_resource_endpoint_and_subscription() {
        let config = group_on(None);
        let url = |text: &str| Url::parse(text).unwrap();
        let operation = "https://management.azure.com/subscriptions/6F1C3A52-9d0e-4b8f-a1c2-3d4e5f607182/providers/\
                         Microsoft.Network/locations/westeurope/operations/1?api-version=1";
        assert!(within_scope(&url(operation), &config).is_ok());
        assert!(
            within_scope(
                &url("https://attacker.example/subscriptions/6f1c3a52-9d0e-4b8f-a1c2-3d4e5f607182/x"),
                &config
            )
            .is_err()
        );
        assert!(
            within_scope(
                &url("http://management.azure.com/subscriptions/6f1c3a52-9d0e-4b8f-a1c2-3d4e5f607182/x"),
                &config
            )
            .is_err()
        );
        let other = "https://management.azure.com/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg";
        assert!(within_scope(&url(other), &config).is_err(), "another subscription");
        let local = group_on(Some("http://127.0.0.1:9000"));
        assert!(
            within_scope(&url("http://127.0.0.1:9000/subscriptions/6f1c3a52-9d0e-4b8f-a1c2-3d4e5f607182/x"), &local)
                .is_ok()
        );
        assert!(
            within_scope(&url("http://127.0.0.1:9001/subscriptions/6f1c3a52-9d0e-4b8f-a1c2-3d4e5f607182/x"), &local)
                .is_err()
        );
        let pathed = group_on(Some("https://management.azure.com/subscriptions/00000000-0000-0000-0000-000000000000#"));
        assert!(group_url(&pathed).is_err(), "an endpoint with a path builds no URL");
    }
}
