//! Use-cases. Each manager checks who may do what, validates input, runs its queries in one
//! transaction with the audit event, and returns store models; the gRPC layer only translates.

pub mod audit;
pub mod auth;
mod bootstrap;
pub mod credentials;
pub mod organizations;
pub mod resources;
pub mod users;

pub use audit::{AuditLog, AuditRecord};
pub use auth::{Authenticator, Caller, Credential};
pub use bootstrap::{Bootstrap, initialize};
pub use organizations::{OrganizationChanges, OrganizationManager};
pub use resources::{CheckOutcome, NewResource, ResourceChanges, ResourceManager};
pub use users::{NewUser, UserChanges, UserManager};

use crate::config::Config;
use crate::error::Result;
use sea_orm::DatabaseConnection;

/// Every use-case, sharing one connection pool.
#[derive(Clone)]
pub struct Services {
    pub db: DatabaseConnection,
    pub auth: Authenticator,
    pub organizations: OrganizationManager,
    pub users: UserManager,
    pub resources: ResourceManager,
    pub audit: AuditLog,
}

impl Services {
    pub async fn new(db: DatabaseConnection, config: &Config) -> Result<Services> {
        Ok(Services {
            auth: Authenticator::new(db.clone(), &config.auth).await?,
            organizations: OrganizationManager::new(db.clone()),
            users: UserManager::new(db.clone()),
            resources: ResourceManager::new(db.clone()),
            audit: AuditLog::new(db.clone()),
            db,
        })
    }
}
