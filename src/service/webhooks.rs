//! Webhooks through WebhookService: where an organization's events go, and their deliveries.

use super::Caller;
use crate::domain::{DeliveryStatus, Permission, Violations, new_id, now};
use crate::domain::{Invalid, validate_description};
use crate::error::{Error, Result, StoreResultExt};
use crate::pb::v1::ErrorReason;
use crate::sealing::SealingKey;
use crate::store::audit::AuditRecord;
use crate::store::entity::{webhook, webhook_delivery};
use crate::store::queries::webhooks;
use crate::store::{self, Page, PageRequest};
use crate::webhook::signing;
use crate::webhook::{EVENT_TYPES, WebhookSetup};
use chrono::TimeDelta;
use sea_orm::{ActiveValue::Set, DatabaseConnection, IntoActiveModel};

/// A webhook to create.
#[derive(Debug)]
pub struct NewWebhook {
    pub url: String,
    pub event_types: Vec<String>,
    pub description: String,
}

/// Changes requested by UpdateWebhook; `None` leaves a field alone.
#[derive(Debug, Default)]
pub struct WebhookChanges {
    pub url: Option<String>,
    pub event_types: Option<Vec<String>>,
    pub description: Option<String>,
    pub disabled: Option<bool>,
}

/// How long a rotated-out secret keeps signing beside the new one.
const ROTATION_OVERLAP: TimeDelta = TimeDelta::days(1);

#[derive(Clone)]
pub struct WebhookManager {
    db: DatabaseConnection,
    setup: WebhookSetup,
    /// Webhooks an organization may have (`limits.max_webhooks_per_organization`).
    max_per_organization: u32,
}

impl WebhookManager {
    pub fn new(db: DatabaseConnection, setup: WebhookSetup, max_per_organization: u32) -> WebhookManager {
        WebhookManager { db, setup, max_per_organization }
    }

    fn key(&self) -> Result<&SealingKey> {
        self.setup.key.as_deref().ok_or_else(|| {
            Error::failed_precondition(
                ErrorReason::NotConfigured,
                "this server has no sealing_key, so it cannot keep webhook secrets; ask the operator to set one",
            )
        })
    }

    fn check_url(&self, violations: &mut Violations, field: &str, url: &str) -> Option<String> {
        let url = url.trim();
        violations.check(field, self.setup.destinations.check_url(url).map(|()| url.to_owned()))
    }

    /// Registers a webhook; answers it with its secret, shown this once.
    pub async fn create(&self, caller: &Caller, new: NewWebhook) -> Result<(webhook::Model, String)> {
        let key = self.key()?;
        let mut violations = Violations::default();
        let url = self.check_url(&mut violations, "url", &new.url);
        let event_types = violations.check("event_types", validate_event_types(&new.event_types, &caller.permissions));
        let description = violations.check("description", validate_description(&new.description));
        let (Some(url), Some(event_types), Some(description)) = (url, event_types, description) else {
            return Err(violations.into());
        };
        let (id, secret, at) = (new_id(), signing::new_secret(), now());
        let sealed = key.seal(&id, secret.as_bytes()).map_err(|err| Error::internal(anyhow::Error::msg(err)))?;
        let txn = store::begin(&self.db).await?;
        if webhooks::count(&txn, &caller.organization_id).await? >= u64::from(self.max_per_organization) {
            return Err(Error::limit_reached(
                "limits.max_webhooks_per_organization",
                self.max_per_organization,
                "webhooks of this organization",
            ));
        }
        let created = webhooks::insert(
            &txn,
            webhook::Model {
                id,
                organization_id: caller.organization_id.clone(),
                url,
                event_types,
                description,
                secret_sealed: sealed,
                previous_secret_sealed: None,
                previous_secret_expires_at: None,
                disabled_at: None,
                disabled_reason: None,
                failing_since: None,
                created_at: at,
                updated_at: at,
                owner_user_id: Some(caller.user_id.clone()),
                owner_api_key_id: caller.api_key_id.clone(),
            },
        )
        .await?;
        AuditRecord::new("webhook.created", "webhook", &created.id)
            .detail("url", &created.url)
            .detail("event_types", &created.event_types)
            .write(&txn, &caller.actor())
            .await?;
        store::commit(txn).await?;
        Ok((created, secret))
    }

    pub async fn get(&self, caller: &Caller, id: &str) -> Result<webhook::Model> {
        webhooks::get(&self.db, &caller.organization_id, id).await.or_not_found("webhook")
    }

    pub async fn list(&self, caller: &Caller, page: &PageRequest) -> Result<Page<webhook::Model>> {
        Ok(webhooks::list(&self.db, &caller.organization_id, page).await?)
    }

    /// Changes a webhook. Turning it back on clears its failing streak.
    pub async fn update(&self, caller: &Caller, id: &str, changes: WebhookChanges) -> Result<webhook::Model> {
        let mut violations = Violations::default();
        let url = changes.url.as_deref().map(|url| self.check_url(&mut violations, "webhook.url", url));
        let event_types = changes
            .event_types
            .as_deref()
            .map(|types| violations.check("webhook.event_types", validate_event_types(types, &caller.permissions)));
        let description = changes
            .description
            .as_deref()
            .map(|text| violations.check("webhook.description", validate_description(text)));
        if !violations.is_empty() {
            return Err(violations.into());
        }
        let txn = store::begin(&self.db).await?;
        let current = webhooks::get(&txn, &caller.organization_id, id).await.or_not_found("webhook")?;
        let mut record = AuditRecord::new("webhook.updated", "webhook", id);
        let at = now();
        let disabled_at = current.disabled_at;
        let mut active = current.into_active_model();
        if let Some(Some(url)) = url {
            record = record.detail("url", &url);
            active.url = Set(url);
        }
        if let Some(Some(types)) = event_types {
            record = record.detail("event_types", &types);
            active.event_types = Set(types);
        }
        // Whoever says where it posts and what owns it from now on: its events become those
        // they may read (else a key holding only webhooks:write could point an admin's
        // webhook at itself).
        if changes.url.is_some() || changes.event_types.is_some() {
            active.owner_user_id = Set(Some(caller.user_id.clone()));
            active.owner_api_key_id = Set(caller.api_key_id.clone());
        }
        if let Some(Some(description)) = description {
            active.description = Set(description);
        }
        match changes.disabled {
            Some(true) if disabled_at.is_none() => {
                record = record.detail("disabled", true);
                active.disabled_at = Set(Some(at));
                active.disabled_reason = Set(Some("disabled by an admin".to_owned()));
            }
            Some(false) if disabled_at.is_some() => {
                record = record.detail("disabled", false);
                active.disabled_at = Set(None);
                active.disabled_reason = Set(None);
                active.failing_since = Set(None);
            }
            _ => {}
        }
        active.updated_at = Set(at);
        let updated = webhooks::update(&txn, active).await?;
        record.write(&txn, &caller.actor()).await?;
        store::commit(txn).await?;
        Ok(updated)
    }

    pub async fn delete(&self, caller: &Caller, id: &str) -> Result<()> {
        let txn = store::begin(&self.db).await?;
        if !webhooks::delete(&txn, &caller.organization_id, id).await? {
            return Err(Error::not_found("webhook"));
        }
        AuditRecord::new("webhook.deleted", "webhook", id).write(&txn, &caller.actor()).await?;
        store::commit(txn).await?;
        Ok(())
    }

    /// Makes a new secret; the old one signs beside it for a day. Answers the new one, shown
    /// this once.
    pub async fn rotate_secret(&self, caller: &Caller, id: &str) -> Result<(webhook::Model, String)> {
        let key = self.key()?;
        let txn = store::begin(&self.db).await?;
        let current = webhooks::get(&txn, &caller.organization_id, id).await.or_not_found("webhook")?;
        let secret = signing::new_secret();
        let sealed = key.seal(id, secret.as_bytes()).map_err(|err| Error::internal(anyhow::Error::msg(err)))?;
        let at = now();
        let previous = current.secret_sealed.clone();
        let mut active = current.into_active_model();
        active.previous_secret_sealed = Set(Some(previous));
        active.previous_secret_expires_at = Set(Some(at + ROTATION_OVERLAP));
        active.secret_sealed = Set(sealed);
        active.updated_at = Set(at);
        let rotated = webhooks::update(&txn, active).await?;
        AuditRecord::new("webhook.secret_rotated", "webhook", id).write(&txn, &caller.actor()).await?;
        store::commit(txn).await?;
        Ok((rotated, secret))
    }

    pub async fn list_deliveries(
        &self,
        caller: &Caller,
        webhook_id: &str,
        page: &PageRequest,
    ) -> Result<Page<webhook_delivery::Model>> {
        webhooks::get(&self.db, &caller.organization_id, webhook_id).await.or_not_found("webhook")?;
        let mut listed = webhooks::list_deliveries(&self.db, &caller.organization_id, webhook_id, page).await?;
        // A payload tells what its event tells: only to a caller who may read that.
        for delivery in &mut listed.items {
            if !Permission::sees_event(&caller.permissions, &delivery.event_type) {
                delivery.payload = String::new();
            }
        }
        Ok(listed)
    }

    /// Queues a delivery again, due now, with a new retry window.
    pub async fn redeliver(&self, caller: &Caller, delivery_id: &str) -> Result<webhook_delivery::Model> {
        let txn = store::begin(&self.db).await?;
        let current = webhooks::get_delivery(&txn, &caller.organization_id, delivery_id)
            .await
            .or_not_found("webhook delivery")?;
        let hook = webhooks::get(&txn, &caller.organization_id, &current.webhook_id).await.or_not_found("webhook")?;
        if hook.disabled_at.is_some() {
            return Err(Error::failed_precondition(
                ErrorReason::InvalidState,
                "the webhook is disabled; turn it on (UpdateWebhook, disabled false) first",
            ));
        }
        let at = now();
        let mut active = current.into_active_model();
        active.status = Set(DeliveryStatus::Pending);
        active.next_attempt_at = Set(at);
        active.give_up_at =
            Set(at + TimeDelta::from_std(self.setup.settings.retry_hours.get()).unwrap_or(TimeDelta::MAX));
        active.lease_owner = Set(None);
        active.lease_expires_at = Set(None);
        active.updated_at = Set(at);
        let queued = webhooks::update_delivery(&txn, active).await?;
        store::commit(txn).await?;
        self.setup.wake.notify_one();
        Ok(queued)
    }
}

/// Event types as stored (a JSON list), each known and named once.
/// The event types, each known and readable by a caller holding `held` (none named: every type,
/// of which those the owner may read are sent).
fn validate_event_types(types: &[String], held: &[Permission]) -> Result<String, Invalid> {
    let mut kept: Vec<&str> = Vec::new();
    for kind in types {
        let kind = kind.trim();
        if !EVENT_TYPES.contains(&kind) {
            return Err(format!("{kind:?} is not an event type; the types are {}", EVENT_TYPES.join(", ")).into());
        }
        if !Permission::sees_event(held, kind) {
            return Err(format!(
                "{kind} needs {} (or audit:read) to be read, which the caller does not hold",
                Permission::to_see_event(kind)
            )
            .into());
        }
        if !kept.contains(&kind) {
            kept.push(kind);
        }
    }
    serde_json::to_string(&kept).map_err(|err| Invalid(err.to_string()))
}
