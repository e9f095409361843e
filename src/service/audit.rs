//! The audit trail: what happened, who did it, to what.

use super::Caller;
use crate::error::Result;
use crate::store::entity::audit_event;
use crate::store::queries::audit_events::{self, AuditFilter};
use crate::store::{Page, PageRequest};
use sea_orm::DatabaseConnection;
use std::collections::BTreeMap;

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
        Ok(audit_events::list(&self.db, &caller.organization_id, filter, page).await?)
    }
}

/// Parses the stored details of an event.
pub fn details_of(event: &audit_event::Model) -> BTreeMap<String, String> {
    serde_json::from_str(&event.details).unwrap_or_default()
}
