//! Host agents as the organization's admins manage them: each is created with a credential,
//! shown once and kept only as a hash, and may be revoked for good.

use super::Caller;
use super::credentials::{KeyKind, generate_api_key};
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
}
