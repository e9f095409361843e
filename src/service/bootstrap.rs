//! `portcullis init`: the first organization, its admin, and the admin's API key.

use super::credentials::{TokenAlgorithm, generate_api_key};
use crate::domain::Actor;
use crate::domain::{Permission, Role, Tier, new_id, normalize_email, now, validate_name};
use crate::error::{Error, Result};
use crate::pb::v1::ErrorReason;
use crate::store::audit::AuditRecord;
use crate::store::entity::{api_key, organization, user};
use crate::store::{self, queries};
use sea_orm::DatabaseConnection;

/// What `init` created.
pub struct Bootstrap {
    pub organization: organization::Model,
    pub admin: user::Model,
    /// The admin's API key secret, shown once.
    pub api_key: String,
}

/// Creates the organization and its admin on an empty database; FAILED_PRECONDITION otherwise.
pub async fn initialize(db: &DatabaseConnection, admin_email: &str, organization_name: &str) -> Result<Bootstrap> {
    let email = normalize_email(admin_email).map_err(|d| Error::invalid("admin_email", d))?;
    let name = validate_name(organization_name).map_err(|d| Error::invalid("organization", d))?;
    let txn = store::begin(db).await?;
    if queries::organizations::count(&txn).await? > 0 {
        return Err(Error::failed_precondition(
            ErrorReason::InvalidState,
            "the database already has an organization; init only runs on an empty database",
        ));
    }
    let at = now();
    let organization = queries::organizations::insert(
        &txn,
        organization::Model {
            id: new_id(),
            name,
            tier: Tier::Free.as_str().to_owned(),
            suspended: false,
            allow_private_addresses: false,
            created_at: at,
            updated_at: at,
        },
    )
    .await?;
    let admin = queries::users::insert(
        &txn,
        user::Model {
            id: new_id(),
            organization_id: organization.id.clone(),
            email,
            full_name: String::new(),
            role: Role::Admin.as_str().to_owned(),
            disabled: false,
            locked: false,
            failed_login_count: 0,
            password_hash: None,
            created_at: at,
            updated_at: at,
        },
    )
    .await?;
    let key = generate_api_key();
    let stored_key = queries::api_keys::insert(
        &txn,
        api_key::Model {
            id: new_id(),
            organization_id: organization.id.clone(),
            user_id: admin.id.clone(),
            name: "bootstrap admin key".into(),
            prefix: key.lookup.clone(),
            secret_hash: key.secret_hash.clone(),
            permissions: Permission::join(Permission::ALL),
            created_at: at,
            last_used_at: None,
            expires_at: None,
            revoked_at: None,
        },
    )
    .await?;
    AuditRecord::new("organization.initialized", "organization", &organization.id)
        .detail("admin_email", &admin.email)
        .detail("api_key_id", &stored_key.id)
        .write(&txn, &Actor::server(&organization.id))
        .await?;
    store::commit(txn).await?;
    Ok(Bootstrap { organization, admin, api_key: key.secret })
}

/// `portcullis set-password`: gives a user a password (or, with `None`, takes it away). With one,
/// a login needs the password before a code is mailed.
pub async fn set_password(db: &DatabaseConnection, email: &str, password: Option<&str>) -> Result<user::Model> {
    use sea_orm::{ActiveValue::Set, IntoActiveModel};
    let email = normalize_email(email).map_err(|d| Error::invalid("email", d))?;
    let hash = password
        .map(super::credentials::hash_password)
        .transpose()
        .map_err(|description| Error::invalid("password", description))?;
    let txn = store::begin(db).await?;
    let user = queries::users::find_by_email(&txn, &email).await.map_err(|_| Error::not_found("user"))?;
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
/// its algorithm sign with it from their next start; tokens signed with older keys keep
/// verifying until those are retired. Answers the new key's id.
pub async fn rotate_token_key(db: &DatabaseConnection, algorithm: TokenAlgorithm) -> Result<String> {
    Ok(super::auth::store_new_key(db, algorithm).await?.kid)
}

/// `portcullis retire-token-key`: tokens signed with `kid` are refused once servers restart. The
/// last active key cannot be retired (no token could be issued).
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
    queries::signing_keys::retire(db, kid, now()).await?;
    Ok(())
}
