//! Sessions and their rules: SessionService and ResourceIpService.

use super::*;

fn session_status_to_pb(status: domain::SessionStatus) -> pb::SessionStatus {
    use domain::SessionStatus as S;
    match status {
        S::AwaitingApproval => pb::SessionStatus::AwaitingApproval,
        S::Pending => pb::SessionStatus::Pending,
        S::Active => pb::SessionStatus::Active,
        S::Partial => pb::SessionStatus::Partial,
        S::Failed => pb::SessionStatus::Failed,
        S::Expiring => pb::SessionStatus::Expiring,
        S::Expired => pb::SessionStatus::Expired,
        S::Cancelled => pb::SessionStatus::Cancelled,
    }
}

/// A session status from a request filter; `None` for UNSPECIFIED or unknown numbers.
pub fn session_status_from_pb(value: i32) -> Option<domain::SessionStatus> {
    use domain::SessionStatus as S;
    Some(match pb::SessionStatus::try_from(value).ok()? {
        pb::SessionStatus::Unspecified => return None,
        pb::SessionStatus::AwaitingApproval => S::AwaitingApproval,
        pb::SessionStatus::Pending => S::Pending,
        pb::SessionStatus::Active => S::Active,
        pb::SessionStatus::Partial => S::Partial,
        pb::SessionStatus::Failed => S::Failed,
        pb::SessionStatus::Expiring => S::Expiring,
        pb::SessionStatus::Expired => S::Expired,
        pb::SessionStatus::Cancelled => S::Cancelled,
    })
}

fn resource_ip_status_to_pb(status: domain::ResourceIpStatus) -> pb::ResourceIpStatus {
    use domain::ResourceIpStatus as R;
    match status {
        R::AwaitingApproval => pb::ResourceIpStatus::AwaitingApproval,
        R::Pending => pb::ResourceIpStatus::Pending,
        R::Applied => pb::ResourceIpStatus::Applied,
        R::Failed => pb::ResourceIpStatus::Failed,
        R::Removing => pb::ResourceIpStatus::Removing,
        R::Removed => pb::ResourceIpStatus::Removed,
    }
}

/// A rule status from a request filter; `None` for UNSPECIFIED or unknown numbers.
pub fn resource_ip_status_from_pb(value: i32) -> Option<domain::ResourceIpStatus> {
    use domain::ResourceIpStatus as R;
    Some(match pb::ResourceIpStatus::try_from(value).ok()? {
        pb::ResourceIpStatus::Unspecified => return None,
        pb::ResourceIpStatus::AwaitingApproval => R::AwaitingApproval,
        pb::ResourceIpStatus::Pending => R::Pending,
        pb::ResourceIpStatus::Applied => R::Applied,
        pb::ResourceIpStatus::Failed => R::Failed,
        pb::ResourceIpStatus::Removing => R::Removing,
        pb::ResourceIpStatus::Removed => R::Removed,
    })
}

fn ended_reason_to_pb(reason: Option<domain::EndedReason>) -> pb::EndedReason {
    match reason {
        Some(domain::EndedReason::Expired) => pb::EndedReason::Expired,
        Some(domain::EndedReason::Manual) => pb::EndedReason::Manual,
        Some(domain::EndedReason::Admin) => pb::EndedReason::Admin,
        Some(domain::EndedReason::ClientGone) => pb::EndedReason::ClientGone,
        Some(domain::EndedReason::Denied) => pb::EndedReason::Denied,
        Some(domain::EndedReason::ApprovalTimeout) => pb::EndedReason::ApprovalTimeout,
        None => pb::EndedReason::Unspecified,
    }
}

pub fn resource_ip_to_pb(model: &resource_ip::Model) -> pb::ResourceIp {
    pb::ResourceIp {
        id: model.id.clone(),
        session_id: model.session_id.clone(),
        resource_id: model.resource_id.clone(),
        resource_name: model.resource_name.clone(),
        ip_version: u32::try_from(model.ip_version).unwrap_or_default(),
        ip_address: model.ip_address.clone(),
        status: resource_ip_status_to_pb(model.status).into(),
        provider_rule_id: model.provider_rule_id.clone().unwrap_or_default(),
        applied_at: model.applied_at.map(timestamp),
        removed_at: model.removed_at.map(timestamp),
        error_message: model.error_message.clone().unwrap_or_default(),
        created_at: Some(timestamp(model.created_at)),
    }
}

pub fn session_to_pb(record: &SessionRecord) -> pb::Session {
    let session = &record.session;
    pb::Session {
        id: session.id.clone(),
        user_id: session.user_id.clone(),
        user_name: record.user_name.clone(),
        user_email: record.user_email.clone(),
        ipv4_address: session.ipv4_address.clone().unwrap_or_default(),
        ipv6_address: session.ipv6_address.clone().unwrap_or_default(),
        status: session_status_to_pb(session.status).into(),
        started_at: Some(timestamp(session.started_at)),
        expires_at: Some(timestamp(session.expires_at)),
        ended_at: session.ended_at.map(timestamp),
        ended_reason: ended_reason_to_pb(session.ended_reason).into(),
        resource_ips: record.rules.iter().map(resource_ip_to_pb).collect(),
        created_at: Some(timestamp(session.created_at)),
        revision: revision_to_pb(session.revision),
        organization_id: session.organization_id.clone(),
        heartbeat_seconds: session.heartbeat_seconds.and_then(|seconds| u32::try_from(seconds).ok()),
        // A stored approval that cannot be read is left out rather than failing every read.
        approval: session.approval_state().ok().flatten().map(|approval| pb::SessionApproval {
            required: approval.required,
            decisions: approval
                .decisions
                .into_iter()
                .map(|decision| pb::ApprovalDecision {
                    user_id: decision.user_id,
                    user_email: decision.user_email,
                    approve: decision.approve,
                    reason: decision.reason,
                    decided_at: Some(timestamp(decision.decided_at)),
                })
                .collect(),
            deadline: Some(timestamp(approval.deadline)),
            approved_at: approval.approved_at.map(timestamp),
        }),
        justification: session.justification.clone().unwrap_or_default(),
        ticket: session.ticket.clone().unwrap_or_default(),
    }
}
