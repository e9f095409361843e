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

/// The enabled users of `organization_id` who may approve under every one of `policies` (none:
/// the organization's admins, who decide a session whose policies were lifted since).
pub async fn eligible_for_all(
    db: &impl ConnectionTrait,
    organization_id: &str,
    policies: &[&ApprovalPolicy],
) -> Result<Vec<String>> {
    let Some((first, rest)) = policies.split_first() else {
        return Ok(queries::users::enabled_admins(db, organization_id).await?);
    };
    let mut eligible = eligible_approvers(db, organization_id, first).await?;
    for policy in rest {
        let of_policy = eligible_approvers(db, organization_id, policy).await?;
        eligible.retain(|user| of_policy.contains(user));
    }
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

/// ApprovalService: approvers decide on sessions waiting for approval.
#[derive(Clone)]
pub struct ApprovalManager {
    db: sea_orm::DatabaseConnection,
    engine: crate::engine::Engine,
    mailer: std::sync::Arc<dyn super::mail::Mailer>,
    /// The longest sessions each role may hold: an approval grants no more than the requester
    /// may hold when it comes.
    sessions: crate::config::SessionConfig,
}

/// One approver's answer to a waiting session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Approve,
    Deny,
}

impl ApprovalManager {
    pub fn new(
        db: sea_orm::DatabaseConnection,
        engine: crate::engine::Engine,
        mailer: std::sync::Arc<dyn super::mail::Mailer>,
        sessions: crate::config::SessionConfig,
    ) -> ApprovalManager {
        ApprovalManager { db, engine, mailer, sessions }
    }

    /// Sends `mails` after the answer, as login mail goes: how long mail takes is nobody's wait.
    fn send_later(&self, mails: Vec<super::mail::Mail>) {
        let mailer = self.mailer.clone();
        tokio::spawn(async move {
            for mail in mails {
                let to = mail.to.clone();
                if let Err(err) = mailer.send(mail).await {
                    tracing::warn!(email = %to, error = %err, "sending approval mail failed");
                }
            }
        });
    }

    /// Tells everyone who may decide that session `session` (just started, waiting) asks for
    /// their approval, with the `pcl` commands to answer.
    pub async fn announce_request(
        &self,
        session: &crate::store::entity::session::Model,
        requester: &str,
    ) -> Result<()> {
        let rules = queries::sessions::rules_of(&self.db, &session.id).await?;
        let mut names: Vec<&str> = rules.iter().map(|rule| rule.resource_name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        let mails = self
            .approvers_of(session)
            .await?
            .into_iter()
            .map(|user| {
                super::mail::Mail::approval_requested(
                    &user.email,
                    requester,
                    &session.id,
                    &names.join(", "),
                    session.justification.as_deref().unwrap_or_default(),
                )
            })
            .collect();
        self.send_later(mails);
        Ok(())
    }

    /// The enabled users who may decide on `session`, its requester left out.
    async fn approvers_of(
        &self,
        session: &crate::store::entity::session::Model,
    ) -> Result<Vec<crate::store::entity::user::Model>> {
        let policies = policies_of(&self.db, session).await?;
        let eligible =
            eligible_for_all(&self.db, &session.organization_id, &policies.iter().collect::<Vec<_>>()).await?;
        let mut approvers = queries::users::enabled_of_organization(&self.db, &session.organization_id).await?;
        approvers.retain(|user| user.id != session.user_id && eligible.contains(&user.id));
        Ok(approvers)
    }

    /// Whether `user_id` (an admin or not) may decide on `session` under the policies of all
    /// its resources.
    async fn may_decide(
        &self,
        db: &impl ConnectionTrait,
        user_id: &str,
        admin: bool,
        session: &crate::store::entity::session::Model,
    ) -> Result<bool> {
        let policies = policies_of(db, session).await?;
        let groups = queries::identity_providers::groups_of_user(db, user_id).await?;
        // A session whose policies were all lifted since: the admins decide.
        Ok(match crate::domain::CombinedApproval::of(&policies) {
            Some(combined) => combined.may_approve(user_id, &groups, admin),
            None => admin,
        })
    }

    /// The sessions waiting for approval that `caller` may decide and has not, oldest first.
    pub async fn inbox(&self, caller: &super::Caller) -> Result<Vec<crate::store::entity::session::Model>> {
        let mut inbox = Vec::new();
        for session in queries::sessions::awaiting_approval(&self.db, &caller.organization_id).await? {
            if session.user_id == caller.user_id {
                continue;
            }
            let decided = session.approval_state()?.is_some_and(|approval| approval.decided_by(&caller.user_id));
            let admin = caller.role == crate::domain::Role::Admin;
            if !decided && self.may_decide(&self.db, &caller.user_id, admin, &session).await? {
                inbox.push(session);
            }
        }
        Ok(inbox)
    }

    /// Records `caller`'s verdict on session `id`. A denial ends the request; the approval that
    /// completes the count opens the session, its duration counted from now. An approver who
    /// decided already changes nothing.
    pub async fn decide(&self, caller: &super::Caller, id: &str, verdict: Verdict, reason: &str) -> Result<()> {
        use crate::domain::{Decision, EndedReason, SessionStatus, now};
        use crate::error::{Error, StoreResultExt};
        use crate::pb::v1::ErrorReason;
        let reason = reason.trim();
        if reason.chars().count() > 1000 {
            return Err(Error::invalid("reason", "must be at most 1000 characters"));
        }
        if verdict == Verdict::Deny && reason.is_empty() {
            return Err(Error::invalid("reason", "is required to deny: the requester is told it"));
        }
        let txn = crate::store::begin(&self.db).await?;
        let session = queries::sessions::get_for_update(&txn, id).await.or_not_found("session")?;
        if session.organization_id != caller.organization_id {
            return Err(Error::not_found("session"));
        }
        if session.user_id == caller.user_id {
            return Err(Error::PermissionDenied {
                reason: ErrorReason::PermissionMissing,
                message: "a requester never approves or denies their own request".into(),
            });
        }
        if !self.may_decide(&txn, &caller.user_id, caller.role == crate::domain::Role::Admin, &session).await? {
            return Err(Error::PermissionDenied {
                reason: ErrorReason::PermissionMissing,
                message: "the approval policy of this session's resources does not name you as an approver".into(),
            });
        }
        let Some(mut approval) =
            session.approval_state()?.filter(|_| session.status == SessionStatus::AwaitingApproval)
        else {
            return Err(Error::failed_precondition(
                ErrorReason::InvalidState,
                format!("the session is {}, not waiting for approval", session.status),
            ));
        };
        if approval.decided_by(&caller.user_id) {
            return Ok(());
        }
        let at = now();
        approval.decisions.push(Decision {
            user_id: caller.user_id.clone(),
            user_email: caller.email.clone(),
            approve: verdict == Verdict::Approve,
            reason: reason.to_owned(),
            decided_at: at,
        });
        let opens = verdict == Verdict::Approve && approval.approvals() >= approval.required;
        if opens {
            approval.approved_at = Some(at);
        }
        let json = serde_json::to_string(&approval).map_err(Error::internal)?;
        queries::sessions::save_approval(&txn, id, json, session.revision + 1, at).await?;
        let actor = caller.actor();
        crate::store::audit::AuditRecord::new("approval.decided", "session", id)
            .detail("approve", verdict == Verdict::Approve)
            .detail("reason", reason)
            .detail("approvals", approval.approvals())
            .detail("required", approval.required)
            .write(&txn, &actor)
            .await?;
        if verdict == Verdict::Deny {
            crate::engine::transitions::end(&txn, id, EndedReason::Denied, &actor, Some("denied")).await?;
        } else if opens {
            // What was asked for, within what the requester may hold now (a demotion while the
            // request waited lowers it).
            let requester = queries::users::get_any(&txn, &session.user_id).await?;
            let organization = queries::organizations::get(&txn, &session.organization_id).await?;
            let max_minutes = self.sessions.max_hours_within(requester.role, organization.tier).saturating_mul(60);
            let minutes = approval.requested_minutes.min(max_minutes);
            let expires_at = at + chrono::TimeDelta::minutes(i64::from(minutes));
            let heartbeat_due_at =
                session.heartbeat_seconds.map(|seconds| at + chrono::TimeDelta::seconds(i64::from(seconds)));
            crate::engine::transitions::approve(&txn, id, expires_at, heartbeat_due_at, &actor).await?;
        }
        crate::store::commit(txn).await?;
        self.engine.announce(&[id.to_owned()]).await;
        // The requester and the other approvers hear of it.
        let approved = verdict == Verdict::Approve;
        let requester = queries::users::get_any(&self.db, &session.user_id).await?;
        let decided = |to: &str, whose: Option<&str>| {
            super::mail::Mail::approval_decided(to, whose, &caller.email, id, approved, opens, reason)
        };
        let mut mails = vec![decided(&requester.email, None)];
        for approver in self.approvers_of(&session).await?.into_iter().filter(|user| user.id != caller.user_id) {
            mails.push(decided(&approver.email, Some(&requester.email)));
        }
        self.send_later(mails);
        Ok(())
    }
}

/// The approval policies of the resources `session` holds rules on, each resource once.
async fn policies_of(
    db: &impl ConnectionTrait,
    session: &crate::store::entity::session::Model,
) -> Result<Vec<ApprovalPolicy>> {
    let mut resource_ids: Vec<String> =
        queries::sessions::rules_of(db, &session.id).await?.into_iter().map(|rule| rule.resource_id).collect();
    resource_ids.sort_unstable();
    resource_ids.dedup();
    let mut policies = Vec::new();
    for resource_id in &resource_ids {
        let resource = queries::resources::get(db, &session.organization_id, resource_id).await?;
        policies.extend(resource.approval_policy()?);
    }
    Ok(policies)
}
