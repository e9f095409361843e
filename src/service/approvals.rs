//! Who may approve sessions on a resource under its approval policy.

use crate::domain::{ApprovalPolicy, Violations};
use crate::error::Result;
use crate::store::queries;
use sea_orm::ConnectionTrait;

/// The enabled users of `organization_id` who may approve under `policy`: its named users and
/// the members of its groups, or the organization's admins when it names none.
pub async fn eligible_approvers(
    db: &impl ConnectionTrait,
    organization_id: &str,
    policy: &ApprovalPolicy,
) -> Result<Vec<String>> {
    if policy.admins_approve() {
        return Ok(queries::users::enabled_admins(db, organization_id).await?);
    }
    let mut eligible = queries::users::enabled_among(db, organization_id, &policy.approver_user_ids).await?;
    let grouped = queries::identity_providers::users_in_groups(db, organization_id, &policy.approver_groups).await?;
    eligible.extend(queries::users::enabled_among(db, organization_id, &grouped).await?);
    eligible.sort_unstable();
    eligible.dedup();
    Ok(eligible)
}

/// Refuses a policy naming people who are not enabled users of the organization, or one no one
/// could ever satisfy: fewer eligible approvers than approvals, counting that `requesters`
/// (the resource's assignees) never approve their own request.
pub async fn check_policy(
    db: &impl ConnectionTrait,
    organization_id: &str,
    policy: &ApprovalPolicy,
    requesters: &[String],
    field: &str,
) -> Result<()> {
    let mut violations = Violations::default();
    let known = queries::users::enabled_among(db, organization_id, &policy.approver_user_ids).await?;
    if let Some(unknown) = policy.approver_user_ids.iter().find(|id| !known.contains(id)) {
        violations
            .add(format!("{field}.approver_user_ids"), format!("{unknown} is no enabled user of this organization"));
    }
    let eligible = eligible_approvers(db, organization_id, policy).await?;
    violations.check(&format!("{field}.approvals"), policy.check_feasible(&eligible, requesters));
    if violations.is_empty() { Ok(()) } else { Err(violations.into()) }
}
