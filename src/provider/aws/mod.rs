//! EC2 security groups: one ingress rule per address (IPv4 /32, IPv6 /128), all of a batch
//! opened in one `AuthorizeSecurityGroupIngress` call and removed in one
//! `RevokeSecurityGroupIngress` call by rule id.
//!
//! Ownership: each rule's description is the owner's ([`Owner::description`]) and the rule is
//! tagged `portcullis:resource=<resource id>`, so two Portcullis resources on one group never take
//! each other's rules for orphans. Tags are set per call, and a call carries many sessions, so the
//! session and expiry live in the per-rule description rather than in tags.

mod settings;

use super::quota::{Buckets, Claim, Rate, Ticket};
use super::{
    CheckOutcome, FirewallProvider, Listing, OwnedRule, Owner, Pass, ProviderError, RuleRef, RuleRequest, Target,
    fail_all, host_cidr, is_owned_description, single_host, unmanaged_rule_id,
};
use crate::domain::{AwsSecurityGroup, ProviderConfig};
use async_trait::async_trait;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_ec2::Client;
use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::types::{
    Filter, IpPermission, IpRange, Ipv6Range, ResourceType, SecurityGroupRule, Tag, TagSpecification,
};
pub use settings::AwsQuota;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// Tag naming the Portcullis resource a rule was opened for.
pub const RESOURCE_TAG: &str = "portcullis:resource";

/// Error codes of throttling: retried.
const THROTTLING_CODES: &[&str] = &["RequestLimitExceeded", "Throttling", "ThrottlingException"];
/// Error codes of EC2's own failures: retried.
const TRANSIENT_CODES: &[&str] = &["InternalError", "InternalFailure", "ServiceUnavailable", "Unavailable"];
const NOT_FOUND_CODES: &[&str] = &["InvalidGroup.NotFound", "InvalidGroupId.Malformed", "InvalidGroupId.NotFound"];
const ACCESS_CODES: &[&str] =
    &["UnauthorizedOperation", "AuthFailure", "InvalidClientTokenId", "SignatureDoesNotMatch", "OptInRequired"];

/// One EC2 client per region, endpoint, role and ExternalId, built on first use, and one token
/// bucket per account, region and API, as EC2 throttles them.
pub struct AwsFirewall {
    clients: Mutex<HashMap<ClientKey, Client>>,
    buckets: Buckets<BucketKey>,
    quota: AwsQuota,
    /// The part of each bucket this server spends.
    share: f64,
    /// When each group's last write answered (see [`AwsQuota::group_write_interval_ms`]).
    last_writes: std::sync::Mutex<HashMap<GroupKey, Instant>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct GroupKey {
    region: String,
    endpoint_url: Option<String>,
    group_id: String,
}

impl GroupKey {
    fn of(group: &AwsSecurityGroup) -> GroupKey {
        GroupKey {
            region: group.region.clone(),
            endpoint_url: group.endpoint_url.clone(),
            group_id: group.group_id.clone(),
        }
    }
}

/// The EC2 APIs Portcullis calls: each is throttled on a bucket of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Api {
    DescribeSecurityGroupRules,
    DescribeSecurityGroups,
    AuthorizeSecurityGroupIngress,
    RevokeSecurityGroupIngress,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct BucketKey {
    region: String,
    endpoint_url: Option<String>,
    /// The account of the role assumed; None for the server's own credentials.
    account: Option<String>,
    api: Api,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ClientKey {
    region: String,
    endpoint_url: Option<String>,
    role_arn: Option<String>,
    /// Passed when assuming the role: the resource's organization, so a role whose trust policy
    /// requires it can be assumed for that organization only (the confused deputy).
    external_id: Option<String>,
}

impl AwsFirewall {
    pub fn new(quota: &AwsQuota, share: f64) -> AwsFirewall {
        AwsFirewall {
            clients: Mutex::default(),
            buckets: Buckets::default(),
            quota: quota.clone(),
            share,
            last_writes: std::sync::Mutex::default(),
        }
    }

    /// Notes that a write to `group` just answered, forgetting those too old to hold anyone back.
    fn wrote(&self, group: &AwsSecurityGroup) {
        let interval = self.quota.group_write_interval_ms.get();
        let mut last_writes = self.last_writes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        last_writes.retain(|_, at| now.duration_since(*at) < interval);
        if !interval.is_zero() {
            last_writes.insert(GroupKey::of(group), now);
        }
    }

    /// How long until `group` may be written again, if not yet: the rest of its write interval,
    /// or less once its work has stopped growing for the quiet time (a burst of sessions has
    /// ended, so waiting longer gathers nothing more).
    fn write_wait(&self, group: &AwsSecurityGroup, unchanged_for: Duration) -> Option<Duration> {
        let last_writes = self.last_writes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let since = last_writes.get(&GroupKey::of(group))?.elapsed();
        let interval_left = self.quota.group_write_interval_ms.get().checked_sub(since)?;
        let quiet = self.quota.group_write_quiet_ms.get();
        let wait = if quiet.is_zero() { interval_left } else { interval_left.min(quiet.saturating_sub(unchanged_for)) };
        Some(wait).filter(|wait| !wait.is_zero())
    }

    /// The bucket a call of `api` for `group` is paced on, and its rate.
    fn bucket_of(&self, group: &AwsSecurityGroup, api: Api) -> (BucketKey, Rate) {
        let key = BucketKey {
            region: group.region.clone(),
            endpoint_url: group.endpoint_url.clone(),
            // arn:aws:iam::<account>:role/<name>
            account: group.role_arn.as_deref().and_then(|arn| arn.split(':').nth(4)).map(str::to_owned),
            api,
        };
        let rate = match api {
            Api::DescribeSecurityGroupRules | Api::DescribeSecurityGroups => self.quota.describe,
            Api::AuthorizeSecurityGroupIngress | Api::RevokeSecurityGroupIngress => self.quota.mutating,
        };
        (key, rate.share(self.share))
    }

    /// Waits until a call of `api` for `group` fits its account's bucket.
    async fn pace(&self, group: &AwsSecurityGroup, api: Api) {
        let (key, rate) = self.bucket_of(group, api);
        self.buckets.take(key, rate).await;
    }

    /// Tickets for the calls of `pass` over `group` (for each of removing and applying, a
    /// listing then the write) if `claim` gets their tokens all.
    fn admit_for(&self, group: &AwsSecurityGroup, pass: Pass, claim: Claim) -> Result<Vec<Ticket>, Duration> {
        use Api::RevokeSecurityGroupIngress as Revoke;
        use Api::{AuthorizeSecurityGroupIngress as Authorize, DescribeSecurityGroupRules as Describe};
        // For a pass that writes: how long its work has gone unchanged.
        let (apis, writes_unchanged_for): (&[Api], _) = match pass {
            Pass::Listing => (&[Describe], None),
            Pass::Rules { removes, applies, unchanged_for } => {
                let apis: &[Api] = match (removes, applies) {
                    (true, true) => &[Describe, Revoke, Describe, Authorize],
                    (true, false) => &[Describe, Revoke],
                    (false, true) => &[Describe, Authorize],
                    (false, false) => &[],
                };
                (apis, Some(unchanged_for).filter(|_| !apis.is_empty()))
            }
        };
        // Sessions starting together on one group gather for its next write instead of each
        // wave spending a call of the account's bucket, which other groups (and tools) share.
        if let Some(unchanged_for) = writes_unchanged_for
            && let Some(wait) = self.write_wait(group, unchanged_for)
        {
            return Err(wait);
        }
        apis.iter()
            .map(|&api| {
                let (key, rate) = self.bucket_of(group, api);
                self.buckets.admit(key, rate, claim)
            })
            .collect()
    }

    async fn client(&self, target: &Target, group: &AwsSecurityGroup) -> Client {
        let key = ClientKey {
            region: group.region.clone(),
            endpoint_url: group.endpoint_url.clone(),
            role_arn: group.role_arn.clone(),
            external_id: group.role_arn.as_ref().map(|_| target.organization_id.clone()),
        };
        let mut clients = self.clients.lock().await;
        if let Some(client) = clients.get(&key) {
            return client.clone();
        }
        let client = build_client(&key).await;
        super::make_room(&mut clients);
        clients.insert(key, client.clone());
        client
    }
}

/// Credentials come from the default chain (environment, profile, web identity, instance
/// role), optionally exchanged for the resource's role.
async fn build_client(key: &ClientKey) -> Client {
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(5))
        .operation_timeout(Duration::from_secs(30))
        .build();
    let shared = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(key.region.clone()))
        .timeout_config(timeouts)
        .load()
        .await;
    let mut config = aws_sdk_ec2::config::Builder::from(&shared);
    if let Some(url) = &key.endpoint_url {
        config = config.endpoint_url(url);
    }
    if let Some(role_arn) = &key.role_arn {
        let mut role = aws_config::sts::AssumeRoleProvider::builder(role_arn).session_name("portcullis");
        if let Some(external_id) = &key.external_id {
            role = role.external_id(external_id);
        }
        let role = role.configure(&shared).build().await;
        config = config.credentials_provider(role);
    }
    Client::from_conf(config.build())
}

fn group_of(target: &Target) -> Result<&AwsSecurityGroup, ProviderError> {
    match &target.config {
        ProviderConfig::AwsSecurityGroup(group) => Ok(group),
        _ => Err(ProviderError::Rejected("not an AWS security group resource".into())),
    }
}

/// What a caller may read about a failed EC2 call: EC2's error code, or what kind of failure it
/// was. Never the response body, headers or URL (an endpoint's answer is not ours to echo); the
/// whole error goes to the server log.
fn summary<E, R>(err: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    tracing::debug!(error = %DisplayErrorContext(err), "ec2 call failed");
    match err {
        SdkError::ServiceError(_) => match err.code() {
            Some(code) => format!("EC2 refused the call: {code}"),
            None => "EC2 answered with an error it did not name".to_owned(),
        },
        SdkError::TimeoutError(_) => "EC2 did not answer in time".to_owned(),
        SdkError::DispatchFailure(_) => "EC2 could not be reached".to_owned(),
        SdkError::ResponseError(_) => "EC2's answer could not be read".to_owned(),
        SdkError::ConstructionFailure(_) => "the EC2 request could not be built".to_owned(),
        _ => "EC2 call failed".to_owned(),
    }
}

/// Throttling, EC2's own failures and anything that never got an answer are transient;
/// an answered refusal is not.
fn classify<E, R>(err: &SdkError<E, R>) -> ProviderError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let text = summary(err);
    match err {
        SdkError::ServiceError(_) => match err.code() {
            Some(code) => {
                // What a user reads in error_message: EC2's code and message, not the raw response.
                let message = format!("{code}: {}", err.message().unwrap_or("refused by EC2"));
                if THROTTLING_CODES.contains(&code) {
                    ProviderError::Throttled(message)
                } else if TRANSIENT_CODES.contains(&code) {
                    ProviderError::Transient(message)
                } else {
                    ProviderError::Rejected(message)
                }
            }
            None => ProviderError::Transient(text),
        },
        SdkError::ConstructionFailure(_) => ProviderError::Rejected(text),
        _ => ProviderError::Transient(text),
    }
}

/// Like [`classify`], but a refusal whose code says the group changed since our listing
/// (`raced`) is retried: the retry starts from a fresh listing.
fn classify_race<E, R>(err: &SdkError<E, R>, raced: impl Fn(&str) -> bool) -> ProviderError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match classify(err) {
        ProviderError::Rejected(message) if err.code().is_some_and(raced) => ProviderError::Transient(message),
        other => other,
    }
}

/// The single host a rule opens, if it opens exactly one.
fn host_of(rule: &SecurityGroupRule) -> Option<IpAddr> {
    single_host(rule.cidr_ipv4().or(rule.cidr_ipv6())?)
}

/// Whether a rule grants the resource's protocol and ports.
fn same_grant(rule: &SecurityGroupRule, group: &AwsSecurityGroup) -> bool {
    if rule.ip_protocol() != Some(group.protocol.as_str()) {
        return false;
    }
    group.protocol == "-1"
        || (rule.from_port() == Some(i32::from(group.from_port)) && rule.to_port() == Some(i32::from(group.to_port)))
}

fn is_ours(rule: &SecurityGroupRule, resource_id: &str) -> bool {
    rule.description().is_some_and(is_owned_description)
        && rule.tags().iter().any(|tag| tag.key() == Some(RESOURCE_TAG) && tag.value() == Some(resource_id))
}

/// Pages of 1,000 rules read at most: a security group holds at most 1,000 rules per
/// direction and family, so an endpoint that pages on beyond this is broken or hostile.
const MAX_PAGES: usize = 10;

impl AwsFirewall {
    /// Every ingress rule of the group, foreign ones included (the quota counts them all).
    async fn ingress_rules(
        &self,
        client: &Client,
        group: &AwsSecurityGroup,
    ) -> Result<Vec<SecurityGroupRule>, ProviderError> {
        let group_id = &group.group_id;
        let mut rules = Vec::new();
        let mut next_token = None;
        for _ in 0..MAX_PAGES {
            self.pace(group, Api::DescribeSecurityGroupRules).await;
            let page = client
                .describe_security_group_rules()
                .filters(Filter::builder().name("group-id").values(group_id).build())
                .max_results(1000)
                .set_next_token(next_token)
                .send()
                .await
                .map_err(|err| classify(&err))?;
            rules.extend(page.security_group_rules().iter().filter(|rule| rule.is_egress() != Some(true)).cloned());
            match page.next_token() {
                Some(token) if !token.is_empty() => next_token = Some(token.to_owned()),
                _ => return Ok(rules),
            }
        }
        Err(ProviderError::Transient(format!(
            "EC2 listed the rules of {group_id} in more than {MAX_PAGES} pages; a security group cannot hold that many"
        )))
    }

    async fn apply_batch(
        &self,
        target: &Target,
        group: &AwsSecurityGroup,
        requests: &[RuleRequest],
    ) -> Result<Vec<Result<String, ProviderError>>, ProviderError> {
        let client = self.client(target, group).await;
        let existing = self.ingress_rules(&client, group).await?;
        let mut results = fail_all(requests.len(), &ProviderError::Transient("not attempted".into()));
        // Quota pre-flight: addresses beyond the group's room fail alone instead of failing the call.
        let held = |v4: bool| existing.iter().filter(|rule| rule.cidr_ipv4().is_some() == v4).count();
        let max = group.max_rules() as usize;
        let mut room_v4 = max.saturating_sub(held(true));
        let mut room_v6 = max.saturating_sub(held(false));
        let mut to_open = Vec::new();
        for (index, request) in requests.iter().enumerate() {
            let present =
                existing.iter().find(|rule| same_grant(rule, group) && host_of(rule) == Some(request.address));
            if let Some(rule) = present {
                let id = rule.security_group_rule_id().unwrap_or_default();
                results[index] =
                    Ok(if is_ours(rule, &target.resource_id) { id.to_owned() } else { unmanaged_rule_id(id) });
                continue;
            }
            let room = if request.address.is_ipv4() { &mut room_v4 } else { &mut room_v6 };
            if *room == 0 {
                let family = if request.address.is_ipv4() { "IPv4" } else { "IPv6" };
                results[index] = Err(ProviderError::Rejected(format!(
                    "security group {} is full: it already holds {max} {family} ingress rules (max_rules)",
                    group.group_id
                )));
                continue;
            }
            *room -= 1;
            to_open.push(index);
        }
        if to_open.is_empty() {
            return Ok(results);
        }
        let batch: Vec<&RuleRequest> = to_open.iter().map(|&index| &requests[index]).collect();
        self.pace(group, Api::AuthorizeSecurityGroupIngress).await;
        let authorized = authorize(&client, target, group, &batch).await;
        self.wrote(group);
        match authorized {
            Ok(created) => {
                for (&index, request) in to_open.iter().zip(&batch) {
                    results[index] = created.get(&request.address).cloned().ok_or_else(|| {
                        ProviderError::Transient(format!("EC2 returned no rule for {}", request.address))
                    });
                }
            }
            Err(err) => {
                for &index in &to_open {
                    results[index] = Err(err.clone());
                }
            }
        }
        Ok(results)
    }

    async fn revoke_batch(
        &self,
        target: &Target,
        group: &AwsSecurityGroup,
        refs: &[RuleRef],
    ) -> Result<Vec<Result<(), ProviderError>>, ProviderError> {
        let client = self.client(target, group).await;
        let existing = self.ingress_rules(&client, group).await?;
        let mut ids: Vec<String> = Vec::new();
        for rule in refs {
            let found = existing.iter().find(|held| match &rule.rule_id {
                Some(id) => held.security_group_rule_id() == Some(id.as_str()),
                // Opened before a crash, its id never recorded: find it by address, ours only.
                None => {
                    is_ours(held, &target.resource_id) && same_grant(held, group) && host_of(held) == Some(rule.address)
                }
            });
            if let Some(id) = found.and_then(SecurityGroupRule::security_group_rule_id)
                && !ids.iter().any(|known| known == id)
            {
                ids.push(id.to_owned());
            }
        }
        if !ids.is_empty() {
            self.pace(group, Api::RevokeSecurityGroupIngress).await;
            let revoked = client
                .revoke_security_group_ingress()
                .group_id(&group.group_id)
                .set_security_group_rule_ids(Some(ids))
                .send()
                .await;
            self.wrote(group);
            // Removed by someone else since the listing: the next pass sees it gone.
            revoked.map_err(|err| classify_race(&err, |code| code.ends_with(".NotFound")))?;
        }
        Ok(refs.iter().map(|_| Ok(())).collect())
    }
}

/// Opens `batch` in one call; returns the created rule id by address.
async fn authorize(
    client: &Client,
    target: &Target,
    group: &AwsSecurityGroup,
    batch: &[&RuleRequest],
) -> Result<HashMap<IpAddr, String>, ProviderError> {
    let description = |owner: &Owner| owner.description();
    let mut permission = IpPermission::builder()
        .ip_protocol(&group.protocol)
        .from_port(i32::from(group.from_port))
        .to_port(i32::from(group.to_port));
    for request in batch {
        let cidr = host_cidr(request.address);
        permission = match request.address {
            IpAddr::V4(_) => {
                permission.ip_ranges(IpRange::builder().cidr_ip(cidr).description(description(&request.owner)).build())
            }
            IpAddr::V6(_) => permission
                .ipv6_ranges(Ipv6Range::builder().cidr_ipv6(cidr).description(description(&request.owner)).build()),
        };
    }
    let tags = TagSpecification::builder()
        .resource_type(ResourceType::SecurityGroupRule)
        .tags(Tag::builder().key(RESOURCE_TAG).value(&target.resource_id).build())
        .build();
    let output = client
        .authorize_security_group_ingress()
        .group_id(&group.group_id)
        .ip_permissions(permission.build())
        .tag_specifications(tags)
        .send()
        .await
        // Someone opened one of the addresses since the listing: the retry adopts it.
        .map_err(|err| classify_race(&err, |code| code == "InvalidPermission.Duplicate"))?;
    Ok(output
        .security_group_rules()
        .iter()
        .filter_map(|rule| Some((host_of(rule)?, rule.security_group_rule_id()?.to_owned())))
        .collect())
}

#[async_trait]
impl FirewallProvider for AwsFirewall {
    fn admit(&self, config: &ProviderConfig, pass: Pass, claim: Claim) -> Result<Vec<Ticket>, Duration> {
        match config {
            ProviderConfig::AwsSecurityGroup(group) => self.admit_for(group, pass, claim),
            _ => Ok(Vec::new()),
        }
    }

    #[tracing::instrument(name = "provider.aws.apply", skip_all, fields(resource_id = %target.resource_id, count = rules.len()))]
    async fn apply(&self, target: &Target, rules: &[RuleRequest]) -> Vec<Result<String, ProviderError>> {
        let outcome = match group_of(target) {
            Ok(group) => self.apply_batch(target, group, rules).await,
            Err(err) => Err(err),
        };
        outcome.unwrap_or_else(|err| fail_all(rules.len(), &err))
    }

    #[tracing::instrument(name = "provider.aws.revoke", skip_all, fields(resource_id = %target.resource_id, count = rules.len()))]
    async fn revoke(&self, target: &Target, rules: &[RuleRef]) -> Vec<Result<(), ProviderError>> {
        let outcome = match group_of(target) {
            Ok(group) => self.revoke_batch(target, group, rules).await,
            Err(err) => Err(err),
        };
        outcome.unwrap_or_else(|err| fail_all(rules.len(), &err))
    }

    #[tracing::instrument(name = "provider.aws.list", skip_all, fields(resource_id = %target.resource_id))]
    async fn list(&self, target: &Target) -> Result<Listing, ProviderError> {
        let group = group_of(target)?;
        let client = self.client(target, group).await;
        let mut listing = Listing::default();
        for rule in self.ingress_rules(&client, group).await? {
            let (Some(address), Some(rule_id)) = (host_of(&rule), rule.security_group_rule_id()) else { continue };
            if is_ours(&rule, &target.resource_id) {
                listing.owned.push(OwnedRule {
                    rule_id: rule_id.to_owned(),
                    address,
                    description: rule.description().unwrap_or_default().to_owned(),
                });
            } else if same_grant(&rule, group) && !rule.description().is_some_and(is_owned_description) {
                listing.foreign.insert(address);
            }
        }
        Ok(listing)
    }

    #[tracing::instrument(name = "provider.aws.check", skip_all, fields(resource_id = %target.resource_id))]
    async fn check(&self, target: &Target) -> CheckOutcome {
        let group = match group_of(target) {
            Ok(group) => group,
            Err(err) => return CheckOutcome::Unsupported(err.to_string()),
        };
        let client = self.client(target, group).await;
        self.pace(group, Api::DescribeSecurityGroups).await;
        match client.describe_security_groups().group_ids(&group.group_id).send().await {
            Ok(output) => match output.security_groups().first() {
                Some(found) => CheckOutcome::Ok(format!(
                    "security group {} ({}) in {} is readable; it has {} inbound permission sets",
                    group.group_id,
                    found.group_name().unwrap_or("unnamed"),
                    group.region,
                    found.ip_permissions().len()
                )),
                None => {
                    CheckOutcome::NotFound(format!("security group {} not found in {}", group.group_id, group.region))
                }
            },
            Err(err) => {
                let text = summary(&err);
                match err.code() {
                    Some(code) if NOT_FOUND_CODES.contains(&code) => CheckOutcome::NotFound(format!(
                        "security group {} not found in {}: {code}",
                        group.group_id, group.region
                    )),
                    Some(code) if ACCESS_CODES.contains(&code) => {
                        CheckOutcome::AccessDenied(format!("the credentials cannot read the security group: {code}"))
                    }
                    _ => CheckOutcome::Unreachable(text),
                }
            }
        }
    }
}
