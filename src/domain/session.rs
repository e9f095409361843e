//! The session state machine.

use super::{EndedReason, ResourceIpStatus, SessionStatus};

impl SessionStatus {
    /// Terminal sessions never change again.
    pub fn is_terminal(self) -> bool {
        matches!(self, SessionStatus::Failed | SessionStatus::Expired | SessionStatus::Cancelled)
    }

    /// Live sessions hold (or are acquiring) their rules and can be stopped, extended or expire.
    pub fn is_live(self) -> bool {
        matches!(self, SessionStatus::Pending | SessionStatus::Active | SessionStatus::Partial)
    }
}

/// The status a session moves to given its rules' states.
///
/// While live: any rule still PENDING keeps a PENDING session PENDING (an ACTIVE or PARTIAL
/// session whose failed rule is being retried keeps its status); otherwise all APPLIED → ACTIVE,
/// all FAILED → FAILED, a mix → PARTIAL; rules being removed from a live session are left out
/// (none left keeps the status: the session is being ended). While EXPIRING: once every rule is REMOVED, the session
/// ends as EXPIRED or CANCELLED according to why it ended.
pub fn roll_up(current: SessionStatus, ended_reason: Option<EndedReason>, rules: &[ResourceIpStatus]) -> SessionStatus {
    match current {
        SessionStatus::Expiring => {
            if rules.iter().all(|s| *s == ResourceIpStatus::Removed) {
                match ended_reason {
                    Some(EndedReason::Expired) | None => SessionStatus::Expired,
                    Some(EndedReason::Manual | EndedReason::Admin | EndedReason::ClientGone) => {
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

#[cfg(test)]
mod tests {
    use super::*;
    use ResourceIpStatus::*;

    #[test]
    fn live_sessions_roll_up_from_their_rules() {
        assert_eq!(roll_up(SessionStatus::Pending, None, &[Applied, Pending]), SessionStatus::Pending);
        assert_eq!(roll_up(SessionStatus::Pending, None, &[Applied, Applied]), SessionStatus::Active);
        assert_eq!(roll_up(SessionStatus::Pending, None, &[Applied, Failed]), SessionStatus::Partial);
        assert_eq!(roll_up(SessionStatus::Pending, None, &[Failed, Failed]), SessionStatus::Failed);
        // A retried rule of a PARTIAL session keeps it PARTIAL until the retry settles.
        assert_eq!(roll_up(SessionStatus::Partial, None, &[Applied, Pending]), SessionStatus::Partial);
        assert_eq!(roll_up(SessionStatus::Partial, None, &[Applied, Applied]), SessionStatus::Active);
        // A withdrawn resource's rule leaves the roll-up to the others.
        assert_eq!(roll_up(SessionStatus::Partial, None, &[Applied, Removing]), SessionStatus::Active);
        assert_eq!(roll_up(SessionStatus::Active, None, &[Failed, Removed]), SessionStatus::Failed);
        assert_eq!(roll_up(SessionStatus::Active, None, &[Removed]), SessionStatus::Active);
    }

    #[test]
    fn ending_sessions_finish_when_every_rule_is_removed() {
        let manual = Some(EndedReason::Manual);
        assert_eq!(roll_up(SessionStatus::Expiring, manual, &[Removed, Removing]), SessionStatus::Expiring);
        assert_eq!(roll_up(SessionStatus::Expiring, manual, &[Removed, Removed]), SessionStatus::Cancelled);
        assert_eq!(roll_up(SessionStatus::Expiring, Some(EndedReason::Admin), &[Removed]), SessionStatus::Cancelled);
        assert_eq!(roll_up(SessionStatus::Expiring, Some(EndedReason::Expired), &[Removed]), SessionStatus::Expired);
        assert_eq!(roll_up(SessionStatus::Cancelled, manual, &[Pending]), SessionStatus::Cancelled);
    }
}
