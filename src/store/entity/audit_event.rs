use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_events")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub organization_id: String,
    pub time: DateTimeUtc,
    pub event_type: String,
    pub actor_id: Option<String>,
    pub actor_api_key_id: Option<String>,
    pub target_type: String,
    pub target_id: String,
    pub details: String,
    pub client_ip: Option<String>,
    /// When the webhook dispatcher turned the event into deliveries; None until then.
    pub dispatched_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
