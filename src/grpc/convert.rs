//! Translations between protobuf messages and domain/store types.

use crate::domain::{self, ProviderConfig, Violations};
use crate::error::{Error, Result};
use crate::pb::v1 as pb;
use crate::service::audit::details_of;
use crate::store::entity::{
    api_key, audit_event, login_session, organization, resource, resource_ip, user, webhook, webhook_delivery,
};
use crate::store::queries::resources;
use crate::store::queries::sessions::SessionRecord;
use crate::store::{PageRequest, StoreError};
use chrono::{DateTime, Utc};
use prost_types::{FieldMask, Timestamp};
use std::net::IpAddr;

pub fn timestamp(at: DateTime<Utc>) -> Timestamp {
    Timestamp { seconds: at.timestamp(), nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0) }
}

/// A request timestamp, or a violation on `field`.
pub fn parse_timestamp(field: &str, value: &Timestamp) -> Result<DateTime<Utc>> {
    u32::try_from(value.nanos)
        .ok()
        .and_then(|nanos| DateTime::from_timestamp(value.seconds, nanos))
        .ok_or_else(|| Error::invalid(field, "is not a valid timestamp"))
}

/// Reads the list fields common to every List method.
/// The caller's address as the server sees it: the TCP peer, or what a trusted proxy says.
pub fn caller_address<T>(request: &tonic::Request<T>, trusted_proxies: &[ipnet::IpNet]) -> Result<Option<IpAddr>> {
    let Some(peer) = request.remote_addr() else { return Ok(None) };
    let header = |name: &str| request.metadata().get(name).and_then(|v| v.to_str().ok());
    domain::client_address(peer.ip(), header("x-forwarded-for"), header("x-real-ip"), trusted_proxies)
        .map(Some)
        .map_err(|problem| Error::invalid("x-forwarded-for", problem))
}

pub fn page_request(page_size: i32, page_token: &str) -> Result<PageRequest> {
    PageRequest::parse(page_size, page_token).map_err(|err| {
        let reason =
            if err.field == "page_token" { pb::ErrorReason::InvalidPageToken } else { pb::ErrorReason::InvalidInput };
        Error::InvalidArgument {
            reason,
            violations: vec![domain::FieldViolation { field: err.field.into(), description: err.description }],
        }
    })
}

/// An object id from a request: present and well-formed, else a violation on `field`.
pub fn require_id<'a>(field: &str, value: &'a str) -> Result<&'a str> {
    if value.is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    if !domain::is_valid_id(value) {
        return Err(Error::invalid(field, "is not a valid id"));
    }
    Ok(value)
}

/// The fields an update names: each must be one of `allowed`; an empty mask means all of them.
pub struct UpdateMask(Vec<String>);

impl UpdateMask {
    pub fn parse(mask: Option<&FieldMask>, allowed: &[&str]) -> Result<UpdateMask> {
        let paths: Vec<String> = mask.map(|m| m.paths.clone()).unwrap_or_default();
        if let Some(unknown) = paths.iter().find(|p| !allowed.contains(&p.as_str())) {
            return Err(Error::invalid(
                "update_mask",
                format!("{unknown:?} cannot be updated; use {}", allowed.join(", ")),
            ));
        }
        Ok(UpdateMask(if paths.is_empty() { allowed.iter().map(|p| (*p).to_owned()).collect() } else { paths }))
    }

    pub fn contains(&self, field: &str) -> bool {
        self.0.iter().any(|p| p == field)
    }
}

pub fn role_to_pb(role: domain::Role) -> pb::Role {
    match role {
        domain::Role::Admin => pb::Role::Admin,
        domain::Role::User => pb::Role::User,
        domain::Role::Operator => pb::Role::Operator,
    }
}

/// A user's role from a request; `None` for ROLE_UNSPECIFIED, ROLE_OPERATOR (no user's role) or
/// an unknown number.
pub fn role_from_pb(value: i32) -> Option<domain::Role> {
    match pb::Role::try_from(value) {
        Ok(pb::Role::Admin) => Some(domain::Role::Admin),
        Ok(pb::Role::User) => Some(domain::Role::User),
        _ => None,
    }
}

pub fn tier_from_pb(value: i32) -> Option<domain::Tier> {
    match pb::Tier::try_from(value) {
        Ok(pb::Tier::Free) => Some(domain::Tier::Free),
        Ok(pb::Tier::Business) => Some(domain::Tier::Business),
        Ok(pb::Tier::Enterprise) => Some(domain::Tier::Enterprise),
        _ => None,
    }
}

fn tier_to_pb(tier: domain::Tier) -> pb::Tier {
    match tier {
        domain::Tier::Free => pb::Tier::Free,
        domain::Tier::Business => pb::Tier::Business,
        domain::Tier::Enterprise => pb::Tier::Enterprise,
    }
}

pub fn organization_to_pb(model: organization::Model) -> pb::Organization {
    // Unreadable scopes show as none: the server refuses every cloud call for them too.
    let scopes = crate::store::queries::organizations::cloud_scopes(&model).unwrap_or_default();
    pb::Organization {
        cloud_scopes: Some(cloud_scopes_to_pb(scopes)),
        tier: tier_to_pb(model.tier).into(),
        id: model.id,
        name: model.name,
        suspended: model.suspended,
        allow_private_addresses: model.allow_private_addresses,
        created_at: Some(timestamp(model.created_at)),
        updated_at: Some(timestamp(model.updated_at)),
    }
}

fn cloud_scopes_to_pb(scopes: domain::CloudScopes) -> pb::CloudScopes {
    pb::CloudScopes {
        unrestricted: scopes.unrestricted,
        aws_accounts: scopes.aws_accounts,
        aws_role_arns: scopes.aws_role_arns,
        gcp_projects: scopes.gcp_projects,
        azure_subscriptions: scopes.azure_subscriptions,
    }
}

/// Scopes from a request; absent means none.
pub fn cloud_scopes_from_pb(scopes: Option<pb::CloudScopes>) -> domain::CloudScopes {
    let scopes = scopes.unwrap_or_default();
    domain::CloudScopes {
        unrestricted: scopes.unrestricted,
        aws_accounts: scopes.aws_accounts,
        aws_role_arns: scopes.aws_role_arns,
        gcp_projects: scopes.gcp_projects,
        azure_subscriptions: scopes.azure_subscriptions,
    }
}

pub fn user_to_pb(model: user::Model) -> pb::User {
    let locked_until = model.locked_until.filter(|_| model.is_locked(domain::now()));
    pb::User {
        role: role_to_pb(model.role).into(),
        id: model.id,
        organization_id: model.organization_id,
        email: model.email,
        full_name: model.full_name,
        disabled: model.disabled,
        locked: locked_until.is_some(),
        locked_until: locked_until.map(timestamp),
        expiry_emails: model.expiry_emails,
        created_at: Some(timestamp(model.created_at)),
        updated_at: Some(timestamp(model.updated_at)),
    }
}

/// A login session, with what its user agent says about browser, system and device.
pub fn login_session_to_pb(model: login_session::Model, current: bool) -> pb::LoginSession {
    let parsed = woothee::parser::Parser::new().parse(&model.user_agent);
    let known = |value: &str| if value == woothee::woothee::VALUE_UNKNOWN { String::new() } else { value.to_owned() };
    pb::LoginSession {
        browser: parsed.as_ref().map(|ua| pb::Browser { name: known(ua.name), version: known(ua.version) }),
        operating_system: parsed
            .as_ref()
            .map(|ua| pb::OperatingSystem { name: known(ua.os), version: known(&ua.os_version) }),
        device: parsed.as_ref().map(|ua| pb::Device { r#type: known(ua.category) }),
        authenticators: model.authenticators.split_whitespace().map(str::to_owned).collect(),
        id: model.id,
        user_id: model.user_id,
        created_at: Some(timestamp(model.created_at)),
        active_at: Some(timestamp(model.active_at)),
        expires_at: Some(timestamp(model.expires_at)),
        idle_timeout_minutes: u32::try_from(model.idle_timeout_minutes).unwrap_or(0),
        ip: model.ip,
        user_agent: model.user_agent,
        current,
    }
}

/// A key as listed: never its secret or hash.
pub fn api_key_to_pb(model: api_key::Model) -> pb::ApiKey {
    pb::ApiKey {
        permissions: model.permissions.split_whitespace().map(str::to_owned).collect(),
        id: model.id,
        user_id: model.user_id,
        name: model.name,
        prefix: model.prefix,
        created_at: Some(timestamp(model.created_at)),
        last_used_at: model.last_used_at.map(timestamp),
        expires_at: model.expires_at.map(timestamp),
        revoked_at: model.revoked_at.map(timestamp),
    }
}

pub fn audit_event_to_pb(model: audit_event::Model) -> pb::AuditEvent {
    pb::AuditEvent {
        details: details_of(&model).into_iter().collect(),
        id: model.id,
        time: Some(timestamp(model.time)),
        r#type: model.event_type,
        actor_id: model.actor_id.unwrap_or_default(),
        actor_api_key_id: model.actor_api_key_id.unwrap_or_default(),
        target_type: model.target_type,
        target_id: model.target_id,
        client_ip: model.client_ip.unwrap_or_default(),
    }
}

pub fn webhook_to_pb(model: webhook::Model) -> pb::Webhook {
    pb::Webhook {
        event_types: serde_json::from_str(&model.event_types).unwrap_or_default(),
        id: model.id,
        url: model.url,
        description: model.description,
        disabled: model.disabled_at.is_some(),
        disabled_reason: model.disabled_reason.unwrap_or_default(),
        failing_since: model.failing_since.map(timestamp),
        created_at: Some(timestamp(model.created_at)),
        updated_at: Some(timestamp(model.updated_at)),
        previous_secret_expires_at: model.previous_secret_expires_at.map(timestamp),
    }
}

pub fn webhook_delivery_to_pb(model: webhook_delivery::Model) -> pb::WebhookDelivery {
    let status = match model.status {
        domain::DeliveryStatus::Pending => pb::WebhookDeliveryStatus::Pending,
        domain::DeliveryStatus::Delivered => pb::WebhookDeliveryStatus::Delivered,
        domain::DeliveryStatus::Failed => pb::WebhookDeliveryStatus::Failed,
    };
    pb::WebhookDelivery {
        next_attempt_at: (status == pb::WebhookDeliveryStatus::Pending).then(|| timestamp(model.next_attempt_at)),
        status: status.into(),
        id: model.id,
        webhook_id: model.webhook_id,
        event_id: model.event_id,
        event_type: model.event_type,
        attempts: model.attempts,
        last_response_code: model.last_response_code.unwrap_or_default(),
        last_error: model.last_error.unwrap_or_default(),
        created_at: Some(timestamp(model.created_at)),
        delivered_at: model.delivered_at.map(timestamp),
        payload: model.payload,
    }
}

pub fn resource_to_pb(model: resource::Model) -> Result<pb::Resource, StoreError> {
    let provider = match resources::provider_config(&model)? {
        ProviderConfig::Memory(memory) => pb::resource::Provider::Memory(pb::MemoryProvider {
            latency_ms: memory.latency_ms,
            fail_addresses: memory.fail_addresses.iter().map(ToString::to_string).collect(),
            transient_failures: memory.transient_failures,
        }),
        ProviderConfig::AwsSecurityGroup(aws) => pb::resource::Provider::AwsSecurityGroup(pb::AwsSecurityGroup {
            region: aws.region,
            group_id: aws.group_id,
            protocol: aws.protocol,
            from_port: u32::from(aws.from_port),
            to_port: u32::from(aws.to_port),
            endpoint_url: aws.endpoint_url,
            role_arn: aws.role_arn,
            max_rules: aws.max_rules,
        }),
        ProviderConfig::GcpFirewall(gcp) => pb::resource::Provider::GcpFirewall(pb::GcpFirewall {
            project: gcp.project,
            network: gcp.network,
            protocol: gcp.protocol,
            ports: gcp.ports,
            target_tags: gcp.target_tags,
            target_service_accounts: gcp.target_service_accounts,
            priority: u32::from(gcp.priority),
            endpoint_url: gcp.endpoint_url,
        }),
        ProviderConfig::AzureNetworkSecurityGroup(azure) => {
            pb::resource::Provider::AzureNetworkSecurityGroup(pb::AzureNetworkSecurityGroup {
                subscription_id: azure.subscription_id,
                resource_group: azure.resource_group,
                nsg_name: azure.nsg_name,
                protocol: azure.protocol,
                destination_port_ranges: azure.destination_port_ranges,
                destination_address_prefix: azure.destination_address_prefix,
                priority_range: Some(pb::PriorityRange {
                    first: u32::from(azure.priority_first),
                    last: u32::from(azure.priority_last),
                }),
                endpoint_url: azure.endpoint_url,
            })
        }
    };
    Ok(pb::Resource {
        id: model.id,
        name: model.name,
        description: model.description,
        provider: Some(provider),
        created_at: Some(timestamp(model.created_at)),
        updated_at: Some(timestamp(model.updated_at)),
        last_check: last_check(model.checked_at, model.check_status.as_deref(), model.check_message),
    })
}

/// A resource's last periodic check, once one has finished.
fn last_check(
    checked_at: Option<DateTime<Utc>>,
    status: Option<&str>,
    message: Option<String>,
) -> Option<pb::ResourceCheck> {
    let (checked_at, status) = (checked_at?, status?);
    let status = pb::CheckStatus::from_str_name(&format!("CHECK_STATUS_{status}")).unwrap_or_default();
    Some(pb::ResourceCheck {
        status: status.into(),
        message: message.unwrap_or_default(),
        checked_at: Some(timestamp(checked_at)),
    })
}

/// The provider of a request's resource, or violations under `resource.<provider>.…`.
pub fn provider_from_pb(provider: pb::resource::Provider) -> Result<ProviderConfig> {
    let mut violations = Violations::default();
    let port = |violations: &mut Violations, field: &str, value: u32| -> u16 {
        u16::try_from(value).unwrap_or_else(|_| {
            violations.add(field, "must be at most 65535");
            0
        })
    };
    let config = match provider {
        pb::resource::Provider::Memory(memory) => {
            let mut fail_addresses = Vec::new();
            for (index, address) in memory.fail_addresses.iter().enumerate() {
                match address.parse::<IpAddr>() {
                    Ok(ip) => fail_addresses.push(ip),
                    Err(_) => {
                        violations.add(format!("resource.memory.fail_addresses[{index}]"), "must be an IP address")
                    }
                }
            }
            ProviderConfig::Memory(domain::MemoryProvider {
                latency_ms: memory.latency_ms,
                fail_addresses,
                transient_failures: memory.transient_failures,
            })
        }
        pb::resource::Provider::AwsSecurityGroup(aws) => {
            let from_port = port(&mut violations, "resource.aws_security_group.from_port", aws.from_port);
            let to_port = port(&mut violations, "resource.aws_security_group.to_port", aws.to_port);
            ProviderConfig::AwsSecurityGroup(domain::AwsSecurityGroup {
                region: aws.region,
                group_id: aws.group_id,
                protocol: aws.protocol,
                from_port,
                to_port,
                endpoint_url: aws.endpoint_url,
                role_arn: aws.role_arn,
                max_rules: aws.max_rules,
            })
        }
        pb::resource::Provider::GcpFirewall(gcp) => {
            let priority = port(&mut violations, "resource.gcp_firewall.priority", gcp.priority);
            ProviderConfig::GcpFirewall(domain::GcpFirewall {
                project: gcp.project,
                network: gcp.network,
                protocol: gcp.protocol,
                ports: gcp.ports,
                target_tags: gcp.target_tags,
                target_service_accounts: gcp.target_service_accounts,
                priority,
                endpoint_url: gcp.endpoint_url,
            })
        }
        pb::resource::Provider::AzureNetworkSecurityGroup(azure) => {
            use domain::AzureNetworkSecurityGroup as Nsg;
            let field = "resource.azure_network_security_group.priority_range";
            let (first, last) = match azure.priority_range {
                Some(range) => (
                    port(&mut violations, &format!("{field}.first"), range.first),
                    port(&mut violations, &format!("{field}.last"), range.last),
                ),
                None => Nsg::DEFAULT_PRIORITIES,
            };
            let prefix = azure.destination_address_prefix;
            ProviderConfig::AzureNetworkSecurityGroup(Nsg {
                subscription_id: azure.subscription_id,
                resource_group: azure.resource_group,
                nsg_name: azure.nsg_name,
                // Azure's spelling, whatever case was given; anything else is reported as given.
                protocol: Nsg::protocol_named(&azure.protocol).map_or(azure.protocol, str::to_owned),
                destination_port_ranges: azure.destination_port_ranges,
                destination_address_prefix: if prefix.is_empty() { "*".to_owned() } else { prefix },
                priority_first: first,
                priority_last: last,
                endpoint_url: azure.endpoint_url,
            })
        }
    };
    if violations.is_empty() { Ok(config) } else { Err(violations.into()) }
}

/// A stored revision as the API shows it (stored revisions start at 1 and only grow).
pub fn revision_to_pb(stored: i64) -> u64 {
    u64::try_from(stored).unwrap_or_default()
}

fn session_status_to_pb(status: domain::SessionStatus) -> pb::SessionStatus {
    use domain::SessionStatus as S;
    match status {
        S::Pending => pb::SessionStatus::Pending,
        S::Active => pb::SessionStatus::Active,
        S::Partial => pb::SessionStatus::Partial,
        S::Failed => pb::SessionStatus::Failed,
        S::Expiring => pb::SessionStatus::Expiring,
        S::Expired => pb::SessionStatus::Expired,
        S::Cancelled => pb::SessionStatus::Cancelled,
    }
}

/// A session status from a request filter; `None` for UNSPECIFIED or unknown numbers.
pub fn session_status_from_pb(value: i32) -> Option<domain::SessionStatus> {
    use domain::SessionStatus as S;
    Some(match pb::SessionStatus::try_from(value).ok()? {
        pb::SessionStatus::Unspecified => return None,
        pb::SessionStatus::Pending => S::Pending,
        pb::SessionStatus::Active => S::Active,
        pb::SessionStatus::Partial => S::Partial,
        pb::SessionStatus::Failed => S::Failed,
        pb::SessionStatus::Expiring => S::Expiring,
        pb::SessionStatus::Expired => S::Expired,
        pb::SessionStatus::Cancelled => S::Cancelled,
    })
}

fn resource_ip_status_to_pb(status: domain::ResourceIpStatus) -> pb::ResourceIpStatus {
    use domain::ResourceIpStatus as R;
    match status {
        R::Pending => pb::ResourceIpStatus::Pending,
        R::Applied => pb::ResourceIpStatus::Applied,
        R::Failed => pb::ResourceIpStatus::Failed,
        R::Removing => pb::ResourceIpStatus::Removing,
        R::Removed => pb::ResourceIpStatus::Removed,
    }
}

/// A rule status from a request filter; `None` for UNSPECIFIED or unknown numbers.
pub fn resource_ip_status_from_pb(value: i32) -> Option<domain::ResourceIpStatus> {
    use domain::ResourceIpStatus as R;
    Some(match pb::ResourceIpStatus::try_from(value).ok()? {
        pb::ResourceIpStatus::Unspecified => return None,
        pb::ResourceIpStatus::Pending => R::Pending,
        pb::ResourceIpStatus::Applied => R::Applied,
        pb::ResourceIpStatus::Failed => R::Failed,
        pb::ResourceIpStatus::Removing => R::Removing,
        pb::ResourceIpStatus::Removed => R::Removed,
    })
}

fn ended_reason_to_pb(reason: Option<domain::EndedReason>) -> pb::EndedReason {
    match reason {
        Some(domain::EndedReason::Expired) => pb::EndedReason::Expired,
        Some(domain::EndedReason::Manual) => pb::EndedReason::Manual,
        Some(domain::EndedReason::Admin) => pb::EndedReason::Admin,
        Some(domain::EndedReason::ClientGone) => pb::EndedReason::ClientGone,
        None => pb::EndedReason::Unspecified,
    }
}

pub fn resource_ip_to_pb(model: &resource_ip::Model) -> pb::ResourceIp {
    pb::ResourceIp {
        id: model.id.clone(),
        session_id: model.session_id.clone(),
        resource_id: model.resource_id.clone(),
        resource_name: model.resource_name.clone(),
        ip_version: u32::try_from(model.ip_version).unwrap_or_default(),
        ip_address: model.ip_address.clone(),
        status: resource_ip_status_to_pb(model.status).into(),
        provider_rule_id: model.provider_rule_id.clone().unwrap_or_default(),
        applied_at: model.applied_at.map(timestamp),
        removed_at: model.removed_at.map(timestamp),
        error_message: model.error_message.clone().unwrap_or_default(),
        created_at: Some(timestamp(model.created_at)),
    }
}

pub fn session_to_pb(record: &SessionRecord) -> pb::Session {
    let session = &record.session;
    pb::Session {
        id: session.id.clone(),
        user_id: session.user_id.clone(),
        user_name: record.user_name.clone(),
        user_email: record.user_email.clone(),
        ipv4_address: session.ipv4_address.clone().unwrap_or_default(),
        ipv6_address: session.ipv6_address.clone().unwrap_or_default(),
        status: session_status_to_pb(session.status).into(),
        started_at: Some(timestamp(session.started_at)),
        expires_at: Some(timestamp(session.expires_at)),
        ended_at: session.ended_at.map(timestamp),
        ended_reason: ended_reason_to_pb(session.ended_reason).into(),
        resource_ips: record.rules.iter().map(resource_ip_to_pb).collect(),
        created_at: Some(timestamp(session.created_at)),
        revision: revision_to_pb(session.revision),
        organization_id: session.organization_id.clone(),
        heartbeat_seconds: session.heartbeat_seconds.and_then(|seconds| u32::try_from(seconds).ok()),
    }
}

/// A repeated enum filter from a request: every value must be known and not UNSPECIFIED.
pub fn enum_filter<T>(field: &str, values: &[i32], convert: fn(i32) -> Option<T>) -> Result<Vec<T>> {
    values
        .iter()
        .enumerate()
        .map(|(index, value)| {
            convert(*value)
                .ok_or_else(|| Error::invalid(format!("{field}[{index}]"), "is not one of the enum's values"))
        })
        .collect()
}
