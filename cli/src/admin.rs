//! Administration where it saves real typing: resources and users by name or email instead of
//! copied ids.

use crate::connect::Credential;
use crate::errors::Failure;
use crate::output::Output;
use crate::pb::v1::agent_service_client::AgentServiceClient;
use crate::pb::v1::resource_service_client::ResourceServiceClient;
use crate::pb::v1::user_service_client::UserServiceClient;
use crate::pb::v1::*;
use crate::{AgentsCommand, ResourcesCommand, UsersCommand};
use tonic::transport::Channel;

pub async fn resources(
    channel: Channel,
    credential: Credential,
    command: ResourcesCommand,
    out: Output,
) -> Result<u8, Failure> {
    let mut resources = ResourceServiceClient::with_interceptor(channel.clone(), credential.clone());
    let assign = matches!(command, ResourcesCommand::Assign { .. });
    match command {
        ResourcesCommand::List => {
            let all = all_resources(&mut resources).await?;
            if out.json() {
                let listed = ListResourcesResponse { resources: all, next_page_token: String::new() };
                out.print_json(&listed, "portcullis.v1.ListResourcesResponse")?;
                return Ok(0);
            }
            if out.quiet {
                all.iter().for_each(|resource| println!("{}", resource.id));
                return Ok(0);
            }
            println!("{:<38} {:<24} {:<30} LAST CHECK", "ID", "NAME", "PROVIDER");
            for resource in all {
                let provider = match resource.provider {
                    Some(resource::Provider::Memory(_)) => "memory",
                    Some(resource::Provider::AwsSecurityGroup(_)) => "aws_security_group",
                    Some(resource::Provider::GcpFirewall(_)) => "gcp_firewall",
                    Some(resource::Provider::AzureNetworkSecurityGroup(_)) => "azure_network_security_group",
                    Some(resource::Provider::HostFirewall(_)) => "host_firewall",
                    None => "none",
                };
                // The periodic check's finding: OK, ACCESS_DENIED, … or - before the first.
                let check = resource
                    .last_check
                    .as_ref()
                    .map_or("-", |check| check.status().as_str_name().strip_prefix("CHECK_STATUS_").unwrap_or("-"));
                println!("{:<38} {:<24} {provider:<30} {check}", resource.id, resource.name);
            }
        }
        ResourcesCommand::Assign { resource, user } | ResourcesCommand::Unassign { resource, user } => {
            let resource_id = resource_id(&mut resources, &resource).await?;
            let mut users = UserServiceClient::with_interceptor(channel, credential);
            let user_id = user_id(&mut users, &user).await?;
            if assign {
                let request = AssignResourceRequest { resource_id, user_id };
                resources.assign_resource(request).await?;
                println!("{resource} assigned to {user}");
            } else {
                let request = UnassignResourceRequest { resource_id, user_id };
                resources.unassign_resource(request).await?;
                println!("{resource} unassigned from {user}");
            }
        }
    }
    Ok(0)
}

pub async fn users(
    channel: Channel,
    credential: Credential,
    command: UsersCommand,
    out: Output,
) -> Result<u8, Failure> {
    let mut users = UserServiceClient::with_interceptor(channel, credential);
    match command {
        UsersCommand::Create { email, name, admin } => {
            let role = if admin { Role::Admin } else { Role::User };
            let user = User { email, full_name: name.unwrap_or_default(), role: role.into(), ..Default::default() };
            let created = users.create_user(CreateUserRequest { user: Some(user) }).await?;
            let created = created.into_inner();
            if out.json() {
                out.print_json(&created, "portcullis.v1.CreateUserResponse")?;
            } else {
                println!("{}", created.user.unwrap_or_default().id);
            }
        }
        UsersCommand::List => {
            let all = all_users(&mut users).await?;
            if out.json() {
                let listed = ListUsersResponse { users: all, next_page_token: String::new() };
                out.print_json(&listed, "portcullis.v1.ListUsersResponse")?;
                return Ok(0);
            }
            if out.quiet {
                all.iter().for_each(|user| println!("{}", user.id));
                return Ok(0);
            }
            println!("{:<38} {:<32} {:<6} STATE", "ID", "EMAIL", "ROLE");
            for user in all {
                let state = if user.disabled {
                    "disabled"
                } else if user.locked {
                    "locked"
                } else {
                    "active"
                };
                let role = user.role().as_str_name().trim_start_matches("ROLE_");
                println!("{:<38} {:<32} {role:<6} {state}", user.id, user.email);
            }
        }
    }
    Ok(0)
}

pub async fn agents(
    channel: Channel,
    credential: Credential,
    command: AgentsCommand,
    out: Output,
) -> Result<u8, Failure> {
    let mut agents = AgentServiceClient::with_interceptor(channel, credential);
    match command {
        AgentsCommand::Create { name } => {
            let created = agents.create_agent(CreateAgentRequest { name }).await?.into_inner();
            if out.json() {
                out.print_json(&created, "portcullis.v1.CreateAgentResponse")?;
            } else {
                println!("{}", created.credential);
            }
        }
        AgentsCommand::List => {
            let all = all_agents(&mut agents).await?;
            if out.json() {
                let listed = ListAgentsResponse { agents: all, next_page_token: String::new() };
                out.print_json(&listed, "portcullis.v1.ListAgentsResponse")?;
                return Ok(0);
            }
            if out.quiet {
                all.iter().for_each(|agent| println!("{}", agent.id));
                return Ok(0);
            }
            println!("{:<38} {:<24} {:<26} HOST", "ID", "NAME", "STATE");
            for agent in all {
                let state = if agent.revoked_at.is_some() {
                    "revoked".to_owned()
                } else if agent.connected {
                    "connected".to_owned()
                } else {
                    match &agent.last_seen_at {
                        Some(seen) => format!("offline since {seen}"),
                        None => "never connected".to_owned(),
                    }
                };
                println!("{:<38} {:<24} {state:<26} {}", agent.id, agent.name, agent.hostname);
            }
        }
        AgentsCommand::Revoke { agent } => {
            let found = all_agents(&mut agents).await?.into_iter().find(|a| a.id == agent || a.name == agent);
            let id = found.map(|found| found.id).ok_or_else(|| format!("no agent {agent}"))?;
            let revoked = agents.revoke_agent(RevokeAgentRequest { id }).await?.into_inner();
            if out.json() {
                out.print_json(&revoked, "portcullis.v1.RevokeAgentResponse")?;
            } else {
                println!("{agent} revoked");
            }
        }
    }
    Ok(0)
}

async fn all_agents(
    client: &mut AgentServiceClient<tonic::codegen::InterceptedService<Channel, Credential>>,
) -> Result<Vec<Agent>, Failure> {
    every_page(async |page_token| {
        let page = client.list_agents(ListAgentsRequest { page_size: 1000, page_token }).await?.into_inner();
        Ok((page.agents, page.next_page_token))
    })
    .await
}

/// Every item of a list, `page` answering one page (its items and the next token) for a token.
async fn every_page<T>(
    mut page: impl AsyncFnMut(String) -> Result<(Vec<T>, String), Failure>,
) -> Result<Vec<T>, Failure> {
    let (mut all, mut token) = (Vec::new(), String::new());
    loop {
        let (items, next) = page(token).await?;
        all.extend(items);
        if next.is_empty() {
            return Ok(all);
        }
        token = next;
    }
}

type Resources = ResourceServiceClient<tonic::codegen::InterceptedService<Channel, Credential>>;
type Users = UserServiceClient<tonic::codegen::InterceptedService<Channel, Credential>>;

async fn all_resources(client: &mut Resources) -> Result<Vec<Resource>, Failure> {
    every_page(async |page_token| {
        let request = ListResourcesRequest { page_size: 1000, page_token, ..Default::default() };
        let page = client.list_resources(request).await?.into_inner();
        Ok((page.resources, page.next_page_token))
    })
    .await
}

async fn all_users(client: &mut Users) -> Result<Vec<User>, Failure> {
    every_page(async |page_token| {
        let page = client.list_users(ListUsersRequest { page_size: 1000, page_token }).await?.into_inner();
        Ok((page.users, page.next_page_token))
    })
    .await
}

/// A resource named by id or by name.
async fn resource_id(client: &mut Resources, named: &str) -> Result<String, Failure> {
    let found = all_resources(client).await?.into_iter().find(|r| r.id == named || r.name == named);
    found.map(|resource| resource.id).ok_or_else(|| format!("no resource {named}").into())
}

/// A user named by id or by email.
async fn user_id(client: &mut Users, named: &str) -> Result<String, Failure> {
    let wanted = named.to_lowercase();
    let found = all_users(client).await?.into_iter().find(|u| u.id == named || u.email == wanted);
    found.map(|user| user.id).ok_or_else(|| format!("no user {named}").into())
}
