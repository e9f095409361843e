use sea_orm::entity::prelude::*;

/// A user as an identity provider knows them: its subject, the groups it last reported, and the
/// refresh token (sealed) the periodic check redeems to learn whether they still belong.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "user_identities")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub organization_id: String,
    pub user_id: String,
    pub identity_provider_id: String,
    pub subject: String,
    /// JSON list of the provider's groups at the last login or check.
    pub groups: String,
    /// The role the provider's mappings last gave the user (a role's name), which losing the
    /// groups takes back; None: the user's role is an admin's doing.
    pub mapped_role: Option<String>,
    pub refresh_token_sealed: Option<String>,
    /// When the provider last answered for this user (a login or a check).
    pub checked_at: DateTimeUtc,
    /// When checks began failing without an answer about the user (network, 5xx, a refused
    /// client); None while they succeed.
    pub check_failing_since: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl Model {
    /// The groups the provider last reported (none when the stored list cannot be read).
    pub fn groups(&self) -> Vec<String> {
        serde_json::from_str(&self.groups).unwrap_or_default()
    }
}
