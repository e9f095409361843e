//! Use-cases. Each manager checks who may do what, validates input, runs its queries in one
//! transaction with the audit event, and returns store models; the gRPC layer only translates.

pub mod agents;
pub mod api_keys;
pub mod approvals;
pub mod audit;
pub mod auth;
mod bootstrap;
mod caller_cache;
pub mod changes;
pub mod credentials;
pub mod identity_providers;
pub mod logins;
pub mod mail;
pub mod notifications;
pub mod organizations;
mod rate_limit;
pub mod resources;
pub mod sessions;
pub mod sso;
pub mod users;
pub mod webhooks;

pub use agents::AgentManager;
pub use api_keys::{ApiKeyManager, NewApiKey};
pub use approvals::{ApprovalManager, Verdict};
pub use audit::AuditLog;
pub use auth::{AgentCaller, Authenticator, Caller, Credential};
pub use bootstrap::{
    Bootstrap, create_operator_key, initialize, retire_token_key, revoke_operator_key, rotate_token_key, set_password,
};
pub use caller_cache::{CallerCache, Whose};
pub use identity_providers::{IdentityProviderManager, ProviderChanges, SsoSetup};
pub use logins::{LoginClient, LoginManager};
pub use organizations::{NewOrganization, OrganizationChanges, OrganizationManager};
pub use resources::{NewResource, ResourceChanges, ResourceManager};
pub use sessions::{SessionManager, StartRequest};
pub use sso::{SsoLogins, SsoOutcome, SsoTarget};
pub use users::{CurrentUser, NewUser, UserChanges, UserManager};
pub use webhooks::{NewWebhook, WebhookChanges, WebhookManager};

use crate::config::{Config, ConfigError};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::provider::Providers;
use sea_orm::DatabaseConnection;

/// Every use-case, sharing one connection pool.
#[derive(Clone)]
pub struct Services {
    pub db: DatabaseConnection,
    /// Where hot-path reads go (the writer itself on PostgreSQL).
    pub reader: DatabaseConnection,
    pub auth: Authenticator,
    pub organizations: OrganizationManager,
    pub users: UserManager,
    pub resources: ResourceManager,
    pub audit: AuditLog,
    pub api_keys: ApiKeyManager,
    pub agents: AgentManager,
    pub logins: LoginManager,
    pub sessions: SessionManager,
    pub engine: Engine,
    pub callers: CallerCache,
    pub webhooks: WebhookManager,
    pub approvals: ApprovalManager,
    pub identity_providers: IdentityProviderManager,
    pub sso: SsoLogins,
    pub expiry_warnings: notifications::ExpiryWarnings,
    /// What the webhook dispatcher, started with the server, works with.
    pub webhook_setup: crate::webhook::WebhookSetup,
}

/// Why the services cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("webhooks: {0}")]
    Webhooks(#[from] crate::webhook::SetupError),
    #[error("single sign-on: {0}")]
    Sso(#[from] reqwest::Error),
    #[error(transparent)]
    Service(#[from] Error),
}

impl Services {
    /// Every use-case on one connection pool.
    pub async fn new(db: DatabaseConnection, config: &Config, providers: Providers) -> Result<Services, StartError> {
        Services::with_reader(db.clone(), db, config, providers).await
    }

    /// Every use-case, with hot-path reads on `reader` (see [`crate::store::connect_reader`]).
    pub async fn with_reader(
        db: DatabaseConnection,
        reader: DatabaseConnection,
        config: &Config,
        providers: Providers,
    ) -> Result<Services, StartError> {
        // A Config built in code (tests, embedders) gets the checks `Config::load` makes.
        config.validate()?;
        if config.engine.sweep_interval_secs.is_some() {
            tracing::warn!("engine.sweep_interval_secs is deprecated; set engine.reconcile_interval_secs instead");
        }
        let providers = providers.with_hosts(crate::provider::host::HostFirewalls::new(db.clone()));
        let engine = Engine::new(db.clone(), reader.clone(), providers.clone(), config.engine.clone());
        let callers = CallerCache::new(config.auth.caller_cache_secs.get());
        let sealing = config.sealing_key()?;
        let auth =
            Authenticator::new(db.clone(), reader.clone(), &config.auth, callers.clone(), sealing.clone()).await?;
        let mailer = mail::mailer(&config.mail)?;
        let logins = LoginManager::new(
            db.clone(),
            auth.token_keys().clone(),
            mailer.clone(),
            config.login.clone(),
            config.auth.access_token_minutes.time_delta(),
            callers.clone(),
        );
        let webhook_setup = crate::webhook::WebhookSetup::from_config(&config.webhooks, sealing.clone())?;
        let sso_setup = SsoSetup {
            http: crate::sso::http::IdpHttp::new(
                config.sso.allowed_private_issuers.clone(),
                config.sso.http_timeout_secs.get(),
            )?,
            key: sealing,
            callback_url: config.server.sso_callback(),
            config: config.sso.clone(),
        };
        let identity_providers = IdentityProviderManager::new(db.clone(), engine.clone(), sso_setup);
        let approvals = ApprovalManager::new(db.clone(), engine.clone(), mailer.clone(), config.sessions.clone());
        Ok(Services {
            sso: SsoLogins::new(
                db.clone(),
                identity_providers.clone(),
                logins.clone(),
                callers.clone(),
                engine.clone(),
                config.sessions.clone(),
            ),
            identity_providers,
            approvals: approvals.clone(),
            webhooks: WebhookManager::new(
                db.clone(),
                webhook_setup.clone(),
                config.limits.max_webhooks_per_organization.as_u32(),
            ),
            expiry_warnings: notifications::ExpiryWarnings::new(db.clone(), mailer.clone(), &config.notifications),
            webhook_setup,
            sessions: SessionManager::new(
                db.clone(),
                reader.clone(),
                engine.clone(),
                config.sessions.clone(),
                approvals.clone(),
            ),
            reader,
            engine: engine.clone(),
            auth,
            logins,
            organizations: OrganizationManager::new(db.clone(), callers.clone(), engine.clone()),
            users: UserManager::new(db.clone(), callers.clone(), engine.clone(), config.sessions.clone()),
            agents: AgentManager::new(db.clone()),
            api_keys: ApiKeyManager::new(db.clone(), callers.clone(), config.limits.max_api_keys_per_user.as_u32()),
            callers,
            resources: ResourceManager::new(db.clone(), providers.clone(), engine.clone()),
            audit: AuditLog::new(db.clone()),
            db,
        })
    }
}
