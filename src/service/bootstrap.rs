//! `portcullis init`: the first organization, its admin, and the admin's API key.

use super::credentials::{KeyKind, TokenAlgorithm, generate_api_key};
use super::credentials::{PasswordError, hash_password};
use crate::domain::{Actor, CloudScopes, Permission, Role, Tier, new_id, normalize_email, now, validate_name};
use crate::error::{Error, Result};
use crate::pb::v1::ErrorReason;
use crate::store::audit::AuditRecord;
use crate::store::entity::{api_key, operator_key, organization, user};
use crate::store::{self, queries};
use sea_orm::{DatabaseConnection, DatabaseTransaction};

/// An organization as founded: by `init`, or by the operator's CreateOrganization.
pub struct Bootstrap {
    pub organization: organization::Model,
    pub admin: user::Model,
    /// The admin's API key secret, shown once.
    pub api_key: String,
}

/// A new organization and its first admin.
pub struct Founding {
    pub name: String,
    pub tier: Tier,
    pub allow_private_addresses: bool,
    pub cloud_scopes: CloudScopes,
    /// Normalized.
    pub admin_email: String,
    pub admin_full_name: String,
}

/// Creates the organization and its admin on an empty database; FAILED_PRECONDITION otherwise.
/// It is a single-tenant install's organization: its resources may use the server's cloud
/// identity anywhere it reaches, until the operator narrows its scopes.
pub async fn initialize(db: &DatabaseConnection, admin_email: &str, organization_name: &str) -> Result<Bootstrap> {
    let admin_email = normalize_email(admin_email).map_err(|d| Error::invalid("admin_email", d))?;
    let name = validate_name(organization_name).map_err(|d| Error::invalid("organization", d))?;
    let txn = store::begin(db).await?;
    if queries::organizations::count(&txn).await? > 0 {
        return Err(Error::failed_precondition(
            ErrorReason::InvalidState,
            "the database already has an organization; init only runs on an empty database",
        ));
    }
    let founding = Founding {
        name,
        tier: Tier::Free,
        allow_private_addresses: false,
        cloud_scopes: CloudScopes::unrestricted(),
        admin_email,
        admin_full_name: String::new(),
    };
    let created = found(&txn, founding, "organization.initialized", &Actor::server("")).await?;
    store::commit(txn).await?;
    Ok(created)
}

/// Inserts the organization, its admin and the admin's key with every permission, and records
/// `event` in the new organization's trail as done by `actor` (whose organization is ignored).
pub(super) async fn found(
    txn: &DatabaseTransaction,
    founding: Founding,
    event: &'static str,
    actor: &Actor,
) -> Result<Bootstrap> {
    let at = now();
    let organization = queries::organizations::insert(
        txn,
        organization::Model {
            id: new_id(),
            name: founding.name,
            tier: founding.tier,
            suspended: false,
            allow_private_addresses: founding.allow_private_addresses,
            created_at: at,
            updated_at: at,
            cloud_scopes: queries::organizations::encode_cloud_scopes(&founding.cloud_scopes),
        },
    )
    .await?;
    let admin = queries::users::insert(
        txn,
        user::Model::new_member(&organization.id, founding.admin_email, founding.admin_full_name, Role::Admin, at),
    )
    .await?;
    let key = generate_api_key(KeyKind::Member);
    let stored_key = queries::api_keys::insert(
        txn,
        api_key::Model {
            id: new_id(),
            organization_id: organization.id.clone(),
            user_id: admin.id.clone(),
            name: "bootstrap admin key".into(),
            prefix: key.lookup.clone(),
            secret_hash: key.secret_hash.clone(),
            permissions: Permission::join(&Permission::for_login(Role::Admin)),
            created_at: at,
            last_used_at: None,
            expires_at: None,
            revoked_at: None,
            parent_id: None,
        },
    )
    .await?;
    AuditRecord::new(event, "organization", &organization.id)
        .detail("admin_email", &admin.email)
        .detail("api_key_id", &stored_key.id)
        .write(txn, &Actor { organization_id: organization.id.clone(), ..actor.clone() })
        .await?;
    Ok(Bootstrap { organization, admin, api_key: key.secret })
}

/// `portcullis operator-key`: a new platform operator key; answers its id and its secret, shown
/// this once.
pub async fn create_operator_key(db: &DatabaseConnection, name: &str) -> Result<(String, String)> {
    let name = validate_name(name).map_err(|d| Error::invalid("name", d))?;
    let key = generate_api_key(KeyKind::Operator);
    let stored = queries::operator_keys::insert(
        db,
        operator_key::Model {
            id: new_id(),
            name,
            prefix: key.lookup,
            secret_hash: key.secret_hash,
            created_at: now(),
            revoked_at: None,
        },
    )
    .await?;
    Ok((stored.id, key.secret))
}

/// `portcullis revoke-operator-key`: the key stops working on every replica (at once where the
/// database announces changes, within `auth.caller_cache_secs` otherwise).
pub async fn revoke_operator_key(db: &DatabaseConnection, id: &str) -> Result<()> {
    let txn = store::begin(db).await?;
    if !queries::operator_keys::revoke(&txn, id, now()).await? {
        return Err(Error::not_found("operator key"));
    }
    crate::store::changes::announce(&txn, crate::store::changes::CREDENTIALS_CHANNEL, "").await?;
    store::commit(txn).await?;
    Ok(())
}

/// `portcullis set-password`: gives a user a password (or, with `None`, takes it away). With one,
/// a login needs the password before a code is mailed. An address in several organizations
/// needs `organization_id`.
pub async fn set_password(
    db: &DatabaseConnection,
    email: &str,
    organization_id: Option<&str>,
    password: Option<&str>,
) -> Result<user::Model> {
    use sea_orm::{ActiveValue::Set, IntoActiveModel};
    let email = normalize_email(email).map_err(|why| Error::invalid("email", why.to_string()))?;
    let hash = password.map(hash_password).transpose().map_err(|err| match err {
        PasswordError::TooShort => Error::invalid("password", err.to_string()),
        PasswordError::Hash(_) => Error::internal(err),
    })?;
    let txn = store::begin(db).await?;
    let user = match queries::users::find_member(&txn, &email, organization_id).await? {
        queries::users::ByEmail::One(user) => user,
        queries::users::ByEmail::Nobody => return Err(Error::not_found("user")),
        queries::users::ByEmail::Several(users) => {
            let organizations: Vec<&str> = users.iter().map(|user| user.organization_id.as_str()).collect();
            return Err(Error::invalid(
                "organization",
                format!(
                    "the address belongs to users of several organizations: name one of {}",
                    organizations.join(", ")
                ),
            ));
        }
    };
    let (organization_id, user_id) = (user.organization_id.clone(), user.id.clone());
    let mut active = user.into_active_model();
    active.password_hash = Set(hash.clone());
    active.updated_at = Set(now());
    let updated = queries::users::update(&txn, active).await?;
    let event = if hash.is_some() { "user.password_set" } else { "user.password_cleared" };
    AuditRecord::new(event, "user", &user_id).write(&txn, &Actor::server(&organization_id)).await?;
    store::commit(txn).await?;
    Ok(updated)
}

/// `portcullis rotate-token-key`: adds a signing key for access tokens. Servers configured for
/// its algorithm sign with it at once on PostgreSQL (from their next start on SQLite); tokens
/// signed with older keys keep verifying until those are retired. Answers the new key's id.
pub async fn rotate_token_key(
    db: &DatabaseConnection,
    algorithm: TokenAlgorithm,
    sealing: Option<&crate::sealing::SealingKey>,
) -> Result<String> {
    Ok(super::auth::store_new_key(db, algorithm, sealing).await?.kid)
}

/// `portcullis retire-token-key`: tokens signed with `kid` are refused at once on PostgreSQL
/// (once servers restart on SQLite). The last active key cannot be retired (no token could be
/// issued).
pub async fn retire_token_key(db: &DatabaseConnection, kid: &str) -> Result<()> {
    let active = queries::signing_keys::active(db).await?;
    if !active.iter().any(|key| key.id == kid) {
        return Err(Error::not_found("signing key"));
    }
    if active.len() == 1 {
        return Err(Error::failed_precondition(
            ErrorReason::InvalidState,
            "the last active signing key cannot be retired; rotate first",
        ));
    }
    let txn = store::begin(db).await?;
    queries::signing_keys::retire(&txn, kid, now()).await?;
    crate::store::changes::announce(&txn, crate::store::changes::SIGNING_KEYS_CHANNEL, "").await?;
    store::commit(txn).await?;
    Ok(())
}
