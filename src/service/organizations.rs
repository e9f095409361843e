//! Organizations: members read their own and admins change its settings; the platform operator
//! founds, lists, suspends and resumes them and sets their tier and cloud scopes.

use super::bootstrap::{Bootstrap, Founding, found};
use super::{Caller, CallerCache, Whose};
use crate::domain::{CloudScopes, Reach, Tier, Violations, normalize_email, now, validate_full_name, validate_name};
use crate::engine::{Engine, transitions, transitions::Loss};
use crate::error::{Error, Result, StoreResultExt};
use crate::pb::v1::ErrorReason;
use crate::store::audit::AuditRecord;
use crate::store::entity::organization;
use crate::store::queries::sessions::Holder;
use crate::store::{self, Page, PageRequest, queries};
use sea_orm::{ActiveValue::Set, DatabaseConnection, DatabaseTransaction, IntoActiveModel};

/// Changes requested by UpdateOrganization; `None` leaves a field alone.
#[derive(Debug, Default)]
pub struct OrganizationChanges {
    pub name: Option<String>,
    pub allow_private_addresses: Option<bool>,
    /// The operator's alone.
    pub tier: Option<Tier>,
    /// The operator's alone.
    pub cloud_scopes: Option<CloudScopes>,
}

/// A new organization, as CreateOrganization asks for it.
#[derive(Debug)]
pub struct NewOrganization {
    pub name: String,
    pub tier: Option<Tier>,
    pub allow_private_addresses: bool,
    pub cloud_scopes: CloudScopes,
    pub admin_email: String,
    pub admin_full_name: String,
}

#[derive(Clone)]
pub struct OrganizationManager {
    db: DatabaseConnection,
    callers: CallerCache,
    engine: Engine,
}

/// The organization a call names in `field`: members reach only their own (empty names it; any
/// other is NOT_FOUND), the operator any it names.
pub(super) fn target<'a>(caller: &'a Caller, field: &str, id: &'a str) -> Result<&'a str> {
    match caller.reach {
        Reach::Platform if id.is_empty() => Err(Error::invalid(field, "the operator must name the organization")),
        Reach::Platform => Ok(id),
        _ if id.is_empty() || id == caller.organization_id => Ok(&caller.organization_id),
        _ => Err(Error::not_found("organization")),
    }
}

fn operator_required(what: &str) -> Error {
    Error::PermissionDenied {
        reason: ErrorReason::OperatorRequired,
        message: format!("only the platform operator may change {what}"),
    }
}

impl OrganizationManager {
    pub fn new(db: DatabaseConnection, callers: CallerCache, engine: Engine) -> OrganizationManager {
        OrganizationManager { db, callers, engine }
    }

    /// `field` is where the request names the organization.
    pub async fn get(&self, caller: &Caller, field: &str, id: &str) -> Result<organization::Model> {
        let id = target(caller, field, id)?;
        queries::organizations::get(&self.db, id).await.or_not_found("organization")
    }

    /// Every organization (the operator's).
    pub async fn list(&self, page: &PageRequest) -> Result<Page<organization::Model>> {
        Ok(queries::organizations::list(&self.db, page).await?)
    }

    /// Founds an organization with its first admin (the operator's); it may act only within the
    /// cloud scopes given.
    pub async fn create(&self, caller: &Caller, new: NewOrganization) -> Result<Bootstrap> {
        let mut violations = Violations::default();
        let name = violations.check("organization.name", validate_name(&new.name));
        let admin_email = violations.check("admin_email", normalize_email(&new.admin_email));
        let admin_full_name = violations.check("admin_full_name", validate_full_name(&new.admin_full_name));
        new.cloud_scopes.validate("organization.cloud_scopes", &mut violations);
        let (Some(name), Some(admin_email), Some(admin_full_name), true) =
            (name, admin_email, admin_full_name, violations.is_empty())
        else {
            return Err(violations.into());
        };
        let founding = Founding {
            name,
            tier: new.tier.unwrap_or(Tier::Free),
            allow_private_addresses: new.allow_private_addresses,
            cloud_scopes: new.cloud_scopes,
            admin_email,
            admin_full_name,
        };
        let txn = store::begin(&self.db).await?;
        let created = found(&txn, founding, "organization.created", &caller.actor_in("")).await?;
        store::commit(txn).await?;
        Ok(created)
    }

    /// Applies `changes` to the organization named `id` (see [`target`]).
    pub async fn update(&self, caller: &Caller, id: &str, changes: OrganizationChanges) -> Result<organization::Model> {
        let id = target(caller, "organization.id", id)?;
        if caller.reach != Reach::Platform {
            if changes.tier.is_some() {
                return Err(operator_required("the tier"));
            }
            if changes.cloud_scopes.is_some() {
                return Err(operator_required("cloud scopes"));
            }
        }
        let mut violations = Violations::default();
        let name = changes.name.as_deref().and_then(|name| violations.check("organization.name", validate_name(name)));
        if let Some(scopes) = &changes.cloud_scopes {
            scopes.validate("organization.cloud_scopes", &mut violations);
        }
        if !violations.is_empty() {
            return Err(violations.into());
        }
        self.change(caller, id, "organization.updated", |active, mut record| {
            if let Some(name) = name {
                record = record.detail("name", &name);
                active.name = Set(name);
            }
            if let Some(tier) = changes.tier {
                record = record.detail("tier", tier);
                active.tier = Set(tier);
            }
            if let Some(allow) = changes.allow_private_addresses {
                record = record.detail("allow_private_addresses", allow);
                active.allow_private_addresses = Set(allow);
            }
            if let Some(scopes) = &changes.cloud_scopes {
                let stored = queries::organizations::encode_cloud_scopes(scopes);
                record = record.detail("cloud_scopes", &stored);
                active.cloud_scopes = Set(stored);
            }
            record
        })
        .await
    }

    /// Suspends (ending its live sessions) or resumes an organization (the operator's).
    pub async fn set_suspended(
        &self,
        caller: &Caller,
        id: &str,
        suspended: bool,
        reason: &str,
    ) -> Result<organization::Model> {
        let id = target(caller, "organization_id", id)?;
        let event = if suspended { "organization.suspended" } else { "organization.resumed" };
        self.change(caller, id, event, |active, record| {
            active.suspended = Set(suspended);
            if reason.is_empty() { record } else { record.detail("reason", reason) }
        })
        .await
    }

    /// One change to an organization, audited, with its sessions following its new standing.
    async fn change(
        &self,
        caller: &Caller,
        id: &str,
        event: &'static str,
        apply: impl FnOnce(&mut organization::ActiveModel, AuditRecord) -> AuditRecord,
    ) -> Result<organization::Model> {
        let txn = store::begin(&self.db).await?;
        let current = queries::organizations::get(&txn, id).await.or_not_found("organization")?;
        let mut active = current.clone().into_active_model();
        let record = apply(&mut active, AuditRecord::new(event, "organization", id));
        active.updated_at = Set(now());
        let updated = queries::organizations::update(&txn, active).await?;
        let actor = caller.actor_in(id);
        record.write(&txn, &actor).await?;
        let changed = follow_rights(&txn, &actor, &current, &updated).await?;
        // Cached callers carry roles, disabled flags and their organization.
        self.callers.commit_change(txn, Whose::Organization(id.to_owned())).await?;
        self.engine.announce(&changed).await;
        Ok(updated)
    }
}

/// An organization's live sessions follow its standing: suspension ends them, a tier with a
/// lower maximum shortens them. Answers the sessions changed.
async fn follow_rights(
    txn: &DatabaseTransaction,
    actor: &crate::domain::Actor,
    before: &organization::Model,
    after: &organization::Model,
) -> Result<Vec<String>> {
    let max_hours = |tier: Tier| Some(tier.max_session_hours());
    let suspended = (after.suspended && !before.suspended).then_some("organization suspended");
    let loss = Loss::of_change(suspended, max_hours(before.tier), max_hours(after.tier), "tier changed");
    let Some(loss) = loss else { return Ok(Vec::new()) };
    Ok(transitions::take_away(txn, Holder::Organization(&after.id), loss, actor).await?)
}
