use super::StoredProvider;
use crate::domain::ProviderKind;
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "resources")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub organization_id: String,
    pub name: String,
    pub description: String,
    pub provider_kind: ProviderKind,
    pub provider_config: StoredProvider,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    /// When the reconciler last compared this firewall with its rules (on any replica).
    pub reconciled_at: Option<DateTimeUtc>,
    /// When a periodic check last read this firewall (on any replica).
    pub checked_at: Option<DateTimeUtc>,
    /// What that check found: a `CheckStatus` name without its prefix (`OK`, `ACCESS_DENIED`, …).
    pub check_status: Option<String>,
    pub check_message: Option<String>,
    /// JSON of its `ApprovalPolicy`; None: sessions open it at once.
    pub approval: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl Model {
    /// Who must approve a session on this resource, if anyone.
    pub fn approval_policy(&self) -> crate::store::StoreResult<Option<crate::domain::ApprovalPolicy>> {
        self.approval
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|err| crate::store::StoreError::Corrupt(format!("resource {} approval: {err}", self.id)))
    }
}

/// The stored form of an approval policy.
pub fn approval_json(policy: Option<&crate::domain::ApprovalPolicy>) -> Option<String> {
    policy.and_then(|policy| serde_json::to_string(policy).ok())
}
