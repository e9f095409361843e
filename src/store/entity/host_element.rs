use sea_orm::entity::prelude::*;

/// One address an agent reported its firewall allows to one host resource.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "host_elements")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub agent_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub resource_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub ip_address: String,
    pub expires_at: DateTimeUtc,
    /// The sessions holding the address, separated by spaces.
    pub session_ids: String,
    pub reported_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl Model {
    pub fn holds_session(&self, session_id: &str) -> bool {
        self.session_ids.split_whitespace().any(|id| id == session_id)
    }
}
