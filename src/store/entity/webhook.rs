use sea_orm::entity::prelude::*;

/// Where an organization's events are posted, and with which signing secret (sealed under the
/// server's webhook key, never stored in the clear).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "webhooks")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub organization_id: String,
    pub url: String,
    /// JSON list of event types; empty means every type.
    pub event_types: String,
    pub description: String,
    pub secret_sealed: String,
    /// The secret before the last rotation, still signing beside the new one until it expires.
    pub previous_secret_sealed: Option<String>,
    pub previous_secret_expires_at: Option<DateTimeUtc>,
    pub disabled_at: Option<DateTimeUtc>,
    pub disabled_reason: Option<String>,
    /// When deliveries began failing without a success since; None while they succeed.
    pub failing_since: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    /// Who last set where it posts and what (the user, and the key if one was used): its events
    /// are those the owner may still read, checked at delivery (None: unknown, so none).
    pub owner_user_id: Option<String>,
    pub owner_api_key_id: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
