use crate::domain::Role;
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "users")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub organization_id: String,
    pub email: String,
    pub full_name: String,
    pub role: Role,
    pub disabled: bool,
    /// Failed logins lock the user until then.
    pub locked_until: Option<DateTimeUtc>,
    /// Lockouts since the last successful login: each one lasts twice the one before.
    pub lockouts: i32,
    pub failed_login_count: i32,
    pub password_hash: Option<String>,
    /// Whether the user is mailed before a session of theirs expires.
    pub expiry_emails: bool,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

impl Model {
    /// A new, enabled member of `organization_id` created at `at`: no password, never locked,
    /// mailed before their sessions expire.
    pub fn new_member(organization_id: &str, email: String, full_name: String, role: Role, at: DateTimeUtc) -> Model {
        Model {
            id: crate::domain::new_id(),
            organization_id: organization_id.to_owned(),
            email,
            full_name,
            role,
            disabled: false,
            locked_until: None,
            lockouts: 0,
            failed_login_count: 0,
            password_hash: None,
            expiry_emails: true,
            created_at: at,
            updated_at: at,
        }
    }

    /// Whether failed logins keep the user out at `at`.
    pub fn is_locked(&self, at: DateTimeUtc) -> bool {
        self.locked_until.is_some_and(|until| until > at)
    }
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
