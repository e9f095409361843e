//! A resource's approval policy: how many people must say yes, and who may, before a session
//! opens it; checked field by field (violations named by the API's field paths).

use super::identity_provider::check_token_text;
use super::{Invalid, Violations, is_valid_id};
use serde::{Deserialize, Serialize};

/// Approvals a policy asks for when it names no number.
pub const DEFAULT_APPROVALS: u32 = 1;
const MAX_APPROVALS: u32 = 10;
/// How long a request waits for its approvals when the policy names no time.
pub const DEFAULT_PENDING_TIMEOUT_SECS: u32 = 3_600;
const MIN_PENDING_TIMEOUT_SECS: u32 = 10;
const MAX_PENDING_TIMEOUT_SECS: u32 = 86_400;
const MAX_ITEMS: usize = 100;

/// Who must approve a session on the resource, and within how long.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalPolicy {
    /// Approvals needed, from distinct approvers other than the requester.
    pub approvals: u32,
    /// People who may approve; with `approver_groups` empty too, the organization's admins.
    pub approver_user_ids: Vec<String>,
    /// Identity provider groups whose members may approve (as single sign-on last saw them).
    pub approver_groups: Vec<String>,
    pub justification_required: bool,
    /// How long a request waits for its approvals before it expires.
    pub pending_timeout_secs: u32,
    /// Members of these groups start sessions without waiting.
    pub auto_approve_groups: Vec<String>,
}

/// A policy as a request states it, before checking.
#[derive(Debug, Clone, Default)]
pub struct ApprovalInput<'a> {
    pub required: bool,
    pub approvals: u32,
    pub approver_user_ids: &'a [String],
    pub approver_groups: &'a [String],
    pub justification_required: bool,
    /// `None`: the default.
    pub pending_timeout_secs: Option<i64>,
    pub auto_approve_groups: &'a [String],
}

impl ApprovalPolicy {
    /// Checks `input` (`None` when it requires no approval), recording each problem under
    /// `prefix` (for example `resource.approval`).
    pub fn check(input: &ApprovalInput<'_>, prefix: &str, violations: &mut Violations) -> Option<ApprovalPolicy> {
        if !input.required {
            return None;
        }
        let field = |name: &str| format!("{prefix}.{name}");
        let approvals = match input.approvals {
            0 => DEFAULT_APPROVALS,
            n if n > MAX_APPROVALS => {
                violations.add(field("approvals"), format!("must be from 1 to {MAX_APPROVALS}"));
                n
            }
            n => n,
        };
        let pending_timeout_secs = match input.pending_timeout_secs {
            None | Some(0) => DEFAULT_PENDING_TIMEOUT_SECS,
            Some(secs) => match u32::try_from(secs) {
                Ok(secs) if (MIN_PENDING_TIMEOUT_SECS..=MAX_PENDING_TIMEOUT_SECS).contains(&secs) => secs,
                _ => {
                    violations.add(
                        field("pending_timeout"),
                        format!("must be from {MIN_PENDING_TIMEOUT_SECS} seconds to 24 hours"),
                    );
                    DEFAULT_PENDING_TIMEOUT_SECS
                }
            },
        };
        let approver_user_ids = violations.check(&field("approver_user_ids"), check_ids(input.approver_user_ids));
        let approver_groups = violations.check(&field("approver_groups"), check_groups(input.approver_groups));
        let auto_approve_groups =
            violations.check(&field("auto_approve_groups"), check_groups(input.auto_approve_groups));
        Some(ApprovalPolicy {
            approvals,
            approver_user_ids: approver_user_ids.unwrap_or_default(),
            approver_groups: approver_groups.unwrap_or_default(),
            justification_required: input.justification_required,
            pending_timeout_secs,
            auto_approve_groups: auto_approve_groups.unwrap_or_default(),
        })
    }

    /// Whether the organization's admins approve (the policy names no approver).
    pub fn admins_approve(&self) -> bool {
        self.approver_user_ids.is_empty() && self.approver_groups.is_empty()
    }

    /// Whether someone who is `user_id`, in `groups`, and an admin or not, may approve.
    pub fn may_approve(&self, user_id: &str, groups: &[String], admin: bool) -> bool {
        if self.admins_approve() {
            return admin;
        }
        self.approver_user_ids.iter().any(|id| id == user_id)
            || self.approver_groups.iter().any(|group| groups.contains(group))
    }

    /// Whether someone in `groups` starts without waiting.
    pub fn approves_itself_for(&self, groups: &[String]) -> bool {
        self.auto_approve_groups.iter().any(|group| groups.contains(group))
    }

    /// Why a policy no one could ever satisfy is refused: of `eligible` approvers, a requester
    /// among them (one of `requesters`) leaves one fewer.
    pub fn check_feasible(&self, eligible: &[String], requesters: &[String]) -> Result<(), Invalid> {
        let count = u32::try_from(eligible.len()).unwrap_or(u32::MAX);
        if count < self.approvals {
            return Err(format!(
                "only {count} people may approve, fewer than the {} approvals required",
                self.approvals
            )
            .into());
        }
        if let Some(requester) = requesters.iter().find(|user| eligible.contains(user))
            && count - 1 < self.approvals
        {
            return Err(format!(
                "user {requester} may open the resource and approve it, but never their own request: the other {} \
                 approvers are fewer than the {} required",
                count - 1,
                self.approvals
            )
            .into());
        }
        Ok(())
    }
}

/// Where a session's approval stands: kept with the session, so every watcher sees each decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionApproval {
    /// Approvals needed: the strictest policy among the session's resources.
    pub required: u32,
    /// The duration the requester asked for, granted from the deciding approval.
    pub requested_minutes: u32,
    /// When the request expires unless approved.
    pub deadline: chrono::DateTime<chrono::Utc>,
    pub approved_at: Option<chrono::DateTime<chrono::Utc>>,
    pub decisions: Vec<Decision>,
}

/// One approver's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub user_id: String,
    pub user_email: String,
    pub approve: bool,
    pub reason: String,
    pub decided_at: chrono::DateTime<chrono::Utc>,
}

impl SessionApproval {
    /// Whether `user_id` has decided already (each approver counts once).
    pub fn decided_by(&self, user_id: &str) -> bool {
        self.decisions.iter().any(|decision| decision.user_id == user_id)
    }

    /// Approvals so far.
    pub fn approvals(&self) -> u32 {
        u32::try_from(self.decisions.iter().filter(|decision| decision.approve).count()).unwrap_or(u32::MAX)
    }
}

/// What the approval policies of a session's resources ask of it together: the largest number
/// of approvals and the shortest wait, with a justification if any asks for one; an approver
/// must be eligible under every one of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Combined<'a> {
    pub policies: Vec<&'a ApprovalPolicy>,
}

impl<'a> Combined<'a> {
    pub fn of(policies: impl IntoIterator<Item = &'a ApprovalPolicy>) -> Option<Combined<'a>> {
        let policies: Vec<&ApprovalPolicy> = policies.into_iter().collect();
        (!policies.is_empty()).then_some(Combined { policies })
    }

    pub fn approvals(&self) -> u32 {
        self.policies.iter().map(|policy| policy.approvals).max().unwrap_or(DEFAULT_APPROVALS)
    }

    pub fn pending_timeout_secs(&self) -> u32 {
        self.policies.iter().map(|policy| policy.pending_timeout_secs).min().unwrap_or(DEFAULT_PENDING_TIMEOUT_SECS)
    }

    pub fn justification_required(&self) -> bool {
        self.policies.iter().any(|policy| policy.justification_required)
    }

    /// Whether someone is an approver under every policy.
    pub fn may_approve(&self, user_id: &str, groups: &[String], admin: bool) -> bool {
        self.policies.iter().all(|policy| policy.may_approve(user_id, groups, admin))
    }

    /// Whether someone in `groups` starts without waiting: auto-approved under every policy.
    pub fn approves_itself_for(&self, groups: &[String]) -> bool {
        self.policies.iter().all(|policy| policy.approves_itself_for(groups))
    }
}

fn check_ids(ids: &[String]) -> Result<Vec<String>, Invalid> {
    if ids.len() > MAX_ITEMS {
        return Err(format!("at most {MAX_ITEMS} users").into());
    }
    let mut kept: Vec<String> = Vec::new();
    for id in ids {
        if !is_valid_id(id) {
            return Err(format!("{id:?} is not a user id").into());
        }
        if !kept.contains(id) {
            kept.push(id.clone());
        }
    }
    Ok(kept)
}

fn check_groups(groups: &[String]) -> Result<Vec<String>, Invalid> {
    if groups.len() > MAX_ITEMS {
        return Err(format!("at most {MAX_ITEMS} groups").into());
    }
    let mut kept: Vec<String> = Vec::new();
    for group in groups {
        let group = check_token_text(group, "a group name")?;
        if !kept.contains(&group) {
            kept.push(group);
        }
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checked(input: &ApprovalInput<'_>) -> Result<Option<ApprovalPolicy>, Vec<String>> {
        let mut violations = Violations::default();
        let policy = ApprovalPolicy::check(input, "resource.approval", &mut violations);
        if violations.is_empty() { Ok(policy) } else { Err(violations.0.into_iter().map(|v| v.field).collect()) }
    }

    #[test]
    fn a_bare_policy_gets_the_defaults_and_admins_approve() {
        let policy = checked(&ApprovalInput { required: true, ..Default::default() }).unwrap().unwrap();
        assert_eq!((policy.approvals, policy.pending_timeout_secs), (1, 3_600));
        assert!(policy.admins_approve());
        assert!(policy.may_approve("anyone", &[], true) && !policy.may_approve("anyone", &[], false));
        assert_eq!(checked(&ApprovalInput::default()).unwrap(), None, "not required: no policy");
    }

    #[test]
    fn bad_fields_are_named_each() {
        let ids = vec!["not-an-id".to_owned()];
        let groups = vec![" padded ".to_owned()];
        let input = ApprovalInput {
            required: true,
            approvals: 11,
            approver_user_ids: &ids,
            approver_groups: &groups,
            pending_timeout_secs: Some(5),
            ..Default::default()
        };
        let fields = checked(&input).unwrap_err();
        for field in ["approvals", "pending_timeout", "approver_user_ids", "approver_groups"] {
            assert!(fields.contains(&format!("resource.approval.{field}")), "{field} in {fields:?}");
        }
        let too_long = ApprovalInput { required: true, pending_timeout_secs: Some(86_401), ..Default::default() };
        assert_eq!(checked(&too_long).unwrap_err(), ["resource.approval.pending_timeout"]);
    }

    #[test]
    fn named_approvers_replace_the_admins() {
        let groups = vec!["dba".to_owned()];
        let input = ApprovalInput { required: true, approver_groups: &groups, ..Default::default() };
        let policy = checked(&input).unwrap().unwrap();
        assert!(policy.may_approve("u1", &groups, false));
        assert!(!policy.may_approve("u2", &[], true), "an admin outside the named approvers");
    }

    #[test]
    fn a_policy_no_one_could_meet_is_refused() {
        let policy = ApprovalPolicy {
            approvals: 2,
            approver_user_ids: Vec::new(),
            approver_groups: Vec::new(),
            justification_required: false,
            pending_timeout_secs: 60,
            auto_approve_groups: Vec::new(),
        };
        let people = |names: &[&str]| names.iter().map(|name| (*name).to_owned()).collect::<Vec<_>>();
        assert!(policy.check_feasible(&people(&["a"]), &[]).is_err(), "one approver for two approvals");
        assert!(policy.check_feasible(&people(&["a", "b"]), &people(&["c"])).is_ok());
        assert!(
            policy.check_feasible(&people(&["a", "b"]), &people(&["a"])).is_err(),
            "a requester who is one of two approvers could never get two others"
        );
        assert!(policy.check_feasible(&people(&["a", "b", "c"]), &people(&["a"])).is_ok());
    }
}
