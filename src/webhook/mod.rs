//! Webhooks: the audit trail is the outbox. Every event is written in the transaction of the
//! change it records; the dispatcher turns undispatched events into one delivery per matching
//! webhook (in one transaction, so each is enqueued exactly once), and the delivery loop posts
//! them at least once, signed, retrying with jittered exponential backoff until the retry
//! window closes. Both run on every replica: row locks make fan-out safe, and claims with a
//! lease make a delivery one replica's at a time (a dead replica's claims run out and are
//! taken over).

mod destination;
pub mod signing;

pub use destination::{Answer, Destinations, SetupError, Undelivered};

use crate::domain::{Actor, DeliveryStatus, Permission, new_id, now};
use crate::sealing::SealingKey;
use crate::settings::{Count, Days, Hours, Millis, Seconds, Secret};
use crate::store::audit::AuditRecord;
use crate::store::entity::{audit_event, webhook, webhook_delivery};
use crate::store::queries::sessions::SessionRecord;
use crate::store::queries::{sessions, webhooks};
use crate::store::{self, StoreResult};
use chrono::{DateTime, TimeDelta, Utc};
use rand::Rng;
use sea_orm::DatabaseConnection;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

/// The event types a webhook can subscribe to. Most are audit event types as they are; a
/// session reaching EXPIRED or CANCELLED is `session.ended` (its `ended_reason` says which).
pub const EVENT_TYPES: &[&str] = &[
    "session.started",
    "session.active",
    "session.partial",
    "session.failed",
    "session.expiring_soon",
    "session.ended",
    "session.extended",
    "session.shortened",
    "session.address_changed",
    "session.resource_withdrawn",
    "approval.requested",
    "approval.decided",
    "approval.expired",
    "rule.failed",
    "rule.repaired",
    "resource_ip.retried",
    "resource.check_failed",
    "resource.check_recovered",
    "resource.call_refused",
    "resource.created",
    "resource.updated",
    "resource.deleted",
    "resource.assigned",
    "resource.unassigned",
    "user.created",
    "user.updated",
    "user.disabled",
    "user.locked",
    "user.unlocked",
    "user.password_set",
    "user.password_cleared",
    "user.provisioned",
    "user.deprovisioned",
    "api_key.created",
    "api_key.revoked",
    "login.succeeded",
    "login.failed",
    "login.extended",
    "login.closed",
    "login.sso",
    "organization.updated",
    "organization.suspended",
    "organization.resumed",
    "webhook.created",
    "webhook.updated",
    "webhook.deleted",
    "webhook.secret_rotated",
    "webhook.disabled",
    "identity_provider.created",
    "identity_provider.updated",
    "identity_provider.deleted",
];

/// The webhook event an audit event is, if any (the steps in between, a session ending or
/// waiting, are not sent).
pub fn event_type_of(audit_type: &str) -> Option<&str> {
    match audit_type {
        "session.expired" | "session.cancelled" => Some("session.ended"),
        "session.pending" | "session.expiring" => None,
        other => EVENT_TYPES.contains(&other).then_some(other),
    }
}

/// Renders the `data` of a payload: the API's proto3 JSON of the audit event and, for session
/// and rule events, of the session as it is when the event is dispatched. The gRPC layer owns
/// the API's types, so it supplies this.
pub trait Render: Send + Sync + 'static {
    fn data(&self, event: &audit_event::Model, session: Option<&SessionRecord>) -> serde_json::Value;
}

/// Webhook delivery: the `[webhooks]` settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// The old name of the top-level `sealing_key`.
    pub secret_key: Option<Secret>,
    /// URL prefixes (for example `http://10.0.0.5:8080/`) that may be plain http or reach
    /// private, loopback or link-local addresses; every other URL must be https to a public one.
    pub allowed_private_endpoints: Vec<String>,
    /// The longest one delivery attempt may take, connecting included.
    pub timeout_secs: Seconds<1, 60>,
    /// Before the first retry of a failed delivery; each further one waits twice as long (at
    /// most an hour), with jitter.
    pub retry_base_ms: Millis<1, 3_600_000>,
    /// How long a delivery is retried before it is marked failed.
    pub retry_hours: Hours<0, 720>,
    /// A webhook whose deliveries have failed without a success for this long is disabled.
    pub disable_after_days: Days<1, 365>,
    /// How often the outbox is looked at when nothing wakes it.
    pub poll_interval_ms: Millis<10, 3_600_000>,
    /// Most deliveries in flight at once on one replica.
    pub concurrency: Count<1, 4_096>,
    /// Most deliveries of one organization in flight at once, across replicas: one
    /// organization's slow receivers never hold every slot.
    pub max_in_flight_per_organization: Count<1, 4_096>,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            secret_key: None,
            allowed_private_endpoints: Vec::new(),
            timeout_secs: Seconds::of::<10>(),
            retry_base_ms: Millis::of::<5_000>(),
            retry_hours: Hours::of::<24>(),
            disable_after_days: Days::of::<5>(),
            poll_interval_ms: Millis::of::<1_000>(),
            concurrency: Count::of::<64>(),
            max_in_flight_per_organization: Count::of::<8>(),
        }
    }
}

/// What the webhook use-cases and the dispatcher share: the sealing key, where posts may go,
/// the tuning and the dispatcher's wake-up.
#[derive(Clone)]
pub struct WebhookSetup {
    pub key: Option<Arc<SealingKey>>,
    pub destinations: Destinations,
    pub settings: WebhooksConfig,
    pub wake: Arc<Notify>,
}

impl WebhookSetup {
    /// Webhooks as configured, their secrets sealed with `key` (none: no webhook can be made).
    pub fn from_config(config: &WebhooksConfig, key: Option<Arc<SealingKey>>) -> Result<WebhookSetup, SetupError> {
        Ok(WebhookSetup {
            key,
            destinations: Destinations::new(config.allowed_private_endpoints.clone(), config.timeout_secs.get())?,
            settings: config.clone(),
            wake: Arc::new(Notify::new()),
        })
    }
}

/// Fans events out and delivers them.
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

struct Inner {
    db: DatabaseConnection,
    setup: WebhookSetup,
    render: Arc<dyn Render>,
    owner: String,
}

/// Most events turned into deliveries per transaction.
const FAN_OUT_BATCH: u64 = 500;

impl Dispatcher {
    pub fn new(db: DatabaseConnection, setup: WebhookSetup, render: Arc<dyn Render>) -> Dispatcher {
        let owner = format!("webhooks:{}", new_id());
        Dispatcher { inner: Arc::new(Inner { db, setup, render, owner }) }
    }

    /// Dispatches and delivers until `stop` turns true; attempts in flight then are abandoned
    /// (their claims run out and another round, here or on another replica, posts them again).
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let settings = &self.inner.setup.settings;
        let mut in_flight = JoinSet::new();
        let mut last_disable_check: Option<tokio::time::Instant> = None;
        loop {
            if let Err(err) = self.fan_out_all().await {
                tracing::warn!(error = %err, "webhook fan-out failed");
            }
            // Failing for days is not urgent to the second: every sixty polls is soon enough.
            if last_disable_check.is_none_or(|at| at.elapsed() >= settings.poll_interval_ms.get().saturating_mul(60)) {
                last_disable_check = Some(tokio::time::Instant::now());
                if let Err(err) = self.disable_failing().await {
                    tracing::warn!(error = %err, "disabling failing webhooks failed");
                }
            }
            let room = settings.concurrency.as_usize().saturating_sub(in_flight.len());
            if room > 0 {
                match self.claim(room).await {
                    Ok(claimed) => {
                        for (delivery, hook) in claimed {
                            let dispatcher = self.clone();
                            in_flight.spawn(async move { dispatcher.attempt(delivery, hook).await });
                        }
                    }
                    Err(err) => tracing::warn!(error = %err, "claiming webhook deliveries failed"),
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(settings.poll_interval_ms.get()) => {}
                () = self.inner.setup.wake.notified() => {}
                Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
                () = crate::shutdown::stopping(&mut stop) => return,
            }
        }
    }

    /// Fans out every undispatched event, a batch per transaction.
    async fn fan_out_all(&self) -> StoreResult<()> {
        while self.fan_out().await? == FAN_OUT_BATCH as usize {}
        Ok(())
    }

    /// Turns one batch of undispatched events into deliveries. Answers how many events it took.
    pub async fn fan_out(&self) -> StoreResult<usize> {
        let inner = &self.inner;
        let txn = store::begin(&inner.db).await?;
        let events = webhooks::undispatched_events(&txn, FAN_OUT_BATCH).await?;
        if events.is_empty() {
            return Ok(0);
        }
        let mut organizations: Vec<&str> = events.iter().map(|event| event.organization_id.as_str()).collect();
        organizations.sort_unstable();
        organizations.dedup();
        let mut hooks_of: HashMap<String, Vec<Subscriber>> = HashMap::new();
        for hook in webhooks::enabled_of(&txn, &organizations).await? {
            let types = serde_json::from_str::<Vec<String>>(&hook.event_types).unwrap_or_default();
            let may_read = owner_permissions(&txn, &hook).await?;
            hooks_of.entry(hook.organization_id.clone()).or_default().push(Subscriber { hook, types, may_read });
        }
        // Which webhooks want which event, and the sessions their payloads show.
        let mut wanted = Vec::new();
        let mut session_ids = HashSet::new();
        for event in &events {
            let Some(kind) = event_type_of(&event.event_type) else { continue };
            let hooks: Vec<&webhook::Model> = hooks_of
                .get(&event.organization_id)
                .into_iter()
                .flatten()
                .filter(|subscriber| subscriber.wants(event, kind))
                .map(|subscriber| &subscriber.hook)
                .collect();
            if hooks.is_empty() {
                continue;
            }
            let session_id = session_of(event);
            if let Some(id) = &session_id {
                session_ids.insert(id.clone());
            }
            wanted.push((event, kind, session_id, hooks));
        }
        let ids: Vec<&str> = session_ids.iter().map(String::as_str).collect();
        let shown: HashMap<String, SessionRecord> = if ids.is_empty() {
            HashMap::new()
        } else {
            sessions::load_many(&txn, &ids)
                .await?
                .into_iter()
                .map(|record| (record.session.id.clone(), record))
                .collect()
        };
        let at = now();
        let mut deliveries = Vec::new();
        for (event, kind, session_id, hooks) in wanted {
            let session = session_id.and_then(|id| shown.get(&id));
            let payload = serde_json::json!({
                "type": kind,
                "timestamp": event.time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                "data": inner.render.data(event, session),
            })
            .to_string();
            for hook in hooks {
                deliveries.push(webhook_delivery::Model {
                    id: new_id(),
                    organization_id: event.organization_id.clone(),
                    webhook_id: hook.id.clone(),
                    event_id: event.id.clone(),
                    event_type: kind.to_owned(),
                    payload: payload.clone(),
                    status: DeliveryStatus::Pending,
                    attempts: 0,
                    next_attempt_at: at,
                    give_up_at: at + delta(inner.setup.settings.retry_hours.get()),
                    last_response_code: None,
                    last_error: None,
                    lease_owner: None,
                    lease_expires_at: None,
                    created_at: at,
                    updated_at: at,
                    delivered_at: None,
                });
            }
        }
        webhooks::insert_deliveries(&txn, deliveries).await?;
        let event_ids: Vec<&str> = events.iter().map(|event| event.id.as_str()).collect();
        webhooks::mark_dispatched(&txn, &event_ids, at).await?;
        store::commit(txn).await?;
        Ok(events.len())
    }

    /// Claims due deliveries with their webhooks.
    async fn claim(&self, limit: usize) -> StoreResult<Vec<(webhook_delivery::Model, Option<webhook::Model>)>> {
        let inner = &self.inner;
        let at = now();
        // Long enough for one attempt (the post's own timeout) and its saving.
        let until = at + delta(inner.setup.destinations.timeout()) + TimeDelta::seconds(30);
        let token = format!("{}:{}", inner.owner, new_id());
        let settings = &inner.setup.settings;
        let claimed = webhooks::claim_due(
            &inner.db,
            &token,
            at,
            until,
            limit as u64,
            settings.max_in_flight_per_organization.get(),
        )
        .await?;
        if claimed.is_empty() {
            return Ok(Vec::new());
        }
        let mut hook_ids: Vec<&str> = claimed.iter().map(|delivery| delivery.webhook_id.as_str()).collect();
        hook_ids.sort_unstable();
        hook_ids.dedup();
        let hooks: HashMap<String, webhook::Model> =
            webhooks::by_ids(&inner.db, &hook_ids).await?.into_iter().map(|hook| (hook.id.clone(), hook)).collect();
        Ok(claimed
            .into_iter()
            .map(|delivery| {
                let hook = hooks.get(&delivery.webhook_id).cloned();
                (delivery, hook)
            })
            .collect())
    }

    /// Posts one delivery and records the outcome.
    async fn attempt(&self, mut delivery: webhook_delivery::Model, hook: Option<webhook::Model>) {
        let inner = &self.inner;
        let token = delivery.lease_owner.clone().unwrap_or_default();
        let outcome = match hook.as_ref().filter(|hook| hook.disabled_at.is_none()) {
            Some(hook) => match owner_permissions(&inner.db, hook).await {
                Ok(may_read) if Permission::sees_event(&may_read, &delivery.event_type) => {
                    self.post(hook, &delivery).await
                }
                // Demoted, disabled or revoked since: its events stop with its right to them.
                Ok(_) => Err(Attempt::Abandoned("the webhook's owner may no longer read this event".to_owned())),
                Err(err) => Err(Attempt::Failed(Undelivered {
                    reason: "this server could not check the webhook's owner",
                    detail: err.to_string(),
                })),
            },
            None => Err(Attempt::Abandoned("the webhook is disabled".to_owned())),
        };
        let at = now();
        delivery.updated_at = at;
        let mut succeeded = false;
        match outcome {
            Ok(answer) if answer.accepted() => {
                delivery.attempts = delivery.attempts.saturating_add(1);
                delivery.status = DeliveryStatus::Delivered;
                delivery.delivered_at = Some(at);
                delivery.last_response_code = Some(i32::from(answer.status));
                delivery.last_error = None;
                succeeded = true;
            }
            Ok(answer) => {
                delivery.attempts = delivery.attempts.saturating_add(1);
                delivery.last_response_code = Some(i32::from(answer.status));
                delivery.last_error = Some(format!("the receiver answered HTTP {}", answer.status));
                self.schedule_retry(&mut delivery, at);
            }
            Err(Attempt::Failed(undelivered)) => {
                tracing::info!(
                    delivery_id = %delivery.id, webhook_id = %delivery.webhook_id, detail = %undelivered.detail,
                    "webhook attempt got no answer"
                );
                delivery.attempts = delivery.attempts.saturating_add(1);
                delivery.last_response_code = None;
                delivery.last_error = Some(undelivered.reason.to_owned());
                self.schedule_retry(&mut delivery, at);
            }
            Err(Attempt::Abandoned(reason)) => {
                delivery.status = DeliveryStatus::Failed;
                delivery.last_error = Some(reason);
            }
        }
        tracing::debug!(
            delivery_id = %delivery.id, webhook_id = %delivery.webhook_id, status = %delivery.status,
            attempts = delivery.attempts, "webhook attempt"
        );
        crate::monitoring::webhook_attempt(if succeeded { "delivered" } else { "failed" });
        let saved = async {
            let webhook_id = delivery.webhook_id.clone();
            if !webhooks::save_attempt(&inner.db, &token, delivery).await? {
                return Ok(());
            }
            if succeeded {
                webhooks::mark_succeeding(&inner.db, &webhook_id).await
            } else {
                webhooks::mark_failing(&inner.db, &webhook_id, at).await
            }
        };
        if let Err(err) = saved.await {
            tracing::warn!(error = %err, "saving a webhook attempt failed; it will be made again");
        }
    }

    /// Signs and posts; an error means the attempt never reached an answer.
    async fn post(&self, hook: &webhook::Model, delivery: &webhook_delivery::Model) -> Result<Answer, Attempt> {
        let unsigned = |detail: &dyn std::fmt::Display| {
            Attempt::Failed(Undelivered {
                reason: "this server could not sign the delivery",
                detail: detail.to_string(),
            })
        };
        let key = self
            .inner
            .setup
            .key
            .as_ref()
            .ok_or_else(|| unsigned(&"sealing_key is not set on this server, so it cannot sign"))?;
        let timestamp = now().timestamp();
        let body = delivery.payload.as_bytes();
        let mut signatures = Vec::new();
        let mut secrets = vec![&hook.secret_sealed];
        if let (Some(previous), Some(until)) = (&hook.previous_secret_sealed, hook.previous_secret_expires_at)
            && until > now()
        {
            secrets.push(previous);
        }
        for sealed in secrets {
            let secret = key.open_text(&hook.id, sealed).map_err(|err| unsigned(&err))?;
            signatures.push(signing::sign(&secret, &delivery.event_id, timestamp, body).map_err(|err| unsigned(&err))?);
        }
        let headers = [
            ("webhook-id", delivery.event_id.clone()),
            ("webhook-timestamp", timestamp.to_string()),
            ("webhook-signature", signatures.join(" ")),
        ];
        self.inner
            .setup
            .destinations
            .post(&hook.url, &headers, bytes::Bytes::copy_from_slice(body))
            .await
            .map_err(Attempt::Failed)
    }

    /// Schedules the next attempt after a failed one, or ends the delivery FAILED once the
    /// retry window has closed.
    fn schedule_retry(&self, delivery: &mut webhook_delivery::Model, at: DateTime<Utc>) {
        let next = at + backoff(self.inner.setup.settings.retry_base_ms.get(), delivery.attempts);
        if next > delivery.give_up_at {
            delivery.status = DeliveryStatus::Failed;
        } else {
            delivery.next_attempt_at = next;
        }
    }

    /// Disables webhooks whose deliveries have failed without a success for too long.
    async fn disable_failing(&self) -> StoreResult<()> {
        let inner = &self.inner;
        let at = now();
        let txn = store::begin(&inner.db).await?;
        for hook in
            webhooks::failing_since_before(&txn, at - delta(inner.setup.settings.disable_after_days.get())).await?
        {
            let since = hook.failing_since.map(|since| since.to_rfc3339()).unwrap_or_default();
            let reason = format!("every delivery since {since} failed");
            tracing::warn!(webhook_id = %hook.id, %reason, "webhook disabled");
            webhooks::fail_pending_of(&txn, &hook.id, "the webhook was disabled", at).await?;
            let (id, organization_id) = (hook.id.clone(), hook.organization_id.clone());
            let mut active: webhook::ActiveModel = hook.into();
            active.disabled_at = sea_orm::ActiveValue::Set(Some(at));
            active.disabled_reason = sea_orm::ActiveValue::Set(Some(reason.clone()));
            active.updated_at = sea_orm::ActiveValue::Set(at);
            webhooks::update(&txn, active).await?;
            AuditRecord::new("webhook.disabled", "webhook", id)
                .detail("reason", reason)
                .write(&txn, &Actor::server(&organization_id))
                .await?;
        }
        store::commit(txn).await
    }
}

enum Attempt {
    /// No answer (connection, TLS, timeout, signing): retried.
    Failed(Undelivered),
    /// Not to be tried again.
    Abandoned(String),
}

/// The session an event is about: its target, or the session its details name.
fn session_of(event: &audit_event::Model) -> Option<String> {
    if event.target_type == "session" {
        return Some(event.target_id.clone());
    }
    let details: BTreeMap<String, String> = serde_json::from_str(&event.details).ok()?;
    details.get("session_id").cloned()
}

/// A webhook as fan-out sees it.
struct Subscriber {
    hook: webhook::Model,
    /// The types it asked for; empty for all.
    types: Vec<String>,
    /// What its owner may read now.
    may_read: Vec<Permission>,
}

impl Subscriber {
    /// Whether `event`, of webhook type `kind`, goes to this webhook: one it existed for, asked
    /// for, and whose owner may read.
    fn wants(&self, event: &audit_event::Model, kind: &str) -> bool {
        self.hook.created_at <= event.time
            && (self.types.is_empty() || self.types.iter().any(|t| t == kind))
            && Permission::sees_event(&self.may_read, kind)
    }
}

/// What `hook`'s owner may read now: nothing when the owner is unknown, gone, disabled or of
/// another organization, or acted through a key since revoked or expired.
async fn owner_permissions(db: &impl sea_orm::ConnectionTrait, hook: &webhook::Model) -> StoreResult<Vec<Permission>> {
    let Some(user_id) = &hook.owner_user_id else { return Ok(Vec::new()) };
    let user = match store::queries::users::get_any(db, user_id).await {
        Ok(user) if !user.disabled && user.organization_id == hook.organization_id => user,
        Ok(_) | Err(store::StoreError::NotFound) => return Ok(Vec::new()),
        Err(err) => return Err(err),
    };
    let Some(key_id) = &hook.owner_api_key_id else { return Ok(Permission::held(user.role, None)) };
    let key = match store::queries::api_keys::get(db, &hook.organization_id, key_id).await {
        Ok(key) if key.works_at(now()) => key,
        Ok(_) | Err(store::StoreError::NotFound) => return Ok(Vec::new()),
        Err(err) => return Err(err),
    };
    Ok(Permission::held(user.role, Some(&Permission::split(&key.permissions))))
}

fn delta(duration: Duration) -> TimeDelta {
    TimeDelta::from_std(duration).unwrap_or(TimeDelta::MAX)
}

/// base · 2^(attempts-1), at most an hour, times a random 50–100 %.
fn backoff(base: Duration, attempts: i32) -> TimeDelta {
    let exponent = u32::try_from(attempts.saturating_sub(1).clamp(0, 20)).unwrap_or(20);
    let full = base.saturating_mul(2u32.saturating_pow(exponent)).min(Duration::from_secs(3600));
    delta(full.mul_f64(rand::rng().random_range(0.5..=1.0)))
}
