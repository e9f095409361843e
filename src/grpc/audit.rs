use super::auth::caller;
use super::convert::{audit_event_to_pb, page_request, parse_timestamp};
use crate::pb::v1::audit_service_server::AuditService;
use crate::pb::v1::{ListAuditEventsRequest, ListAuditEventsResponse};
use crate::service::AuditLog;
use crate::store::queries::audit_events::AuditFilter;
use tonic::{Request, Response, Status};

pub struct AuditApi(pub AuditLog);

#[tonic::async_trait]
impl AuditService for AuditApi {
    async fn list_audit_events(
        &self,
        request: Request<ListAuditEventsRequest>,
    ) -> Result<Response<ListAuditEventsResponse>, Status> {
        let message = request.get_ref();
        let page = page_request(message.page_size, &message.page_token)?;
        let filter = AuditFilter {
            types: message.types.clone(),
            actor_id: Some(message.actor_id.clone()).filter(|id| !id.is_empty()),
            start_time: message.start_time.as_ref().map(|t| parse_timestamp("start_time", t)).transpose()?,
            end_time: message.end_time.as_ref().map(|t| parse_timestamp("end_time", t)).transpose()?,
        };
        let events = self.0.list(caller(&request)?, &filter, &page).await?;
        Ok(Response::new(ListAuditEventsResponse {
            audit_events: events.items.into_iter().map(audit_event_to_pb).collect(),
            next_page_token: events.next_page_token,
        }))
    }
}
