use crate::domain::ResourceIpStatus;
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "resource_ips")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub session_id: String,
    pub organization_id: String,
    pub resource_id: String,
    pub resource_name: String,
    pub ip_version: i16,
    pub ip_address: String,
    pub status: ResourceIpStatus,
    pub provider_rule_id: Option<String>,
    pub applied_at: Option<DateTimeUtc>,
    pub removed_at: Option<DateTimeUtc>,
    pub error_message: Option<String>,
    pub attempts: i32,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<DateTimeUtc>,
    pub next_attempt_at: DateTimeUtc,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    /// The rule taking this one's place (the session changed address): once it is applied,
    /// this one is removed.
    pub replaced_by: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
