//! Periodic resource checks: every firewall is read about once an interval (by one replica
//! among them all), so a deleted firewall or withdrawn credentials show before a session needs
//! them. A check that starts failing, or fails another way, writes `resource.check_failed` to
//! the audit trail (and so to webhooks); one that passes again writes `resource.check_recovered`.
//! The last finding shows on the resource. Checks list with the quota the worker leaves, a few
//! at a time, each within the provider deadline, so a slow firewall holds up no other.

use super::Engine;
use crate::domain::{Actor, now};
use crate::monitoring;
use crate::provider::quota::{Claim, Prepaid};
use crate::provider::{CheckOutcome, Pass};
use crate::store::audit::AuditRecord;
use crate::store::entity::resource;
use crate::store::queries::resources::{self, Round};
use crate::store::{self, StoreResult};
use chrono::{DateTime, TimeDelta, Utc};
use futures::StreamExt;
use std::time::Duration;
use tokio::sync::watch;

/// Most resources one sweep looks at; when all of them are due, the next sweep follows at once.
const SWEEP: u64 = 64;

/// Most checks in flight at once on this replica.
const CONCURRENT: usize = 8;

/// Checks until stopped, each sweep over the resources no replica checked for an interval.
pub(super) async fn run(engine: Engine, mut stop: watch::Receiver<bool>) {
    let Some(interval) = engine.inner.config.check_interval_secs.nonzero() else { return };
    loop {
        let pause = sweep(&engine, interval).await.unwrap_or_else(|err| {
            tracing::warn!(error = %err, "resource check sweep failed");
            interval
        });
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = engine.inner.checks.notified() => {}
            _ = crate::shutdown::stopping(&mut stop) => return,
        }
    }
}

/// Checks the due resources (never checked, or not for `interval`) whose listing the quota
/// spares now. Answers how soon to look again.
async fn sweep(engine: &Engine, interval: Duration) -> StoreResult<Duration> {
    let interval_delta = TimeDelta::from_std(interval).unwrap_or(TimeDelta::MAX);
    let kinds = engine.providers().kinds();
    let candidates = resources::least_recently(&engine.inner.reader, Round::Check, &kinds, SWEEP).await?;
    let more = candidates.len() as u64 == SWEEP;
    let at = now();
    let (mut next_due, mut retry, mut due) = (None, None::<Duration>, Vec::new());
    for resource in candidates {
        let due_at = Round::Check.due_at(&resource, interval_delta);
        if due_at > at {
            // The rest are due later still.
            next_due = Some((due_at - at).to_std().unwrap_or(interval));
            break;
        }
        // An unreadable config goes ahead: its check reports it.
        let tickets = match resources::provider_config(&resource) {
            Ok(config) => engine.providers().admit(&config, Pass::Listing, Claim::Spare),
            Err(_) => Ok(Vec::new()),
        };
        match tickets {
            Ok(tickets) => due.push((resource, Prepaid::new(tickets))),
            Err(wait) => retry = Some(retry.map_or(wait, |retry| retry.min(wait))),
        }
    }
    let checked = due.len();
    let stale_before = at - interval_delta;
    let mut checks = futures::stream::iter(due)
        .map(|(resource, prepaid)| check(engine, resource, stale_before, prepaid))
        .buffer_unordered(CONCURRENT);
    while let Some(done) = checks.next().await {
        if let Err(err) = done {
            tracing::warn!(error = %err, "saving a resource check failed");
        }
    }
    let until_due = next_due.unwrap_or(if more && checked > 0 { Duration::ZERO } else { interval });
    Ok(retry.map_or(until_due, |retry| retry.min(until_due)))
}

/// Checks one resource, unless another replica checked it after `stale_before`, and records
/// what it found.
async fn check(
    engine: &Engine,
    resource: resource::Model,
    stale_before: DateTime<Utc>,
    prepaid: Prepaid,
) -> StoreResult<()> {
    // Claimed first, so replicas sweeping together check it once.
    if !resources::claim(&engine.inner.db, Round::Check, &resource.id, now(), stale_before).await? {
        return Ok(());
    }
    let outcome = match engine.provider_for(&resource.id).await? {
        Ok((provider, target)) => prepaid.spend_in(provider.check(&target)).await,
        // Out of the operator's bounds or the organization's scopes: sessions cannot use it.
        Err(refused) => CheckOutcome::Unsupported(refused.to_string()),
    };
    monitoring::resource_checked(resource.provider_kind.as_str(), outcome.status());
    record(engine, &resource, &outcome).await
}

/// Saves `outcome` on the resource and, when it changes whether (or how) the check fails,
/// writes it to the audit trail in the same transaction.
async fn record(engine: &Engine, resource: &resource::Model, outcome: &CheckOutcome) -> StoreResult<()> {
    let (status, message) = (outcome.status(), outcome.message());
    let txn = store::begin(&engine.inner.db).await?;
    let saved = resources::save_check(&txn, &resource.id, &resource.provider_config, status, message).await?;
    // Deleted or reconfigured meanwhile: the finding was about a firewall no longer there.
    let Some(previous) = saved else { return Ok(()) };
    let was_ok = previous.as_deref().is_none_or(|previous| previous == CheckOutcome::OK);
    let event = match outcome {
        CheckOutcome::Ok(_) if !was_ok => Some("resource.check_recovered"),
        CheckOutcome::Ok(_) => None,
        _ if previous.as_deref() == Some(status) => None,
        _ => Some("resource.check_failed"),
    };
    if let Some(event) = event {
        if event == "resource.check_failed" {
            tracing::warn!(resource_id = %resource.id, status, message, "resource check failed");
        }
        AuditRecord::new(event, "resource", &resource.id)
            .detail("name", &resource.name)
            .detail("status", status)
            .detail("message", message)
            .write(&txn, &Actor::server(&resource.organization_id))
            .await?;
    }
    store::commit(txn).await
}
