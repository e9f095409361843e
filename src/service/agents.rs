//! Host agents: as the organization's admins manage them (each created with a credential, shown
//! once and kept only as a hash, and revocable for good), and as they connect: what each one's
//! host should allow, and what it reports its firewall holds.

use super::credentials::{KeyKind, generate_api_key};
use super::{AgentCaller, Caller};
use crate::domain::host::HostResourceState;
use crate::domain::{Violations, new_id, now, validate_name};
use crate::error::{Result, StoreResultExt};
use crate::store::audit::AuditRecord;
use crate::store::entity::agent;
use crate::store::{self, Page, PageRequest, queries};
use sea_orm::DatabaseConnection;

#[derive(Clone)]
pub struct AgentManager {
    db: DatabaseConnection,
}

impl AgentManager {
    pub fn new(db: DatabaseConnection) -> AgentManager {
        AgentManager { db }
    }

    /// Creates an agent of the caller's organization; answers it with its credential, shown
    /// this once.
    pub async fn create(&self, caller: &Caller, name: &str) -> Result<(agent::Model, String)> {
        let mut violations = Violations::default();
        let Some(name) = violations.check("name", validate_name(name)) else { return Err(violations.into()) };
        let credential = generate_api_key(KeyKind::Agent);
        let txn = store::begin(&self.db).await?;
        let created = queries::agents::insert(
            &txn,
            agent::Model {
                id: new_id(),
                organization_id: caller.organization_id.clone(),
                name,
                prefix: credential.lookup,
                secret_hash: credential.secret_hash,
                created_at: now(),
                revoked_at: None,
                hostname: String::new(),
                version: String::new(),
                last_seen_at: None,
                report_error: String::new(),
            },
        )
        .await
        .or_already_exists("an agent with this name already exists")?;
        AuditRecord::new("agent.created", "agent", &created.id)
            .detail("name", &created.name)
            .write(&txn, &caller.actor())
            .await?;
        store::commit(txn).await?;
        Ok((created, credential.secret))
    }

    /// The organization's agents, newest first.
    pub async fn list(&self, caller: &Caller, page: &PageRequest) -> Result<Page<agent::Model>> {
        Ok(queries::agents::list(&self.db, &caller.organization_id, page).await?)
    }

    /// Revokes an agent's credential; revoking a revoked agent changes nothing.
    pub async fn revoke(&self, caller: &Caller, id: &str) -> Result<agent::Model> {
        let txn = store::begin(&self.db).await?;
        let agent = queries::agents::get(&txn, &caller.organization_id, id).await.or_not_found("agent")?;
        if queries::agents::revoke(&txn, id, now()).await? {
            AuditRecord::new("agent.revoked", "agent", id)
                .detail("name", &agent.name)
                .write(&txn, &caller.actor())
                .await?;
        }
        let revoked = queries::agents::get(&txn, &caller.organization_id, id).await?;
        store::commit(txn).await?;
        Ok(revoked)
    }

    /// Notes an agent's hello: its host's name and its version.
    pub async fn hello(&self, agent: &AgentCaller, hostname: &str, version: &str) -> Result<()> {
        let clip = |text: &str| text.chars().take(200).collect::<String>();
        let hello = (clip(hostname), clip(version));
        Ok(queries::hosts::seen(&self.db, &agent.agent_id, Some((&hello.0, &hello.1)), now()).await?)
    }

    /// Notes that a connected agent is still there.
    pub async fn heartbeat(&self, agent: &AgentCaller) -> Result<()> {
        Ok(queries::hosts::seen(&self.db, &agent.agent_id, None, now()).await?)
    }

    /// Whether the agent's credential still works (a revoked or deleted agent is disconnected).
    /// A database that does not answer is an error, not a revocation: the agent gives up for good
    /// on a revocation, but connects again after an error.
    pub async fn still_allowed(&self, agent: &AgentCaller) -> Result<bool> {
        match queries::agents::get(&self.db, &agent.organization_id, &agent.agent_id).await {
            Ok(current) => Ok(current.revoked_at.is_none()),
            Err(crate::store::StoreError::NotFound) => Ok(false),
            Err(err) => Err(err.into()),
        }
    }

    /// What the agent's host should allow now.
    pub async fn desired(&self, agent: &AgentCaller) -> Result<Vec<HostResourceState>> {
        Ok(queries::hosts::desired(&self.db, &agent.organization_id, &agent.agent_id).await?)
    }

    /// Stores what the agent reports its firewall holds; resources it does not serve are left out.
    pub async fn report(&self, agent: &AgentCaller, resources: Vec<HostResourceState>, error: &str) -> Result<()> {
        let txn = store::begin(&self.db).await?;
        let served: Vec<String> = queries::hosts::resources_of(&txn, &agent.organization_id, &agent.agent_id)
            .await?
            .into_iter()
            .map(|(model, _)| model.id)
            .collect();
        let resources: Vec<HostResourceState> =
            resources.into_iter().filter(|resource| served.contains(&resource.resource_id)).collect();
        let error: String = error.chars().take(1_000).collect();
        queries::hosts::record_report(&txn, &agent.agent_id, &resources, &error, now()).await?;
        store::commit(txn).await?;
        Ok(())
    }
}
