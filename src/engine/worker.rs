//! The rule worker: claims due rules, calls providers once per resource, records outcomes.

use super::Engine;
use super::lease::ResourceLease;
use super::transitions::Worked;
use crate::domain::ProviderConfig;
use crate::domain::session as machine;
use crate::domain::{Actor, ResourceIpStatus, now};
use crate::provider::quota::{Claim, Prepaid};
use crate::provider::{FirewallProvider, Owner, Pass, ProviderError, RuleRef, RuleRequest, Target, is_unmanaged};
use crate::store::audit::AuditRecord;
use crate::store::entity::resource_ip;
use crate::store::queries::{resources, sessions};
use crate::store::{self, StoreResult};
use chrono::TimeDelta;
use rand::Rng;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::{JoinError, JoinSet};

const LONGEST_IDLE: Duration = Duration::from_secs(1);
const MIN_IDLE: Duration = Duration::from_millis(5);

/// How soon a pass's quota must come for the pass to start: a resource whose calls would wait
/// longer takes no worker slot, lease or claim yet (see [`admit`]).
pub(super) const ADMIT_AHEAD: Duration = Duration::from_millis(250);

/// How many due resources are looked at for each free slot: those behind a spent quota are
/// passed over for those behind another.
const CANDIDATES_PER_SLOT: usize = 4;

/// Finds resources with due rules and works each in a task of its own (at most
/// `max_concurrent_resources` at once), so a slow firewall only holds up its own rules.
/// On stop, claims no more and waits for the tasks in flight, which end by their provider
/// deadline; whatever is unfinished then is left for the next start.
pub(super) async fn run(engine: Engine, mut stop: watch::Receiver<bool>) {
    let inner = &engine.inner;
    let mut tasks = JoinSet::new();
    // Which resource each task works on.
    let mut busy: HashMap<tokio::task::Id, String> = HashMap::new();
    loop {
        if *stop.borrow() {
            break;
        }
        let room = inner.config.max_concurrent_resources.as_usize().saturating_sub(tasks.len());
        // When a resource passed over for its quota would be admitted.
        let mut quota_in = None;
        if room > 0 {
            let working: Vec<&str> = busy.values().map(String::as_str).collect();
            match admit(&engine, &working, room).await {
                Ok((admitted, soonest)) => {
                    quota_in = soonest;
                    for (resource_id, prepaid) in admitted {
                        let task = tasks.spawn(prepaid.spend_in(work_resource(engine.clone(), resource_id.clone())));
                        busy.insert(task.id(), resource_id);
                    }
                }
                Err(err) => tracing::warn!(error = %err, "looking for due rules failed"),
            }
        }
        let at = inner.clock.now();
        let idle = match sessions::next_due(&inner.reader, at).await {
            Ok(Some(due)) => (due - at).to_std().unwrap_or(Duration::ZERO).clamp(MIN_IDLE, LONGEST_IDLE),
            Ok(None) => LONGEST_IDLE,
            Err(err) => {
                tracing::warn!(error = %err, "reading next due rule failed");
                LONGEST_IDLE
            }
        };
        let idle = quota_in.map_or(idle, |quota_in| idle.min(quota_in.max(MIN_IDLE)));
        tokio::select! {
            Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => finished(&mut busy, done),
            _ = tokio::time::sleep(idle) => {}
            _ = inner.work.notified() => {}
            _ = crate::shutdown::stopping(&mut stop) => break,
        }
    }
    let grace = inner.config.provider_timeout() + SHUTDOWN_MARGIN;
    let drained = tokio::time::timeout(grace, async {
        while let Some(done) = tasks.join_next_with_id().await {
            finished(&mut busy, done);
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(resources = tasks.len(), "resource work still running at shutdown; left for the next start");
        tasks.abort_all();
    }
}

/// Up to `room` due resources, longest waiting first, whose pass's provider quota comes within
/// [`ADMIT_AHEAD`], each with the tickets reserved for its calls; and how soon the first of
/// those passed over would be admitted. Waiting for tokens in a slot would let one account's
/// backlog hold every slot (other firewalls wait behind it), claim rules long before their call
/// (those arriving meanwhile need a call of their own) and fix the order early (a dead
/// replica's rules, due longest, would queue behind everything claimed since).
async fn admit(
    engine: &Engine,
    working: &[&str],
    room: usize,
) -> StoreResult<(Vec<(String, Prepaid)>, Option<Duration>)> {
    let inner = &engine.inner;
    let look_at = u64::try_from(room.saturating_mul(CANDIDATES_PER_SLOT)).unwrap_or(u64::MAX);
    // Leases and claims are compared on the database's clock, as they were written.
    let at = inner.clock.now();
    let due = sessions::due_resources(&inner.reader, at, working, look_at).await?;
    if due.is_empty() {
        return Ok((Vec::new(), None));
    }
    let ids: Vec<&str> = due.iter().map(|resource| resource.resource_id.as_str()).collect();
    let configs: HashMap<String, ProviderConfig> = resources::by_ids(&inner.reader, &ids)
        .await?
        .iter()
        .filter_map(|resource| Some((resource.id.clone(), resources::provider_config(resource).ok()?)))
        .collect();
    let (mut admitted, mut soonest) = (Vec::new(), None::<Duration>);
    for resource in due {
        if admitted.len() == room {
            break;
        }
        let unchanged_for = (at - resource.newest_due_at).to_std().unwrap_or(Duration::ZERO);
        let pass = Pass::Rules { removes: resource.removes, applies: resource.applies, unchanged_for };
        // A deleted or unreadable resource goes ahead: its pass records why it cannot call.
        let tickets = match configs.get(&resource.resource_id) {
            Some(config) => engine.providers().admit(config, pass, Claim::Within(ADMIT_AHEAD)),
            None => Ok(Vec::new()),
        };
        match tickets {
            Ok(tickets) => admitted.push((resource.resource_id, Prepaid::new(tickets))),
            Err(wait) => soonest = Some(soonest.map_or(wait, |soonest| soonest.min(wait))),
        }
    }
    Ok((admitted, soonest))
}

/// Beyond the provider deadline, what a resource task may need to record its outcome.
const SHUTDOWN_MARGIN: Duration = Duration::from_secs(2);

fn finished(busy: &mut HashMap<tokio::task::Id, String>, done: Result<(tokio::task::Id, ()), JoinError>) {
    let id = match done {
        Ok((id, ())) => id,
        Err(err) => {
            tracing::error!(error = %err, "resource task failed");
            err.id()
        }
    };
    busy.remove(&id);
}

/// What happened to one claimed rule.
enum Outcome {
    Applied {
        rule_id: String,
    },
    Failed {
        message: String,
    },
    Removed,
    /// Try again later (a transient error, or any error while removing: removal never gives up).
    Retry {
        message: String,
    },
}

/// Works one resource under its lease: claims its due rules, reads its provider config (under
/// the lease, so a change made before it is seen), removes then applies, records the outcome
/// and tells the watchers.
async fn work_resource(engine: Engine, resource_id: String) {
    let lease = match ResourceLease::acquire(&engine, &resource_id).await {
        Ok(Some(lease)) => lease,
        // Taken meanwhile by another worker: its rules are looked at again when it is done.
        Ok(None) => return,
        Err(err) => {
            tracing::warn!(resource_id, error = %err, "taking the resource lease failed");
            return;
        }
    };
    let worked = lease.hold(work_leased(&engine, &lease)).await;
    lease.release().await;
    match worked {
        Some(Ok(touched)) => {
            let touched: Vec<&str> = touched.iter().map(String::as_str).collect();
            engine.publish(&touched).await;
        }
        Some(Err(err)) => {
            tracing::warn!(resource_id, error = %err, "recording provider results failed; the claims will run out and retry")
        }
        None => {}
    }
}

/// Removals first (so a shared rule is only revoked when nobody else wants it), then
/// applications, each in one provider call. Returns the sessions whose rules changed.
async fn work_leased(engine: &Engine, lease: &ResourceLease) -> StoreResult<Vec<String>> {
    let inner = &engine.inner;
    let claimed = sessions::claim_due_rules(
        &inner.db,
        &lease.resource_id,
        &lease.holder,
        inner.clock.now(),
        lease.claims_until(),
        inner.config.batch.get(),
    )
    .await?;
    if claimed.is_empty() {
        return Ok(Vec::new());
    }
    let claimed = sweep_orphans(engine, claimed).await?;
    let provider = engine.provider_for(&lease.resource_id).await?;
    if let Err(refused @ ProviderError::Forbidden(_)) = &provider {
        report_refusal(engine, &lease.resource_id, &claimed.rules, refused).await?;
    }
    let (removing, pending): (Vec<_>, Vec<_>) =
        claimed.rules.into_iter().partition(|rule| rule.status == ResourceIpStatus::Removing);
    let mut outcomes = match time_for_a_call(engine, lease) {
        true => remove(engine, provider.as_ref(), removing).await?,
        false => retry_all(removing, LEASE_TOO_SHORT),
    };
    outcomes.extend(match time_for_a_call(engine, lease) {
        true => apply(engine, provider.as_ref(), pending, &claimed.expiries).await?,
        false => retry_all(pending, LEASE_TOO_SHORT),
    });
    let counted = OutcomeCounts::of(&outcomes);
    let touched = record(engine, &lease.holder, outcomes).await?;
    counted.report(provider.as_ref().map_or("none", |(_, target)| target.config.kind().as_str()));
    Ok(touched)
}

/// Why rules wait when [`time_for_a_call`] says no.
const LEASE_TOO_SHORT: &str = "waiting for the resource lease to be renewed";

/// A provider call may start only if it would end while the lease holds (a renewal that came
/// late leaves too little): otherwise the rules wait for the next pass.
fn time_for_a_call(engine: &Engine, lease: &ResourceLease) -> bool {
    let enough = lease.has_time_for(engine.inner.config.provider_timeout());
    if !enough {
        tracing::warn!(resource_id = %lease.resource_id, "resource lease too close to its end for a provider call; retrying later");
    }
    enough
}

fn retry_all(rules: Vec<resource_ip::Model>, message: &str) -> Vec<(resource_ip::Model, Outcome)> {
    rules.into_iter().map(|rule| (rule, Outcome::Retry { message: message.to_owned() })).collect()
}

/// Claimed rules, and when each of their sessions expires.
struct Claimed {
    rules: Vec<resource_ip::Model>,
    expiries: HashMap<String, chrono::DateTime<chrono::Utc>>,
}

/// Claimed rules of sessions that have ended can only be orphans: they are removed instead of
/// being opened (see [`Engine::sweep_orphans`]).
async fn sweep_orphans(engine: &Engine, mut claimed: Vec<resource_ip::Model>) -> StoreResult<Claimed> {
    let (sessions, orphans) = engine.sweep_orphans(&claimed).await?;
    for rule in claimed.iter_mut().filter(|rule| orphans.contains(&rule.id)) {
        rule.status = ResourceIpStatus::Removing;
    }
    let expiries = sessions.into_iter().map(|(id, session)| (id, session.expires_at)).collect();
    Ok(Claimed { rules: claimed, expiries })
}

/// How many rules of a pass ended each way, for the metrics.
#[derive(Default)]
struct OutcomeCounts {
    applied: usize,
    removed: usize,
    failed: usize,
    retried: usize,
}

impl OutcomeCounts {
    fn of(outcomes: &[(resource_ip::Model, Outcome)]) -> OutcomeCounts {
        let mut counts = OutcomeCounts::default();
        for (_, outcome) in outcomes {
            match outcome {
                Outcome::Applied { .. } => counts.applied += 1,
                Outcome::Removed => counts.removed += 1,
                Outcome::Failed { .. } => counts.failed += 1,
                Outcome::Retry { .. } => counts.retried += 1,
            }
        }
        counts
    }

    fn report(&self, provider: &'static str) {
        let counts =
            [("applied", self.applied), ("removed", self.removed), ("failed", self.failed), ("retried", self.retried)];
        for (outcome, count) in counts {
            crate::monitoring::rule_outcomes(provider, outcome, count);
        }
    }
}

pub(super) type ProviderTarget = (Arc<dyn FirewallProvider>, Target);

/// Records in the audit trail that calls for a resource were not sent, the first time its rules
/// meet the refusal (not again on every retry).
async fn report_refusal(
    engine: &Engine,
    resource_id: &str,
    claimed: &[resource_ip::Model],
    refused: &ProviderError,
) -> StoreResult<()> {
    let message = refused.to_string();
    let unreported = |rule: &&resource_ip::Model| !rule.error_message.as_deref().is_some_and(|m| m.contains(&message));
    let Some(first) = claimed.iter().find(unreported) else {
        return Ok(());
    };
    tracing::warn!(resource_id, error = %message, "provider call not sent");
    AuditRecord::new("resource.call_refused", "resource", resource_id)
        .detail("reason", &message)
        .write(&engine.inner.db, &Actor::server(&first.organization_id))
        .await
}

async fn remove(
    engine: &Engine,
    provider: Result<&ProviderTarget, &ProviderError>,
    rules: Vec<resource_ip::Model>,
) -> StoreResult<Vec<(resource_ip::Model, Outcome)>> {
    let mut outcomes = Vec::new();
    let mut to_revoke = Vec::new();
    let holders = Holders::load(engine, &rules).await?;
    for rule in rules {
        if holders.others(&rule).next().is_some() {
            // Another live session holds the same address here: the shared rule stays.
            outcomes.push((rule, Outcome::Removed));
        } else if rule.provider_rule_id.as_deref().is_some_and(is_unmanaged) {
            // The session rode on someone else's rule: it is theirs to remove.
            outcomes.push((rule, Outcome::Removed));
        } else {
            to_revoke.push(rule);
        }
    }
    if to_revoke.is_empty() {
        return Ok(outcomes);
    }
    let (provider, target) = match provider {
        Ok(found) => found,
        // Only the provider can confirm a rule is gone: until this server can reach it (a
        // replica built with its feature, a readable config), the rule stays REMOVING.
        Err(err) => {
            let message = format!("cannot remove the rule: {err}");
            tracing::warn!(count = to_revoke.len(), error = %message, "removal waits for a reachable provider");
            outcomes.extend(to_revoke.into_iter().map(|rule| (rule, Outcome::Retry { message: message.clone() })));
            return Ok(outcomes);
        }
    };
    let refs: Vec<RuleRef> = to_revoke
        .iter()
        .filter_map(|rule| {
            let address = rule.ip_address.parse::<IpAddr>().ok()?;
            Some(RuleRef { address, rule_id: rule.provider_rule_id.clone() })
        })
        .collect();
    let results = if refs.len() == to_revoke.len() {
        provider.revoke(target, &refs).await
    } else {
        to_revoke.iter().map(|_| Err(ProviderError::Rejected("stored address is unreadable".into()))).collect()
    };
    for (rule, result) in to_revoke.into_iter().zip(results) {
        let outcome = match result {
            Ok(()) => Outcome::Removed,
            Err(err) => {
                tracing::warn!(resource_ip_id = %rule.id, error = %err, "revoke failed; will retry");
                Outcome::Retry { message: err.to_string() }
            }
        };
        outcomes.push((rule, outcome));
    }
    Ok(outcomes)
}

async fn apply(
    engine: &Engine,
    provider: Result<&ProviderTarget, &ProviderError>,
    rules: Vec<resource_ip::Model>,
    expiries: &HashMap<String, chrono::DateTime<chrono::Utc>>,
) -> StoreResult<Vec<(resource_ip::Model, Outcome)>> {
    let mut outcomes = Vec::new();
    let (provider, target) = match provider {
        Ok(found) => found,
        // Not sent while the operator forbids it; the rules wait, visibly, for the policy to change.
        Err(refused @ ProviderError::Forbidden(_)) => {
            let retry = |rule| (rule, Outcome::Retry { message: refused.to_string() });
            return Ok(rules.into_iter().map(retry).collect());
        }
        Err(err) => {
            return Ok(rules.into_iter().map(|rule| (rule, Outcome::Failed { message: err.to_string() })).collect());
        }
    };
    let mut to_apply = Vec::new();
    let mut requests = Vec::new();
    let holders = Holders::load(engine, &rules).await?;
    for rule in rules {
        let shared = holders
            .others(&rule)
            .find(|h| h.status == ResourceIpStatus::Applied)
            .and_then(|h| h.provider_rule_id.clone());
        if let Some(rule_id) = shared {
            // The address is already open here for another session: share its rule.
            outcomes.push((rule, Outcome::Applied { rule_id }));
            continue;
        }
        let (Ok(address), Some(expires_at)) = (rule.ip_address.parse::<IpAddr>(), expiries.get(&rule.session_id))
        else {
            outcomes.push((rule, Outcome::Failed { message: "stored address or session is unreadable".into() }));
            continue;
        };
        // Two sessions wanting one address in the same batch share one request.
        let slot = match requests.iter().position(|request: &RuleRequest| request.address == address) {
            Some(slot) => slot,
            None => {
                let owner = Owner { session_id: rule.session_id.clone(), expires_at: *expires_at };
                requests.push(RuleRequest { address, owner });
                requests.len() - 1
            }
        };
        to_apply.push((rule, slot));
    }
    if requests.is_empty() {
        return Ok(outcomes);
    }
    let results = provider.apply(target, &requests).await;
    for (rule, slot) in to_apply {
        let result = results.get(slot).cloned().unwrap_or_else(|| {
            Err(ProviderError::Transient("the provider answered fewer results than requests".into()))
        });
        let outcome = match result {
            Ok(rule_id) => Outcome::Applied { rule_id },
            Err(ProviderError::Transient(message) | ProviderError::Throttled(message)) => {
                tracing::warn!(resource_ip_id = %rule.id, error = %message, "apply failed; will retry");
                Outcome::Retry { message }
            }
            Err(ProviderError::Rejected(message) | ProviderError::Forbidden(message)) => {
                tracing::warn!(resource_ip_id = %rule.id, error = %message, "apply rejected");
                Outcome::Failed { message }
            }
        };
        outcomes.push((rule, outcome));
    }
    Ok(outcomes)
}

/// Saves outcomes and releases the claims, in one transaction with the sessions they move: the
/// state machine decides each rule's status from its session as it now stands (a rule whose
/// session ended while it was being applied keeps REMOVING, records the rule id so the removal
/// that follows revokes exactly what was opened, and is due again at once). Returns the sessions
/// changed.
async fn record(
    engine: &Engine,
    token: &str,
    outcomes: Vec<(resource_ip::Model, Outcome)>,
) -> StoreResult<Vec<String>> {
    let inner = &engine.inner;
    let txn = store::begin(&inner.db).await?;
    // Sessions before rules, as everywhere else that changes both: no lock-order deadlocks.
    let mut sessions_of: Vec<&str> = outcomes.iter().map(|(rule, _)| rule.session_id.as_str()).collect();
    sessions_of.sort_unstable();
    sessions_of.dedup();
    sessions::lock_all(&txn, &sessions_of).await?;
    let ids: Vec<&str> = outcomes.iter().map(|(rule, _)| rule.id.as_str()).collect();
    let mut current_rows: HashMap<String, resource_ip::Model> =
        sessions::claimed_rules_for_update(&txn, &ids).await?.into_iter().map(|row| (row.id.clone(), row)).collect();
    let at = now();
    let (mut worked, mut failures) = (Vec::with_capacity(outcomes.len()), Vec::new());
    for (claimed, outcome) in outcomes {
        let current = match current_rows.remove(&claimed.id) {
            Some(current) if current.lease_owner.as_deref() == Some(token) => current,
            _ => continue,
        };
        let moved = current.status != claimed.status;
        let mut next = current.clone();
        next.lease_owner = None;
        next.lease_expires_at = None;
        next.updated_at = at;
        let settled = match outcome {
            Outcome::Applied { rule_id } => {
                next.provider_rule_id = Some(rule_id);
                next.applied_at = Some(at);
                next.error_message = None;
                Some(machine::Outcome::Applied)
            }
            Outcome::Failed { message } => {
                if !moved {
                    next.error_message = Some(message);
                }
                Some(machine::Outcome::Failed)
            }
            Outcome::Removed => {
                if !moved {
                    next.removed_at = Some(at);
                    next.error_message = None;
                }
                Some(machine::Outcome::Removed)
            }
            Outcome::Retry { message } if !moved => {
                next.attempts = current.attempts.saturating_add(1);
                next.next_attempt_at = at + backoff(&inner.config, current.attempts);
                next.error_message = Some(message);
                None
            }
            // The status moved under us (the session ended): its new work is due now.
            Outcome::Retry { .. } => {
                next.next_attempt_at = at;
                None
            }
        };
        // A settled call always moves its rule, unless the rule had moved already.
        let visible = moved || settled.is_some() || next.error_message != current.error_message;
        worked.push(Worked { rule: next, claimed: claimed.status, outcome: settled, visible });
    }
    let (saving, touched) = super::transitions::settle_worked(&txn, worked).await?;
    let saved = sessions::save_claimed_rules(&txn, token, saving.clone()).await?;
    // Claims are only ever PENDING or REMOVING: a saved FAILED rule has just failed.
    for rule in saving.iter().filter(|rule| saved.contains(&rule.id)) {
        if rule.status == ResourceIpStatus::Failed {
            let record = AuditRecord::new("rule.failed", "resource_ip", &rule.id)
                .detail("resource_id", &rule.resource_id)
                .detail("session_id", &rule.session_id)
                .detail("address", &rule.ip_address)
                .detail("error", rule.error_message.as_deref().unwrap_or_default());
            failures.push((record, Actor::server(&rule.organization_id)));
        }
    }
    AuditRecord::write_all(&txn, failures).await?;
    store::commit(txn).await?;
    Ok(touched)
}

/// Exponential backoff with jitter: base · 2^attempts, capped, times a random 50–100 %.
fn backoff(config: &super::EngineConfig, attempts: i32) -> TimeDelta {
    let exponent = u32::try_from(attempts.clamp(0, 20)).unwrap_or(20);
    let delay = config.backoff_base.saturating_mul(2u32.saturating_pow(exponent)).min(config.backoff_max);
    let jittered = delay.mul_f64(rand::rng().random_range(0.5..=1.0));
    TimeDelta::from_std(jittered).unwrap_or(TimeDelta::seconds(60))
}

/// The rules that hold the same addresses on the same resource as a group of claimed rules.
struct Holders(Vec<resource_ip::Model>);

impl Holders {
    async fn load(engine: &Engine, rules: &[resource_ip::Model]) -> StoreResult<Holders> {
        let Some(first) = rules.first() else { return Ok(Holders(Vec::new())) };
        let addresses: Vec<&str> = rules.iter().map(|r| r.ip_address.as_str()).collect();
        Ok(Holders(sessions::holders(&engine.inner.reader, &first.resource_id, &addresses).await?))
    }

    /// The holders of `rule`'s address other than `rule` itself.
    fn others<'a>(&'a self, rule: &'a resource_ip::Model) -> impl Iterator<Item = &'a resource_ip::Model> + 'a {
        self.0.iter().filter(move |h| h.ip_address == rule.ip_address && h.id != rule.id)
    }
}
