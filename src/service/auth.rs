//! Who is calling: turns presented credentials into a [`Caller`], and decides what it may do.

use super::caller_cache::CallerCache;
use super::credentials::{self, Claims, KeyKind, SigningKey, TokenAlgorithm, TokenKeys};
use super::logins::{login_deadline, login_is_live};
use crate::config::AuthConfig;
use crate::domain::{Actor, Permission, Reach, Role, Rule};
use crate::error::{Error, Result};
use crate::pb::v1::ErrorReason;
use crate::sealing::SealingKey;
use crate::store::entity::{organization, signing_key, user};
use crate::store::{StoreError, queries};
use chrono::{DateTime, Utc};
use sea_orm::DatabaseConnection;
use std::net::IpAddr;
use std::sync::Arc;

/// A host agent, authenticated by its credential for AgentService.Connect.
#[derive(Debug, Clone)]
pub struct AgentCaller {
    pub agent_id: String,
    pub organization_id: String,
    pub name: String,
}

/// The authenticated principal of a call.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user_id: String,
    pub organization_id: String,
    pub email: String,
    pub full_name: String,
    pub role: Role,
    /// What this call may do: the role's permissions, narrowed by the API key's.
    pub permissions: Vec<Permission>,
    pub api_key_id: Option<String>,
    pub login_session_id: Option<String>,
    /// The TCP peer of the call.
    pub peer_ip: Option<IpAddr>,
    /// The caller's organization as authenticated (remembered with the caller, and forgotten
    /// with it on any change to organizations); none for the platform operator.
    pub organization: Option<Arc<organization::Model>>,
    /// Which objects this call reaches, as [`Caller::admit`] decided for its RPC.
    pub reach: Reach,
}

impl Caller {
    /// The caller as the author of a change in its organization's audit trail.
    pub fn actor(&self) -> Actor {
        self.actor_in(&self.organization_id)
    }

    /// The caller as the author of a change in `organization_id`'s audit trail: the platform
    /// operator, a member of none, is recorded by its key alone.
    pub fn actor_in(&self, organization_id: &str) -> Actor {
        Actor {
            organization_id: organization_id.to_owned(),
            user_id: (self.role != Role::Operator).then(|| self.user_id.clone()),
            api_key_id: self.api_key_id.clone(),
            client_ip: self.peer_ip,
        }
    }

    /// Admits this call under `rule`, its RPC's entry in the policy, and records how far it
    /// reaches; PERMISSION_DENIED otherwise. The one place a call's rights are decided.
    pub fn admit(&mut self, rule: Rule) -> Result<()> {
        let (members, operators) = match rule {
            Rule::Public => {
                self.reach = Reach::Own;
                return Ok(());
            }
            Rule::Agent => {
                return Err(denied(
                    ErrorReason::PermissionMissing,
                    "only a host agent's own credential makes this call",
                ));
            }
            Rule::Guarded { members, operators } => (members, operators),
        };
        if self.role == Role::Operator {
            if !operators {
                return Err(denied(
                    ErrorReason::MemberRequired,
                    "the call acts inside an organization; use a key of one of its members",
                ));
            }
            self.reach = Reach::Platform;
            return Ok(());
        }
        let Some(access) = members else {
            return Err(denied(ErrorReason::OperatorRequired, "only the platform operator may make this call"));
        };
        if !access.while_suspended && self.organization.as_ref().is_some_and(|organization| organization.suspended) {
            return Err(denied(ErrorReason::OrganizationSuspended, "the organization is suspended"));
        }
        if let Some(permission) = access.needs {
            self.require(permission)?;
        }
        self.reach = match access.others {
            Some(others) if self.permissions.contains(&others) => Reach::Organization,
            _ => Reach::Own,
        };
        Ok(())
    }

    /// Whether this call reaches `owner`'s objects: its own, or every member's when admitted so.
    pub fn reaches(&self, owner: &str) -> bool {
        self.reach != Reach::Own || owner == self.user_id
    }

    /// The one user whose objects this call is limited to; `None` when it reaches the organization.
    pub fn only_own(&self) -> Option<&str> {
        (self.reach == Reach::Own).then_some(self.user_id.as_str())
    }

    /// PERMISSION_DENIED unless the call may use `permission`.
    fn require(&self, permission: Permission) -> Result<()> {
        if self.permissions.contains(&permission) {
            return Ok(());
        }
        if permission.granted_to(self.role) {
            return Err(denied(
                ErrorReason::PermissionMissing,
                format!("the API key lacks the {permission} permission"),
            ));
        }
        Err(denied(ErrorReason::AdminRequired, format!("{permission} requires the ADMIN role")))
    }
}

fn denied(reason: ErrorReason, message: impl Into<String>) -> Error {
    Error::PermissionDenied { reason, message: message.into() }
}

/// A credential as it arrived in the call's metadata.
pub enum Credential<'a> {
    ApiKey(&'a str),
    Bearer(&'a str),
}

/// The shortest `auth.jwt_secret` accepted: 256 bits, as HS256's own key size.
const MIN_SECRET_BYTES: usize = 32;

/// Checks credentials against the database.
#[derive(Clone)]
pub struct Authenticator {
    db: DatabaseConnection,
    /// Lookups go to read connections, so they never queue behind the writer.
    reader: DatabaseConnection,
    keys: TokenKeys,
    /// The algorithm of the keys kept in the database, which [`Authenticator::reload_keys`]
    /// reads again; `None` when `auth.jwt_secret` is the one key.
    stored_keys: Option<TokenAlgorithm>,
    /// What stored signing keys are sealed with.
    sealing: Option<Arc<SealingKey>>,
    cache: CallerCache,
}

fn invalid_credentials() -> Error {
    Error::Unauthenticated { reason: ErrorReason::InvalidCredentials, message: "invalid credentials".into() }
}

/// Authentication lookups fail closed: a row that is missing means the credential is invalid.
fn or_invalid(err: StoreError) -> Error {
    match err {
        StoreError::NotFound => invalid_credentials(),
        other => other.into(),
    }
}

impl Authenticator {
    /// Loads the token keys: the configured secret, or the keys kept in the database (one of the
    /// configured algorithm is generated on first start, so every replica on the database shares it).
    pub async fn new(
        db: DatabaseConnection,
        reader: DatabaseConnection,
        config: &AuthConfig,
        cache: CallerCache,
        sealing: Option<Arc<SealingKey>>,
    ) -> Result<Authenticator> {
        let keys = match (&config.jwt_secret, config.jwt_algorithm) {
            // A short HMAC secret can be guessed offline from any one token.
            (Some(secret), TokenAlgorithm::HS256) if secret.expose().len() < MIN_SECRET_BYTES => {
                return Err(Error::invalid(
                    "auth.jwt_secret",
                    format!("must be at least {MIN_SECRET_BYTES} bytes (or leave it out: a random key is generated)"),
                ));
            }
            (Some(secret), TokenAlgorithm::HS256) => vec![SigningKey {
                kid: "config".into(),
                algorithm: TokenAlgorithm::HS256,
                secret: secret.expose().as_bytes().to_vec(),
            }],
            (Some(_), TokenAlgorithm::EdDSA) => {
                return Err(Error::invalid("auth.jwt_secret", "is an HMAC secret: use it with jwt_algorithm HS256"));
            }
            (None, algorithm) => {
                match sealing.as_deref() {
                    Some(sealing) => seal_stored_keys(&db, sealing).await?,
                    None => tracing::warn!(
                        "no sealing_key: token signing keys are stored in the clear, and a copy of the database is \
                         enough to mint tokens"
                    ),
                }
                load_or_create_keys(&db, algorithm, sealing.as_deref()).await?
            }
        };
        let keys = TokenKeys::new(keys, config.jwt_issuer.clone(), config.jwt_audience.clone())
            .ok_or_else(|| Error::internal(anyhow::anyhow!("no token signing key")))?;
        let stored_keys = config.jwt_secret.is_none().then_some(config.jwt_algorithm);
        Ok(Authenticator { db, reader, keys, stored_keys, sealing, cache })
    }

    /// Reads the stored signing keys again (another process rotated or retired one): tokens are
    /// signed with the newest from now on, and a retired key's are refused.
    pub async fn reload_keys(&self) -> Result<()> {
        let Some(algorithm) = self.stored_keys else { return Ok(()) };
        self.keys.replace(load_or_create_keys(&self.db, algorithm, self.sealing.as_deref()).await?);
        // Cached callers were vouched for by keys that may be gone.
        self.cache.clear();
        tracing::info!("token signing keys reloaded");
        Ok(())
    }

    pub fn token_keys(&self) -> &TokenKeys {
        &self.keys
    }

    /// The caller behind `credential`, or UNAUTHENTICATED.
    pub async fn authenticate(&self, credential: Credential<'_>, peer_ip: Option<IpAddr>) -> Result<Caller> {
        let secret = match credential {
            Credential::ApiKey(secret) | Credential::Bearer(secret) => secret,
        };
        if let Some(mut caller) = self.cache.get(secret) {
            caller.peer_ip = peer_ip;
            return Ok(caller);
        }
        let looked_up = self.cache.generation();
        let (mut caller, valid_until) = match credential {
            Credential::ApiKey(secret) => self.authenticate_api_key(secret).await?,
            Credential::Bearer(token) => self.authenticate_token(token).await?,
        };
        self.cache.put(secret, &caller, valid_until, looked_up);
        caller.peer_ip = peer_ip;
        Ok(caller)
    }

    /// The host agent behind an agent credential (`pca_…`), which opens AgentService.Connect
    /// only. Agents of a suspended organization still connect: they take rules away too.
    pub async fn authenticate_agent(&self, secret: &str) -> Result<AgentCaller> {
        let (kind, lookup) = credentials::parse_api_key(secret).ok_or_else(invalid_credentials)?;
        if kind != KeyKind::Agent {
            return Err(invalid_credentials());
        }
        let agent = queries::agents::find_by_prefix(&self.reader, lookup).await.map_err(or_invalid)?;
        if !credentials::secret_matches(secret, &agent.secret_hash) || agent.revoked_at.is_some() {
            return Err(invalid_credentials());
        }
        Ok(AgentCaller { agent_id: agent.id, organization_id: agent.organization_id, name: agent.name })
    }

    /// The key's caller and when the key expires.
    async fn authenticate_api_key(&self, secret: &str) -> Result<(Caller, Option<DateTime<Utc>>)> {
        let (kind, lookup) = credentials::parse_api_key(secret).ok_or_else(invalid_credentials)?;
        match kind {
            KeyKind::Operator => return self.authenticate_operator_key(secret, lookup).await,
            // An agent's credential is no API key: it opens nothing but its stream.
            KeyKind::Agent => return Err(invalid_credentials()),
            KeyKind::Member => {}
        }
        let key = queries::api_keys::find_by_prefix(&self.reader, lookup).await.map_err(or_invalid)?;
        if !credentials::secret_matches(secret, &key.secret_hash) {
            return Err(invalid_credentials());
        }
        let now = crate::domain::now();
        if !key.works_at(now) {
            return Err(invalid_credentials());
        }
        let user = queries::users::get_any(&self.reader, &key.user_id).await.map_err(or_invalid)?;
        let mut caller = self.caller_for(user).await?;
        caller.permissions = Permission::held(caller.role, Some(&Permission::split(&key.permissions)));
        caller.api_key_id = Some(key.id.clone());
        // Best effort: a failed bookkeeping write must not fail the call.
        if let Err(err) = queries::api_keys::touch(&self.db, &key.id, now, chrono::TimeDelta::minutes(1)).await {
            tracing::warn!(api_key_id = %key.id, error = %err, "recording api key use failed");
        }
        Ok((caller, key.expires_at))
    }

    /// The platform operator behind an operator key; such keys do not expire.
    async fn authenticate_operator_key(&self, secret: &str, lookup: &str) -> Result<(Caller, Option<DateTime<Utc>>)> {
        let key = queries::operator_keys::find_by_prefix(&self.reader, lookup).await.map_err(or_invalid)?;
        if !credentials::secret_matches(secret, &key.secret_hash) || key.revoked_at.is_some() {
            return Err(invalid_credentials());
        }
        let caller = Caller {
            user_id: String::new(),
            organization_id: String::new(),
            email: String::new(),
            full_name: key.name,
            role: Role::Operator,
            permissions: Vec::new(),
            api_key_id: Some(key.id),
            login_session_id: None,
            peer_ip: None,
            organization: None,
            reach: Reach::Platform,
        };
        Ok((caller, None))
    }

    /// The token's caller and when the token or its login session stops being valid.
    async fn authenticate_token(&self, token: &str) -> Result<(Caller, Option<DateTime<Utc>>)> {
        let claims: Claims = self.keys.verify(token).map_err(|err| {
            tracing::debug!(error = %err, "access token rejected");
            invalid_credentials()
        })?;
        let login = queries::login_sessions::get(&self.reader, &claims.sid).await.map_err(or_invalid)?;
        let now = crate::domain::now();
        if login.user_id != claims.sub || !login_is_live(&login, now) {
            return Err(invalid_credentials());
        }
        let user = queries::users::get_any(&self.reader, &claims.sub).await.map_err(or_invalid)?;
        if user.organization_id != claims.org {
            return Err(invalid_credentials());
        }
        let mut caller = self.caller_for(user).await?;
        // Use keeps a login session from going idle. Best effort, like an API key's last use.
        if let Err(err) = queries::login_sessions::touch(&self.db, &login.id, now, chrono::TimeDelta::minutes(1)).await
        {
            tracing::warn!(login_session_id = %login.id, error = %err, "recording login session use failed");
        }
        let token_expiry = DateTime::from_timestamp(claims.exp, 0).unwrap_or(now);
        let valid_until = token_expiry.min(login_deadline(&login));
        caller.login_session_id = Some(login.id);
        Ok((caller, Some(valid_until)))
    }

    async fn caller_for(&self, user: user::Model) -> Result<Caller> {
        if user.disabled {
            return Err(invalid_credentials());
        }
        let role = user.role;
        let organization: organization::Model =
            queries::organizations::get(&self.reader, &user.organization_id).await.map_err(or_invalid)?;
        Ok(Caller {
            user_id: user.id,
            organization_id: user.organization_id,
            email: user.email,
            full_name: user.full_name,
            role,
            permissions: Permission::for_login(role),
            api_key_id: None,
            login_session_id: None,
            peer_ip: None,
            organization: Some(Arc::new(organization)),
            reach: Reach::Own,
        })
    }
}

/// The stored keys not yet retired, the signing one first: the newest of `algorithm`, generated
/// (and stored, for every replica) when there is none.
async fn load_or_create_keys(
    db: &DatabaseConnection,
    algorithm: TokenAlgorithm,
    sealing: Option<&SealingKey>,
) -> Result<Vec<SigningKey>> {
    if let Some(keys) = signing_first(active_keys(db, sealing).await?, algorithm) {
        return Ok(keys);
    }
    // Replicas starting together on an empty database each try this insert; the key's id is
    // the same for all, so one insert wins and every replica reads the winner.
    let kid = format!("initial-{}", algorithm.as_str().to_ascii_lowercase());
    let initial = stored(kid.clone(), &SigningKey::generate(algorithm), sealing)?;
    if queries::signing_keys::insert_unless_present(db, initial).await? {
        tracing::info!(kid = %kid, algorithm = algorithm.as_str(), "generated token signing key");
    }
    if let Some(keys) = signing_first(active_keys(db, sealing).await?, algorithm) {
        return Ok(keys);
    }
    // That id belongs to a retired key: a key of its own then.
    store_new_key(db, algorithm, sealing).await?;
    signing_first(active_keys(db, sealing).await?, algorithm)
        .ok_or_else(|| Error::internal(anyhow::anyhow!("no {} signing key after storing one", algorithm.as_str())))
}

/// The keys not yet retired, newest first.
async fn active_keys(db: &DatabaseConnection, sealing: Option<&SealingKey>) -> Result<Vec<SigningKey>> {
    queries::signing_keys::active(db).await?.into_iter().map(|row| read_key(row, sealing)).collect()
}

/// Marks a stored key's secret as sealed; older rows hold it in the clear (base64).
const SEALED: &str = "sealed:";

/// What a key's secret is sealed for: its own row.
fn key_context(kid: &str) -> String {
    format!("signing_key:{kid}")
}

/// A stored key, its secret opened.
fn read_key(row: signing_key::Model, sealing: Option<&SealingKey>) -> Result<SigningKey> {
    let unreadable = |why: &str| Error::internal(anyhow::anyhow!("signing key {} is unreadable: {why}", row.id));
    let algorithm = TokenAlgorithm::parse(&row.algorithm).ok_or_else(|| unreadable("unknown algorithm"))?;
    match row.secret.strip_prefix(SEALED) {
        Some(sealed) => {
            let sealing = sealing.ok_or_else(|| unreadable("it is sealed, and this server has no sealing_key"))?;
            let secret = sealing.open(&key_context(&row.id), sealed).map_err(|why| unreadable(&why.to_string()))?;
            Ok(SigningKey { kid: row.id.clone(), algorithm, secret })
        }
        None => {
            SigningKey::from_encoded(row.id.clone(), algorithm, &row.secret).ok_or_else(|| unreadable("not base64"))
        }
    }
}

/// Seals the stored keys kept in the clear (stored before the server had a sealing key),
/// retired ones too: a backup must not mint tokens with them either.
async fn seal_stored_keys(db: &DatabaseConnection, sealing: &SealingKey) -> Result<()> {
    for row in queries::signing_keys::all(db).await? {
        if row.secret.starts_with(SEALED) {
            continue;
        }
        let (id, current) = (row.id.clone(), row.secret.clone());
        let key = read_key(row, None)?;
        let sealed = seal_secret(&key, sealing)?;
        if queries::signing_keys::replace_secret(db, &id, &current, &sealed).await? {
            tracing::info!(kid = %id, "token signing key sealed with sealing_key");
        }
    }
    Ok(())
}

fn seal_secret(key: &SigningKey, sealing: &SealingKey) -> Result<String> {
    let sealed =
        sealing.seal(&key_context(&key.kid), &key.secret).map_err(|why| Error::internal(anyhow::anyhow!(why)))?;
    Ok(format!("{SEALED}{sealed}"))
}

/// `keys` (newest first) with the newest of `algorithm` moved to the front; `None` without one.
fn signing_first(mut keys: Vec<SigningKey>, algorithm: TokenAlgorithm) -> Option<Vec<SigningKey>> {
    let newest = keys.iter().position(|key| key.algorithm == algorithm)?;
    keys[..=newest].rotate_right(1);
    Some(keys)
}

/// A key as the database keeps it, under `kid`: sealed when there is a sealing key.
fn stored(kid: String, key: &SigningKey, sealing: Option<&SealingKey>) -> Result<signing_key::Model> {
    let key = SigningKey { kid, ..key.clone() };
    let secret = match sealing {
        Some(sealing) => seal_secret(&key, sealing)?,
        None => key.encoded_secret(),
    };
    Ok(signing_key::Model {
        id: key.kid,
        algorithm: key.algorithm.as_str().to_owned(),
        secret,
        created_at: crate::domain::now(),
        retired_at: None,
    })
}

/// Generates a token key and stores it for every replica on the database, announcing it so
/// running replicas sign with it at once.
pub async fn store_new_key(
    db: &DatabaseConnection,
    algorithm: TokenAlgorithm,
    sealing: Option<&SealingKey>,
) -> Result<SigningKey> {
    let key = SigningKey::generate(algorithm);
    let txn = crate::store::begin(db).await?;
    queries::signing_keys::insert(&txn, stored(key.kid.clone(), &key, sealing)?).await?;
    crate::store::changes::announce(&txn, crate::store::changes::SIGNING_KEYS_CHANNEL, "").await?;
    crate::store::commit(txn).await?;
    Ok(key)
}
