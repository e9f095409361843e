//! ApprovalService: approvers decide on sessions waiting for approval.

use super::auth::caller;
use super::convert::{page_request, require_id, session_to_pb};
use crate::pb::v1::approval_service_server::ApprovalService;
use crate::pb::v1::*;
use crate::service::{ApprovalManager, Caller, SessionManager, Verdict};
use tonic::{Request, Response, Status};

pub struct ApprovalApi {
    pub approvals: ApprovalManager,
    pub sessions: SessionManager,
}

impl ApprovalApi {
    /// Records the caller's `verdict` on session `id`; answers the session as it is now.
    async fn decide(&self, caller: &Caller, id: &str, reason: &str, verdict: Verdict) -> Result<Session, Status> {
        let id = require_id("id", id)?;
        self.approvals.decide(caller, id, verdict, reason).await?;
        Ok(session_to_pb(&*self.sessions.get(caller, id).await?))
    }
}

#[tonic::async_trait]
impl ApprovalService for ApprovalApi {
    async fn list_approval_requests(
        &self,
        request: Request<ListApprovalRequestsRequest>,
    ) -> Result<Response<ListApprovalRequestsResponse>, Status> {
        let caller = caller(&request)?;
        let message = request.get_ref();
        // Validated like every list's, though an inbox is short enough to answer in one page.
        page_request(message.page_size, &message.page_token)?;
        let mut sessions = Vec::new();
        for waiting in self.approvals.inbox(caller).await? {
            sessions.push(session_to_pb(&*self.sessions.get(caller, &waiting.id).await?));
        }
        Ok(Response::new(ListApprovalRequestsResponse { sessions, next_page_token: String::new() }))
    }

    async fn approve_session(
        &self,
        request: Request<ApproveSessionRequest>,
    ) -> Result<Response<ApproveSessionResponse>, Status> {
        let message = request.get_ref();
        let session = self.decide(caller(&request)?, &message.id, &message.reason, Verdict::Approve).await?;
        Ok(Response::new(ApproveSessionResponse { session: Some(session) }))
    }

    async fn deny_session(
        &self,
        request: Request<DenySessionRequest>,
    ) -> Result<Response<DenySessionResponse>, Status> {
        let message = request.get_ref();
        let session = self.decide(caller(&request)?, &message.id, &message.reason, Verdict::Deny).await?;
        Ok(Response::new(DenySessionResponse { session: Some(session) }))
    }
}
