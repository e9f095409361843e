use super::auth::caller;
use super::convert::{agent_to_pb, page_request, require_id};
use crate::pb::v1::agent_service_server::AgentService;
use crate::pb::v1::*;
use crate::service::AgentManager;
use tonic::{Request, Response, Status};

pub struct AgentApi(pub AgentManager);

#[tonic::async_trait]
impl AgentService for AgentApi {
    async fn create_agent(
        &self,
        request: Request<CreateAgentRequest>,
    ) -> Result<Response<CreateAgentResponse>, Status> {
        let (agent, credential) = self.0.create(caller(&request)?, &request.get_ref().name).await?;
        Ok(Response::new(CreateAgentResponse { agent: Some(agent_to_pb(agent)), credential }))
    }

    async fn list_agents(&self, request: Request<ListAgentsRequest>) -> Result<Response<ListAgentsResponse>, Status> {
        let message = request.get_ref();
        let page = page_request(message.page_size, &message.page_token)?;
        let agents = self.0.list(caller(&request)?, &page).await?;
        Ok(Response::new(ListAgentsResponse {
            agents: agents.items.into_iter().map(agent_to_pb).collect(),
            next_page_token: agents.next_page_token,
        }))
    }

    async fn revoke_agent(
        &self,
        request: Request<RevokeAgentRequest>,
    ) -> Result<Response<RevokeAgentResponse>, Status> {
        let id = require_id("id", &request.get_ref().id)?;
        let agent = self.0.revoke(caller(&request)?, id).await?;
        Ok(Response::new(RevokeAgentResponse { agent: Some(agent_to_pb(agent)) }))
    }
}
