use crate::domain::{EndedReason, SessionStatus};
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "sessions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub organization_id: String,
    pub user_id: String,
    pub ipv4_address: Option<String>,
    pub ipv6_address: Option<String>,
    pub status: SessionStatus,
    pub started_at: DateTimeUtc,
    pub expires_at: DateTimeUtc,
    pub ended_at: Option<DateTimeUtc>,
    pub ended_reason: Option<EndedReason>,
    pub revision: i64,
    pub live_ipv4_key: Option<String>,
    pub live_ipv6_key: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    /// While set, the session ends once no watch of its owner has been open this long.
    pub heartbeat_seconds: Option<i32>,
    /// When the session ends for want of a watch (pushed out while one is open).
    pub heartbeat_due_at: Option<DateTimeUtc>,
    /// The end (`expires_at`) the expiry warning was sent for; None before any.
    pub expiry_warned_for: Option<DateTimeUtc>,
    /// JSON of its `SessionApproval`, when a resource of it needs approval.
    pub approval: Option<String>,
    pub justification: Option<String>,
    pub ticket: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl Model {
    /// Where the session's approval stands, if it needs one.
    pub fn approval_state(&self) -> crate::store::StoreResult<Option<crate::domain::SessionApproval>> {
        self.approval
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|err| crate::store::StoreError::Corrupt(format!("session {} approval: {err}", self.id)))
    }
}
