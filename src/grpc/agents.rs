use super::auth::{agent_caller, caller};
use super::convert::{agent_to_pb, host_resource_from_pb, host_resource_to_pb, page_request, require_id};
use crate::domain::host::HostResourceState;
use crate::error::Error;
use crate::pb::v1::agent_service_server::AgentService;
use crate::pb::v1::*;
use crate::service::{AgentCaller, AgentManager};
use std::collections::BTreeMap;
use std::pin::Pin;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// How often a connected agent's desired state is worked out again (and its credential checked).
const DESIRED_EVERY: Duration = Duration::from_millis(500);
/// How often a connected agent is noted as still there, reports or not.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(10);

pub struct AgentApi {
    pub agents: AgentManager,
    /// Turns true when the server shuts down: streams end so connections can drain.
    pub shutdown: watch::Receiver<bool>,
}

type ConnectStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<ConnectResponse, Status>> + Send>>;

#[tonic::async_trait]
impl AgentService for AgentApi {
    async fn create_agent(
        &self,
        request: Request<CreateAgentRequest>,
    ) -> Result<Response<CreateAgentResponse>, Status> {
        let (agent, credential) = self.agents.create(caller(&request)?, &request.get_ref().name).await?;
        Ok(Response::new(CreateAgentResponse { agent: Some(agent_to_pb(agent)), credential }))
    }

    async fn list_agents(&self, request: Request<ListAgentsRequest>) -> Result<Response<ListAgentsResponse>, Status> {
        let message = request.get_ref();
        let page = page_request(message.page_size, &message.page_token)?;
        let agents = self.agents.list(caller(&request)?, &page).await?;
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
        let agent = self.agents.revoke(caller(&request)?, id).await?;
        Ok(Response::new(RevokeAgentResponse { agent: Some(agent_to_pb(agent)) }))
    }

    type ConnectStream = ConnectStream;

    async fn connect(&self, request: Request<Streaming<ConnectRequest>>) -> Result<Response<ConnectStream>, Status> {
        let agent = agent_caller(&request)?;
        let mut inbound = request.into_inner();
        let Some(ConnectRequest { message: Some(connect_request::Message::Hello(hello)) }) = inbound.message().await?
        else {
            return Err(Error::invalid("hello", "the first message must be a hello").into());
        };
        self.agents.hello(&agent, &hello.hostname, &hello.version).await?;
        tracing::info!(agent_id = %agent.agent_id, hostname = %hello.hostname, "agent connected");
        let (sender, receiver) = mpsc::channel(8);
        let stream = AgentStream { agents: self.agents.clone(), agent, sender, shutdown: self.shutdown.clone() };
        tokio::spawn(stream.run(inbound));
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }
}

/// One connected agent: sends its desired state whenever it changes and stores its reports.
struct AgentStream {
    agents: AgentManager,
    agent: AgentCaller,
    sender: mpsc::Sender<Result<ConnectResponse, Status>>,
    shutdown: watch::Receiver<bool>,
}

impl AgentStream {
    async fn run(mut self, inbound: Streaming<ConnectRequest>) {
        let agent_id = self.agent.agent_id.clone();
        let ended = self.serve(inbound).await;
        if let Err(status) = ended {
            tracing::info!(agent_id = %agent_id, reason = %status.message(), "agent stream ended");
            let _ = self.sender.send(Err(status)).await;
        } else {
            tracing::info!(agent_id = %agent_id, "agent disconnected");
        }
    }

    async fn serve(&mut self, mut inbound: Streaming<ConnectRequest>) -> Result<(), Status> {
        let mut sent: Option<BTreeMap<String, HostResourceState>> = None;
        let mut generation = 0u64;
        let mut desired_tick = tokio::time::interval(DESIRED_EVERY);
        let mut heartbeat_tick = tokio::time::interval(HEARTBEAT_EVERY);
        loop {
            tokio::select! {
                _ = desired_tick.tick() => {
                    if !self.agents.still_allowed(&self.agent).await? {
                        return Err(Status::unauthenticated("the agent's credential was revoked"));
                    }
                    let desired: BTreeMap<String, HostResourceState> = self
                        .agents
                        .desired(&self.agent)
                        .await?
                        .into_iter()
                        .map(|resource| (resource.resource_id.clone(), resource))
                        .collect();
                    if sent.as_ref() == Some(&desired) {
                        continue;
                    }
                    generation += 1;
                    let response = changes(generation, sent.as_ref(), &desired);
                    if self.sender.send(Ok(response)).await.is_err() {
                        return Ok(());
                    }
                    sent = Some(desired);
                }
                _ = heartbeat_tick.tick() => self.agents.heartbeat(&self.agent).await?,
                message = inbound.message() => match message {
                    Ok(Some(ConnectRequest { message: Some(connect_request::Message::Report(report)) })) => {
                        let resources = report
                            .resources
                            .into_iter()
                            .map(|resource| host_resource_from_pb(resource, "report.resources"))
                            .collect::<Result<Vec<_>, _>>()?;
                        self.agents.report(&self.agent, resources, &report.error).await?;
                    }
                    Ok(Some(_)) => return Err(Error::invalid("report", "only reports follow the hello").into()),
                    // The agent closed its side, or went away.
                    Ok(None) | Err(_) => return Ok(()),
                },
                () = self.sender.closed() => return Ok(()),
                changed = self.shutdown.changed() => {
                    if changed.is_err() || *self.shutdown.borrow() {
                        return Err(Status::unavailable("the server is shutting down; connect again"));
                    }
                }
            }
        }
    }
}

/// The first state in full, then the resources that changed (whole) and those that went.
fn changes(
    generation: u64,
    sent: Option<&BTreeMap<String, HostResourceState>>,
    desired: &BTreeMap<String, HostResourceState>,
) -> ConnectResponse {
    let Some(sent) = sent else {
        return ConnectResponse {
            generation,
            full: true,
            resources: desired.values().cloned().map(host_resource_to_pb).collect(),
            removed_resource_ids: Vec::new(),
        };
    };
    ConnectResponse {
        generation,
        full: false,
        resources: desired
            .iter()
            .filter(|(id, state)| sent.get(*id) != Some(*state))
            .map(|(_, state)| host_resource_to_pb(state.clone()))
            .collect(),
        removed_resource_ids: sent.keys().filter(|id| !desired.contains_key(*id)).cloned().collect(),
    }
}
