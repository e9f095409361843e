//! The session state machine: the one place that decides how a session and its rules move.
//!
//! [`Session::step`] takes a session as it is now (with its rules) and an [`Event`], and answers
//! the session as it is to be, with the provider calls that fall due ([`Step::effects`]), or why
//! the event does not apply ([`Refusal`]). It does no I/O: the engine and the services read the
//! session inside the transaction that writes the answer (`engine::transitions`), so a decision is
//! never taken on a stale read, and a lost race is a refusal rather than a silent write.
//!
//! Invariants every step keeps (property-tested below):
//! - a terminal session keeps no rule that is APPLIED or about to be (PENDING);
//! - a rule the provider may hold (APPLIED, or PENDING with its call in flight) is removed once
//!   the session ends, whatever happened meanwhile;
//! - an address the session left is retired (REMOVING) once a successor on the same resource and
//!   family applies, whatever failed in between.

use super::{EndedReason, ResourceIpStatus, SessionStatus};
use chrono::{DateTime, Utc};

impl SessionStatus {
    /// Terminal sessions never change again.
    pub fn is_terminal(self) -> bool {
        matches!(self, SessionStatus::Failed | SessionStatus::Expired | SessionStatus::Cancelled)
    }

    /// Live sessions hold (or are acquiring, or waiting for approval to acquire) their rules and
    /// their addresses, and can be stopped or expire.
    pub fn is_live(self) -> bool {
        SessionStatus::LIVE.contains(&self)
    }

    /// Every live status.
    pub const LIVE: [SessionStatus; 4] =
        [SessionStatus::AwaitingApproval, SessionStatus::Pending, SessionStatus::Active, SessionStatus::Partial];
}

impl ResourceIpStatus {
    /// Rules whose address is being, or has been, taken off the firewall.
    pub fn is_retired(self) -> bool {
        matches!(self, ResourceIpStatus::Removing | ResourceIpStatus::Removed)
    }
}

/// A session as the state machine sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub status: SessionStatus,
    pub ended_reason: Option<EndedReason>,
    pub expires_at: DateTime<Utc>,
    /// When the session ends for want of a watch by its owner (sessions with a heartbeat).
    pub heartbeat_due_at: Option<DateTime<Utc>>,
    /// In creation order (identifiers are UUIDv7: their order is their age).
    pub rules: Vec<Rule>,
}

/// One rule of a session: an address on a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub id: String,
    pub resource_id: String,
    /// 4 or 6.
    pub family: u8,
    pub status: ResourceIpStatus,
    /// The session has moved to another address for this resource and family: the rule goes
    /// once a newer one applies.
    pub superseded: bool,
}

/// What the provider call for a claimed rule achieved. (A transient error changes no state:
/// the rule stays where it is and is tried again later.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The address is open at the provider.
    Applied,
    /// The provider refused the address for good.
    Failed,
    /// The address is off the firewall (or was never on it).
    Removed,
}

/// Something that happens to a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The provider call for `rule`, claimed while it was in status `claimed`, ended.
    Settled { rule: String, claimed: ResourceIpStatus, outcome: Outcome },
    /// A user retries a FAILED rule.
    Retry { rule: String },
    /// The reconciler found an APPLIED rule gone at the provider: open it again.
    Missing { rule: String },
    /// The session is ended by its owner (MANUAL), an admin or a revocation of rights (ADMIN):
    /// a disabled user, a suspended organization, a resource withdrawn from a session left with
    /// nothing else.
    End(EndedReason),
    /// The expiry scheduler found the session due at `at`: it ends (EXPIRED, or CLIENT_GONE when
    /// its heartbeat lapsed first) only if it still is.
    Expire { at: DateTime<Utc> },
    /// A resource was unassigned from the session's user: its rules go.
    Withdraw { resource_id: String },
    /// A user asks for a later end (only ACTIVE or PARTIAL sessions), at most `latest` (the
    /// owner's maximum from the session's start).
    Extend { to: DateTime<Utc>, latest: DateTime<Utc> },
    /// Lowered rights cap the session's end at `to`; a session already past it at `at` ends.
    Shorten { to: DateTime<Utc>, at: DateTime<Utc> },
    /// The approvals a waiting session needs are in: its rules go to the provider, and it lasts
    /// until `expires_at` (its duration counted from now), with its heartbeat due then.
    Approve { expires_at: DateTime<Utc>, heartbeat_due_at: Option<DateTime<Utc>> },
    /// The session moves to new addresses: `added` rules (PENDING), each superseding what its
    /// resource held for its family.
    ChangeAddress { added: Vec<Rule> },
    /// A sweep found the session: if it is terminal, any rule still holding or about to hold an
    /// address is an orphan and goes.
    Sweep,
}

/// Why an event does not apply to a session as it is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The session has ended or is ending.
    NotLive(SessionStatus),
    /// Only ACTIVE or PARTIAL sessions can be extended.
    NotExtendable(SessionStatus),
    /// The new end is beyond what the owner may have.
    BeyondMaximum,
    /// The rule is not in the status the event needs (it is in this one).
    RuleStatus(ResourceIpStatus),
    /// The session has no such rule.
    UnknownRule,
    /// There is no such session.
    UnknownSession,
    /// The session is not due to expire (it was renewed meanwhile).
    NotDue,
    /// The event changes nothing (an extension to an earlier end, a move to the addresses the
    /// session has, a withdrawal of a resource it does not hold, a sweep of a healthy session).
    Unchanged,
    /// The session waits for approval: only approving, ending or its expiry apply.
    AwaitingApproval,
    /// Only a session waiting for approval can be approved (this one is in this status).
    NotAwaiting(SessionStatus),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::NotLive(status) => write!(f, "the session is {status}, not live"),
            Refusal::NotExtendable(status) => {
                write!(f, "only ACTIVE or PARTIAL sessions can be extended; this one is {status}")
            }
            Refusal::BeyondMaximum => f.write_str("the new end is beyond the owner's maximum"),
            Refusal::RuleStatus(status) => write!(f, "the rule is {status}"),
            Refusal::UnknownRule => f.write_str("the session has no such rule"),
            Refusal::UnknownSession => f.write_str("no such session"),
            Refusal::NotDue => f.write_str("the session is not due to end"),
            Refusal::Unchanged => f.write_str("nothing to change"),
            Refusal::AwaitingApproval => f.write_str("the session is waiting for approval"),
            Refusal::NotAwaiting(status) => write!(f, "the session is {status}, not waiting for approval"),
        }
    }
}

/// A provider call that falls due now because of a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Open the rule's address.
    Apply(String),
    /// Take the rule's address off the firewall.
    Remove(String),
}

/// The answer to an event: the session as it is to be, and the calls now due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub session: Session,
    pub effects: Vec<Effect>,
}

impl Session {
    /// A new session: PENDING, each rule PENDING and due.
    pub fn start(expires_at: DateTime<Utc>, heartbeat_due_at: Option<DateTime<Utc>>, rules: Vec<Rule>) -> Step {
        let effects = rules.iter().map(|rule| Effect::Apply(rule.id.clone())).collect();
        let session =
            Session { status: SessionStatus::Pending, ended_reason: None, expires_at, heartbeat_due_at, rules };
        Step { session, effects }
    }

    /// A new session that waits for approval until `deadline`: no rule goes to a provider.
    pub fn await_approval(deadline: DateTime<Utc>, rules: Vec<Rule>) -> Step {
        let rules = rules.into_iter().map(|rule| Rule { status: ResourceIpStatus::AwaitingApproval, ..rule }).collect();
        let session = Session {
            status: SessionStatus::AwaitingApproval,
            ended_reason: None,
            expires_at: deadline,
            heartbeat_due_at: None,
            rules,
        };
        Step { session, effects: Vec::new() }
    }

    /// The next state after `event`, or why the event does not apply.
    pub fn step(&self, event: &Event) -> Result<Step, Refusal> {
        let mut next = Step { session: self.clone(), effects: Vec::new() };
        match event {
            Event::Settled { rule, claimed, outcome } => next.settled(rule, *claimed, *outcome)?,
            Event::Retry { rule } => {
                self.require_live()?;
                next.requeue(rule, ResourceIpStatus::Failed)?;
            }
            Event::Missing { rule } => {
                self.require_live()?;
                next.requeue(rule, ResourceIpStatus::Applied)?;
            }
            Event::End(reason) => {
                self.require_live()?;
                next.end(*reason);
            }
            Event::Expire { at } => {
                self.require_live()?;
                let client_gone = self.heartbeat_due_at.is_some_and(|due| due <= *at && due < self.expires_at);
                if client_gone {
                    next.end(EndedReason::ClientGone);
                } else if self.expires_at <= *at && self.status == SessionStatus::AwaitingApproval {
                    next.end(EndedReason::ApprovalTimeout);
                } else if self.expires_at <= *at {
                    next.end(EndedReason::Expired);
                } else {
                    return Err(Refusal::NotDue);
                }
            }
            Event::Approve { expires_at, heartbeat_due_at } => {
                if self.status != SessionStatus::AwaitingApproval {
                    return Err(Refusal::NotAwaiting(self.status));
                }
                next.session.status = SessionStatus::Pending;
                next.session.expires_at = *expires_at;
                next.session.heartbeat_due_at = *heartbeat_due_at;
                for rule in
                    next.session.rules.iter_mut().filter(|rule| rule.status == ResourceIpStatus::AwaitingApproval)
                {
                    rule.status = ResourceIpStatus::Pending;
                    next.effects.push(Effect::Apply(rule.id.clone()));
                }
            }
            Event::Withdraw { resource_id } => {
                self.require_live()?;
                next.withdraw(resource_id)?;
            }
            Event::Extend { to, latest } => {
                if !matches!(self.status, SessionStatus::Active | SessionStatus::Partial) {
                    return Err(Refusal::NotExtendable(self.status));
                }
                if *to > *latest {
                    return Err(Refusal::BeyondMaximum);
                }
                if *to <= self.expires_at {
                    return Err(Refusal::Unchanged);
                }
                next.session.expires_at = *to;
            }
            Event::Shorten { to, at } => {
                self.require_live()?;
                // A waiting session's end is its approval deadline; its duration is capped when
                // it is approved.
                if self.status == SessionStatus::AwaitingApproval {
                    return Err(Refusal::Unchanged);
                }
                if *to >= self.expires_at {
                    return Err(Refusal::Unchanged);
                }
                if *to <= *at {
                    next.end(EndedReason::Expired);
                } else {
                    next.session.expires_at = *to;
                }
            }
            Event::ChangeAddress { added } => {
                self.require_live()?;
                if self.status == SessionStatus::AwaitingApproval {
                    return Err(Refusal::AwaitingApproval);
                }
                if added.is_empty() {
                    return Err(Refusal::Unchanged);
                }
                next.change_address(added);
            }
            Event::Sweep => {
                let holding =
                    |rule: &Rule| matches!(rule.status, ResourceIpStatus::Pending | ResourceIpStatus::Applied);
                if !self.status.is_terminal() || next.retire_all(holding) == 0 {
                    return Err(Refusal::Unchanged);
                }
                return Ok(next);
            }
        }
        next.roll_up();
        Ok(next)
    }

    fn require_live(&self) -> Result<(), Refusal> {
        if self.status.is_live() { Ok(()) } else { Err(Refusal::NotLive(self.status)) }
    }
}

impl Step {
    fn rule_mut(&mut self, id: &str) -> Result<&mut Rule, Refusal> {
        self.session.rules.iter_mut().find(|rule| rule.id == id).ok_or(Refusal::UnknownRule)
    }

    fn settled(&mut self, id: &str, claimed: ResourceIpStatus, outcome: Outcome) -> Result<(), Refusal> {
        let rule = self.rule_mut(id)?;
        if rule.status != claimed {
            // The rule moved while its call ran (the session ended, or the address was left):
            // whatever the call did, the rule's new work is due now. An address opened for a
            // rule now REMOVING is taken off again by that call.
            let due = match rule.status {
                ResourceIpStatus::Removing => Effect::Remove(id.to_owned()),
                ResourceIpStatus::Pending => Effect::Apply(id.to_owned()),
                other => return Err(Refusal::RuleStatus(other)),
            };
            self.effects.push(due);
            return Ok(());
        }
        rule.status = match (claimed, outcome) {
            (ResourceIpStatus::Pending, Outcome::Applied) => ResourceIpStatus::Applied,
            (ResourceIpStatus::Pending, Outcome::Failed) => ResourceIpStatus::Failed,
            (ResourceIpStatus::Removing, Outcome::Removed) => ResourceIpStatus::Removed,
            // Removal never gives up, and a removal does not open anything: try it again.
            (ResourceIpStatus::Removing, _) => {
                self.effects.push(Effect::Remove(id.to_owned()));
                return Ok(());
            }
            (status, _) => return Err(Refusal::RuleStatus(status)),
        };
        if rule.status == ResourceIpStatus::Applied {
            let (resource_id, family, id) = (rule.resource_id.clone(), rule.family, rule.id.clone());
            self.retire_predecessors(&resource_id, family, &id);
        }
        Ok(())
    }

    /// A newer address applied on a resource: the older ones the session left go.
    fn retire_predecessors(&mut self, resource_id: &str, family: u8, applied: &str) {
        self.retire_all(|rule| {
            rule.resource_id == resource_id && rule.family == family && rule.superseded && rule.id.as_str() < applied
        });
    }

    /// Puts a rule in status `from` back in the queue: PENDING, due now.
    fn requeue(&mut self, id: &str, from: ResourceIpStatus) -> Result<(), Refusal> {
        let rule = self.rule_mut(id)?;
        if rule.status != from {
            return Err(Refusal::RuleStatus(rule.status));
        }
        rule.status = ResourceIpStatus::Pending;
        self.effects.push(Effect::Apply(id.to_owned()));
        Ok(())
    }

    /// The addresses of the rules `which` picks are to come off the firewall: each not retired
    /// yet goes REMOVING, due now. Answers how many did.
    fn retire_all(&mut self, which: impl Fn(&Rule) -> bool) -> usize {
        let mut retired = 0;
        for rule in self.session.rules.iter_mut().filter(|rule| !rule.status.is_retired() && which(rule)) {
            retired += 1;
            if rule.status == ResourceIpStatus::AwaitingApproval {
                // Never sent to a provider: nothing to take off.
                rule.status = ResourceIpStatus::Removed;
                continue;
            }
            rule.status = ResourceIpStatus::Removing;
            self.effects.push(Effect::Remove(rule.id.clone()));
        }
        retired
    }

    fn end(&mut self, reason: EndedReason) {
        self.session.status = SessionStatus::Expiring;
        self.session.ended_reason = Some(reason);
        self.retire_all(|_| true);
    }

    fn withdraw(&mut self, resource_id: &str) -> Result<(), Refusal> {
        if self.retire_all(|rule| rule.resource_id == resource_id) == 0 {
            return Err(Refusal::Unchanged);
        }
        if self.session.rules.iter().all(|rule| rule.status.is_retired()) {
            // Nothing left to hold: the session ends as any revocation ends it.
            self.end(EndedReason::Admin);
        }
        Ok(())
    }

    fn change_address(&mut self, added: &[Rule]) {
        for new in added {
            // Every address the session held here for this family, including one that itself
            // replaced an earlier address and failed, goes once the new one applies.
            for rule in &mut self.session.rules {
                if rule.resource_id == new.resource_id && rule.family == new.family && !rule.status.is_retired() {
                    rule.superseded = true;
                }
            }
        }
        for new in added {
            let rule = Rule { status: ResourceIpStatus::Pending, superseded: false, ..new.clone() };
            self.effects.push(Effect::Apply(rule.id.clone()));
            self.session.rules.push(rule);
        }
    }

    /// The session's status from its rules' (see [`roll_up`]).
    fn roll_up(&mut self) {
        let statuses: Vec<ResourceIpStatus> = self.session.rules.iter().map(|rule| rule.status).collect();
        self.session.status = roll_up(self.session.status, self.session.ended_reason, &statuses);
    }
}

/// The status a session moves to given its rules' states.
///
/// While live: any rule still PENDING keeps a PENDING session PENDING (an ACTIVE or PARTIAL
/// session whose failed rule is being retried keeps its status); otherwise all APPLIED → ACTIVE,
/// all FAILED → FAILED, a mix → PARTIAL; rules being removed from a live session are left out
/// (none left keeps the status: the session is being ended). While EXPIRING: once every rule is
/// REMOVED, the session ends as EXPIRED or CANCELLED according to why it ended.
fn roll_up(current: SessionStatus, ended_reason: Option<EndedReason>, rules: &[ResourceIpStatus]) -> SessionStatus {
    match current {
        SessionStatus::Expiring => {
            if rules.iter().all(|s| *s == ResourceIpStatus::Removed) {
                match ended_reason {
                    Some(EndedReason::Expired | EndedReason::ApprovalTimeout) | None => SessionStatus::Expired,
                    Some(EndedReason::Manual | EndedReason::Admin | EndedReason::ClientGone | EndedReason::Denied) => {
                        SessionStatus::Cancelled
                    }
                }
            } else {
                SessionStatus::Expiring
            }
        }
        status if status.is_terminal() => status,
        status => {
            if rules.contains(&ResourceIpStatus::Pending) {
                return status;
            }
            // Rules withdrawn from a live session (its resource was unassigned) no longer count.
            let applied = rules.iter().filter(|s| **s == ResourceIpStatus::Applied).count();
            let failed = rules.iter().filter(|s| **s == ResourceIpStatus::Failed).count();
            match (applied, failed) {
                (0, 0) => status,
                (_, 0) => SessionStatus::Active,
                (0, _) => SessionStatus::Failed,
                _ => SessionStatus::Partial,
            }
        }
    }
}

/// What a start depends on besides the session itself, as read in the transaction that writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartRights {
    pub user_enabled: bool,
    pub organization_suspended: bool,
    /// A resource the session would open that is no longer assigned to its user.
    pub unassigned: Option<String>,
    /// The user already has a live session for one of the addresses.
    pub address_held: bool,
}

/// Why a start was refused at commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartRefusal {
    AddressHeld,
    UserDisabled,
    OrganizationSuspended,
    Unassigned { resource_id: String },
}

impl StartRights {
    /// Whether a start may commit: its user still has every right it was started with.
    pub fn admit(&self) -> Result<(), StartRefusal> {
        if !self.user_enabled {
            return Err(StartRefusal::UserDisabled);
        }
        if self.organization_suspended {
            return Err(StartRefusal::OrganizationSuspended);
        }
        if let Some(resource_id) = &self.unassigned {
            return Err(StartRefusal::Unassigned { resource_id: resource_id.clone() });
        }
        if self.address_held {
            return Err(StartRefusal::AddressHeld);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
