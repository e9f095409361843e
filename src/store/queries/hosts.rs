//! Host resources and their agents' reports: what each agent's host should allow, worked out
//! from the rules of live sessions, and what the agent says its firewall holds.

use crate::domain::host::{HostGrant, HostResourceState};
use crate::domain::{ProviderConfig, ProviderKind, ResourceIpStatus};
use crate::store::StoreResult;
use crate::store::entity::{agent, host_element, resource, resource_ip, session};
use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Set};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// The host resources `agent_id` serves, with their stored configuration.
pub async fn resources_of(
    db: &impl ConnectionTrait,
    organization_id: &str,
    agent_id: &str,
) -> StoreResult<Vec<(resource::Model, crate::domain::HostFirewall)>> {
    // Read twice a second per connected agent: only the organization's host resources.
    let hosts = resource::Entity::find()
        .filter(resource::Column::OrganizationId.eq(organization_id))
        .filter(resource::Column::ProviderKind.eq(ProviderKind::Host))
        .all(db)
        .await?;
    let mut served = Vec::new();
    for model in hosts {
        if let ProviderConfig::HostFirewall(host) = super::resources::provider_config(&model)?
            && host.agent_id == agent_id
        {
            served.push((model, host));
        }
    }
    Ok(served)
}

/// What `agent_id`'s host should allow: for each of its resources, every address a live
/// session's rule holds (to apply or applied), until the latest expiry among those sessions.
pub async fn desired(
    db: &impl ConnectionTrait,
    organization_id: &str,
    agent_id: &str,
) -> StoreResult<Vec<HostResourceState>> {
    let served = resources_of(db, organization_id, agent_id).await?;
    let ids: Vec<String> = served.iter().map(|(model, _)| model.id.clone()).collect();
    let rules = resource_ip::Entity::find()
        .filter(resource_ip::Column::ResourceId.is_in(ids))
        .filter(resource_ip::Column::Status.is_in([ResourceIpStatus::Pending, ResourceIpStatus::Applied]))
        .all(db)
        .await?;
    let session_ids: BTreeSet<&str> = rules.iter().map(|rule| rule.session_id.as_str()).collect();
    let sessions: BTreeMap<String, session::Model> = session::Entity::find()
        .filter(session::Column::Id.is_in(session_ids))
        .filter(session::Column::Status.is_in(crate::domain::SessionStatus::LIVE.iter().copied()))
        .all(db)
        .await?
        .into_iter()
        .map(|session| (session.id.clone(), session))
        .collect();
    let mut grants: BTreeMap<&str, BTreeMap<IpAddr, HostGrant>> = BTreeMap::new();
    for rule in &rules {
        let (Some(session), Ok(address)) = (sessions.get(&rule.session_id), rule.ip_address.parse::<IpAddr>()) else {
            continue;
        };
        let grant = grants.entry(rule.resource_id.as_str()).or_default().entry(address).or_insert_with(|| HostGrant {
            address,
            expires_at: session.expires_at,
            session_ids: Vec::new(),
        });
        grant.expires_at = grant.expires_at.max(session.expires_at);
        if !grant.session_ids.contains(&session.id) {
            grant.session_ids.push(session.id.clone());
        }
    }
    Ok(served
        .iter()
        .map(|(model, host)| HostResourceState {
            resource_id: model.id.clone(),
            protocol: host.protocol.clone(),
            ports: host.ports.clone(),
            grants: grants
                .remove(model.id.as_str())
                .map(|by_address| by_address.into_values().collect())
                .unwrap_or_default(),
        })
        .collect())
}

/// Replaces what `agent_id` reported its firewall holds, and notes when it spoke. A report of
/// an error and no resources says the agent could not read its table: what it held before stays
/// as the last known state.
pub async fn record_report(
    db: &impl ConnectionTrait,
    agent_id: &str,
    resources: &[HostResourceState],
    error: &str,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let unknown = !error.is_empty() && resources.is_empty();
    if !unknown {
        host_element::Entity::delete_many().filter(host_element::Column::AgentId.eq(agent_id)).exec(db).await?;
    }
    let rows: Vec<host_element::ActiveModel> = resources
        .iter()
        .flat_map(|resource| {
            resource.grants.iter().map(|grant| host_element::ActiveModel {
                agent_id: Set(agent_id.to_owned()),
                resource_id: Set(resource.resource_id.clone()),
                ip_address: Set(grant.address.to_string()),
                expires_at: Set(grant.expires_at),
                session_ids: Set(grant.session_ids.join(" ")),
                reported_at: Set(now),
            })
        })
        .collect();
    if !rows.is_empty() {
        host_element::Entity::insert_many(rows).exec(db).await?;
    }
    agent::Entity::update_many()
        .col_expr(agent::Column::ReportError, Expr::value(error))
        .col_expr(agent::Column::LastSeenAt, Expr::value(now))
        .filter(agent::Column::Id.eq(agent_id))
        .exec(db)
        .await?;
    Ok(())
}

/// Notes an agent's hello, or that it is still there.
pub async fn seen(
    db: &impl ConnectionTrait,
    agent_id: &str,
    hello: Option<(&str, &str)>,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let mut update = agent::Entity::update_many().col_expr(agent::Column::LastSeenAt, Expr::value(now));
    if let Some((hostname, version)) = hello {
        update = update
            .col_expr(agent::Column::Hostname, Expr::value(hostname))
            .col_expr(agent::Column::Version, Expr::value(version));
    }
    update.filter(agent::Column::Id.eq(agent_id)).exec(db).await?;
    Ok(())
}

/// What `agent_id` reported for one resource: its elements by address.
pub async fn elements_of(
    db: &impl ConnectionTrait,
    agent_id: &str,
    resource_id: &str,
) -> StoreResult<Vec<host_element::Model>> {
    Ok(host_element::Entity::find()
        .filter(host_element::Column::AgentId.eq(agent_id))
        .filter(host_element::Column::ResourceId.eq(resource_id))
        .all(db)
        .await?)
}
