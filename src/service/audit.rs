//! The audit trail: what happened, who did it, to what.

use super::Caller;
use crate::domain::{Permission, new_id, now};
use crate::error::Result;
use crate::store::entity::audit_event;
use crate::store::queries::audit_events::{self, AuditFilter};
use crate::store::{Page, PageRequest, StoreResult};
use sea_orm::{ConnectionTrait, DatabaseConnection};
use std::collections::BTreeMap;

/// An event about to be recorded.
pub struct AuditRecord {
    event_type: &'static str,
    target_type: &'static str,
    target_id: String,
    details: BTreeMap<String, String>,
}

impl AuditRecord {
    pub fn new(event_type: &'static str, target_type: &'static str, target_id: impl Into<String>) -> AuditRecord {
        AuditRecord { event_type, target_type, target_id: target_id.into(), details: BTreeMap::new() }
    }

    /// Adds a fact about the event (for example the new role).
    pub fn detail(mut self, key: &str, value: impl ToString) -> AuditRecord {
        self.details.insert(key.to_owned(), value.to_string());
        self
    }

    /// Writes the event as done by `caller` (usually inside the action's transaction).
    pub async fn write(self, db: &impl ConnectionTrait, caller: &Caller) -> StoreResult<()> {
        self.write_as(db, &caller.organization_id, Some(caller)).await
    }

    /// Writes the event for `organization_id`, by `caller` or by the server itself.
    pub async fn write_as(
        self,
        db: &impl ConnectionTrait,
        organization_id: &str,
        caller: Option<&Caller>,
    ) -> StoreResult<()> {
        let details = serde_json::to_string(&self.details).unwrap_or_else(|_| "{}".to_owned());
        audit_events::insert(
            db,
            audit_event::Model {
                id: new_id(),
                organization_id: organization_id.to_owned(),
                time: now(),
                event_type: self.event_type.to_owned(),
                actor_id: caller.map(|c| c.user_id.clone()),
                actor_api_key_id: caller.and_then(|c| c.api_key_id.clone()),
                target_type: self.target_type.to_owned(),
                target_id: self.target_id,
                details,
                client_ip: caller.and_then(|c| c.peer_ip).map(|ip| ip.to_string()),
            },
        )
        .await?;
        Ok(())
    }
}

/// Reads the audit trail.
#[derive(Clone)]
pub struct AuditLog {
    db: DatabaseConnection,
}

impl AuditLog {
    pub fn new(db: DatabaseConnection) -> AuditLog {
        AuditLog { db }
    }

    /// Events of the caller's organization, newest first (needs `audit:read`).
    pub async fn list(
        &self,
        caller: &Caller,
        filter: &AuditFilter,
        page: &PageRequest,
    ) -> Result<Page<audit_event::Model>> {
        caller.require(Permission::AuditRead)?;
        Ok(audit_events::list(&self.db, &caller.organization_id, filter, page).await?)
    }
}

/// Parses the stored details of an event.
pub fn details_of(event: &audit_event::Model) -> BTreeMap<String, String> {
    serde_json::from_str(&event.details).unwrap_or_default()
}
