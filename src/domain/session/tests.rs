use super::*;
use ResourceIpStatus::*;
use chrono::TimeDelta;
use proptest::prelude::*;
use std::collections::BTreeSet;

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default()
}

fn rule(id: &str, resource_id: &str, family: u8, status: ResourceIpStatus) -> Rule {
    Rule { id: id.into(), resource_id: resource_id.into(), family, status, superseded: false }
}

fn session(status: SessionStatus, rules: Vec<Rule>) -> Session {
    Session { status, ended_reason: None, expires_at: t0() + TimeDelta::hours(1), heartbeat_due_at: None, rules }
}

fn settle(s: &Session, id: &str, claimed: ResourceIpStatus, outcome: Outcome) -> Session {
    s.step(&Event::Settled { rule: id.into(), claimed, outcome }).map(|step| step.session).unwrap_or_else(|r| {
        panic!("settling {id} refused: {r}");
    })
}

fn statuses(s: &Session) -> Vec<ResourceIpStatus> {
    s.rules.iter().map(|rule| rule.status).collect()
}

#[test]
fn live_sessions_roll_up_from_their_rules() {
    let s = session(SessionStatus::Pending, vec![rule("1", "a", 4, Pending), rule("2", "b", 4, Pending)]);
    let s = settle(&s, "1", Pending, Outcome::Applied);
    assert_eq!(s.status, SessionStatus::Pending, "a rule still pending keeps the session PENDING");
    let active = settle(&s, "2", Pending, Outcome::Applied);
    assert_eq!(active.status, SessionStatus::Active);
    let partial = settle(&s, "2", Pending, Outcome::Failed);
    assert_eq!(partial.status, SessionStatus::Partial);
    let retried = partial.step(&Event::Retry { rule: "2".into() }).map(|step| step.session);
    assert_eq!(
        retried.as_ref().map(|s| s.status),
        Ok(SessionStatus::Partial),
        "a retry keeps PARTIAL until it settles"
    );
    // An address opened for a rule the session left meanwhile stays to be removed, due at once.
    let ended = s.step(&Event::End(EndedReason::Manual)).unwrap_or_else(|r| panic!("{r}")).session;
    let late = ended.step(&Event::Settled { rule: "2".into(), claimed: Pending, outcome: Outcome::Applied });
    let late = late.unwrap_or_else(|r| panic!("{r}"));
    assert_eq!((statuses(&late.session), late.effects), (vec![Removing, Removing], vec![Effect::Remove("2".into())]));
    let all_failed = session(SessionStatus::Pending, vec![rule("1", "a", 4, Failed), rule("2", "b", 4, Pending)]);
    assert_eq!(settle(&all_failed, "2", Pending, Outcome::Failed).status, SessionStatus::Failed);
}

#[test]
fn ending_sessions_finish_when_every_rule_is_removed() {
    let s = session(SessionStatus::Active, vec![rule("1", "a", 4, Applied), rule("2", "b", 4, Applied)]);
    let step = s.step(&Event::End(EndedReason::Manual)).unwrap_or_else(|r| panic!("{r}"));
    assert_eq!(step.session.status, SessionStatus::Expiring);
    assert_eq!(statuses(&step.session), [Removing, Removing]);
    assert_eq!(step.effects, [Effect::Remove("1".into()), Effect::Remove("2".into())]);
    let one = settle(&step.session, "1", Removing, Outcome::Removed);
    assert_eq!(one.status, SessionStatus::Expiring);
    assert_eq!(settle(&one, "2", Removing, Outcome::Removed).status, SessionStatus::Cancelled);
    let expired = s.step(&Event::Expire { at: s.expires_at }).unwrap_or_else(|r| panic!("{r}")).session;
    assert_eq!(expired.ended_reason, Some(EndedReason::Expired));
    let expired = settle(&settle(&expired, "1", Removing, Outcome::Removed), "2", Removing, Outcome::Removed);
    assert_eq!(expired.status, SessionStatus::Expired);
}

#[test]
fn a_session_waiting_for_approval_sends_nothing_until_approved() {
    let rules = vec![rule("1", "a", 4, Pending), rule("2", "b", 4, Pending)];
    let deadline = t0() + TimeDelta::minutes(10);
    let waiting = Session::await_approval(deadline, rules);
    assert!(waiting.effects.is_empty(), "no provider call while waiting");
    let waiting = waiting.session;
    assert_eq!((waiting.status, statuses(&waiting)), (SessionStatus::AwaitingApproval, vec![AwaitingApproval; 2]));
    let later = t0() + TimeDelta::hours(2);
    assert_eq!(waiting.step(&Event::Extend { to: later, latest: later }), Err(Refusal::NotExtendable(waiting.status)));
    assert_eq!(
        waiting.step(&Event::ChangeAddress { added: vec![rule("3", "a", 4, Pending)] }),
        Err(Refusal::AwaitingApproval)
    );

    // Approved: the rules go out and the duration starts now.
    let approved = waiting.step(&Event::Approve { expires_at: later, heartbeat_due_at: None }).unwrap();
    assert_eq!(approved.session.status, SessionStatus::Pending);
    assert_eq!(approved.session.expires_at, later);
    assert_eq!(approved.effects, [Effect::Apply("1".into()), Effect::Apply("2".into())]);
    let twice = approved.session.step(&Event::Approve { expires_at: later, heartbeat_due_at: None });
    assert_eq!(twice, Err(Refusal::NotAwaiting(SessionStatus::Pending)));

    // Denied or withdrawn: over at once, nothing to remove anywhere.
    let denied = waiting.step(&Event::End(EndedReason::Denied)).unwrap();
    assert_eq!((denied.session.status, denied.effects.len()), (SessionStatus::Cancelled, 0));
    assert_eq!(statuses(&denied.session), [Removed, Removed]);

    // Not approved in time: expired, for that reason.
    assert_eq!(waiting.step(&Event::Expire { at: deadline - TimeDelta::seconds(1) }), Err(Refusal::NotDue));
    let timed_out = waiting.step(&Event::Expire { at: deadline }).unwrap().session;
    assert_eq!(
        (timed_out.status, timed_out.ended_reason),
        (SessionStatus::Expired, Some(EndedReason::ApprovalTimeout))
    );
}

#[test]
fn a_failed_session_takes_no_retry() {
    let failed = session(SessionStatus::Failed, vec![rule("1", "a", 4, Failed), rule("2", "b", 4, Failed)]);
    assert_eq!(failed.step(&Event::Retry { rule: "1".into() }), Err(Refusal::NotLive(SessionStatus::Failed)));
    let live = session(SessionStatus::Partial, vec![rule("1", "a", 4, Applied), rule("2", "b", 4, Failed)]);
    assert_eq!(live.step(&Event::Retry { rule: "1".into() }), Err(Refusal::RuleStatus(Applied)));
}

#[test]
fn expiry_ends_only_a_session_still_due() {
    let mut s = session(SessionStatus::Active, vec![rule("1", "a", 4, Applied)]);
    s.heartbeat_due_at = Some(t0() + TimeDelta::seconds(5));
    let at = t0() + TimeDelta::seconds(6);
    let gone = s.step(&Event::Expire { at }).unwrap_or_else(|r| panic!("{r}")).session;
    assert_eq!(gone.ended_reason, Some(EndedReason::ClientGone));
    // A heartbeat committed after the scheduler's read moved the due time on.
    let renewed = Session { heartbeat_due_at: Some(at + TimeDelta::seconds(5)), ..s };
    assert_eq!(renewed.step(&Event::Expire { at }), Err(Refusal::NotDue));
}

#[test]
fn an_address_left_goes_once_a_later_one_applies_whatever_failed_between() {
    // A applied; the session moves to B, whose rule fails; then to C.
    let s = session(SessionStatus::Active, vec![rule("1", "a", 4, Applied)]);
    let to_b =
        s.step(&Event::ChangeAddress { added: vec![rule("2", "a", 4, Pending)] }).unwrap_or_else(|r| panic!("{r}"));
    let b_failed = settle(&to_b.session, "2", Pending, Outcome::Failed);
    assert_eq!(statuses(&b_failed), [Applied, Failed], "A stays open while no successor applied");
    let to_c = b_failed
        .step(&Event::ChangeAddress { added: vec![rule("3", "a", 4, Pending)] })
        .unwrap_or_else(|r| panic!("{r}"))
        .session;
    let c_applied = settle(&to_c, "3", Pending, Outcome::Applied);
    assert_eq!(statuses(&c_applied), [Removing, Removing, Applied], "A and B both go once C applies");
    assert_eq!(c_applied.status, SessionStatus::Active);
}

#[test]
fn a_withdrawal_of_the_last_resource_ends_the_session() {
    let s = session(SessionStatus::Active, vec![rule("1", "a", 4, Applied), rule("2", "b", 4, Applied)]);
    let one = s.step(&Event::Withdraw { resource_id: "a".into() }).unwrap_or_else(|r| panic!("{r}")).session;
    assert_eq!((one.status, statuses(&one)), (SessionStatus::Active, vec![Removing, Applied]));
    let none = one.step(&Event::Withdraw { resource_id: "b".into() }).unwrap_or_else(|r| panic!("{r}")).session;
    assert_eq!((none.status, none.ended_reason), (SessionStatus::Expiring, Some(EndedReason::Admin)));
}

#[test]
fn a_sweep_removes_what_a_terminal_session_still_holds() {
    let s = session(SessionStatus::Failed, vec![rule("1", "a", 4, Applied), rule("2", "b", 4, Failed)]);
    let swept = s.step(&Event::Sweep).unwrap_or_else(|r| panic!("{r}"));
    assert_eq!(statuses(&swept.session), [Removing, Failed]);
    assert_eq!(swept.effects, [Effect::Remove("1".into())]);
    let healthy = session(SessionStatus::Active, vec![rule("1", "a", 4, Applied)]);
    assert_eq!(healthy.step(&Event::Sweep), Err(Refusal::Unchanged));
}

#[test]
fn starts_commit_only_with_every_right_held() {
    let rights =
        StartRights { user_enabled: true, organization_suspended: false, unassigned: None, address_held: false };
    assert_eq!(rights.admit(), Ok(()));
    let disabled = StartRights { user_enabled: false, ..rights.clone() };
    assert_eq!(disabled.admit(), Err(StartRefusal::UserDisabled));
    let suspended = StartRights { organization_suspended: true, ..rights.clone() };
    assert_eq!(suspended.admit(), Err(StartRefusal::OrganizationSuspended));
    let unassigned = StartRights { unassigned: Some("r".into()), ..rights };
    assert_eq!(unassigned.admit(), Err(StartRefusal::Unassigned { resource_id: "r".into() }));
}

/// What a random history does, translated into events against the session as it then is.
#[derive(Debug, Clone)]
enum Op {
    /// The worker claims the n-th due rule.
    Claim(usize),
    /// The n-th call in flight ends: 0 success, 1 refused for good, 2 transient.
    Settle(usize, u8),
    Retry(usize),
    /// Someone removes the n-th open address at the provider; the reconciler then reports it missing.
    Drift(usize),
    End(bool),
    Expire(i64),
    Withdraw(usize),
    Extend(i64),
    Shorten(i64),
    ChangeAddress(u8),
    Sweep,
    Approve,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => any::<usize>().prop_map(Op::Claim),
        4 => (any::<usize>(), 0u8..3).prop_map(|(n, how)| Op::Settle(n, how)),
        1 => any::<usize>().prop_map(Op::Retry),
        1 => any::<usize>().prop_map(Op::Drift),
        1 => any::<bool>().prop_map(Op::End),
        1 => (0i64..7200).prop_map(Op::Expire),
        1 => (0usize..3).prop_map(Op::Withdraw),
        1 => (0i64..7200).prop_map(Op::Extend),
        1 => (0i64..7200).prop_map(Op::Shorten),
        2 => prop_oneof![Just(4u8), Just(6u8)].prop_map(Op::ChangeAddress),
        1 => Just(Op::Sweep),
        1 => Just(Op::Approve),
    ]
}

/// A session, the provider's view of it (the rules whose address is open), and the worker's
/// calls in flight (each rule with the status it was claimed in).
struct World {
    session: Session,
    open: BTreeSet<String>,
    in_flight: Vec<(String, ResourceIpStatus)>,
    next_id: u32,
}

impl World {
    fn new(resources: usize, families: &[u8], heartbeat: bool, awaiting: bool) -> World {
        let mut world = World {
            session: session(SessionStatus::Pending, Vec::new()),
            open: BTreeSet::new(),
            in_flight: Vec::new(),
            next_id: 0,
        };
        let mut rules = Vec::new();
        for resource in 0..resources {
            for family in families {
                rules.push(rule(&world.new_id(), &resource.to_string(), *family, Pending));
            }
        }
        let heartbeat_due_at = heartbeat.then(|| t0() + TimeDelta::seconds(60));
        world.session = if awaiting {
            Session::await_approval(t0() + TimeDelta::minutes(30), rules).session
        } else {
            Session::start(t0() + TimeDelta::hours(1), heartbeat_due_at, rules).session
        };
        world
    }

    fn new_id(&mut self) -> String {
        self.next_id += 1;
        format!("{:06}", self.next_id)
    }

    fn due(&self) -> Vec<(String, ResourceIpStatus)> {
        self.session
            .rules
            .iter()
            .filter(|rule| matches!(rule.status, Pending | Removing))
            .filter(|rule| !self.in_flight.iter().any(|(id, _)| *id == rule.id))
            .map(|rule| (rule.id.clone(), rule.status))
            .collect()
    }

    fn event(&mut self, event: Event) {
        if let Ok(step) = self.session.step(&event) {
            self.session = step.session;
        }
    }

    fn settle(&mut self, index: usize, how: u8) {
        let (id, claimed) = self.in_flight.remove(index);
        let outcome = match (claimed, how) {
            (Pending, 0) => {
                self.open.insert(id.clone());
                Outcome::Applied
            }
            (Pending, 1) => Outcome::Failed,
            (Removing, 0) => {
                self.open.remove(&id);
                Outcome::Removed
            }
            // A transient error: nothing changed anywhere, the rule is due again.
            _ => return,
        };
        let event = Event::Settled { rule: id, claimed, outcome };
        let step = self.session.step(&event);
        assert!(step.is_ok(), "the outcome of a claimed call must always be taken: {event:?} on {:?}", self.session);
        if let Ok(step) = step {
            self.session = step.session;
        }
    }

    fn run(&mut self, op: &Op) {
        match op {
            Op::Claim(n) => {
                let due = self.due();
                if !due.is_empty() {
                    self.in_flight.push(due[n % due.len()].clone());
                }
            }
            Op::Settle(n, how) => {
                if !self.in_flight.is_empty() {
                    self.settle(n % self.in_flight.len(), *how);
                }
            }
            Op::Retry(n) => {
                let id = self.session.rules[n % self.session.rules.len()].id.clone();
                self.event(Event::Retry { rule: id });
            }
            Op::Drift(n) => {
                if let Some(id) = self.open.iter().nth(n % self.open.len().max(1)).cloned() {
                    self.open.remove(&id);
                    self.event(Event::Missing { rule: id });
                }
            }
            Op::End(by_owner) => {
                self.event(Event::End(if *by_owner { EndedReason::Manual } else { EndedReason::Admin }))
            }
            Op::Expire(secs) => self.event(Event::Expire { at: t0() + TimeDelta::seconds(*secs) }),
            Op::Withdraw(resource) => self.event(Event::Withdraw { resource_id: resource.to_string() }),
            Op::Extend(secs) => {
                self.event(Event::Extend { to: t0() + TimeDelta::seconds(*secs), latest: t0() + TimeDelta::hours(1) })
            }
            Op::Shorten(secs) => {
                self.event(Event::Shorten { to: t0() + TimeDelta::seconds(*secs), at: t0() + TimeDelta::seconds(60) })
            }
            Op::ChangeAddress(family) => {
                // As ChangeSessionAddress does: a new rule on every resource the session still holds.
                let held: BTreeSet<String> = self
                    .session
                    .rules
                    .iter()
                    .filter(|rule| !rule.status.is_retired())
                    .map(|rule| rule.resource_id.clone())
                    .collect();
                let added =
                    held.into_iter().map(|resource| rule(&self.new_id(), &resource, *family, Pending)).collect();
                self.event(Event::ChangeAddress { added });
            }
            Op::Sweep => self.event(Event::Sweep),
            Op::Approve => self.event(Event::Approve {
                expires_at: t0() + TimeDelta::hours(1),
                heartbeat_due_at: Some(t0() + TimeDelta::seconds(60)),
            }),
        }
    }

    /// Every call in flight succeeds, then every due rule is worked until none is due.
    fn drain(&mut self) {
        for _ in 0..100 {
            while !self.in_flight.is_empty() {
                self.settle(0, 0);
            }
            let due = self.due();
            if due.is_empty() {
                return;
            }
            self.in_flight = due;
        }
        panic!("work never ran out: {:?}", self.session);
    }

    fn check_invariants(&self) {
        let s = &self.session;
        if s.status.is_terminal() {
            let holding: Vec<&Rule> = s.rules.iter().filter(|rule| matches!(rule.status, Pending | Applied)).collect();
            assert!(holding.is_empty(), "terminal session {:?} keeps {holding:?}", s.status);
        }
        if s.status == SessionStatus::AwaitingApproval {
            assert!(self.open.is_empty(), "a session waiting for approval has {:?} open", self.open);
            let sent = s.rules.iter().filter(|rule| !matches!(rule.status, AwaitingApproval | Removed));
            assert_eq!(sent.count(), 0, "a session waiting for approval sent rules: {s:?}");
        }
        for id in &self.open {
            let status = s.rules.iter().find(|rule| rule.id == *id).map(|rule| rule.status);
            assert!(matches!(status, Some(Applied | Removing)), "open address of rule {id} is {status:?} in {s:?}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_histories_keep_the_invariants(
        resources in 1usize..4,
        dual_stack in any::<bool>(),
        heartbeat in any::<bool>(),
        awaiting in any::<bool>(),
        ops in prop::collection::vec(op(), 0..60),
    ) {
        let families: &[u8] = if dual_stack { &[4, 6] } else { &[4] };
        let mut world = World::new(resources, families, heartbeat, awaiting);
        for op in &ops {
            world.run(op);
            world.check_invariants();
        }
        // Quiet again: every address the session left is gone where a later one applied.
        world.drain();
        world.check_invariants();
        if world.session.status.is_live() {
            for current in world.session.rules.iter().filter(|rule| !rule.superseded && rule.status == Applied) {
                for left in world.session.rules.iter().filter(|rule| rule.superseded) {
                    if left.resource_id == current.resource_id && left.family == current.family {
                        prop_assert_eq!(left.status, Removed, "{:?} left behind {:?}", left, current);
                    }
                }
            }
        }
        // However it got here, ending the session takes every address off the firewall.
        world.event(Event::End(EndedReason::Manual));
        world.drain();
        world.check_invariants();
        prop_assert!(world.session.status.is_terminal(), "{:?}", world.session);
        prop_assert!(world.open.is_empty(), "still open after the end: {:?} in {:?}", world.open, world.session);
    }
}
