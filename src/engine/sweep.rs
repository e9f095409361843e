//! The orphan sweep: removes rules that carry our ownership marker but that no live rule in the
//! database accounts for (left by a lost database, a restore, or a crash between opening a rule
//! and recording it). Rules without our marker are never touched. It runs on the worker's task
//! and under the resource's lease, so it never races an apply or removal on any replica.

use super::Engine;
use crate::domain::ResourceIpStatus;
use crate::provider::{FirewallProvider, RuleRef, Target};
use crate::service::resources::provider_of;
use crate::store::StoreResult;
use crate::store::queries::{resources, sessions};
use std::net::IpAddr;

/// One pass over every resource; returns how many orphan rules were removed.
pub(super) async fn sweep(engine: &Engine) -> StoreResult<usize> {
    let inner = &engine.inner;
    let mut removed = 0;
    for resource in resources::all(&inner.reader).await? {
        let Ok(config) = provider_of(&resource) else { continue };
        // Resources of providers this server was built without are someone else's to sweep.
        let Ok(provider) = inner.providers.for_config(&config) else { continue };
        let target = Target { resource_id: resource.id.clone(), config };
        // Another replica is writing to it; the next sweep comes soon enough.
        if !engine.lease_resource(&resource.id).await? {
            continue;
        }
        let swept = sweep_resource(engine, provider.as_ref(), &target).await;
        engine.release_resource(&resource.id).await;
        removed += swept?;
    }
    Ok(removed)
}

/// Removes one resource's orphans; answers how many.
async fn sweep_resource(engine: &Engine, provider: &dyn FirewallProvider, target: &Target) -> StoreResult<usize> {
    let resource_id = &target.resource_id;
    let owned = match provider.list_owned(target).await {
        Ok(owned) => owned,
        Err(err) => {
            tracing::warn!(resource_id, error = %err, "listing rules for the orphan sweep failed");
            return Ok(0);
        }
    };
    if owned.is_empty() {
        return Ok(0);
    }
    // Pending rules count as live: their apply may be in flight on another replica.
    let live = sessions::rules_on(&engine.inner.reader, resource_id, &ResourceIpStatus::LIVE).await?;
    let orphans: Vec<RuleRef> = owned
        .into_iter()
        // By address: a provider may keep many addresses under one rule id (GCP).
        .filter(|rule| !live.iter().any(|held| held.ip_address.parse::<IpAddr>().ok() == Some(rule.address)))
        .map(|rule| RuleRef { address: rule.address, rule_id: Some(rule.rule_id) })
        .collect();
    if orphans.is_empty() {
        return Ok(0);
    }
    let mut removed = 0;
    for (orphan, result) in orphans.iter().zip(provider.revoke(target, &orphans).await) {
        match result {
            Ok(()) => {
                removed += 1;
                tracing::info!(resource_id, address = %orphan.address, "orphan rule removed");
            }
            Err(err) => {
                tracing::warn!(resource_id, address = %orphan.address, error = %err, "removing orphan rule failed")
            }
        }
    }
    Ok(removed)
}
