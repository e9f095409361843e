//! Organizations, users, login sessions and API keys: OrganizationService, UserService and AuthService.

use super::*;

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

/// An identity provider as the API shows it: never its client secret.
pub fn identity_provider_to_pb(model: identity_provider::Model) -> Result<pb::IdentityProvider> {
    let spec = model.spec()?;
    Ok(pb::IdentityProvider {
        id: model.id,
        organization_id: model.organization_id,
        display_name: spec.display_name,
        issuer_url: spec.issuer_url,
        client_id: spec.client_id,
        client_secret: String::new(),
        scopes: spec.scopes,
        groups_claim: spec.groups_claim,
        allowed_email_domains: spec.allowed_email_domains,
        group_mappings: spec
            .group_mappings
            .into_iter()
            .map(|mapping| pb::GroupMapping {
                group: mapping.group,
                role: role_to_pb(mapping.role).into(),
                resource_ids: mapping.resource_ids,
            })
            .collect(),
        jit_users: spec.jit_users,
        sso_required: spec.sso_required,
        client_secret_set: model.client_secret_sealed.is_some(),
        created_at: Some(timestamp(model.created_at)),
        updated_at: Some(timestamp(model.updated_at)),
    })
}

/// A mapping's role from a request: the operator role is read as itself, so the refusal can
/// name it; `None` for an unknown number or ROLE_UNSPECIFIED.
pub fn mapped_role_from_pb(value: i32) -> Option<domain::Role> {
    match pb::Role::try_from(value) {
        Ok(pb::Role::Operator) => Some(domain::Role::Operator),
        _ => role_from_pb(value),
    }
}

/// An agent as the API shows it: never its credential's hash.
pub fn agent_to_pb(model: agent::Model) -> pb::Agent {
    pb::Agent {
        id: model.id,
        organization_id: model.organization_id,
        name: model.name,
        credential_prefix: model.prefix,
        created_at: Some(timestamp(model.created_at)),
        revoked_at: model.revoked_at.map(timestamp),
        connected: model.revoked_at.is_none() && domain::host::agent_connected(model.last_seen_at, domain::now()),
        last_seen_at: model.last_seen_at.map(timestamp),
        hostname: model.hostname,
        version: model.version,
    }
}

/// A host resource's state as the agent stream carries it.
pub fn host_resource_to_pb(state: domain::host::HostResourceState) -> pb::HostResourceState {
    pb::HostResourceState {
        resource_id: state.resource_id,
        protocol: state.protocol,
        ports: state.ports.into_iter().map(u32::from).collect(),
        grants: state
            .grants
            .into_iter()
            .map(|grant| pb::HostGrant {
                ip_address: grant.address.to_string(),
                expires_at: Some(timestamp(grant.expires_at)),
                session_ids: grant.session_ids,
            })
            .collect(),
    }
}

/// A host resource's state from an agent's report; violations under `field`.
pub fn host_resource_from_pb(state: pb::HostResourceState, field: &str) -> Result<domain::host::HostResourceState> {
    let mut violations = Violations::default();
    let mut grants = Vec::with_capacity(state.grants.len());
    for (index, grant) in state.grants.into_iter().enumerate() {
        let Ok(address) = grant.ip_address.parse::<IpAddr>() else {
            violations.add(format!("{field}.grants[{index}].ip_address"), "must be an IP address");
            continue;
        };
        let expires_at = grant.expires_at.and_then(|at| DateTime::from_timestamp(at.seconds, 0));
        let Some(expires_at) = expires_at else {
            violations.add(format!("{field}.grants[{index}].expires_at"), "must be a time");
            continue;
        };
        grants.push(domain::host::HostGrant { address, expires_at, session_ids: grant.session_ids });
    }
    let ports = state.ports.iter().filter_map(|port| u16::try_from(*port).ok()).collect();
    if violations.is_empty() {
        Ok(domain::host::HostResourceState { resource_id: state.resource_id, protocol: state.protocol, ports, grants })
    } else {
        Err(violations.into())
    }
}
