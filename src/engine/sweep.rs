//! The orphan sweep: removes rules that carry our ownership marker but that no live rule in the
//! database accounts for (left by a lost database, a restore, or a crash between opening a rule
//! and recording it). Rules without our marker are never touched. It runs on the worker's task,
//! so it never races this process's own applies and removals.

use super::Engine;
use crate::domain::ResourceIpStatus;
use crate::provider::{RuleRef, Target};
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
        let owned = match provider.list_owned(&target).await {
            Ok(owned) => owned,
            Err(err) => {
                tracing::warn!(resource_id = %resource.id, error = %err, "listing rules for the orphan sweep failed");
                continue;
            }
        };
        if owned.is_empty() {
            continue;
        }
        // Pending rules count as live: their apply may be in flight on another replica.
        let live = sessions::rules_on(&inner.reader, &resource.id, &ResourceIpStatus::LIVE).await?;
        let orphans: Vec<RuleRef> = owned
            .into_iter()
            // By address: a provider may keep many addresses under one rule id (GCP).
            .filter(|rule| !live.iter().any(|held| held.ip_address.parse::<IpAddr>().ok() == Some(rule.address)))
            .map(|rule| RuleRef { address: rule.address, rule_id: Some(rule.rule_id) })
            .collect();
        if orphans.is_empty() {
            continue;
        }
        let results = provider.revoke(&target, &orphans).await;
        for (orphan, result) in orphans.iter().zip(&results) {
            match result {
                Ok(()) => {
                    removed += 1;
                    tracing::info!(resource_id = %resource.id, address = %orphan.address, "orphan rule removed");
                }
                Err(err) => {
                    tracing::warn!(resource_id = %resource.id, address = %orphan.address, error = %err, "removing orphan rule failed")
                }
            }
        }
    }
    Ok(removed)
}
