//! Sessions: start, read, stop, extend, watch; and their individual rules.

use super::{Caller, approvals};
use crate::config::SessionConfig;
use crate::domain::session::{Refusal, StartRefusal};
use crate::domain::{
    ApprovalPolicy, CombinedApproval, EndedReason, IpVersion, Permission, Requested, ResourceIpStatus, Role,
    SessionApproval, SessionStatus, Tier, Violations, check_session_address, new_id, now, parse_session_address,
    requested,
};
use crate::engine::pauses::Point;
use crate::engine::transitions::{self, NewSession};
use crate::engine::{Engine, Subscription};
use crate::error::{Error, Result, StoreResultExt};
use crate::pb::v1::ErrorReason;
use crate::store::audit::AuditRecord;
use crate::store::entity::{organization, resource, resource_ip, session};
use crate::store::queries::sessions::{self, RuleFilter, SessionFilter, SessionRecord};
use crate::store::queries::{self, resources};
use crate::store::{self, Page, PageRequest, StoreError};
use chrono::{DateTime, TimeDelta, Utc};
use sea_orm::DatabaseConnection;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// What StartSession asked for, and where the call came from.
#[derive(Debug, Default)]
pub struct StartRequest {
    pub duration_hours: Option<u32>,
    pub duration_minutes: Option<u32>,
    pub ipv4_address: Option<String>,
    pub ipv6_address: Option<String>,
    /// The caller's address as seen by the server (see `domain::client_address`).
    pub detected_address: Option<IpAddr>,
    pub heartbeat_seconds: Option<u32>,
    /// The assigned resources to open; empty: all of them.
    pub resource_ids: Vec<String>,
    pub justification: String,
    pub ticket: String,
}

/// The longest justification and ticket reference kept.
const MAX_JUSTIFICATION_CHARS: usize = 1000;
const MAX_TICKET_CHARS: usize = 255;

/// The resources a start opens: those of `assigned` it names (each must be assigned), or all.
fn chosen(assigned: Vec<resource::Model>, named: &[String]) -> Result<Vec<resource::Model>> {
    if named.is_empty() {
        return Ok(assigned);
    }
    let mut violations = Violations::default();
    for id in named {
        if !assigned.iter().any(|resource| resource.id == *id) {
            violations.add("resource_ids", format!("{id} is not a resource assigned to you"));
        }
    }
    if !violations.is_empty() {
        return Err(violations.into());
    }
    Ok(assigned.into_iter().filter(|resource| named.contains(&resource.id)).collect())
}

/// Free text trimmed, at most `max` characters; `None` when empty.
fn bounded_text(field: &str, text: &str, max: usize) -> Result<Option<String>> {
    let text = text.trim();
    if text.chars().count() > max || text.chars().any(|c| c.is_control() && c != '\n') {
        return Err(Error::invalid(field, format!("must be at most {max} characters, without control characters")));
    }
    Ok((!text.is_empty()).then(|| text.to_owned()))
}

/// The heartbeats a session may have: long enough to reconnect a watch, short enough to matter.
const HEARTBEAT_SECONDS: std::ops::RangeInclusive<u32> = 5..=3600;

#[derive(Clone)]
pub struct SessionManager {
    db: DatabaseConnection,
    /// Plain reads go to read connections, so they never queue behind the writer.
    reader: DatabaseConnection,
    engine: Engine,
    config: SessionConfig,
    beats: Arc<Beats>,
    /// Tells approvers about sessions that wait for them.
    approvals: approvals::ApprovalManager,
}

/// When this server last wrote each session's heartbeat: however many of the owner's watches
/// are open (a user can open hundreds), a session's heartbeat is written at most once per beat
/// interval, so watches cannot fill the database's writer.
#[derive(Default)]
struct Beats {
    written: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
    writes: std::sync::atomic::AtomicU64,
}

/// Past this many sessions remembered, those not beaten for an hour (the longest interval is
/// 20 minutes) are forgotten.
const REMEMBERED_BEATS: usize = 10_000;

impl Beats {
    /// Whether a beat of `id` every `every` should be written now (and notes that it is).
    /// A tenth of slack, so one watch beating on its own interval writes every time.
    fn due(&self, id: &str, every: Duration) -> bool {
        let mut written = self.written.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = std::time::Instant::now();
        if written.get(id).is_some_and(|at| now.duration_since(*at) < every.mul_f64(0.9)) {
            return false;
        }
        if written.len() >= REMEMBERED_BEATS {
            written.retain(|_, at| now.duration_since(*at) < Duration::from_secs(3600));
        }
        written.insert(id.to_owned(), now);
        true
    }
}

impl SessionManager {
    pub fn new(
        db: DatabaseConnection,
        reader: DatabaseConnection,
        engine: Engine,
        config: SessionConfig,
        approvals: approvals::ApprovalManager,
    ) -> SessionManager {
        SessionManager { db, reader, engine, config, beats: Arc::default(), approvals }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The longest session the caller may start.
    fn max_hours(&self, role: Role, tier: Tier) -> u32 {
        self.config.max_hours_within(role, tier)
    }

    /// The caller's organization (as authenticated) and its tier.
    fn organization_of<'a>(&self, caller: &'a Caller) -> Result<(&'a organization::Model, Tier)> {
        let organization = caller.organization.as_deref().ok_or_else(|| Error::not_found("organization"))?;
        Ok((organization, organization.tier))
    }

    pub async fn start(&self, caller: &Caller, request: StartRequest) -> Result<Arc<SessionRecord>> {
        let (organization, tier) = self.organization_of(caller)?;
        let max_hours = self.max_hours(caller.role, tier);
        let allow_private = organization.allow_private_addresses;

        let mut violations = Violations::default();
        let fields = (("duration_hours", request.duration_hours), ("duration_minutes", request.duration_minutes));
        let default = Requested::hours("duration_hours", self.config.default_duration_hours.as_u32());
        let duration = match requested(fields.0, fields.1) {
            Ok(asked) => asked.unwrap_or(default),
            Err(violation) => {
                violations.0.push(violation);
                default
            }
        };
        if duration.minutes == 0 {
            violations.add(duration.field, "must be at least 1");
        } else if !duration.within_hours(max_hours) {
            violations.add(duration.field, format!("must be at most {max_hours} hours for this organization and role"));
        }
        if let Some(seconds) = request.heartbeat_seconds
            && !HEARTBEAT_SECONDS.contains(&seconds)
        {
            violations.add(
                "heartbeat_seconds",
                format!("must be between {} and {}", HEARTBEAT_SECONDS.start(), HEARTBEAT_SECONDS.end()),
            );
        }
        let explicit = |field: &str, value: &Option<String>, version, violations: &mut Violations| {
            value
                .as_deref()
                .and_then(|text| violations.check(field, parse_session_address(text, version, allow_private)))
        };
        let mut ipv4 = explicit("ipv4_address", &request.ipv4_address, IpVersion::V4, &mut violations);
        let mut ipv6 = explicit("ipv6_address", &request.ipv6_address, IpVersion::V6, &mut violations);
        if request.ipv4_address.is_none() && request.ipv6_address.is_none() {
            match request.detected_address {
                Some(address) => {
                    let version = IpVersion::of(address);
                    let field = if version == IpVersion::V4 { "ipv4_address" } else { "ipv6_address" };
                    match check_session_address(address, version, allow_private) {
                        Ok(()) if version == IpVersion::V4 => ipv4 = Some(address),
                        Ok(()) => ipv6 = Some(address),
                        Err(problem) => violations.add(field, format!("not given, and the detected address {problem}")),
                    }
                }
                None => violations.add("ipv4_address", "not given, and the caller's address is unknown"),
            }
        }
        if !violations.is_empty() {
            let all = |prefix: &str| violations.0.iter().all(|v| v.field.starts_with(prefix));
            let any = |suffix: &str| violations.0.iter().any(|v| v.field.ends_with(suffix));
            let reason = if all("duration_") {
                ErrorReason::DurationExceedsMaximum
            } else if any("_address") {
                ErrorReason::InvalidIpAddress
            } else {
                ErrorReason::InvalidInput
            };
            return Err(Error::InvalidArgument { reason, violations: violations.0 });
        }

        let assigned = resources::assigned_to(&self.reader, &caller.user_id).await?;
        if assigned.is_empty() {
            return Err(Error::failed_precondition(
                ErrorReason::NoAssignedResources,
                "no resource is assigned to you; ask an admin to assign one",
            ));
        }
        let assigned = chosen(assigned, &request.resource_ids)?;
        let justification = bounded_text("justification", &request.justification, MAX_JUSTIFICATION_CHARS)?;
        let ticket = bounded_text("ticket", &request.ticket, MAX_TICKET_CHARS)?;
        let policies: Vec<ApprovalPolicy> = assigned
            .iter()
            .map(|resource| resource.approval_policy())
            .filter_map(Result::transpose)
            .collect::<Result<_, _>>()?;
        let waits = match CombinedApproval::of(&policies) {
            None => None,
            Some(combined) => self.approval_needed(caller, &combined, justification.is_some(), &assigned).await?,
        };
        let at = now();
        let session_id = new_id();
        let live_key = |address: Option<IpAddr>| address.map(|a| format!("{}|{a}", caller.user_id));
        let session = session::Model {
            id: session_id.clone(),
            organization_id: caller.organization_id.clone(),
            user_id: caller.user_id.clone(),
            ipv4_address: ipv4.map(|a| a.to_string()),
            ipv6_address: ipv6.map(|a| a.to_string()),
            status: if waits.is_some() { SessionStatus::AwaitingApproval } else { SessionStatus::Pending },
            started_at: at,
            // Within the maximum, checked above: the sum cannot overflow. A session waiting for
            // approval ends at its deadline unless approved (its duration starts then).
            expires_at: match &waits {
                Some(timeout) => at + *timeout,
                None => at + duration.span().unwrap_or_default(),
            },
            ended_at: None,
            ended_reason: None,
            revision: 1,
            live_ipv4_key: live_key(ipv4),
            live_ipv6_key: live_key(ipv6),
            created_at: at,
            updated_at: at,
            // In range, checked above.
            heartbeat_seconds: request.heartbeat_seconds.and_then(|seconds| i32::try_from(seconds).ok()),
            // No heartbeat runs while the session waits: it starts with the approval.
            heartbeat_due_at: request
                .heartbeat_seconds
                .filter(|_| waits.is_none())
                .map(|seconds| at + TimeDelta::seconds(i64::from(seconds))),
            expiry_warned_for: None,
            approval: waits.map(|timeout| {
                let approval = SessionApproval {
                    required: CombinedApproval::of(&policies).map_or(1, |combined| combined.approvals()),
                    requested_minutes: u32::try_from(duration.minutes).unwrap_or(u32::MAX),
                    deadline: at + timeout,
                    approved_at: None,
                    decisions: Vec::new(),
                };
                serde_json::to_string(&approval).unwrap_or_default()
            }),
            justification,
            ticket,
        };
        let rules: Vec<resource_ip::Model> = assigned
            .iter()
            .flat_map(|resource| ipv4.iter().chain(ipv6.iter()).map(move |address| (resource, *address)))
            .map(|(resource, address)| {
                let rule = new_rule(&session_id, &caller.organization_id, (&resource.id, &resource.name), address, at);
                match waits {
                    Some(_) => resource_ip::Model { status: ResourceIpStatus::AwaitingApproval, ..rule },
                    None => rule,
                }
            })
            .collect();
        // What was written is what the caller gets back, and what the cache keeps (the first
        // watch then reads nothing): no need to read it again.
        let started = Arc::new(SessionRecord {
            session: session.clone(),
            user_name: caller.full_name.clone(),
            user_email: caller.email.clone(),
            rules: rules.clone(),
        });
        let stamp = self.engine.cache().stamp();
        let new = NewSession { session, rules, actor: caller.actor() };
        let refusal = self.engine.start_session(new).await.map_err(|err| match err {
            StoreError::AlreadyExists(_) => address_held(),
            other => other.into(),
        })?;
        refusal.map_err(start_refused)?;
        self.engine.cache().keep(stamp, started.clone());
        if started.session.status == SessionStatus::AwaitingApproval
            && let Err(err) = self.approvals.announce_request(&started.session, &caller.email).await
        {
            // The request stands: approvers find it in their inbox.
            tracing::warn!(session_id = %started.session.id, error = %err, "telling approvers failed");
        }
        Ok(started)
    }

    /// How long a start on resources under `combined` waits for approval, or `None` when it
    /// needs none: an API key carrying `sessions:auto-approve`, or a caller whose groups every
    /// policy auto-approves. Refuses a start missing a justification a policy asks for, or one
    /// no one could ever approve (the requester never counts).
    async fn approval_needed(
        &self,
        caller: &Caller,
        combined: &CombinedApproval<'_>,
        justified: bool,
        resources: &[resource::Model],
    ) -> Result<Option<TimeDelta>> {
        if combined.justification_required() && !justified {
            return Err(Error::invalid(
                "justification",
                "is required by the approval policy of a resource of the session",
            ));
        }
        let key_skips = caller.api_key_id.is_some() && caller.permissions.contains(&Permission::SessionsAutoApprove);
        let groups = queries::identity_providers::groups_of_user(&self.reader, &caller.user_id).await?;
        if key_skips || combined.approves_itself_for(&groups) {
            return Ok(None);
        }
        let eligible = approvals::eligible_for_all(&self.reader, &caller.organization_id, &combined.policies).await?;
        let others = eligible.into_iter().filter(|user| *user != caller.user_id).count();
        if u32::try_from(others).unwrap_or(u32::MAX) < combined.approvals() {
            let names: Vec<&str> = resources.iter().map(|resource| resource.name.as_str()).collect();
            return Err(Error::failed_precondition(
                ErrorReason::ApprovalRequired,
                format!(
                    "opening {} needs {} approvals, and only {others} other people may give them; ask an admin",
                    names.join(", "),
                    combined.approvals()
                ),
            ));
        }
        Ok(Some(TimeDelta::seconds(i64::from(combined.pending_timeout_secs()))))
    }

    /// A session the call reaches: the caller's own, or any of the organization's (see [`Caller::reaches`]).
    /// (Its owner and organization never change, so the cached state answers this exactly.)
    async fn visible(&self, caller: &Caller, id: &str) -> Result<Arc<SessionRecord>> {
        let record = self.engine.session(id).await.or_not_found("session")?;
        check_visible(caller, &record.session)?;
        Ok(record)
    }

    pub async fn get(&self, caller: &Caller, id: &str) -> Result<Arc<SessionRecord>> {
        self.visible(caller, id).await
    }

    pub async fn list(
        &self,
        caller: &Caller,
        mut filter: SessionFilter,
        page: &PageRequest,
    ) -> Result<Page<SessionRecord>> {
        if let Some(own) = caller.only_own() {
            filter.user_id = Some(own.to_owned());
        }
        Ok(sessions::list(&self.reader, &caller.organization_id, &filter, page).await?)
    }

    /// Ends the session (MANUAL by its owner, ADMIN by an admin); stopping an ended one changes nothing.
    pub async fn stop(&self, caller: &Caller, id: &str) -> Result<Arc<SessionRecord>> {
        let record = self.visible(caller, id).await?;
        let reason = if record.session.user_id == caller.user_id { EndedReason::Manual } else { EndedReason::Admin };
        self.engine.end_session(id, reason, &caller.actor()).await?;
        Ok(self.engine.session(id).await?)
    }

    /// Adds `additional_hours` or `additional_minutes` (exactly one non-zero) to a live
    /// session's expiry, within the owner's maximum.
    pub async fn extend(
        &self,
        caller: &Caller,
        id: &str,
        additional_hours: u32,
        additional_minutes: u32,
    ) -> Result<Arc<SessionRecord>> {
        let given = |value: u32| (value > 0).then_some(value);
        let additional =
            requested(("additional_hours", given(additional_hours)), ("additional_minutes", given(additional_minutes)))
                .map_err(|violation| Error::invalid(&violation.field, violation.description))?
                .ok_or_else(|| {
                    Error::invalid("additional_hours", "additional_hours or additional_minutes must be at least 1")
                })?;
        self.visible(caller, id).await?;
        let (_, tier) = self.organization_of(caller)?;
        let txn = store::begin(&self.db).await?;
        let session = sessions::get_for_update(&txn, id).await.or_not_found("session")?;
        if session.approval_state()?.is_some() {
            return Err(Error::failed_precondition(
                ErrorReason::ApprovalRequired,
                "this session's approvers granted the duration it asked for; for more time, start a new request",
            ));
        }
        let owner_role = if session.user_id == caller.user_id {
            caller.role
        } else {
            crate::store::queries::users::get(&txn, &caller.organization_id, &session.user_id)
                .await
                .or_not_found("user")?
                .role
        };
        let max_hours = self.max_hours(owner_role, tier);
        // Checked: a request may ask for any amount of time.
        let latest_expires_at = session
            .started_at
            .checked_add_signed(TimeDelta::hours(i64::from(max_hours)))
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC);
        let expires_at = additional
            .span()
            .and_then(|span| session.expires_at.checked_add_signed(span))
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC);
        // A session keeps only what its owner may still open.
        let assigned: BTreeSet<String> =
            resources::assigned_to(&txn, &session.user_id).await?.into_iter().map(|resource| resource.id).collect();
        let rules = sessions::rules_of(&txn, id).await?;
        let unassigned = rules.iter().find(|rule| !rule.status.is_retired() && !assigned.contains(&rule.resource_id));
        if let Some(rule) = unassigned {
            return Err(Error::failed_precondition(
                ErrorReason::NoAssignedResources,
                format!("resource {} is no longer assigned to the session's user", rule.resource_name),
            ));
        }
        let record =
            AuditRecord::new("session.extended", "session", id).detail("additional_minutes", additional.minutes);
        transitions::extend(&txn, id, (expires_at, latest_expires_at), &caller.actor(), record).await?.map_err(
            |refusal| match refusal {
                Refusal::BeyondMaximum => {
                    Error::ExceedsMaximum { field: additional.field, max_hours, latest_expires_at }
                }
                other => refused(other),
            },
        )?;
        store::commit(txn).await?;
        self.engine.reschedule_expiry();
        self.engine.publish(&[id]).await;
        Ok(self.engine.session(id).await?)
    }

    /// Subscribes to the session's changes, then reads its current state: nothing between the
    /// two can be missed. The owner's watch keeps a session with a heartbeat alive: the answer
    /// says how often to beat (see [`SessionManager::heartbeat`]).
    pub async fn watch(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<(Arc<SessionRecord>, Subscription, Option<Duration>)> {
        let record = self.visible(caller, id).await?;
        let beat = record
            .session
            .heartbeat_seconds
            .filter(|_| record.session.user_id == caller.user_id)
            .and_then(|seconds| u64::try_from(seconds).ok())
            // A third of the heartbeat: two beats may be lost before the session ends.
            .map(|seconds| Duration::from_secs(seconds.div_ceil(3).max(1)));
        if let Some(every) = beat {
            self.heartbeat(id, every).await?;
        }
        let subscription = self.engine.hub().subscribe(id);
        let current = self.engine.session(id).await?;
        Ok((current, subscription, beat))
    }

    /// Moves a live session to a new IPv4 and/or IPv6 address: the new address's rules are
    /// added at once, and each old rule is removed once its replacement is applied, so the
    /// session is never without an open address on a resource.
    pub async fn change_address(
        &self,
        caller: &Caller,
        id: &str,
        ipv4_address: Option<&str>,
        ipv6_address: Option<&str>,
    ) -> Result<Arc<SessionRecord>> {
        if ipv4_address.is_none() && ipv6_address.is_none() {
            return Err(Error::invalid("ipv4_address", "ipv4_address or ipv6_address is required"));
        }
        let (organization, _) = self.organization_of(caller)?;
        let allow_private = organization.allow_private_addresses;
        let mut violations = Violations::default();
        let mut parse = |field: &str, text: Option<&str>, version| {
            text.and_then(|text| violations.check(field, parse_session_address(text, version, allow_private)))
        };
        let wanted = [
            (IpVersion::V4, parse("ipv4_address", ipv4_address, IpVersion::V4)),
            (IpVersion::V6, parse("ipv6_address", ipv6_address, IpVersion::V6)),
        ];
        if !violations.is_empty() {
            return Err(Error::InvalidArgument { reason: ErrorReason::InvalidIpAddress, violations: violations.0 });
        }
        self.visible(caller, id).await?;
        let txn = store::begin(&self.db).await?;
        let session = sessions::get_for_update(&txn, id).await.or_not_found("session")?;
        let rules = sessions::rules_of(&txn, id).await?;
        // The resources the session holds now, whichever family and address it holds them for.
        let resources: std::collections::BTreeMap<&str, &str> = rules
            .iter()
            .filter(|rule| !rule.status.is_retired())
            .map(|rule| (rule.resource_id.as_str(), rule.resource_name.as_str()))
            .collect();
        let at = now();
        let mut changed = session.clone();
        let mut record = AuditRecord::new("session.address_changed", "session", id);
        let mut added = Vec::new();
        for (version, address) in wanted {
            let Some(address) = address else { continue };
            let current = if version == IpVersion::V4 { &session.ipv4_address } else { &session.ipv6_address };
            if current.as_deref() == Some(address.to_string().as_str()) {
                continue;
            }
            for (&resource_id, &resource_name) in &resources {
                added.push(new_rule(id, &session.organization_id, (resource_id, resource_name), address, at));
            }
            let field = if version == IpVersion::V4 { "ipv4" } else { "ipv6" };
            record = record
                .detail(&format!("{field}_from"), current.as_deref().unwrap_or("none"))
                .detail(&format!("{field}_to"), address);
            let (shown, live_key) = (Some(address.to_string()), Some(format!("{}|{address}", session.user_id)));
            if version == IpVersion::V4 {
                (changed.ipv4_address, changed.live_ipv4_key) = (shown, live_key);
            } else {
                (changed.ipv6_address, changed.live_ipv6_key) = (shown, live_key);
            }
        }
        let moved = transitions::change_address(&txn, changed, added, &caller.actor(), record).await.map_err(
            |err| match err {
                StoreError::AlreadyExists(_) => Error::AlreadyExists {
                    reason: ErrorReason::SessionAlreadyActive,
                    message: "you already have another live session for this address".into(),
                },
                other => other.into(),
            },
        )?;
        match moved {
            // Already at these addresses: nothing to do.
            Ok(()) | Err(Refusal::Unchanged) => {}
            Err(other) => return Err(refused(other)),
        }
        store::commit(txn).await?;
        self.engine.wake();
        self.engine.publish(&[id]).await;
        Ok(self.engine.session(id).await?)
    }

    /// The owner's watch of a session with a heartbeat is open, beating every `every`: the
    /// session lives on. Written once per interval for all the session's watches.
    pub async fn heartbeat(&self, id: &str, every: Duration) -> Result<()> {
        if !self.beats.due(id, every) {
            return Ok(());
        }
        sessions::heartbeat(&self.db, id, now()).await?;
        self.beats.writes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        crate::monitoring::heartbeat_written();
        Ok(())
    }

    /// Heartbeats this server has written.
    pub fn heartbeat_writes(&self) -> u64 {
        self.beats.writes.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub async fn get_rule(&self, caller: &Caller, id: &str) -> Result<resource_ip::Model> {
        let rule = sessions::get_rule(&self.reader, &caller.organization_id, id).await.or_not_found("resource ip")?;
        self.visible(caller, &rule.session_id).await.map_err(|_| Error::not_found("resource ip"))?;
        Ok(rule)
    }

    pub async fn list_rules(
        &self,
        caller: &Caller,
        filter: RuleFilter,
        page: &PageRequest,
    ) -> Result<Page<resource_ip::Model>> {
        match (&filter.session_id, &filter.resource_id) {
            (Some(session_id), _) => {
                self.visible(caller, session_id).await?;
            }
            (None, Some(_)) if caller.only_own().is_none() => {}
            (None, Some(_)) => {
                return Err(Error::PermissionDenied {
                    reason: ErrorReason::PermissionMissing,
                    message: "listing a resource's rules needs users:read (they are other users' sessions)".into(),
                });
            }
            (None, None) => return Err(Error::invalid("session_id", "session_id or resource_id is required")),
        }
        Ok(sessions::list_rules(&self.reader, &caller.organization_id, &filter, page).await?)
    }

    /// Re-applies a FAILED rule of a live session (both as read in the transaction that re-queues it).
    pub async fn retry_rule(&self, caller: &Caller, id: &str) -> Result<resource_ip::Model> {
        let rule = self.get_rule(caller, id).await?;
        self.engine.pauses().at(Point::RetryBeforeWrite).await;
        let txn = store::begin(&self.db).await?;
        transitions::retry(&txn, &rule.session_id, id, &caller.actor()).await?.map_err(|refusal| {
            Error::failed_precondition(
                ErrorReason::InvalidState,
                format!("only a FAILED rule of a live session can be retried: {refusal}"),
            )
        })?;
        // Read before the engine is woken: the answer is the rule as retried (PENDING), not
        // whatever the engine has made of it by then.
        let retried = sessions::get_rule(&txn, &caller.organization_id, id).await?;
        store::commit(txn).await?;
        self.engine.wake();
        self.engine.publish(&[rule.session_id.as_str()]).await;
        Ok(retried)
    }
}

/// A rule to open `address` on a resource (id, name) for a session, due now.
fn new_rule(
    session_id: &str,
    organization_id: &str,
    (resource_id, resource_name): (&str, &str),
    address: IpAddr,
    at: DateTime<Utc>,
) -> resource_ip::Model {
    resource_ip::Model {
        id: new_id(),
        session_id: session_id.to_owned(),
        organization_id: organization_id.to_owned(),
        resource_id: resource_id.to_owned(),
        resource_name: resource_name.to_owned(),
        ip_version: i16::from(IpVersion::of(address).number()),
        ip_address: address.to_string(),
        status: ResourceIpStatus::Pending,
        provider_rule_id: None,
        applied_at: None,
        removed_at: None,
        error_message: None,
        attempts: 0,
        lease_owner: None,
        lease_expires_at: None,
        next_attempt_at: at,
        created_at: at,
        updated_at: at,
        replaced_by: None,
    }
}

/// The answer to a start refused at commit: its user lost a right after the request was
/// checked, or holds the address in another live session.
fn start_refused(refusal: StartRefusal) -> Error {
    match refusal {
        StartRefusal::AddressHeld => address_held(),
        StartRefusal::UserDisabled => Error::failed_precondition(
            ErrorReason::InvalidState,
            "your account was disabled while the session was starting; it was not started",
        ),
        StartRefusal::OrganizationSuspended => Error::failed_precondition(
            ErrorReason::OrganizationSuspended,
            "the organization was suspended while the session was starting; it was not started",
        ),
        StartRefusal::Unassigned { resource_id } => Error::failed_precondition(
            ErrorReason::NoAssignedResources,
            format!("resource {resource_id} was unassigned while the session was starting; it was not started"),
        ),
    }
}

fn address_held() -> Error {
    Error::AlreadyExists {
        reason: ErrorReason::SessionAlreadyActive,
        message: "you already have a live session for this address; extend or stop it".into(),
    }
}

/// A transition the session's state, as read in the transaction, does not allow.
fn refused(refusal: Refusal) -> Error {
    Error::failed_precondition(ErrorReason::InvalidState, refusal.to_string())
}

/// NOT_FOUND unless the session is the caller's, or the call reaches its organization's.
fn check_visible(caller: &Caller, session: &session::Model) -> Result<()> {
    if session.organization_id != caller.organization_id || !caller.reaches(&session.user_id) {
        return Err(Error::not_found("session"));
    }
    Ok(())
}
