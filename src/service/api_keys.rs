//! API keys through AuthService: a caller creates keys for itself, never stronger than itself.

use super::credentials::{KeyKind, generate_api_key};
use super::{Caller, CallerCache, Whose};
use crate::domain::{Permission, Violations, new_id, now, validate_name};
use crate::error::{Error, Result, StoreResultExt};
use crate::pb::v1::ErrorReason;
use crate::store::audit::AuditRecord;
use crate::store::entity::api_key;
use crate::store::{self, Page, PageRequest, queries};
use chrono::{DateTime, Utc};
use sea_orm::DatabaseConnection;

/// A key to create.
#[derive(Debug)]
pub struct NewApiKey {
    pub name: String,
    pub permissions: Vec<String>,
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Clone)]
pub struct ApiKeyManager {
    db: DatabaseConnection,
    callers: CallerCache,
    /// Live keys a user may hold (`limits.max_api_keys_per_user`).
    max_per_user: u32,
}

impl ApiKeyManager {
    pub fn new(db: DatabaseConnection, callers: CallerCache, max_per_user: u32) -> ApiKeyManager {
        ApiKeyManager { db, callers, max_per_user }
    }

    /// Creates a key acting as the caller; returns it with its secret, shown this once. A key
    /// created with a key is its child: it expires no later than its parent (without an expiry
    /// of its own, when the parent does) and is revoked with it.
    pub async fn create(&self, caller: &Caller, new: NewApiKey) -> Result<(api_key::Model, String)> {
        let parent = match &caller.api_key_id {
            Some(id) => {
                Some(queries::api_keys::get(&self.db, &caller.organization_id, id).await.or_not_found("api key")?)
            }
            None => None,
        };
        let parent_expiry = parent.as_ref().and_then(|parent| parent.expires_at);
        let expires_at = new.expires_at.or(parent_expiry);
        let mut violations = Violations::default();
        let name = violations.check("name", validate_name(&new.name));
        let mut permissions = Vec::new();
        for (index, name) in new.permissions.iter().enumerate() {
            match name.parse::<Permission>() {
                Ok(permission) if !permissions.contains(&permission) => permissions.push(permission),
                Ok(_) => {}
                Err(_) => violations.add(
                    format!("permissions[{index}]"),
                    format!("must be one of {}", Permission::join(Permission::ALL).replace(' ', ", ")),
                ),
            }
        }
        if new.permissions.is_empty() {
            violations.add("permissions", "must name at least one permission");
        }
        if new.expires_at.is_some_and(|at| at <= now()) {
            violations.add("expires_at", "must be in the future");
        }
        if let (Some(wanted), Some(limit)) = (new.expires_at, parent_expiry)
            && wanted > limit
        {
            violations
                .add("expires_at", format!("must not be after {}, when the key in use expires", limit.to_rfc3339()));
        }
        let Some(name) = name.filter(|_| violations.is_empty()) else { return Err(violations.into()) };
        // A key never holds more than its creator: the role's permissions, narrowed by the key in use.
        // Permissions a key must name are the role's to grant from a login; a key passes on
        // only what it holds.
        let grantable = |p: &Permission| {
            caller.permissions.contains(p)
                || (caller.api_key_id.is_none() && Permission::EXPLICIT_ONLY.contains(p) && p.granted_to(caller.role))
        };
        if let Some(missing) = permissions.iter().find(|p| !grantable(p)) {
            return Err(Error::PermissionDenied {
                reason: ErrorReason::PermissionMissing,
                message: format!("a key cannot grant {missing}: the caller does not hold it"),
            });
        }
        let key = generate_api_key(KeyKind::Member);
        let txn = store::begin(&self.db).await?;
        // Keys held already stay; only one more is refused.
        if queries::api_keys::count_live(&txn, &caller.user_id, now()).await? >= u64::from(self.max_per_user) {
            return Err(Error::limit_reached(
                "limits.max_api_keys_per_user",
                self.max_per_user,
                "live API keys of this user",
            ));
        }
        let created = queries::api_keys::insert(
            &txn,
            api_key::Model {
                id: new_id(),
                organization_id: caller.organization_id.clone(),
                user_id: caller.user_id.clone(),
                name,
                prefix: key.lookup,
                secret_hash: key.secret_hash,
                permissions: Permission::join(&permissions),
                created_at: now(),
                last_used_at: None,
                expires_at,
                revoked_at: None,
                parent_id: parent.map(|parent| parent.id),
            },
        )
        .await?;
        AuditRecord::new("api_key.created", "api_key", &created.id)
            .detail("name", &created.name)
            .detail("permissions", &created.permissions)
            .write(&txn, &caller.actor())
            .await?;
        store::commit(txn).await?;
        Ok((created, key.secret))
    }

    /// The caller's own keys, newest first.
    pub async fn list(&self, caller: &Caller, page: &PageRequest) -> Result<Page<api_key::Model>> {
        Ok(queries::api_keys::list_for_user(&self.db, &caller.organization_id, &caller.user_id, page).await?)
    }

    /// Revokes one of the caller's keys (with `users:write`: any key of the organization). Revoking
    /// a revoked key changes nothing; the key stops working at once on every replica.
    pub async fn revoke(&self, caller: &Caller, id: &str) -> Result<api_key::Model> {
        let txn = store::begin(&self.db).await?;
        let key = queries::api_keys::get(&txn, &caller.organization_id, id).await.or_not_found("api key")?;
        if !caller.reaches(&key.user_id) {
            return Err(Error::not_found("api key"));
        }
        if key.revoked_at.is_none() {
            let descendants = queries::api_keys::revoke(&txn, id, now()).await?;
            AuditRecord::new("api_key.revoked", "api_key", id)
                .detail("name", &key.name)
                .detail("keys_created_with_it", descendants)
                .write(&txn, &caller.actor())
                .await?;
        }
        let revoked = queries::api_keys::get(&txn, &caller.organization_id, id).await?;
        self.callers.commit_change(txn, Whose::User(key.user_id.clone())).await?;
        Ok(revoked)
    }
}
