//! The orphan sweep: removes rules that carry our ownership marker but that no live rule in the
//! database accounts for (left by a lost database, a restore, or a crash between opening a rule
//! and recording it). Rules without our marker are never touched. It runs on a task of its own
//! and under the resource's lease, so it never races an apply or removal on any replica.

use super::Engine;
use super::lease::ResourceLease;
use crate::domain::ResourceIpStatus;
use crate::provider::{FirewallProvider, RuleRef, Target};
use crate::store::StoreResult;
use crate::store::queries::{resources, sessions};
use std::net::IpAddr;
use tokio::sync::watch;

/// Sweeps at start and every `sweep_interval`, on a task of its own, so a slow firewall never
/// holds up the worker.
pub(super) async fn run(engine: Engine, mut stop: watch::Receiver<bool>) {
    let Some(interval) = engine.inner.config.sweep_interval else { return };
    loop {
        if let Err(err) = sweep(&engine).await {
            tracing::warn!(error = %err, "orphan sweep failed");
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = super::stopping(&mut stop) => return,
        }
    }
}

/// One pass over every resource; returns how many orphan rules were removed.
async fn sweep(engine: &Engine) -> StoreResult<usize> {
    let mut removed = 0;
    for resource in resources::all(&engine.inner.reader).await? {
        // Another worker is writing to it; the next sweep comes soon enough.
        let Some(lease) = ResourceLease::acquire(engine, &resource.id).await? else { continue };
        let swept = lease
            .hold(async {
                match engine.provider_for(&resource.id).await? {
                    Ok((provider, target)) => sweep_resource(engine, provider.as_ref(), &target).await,
                    // Resources of providers this server was built without are someone else's to sweep.
                    Err(_) => Ok(0),
                }
            })
            .await;
        lease.release().await;
        removed += swept.transpose()?.unwrap_or(0);
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
