//! Users of an organization.

use super::{Caller, CallerCache, Whose};
use crate::config::SessionConfig;
use crate::domain::{Actor, Role, Violations, normalize_email, now, validate_full_name};
use crate::engine::{Engine, transitions, transitions::Loss};
use crate::error::{Result, StoreResultExt};
use crate::store::audit::AuditRecord;
use crate::store::entity::user;
use crate::store::queries::sessions::Holder;
use crate::store::{self, Page, PageRequest, queries};
use sea_orm::{ActiveValue::Set, DatabaseConnection, DatabaseTransaction, IntoActiveModel};

/// A user to create.
#[derive(Debug)]
pub struct NewUser {
    pub email: String,
    pub full_name: String,
    pub role: Option<Role>,
}

/// Changes requested by UpdateUser; `None` leaves a field alone.
#[derive(Debug, Default)]
pub struct UserChanges {
    pub full_name: Option<String>,
    pub role: Option<Role>,
    pub disabled: Option<bool>,
}

/// The caller as a user, with the session lengths open to them.
pub struct CurrentUser {
    pub user: user::Model,
    pub max_session_minutes: u32,
    pub default_session_minutes: u32,
}

#[derive(Clone)]
pub struct UserManager {
    db: DatabaseConnection,
    callers: CallerCache,
    engine: Engine,
    sessions: SessionConfig,
}

impl UserManager {
    pub fn new(db: DatabaseConnection, callers: CallerCache, engine: Engine, sessions: SessionConfig) -> UserManager {
        UserManager { db, callers, engine, sessions }
    }

    pub async fn create(&self, caller: &Caller, new: NewUser) -> Result<user::Model> {
        let mut violations = Violations::default();
        let email = violations.check("user.email", normalize_email(&new.email));
        let full_name = violations.check("user.full_name", validate_full_name(&new.full_name));
        if new.role.is_none() {
            violations.add("user.role", "must be ROLE_USER or ROLE_ADMIN");
        }
        let (Some(email), Some(full_name), Some(role), true) = (email, full_name, new.role, violations.is_empty())
        else {
            return Err(violations.into());
        };
        let at = now();
        let txn = store::begin(&self.db).await?;
        let created =
            queries::users::insert(&txn, user::Model::new_member(&caller.organization_id, email, full_name, role, at))
                .await
                .or_already_exists("a user with this email already exists")?;
        AuditRecord::new("user.created", "user", &created.id)
            .detail("email", &created.email)
            .detail("role", role)
            .write(&txn, &caller.actor())
            .await?;
        store::commit(txn).await?;
        Ok(created)
    }

    /// A user of the caller's organization: the caller itself, anyone with `users:read`.
    pub async fn get(&self, caller: &Caller, id: &str) -> Result<user::Model> {
        if !caller.reaches(id) {
            return Err(crate::error::Error::not_found("user"));
        }
        queries::users::get(&self.db, &caller.organization_id, id).await.or_not_found("user")
    }

    pub async fn get_current(&self, caller: &Caller) -> Result<CurrentUser> {
        let user =
            queries::users::get(&self.db, &caller.organization_id, &caller.user_id).await.or_not_found("user")?;
        let max_hours = match caller.organization.as_deref() {
            Some(organization) => self.sessions.max_hours_within(caller.role, organization.tier),
            None => 0,
        };
        let max_session_minutes = max_hours.saturating_mul(60);
        let default_session_minutes =
            self.sessions.default_duration_hours.as_u32().saturating_mul(60).min(max_session_minutes);
        Ok(CurrentUser { user, max_session_minutes, default_session_minutes })
    }

    pub async fn list(&self, caller: &Caller, page: &PageRequest) -> Result<Page<user::Model>> {
        Ok(queries::users::list(&self.db, &caller.organization_id, page).await?)
    }

    pub async fn update(&self, caller: &Caller, id: &str, changes: UserChanges) -> Result<user::Model> {
        let full_name = changes
            .full_name
            .as_deref()
            .map(validate_full_name)
            .transpose()
            .map_err(|d| crate::error::Error::invalid("user.full_name", d))?;
        if id == caller.user_id && (changes.disabled == Some(true) || changes.role == Some(Role::User)) {
            return Err(cannot_lock_out_self());
        }
        self.change(caller, id, "user.updated", |active, record| {
            let mut record = record;
            if let Some(full_name) = full_name {
                record = record.detail("full_name", &full_name);
                active.full_name = Set(full_name);
            }
            if let Some(role) = changes.role {
                record = record.detail("role", role);
                active.role = Set(role);
            }
            if let Some(disabled) = changes.disabled {
                record = record.detail("disabled", disabled);
                active.disabled = Set(disabled);
            }
            record
        })
        .await
    }

    /// Changes the caller's own preferences.
    pub async fn update_current(&self, caller: &Caller, expiry_emails: Option<bool>) -> Result<user::Model> {
        self.change(caller, &caller.user_id, "user.updated", |active, mut record| {
            if let Some(on) = expiry_emails {
                record = record.detail("expiry_emails", on);
                active.expiry_emails = Set(on);
            }
            record
        })
        .await
    }

    pub async fn disable(&self, caller: &Caller, id: &str) -> Result<user::Model> {
        if id == caller.user_id {
            return Err(cannot_lock_out_self());
        }
        self.change(caller, id, "user.disabled", |active, record| {
            active.disabled = Set(true);
            record
        })
        .await
    }

    pub async fn unlock(&self, caller: &Caller, id: &str) -> Result<user::Model> {
        self.change(caller, id, "user.unlocked", |active, record| {
            active.locked_until = Set(None);
            active.lockouts = Set(0);
            active.failed_login_count = Set(0);
            record
        })
        .await
    }

    /// Loads a user of the caller's organization, applies `edit`, and saves it with its audit event.
    async fn change(
        &self,
        caller: &Caller,
        id: &str,
        event_type: &'static str,
        edit: impl FnOnce(&mut user::ActiveModel, AuditRecord) -> AuditRecord,
    ) -> Result<user::Model> {
        let txn = store::begin(&self.db).await?;
        let current = queries::users::get(&txn, &caller.organization_id, id).await.or_not_found("user")?;
        let mut active = current.clone().into_active_model();
        let record = edit(&mut active, AuditRecord::new(event_type, "user", id));
        active.updated_at = Set(now());
        let updated = queries::users::update(&txn, active).await?;
        record.write(&txn, &caller.actor()).await?;
        let changed = follow_rights(&txn, &self.sessions, &current, &updated, &caller.actor()).await?;
        // Cached callers carry roles, disabled and suspended flags.
        self.callers.commit_change(txn, Whose::User(id.to_owned())).await?;
        // Sessions show their user's name and email.
        self.engine.cache().forget_user(id);
        self.engine.announce(&changed).await;
        Ok(updated)
    }
}

/// A user's live sessions follow its rights: disabling ends them, a role with a lower maximum
/// shortens them. Answers the sessions changed.
pub(super) async fn follow_rights(
    txn: &DatabaseTransaction,
    sessions: &SessionConfig,
    before: &user::Model,
    after: &user::Model,
    actor: &Actor,
) -> Result<Vec<String>> {
    let max_hours = |role: Role| Some(sessions.max_hours_for(role));
    let disabled = (after.disabled && !before.disabled).then_some("user disabled");
    let loss = Loss::of_change(disabled, max_hours(before.role), max_hours(after.role), "role changed");
    let Some(loss) = loss else { return Ok(Vec::new()) };
    Ok(transitions::take_away(txn, Holder::User(&after.id), loss, actor).await?)
}

/// Admins may not disable or demote themselves: it could leave the organization without an admin.
fn cannot_lock_out_self() -> crate::error::Error {
    crate::error::Error::failed_precondition(
        crate::pb::v1::ErrorReason::InvalidState,
        "admins cannot disable or demote themselves; ask another admin",
    )
}
