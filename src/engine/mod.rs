//! The session engine. The database is the source of truth: requests commit intent (rules
//! PENDING or REMOVING) and wake the engine; a worker claims due rules with a lease, calls the
//! provider once per resource, records the outcome, rolls the sessions up and publishes them to
//! the [`Hub`]. An expiry scheduler ends sessions when their time is up. A crash anywhere leaves
//! rows that the next start picks up once their lease runs out.

pub mod hub;
mod sweep;
mod worker;

pub use hub::{Hub, Subscription};

use crate::domain::{EndedReason, SessionStatus, now, roll_up};
use crate::provider::Providers;
use crate::service::{AuditRecord, Caller};
use crate::store::entity::session;
use crate::store::queries::{resource_leases, sessions};
use crate::store::{self, StoreResult};
use sea_orm::{ActiveValue::Set, DatabaseConnection, DatabaseTransaction, IntoActiveModel};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// Engine tuning.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// How long a claim protects rules from other workers.
    pub lease: Duration,
    /// Most rules claimed at once.
    pub batch: u64,
    /// First retry delay after a transient provider error; doubles per attempt, with jitter.
    pub backoff_base: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// How often the orphan sweep runs (and once at start); `None` never.
    pub sweep_interval: Option<Duration>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            lease: Duration::from_secs(30),
            batch: 500,
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(60),
            sweep_interval: Some(Duration::from_secs(300)),
        }
    }
}

#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    db: DatabaseConnection,
    /// Plain reads (watcher loads, provider lookups, scheduling) stay off the writer.
    reader: DatabaseConnection,
    providers: Providers,
    hub: Hub,
    config: EngineConfig,
    /// Identifies this process in leases.
    owner: String,
    work: Notify,
    expiry: Notify,
}

impl Engine {
    pub fn new(
        db: DatabaseConnection,
        reader: DatabaseConnection,
        providers: Providers,
        config: EngineConfig,
    ) -> Engine {
        Engine {
            inner: Arc::new(Inner {
                db,
                reader,
                providers,
                hub: Hub::default(),
                config,
                owner: crate::domain::new_id(),
                work: Notify::new(),
                expiry: Notify::new(),
            }),
        }
    }

    pub fn hub(&self) -> &Hub {
        &self.inner.hub
    }

    pub fn providers(&self) -> &Providers {
        &self.inner.providers
    }

    /// New rules are due: wake the worker.
    pub fn wake(&self) {
        self.inner.work.notify_one();
    }

    /// An expiry moved or a session started: recompute when to wake.
    pub fn reschedule_expiry(&self) {
        self.inner.expiry.notify_one();
    }

    /// Runs the worker and the expiry scheduler until `stop` turns true; in-flight provider
    /// calls finish first.
    pub async fn run(&self, stop: watch::Receiver<bool>) {
        tokio::join!(worker::run(self.clone(), stop.clone()), self.run_expiry(stop));
    }

    /// Loads the watched ones of `session_ids` and offers them to their watchers. A watcher that
    /// subscribes after this check reads the committed state itself, so nothing is missed.
    pub async fn publish(&self, session_ids: &[&str]) {
        let watched: Vec<&str> = session_ids.iter().copied().filter(|id| self.inner.hub.is_watched(id)).collect();
        if watched.is_empty() {
            return;
        }
        match sessions::load_many(&self.inner.reader, &watched).await {
            Ok(records) => records.into_iter().for_each(|record| self.inner.hub.publish(Arc::new(record))),
            Err(err) => tracing::warn!(sessions = watched.len(), error = %err, "loading sessions for watchers failed"),
        }
    }

    /// Ends a live session: EXPIRING, its rules REMOVING. Returns false when it was not live.
    pub async fn end_session(
        &self,
        session_id: &str,
        reason: EndedReason,
        actor: Option<&Caller>,
    ) -> StoreResult<bool> {
        let db = &self.inner.db;
        let txn = store::begin(db).await?;
        let current = sessions::get_for_update(&txn, session_id).await?;
        let live = current.status.parse::<SessionStatus>().is_ok_and(SessionStatus::is_live);
        if !live {
            return Ok(false);
        }
        let at = now();
        let organization_id = current.organization_id.clone();
        let revision = current.revision;
        let mut active = current.into_active_model();
        active.status = Set(SessionStatus::Expiring.as_str().to_owned());
        active.ended_reason = Set(Some(reason.as_str().to_owned()));
        active.ended_at = Set(Some(at));
        active.live_ipv4_key = Set(None);
        active.live_ipv6_key = Set(None);
        active.revision = Set(revision + 1);
        active.updated_at = Set(at);
        sessions::update(&txn, active).await?;
        sessions::begin_removal(&txn, session_id, at).await?;
        AuditRecord::new("session.expiring", "session", session_id)
            .detail("reason", reason)
            .write_as(&txn, &organization_id, actor)
            .await?;
        store::commit(txn).await?;
        self.wake();
        self.publish(&[session_id]).await;
        Ok(true)
    }

    /// Recomputes a session's status from its rules after they changed (inside the transaction
    /// that changed them, so a crash can never leave rules and status apart), bumps its revision,
    /// and records a status change in the audit trail.
    async fn settle(txn: &DatabaseTransaction, session_id: &str) -> StoreResult<()> {
        let current = sessions::get_for_update(txn, session_id).await?;
        let rules = sessions::rules_of(txn, session_id).await?;
        let statuses: Vec<_> = rules.iter().filter_map(|r| r.status.parse().ok()).collect();
        let status: SessionStatus = current.status.parse().unwrap_or(SessionStatus::Pending);
        let reason = current.ended_reason.as_deref().and_then(|r| r.parse().ok());
        let next = roll_up(status, reason, &statuses);
        let organization_id = current.organization_id.clone();
        let revision = current.revision;
        let mut active: session::ActiveModel = current.into_active_model();
        active.revision = Set(revision + 1);
        active.updated_at = Set(now());
        if next != status {
            active.status = Set(next.as_str().to_owned());
            if !next.is_live() {
                active.live_ipv4_key = Set(None);
                active.live_ipv6_key = Set(None);
            }
            if next == SessionStatus::Failed {
                active.ended_at = Set(Some(now()));
            }
        }
        sessions::update(txn, active).await?;
        if next != status {
            AuditRecord::new(session_event(next), "session", session_id).write_as(txn, &organization_id, None).await?;
        }
        Ok(())
    }

    async fn run_expiry(&self, mut stop: watch::Receiver<bool>) {
        const BATCH: u64 = 200;
        const LONGEST_SLEEP: Duration = Duration::from_secs(30);
        loop {
            if *stop.borrow() {
                return;
            }
            let sleep = match self.expire_due(BATCH).await {
                Ok(expired) if expired >= BATCH => Duration::ZERO,
                Ok(_) => match sessions::next_expiry(&self.inner.reader).await {
                    Ok(Some(at)) => (at - now()).to_std().unwrap_or(Duration::ZERO).min(LONGEST_SLEEP),
                    Ok(None) => LONGEST_SLEEP,
                    Err(err) => {
                        tracing::warn!(error = %err, "reading next expiry failed");
                        Duration::from_secs(1)
                    }
                },
                Err(err) => {
                    tracing::warn!(error = %err, "expiring sessions failed");
                    Duration::from_secs(1)
                }
            };
            if sleep.is_zero() {
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = self.inner.expiry.notified() => {}
                _ = stopping(&mut stop) => return,
            }
        }
    }

    /// When a lease taken at `at` runs out: claims on rules and on resources last as long.
    fn lease_end(&self, at: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
        at + chrono::TimeDelta::from_std(self.inner.config.lease).unwrap_or(chrono::TimeDelta::seconds(30))
    }

    /// Takes the lease on a resource for this process, so provider writes to it never
    /// interleave across replicas. Answers false while another replica holds it.
    async fn lease_resource(&self, resource_id: &str) -> StoreResult<bool> {
        let at = now();
        resource_leases::acquire(&self.inner.db, resource_id, &self.inner.owner, at, self.lease_end(at)).await
    }

    /// Gives a resource's lease back; if that fails, it simply expires.
    async fn release_resource(&self, resource_id: &str) {
        if let Err(err) = resource_leases::release(&self.inner.db, resource_id, &self.inner.owner).await {
            tracing::warn!(resource_id, error = %err, "releasing resource lease failed");
        }
    }

    async fn expire_due(&self, limit: u64) -> StoreResult<u64> {
        let due = sessions::due_to_expire(&self.inner.reader, now(), limit).await?;
        let count = due.len() as u64;
        for session in due {
            self.end_session(&session.id, EndedReason::Expired, None).await?;
        }
        Ok(count)
    }
}

/// Completes once `stop` turns true (or its sender is gone).
pub async fn stopping(stop: &mut watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// The audit event type of a session reaching `status`.
fn session_event(status: SessionStatus) -> &'static str {
    match status {
        SessionStatus::Pending => "session.pending",
        SessionStatus::Active => "session.active",
        SessionStatus::Partial => "session.partial",
        SessionStatus::Failed => "session.failed",
        SessionStatus::Expiring => "session.expiring",
        SessionStatus::Expired => "session.expired",
        SessionStatus::Cancelled => "session.cancelled",
    }
}
