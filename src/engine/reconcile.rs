//! The reconciler, in the Kubernetes-controller sense: for every resource, periodically, the
//! desired state (live rules in the database) against the actual one (the provider's rules).
//! A rule recorded APPLIED but absent at the provider is re-applied; a rule of ours that no live
//! rule accounts for (a lost database, a restore, a crash between opening and recording) is
//! removed; a rule without our marker is never touched. It runs on a task of its own and under
//! each resource's lease, so it never races an apply or removal on any replica, and it never
//! holds up the worker.

use super::Engine;
use super::lease::ResourceLease;
use super::transitions;
use crate::domain::{Actor, ResourceIpStatus, now};
use crate::provider::{FirewallProvider, RuleRef, Target, is_unmanaged};
use crate::store::audit::AuditRecord;
use crate::store::entity::resource_ip;
use crate::store::queries::{resources, sessions};
use crate::store::{self, StoreResult};
use rand::Rng;
use std::collections::BTreeSet;
use std::net::IpAddr;
use tokio::sync::watch;

/// Passes at start and about every `reconcile_interval` (jittered, so replicas spread out).
pub(super) async fn run(engine: Engine, mut stop: watch::Receiver<bool>) {
    let Some(interval) = engine.inner.config.reconcile_interval else { return };
    loop {
        if let Err(err) = reconcile(&engine).await {
            tracing::warn!(error = %err, "reconcile pass failed");
        }
        let pause = interval.mul_f64(rand::rng().random_range(0.75..=1.25));
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = super::stopping(&mut stop) => return,
        }
    }
}

/// What one pass changed.
#[derive(Debug, Default, Clone, Copy)]
struct Pass {
    orphans_removed: usize,
    repaired: usize,
}

/// One pass over every resource.
async fn reconcile(engine: &Engine) -> StoreResult<()> {
    let mut pass = Pass::default();
    for resource in resources::all(&engine.inner.reader).await? {
        // Another worker is writing to it; the next pass comes soon enough.
        let Some(lease) = ResourceLease::acquire(engine, &resource.id).await? else { continue };
        let done = lease
            .hold(async {
                match engine.provider_for(&resource.id).await? {
                    Ok((provider, target)) => reconcile_resource(engine, provider.as_ref(), &target).await,
                    // Resources of providers this server was built without are someone else's to reconcile.
                    Err(_) => Ok(Pass::default()),
                }
            })
            .await;
        lease.release().await;
        if let Some(done) = done.transpose()? {
            pass.orphans_removed += done.orphans_removed;
            pass.repaired += done.repaired;
        }
    }
    if pass.orphans_removed + pass.repaired > 0 {
        tracing::info!(orphans_removed = pass.orphans_removed, repaired = pass.repaired, "reconcile pass");
    }
    Ok(())
}

/// Brings one resource's firewall in line with its live rules.
async fn reconcile_resource(engine: &Engine, provider: &dyn FirewallProvider, target: &Target) -> StoreResult<Pass> {
    let resource_id = &target.resource_id;
    let listing = match provider.list(target).await {
        Ok(listing) => listing,
        Err(err) => {
            tracing::warn!(resource_id, error = %err, "listing rules to reconcile failed");
            return Ok(Pass::default());
        }
    };
    // Pending and removing rules count as live: their provider call may be due any moment.
    let live = sessions::rules_on(&engine.inner.reader, resource_id, &ResourceIpStatus::LIVE).await?;
    let held: BTreeSet<IpAddr> = live.iter().filter_map(|rule| rule.ip_address.parse().ok()).collect();
    let orphans: Vec<RuleRef> = listing
        .owned
        .iter()
        // By address: a provider may keep many addresses under one rule id (GCP).
        .filter(|rule| !held.contains(&rule.address))
        .map(|rule| RuleRef { address: rule.address, rule_id: Some(rule.rule_id.clone()) })
        .collect();
    let mut pass = Pass::default();
    if !orphans.is_empty() {
        for (orphan, result) in orphans.iter().zip(provider.revoke(target, &orphans).await) {
            match result {
                Ok(()) => {
                    pass.orphans_removed += 1;
                    tracing::info!(resource_id, address = %orphan.address, "orphan rule removed");
                }
                Err(err) => {
                    tracing::warn!(resource_id, address = %orphan.address, error = %err, "removing orphan rule failed")
                }
            }
        }
    }
    let owned: BTreeSet<IpAddr> = listing.owned.iter().map(|rule| rule.address).collect();
    // A rule applied moments ago may not be listed yet (EC2's Describe is eventually consistent).
    let settled_before = now() - engine.repair_grace();
    let missing: Vec<&resource_ip::Model> = live
        .iter()
        .filter(|rule| rule.status == ResourceIpStatus::Applied.as_str())
        .filter(|rule| rule.applied_at.is_some_and(|at| at < settled_before))
        .filter(|rule| {
            let Ok(address) = rule.ip_address.parse::<IpAddr>() else { return false };
            // A rule ridden on is someone else's: it is missing only once they removed it.
            let riding = rule.provider_rule_id.as_deref().is_some_and(is_unmanaged);
            if riding { !listing.foreign.contains(&address) } else { !owned.contains(&address) }
        })
        .collect();
    if !missing.is_empty() {
        pass.repaired = repair(engine, &missing).await?;
    }
    Ok(pass)
}

/// Puts rules recorded APPLIED but missing at the provider back in the queue (PENDING, due now)
/// for the worker to open again, each with a `rule.repaired` audit event. Answers how many.
async fn repair(engine: &Engine, missing: &[&resource_ip::Model]) -> StoreResult<usize> {
    let txn = store::begin(&engine.inner.db).await?;
    let mut session_ids: Vec<&str> = missing.iter().map(|rule| rule.session_id.as_str()).collect();
    session_ids.sort_unstable();
    session_ids.dedup();
    sessions::lock_all(&txn, &session_ids).await?;
    let mut repaired = Vec::new();
    for rule in missing {
        // Only if still APPLIED: a session that ended meanwhile keeps its removal.
        if !sessions::requeue(&txn, &rule.id, ResourceIpStatus::Applied, now()).await? {
            continue;
        }
        tracing::warn!(resource_id = %rule.resource_id, address = %rule.ip_address, "rule missing at the provider; re-applying");
        AuditRecord::new("rule.repaired", "resource_ip", &rule.id)
            .detail("resource_id", &rule.resource_id)
            .detail("session_id", &rule.session_id)
            .detail("address", &rule.ip_address)
            .write(&txn, &Actor::server(&rule.organization_id))
            .await?;
        repaired.push(rule.session_id.clone());
    }
    repaired.sort_unstable();
    let count = repaired.len();
    repaired.dedup();
    transitions::settle_all(&txn, &repaired.iter().map(String::as_str).collect::<Vec<_>>()).await?;
    store::commit(txn).await?;
    engine.announce(&repaired).await;
    Ok(count)
}
