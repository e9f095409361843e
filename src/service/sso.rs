//! Login through an organization's identity provider, server-mediated so it works from a
//! browser, an SSH session or a headless box alike: StartSsoLogin answers the URL to open and a
//! poll secret; the provider sends the browser back to `/sso/callback`, where this server (the
//! only OIDC client, holding the client secret) exchanges the code and checks the ID token;
//! WaitSsoLogin hands the waiting client its token.
//!
//! What the provider says about the user is applied at every login and every refresh check
//! ([`SsoLogins::grant`]): the role is the highest their groups map to, the resources their
//! groups map to are assigned (and taken back when the groups go), and assignments an admin
//! made are never touched. A refused refresh disables the user through the same path as
//! DisableUser: their sessions end and their rules are removed.

use super::credentials::{hash_secret, secret_matches};
use super::identity_providers::IdentityProviderManager;
use super::logins::{LoginClient, LoginManager, VerifiedLogin};
use super::rate_limit::RateLimiter;
use super::users::follow_rights;
use super::{CallerCache, Whose};
use crate::config::SessionConfig;
use crate::domain::{Actor, IdentityProviderSpec, Role, new_id, normalize_email, now, rate_limit_key};
use crate::engine::{Engine, transitions};
use crate::error::{Error, Result};
use crate::pb::v1::ErrorReason;
use crate::sso::oidc::{Identity, Refreshed, SsoError};
use crate::store::audit::AuditRecord;
use crate::store::entity::identity_provider::json_list;
use crate::store::entity::{identity_provider, resource_assignment, sso_login, user, user_identity};
use crate::store::queries::{self, identity_providers, sso_logins};
use crate::store::{self, StoreError};
use chrono::{DateTime, TimeDelta, Utc};
use rand::RngCore;
use sea_orm::{ActiveValue::Set, DatabaseConnection, DatabaseTransaction, IntoActiveModel};
use std::time::Duration;

/// Whom a StartSsoLogin is for.
#[derive(Debug, Clone)]
pub enum SsoTarget {
    /// The organization's provider (its first, or the one named).
    Organization { organization_id: String, identity_provider_id: Option<String> },
    /// The provider whose allowed domains hold the address's domain.
    Email(String),
}

/// What StartSsoLogin answers.
#[derive(Debug, Clone)]
pub struct StartedSso {
    pub sso_login_id: String,
    pub poll_secret: String,
    pub authorization_url: String,
    pub expires_at: DateTime<Utc>,
}

/// How a login in flight stands, as WaitSsoLogin reports it.
#[derive(Debug)]
pub enum SsoOutcome {
    /// The browser has not come back yet.
    Waiting,
    Done(Box<VerifiedLogin>),
}

const HOUR: Duration = Duration::from_secs(3600);
/// StartSsoLogin calls per client network per hour.
const STARTS_PER_IP_PER_HOUR: u32 = 60;
/// Identities checked in one pass of the refresh check.
const CHECK_BATCH: u64 = 100;

/// A refusal the person logging in is shown (on the callback page and by WaitSsoLogin).
#[derive(Debug, Clone)]
pub struct Refusal {
    pub reason: ErrorReason,
    pub message: String,
}

impl Refusal {
    fn new(reason: ErrorReason, message: impl Into<String>) -> Refusal {
        Refusal { reason, message: message.into() }
    }
}

fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

#[derive(Clone)]
pub struct SsoLogins {
    db: DatabaseConnection,
    providers: IdentityProviderManager,
    logins: LoginManager,
    callers: CallerCache,
    engine: Engine,
    sessions: SessionConfig,
    per_ip: RateLimiter,
}

impl SsoLogins {
    pub fn new(
        db: DatabaseConnection,
        providers: IdentityProviderManager,
        logins: LoginManager,
        callers: CallerCache,
        engine: Engine,
        sessions: SessionConfig,
    ) -> SsoLogins {
        SsoLogins {
            per_ip: RateLimiter::new(db.clone(), "sso-ip", STARTS_PER_IP_PER_HOUR, HOUR),
            db,
            providers,
            logins,
            callers,
            engine,
            sessions,
        }
    }

    /// Starts a login: a URL to open and a secret to poll with. An address no provider claims
    /// is answered like any other (a URL that leads nowhere, a login that never completes), so
    /// the answer tells nothing about who has an account.
    pub async fn start(&self, target: SsoTarget, client: &LoginClient) -> Result<StartedSso> {
        if let Err(retry_after) = self.per_ip.hit(&rate_limit_key(client.ip)).await? {
            return Err(Error::ResourceExhausted {
                message: "too many logins started; try again later".into(),
                retry_after,
            });
        }
        let setup = self.providers.setup();
        let callback = setup.callback_url()?.to_owned();
        let key = setup.key()?;
        let provider = self.provider_for(&target).await?;
        let (id, poll_secret, at) = (new_id(), random_secret(), now());
        let expires_at = at + setup.config.login_minutes.time_delta();
        let Some(provider) = provider else {
            // A state no login has: the callback answers it as unknown.
            let authorization_url = format!("{callback}?state={}", random_secret());
            return Ok(StartedSso { sso_login_id: id, poll_secret, authorization_url, expires_at });
        };
        let spec = provider.spec()?;
        let client_of_provider = self.providers.client(&provider).await?;
        let authorization = client_of_provider.authorize(&spec.scopes);
        let sealed = key
            .seal(&id, authorization.pkce_verifier.as_bytes())
            .map_err(|err| Error::internal(anyhow::Error::msg(err)))?;
        sso_logins::insert(
            &self.db,
            sso_login::Model {
                id: id.clone(),
                organization_id: provider.organization_id.clone(),
                identity_provider_id: provider.id.clone(),
                poll_secret_hash: hash_secret(&poll_secret),
                state_hash: hash_secret(&authorization.state),
                nonce: authorization.nonce,
                pkce_verifier_sealed: sealed,
                client_ip: client.ip.to_string(),
                user_agent: client.user_agent.clone(),
                created_at: at,
                expires_at,
                returned_at: None,
                login_session_id: None,
                failure_reason: None,
                failure_message: None,
                delivered_at: None,
            },
        )
        .await?;
        Ok(StartedSso { sso_login_id: id, poll_secret, authorization_url: authorization.url, expires_at })
    }

    async fn provider_for(&self, target: &SsoTarget) -> Result<Option<identity_provider::Model>> {
        match target {
            SsoTarget::Organization { organization_id, identity_provider_id } => {
                let providers = identity_providers::of_organizations(&self.db, &[organization_id.as_str()]).await?;
                let chosen = match identity_provider_id {
                    Some(id) => providers.into_iter().find(|provider| &provider.id == id),
                    None => providers.into_iter().next(),
                };
                chosen.map(Some).ok_or_else(|| {
                    Error::failed_precondition(
                        ErrorReason::NotConfigured,
                        "the organization has no such identity provider; log in with an emailed code",
                    )
                })
            }
            SsoTarget::Email(email) => {
                let email = normalize_email(email).map_err(|message| Error::invalid("email", message))?;
                let domain = email.rsplit_once('@').map(|(_, domain)| domain.to_owned()).unwrap_or_default();
                let claiming = identity_providers::claiming_domain(&self.db, &domain).await?;
                let mut matching = Vec::new();
                for provider in claiming {
                    if provider.spec()?.allowed_email_domains.contains(&domain) {
                        matching.push(provider);
                    }
                }
                if matching.len() > 1 {
                    return Err(Error::invalid(
                        "email",
                        "several organizations log in people of this domain: name the organization instead",
                    ));
                }
                Ok(matching.pop())
            }
        }
    }

    /// The provider's callback: `state` names the login, `code` is exchanged for the user's
    /// tokens (or `error` says why the provider refused). Each state works once.
    pub async fn callback(
        &self,
        state: &str,
        code: Option<&str>,
        error: Option<&str>,
    ) -> std::result::Result<(), Refusal> {
        let login = self.take_state(state).await?;
        let outcome = self.finish(&login, code, error).await;
        let txn = store::begin(&self.db).await.map_err(internal_refusal)?;
        let mut active = login.clone().into_active_model();
        match &outcome {
            Ok(session_id) => active.login_session_id = Set(Some(session_id.clone())),
            Err(refusal) => {
                active.failure_reason = Set(Some(refusal.reason.as_str_name().to_owned()));
                active.failure_message = Set(Some(refusal.message.clone()));
            }
        }
        sso_logins::update(&txn, active).await.map_err(internal_refusal)?;
        store::commit(txn).await.map_err(internal_refusal)?;
        outcome.map(drop)
    }

    /// Marks the login `state` names as returned, in its own transaction (before the code is
    /// exchanged over the network): a replayed callback finds it used.
    async fn take_state(&self, state: &str) -> std::result::Result<sso_login::Model, Refusal> {
        let unknown =
            || Refusal::new(ErrorReason::VerificationFailed, "this login link is unknown or was already used");
        let txn = store::begin(&self.db).await.map_err(internal_refusal)?;
        let login = match sso_logins::by_state_for_update(&txn, &hash_secret(state)).await {
            Ok(login) => login,
            Err(StoreError::NotFound) => return Err(unknown()),
            Err(err) => return Err(internal_refusal(err)),
        };
        if login.returned_at.is_some() {
            return Err(unknown());
        }
        let at = now();
        if login.expires_at <= at {
            return Err(Refusal::new(ErrorReason::VerificationFailed, "this login expired; start it again"));
        }
        let mut active = login.clone().into_active_model();
        active.returned_at = Set(Some(at));
        let login = sso_logins::update(&txn, active).await.map_err(internal_refusal)?;
        store::commit(txn).await.map_err(internal_refusal)?;
        Ok(login)
    }

    /// Exchanges the code and logs the user in; answers the new login session's id.
    async fn finish(
        &self,
        login: &sso_login::Model,
        code: Option<&str>,
        error: Option<&str>,
    ) -> std::result::Result<String, Refusal> {
        if let Some(error) = error {
            return Err(Refusal::new(
                ErrorReason::VerificationFailed,
                format!("the identity provider did not log you in: {error}"),
            ));
        }
        let code = code.filter(|code| !code.is_empty()).ok_or_else(|| {
            Refusal::new(ErrorReason::VerificationFailed, "the identity provider sent no authorization code")
        })?;
        let provider =
            identity_providers::get_any(&self.db, &login.identity_provider_id).await.map_err(internal_refusal)?;
        let client = self.providers.client(&provider).await.map_err(|err| {
            Refusal::new(ErrorReason::Unavailable, format!("the identity provider cannot be used now: {err}"))
        })?;
        let key =
            self.providers.setup().key().map_err(|err| Refusal::new(ErrorReason::NotConfigured, err.to_string()))?;
        let verifier = key.open_text(&login.id, &login.pkce_verifier_sealed).map_err(internal_refusal)?;
        let identity = client.finish(code, &verifier, &login.nonce).await.map_err(|err| match err {
            SsoError::Provider(_) => Refusal::new(ErrorReason::Unavailable, err.to_string()),
            SsoError::Refused(_) | SsoError::Misconfigured(_) => {
                Refusal::new(ErrorReason::VerificationFailed, err.to_string())
            }
        })?;
        let client_of_login = LoginClient {
            ip: login.client_ip.parse().unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into()),
            user_agent: login.user_agent.clone(),
        };
        self.log_in(&provider, identity, &client_of_login).await
    }

    /// Finds, links or creates the user `identity` names, applies their groups, and opens a
    /// login session; answers its id.
    async fn log_in(
        &self,
        provider: &identity_provider::Model,
        identity: Identity,
        client: &LoginClient,
    ) -> std::result::Result<String, Refusal> {
        let spec = provider.spec().map_err(internal_refusal)?;
        let denied = |message: String| Refusal::new(ErrorReason::SsoAccessDenied, message);
        let email = normalize_email(&identity.email).map_err(|err| denied(format!("the provider's email: {err}")))?;
        if !spec.allows_email(&email) {
            return Err(denied(format!(
                "{email} is not in a domain this organization logs in through {} ({})",
                spec.display_name,
                spec.allowed_email_domains.join(", ")
            )));
        }
        let actor = Actor::server(&provider.organization_id);
        let txn = store::begin(&self.db).await.map_err(internal_refusal)?;
        let linked = identity_providers::identity_by_subject(&txn, &provider.id, &identity.subject)
            .await
            .map_err(internal_refusal)?;
        let (user, identity_row, provisioned) = match linked {
            Some(row) => {
                let user = queries::users::get_any(&txn, &row.user_id).await.map_err(internal_refusal)?;
                (user, row, false)
            }
            None => {
                let existing = queries::users::find_member(&txn, &email, Some(&provider.organization_id))
                    .await
                    .map_err(internal_refusal)?;
                let (user, provisioned) = match existing {
                    queries::users::ByEmail::One(user) => (user, false),
                    _ if !spec.jit_users => {
                        return Err(denied(format!(
                            "{email} has no account in this organization, and {} creates none (jit_users is off); ask \
                             an admin to add you",
                            spec.display_name
                        )));
                    }
                    _ if spec.role_for(&identity.groups).is_none() => {
                        return Err(denied(format!(
                            "none of your groups at {} ({}) is mapped to a role here; ask an admin to map one",
                            spec.display_name,
                            if identity.groups.is_empty() { "none".to_owned() } else { identity.groups.join(", ") }
                        )));
                    }
                    _ => (self.provision(&txn, provider, &email, identity.name.as_deref(), &actor).await?, true),
                };
                let at = now();
                let row = identity_providers::insert_identity(
                    &txn,
                    user_identity::Model {
                        id: new_id(),
                        organization_id: provider.organization_id.clone(),
                        user_id: user.id.clone(),
                        identity_provider_id: provider.id.clone(),
                        subject: identity.subject.clone(),
                        groups: "[]".to_owned(),
                        mapped_role: None,
                        refresh_token_sealed: None,
                        checked_at: at,
                        check_failing_since: None,
                        created_at: at,
                        updated_at: at,
                    },
                )
                .await
                .map_err(|err| match err {
                    StoreError::AlreadyExists(_) => denied(format!(
                        "{email} is already linked to another account of {}; ask an admin",
                        spec.display_name
                    )),
                    other => internal_refusal(other),
                })?;
                (user, row, provisioned)
            }
        };
        if user.disabled {
            return Err(denied(format!("the account of {email} is disabled; ask an admin")));
        }
        let key =
            self.providers.setup().key().map_err(|err| Refusal::new(ErrorReason::NotConfigured, err.to_string()))?;
        let sealed = identity
            .refresh_token
            .as_deref()
            .map(|token| key.seal(&identity_row.id, token.as_bytes()))
            .transpose()
            .map_err(internal_refusal)?;
        let (user, changed) = self
            .grant(&txn, provider, &spec, user, identity_row, &identity.groups, sealed.map(Some), &actor)
            .await
            .map_err(|err| Refusal::new(ErrorReason::Internal, err.to_string()))?;
        let session = queries::login_sessions::insert(&txn, self.logins.new_session(&user, client, "sso"))
            .await
            .map_err(internal_refusal)?;
        if provisioned {
            AuditRecord::new("user.provisioned", "user", &user.id)
                .detail("email", &user.email)
                .detail("identity_provider_id", &provider.id)
                .detail("role", user.role)
                .write(&txn, &actor)
                .await
                .map_err(internal_refusal)?;
        }
        AuditRecord::new("login.sso", "login_session", &session.id)
            .detail("user_id", &user.id)
            .detail("identity_provider_id", &provider.id)
            .detail("groups", json_list(&identity.groups))
            .detail("ip", client.ip)
            .write(&txn, &actor)
            .await
            .map_err(internal_refusal)?;
        self.callers.commit_change(txn, Whose::User(user.id.clone())).await.map_err(internal_refusal)?;
        self.engine.cache().forget_user(&user.id);
        self.engine.announce(&changed).await;
        Ok(session.id)
    }

    /// Creates the user a first login through `provider` names (jit_users).
    async fn provision(
        &self,
        txn: &DatabaseTransaction,
        provider: &identity_provider::Model,
        email: &str,
        name: Option<&str>,
        actor: &Actor,
    ) -> std::result::Result<user::Model, Refusal> {
        let at = now();
        let full_name = name
            .and_then(|name| crate::domain::validate_full_name(name).ok())
            .unwrap_or_else(|| email.split('@').next().unwrap_or(email).to_owned());
        let created = queries::users::insert(
            txn,
            user::Model::new_member(&provider.organization_id, email.to_owned(), full_name, Role::User, at),
        )
        .await
        .map_err(internal_refusal)?;
        AuditRecord::new("user.created", "user", &created.id)
            .detail("email", &created.email)
            .detail("role", created.role)
            .write(txn, actor)
            .await
            .map_err(internal_refusal)?;
        Ok(created)
    }

    /// Applies what `provider` says of `user` now: their `groups` decide their role and mapped
    /// resources. Resources their groups no longer map are unassigned (their live sessions lose
    /// those rules); assignments an admin made stay. `refresh_token`: `Some` replaces the kept
    /// one. Answers the user as changed and the sessions changed.
    #[allow(clippy::too_many_arguments)]
    async fn grant(
        &self,
        txn: &DatabaseTransaction,
        provider: &identity_provider::Model,
        spec: &IdentityProviderSpec,
        user: user::Model,
        identity: user_identity::Model,
        groups: &[String],
        refresh_token: Option<Option<String>>,
        actor: &Actor,
    ) -> Result<(user::Model, Vec<String>)> {
        let at = now();
        let mapped = spec.role_for(groups);
        let previously_mapped = identity.mapped_role.as_deref().and_then(|role| role.parse::<Role>().ok());
        let role = match (mapped, previously_mapped) {
            (Some(role), _) => role,
            // The groups that gave the role are gone: back to the least one.
            (None, Some(_)) => Role::User,
            (None, None) => user.role,
        };
        let mut changed = Vec::new();
        let mut user = user;
        if role != user.role {
            let before = user.clone();
            let mut active = user.clone().into_active_model();
            active.role = Set(role);
            active.updated_at = Set(at);
            user = queries::users::update(txn, active).await?;
            AuditRecord::new("user.updated", "user", &user.id)
                .detail("role", role)
                .detail("identity_provider_id", &provider.id)
                .write(txn, actor)
                .await?;
            changed.extend(follow_rights(txn, &self.sessions, &before, &user, actor).await?);
        }
        let wanted = spec.resources_for(groups);
        let held = queries::resources::mapped_to(txn, &user.id, &provider.id).await?;
        for resource_id in wanted.iter().filter(|id| !held.contains(id)) {
            // A resource deleted since the mapping was written is skipped.
            if queries::resources::get(txn, &provider.organization_id, resource_id).await.is_err() {
                continue;
            }
            let assignment = resource_assignment::Model {
                resource_id: resource_id.clone(),
                user_id: user.id.clone(),
                organization_id: provider.organization_id.clone(),
                created_at: at,
                mapped_by: Some(provider.id.clone()),
            };
            if queries::resources::assign(txn, assignment).await? {
                AuditRecord::new("resource.assigned", "resource", resource_id)
                    .detail("user_id", &user.id)
                    .detail("identity_provider_id", &provider.id)
                    .write(txn, actor)
                    .await?;
            }
        }
        for resource_id in held.iter().filter(|id| !wanted.contains(id)) {
            if queries::resources::unassign(txn, resource_id, &user.id).await? {
                AuditRecord::new("resource.unassigned", "resource", resource_id)
                    .detail("user_id", &user.id)
                    .detail("identity_provider_id", &provider.id)
                    .write(txn, actor)
                    .await?;
                changed.extend(transitions::withdraw_resource(txn, &user.id, resource_id, actor).await?);
            }
        }
        let mut active = identity.into_active_model();
        active.groups = Set(json_list(groups));
        active.mapped_role = Set(mapped.map(|role| role.as_str().to_owned()));
        active.checked_at = Set(at);
        active.check_failing_since = Set(None);
        if let Some(token) = refresh_token {
            active.refresh_token_sealed = Set(token);
        }
        active.updated_at = Set(at);
        identity_providers::update_identity(txn, active).await?;
        Ok((user, changed))
    }

    /// One look at login `id` for the client holding `poll_secret`: still waiting, done (its
    /// token, delivered once), or refused with why.
    pub async fn poll(&self, id: &str, poll_secret: &str) -> Result<SsoOutcome> {
        let unknown = || Error::Unauthenticated {
            reason: ErrorReason::VerificationFailed,
            message: "unknown SSO login, or wrong poll secret".into(),
        };
        let login = match sso_logins::get(&self.db, id).await {
            Ok(login) => login,
            Err(StoreError::NotFound) => return Err(unknown()),
            Err(err) => return Err(err.into()),
        };
        if !secret_matches(poll_secret, &login.poll_secret_hash) {
            return Err(unknown());
        }
        if login.delivered_at.is_some() {
            return Err(Error::failed_precondition(
                ErrorReason::VerificationFailed,
                "this login was already delivered",
            ));
        }
        if let (Some(reason), Some(message)) = (&login.failure_reason, &login.failure_message) {
            let reason = ErrorReason::from_str_name(reason).unwrap_or(ErrorReason::VerificationFailed);
            return Err(Error::PermissionDenied { reason, message: message.clone() });
        }
        let Some(session_id) = &login.login_session_id else {
            if login.expires_at <= now() {
                return Err(Error::failed_precondition(
                    ErrorReason::VerificationFailed,
                    "the login expired before the browser came back; start it again",
                ));
            }
            return Ok(SsoOutcome::Waiting);
        };
        if !sso_logins::mark_delivered(&self.db, id, now()).await? {
            return Err(Error::failed_precondition(
                ErrorReason::VerificationFailed,
                "this login was already delivered",
            ));
        }
        let session = queries::login_sessions::get(&self.db, session_id).await?;
        let user = queries::users::get_any(&self.db, &session.user_id).await?;
        let (access_token, token_expires_at) = self.logins.issue(&user, &session)?;
        Ok(SsoOutcome::Done(Box::new(VerifiedLogin { access_token, token_expires_at, login_session: session })))
    }

    /// The groups `user_id`'s providers last reported, each once.
    pub async fn groups_of(&self, user_id: &str) -> Result<Vec<String>> {
        Ok(identity_providers::groups_of_user(&self.db, user_id).await?)
    }

    /// Runs the refresh check until `stop` turns true: it looks for due identities a tenth of
    /// the interval apart (at least every second, at most every minute).
    pub async fn run(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let every = (self.providers.setup().config.refresh_check_secs.get() / 10)
            .clamp(Duration::from_secs(1), Duration::from_secs(60));
        loop {
            if let Err(err) = self.check_due().await {
                tracing::warn!(error = %err, "sso refresh check failed");
            }
            let cutoff = now() - TimeDelta::hours(1);
            if let Err(err) = sso_logins::purge(&self.db, cutoff).await {
                tracing::warn!(error = %err, "forgetting ended sso logins failed");
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                () = crate::shutdown::stopping(&mut stop) => return,
            }
        }
    }

    /// Redeems the refresh token of every identity not checked for `sso.refresh_check_secs`:
    /// a refused grant disables the user (their login sessions close, their sessions end, their
    /// rules go); changed groups change their role and mapped resources. Answers how many were
    /// checked.
    pub async fn check_due(&self) -> Result<usize> {
        let interval = self.providers.setup().config.refresh_check_secs.get();
        let before = now() - TimeDelta::from_std(interval).unwrap_or(TimeDelta::MAX);
        let due = identity_providers::due_for_check(&self.db, before, CHECK_BATCH).await?;
        let mut checked = 0;
        for identity in due {
            if !identity_providers::claim_check(&self.db, &identity.id, identity.checked_at, now()).await? {
                continue;
            }
            checked += 1;
            if let Err(err) = self.check(identity.clone()).await {
                tracing::warn!(user_id = %identity.user_id, identity_provider_id = %identity.identity_provider_id,
                    error = %err, "sso refresh check failed; retried next interval");
            }
        }
        Ok(checked)
    }

    async fn check(&self, identity: user_identity::Model) -> Result<()> {
        let provider = identity_providers::get_any(&self.db, &identity.identity_provider_id).await?;
        let key = self.providers.setup().key()?;
        let Some(sealed) = &identity.refresh_token_sealed else { return Ok(()) };
        let token = key.open_text(&identity.id, sealed).map_err(|err| Error::internal(anyhow::Error::msg(err)))?;
        let client = self.providers.client(&provider).await;
        let answer = match client {
            Ok(client) => client.refresh(&token).await.map_err(|err| Error::Unavailable(err.to_string())),
            Err(err) => Err(err),
        };
        let actor = Actor::server(&provider.organization_id);
        match answer {
            Err(err) => {
                // Not an answer about the user (network, 5xx, a refused client secret): the
                // user keeps access and the check is retried; the log says since when.
                crate::monitoring::sso_refresh_checked("no_answer");
                let txn = store::begin(&self.db).await?;
                if identity.check_failing_since.is_none() {
                    let mut active = identity.clone().into_active_model();
                    active.check_failing_since = Set(Some(now()));
                    identity_providers::update_identity(&txn, active).await?;
                }
                store::commit(txn).await?;
                tracing::warn!(user_id = %identity.user_id, identity_provider_id = %provider.id,
                    failing_since = ?identity.check_failing_since, error = %err, "sso refresh check got no answer");
                Ok(())
            }
            Ok(Refreshed::Revoked(why)) => {
                crate::monitoring::sso_refresh_checked("revoked");
                self.deprovision(&provider, identity, &why, &actor).await
            }
            Ok(Refreshed::Valid { groups, refresh_token }) => {
                crate::monitoring::sso_refresh_checked("valid");
                let spec = provider.spec()?;
                let txn = store::begin(&self.db).await?;
                let user = queries::users::get_any(&txn, &identity.user_id).await?;
                let groups = groups.unwrap_or_else(|| identity.groups());
                let sealed = refresh_token
                    .map(|token| key.seal(&identity.id, token.as_bytes()))
                    .transpose()
                    .map_err(|err| Error::internal(anyhow::Error::msg(err)))?;
                let user_id = user.id.clone();
                let (_, changed) =
                    self.grant(&txn, &provider, &spec, user, identity, &groups, sealed.map(Some), &actor).await?;
                self.callers.commit_change(txn, Whose::User(user_id.clone())).await?;
                self.engine.cache().forget_user(&user_id);
                self.engine.announce(&changed).await;
                Ok(())
            }
        }
    }

    /// The provider refused the user's grant: they are gone there, so they are disabled here,
    /// their login sessions closed and everything they hold taken away.
    async fn deprovision(
        &self,
        provider: &identity_provider::Model,
        identity: user_identity::Model,
        why: &str,
        actor: &Actor,
    ) -> Result<()> {
        let txn = store::begin(&self.db).await?;
        let before = queries::users::get_any(&txn, &identity.user_id).await?;
        let at = now();
        let mut changed = Vec::new();
        if !before.disabled {
            let mut active = before.clone().into_active_model();
            active.disabled = Set(true);
            active.updated_at = Set(at);
            let after = queries::users::update(&txn, active).await?;
            changed = follow_rights(&txn, &self.sessions, &before, &after, actor).await?;
            AuditRecord::new("user.deprovisioned", "user", &before.id)
                .detail("identity_provider_id", &provider.id)
                .detail("reason", why)
                .write(&txn, actor)
                .await?;
        }
        queries::login_sessions::close_all_of_user(&txn, &before.id, at).await?;
        let mut active = identity.into_active_model();
        active.refresh_token_sealed = Set(None);
        active.updated_at = Set(at);
        identity_providers::update_identity(&txn, active).await?;
        self.callers.commit_change(txn, Whose::User(before.id.clone())).await?;
        self.engine.announce(&changed).await;
        tracing::warn!(user_id = %before.id, identity_provider_id = %provider.id, reason = why,
            "identity provider refused the user's grant; user disabled");
        Ok(())
    }
}

fn internal_refusal(err: impl std::fmt::Display) -> Refusal {
    tracing::error!(error = %err, "sso login failed");
    Refusal::new(ErrorReason::Internal, "the login failed on this server; try again, or ask the operator")
}
