//! Writing the audit trail: every use-case and the engine record what they changed, in the
//! transaction that changed it.

use crate::domain::{Actor, new_id, now};
use crate::store::StoreResult;
use crate::store::entity::audit_event;
use crate::store::queries::audit_events;
use sea_orm::ConnectionTrait;
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

    /// Writes the event as done by `actor` (usually inside the action's transaction).
    pub async fn write(self, db: &impl ConnectionTrait, actor: &Actor) -> StoreResult<()> {
        audit_events::insert(db, self.into_model(actor)).await?;
        Ok(())
    }

    /// Writes several events in one statement.
    pub async fn write_all(db: &impl ConnectionTrait, events: Vec<(AuditRecord, Actor)>) -> StoreResult<()> {
        audit_events::insert_all(db, events.into_iter().map(|(record, actor)| record.into_model(&actor)).collect())
            .await
    }

    fn into_model(self, actor: &Actor) -> audit_event::Model {
        let details = serde_json::to_string(&self.details).unwrap_or_else(|_| "{}".to_owned());
        audit_event::Model {
            id: new_id(),
            organization_id: actor.organization_id.clone(),
            time: now(),
            event_type: self.event_type.to_owned(),
            actor_id: actor.user_id.clone(),
            actor_api_key_id: actor.api_key_id.clone(),
            target_type: self.target_type.to_owned(),
            target_id: self.target_id,
            details,
            client_ip: actor.client_ip.map(|ip| ip.to_string()),
            dispatched_at: None,
        }
    }
}
