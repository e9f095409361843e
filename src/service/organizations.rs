//! The caller's organization.

use super::{Caller, CallerCache};
use crate::domain::{Permission, Tier, now, validate_name};
use crate::engine::{Engine, transitions, transitions::Loss};
use crate::error::{Error, Result, StoreResultExt};
use crate::store::audit::AuditRecord;
use crate::store::entity::organization;
use crate::store::queries::sessions::Holder;
use crate::store::{self, queries};
use sea_orm::{ActiveValue::Set, DatabaseConnection, DatabaseTransaction, IntoActiveModel};

/// Changes requested by UpdateOrganization; `None` leaves a field alone.
#[derive(Debug, Default)]
pub struct OrganizationChanges {
    pub name: Option<String>,
    pub tier: Option<Tier>,
    pub suspended: Option<bool>,
    pub allow_private_addresses: Option<bool>,
}

#[derive(Clone)]
pub struct OrganizationManager {
    db: DatabaseConnection,
    callers: CallerCache,
    engine: Engine,
}

impl OrganizationManager {
    pub fn new(db: DatabaseConnection, callers: CallerCache, engine: Engine) -> OrganizationManager {
        OrganizationManager { db, callers, engine }
    }

    pub async fn get(&self, caller: &Caller) -> Result<organization::Model> {
        queries::organizations::get(&self.db, &caller.organization_id).await.or_not_found("organization")
    }

    /// Applies `changes` (admins only). Suspension is allowed here even while suspended, so an
    /// admin can lift it.
    pub async fn update(&self, caller: &Caller, changes: OrganizationChanges) -> Result<organization::Model> {
        caller.require(Permission::UsersWrite)?;
        let name = changes
            .name
            .as_deref()
            .map(validate_name)
            .transpose()
            .map_err(|d| Error::invalid("organization.name", d))?;
        let txn = store::begin(&self.db).await?;
        let current = queries::organizations::get(&txn, &caller.organization_id).await.or_not_found("organization")?;
        let mut record = AuditRecord::new("organization.updated", "organization", &current.id);
        let mut active = current.clone().into_active_model();
        if let Some(name) = name {
            record = record.detail("name", &name);
            active.name = Set(name);
        }
        if let Some(tier) = changes.tier {
            record = record.detail("tier", tier);
            active.tier = Set(tier.as_str().to_owned());
        }
        if let Some(suspended) = changes.suspended {
            record = record.detail("suspended", suspended);
            active.suspended = Set(suspended);
        }
        if let Some(allow) = changes.allow_private_addresses {
            record = record.detail("allow_private_addresses", allow);
            active.allow_private_addresses = Set(allow);
        }
        active.updated_at = Set(now());
        let updated = queries::organizations::update(&txn, active).await?;
        record.write(&txn, &caller.actor()).await?;
        let changed = follow_rights(&txn, caller, &current, &updated).await?;
        // Cached callers carry roles, disabled and suspended flags.
        self.callers.commit_change(txn).await?;
        self.engine.announce(&changed).await;
        Ok(updated)
    }
}

/// An organization's live sessions follow its standing: suspension ends them, a tier with a
/// lower maximum shortens them. Answers the sessions changed.
async fn follow_rights(
    txn: &DatabaseTransaction,
    caller: &Caller,
    before: &organization::Model,
    after: &organization::Model,
) -> Result<Vec<String>> {
    let max_hours = |stored: &str| stored.parse::<Tier>().ok().map(Tier::max_session_hours);
    let suspended = (after.suspended && !before.suspended).then_some("organization suspended");
    let loss = Loss::of_change(suspended, max_hours(&before.tier), max_hours(&after.tier), "tier changed");
    let Some(loss) = loss else { return Ok(Vec::new()) };
    Ok(transitions::take_away(txn, Holder::Organization(&after.id), loss, &caller.actor()).await?)
}
