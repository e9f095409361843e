//! Session transitions: the one home of the session state machine's writes. Every use-case
//! (start, stop, extend, revocations) and the worker (settle) call these inside their own
//! transaction, so a session and its rules never drift apart; waking the engine and publishing
//! to watchers is the caller's business once the transaction has committed.

use crate::domain::{Actor, EndedReason, ResourceIpStatus, SessionStatus, now, roll_up};
use crate::store::StoreResult;
use crate::store::audit::AuditRecord;
use crate::store::entity::{resource_ip, session};
use crate::store::queries::sessions::{self, Holder};
use chrono::{DateTime, TimeDelta, Utc};
use sea_orm::{ActiveModelTrait, ActiveValue::Set, DatabaseTransaction, IntoActiveModel};
use std::collections::HashMap;

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

/// Records new sessions and their rules, with their audit events, in a few statements whatever
/// their number.
pub async fn start_all(txn: &DatabaseTransaction, starts: Vec<NewSession>) -> StoreResult<()> {
    let mut events = Vec::with_capacity(starts.len());
    let (mut new_sessions, mut new_rules) = (Vec::with_capacity(starts.len()), Vec::new());
    for NewSession { session, rules, actor } in starts {
        let minutes = (session.expires_at - session.started_at).num_minutes();
        let mut record =
            AuditRecord::new("session.started", "session", &session.id).detail("duration_minutes", minutes);
        for (key, address) in [("ipv4_address", &session.ipv4_address), ("ipv6_address", &session.ipv6_address)] {
            if let Some(address) = address {
                record = record.detail(key, address);
            }
        }
        events.push((record, actor));
        new_sessions.push(session);
        new_rules.extend(rules);
    }
    sessions::insert_all(txn, new_sessions, new_rules).await?;
    AuditRecord::write_all(txn, events).await
}

/// Moves a live session to new addresses: `changed` is the session with its new addresses and
/// live keys, `added` the new address's rules, `replaced` which old rule each of them replaces
/// (the worker removes an old rule once its replacement is applied).
pub async fn change_address(
    txn: &DatabaseTransaction,
    changed: session::Model,
    added: Vec<resource_ip::Model>,
    replaced: &[(String, String)],
    actor: &Actor,
    record: AuditRecord,
) -> StoreResult<()> {
    let revision = changed.revision;
    let mut active = changed.into_active_model().reset_all();
    active.revision = Set(revision + 1);
    active.updated_at = Set(now());
    sessions::update(txn, active).await?;
    sessions::insert_replacements(txn, added, replaced).await?;
    record.write(txn, actor).await
}

/// Ends a live session: EXPIRING, its unfinished rules REMOVING. `cause` says why, in the audit
/// trail, when the session ended because access was taken away. Answers false when the
/// session was not live (ending is idempotent).
pub async fn end(
    txn: &DatabaseTransaction,
    session_id: &str,
    reason: EndedReason,
    actor: &Actor,
    cause: Option<&str>,
) -> StoreResult<bool> {
    Ok(!end_all(txn, &[(session_id, reason)], actor, cause).await?.is_empty())
}

/// [`end`] for many sessions, each for its reason, in a few statements whatever their number.
/// Each session's trail is its own organization's, whoever ended it. Answers the sessions ended.
pub async fn end_all(
    txn: &DatabaseTransaction,
    ends: &[(&str, EndedReason)],
    actor: &Actor,
    cause: Option<&str>,
) -> StoreResult<Vec<String>> {
    let reasons: HashMap<&str, EndedReason> = ends.iter().copied().collect();
    let ids: Vec<&str> = reasons.keys().copied().collect();
    let at = now();
    let (mut ended, mut events) = (Vec::new(), Vec::new());
    for mut session in sessions::get_all_for_update(txn, &ids).await? {
        let live = session.status.parse::<SessionStatus>().is_ok_and(SessionStatus::is_live);
        let Some(reason) = reasons.get(session.id.as_str()).copied().filter(|_| live) else { continue };
        session.status = SessionStatus::Expiring.as_str().to_owned();
        session.ended_reason = Some(reason.as_str().to_owned());
        session.ended_at = Some(at);
        (session.live_ipv4_key, session.live_ipv6_key) = (None, None);
        session.revision += 1;
        session.updated_at = at;
        let mut record = AuditRecord::new("session.expiring", "session", &session.id).detail("reason", reason);
        if let Some(cause) = cause {
            record = record.detail("cause", cause);
        }
        events.push((record, Actor { organization_id: session.organization_id.clone(), ..actor.clone() }));
        ended.push(session);
    }
    let ids: Vec<String> = ended.iter().map(|session| session.id.clone()).collect();
    sessions::save_transitions(txn, ended).await?;
    sessions::begin_removal(txn, &ids, None, at).await?;
    AuditRecord::write_all(txn, events).await?;
    Ok(ids)
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

/// Applies a loss of rights to `holder`'s live sessions. Answers the sessions changed.
pub async fn take_away(
    txn: &DatabaseTransaction,
    holder: Holder<'_>,
    loss: Loss<'_>,
    actor: &Actor,
) -> StoreResult<Vec<String>> {
    match loss {
        Loss::Everything { cause } => end_live(txn, holder, actor, cause).await,
        Loss::LongerThan { max_hours, cause } => cap_duration(txn, holder, max_hours, actor, cause).await,
    }
}

/// Ends every live session of `holder` (ended_reason ADMIN) because its right was taken away
/// (`cause`: "user disabled", "organization suspended"). Answers the sessions ended.
async fn end_live(
    txn: &DatabaseTransaction,
    holder: Holder<'_>,
    actor: &Actor,
    cause: &str,
) -> StoreResult<Vec<String>> {
    let live = sessions::live_of(txn, &holder).await?;
    let ends: Vec<(&str, EndedReason)> = live.iter().map(|session| (session.id.as_str(), EndedReason::Admin)).collect();
    end_all(txn, &ends, actor, Some(cause)).await
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
    let mut changed = Vec::new();
    for session in sessions::live_of(txn, &Holder::User(user_id)).await? {
        sessions::get_for_update(txn, &session.id).await?;
        if sessions::begin_removal(txn, std::slice::from_ref(&session.id), Some(resource_id), now()).await? == 0 {
            continue;
        }
        let kept =
            sessions::rules_of(txn, &session.id).await?.iter().any(|rule| !is_withdrawn(rule.status.parse().ok()));
        if kept {
            AuditRecord::new("session.resource_withdrawn", "session", &session.id)
                .detail("resource_id", resource_id)
                .write(txn, actor)
                .await?;
            settle(txn, &session.id).await?;
        } else {
            end(txn, &session.id, EndedReason::Admin, actor, Some("resource unassigned")).await?;
        }
        changed.push(session.id);
    }
    Ok(changed)
}

fn is_withdrawn(status: Option<ResourceIpStatus>) -> bool {
    matches!(status, Some(ResourceIpStatus::Removing | ResourceIpStatus::Removed))
}

/// Shortens `holder`'s live sessions that last longer than `max_hours` from their start to
/// that maximum; those already past it end (EXPIRED) at once. Answers the sessions changed.
async fn cap_duration(
    txn: &DatabaseTransaction,
    holder: Holder<'_>,
    max_hours: u32,
    actor: &Actor,
    cause: &str,
) -> StoreResult<Vec<String>> {
    let at = now();
    let mut changed = Vec::new();
    for session in sessions::live_of(txn, &holder).await? {
        let latest = session.started_at + TimeDelta::hours(i64::from(max_hours));
        if session.expires_at <= latest {
            continue;
        }
        let session = sessions::get_for_update(txn, &session.id).await?;
        let id = session.id.clone();
        if latest <= at {
            end(txn, &id, EndedReason::Expired, actor, Some(cause)).await?;
        } else {
            let record = AuditRecord::new("session.shortened", "session", &id).detail("cause", cause);
            extend(txn, session, latest, actor, record).await?;
        }
        changed.push(id);
    }
    Ok(changed)
}

/// Moves a live session's end to `expires_at`, with its audit event.
pub async fn extend(
    txn: &DatabaseTransaction,
    session: session::Model,
    expires_at: DateTime<Utc>,
    actor: &Actor,
    record: AuditRecord,
) -> StoreResult<()> {
    let revision = session.revision;
    let mut active = session.into_active_model();
    active.expires_at = Set(expires_at);
    active.revision = Set(revision + 1);
    active.updated_at = Set(now());
    sessions::update(txn, active).await?;
    record.detail("expires_at", expires_at.to_rfc3339()).write(txn, actor).await
}

/// Recomputes a session's status from its rules after they changed (inside the transaction
/// that changed them, so a crash can never leave rules and status apart), bumps its revision,
/// and records a status change in the audit trail.
pub async fn settle(txn: &DatabaseTransaction, session_id: &str) -> StoreResult<()> {
    settle_all(txn, &[session_id]).await
}

/// [`settle`] for many sessions at once: two reads, one update, one audit insert and one
/// announcement whatever their number.
pub async fn settle_all(txn: &DatabaseTransaction, session_ids: &[&str]) -> StoreResult<()> {
    if session_ids.is_empty() {
        return Ok(());
    }
    let current = sessions::get_all_for_update(txn, session_ids).await?;
    let mut rules = sessions::rules_of_all(txn, session_ids).await?;
    let (mut events, mut settled) = (Vec::new(), Vec::with_capacity(current.len()));
    let at = now();
    for mut session in current {
        let statuses: Vec<_> =
            rules.remove(&session.id).unwrap_or_default().iter().filter_map(|r| r.status.parse().ok()).collect();
        let status: SessionStatus = session.status.parse().unwrap_or(SessionStatus::Pending);
        let reason = session.ended_reason.as_deref().and_then(|r| r.parse().ok());
        let next = roll_up(status, reason, &statuses);
        session.revision += 1;
        session.updated_at = at;
        if next != status {
            session.status = next.as_str().to_owned();
            if !next.is_live() {
                (session.live_ipv4_key, session.live_ipv6_key) = (None, None);
            }
            if next == SessionStatus::Failed {
                session.ended_at = Some(at);
            }
            let record = AuditRecord::new(session_event(next), "session", &session.id);
            events.push((record, Actor::server(&session.organization_id)));
        }
        settled.push(session);
    }
    sessions::save_transitions(txn, settled).await?;
    AuditRecord::write_all(txn, events).await
}

/// The audit event type of a session reaching `status`.
fn session_event(status: SessionStatus) -> &'static str {
    match status {
        SessionStatus::Pending => "session.pending",
        SessionStatus::Active => "session.active",
        SessionStatus::Partial => "session.partial",
        SessionStatus::Failed => "session.failed",
        SessionStatus::Expiring => "session.expiring",
        SessionStatus::Expired => "session.expired",
        SessionStatus::Cancelled => "session.cancelled",
    }
}
