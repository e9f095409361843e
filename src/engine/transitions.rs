//! Session transitions as guarded writes. Every change to a session or its rules' statuses goes
//! through here: the sessions are read and locked inside the caller's transaction, the state
//! machine (`domain::session`) decides, and the answer is written in that same transaction, so a
//! decision never rests on a stale read and a lost race is a refusal, never a silent write.
//! Waking the engine and publishing to watchers is the caller's business once it has committed.

use crate::domain::session::{self as machine, Effect, Event, Refusal, StartRefusal, StartRights};
use crate::domain::{Actor, EndedReason, ResourceIpStatus, SessionStatus, now};
use crate::store::audit::AuditRecord;
use crate::store::entity::{resource_ip, session};
use crate::store::queries::sessions::{self, Holder, RuleChange};
use crate::store::{StoreError, StoreResult};
use chrono::{DateTime, TimeDelta, Utc};
use sea_orm::DatabaseTransaction;
use std::collections::{BTreeMap, HashMap, HashSet};

/// A new session (PENDING), its rules, and who started it.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub session: session::Model,
    pub rules: Vec<resource_ip::Model>,
    pub actor: Actor,
}

impl NewSession {
    /// The keys that make its addresses unique among its user's live sessions.
    pub fn live_keys(&self) -> impl Iterator<Item = &str> {
        [&self.session.live_ipv4_key, &self.session.live_ipv6_key].into_iter().flatten().map(String::as_str)
    }
}

/// Records those of `starts` whose user still holds every right they were started with, read
/// (and, on PostgreSQL, share-locked against revocations) in this transaction: the user
/// enabled, the organization not suspended, each resource still assigned, no live session of
/// the user on the address (counting the batch's earlier starts). Answers each start's refusal.
pub async fn start_all(txn: &DatabaseTransaction, starts: &[NewSession]) -> StoreResult<Vec<Result<(), StartRefusal>>> {
    let keys: Vec<&str> = starts.iter().flat_map(NewSession::live_keys).collect();
    let mut held = sessions::live_keys_taken(txn, &keys).await?;
    let rights =
        sessions::hold_start_rights(txn, starts.iter().map(|new| (&new.session, new.rules.as_slice()))).await?;
    let mut answers = Vec::with_capacity(starts.len());
    let (mut events, mut new_sessions, mut new_rules) = (Vec::new(), Vec::new(), Vec::new());
    for new in starts {
        let session = &new.session;
        let unassigned = new
            .rules
            .iter()
            .find(|rule| !rights.assigned.contains(&(rule.resource_id.clone(), session.user_id.clone())))
            .map(|rule| rule.resource_id.clone());
        let answer = StartRights {
            user_enabled: rights.enabled_users.contains(&session.user_id),
            organization_suspended: !rights.active_organizations.contains(&session.organization_id),
            unassigned,
            address_held: new.live_keys().any(|key| held.contains(key)),
        }
        .admit();
        if answer.is_ok() {
            held.extend(new.live_keys().map(str::to_owned));
            let minutes = (session.expires_at - session.started_at).num_minutes();
            let mut record =
                AuditRecord::new("session.started", "session", &session.id).detail("duration_minutes", minutes);
            for (key, address) in [("ipv4_address", &session.ipv4_address), ("ipv6_address", &session.ipv6_address)] {
                if let Some(address) = address {
                    record = record.detail(key, address);
                }
            }
            events.push((record, new.actor.clone()));
            if session.status == SessionStatus::AwaitingApproval {
                let mut requested = AuditRecord::new("approval.requested", "session", &session.id)
                    .detail("deadline", session.expires_at.to_rfc3339());
                if let Some(justification) = &session.justification {
                    requested = requested.detail("justification", justification);
                }
                if let Some(ticket) = &session.ticket {
                    requested = requested.detail("ticket", ticket);
                }
                events.push((requested, new.actor.clone()));
            }
            new_sessions.push(session.clone());
            new_rules.extend(new.rules.iter().cloned());
        }
        answers.push(answer);
    }
    sessions::insert_all(txn, new_sessions, new_rules).await?;
    AuditRecord::write_all(txn, events).await?;
    Ok(answers)
}

/// A session read and locked in the transaction that changes it, with its rules.
struct Locked {
    row: session::Model,
    rules: Vec<resource_ip::Model>,
    state: machine::Session,
}

/// Reads and locks sessions (in id order) with their rules.
async fn lock(txn: &DatabaseTransaction, ids: &[&str]) -> StoreResult<BTreeMap<String, Locked>> {
    let rows = sessions::get_all_for_update(txn, ids).await?;
    let mut rules = sessions::rules_of_all(txn, ids).await?;
    let mut locked = BTreeMap::new();
    for row in rows {
        let rules = rules.remove(&row.id).unwrap_or_default();
        let state = view(&row, &rules)?;
        locked.insert(row.id.clone(), Locked { row, rules, state });
    }
    Ok(locked)
}

/// A stored session as the state machine sees it.
fn view(row: &session::Model, rules: &[resource_ip::Model]) -> StoreResult<machine::Session> {
    let corrupt = |what: &str, value: &str| StoreError::Corrupt(format!("{what} {value:?} of session {}", row.id));
    let rules = rules
        .iter()
        .map(|rule| {
            Ok(machine::Rule {
                id: rule.id.clone(),
                resource_id: rule.resource_id.clone(),
                family: u8::try_from(rule.ip_version)
                    .map_err(|_| corrupt("ip_version", &rule.ip_version.to_string()))?,
                status: rule.status,
                superseded: rule.replaced_by.is_some(),
            })
        })
        .collect::<StoreResult<Vec<_>>>()?;
    Ok(machine::Session {
        status: row.status,
        ended_reason: row.ended_reason,
        expires_at: row.expires_at,
        heartbeat_due_at: row.heartbeat_due_at,
        rules,
    })
}

/// Sessions a batch of events moved, and the calls that fell due.
struct Decided {
    locked: BTreeMap<String, Locked>,
    /// The sessions whose state changed, with their new state.
    moved: BTreeMap<String, machine::Session>,
    due: HashSet<String>,
}

impl Decided {
    fn new(locked: BTreeMap<String, Locked>) -> Decided {
        Decided { locked, moved: BTreeMap::new(), due: HashSet::new() }
    }

    /// Asks the state machine what `event` makes of the session as it now stands (after the
    /// batch's earlier events).
    fn decide(&mut self, session_id: &str, event: &Event) -> Result<(), Refusal> {
        let Some(locked) = self.locked.get(session_id) else { return Err(Refusal::UnknownSession) };
        let current = self.moved.get(session_id).unwrap_or(&locked.state);
        let step = current.step(event)?;
        for effect in step.effects {
            match effect {
                Effect::Apply(id) | Effect::Remove(id) => self.due.insert(id),
            };
        }
        self.moved.insert(session_id.to_owned(), step.session);
        Ok(())
    }
}

/// What [`write`] needs beyond the decisions: who acted, why (an audit `cause`), rules the
/// caller saves itself (the worker's claimed rules), sessions to show as changed although their
/// state did not move (a rule's error changed), and sessions' new addresses.
#[derive(Default)]
struct Writing<'a> {
    actor: Option<&'a Actor>,
    cause: Option<&'a str>,
    saved_by_caller: HashSet<String>,
    touched: Vec<String>,
    readdressed: HashMap<String, session::Model>,
}

/// Writes the decisions: one upsert for the sessions, one update per kind of rule change, and
/// the audit events of status changes. Answers the sessions changed.
async fn write(txn: &DatabaseTransaction, decided: Decided, writing: Writing<'_>) -> StoreResult<Vec<String>> {
    let at = now();
    let Decided { locked, mut moved, due } = decided;
    let mut changed: Vec<String> = moved.keys().cloned().collect();
    for id in writing.touched {
        if locked.contains_key(&id) && !moved.contains_key(&id) {
            changed.push(id);
        }
    }
    changed.sort();
    changed.dedup();
    let (mut rows, mut events, mut rule_changes) = (Vec::new(), Vec::new(), Vec::new());
    for id in &changed {
        let Some(locked) = locked.get(id) else { continue };
        let after = moved.remove(id).unwrap_or_else(|| locked.state.clone());
        let before = &locked.state;
        let mut row = writing.readdressed.get(id).cloned().unwrap_or_else(|| locked.row.clone());
        row.status = after.status;
        row.ended_reason = after.ended_reason;
        row.expires_at = after.expires_at;
        row.heartbeat_due_at = after.heartbeat_due_at;
        if !after.status.is_live() {
            (row.live_ipv4_key, row.live_ipv6_key) = (None, None);
        }
        let organization = Actor::server(&row.organization_id);
        let actor = writing.actor.map_or(organization.clone(), |actor| Actor {
            organization_id: row.organization_id.clone(),
            ..actor.clone()
        });
        if after.ended_reason == Some(EndedReason::ApprovalTimeout) && before.ended_reason.is_none() {
            events.push((AuditRecord::new("approval.expired", "session", id), organization.clone()));
        }
        if after.ended_reason.is_some() && before.ended_reason.is_none() {
            row.ended_at = Some(at);
            let mut record = AuditRecord::new("session.expiring", "session", id);
            if let Some(reason) = after.ended_reason {
                record = record.detail("reason", reason);
            }
            if let Some(cause) = writing.cause {
                record = record.detail("cause", cause);
            }
            events.push((record, actor));
        }
        if after.status != before.status && after.status != SessionStatus::Expiring {
            if after.status == SessionStatus::Failed {
                row.ended_at = Some(at);
            }
            events.push((AuditRecord::new(session_event(after.status), "session", id), organization));
        }
        row.revision += 1;
        row.updated_at = at;
        rows.push(row);
        rule_changes.extend(rule_changes_of(&locked.rules, &after, &due, &writing.saved_by_caller));
    }
    sessions::save_transitions(txn, rows).await?;
    sessions::change_rules(txn, &rule_changes, at).await?;
    AuditRecord::write_all(txn, events).await?;
    Ok(changed)
}

/// How a session's stored rules must change to match the state machine's answer.
fn rule_changes_of(
    stored: &[resource_ip::Model],
    after: &machine::Session,
    due: &HashSet<String>,
    saved_by_caller: &HashSet<String>,
) -> Vec<RuleChange> {
    let mut changes = Vec::new();
    for rule in &after.rules {
        if saved_by_caller.contains(&rule.id) {
            continue;
        }
        // Rules new in this step (a changed address's) were inserted by the caller as they are.
        let Some(before) = stored.iter().find(|stored| stored.id == rule.id) else { continue };
        if before.status != rule.status {
            changes.push(RuleChange::Status { id: rule.id.clone(), from: before.status, to: rule.status });
        } else if due.contains(&rule.id) {
            changes.push(RuleChange::DueNow { id: rule.id.clone() });
        }
        if rule.superseded && before.replaced_by.is_none() {
            // The newest rule on its resource and family takes its place.
            let successor = after
                .rules
                .iter()
                .filter(|other| other.resource_id == rule.resource_id && other.family == rule.family)
                .filter(|other| !other.superseded)
                .map(|other| other.id.clone())
                .max();
            if let Some(successor) = successor {
                changes.push(RuleChange::ReplacedBy { id: rule.id.clone(), successor });
            }
        }
    }
    changes
}

/// Applies `events` to their sessions (read and locked here) and writes what the state machine
/// made of them. Answers each event's refusal, if any, and the sessions changed.
async fn run(
    txn: &DatabaseTransaction,
    events: &[(&str, Event)],
    actor: Option<&Actor>,
    cause: Option<&str>,
) -> StoreResult<(Vec<Result<(), Refusal>>, Vec<String>)> {
    let ids: Vec<&str> = events.iter().map(|(id, _)| *id).collect();
    let mut decided = Decided::new(lock(txn, &ids).await?);
    let answers: Vec<Result<(), Refusal>> = events.iter().map(|(id, event)| decided.decide(id, event)).collect();
    let changed = write(txn, decided, Writing { actor, cause, ..Writing::default() }).await?;
    Ok((answers, changed))
}

/// Ends a live session (EXPIRING, its unfinished rules REMOVING). `cause` says why, in the
/// audit trail, when it ended because access was taken away. Answers false when the session
/// was not live (ending is idempotent).
pub async fn end(
    txn: &DatabaseTransaction,
    session_id: &str,
    reason: EndedReason,
    actor: &Actor,
    cause: Option<&str>,
) -> StoreResult<bool> {
    let (answers, _) = run(txn, &[(session_id, Event::End(reason))], Some(actor), cause).await?;
    Ok(answers.first().is_some_and(Result::is_ok))
}

/// Opens a session that waited for approval: its rules go to the provider, and it lasts until
/// `expires_at`. Answers false when it no longer waits (ended, or approved meanwhile).
pub async fn approve(
    txn: &DatabaseTransaction,
    session_id: &str,
    expires_at: DateTime<Utc>,
    heartbeat_due_at: Option<DateTime<Utc>>,
    actor: &Actor,
) -> StoreResult<bool> {
    let event = Event::Approve { expires_at, heartbeat_due_at };
    let (answers, _) = run(txn, &[(session_id, event)], Some(actor), None).await?;
    Ok(answers.first().is_some_and(Result::is_ok))
}

/// Ends those of `session_ids` still due at `at` when read here (their end, or their heartbeat,
/// has come: a renewal committed meanwhile keeps a session alive). Answers the sessions ended.
pub async fn expire(txn: &DatabaseTransaction, session_ids: &[&str], at: DateTime<Utc>) -> StoreResult<Vec<String>> {
    let events: Vec<(&str, Event)> = session_ids.iter().map(|id| (*id, Event::Expire { at })).collect();
    let (_, changed) = run(txn, &events, None, None).await?;
    Ok(changed)
}

/// What a change of rights takes away from a holder's live sessions, and why (the audit `cause`).
#[derive(Debug, Clone, Copy)]
pub enum Loss<'a> {
    /// The right to any session: they end.
    Everything { cause: &'a str },
    /// Whatever lasts longer than `max_hours` from its start.
    LongerThan { max_hours: u32, cause: &'a str },
}

impl<'a> Loss<'a> {
    /// What a change of rights takes away: everything once `revoked` names why, otherwise what
    /// exceeds a maximum lowered from `old_max` to `new_max` (`lowered` says why); None when the
    /// change takes nothing away.
    pub fn of_change(
        revoked: Option<&'a str>,
        old_max: Option<u32>,
        new_max: Option<u32>,
        lowered: &'a str,
    ) -> Option<Loss<'a>> {
        if let Some(cause) = revoked {
            return Some(Loss::Everything { cause });
        }
        match (old_max, new_max) {
            (Some(old), Some(new)) if new < old => Some(Loss::LongerThan { max_hours: new, cause: lowered }),
            _ => None,
        }
    }
}

/// Applies a loss of rights to `holder`'s live sessions (those committed before the change that
/// took the right away locked the row a start checks). Answers the sessions changed.
pub async fn take_away(
    txn: &DatabaseTransaction,
    holder: Holder<'_>,
    loss: Loss<'_>,
    actor: &Actor,
) -> StoreResult<Vec<String>> {
    let live = sessions::live_of(txn, &holder).await?;
    let at = now();
    let (events, cause): (Vec<(&str, Event)>, &str) = match loss {
        // Ended by whoever took the right away: ADMIN.
        Loss::Everything { cause } => {
            (live.iter().map(|session| (session.id.as_str(), Event::End(EndedReason::Admin))).collect(), cause)
        }
        Loss::LongerThan { max_hours, cause } => {
            let shorten = live.iter().map(|session| {
                let to = session.started_at + TimeDelta::hours(i64::from(max_hours));
                (session.id.as_str(), Event::Shorten { to, at })
            });
            (shorten.collect(), cause)
        }
    };
    let (answers, changed) = run(txn, &events, Some(actor), Some(cause)).await?;
    // A shortened session that lives on says so in the audit trail (an ended one said it ended).
    for ((id, event), answer) in events.iter().zip(answers) {
        if answer.is_ok()
            && let Event::Shorten { to, .. } = event
            && *to > at
        {
            AuditRecord::new("session.shortened", "session", *id)
                .detail("cause", cause)
                .detail("expires_at", to.to_rfc3339())
                .write(txn, actor)
                .await?;
        }
    }
    Ok(changed)
}

/// Takes a resource away from a user's live sessions: its rules there go REMOVING, and each
/// session rolls up from the rules it keeps; one left with none ends (ADMIN). Answers the
/// sessions changed.
pub async fn withdraw_resource(
    txn: &DatabaseTransaction,
    user_id: &str,
    resource_id: &str,
    actor: &Actor,
) -> StoreResult<Vec<String>> {
    let live = sessions::live_of(txn, &Holder::User(user_id)).await?;
    let withdraw = Event::Withdraw { resource_id: resource_id.to_owned() };
    let events: Vec<(&str, Event)> = live.iter().map(|session| (session.id.as_str(), withdraw.clone())).collect();
    let (answers, changed) = run(txn, &events, Some(actor), Some("resource unassigned")).await?;
    for ((id, _), answer) in events.iter().zip(answers) {
        if answer.is_ok() {
            AuditRecord::new("session.resource_withdrawn", "session", *id)
                .detail("resource_id", resource_id)
                .write(txn, actor)
                .await?;
        }
    }
    Ok(changed)
}

/// Moves a live session's end to `expires_at` (at most `latest`), with its audit event; refused
/// unless the session is ACTIVE or PARTIAL when read here.
pub async fn extend(
    txn: &DatabaseTransaction,
    session_id: &str,
    (expires_at, latest): (DateTime<Utc>, DateTime<Utc>),
    actor: &Actor,
    record: AuditRecord,
) -> StoreResult<Result<(), Refusal>> {
    let extend = Event::Extend { to: expires_at, latest };
    let (mut answers, _) = run(txn, &[(session_id, extend)], Some(actor), None).await?;
    let answer = answers.pop().unwrap_or(Err(Refusal::UnknownSession));
    if answer.is_ok() {
        record.detail("expires_at", expires_at.to_rfc3339()).write(txn, actor).await?;
    }
    Ok(answer)
}

/// Moves a live session to new addresses: `readdressed` is the session row with its new
/// addresses and live keys, `added` the new address's rules (each supersedes what its resource
/// held for its family, and the worker retires those once it applies). Refused unless the
/// session is live when read here.
pub async fn change_address(
    txn: &DatabaseTransaction,
    readdressed: session::Model,
    added: Vec<resource_ip::Model>,
    actor: &Actor,
    record: AuditRecord,
) -> StoreResult<Result<(), Refusal>> {
    let id = readdressed.id.clone();
    let mut decided = Decided::new(lock(txn, &[id.as_str()]).await?);
    let machine_rules = added
        .iter()
        .map(|rule| machine::Rule {
            id: rule.id.clone(),
            resource_id: rule.resource_id.clone(),
            family: u8::try_from(rule.ip_version).unwrap_or_default(),
            status: ResourceIpStatus::Pending,
            superseded: false,
        })
        .collect();
    if let Err(refusal) = decided.decide(&id, &Event::ChangeAddress { added: machine_rules }) {
        return Ok(Err(refusal));
    }
    sessions::insert_all(txn, Vec::new(), added).await?;
    let readdressed = HashMap::from([(id.clone(), readdressed)]);
    write(txn, decided, Writing { actor: Some(actor), readdressed, ..Writing::default() }).await?;
    record.write(txn, actor).await?;
    Ok(Ok(()))
}

/// Re-queues a FAILED rule of a session live when read here. Answers the refusal otherwise.
pub async fn retry(
    txn: &DatabaseTransaction,
    session_id: &str,
    rule_id: &str,
    actor: &Actor,
) -> StoreResult<Result<(), Refusal>> {
    let (mut answers, _) = run(txn, &[(session_id, Event::Retry { rule: rule_id.to_owned() })], None, None).await?;
    let answer = answers.pop().unwrap_or(Err(Refusal::UnknownSession));
    if answer.is_ok() {
        AuditRecord::new("resource_ip.retried", "resource_ip", rule_id).write(txn, actor).await?;
    }
    Ok(answer)
}

/// Re-queues APPLIED rules the provider no longer holds (session id, rule) for the worker to
/// open again, if their session is still live. Answers the rules re-queued, and the sessions changed.
pub async fn repair(txn: &DatabaseTransaction, missing: &[(&str, &str)]) -> StoreResult<(Vec<String>, Vec<String>)> {
    let events: Vec<(&str, Event)> =
        missing.iter().map(|(session_id, rule)| (*session_id, Event::Missing { rule: (*rule).to_owned() })).collect();
    let (answers, changed) = run(txn, &events, None, None).await?;
    let repaired =
        missing.iter().zip(answers).filter(|(_, answer)| answer.is_ok()).map(|((_, rule), _)| (*rule).to_owned());
    Ok((repaired.collect(), changed))
}

/// Sends the rules terminal sessions still hold (APPLIED, or PENDING) to removal: none should
/// exist, so each is logged. Answers the sessions changed.
pub async fn sweep(txn: &DatabaseTransaction, session_ids: &[&str]) -> StoreResult<Vec<String>> {
    let events: Vec<(&str, Event)> = session_ids.iter().map(|id| (*id, Event::Sweep)).collect();
    let (_, changed) = run(txn, &events, None, None).await?;
    for id in &changed {
        tracing::warn!(session_id = %id, "rules of an ended session still held an address; removing them");
    }
    Ok(changed)
}

/// The worker's outcome for one claimed rule, as it will be saved.
pub struct Worked {
    /// The rule as the worker would save it (status set to what the call achieved).
    pub rule: resource_ip::Model,
    /// The status the rule was claimed in.
    pub claimed: ResourceIpStatus,
    /// What the call achieved; None for a transient failure (the rule keeps its status).
    pub outcome: Option<machine::Outcome>,
    /// Whether the session shows a change (status, provider rule id or error).
    pub visible: bool,
}

/// Decides the status of each worked rule from its session as it now stands (a session that
/// ended while the call ran keeps its rules REMOVING), writes the sessions and the other rules
/// the outcomes moved (addresses a newly applied one replaces), and answers the worked rules
/// with their final status and due time, for the caller to save under its claim, with the
/// sessions changed.
pub async fn settle_worked(
    txn: &DatabaseTransaction,
    worked: Vec<Worked>,
) -> StoreResult<(Vec<resource_ip::Model>, Vec<String>)> {
    let mut ids: Vec<&str> = worked.iter().map(|w| w.rule.session_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut decided = Decided::new(lock(txn, &ids).await?);
    for w in &worked {
        if let Some(outcome) = w.outcome {
            let event = Event::Settled { rule: w.rule.id.clone(), claimed: w.claimed, outcome };
            if let Err(refusal) = decided.decide(&w.rule.session_id, &event) {
                tracing::warn!(resource_ip_id = %w.rule.id, %refusal, "outcome not taken");
            }
        }
    }
    let at = now();
    let mut saving = Vec::with_capacity(worked.len());
    let mut touched = Vec::new();
    for w in worked {
        let mut rule = w.rule;
        let decided_status = decided
            .moved
            .get(&rule.session_id)
            .or_else(|| decided.locked.get(&rule.session_id).map(|locked| &locked.state))
            .and_then(|session| session.rules.iter().find(|r| r.id == rule.id))
            .map(|r| r.status);
        if let Some(status) = decided_status {
            rule.status = status;
        }
        if decided.due.contains(&rule.id) {
            rule.next_attempt_at = at;
        }
        if w.visible {
            touched.push(rule.session_id.clone());
        }
        saving.push(rule);
    }
    let saved_by_caller = saving.iter().map(|rule| rule.id.clone()).collect();
    let changed = write(txn, decided, Writing { saved_by_caller, touched, ..Writing::default() }).await?;
    Ok((saving, changed))
}

/// The audit event type of a session reaching `status`.
fn session_event(status: SessionStatus) -> &'static str {
    match status {
        SessionStatus::AwaitingApproval => "session.awaiting_approval",
        SessionStatus::Pending => "session.pending",
        SessionStatus::Active => "session.active",
        SessionStatus::Partial => "session.partial",
        SessionStatus::Failed => "session.failed",
        SessionStatus::Expiring => "session.expiring",
        SessionStatus::Expired => "session.expired",
        SessionStatus::Cancelled => "session.cancelled",
    }
}
