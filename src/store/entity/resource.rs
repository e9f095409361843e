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
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
