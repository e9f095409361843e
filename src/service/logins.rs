//! The emailed one-time-code login: StartLogin mails a code, VerifyLogin trades it for a login
//! session and an access token.
//!
//! Probing is pointless: an unknown, disabled or locked email — or a wrong password — gets the
//! same answer as a good one (a code id and expiry; the row is stored either way), and mail goes
//! out after the answer. A user with a password (argon2id) must give it before a code is sent.
//! Only a hash of each code is kept. A code works once, for `login.code_minutes`, and is used
//! up after `login.max_code_attempts` wrong tries; only wrong tries at a live code (or wrong
//! passwords) count as failed logins. `login.lock_after_failures` of them in a row lock the
//! account for `login.lock_minutes`, twice as long at each lockout after that (at most
//! `login.max_lock_hours`), or until an admin unlocks it: a stranger can slow a login down but
//! never shut its owner out for good. Starts and verifications are limited per client network.

use super::credentials::{Claims, TokenKeys, hash_password, hash_secret, password_matches, secret_matches};
use super::mail::{Mail, Mailer};
use super::rate_limit::RateLimiter;
use super::{Caller, CallerCache, Whose};
use crate::chore::Chore;
use crate::config::LoginConfig;
use crate::domain::Actor;
use crate::domain::{new_id, normalize_email, now, rate_limit_key};
use crate::error::{Error, Result};
use crate::pb::v1::ErrorReason;
use crate::store::audit::AuditRecord;
use crate::store::entity::{login_session, user, verification_code};
use crate::store::queries::users::ByEmail;
use crate::store::{self, Page, PageRequest, StoreError, queries};
use chrono::{DateTime, TimeDelta, Utc};
use rand::Rng;
use sea_orm::{ActiveValue::Set, DatabaseConnection, IntoActiveModel};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// Where a login request came from.
#[derive(Debug, Clone)]
pub struct LoginClient {
    pub ip: IpAddr,
    pub user_agent: String,
}

/// What StartLogin answers, whoever asked.
#[derive(Debug, Clone)]
pub struct StartedLogin {
    pub verification_code_id: String,
    pub expires_at: DateTime<Utc>,
}

/// A verified login.
#[derive(Debug, Clone)]
pub struct VerifiedLogin {
    pub access_token: String,
    pub token_expires_at: DateTime<Utc>,
    pub login_session: login_session::Model,
}

#[derive(Clone)]
pub struct LoginManager {
    db: DatabaseConnection,
    keys: TokenKeys,
    mailer: Arc<dyn Mailer>,
    config: LoginConfig,
    access_token: TimeDelta,
    per_email: RateLimiter,
    per_ip: RateLimiter,
    verifies_per_ip: RateLimiter,
    /// Forgetting codes that ended, once an hour on each replica (first on the first login).
    purge_codes: Chore,
    /// Password checks running at once.
    password_checks: Arc<tokio::sync::Semaphore>,
    callers: CallerCache,
}

const HOUR: Duration = Duration::from_secs(3600);

/// Password checks at once: each holds a core and 19 MiB (argon2id defaults) for a while.
const PASSWORD_CHECKS_AT_ONCE: usize = 2;

/// Checked when the address has no password, so a password check always costs the same.
static STAND_IN_HASH: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| hash_password("portcullis stand-in password").unwrap_or_default());

fn invalid_code() -> Error {
    Error::Unauthenticated { reason: ErrorReason::InvalidCredentials, message: "invalid or expired code".into() }
}

/// When a login session stops working unless used again: the earlier of its expiry and its
/// idle deadline.
pub fn login_deadline(login: &login_session::Model) -> DateTime<Utc> {
    let idle = login.active_at + TimeDelta::minutes(i64::from(login.idle_timeout_minutes));
    idle.min(login.expires_at)
}

/// Whether a login session still authenticates calls at `at`.
pub fn login_is_live(login: &login_session::Model, at: DateTime<Utc>) -> bool {
    login.closed_at.is_none() && at < login_deadline(login)
}

fn not_a_login() -> Error {
    Error::failed_precondition(ErrorReason::InvalidState, "the call is not made with a login's access token")
}

/// RESOURCE_EXHAUSTED, with when to retry, once `key` has used up `limiter`.
async fn throttle(limiter: &RateLimiter, key: &str) -> Result<()> {
    match limiter.hit(key).await? {
        Ok(()) => Ok(()),
        Err(retry_after) => {
            Err(Error::ResourceExhausted { message: "too many login attempts; try again later".into(), retry_after })
        }
    }
}

/// Codes are hashed with their id, so equal codes never share a hash.
fn code_secret(code_id: &str, code: &str) -> String {
    format!("{code_id}:{code}")
}

impl LoginManager {
    pub fn new(
        db: DatabaseConnection,
        keys: TokenKeys,
        mailer: Arc<dyn Mailer>,
        config: LoginConfig,
        access_token: TimeDelta,
        callers: CallerCache,
    ) -> LoginManager {
        LoginManager {
            per_email: RateLimiter::new(db.clone(), "login-email", config.starts_per_email_per_hour.as_u32(), HOUR),
            per_ip: RateLimiter::new(db.clone(), "login-ip", config.starts_per_ip_per_hour.as_u32(), HOUR),
            verifies_per_ip: RateLimiter::new(db.clone(), "verify-ip", config.verifies_per_ip_per_hour.as_u32(), HOUR),
            purge_codes: Chore::new(HOUR, true),
            password_checks: Arc::new(tokio::sync::Semaphore::new(PASSWORD_CHECKS_AT_ONCE)),
            db,
            keys,
            mailer,
            config,
            access_token,
            callers,
        }
    }

    /// Mails a code to `email` when it belongs to an active user (who gave the right password,
    /// if they have one) of `organization_id`, or of the only organization it is in; answers the
    /// same either way. An address of several organizations, none named, is mailed their list.
    pub async fn start(
        &self,
        email: &str,
        organization_id: Option<&str>,
        password: Option<&str>,
        client: &LoginClient,
    ) -> Result<StartedLogin> {
        let email = normalize_email(email).map_err(|message| Error::invalid("email", message))?;
        if self.purge_codes.due() {
            // Kept an hour past their end, so a late VerifyLogin still reads "expired".
            let cutoff = now() - TimeDelta::hours(1);
            queries::login_sessions::purge_codes(&self.db, cutoff).await?;
        }
        throttle(&self.per_ip, &rate_limit_key(client.ip)).await?;
        throttle(&self.per_email, &email).await?;
        let (user, several) = match queries::users::find_member(&self.db, &email, organization_id).await? {
            ByEmail::One(user) => ((!user.disabled && !user.is_locked(now())).then_some(user), Vec::new()),
            ByEmail::Nobody => (None, Vec::new()),
            ByEmail::Several(users) => (None, users),
        };
        let has_password = user.as_ref().is_some_and(|user| user.password_hash.is_some());
        // Checked whoever asks (against a stand-in hash for unknown addresses): the slow hash
        // takes the same time either way.
        let password_ok = match (user.as_ref().and_then(|user| user.password_hash.clone()), password) {
            (Some(stored), Some(given)) => self.password_matches(given, Some(stored)).await?,
            (Some(_), None) => false,
            (None, Some(given)) => self.password_matches(given, None).await? && user.is_some(),
            (None, None) => user.is_some(),
        };
        if let Some(user) = user.as_ref().filter(|_| !password_ok) {
            self.record_failure(&self.db, user).await?;
        }
        let user = user.filter(|_| password_ok);
        // Its organization logs people in through its identity provider only: no code, a
        // mail saying so (the answer stays the same, so it tells nothing about the address).
        let sso_only = match &user {
            Some(user) => queries::identity_providers::of_organizations(&self.db, &[user.organization_id.as_str()])
                .await?
                .iter()
                .any(|provider| provider.sso_required),
            None => false,
        };
        let (user, sso_only) = if sso_only { (None, user) } else { (user, None) };
        let id = new_id();
        let code = format!("{:06}", rand::rng().random_range(0..1_000_000));
        let at = now();
        let expires_at = at + self.config.code_minutes.time_delta();
        queries::login_sessions::insert_code(
            &self.db,
            verification_code::Model {
                id: id.clone(),
                user_id: user.as_ref().map(|u| u.id.clone()),
                email: email.clone(),
                code_hash: hash_secret(&code_secret(&id, &code)),
                failed_attempts: 0,
                client_ip: client.ip.to_string(),
                authenticators: if has_password { "pwd otp" } else { "otp" }.into(),
                created_at: at,
                expires_at,
                consumed_at: None,
            },
        )
        .await?;
        let mail = if user.is_some() {
            Some(Mail::login_code(&email, &code, expires_at))
        } else if let Some(member) = &sso_only {
            Some(Mail::sso_required(&email, &member.organization_id))
        } else if !several.is_empty() {
            Some(Mail::organization_choice(&email, &self.organization_names(&several).await?))
        } else {
            None
        };
        if let Some(mail) = mail {
            // After the answer: how long mail takes must not tell whether the address is known.
            let mailer = self.mailer.clone();
            tokio::spawn(async move {
                let to = mail.to.clone();
                if let Err(err) = mailer.send(mail).await {
                    tracing::warn!(email = %to, error = %err, "sending login mail failed");
                }
            });
        }
        Ok(StartedLogin { verification_code_id: id, expires_at })
    }

    /// Checks a password against `stored` (`None`: the stand-in hash) off the async workers, a
    /// few at a time: argon2 is slow on purpose, and a burst of logins must not stall the server.
    async fn password_matches(&self, given: &str, stored: Option<String>) -> Result<bool> {
        let _permit = self.password_checks.acquire().await.map_err(Error::internal)?;
        let given = given.to_owned();
        tokio::task::spawn_blocking(move || password_matches(&given, stored.as_deref().unwrap_or(&STAND_IN_HASH)))
            .await
            .map_err(Error::internal)
    }

    /// (name, id) of the users' organizations.
    async fn organization_names(&self, users: &[user::Model]) -> Result<Vec<(String, String)>> {
        let mut names = Vec::new();
        for user in users {
            let organization = queries::organizations::get(&self.db, &user.organization_id).await?;
            names.push((organization.name, organization.id));
        }
        Ok(names)
    }

    /// Trades a code for a login session and an access token.
    pub async fn verify(&self, code_id: &str, code: &str, client: &LoginClient) -> Result<VerifiedLogin> {
        throttle(&self.verifies_per_ip, &rate_limit_key(client.ip)).await?;
        let txn = store::begin(&self.db).await?;
        let mut row = match queries::login_sessions::get_code_for_update(&txn, code_id).await {
            Ok(row) => row,
            Err(StoreError::NotFound) => return Err(invalid_code()),
            Err(err) => return Err(err.into()),
        };
        let at = now();
        let usable = row.consumed_at.is_none()
            && row.expires_at > at
            && row.failed_attempts < self.config.max_code_attempts.as_i32();
        let user = match &row.user_id {
            Some(user_id) => Some(queries::users::get_any(&txn, user_id).await?),
            None => None,
        };
        let matches = secret_matches(&code_secret(&row.id, code.trim()), &row.code_hash);
        let user = match user {
            Some(user) if usable && matches && !user.disabled && !user.is_locked(at) => user,
            refused => {
                // Only a wrong guess at a live code is a failed login: calls with a spent or
                // expired code cannot count against anyone.
                if usable && !matches {
                    row.failed_attempts += 1;
                    queries::login_sessions::save_code(&txn, row.clone()).await?;
                    if let Some(user) = &refused {
                        self.record_failure(&txn, user).await?;
                    }
                }
                store::commit(txn).await?;
                return Err(invalid_code());
            }
        };
        row.consumed_at = Some(at);
        queries::login_sessions::save_code(&txn, row.clone()).await?;
        let session =
            queries::login_sessions::insert(&txn, self.new_session(&user, client, &row.authenticators)).await?;
        if user.failed_login_count != 0 || user.lockouts != 0 {
            let mut active = user.clone().into_active_model();
            active.failed_login_count = Set(0);
            active.lockouts = Set(0);
            queries::users::update(&txn, active).await?;
        }
        AuditRecord::new("login.succeeded", "login_session", &session.id)
            .detail("user_id", &user.id)
            .detail("ip", client.ip)
            .write(&txn, &Actor::server(&user.organization_id))
            .await?;
        store::commit(txn).await?;
        let (access_token, token_expires_at) = self.issue(&user, &session)?;
        Ok(VerifiedLogin { access_token, token_expires_at, login_session: session })
    }

    /// A login session for `user`, opened now from `client` with `authenticators`.
    pub(super) fn new_session(
        &self,
        user: &user::Model,
        client: &LoginClient,
        authenticators: &str,
    ) -> login_session::Model {
        let at = now();
        login_session::Model {
            id: new_id(),
            organization_id: user.organization_id.clone(),
            user_id: user.id.clone(),
            created_at: at,
            active_at: at,
            expires_at: self.grant_until(at, at),
            idle_timeout_minutes: i32::try_from(self.config.idle_timeout_minutes.count()).unwrap_or(i32::MAX),
            ip: client.ip.to_string(),
            user_agent: client.user_agent.clone(),
            authenticators: authenticators.to_owned(),
            closed_at: None,
        }
    }

    /// The caller's own login session (calls made with an API key have none).
    pub async fn current(&self, caller: &Caller) -> Result<login_session::Model> {
        let id = caller.login_session_id.as_deref().ok_or_else(not_a_login)?;
        Ok(queries::login_sessions::get(&self.db, id).await?)
    }

    /// The caller's live login sessions, newest first; `current` names the caller's own.
    pub async fn list(&self, caller: &Caller, page: &PageRequest) -> Result<Page<login_session::Model>> {
        let at = now();
        let mut open = queries::login_sessions::list_open(&self.db, &caller.user_id, at, page).await?;
        open.items.retain(|login| login_is_live(login, at));
        Ok(open)
    }

    /// When a login created at `created_at` ends if granted `login.session_hours` at `at`: never
    /// past `login.max_lifetime_hours` from its creation.
    fn grant_until(&self, created_at: DateTime<Utc>, at: DateTime<Utc>) -> DateTime<Utc> {
        (at + self.config.session_hours.time_delta()).min(created_at + self.config.max_lifetime_hours.time_delta())
    }

    /// Extends the caller's login session by `login.session_hours` from now (within its maximum
    /// life), with a fresh token. A login closed meanwhile stays closed: the write is conditional.
    pub async fn extend(&self, caller: &Caller) -> Result<VerifiedLogin> {
        let login = self.current(caller).await?;
        let at = now();
        if !login_is_live(&login, at) {
            return Err(not_a_login());
        }
        let expires_at = self.grant_until(login.created_at, at);
        let txn = store::begin(&self.db).await?;
        if !queries::login_sessions::extend_open(&txn, &login.id, expires_at, at).await? {
            return Err(not_a_login());
        }
        let login = queries::login_sessions::get(&txn, &login.id).await?;
        AuditRecord::new("login.extended", "login_session", &login.id)
            .detail("expires_at", login.expires_at.to_rfc3339())
            .write(&txn, &caller.actor())
            .await?;
        store::commit(txn).await?;
        let user = queries::users::get_any(&self.db, &caller.user_id).await?;
        let (access_token, token_expires_at) = self.issue(&user, &login)?;
        Ok(VerifiedLogin { access_token, token_expires_at, login_session: login })
    }

    /// Closes one of the caller's login sessions; its tokens stop working at once on this
    /// server (within `auth.caller_cache_secs` on others). Closing a closed one changes nothing.
    pub async fn close(&self, caller: &Caller, id: &str) -> Result<()> {
        let txn = store::begin(&self.db).await?;
        let mut login = match queries::login_sessions::get(&txn, id).await {
            Ok(login) if login.user_id == caller.user_id => login,
            Ok(_) | Err(StoreError::NotFound) => return Err(Error::not_found("login session")),
            Err(err) => return Err(err.into()),
        };
        if login.closed_at.is_none() {
            login.closed_at = Some(now());
            queries::login_sessions::update(&txn, login).await?;
            AuditRecord::new("login.closed", "login_session", id).write(&txn, &caller.actor()).await?;
        }
        self.callers.commit_change(txn, Whose::User(caller.user_id.clone())).await?;
        Ok(())
    }

    /// Counts a failed login against the user; locks the account for a while at the configured
    /// limit, each lockout twice as long as the one before.
    async fn record_failure(&self, txn: &impl sea_orm::ConnectionTrait, user: &user::Model) -> Result<()> {
        let user_id = user.id.as_str();
        let at = now();
        let counted = queries::users::count_failed_login(txn, user_id, at).await?;
        let failures = counted.failed_login_count;
        let until = at + self.lock_duration(counted.lockouts);
        let lock = failures >= self.config.lock_after_failures.as_i32()
            && queries::users::lock(txn, user_id, at, until).await?;
        let organization_id = user.organization_id.clone();
        AuditRecord::new("login.failed", "user", user_id)
            .detail("failures", failures)
            .write(txn, &Actor::server(&organization_id))
            .await?;
        if lock {
            tracing::warn!(user_id, failures, until = %until, "account locked after failed logins");
            AuditRecord::new("user.locked", "user", user_id)
                .detail("failures", failures)
                .detail("until", until.to_rfc3339())
                .write(txn, &Actor::server(&organization_id))
                .await?;
        }
        Ok(())
    }

    /// How long the lockout after `earlier` ones lasts: `login.lock_minutes`, doubled for each
    /// earlier one, at most `login.max_lock_hours`.
    fn lock_duration(&self, earlier: i32) -> TimeDelta {
        let longest = self.config.max_lock_hours.time_delta();
        let doublings = u32::try_from(earlier).unwrap_or(0).min(32);
        let minutes =
            i64::try_from(self.config.lock_minutes.count()).unwrap_or(i64::MAX).saturating_mul(1 << doublings);
        TimeDelta::try_minutes(minutes).map_or(longest, |lock| lock.min(longest))
    }

    /// An access token for `session`: lives `auth.access_token_minutes`, never past the session.
    pub(super) fn issue(&self, user: &user::Model, session: &login_session::Model) -> Result<(String, DateTime<Utc>)> {
        let at = now();
        let expires_at = (at + self.access_token).min(session.expires_at);
        let claims = Claims {
            sub: user.id.clone(),
            org: user.organization_id.clone(),
            sid: session.id.clone(),
            iss: String::new(),
            aud: String::new(),
            iat: at.timestamp(),
            nbf: at.timestamp(),
            exp: expires_at.timestamp(),
        };
        let token = self.keys.sign(claims).map_err(Error::internal)?;
        Ok((token, expires_at))
    }
}
