//! The reconciler, in the Kubernetes-controller sense: for every resource, periodically, the
//! desired state (live rules in the database) against the actual one (the provider's rules).
//! A rule recorded APPLIED but absent at the provider is re-applied; a rule of ours that no live
//! rule accounts for (a lost database, a restore, a crash between opening and recording) is
//! removed; a rule without our marker is never touched. It runs on a task of its own and under
//! each resource's lease, so it never races an apply or removal on any replica, and it never
//! holds up the worker: it lists a firewall with the quota the worker leaves, and one replica's
//! reconcile of a resource counts for all.

use super::Engine;
use super::lease::ResourceLease;
use super::transitions;
use super::worker::ADMIT_AHEAD;
use crate::domain::{Actor, ResourceIpStatus, now};
use crate::provider::quota::{Claim, Prepaid};
use crate::provider::{self, FirewallProvider, RuleRef, Target, is_unmanaged};
use crate::store::audit::AuditRecord;
use crate::store::entity::resource_ip;
use crate::store::queries::resources::{self, Round};
use crate::store::queries::sessions;
use crate::store::{self, StoreResult};
use chrono::{DateTime, TimeDelta, Utc};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;
use tokio::sync::watch;

/// Most resources one sweep looks at; when all of them are due, the next sweep follows at once.
const SWEEP: u64 = 256;

/// How soon a resource passed over because a worker holds its lease is looked at again.
const BUSY_RETRY: Duration = Duration::from_secs(1);

/// Sweeps until stopped, each time over the resources no replica reconciled for an interval.
pub(super) async fn run(engine: Engine, mut stop: watch::Receiver<bool>) {
    let Some(interval) = engine.inner.config.reconcile_interval() else { return };
    loop {
        let pause = sweep(&engine, interval).await.unwrap_or_else(|err| {
            tracing::warn!(error = %err, "reconcile sweep failed");
            interval
        });
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = crate::shutdown::stopping(&mut stop) => return,
        }
    }
}

/// What a sweep changed.
#[derive(Debug, Default, Clone, Copy)]
struct Repairs {
    orphans_removed: usize,
    repaired: usize,
}

/// Reconciles, least recently reconciled first, every resource due (none reconciled for
/// `interval`, or never) whose listing the provider's quota admits now (see [`claim_for`]).
/// Answers how soon to look again: when the next resource falls due or a refused one would be
/// admitted.
async fn sweep(engine: &Engine, interval: Duration) -> StoreResult<Duration> {
    let interval_delta = TimeDelta::from_std(interval).unwrap_or(TimeDelta::MAX);
    // Resources of providers this server was built without are someone else's to reconcile.
    let kinds = engine.providers().kinds();
    let candidates = resources::least_recently(&engine.inner.reader, Round::Reconcile, &kinds, SWEEP).await?;
    // More may be due beyond those looked at.
    let more = candidates.len() as u64 == SWEEP;
    let (mut next_due, mut retry) = (None, None::<Duration>);
    let (mut repairs, mut reconciled) = (Repairs::default(), 0usize);
    for resource in candidates {
        let at = now();
        let due_at = Round::Reconcile.due_at(&resource, interval_delta);
        if due_at > at {
            // The rest are due later still.
            next_due = Some((due_at - at).to_std().unwrap_or(interval));
            break;
        }
        let claim = claim_for((at - due_at).to_std().unwrap_or_default(), interval);
        // An unreadable config goes ahead: the pass finds it cannot call, as the worker does.
        let tickets = match resources::provider_config(&resource) {
            Ok(config) => engine.providers().admit(&config, provider::Pass::Listing, claim),
            Err(_) => Ok(Vec::new()),
        };
        let tickets = match tickets {
            Ok(tickets) => tickets,
            Err(wait) => {
                retry = Some(retry.map_or(wait, |retry| retry.min(wait)));
                continue;
            }
        };
        match reconcile_leased(engine, &resource.id, at - interval_delta, Prepaid::new(tickets)).await? {
            Some(done) => {
                crate::monitoring::reconciled(done.repaired, done.orphans_removed);
                reconciled += 1;
                repairs.orphans_removed += done.orphans_removed;
                repairs.repaired += done.repaired;
            }
            None => retry = Some(retry.map_or(BUSY_RETRY, |retry| retry.min(BUSY_RETRY))),
        }
    }
    if repairs.orphans_removed + repairs.repaired > 0 {
        tracing::info!(orphans_removed = repairs.orphans_removed, repaired = repairs.repaired, "reconcile pass");
    }
    // Those beyond the ones looked at are next at once, unless all of these had to wait.
    let until_due = next_due.unwrap_or(if more && reconciled > 0 { Duration::ZERO } else { interval });
    Ok(retry.map_or(until_due, |retry| retry.min(until_due)))
}

/// After how many intervals without a reconcile a resource stops waiting for spare quota.
const LATE_AFTER_INTERVALS: u32 = 10;

/// A resource due for `waited` (due an interval after its last reconcile) lists its firewall
/// only with tokens the worker does not need, until it is late: then it takes its turn beside
/// the worker. Drift is found within an interval while the account has quota to spare, and
/// within [`LATE_AFTER_INTERVALS`] however long the worker keeps the account's quota busy; late
/// listings are few enough (a tenth of the resources per interval at most) to leave the worker
/// most of a bucket that cannot even list every resource once an interval.
fn claim_for(waited: Duration, interval: Duration) -> Claim {
    if waited < interval.saturating_mul(LATE_AFTER_INTERVALS - 1) { Claim::Spare } else { Claim::Within(ADMIT_AHEAD) }
}

/// Reconciles `resource_id` under its lease with the quota `prepaid`, unless a worker holds the
/// lease (None) or another replica reconciled it after `stale_before` (nothing to do).
async fn reconcile_leased(
    engine: &Engine,
    resource_id: &str,
    stale_before: DateTime<Utc>,
    prepaid: Prepaid,
) -> StoreResult<Option<Repairs>> {
    let Some(lease) = ResourceLease::acquire(engine, resource_id).await? else { return Ok(None) };
    let done = lease
        .hold(prepaid.spend_in(async {
            // Claimed first, so replicas sweeping together list it once.
            if !resources::claim(&engine.inner.db, Round::Reconcile, resource_id, now(), stale_before).await? {
                return Ok(Repairs::default());
            }
            match engine.provider_for(resource_id).await? {
                // A listing must end while the lease holds; the renewals carry it on from there.
                Ok(_) if !lease.has_time_for(engine.inner.config.provider_timeout()) => Ok(Repairs::default()),
                Ok((provider, target)) => reconcile_resource(engine, provider.as_ref(), &target).await,
                // Deleted, unreadable, or out of the operator's bounds: nothing to compare.
                Err(_) => Ok(Repairs::default()),
            }
        }))
        .await;
    lease.release().await;
    // A rule that fell due while the lease was held need not wait for the worker's next round.
    engine.wake();
    // A lost lease abandons the work; the next sweep comes soon enough.
    Ok(Some(done.transpose()?.unwrap_or_default()))
}

/// Brings one resource's firewall in line with its live rules.
async fn reconcile_resource(engine: &Engine, provider: &dyn FirewallProvider, target: &Target) -> StoreResult<Repairs> {
    let resource_id = &target.resource_id;
    let listing = match provider.list(target).await {
        Ok(listing) => listing,
        Err(err) => {
            tracing::warn!(resource_id, error = %err, "listing rules to reconcile failed");
            return Ok(Repairs::default());
        }
    };
    // Pending and removing rules count as live: their provider call may be due any moment.
    let live = sessions::rules_on(&engine.inner.reader, resource_id, &ResourceIpStatus::LIVE).await?;
    // Rules of ended sessions are not wanted: they go (their addresses count as held until the
    // worker has removed them).
    engine.sweep_orphans(&live).await?;
    let held: BTreeSet<IpAddr> = live.iter().filter_map(|rule| rule.ip_address.parse().ok()).collect();
    let orphans: Vec<RuleRef> = listing
        .owned
        .iter()
        // By address: a provider may keep many addresses under one rule id (GCP).
        .filter(|rule| !held.contains(&rule.address))
        .map(|rule| RuleRef { address: rule.address, rule_id: Some(rule.rule_id.clone()) })
        .collect();
    let mut pass = Repairs::default();
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
        .filter(|rule| rule.status == ResourceIpStatus::Applied)
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
/// for the worker to open again, each with a `rule.repaired` audit event, if their session is
/// still live. Answers how many.
async fn repair(engine: &Engine, missing: &[&resource_ip::Model]) -> StoreResult<usize> {
    let txn = store::begin(&engine.inner.db).await?;
    let pairs: Vec<(&str, &str)> = missing.iter().map(|rule| (rule.session_id.as_str(), rule.id.as_str())).collect();
    let (repaired, changed) = transitions::repair(&txn, &pairs).await?;
    for rule in missing.iter().filter(|rule| repaired.contains(&rule.id)) {
        tracing::warn!(resource_id = %rule.resource_id, address = %rule.ip_address, "rule missing at the provider; re-applying");
        AuditRecord::new("rule.repaired", "resource_ip", &rule.id)
            .detail("resource_id", &rule.resource_id)
            .detail("session_id", &rule.session_id)
            .detail("address", &rule.ip_address)
            .write(&txn, &Actor::server(&rule.organization_id))
            .await?;
    }
    store::commit(txn).await?;
    engine.announce(&changed).await;
    Ok(repaired.len())
}
