use crate::domain::Tier;
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "organizations")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub name: String,
    pub tier: Tier,
    pub suspended: bool,
    pub allow_private_addresses: bool,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    /// `domain::CloudScopes` as JSON.
    pub cloud_scopes: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
