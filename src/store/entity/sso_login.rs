use sea_orm::entity::prelude::*;

/// A login between StartSsoLogin and its delivery to the waiting client. Only hashes of the
/// poll secret and the state are kept; the PKCE verifier is sealed.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "sso_logins")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub organization_id: String,
    pub identity_provider_id: String,
    pub poll_secret_hash: String,
    pub state_hash: String,
    pub nonce: String,
    pub pkce_verifier_sealed: String,
    pub client_ip: String,
    pub user_agent: String,
    pub created_at: DateTimeUtc,
    pub expires_at: DateTimeUtc,
    /// When the provider sent the browser back (a state works once).
    pub returned_at: Option<DateTimeUtc>,
    /// The login session made when the callback succeeded.
    pub login_session_id: Option<String>,
    /// Why the login was refused (an `ErrorReason` name) and what the user is told.
    pub failure_reason: Option<String>,
    pub failure_message: Option<String>,
    /// When the waiting client received the outcome (it is delivered once).
    pub delivered_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
