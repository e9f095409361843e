use super::auth::caller;
use super::convert::{enum_filter, page_request, require_id, resource_ip_status_from_pb, resource_ip_to_pb};
use crate::error::Error;
use crate::pb::v1::resource_ip_service_server::ResourceIpService;
use crate::pb::v1::*;
use crate::service::SessionManager;
use crate::store::queries::sessions::RuleFilter;
use tonic::{Request, Response, Status};

pub struct ResourceIpApi(pub SessionManager);

#[tonic::async_trait]
impl ResourceIpService for ResourceIpApi {
    async fn get_resource_ip(
        &self,
        request: Request<GetResourceIpRequest>,
    ) -> Result<Response<GetResourceIpResponse>, Status> {
        let id = require_id("id", &request.get_ref().id)?;
        let rule = self.0.get_rule(caller(&request)?, id).await?;
        Ok(Response::new(GetResourceIpResponse { resource_ip: Some(resource_ip_to_pb(&rule)) }))
    }

    async fn list_resource_ips(
        &self,
        request: Request<ListResourceIpsRequest>,
    ) -> Result<Response<ListResourceIpsResponse>, Status> {
        let message = request.get_ref();
        let page = page_request(message.page_size, &message.page_token)?;
        let optional_id = |field: &str, value: &str| -> Result<Option<String>, Error> {
            if value.is_empty() { Ok(None) } else { require_id(field, value).map(|id| Some(id.to_owned())) }
        };
        let statuses = enum_filter("statuses", &message.statuses, resource_ip_status_from_pb)?;
        let filter = RuleFilter {
            session_id: optional_id("session_id", &message.session_id)?,
            resource_id: optional_id("resource_id", &message.resource_id)?,
            statuses,
        };
        let rules = self.0.list_rules(caller(&request)?, filter, &page).await?;
        Ok(Response::new(ListResourceIpsResponse {
            resource_ips: rules.items.iter().map(resource_ip_to_pb).collect(),
            next_page_token: rules.next_page_token,
        }))
    }

    async fn retry_resource_ip(
        &self,
        request: Request<RetryResourceIpRequest>,
    ) -> Result<Response<RetryResourceIpResponse>, Status> {
        let id = require_id("id", &request.get_ref().id)?;
        let rule = self.0.retry_rule(caller(&request)?, id).await?;
        Ok(Response::new(RetryResourceIpResponse { resource_ip: Some(resource_ip_to_pb(&rule)) }))
    }
}
