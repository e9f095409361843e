//! The session engine. The database is the source of truth: requests commit intent (rules
//! PENDING or REMOVING) and wake the engine; a worker claims due rules with a lease, calls the
//! provider once per resource, records the outcome, rolls the sessions up and publishes them to
//! the [`Hub`]. An expiry scheduler ends sessions when their time is up. A crash anywhere leaves
//! rows that the next start picks up once their lease runs out.

pub mod cache;
mod checks;
pub mod clock;
pub mod hub;
mod lease;
pub mod pauses;
mod reconcile;
mod starts;
pub mod transitions;
mod worker;

pub use cache::SessionCache;
pub use hub::{Hub, Subscription};

use crate::domain::{Actor, EndedReason, ResourceIpStatus, now};
use crate::provider::{ProviderError, Providers, Target};
use crate::settings::Unworkable;
use crate::settings::{Count, Seconds};
use crate::shutdown::stopping;
use crate::store::entity::{resource_ip, session};
use crate::store::queries::sessions::SessionRecord;
use crate::store::queries::{organizations, resources, sessions};
use crate::store::{self, StoreError, StoreResult};
use sea_orm::DatabaseConnection;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// Engine tuning: the `[engine]` settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// How long a claim on a resource and its rules lasts unless renewed (it is renewed every
    /// quarter of it while work runs); after a crash, the dead process's claims wait this long.
    pub lease_secs: Seconds<2, 3_600>,
    /// The longest any one provider call may take; a call still running then is abandoned and
    /// retried like a transient error. With the renewal interval it must stay below the lease.
    pub provider_timeout_secs: Seconds<1, 600>,
    /// Most resources worked on at once; each works independently of the others. A resource
    /// whose provider quota is spent takes no slot until its calls' tokens are near.
    pub max_concurrent_resources: Count<1, 10_000>,
    /// Most rules of one resource claimed at once.
    pub batch: Count<1, 10_000>,
    /// About how often each resource is reconciled (by any replica); 0 never. Unset: 60.
    pub reconcile_interval_secs: Option<Seconds<0, 86_400>>,
    /// Deprecated name of `reconcile_interval_secs`, still read when that is not set.
    pub sweep_interval_secs: Option<Seconds<0, 86_400>>,
    /// How long after it was applied a rule may be absent from the provider's listing before
    /// the reconciler calls it missing (listings can lag behind writes).
    pub repair_grace_secs: Seconds<0, 86_400>,
    /// Most sessions kept in memory as last read (GetSession and WatchSession read them there).
    pub cached_sessions: Count<1, 10_000_000>,
    /// About how often each resource's firewall is checked (by any replica): a check that
    /// starts failing is audited as `resource.check_failed`; 0 never.
    pub check_interval_secs: Seconds<0, 604_800>,
    /// First retry delay after a transient provider error; doubles per attempt, with jitter.
    #[serde(skip)]
    pub backoff_base: Duration,
    /// Longest retry delay.
    #[serde(skip)]
    pub backoff_max: Duration,
}

impl EngineConfig {
    /// The deadline of every provider call.
    pub fn provider_timeout(&self) -> Duration {
        self.provider_timeout_secs.get()
    }

    pub fn lease(&self) -> Duration {
        self.lease_secs.get()
    }

    /// How often a held lease is renewed.
    pub fn renew_every(&self) -> Duration {
        self.lease() / 4
    }

    /// About how often each resource is reconciled, from the current key or its deprecated
    /// name; `None` never.
    pub fn reconcile_interval(&self) -> Option<Duration> {
        match self.reconcile_interval_secs.or(self.sweep_interval_secs) {
            Some(interval) => interval.nonzero(),
            None => Some(Duration::from_secs(60)),
        }
    }

    /// A call that was running when a renewal failed must end before the lease runs out, or
    /// two workers could write to one firewall at once.
    pub fn check(&self) -> Result<(), Unworkable> {
        if self.provider_timeout() + self.renew_every() >= self.lease() {
            return Err(format!(
                "engine.provider_timeout_secs ({}s) plus the lease renewal interval (a quarter of engine.lease_secs, {:.1}s) \
                 must be below engine.lease_secs ({}s)",
                self.provider_timeout().as_secs(),
                self.renew_every().as_secs_f64(),
                self.lease().as_secs()
            )
            .into());
        }
        Ok(())
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            lease_secs: Seconds::of::<12>(),
            provider_timeout_secs: Seconds::of::<8>(),
            max_concurrent_resources: Count::of::<32>(),
            batch: Count::of::<500>(),
            reconcile_interval_secs: None,
            sweep_interval_secs: None,
            repair_grace_secs: Seconds::of::<30>(),
            cached_sessions: Count::of::<20_000>(),
            check_interval_secs: Seconds::of::<1_800>(),
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(60),
        }
    }
}

/// Connections for lease renewals: the worker's and the reconciler's may renew at once.
const LEASE_CONNECTIONS: u32 = 2;

/// How often the offset to the database's clock is measured again.
const CLOCK_MEASURED_EVERY: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    db: DatabaseConnection,
    /// Connections of their own for lease renewals: a renewal never queues behind other work.
    leases: DatabaseConnection,
    /// The database's clock, which every lease time is in.
    clock: clock::Clock,
    /// Plain reads (watcher loads, provider lookups, scheduling) stay off the writer.
    reader: DatabaseConnection,
    providers: Providers,
    hub: Hub,
    cache: SessionCache,
    starts: starts::Starts,
    config: EngineConfig,
    /// Identifies this process in leases.
    owner: String,
    work: Notify,
    expiry: Notify,
    /// A resource was created or given another firewall: the checks look again at once.
    checks: Notify,
    /// When the expiry scheduler looks next (milliseconds since the epoch; unknown, so
    /// `i64::MAX`, while it is looking): a start that ends sooner wakes it, one that ends
    /// later need not.
    expiry_looks_at: AtomicI64,
    pauses: Arc<pauses::Pauses>,
}

impl Engine {
    pub fn new(
        db: DatabaseConnection,
        reader: DatabaseConnection,
        providers: Providers,
        config: EngineConfig,
    ) -> Engine {
        let pauses = Arc::new(pauses::Pauses::default());
        Engine {
            inner: Arc::new(Inner {
                starts: starts::Starts::spawn(db.clone(), pauses.clone()),
                pauses,
                leases: store::dedicated(&db, LEASE_CONNECTIONS),
                clock: clock::Clock::default(),
                db,
                reader,
                providers,
                hub: Hub::default(),
                cache: SessionCache::new(config.cached_sessions.as_usize()),
                config,
                owner: crate::domain::new_id(),
                work: Notify::new(),
                expiry: Notify::new(),
                checks: Notify::new(),
                expiry_looks_at: AtomicI64::new(i64::MAX),
            }),
        }
    }

    pub fn hub(&self) -> &Hub {
        &self.inner.hub
    }

    pub fn cache(&self) -> &SessionCache {
        &self.inner.cache
    }

    /// A session with its user and rules: as last read unless it changed since (this replica's
    /// commits at once, other replicas' once announced).
    pub async fn session(&self, id: &str) -> StoreResult<Arc<SessionRecord>> {
        let stamp = match self.inner.cache.get(id) {
            Ok(record) => return Ok(record),
            Err(stamp) => stamp,
        };
        let record = Arc::new(sessions::load(&self.inner.reader, id).await?);
        self.inner.cache.keep(stamp, record.clone());
        Ok(record)
    }

    /// The database's clock, in which leases are taken and compared.
    pub fn clock(&self) -> &clock::Clock {
        &self.inner.clock
    }

    /// Points where tests hold the engine's tasks (see [`pauses`]).
    pub fn pauses(&self) -> &pauses::Pauses {
        &self.inner.pauses
    }

    pub fn providers(&self) -> &Providers {
        &self.inner.providers
    }

    /// New rules are due: wake the worker.
    pub fn wake(&self) {
        self.inner.work.notify_one();
    }

    /// A resource is new or points at another firewall: check it now rather than at the next
    /// sweep (other replicas find it at theirs).
    pub fn check_soon(&self) {
        self.inner.checks.notify_one();
    }

    /// An expiry moved or a session started: recompute when to wake.
    pub fn reschedule_expiry(&self) {
        self.inner.expiry.notify_one();
    }

    /// Runs the worker, the reconciler, the resource checks and the expiry scheduler, each on its own, until
    /// `stop` turns true; in-flight provider calls end by their deadline first.
    pub async fn run(&self, stop: watch::Receiver<bool>) {
        // Lease holders in the database start with this id: it tells which replica holds what.
        tracing::info!(owner = %self.inner.owner, "engine started");
        // Leases are taken in the database's time: know it before taking any.
        if let Err(err) = self.inner.clock.measure(&self.inner.leases).await {
            tracing::warn!(error = %err, "reading the database's clock failed; using this server's until it works");
        }
        tokio::join!(
            self.run_clock(stop.clone()),
            worker::run(self.clone(), stop.clone()),
            reconcile::run(self.clone(), stop.clone()),
            checks::run(self.clone(), stop.clone()),
            self.run_expiry(stop)
        );
    }

    /// Sessions changed in a committed transaction: wake the worker for their rules, the expiry
    /// scheduler for their ends, and tell their watchers.
    pub async fn announce(&self, session_ids: &[String]) {
        if session_ids.is_empty() {
            return;
        }
        self.wake();
        self.reschedule_expiry();
        let ids: Vec<&str> = session_ids.iter().map(String::as_str).collect();
        self.publish(&ids).await;
    }

    /// `session_ids` changed in a committed transaction: the cache forgets them, and the watched
    /// ones are loaded and offered to their watchers. A watcher that subscribes after this check
    /// reads the committed state itself, so nothing is missed.
    pub async fn publish(&self, session_ids: &[&str]) {
        self.inner.cache.changed(session_ids.iter().copied());
        let watched: Vec<&str> = session_ids.iter().copied().filter(|id| self.inner.hub.is_watched(id)).collect();
        if watched.is_empty() {
            return;
        }
        let stamp = self.inner.cache.stamp();
        match sessions::load_many(&self.inner.reader, &watched).await {
            Ok(records) => records.into_iter().map(Arc::new).for_each(|record| {
                self.inner.cache.keep(stamp, record.clone());
                self.inner.hub.publish(record);
            }),
            Err(err) => tracing::warn!(sessions = watched.len(), error = %err, "loading sessions for watchers failed"),
        }
    }

    /// Records a new session (PENDING) and its rules, committed together with the other starts
    /// that arrive meanwhile (group commit), then wakes the worker, and the expiry scheduler if
    /// the session ends before its next look.
    /// Refused when its user lost a right meanwhile or already has a live session for one of
    /// its addresses.
    pub async fn start_session(&self, new: transitions::NewSession) -> starts::StartAnswer {
        let session = &new.session;
        let ends_at = session.heartbeat_due_at.map_or(session.expires_at, |due| due.min(session.expires_at));
        if let refused @ Err(_) = self.inner.starts.start(new).await? {
            return Ok(refused);
        }
        self.wake();
        // Most starts end long after the scheduler's next look: waking it for each would cost
        // two reads per start for nothing.
        if ends_at.timestamp_millis() < self.inner.expiry_looks_at.load(Ordering::SeqCst) {
            self.reschedule_expiry();
        }
        Ok(Ok(()))
    }

    /// Ends a live session in a transaction of its own, then wakes the worker and tells the
    /// watchers. Returns false when it was not live.
    pub async fn end_session(&self, session_id: &str, reason: EndedReason, actor: &Actor) -> StoreResult<bool> {
        let txn = store::begin(&self.inner.db).await?;
        let ended = transitions::end(&txn, session_id, reason, actor, None).await?;
        store::commit(txn).await?;
        if ended {
            self.wake();
            self.publish(&[session_id]).await;
        }
        Ok(ended)
    }

    /// Measures the offset to the database's clock again now and then (clocks drift).
    async fn run_clock(&self, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(CLOCK_MEASURED_EVERY) => {}
                _ = stopping(&mut stop) => return,
            }
            if let Err(err) = self.inner.clock.measure(&self.inner.leases).await {
                tracing::warn!(error = %err, "reading the database's clock failed");
            }
        }
    }

    async fn run_expiry(&self, mut stop: watch::Receiver<bool>) {
        // As many as the worker claims on a resource at once: a batch's removals fit one call.
        let batch = self.inner.config.batch.get();
        const LONGEST_SLEEP: Duration = Duration::from_secs(30);
        loop {
            if *stop.borrow() {
                return;
            }
            // Set before the reads below: a start committed after them, seeing this, wakes us.
            self.inner.expiry_looks_at.store(i64::MAX, Ordering::SeqCst);
            let sleep = match self.expire_due(batch).await {
                Ok(expired) if expired >= batch => Duration::ZERO,
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
            let looks_at =
                chrono::TimeDelta::from_std(sleep).map_or(i64::MAX, |sleep| (now() + sleep).timestamp_millis());
            self.inner.expiry_looks_at.store(looks_at, Ordering::SeqCst);
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = self.inner.expiry.notified() => {}
                _ = stopping(&mut stop) => return,
            }
        }
    }

    fn repair_grace(&self) -> chrono::TimeDelta {
        chrono::TimeDelta::from_std(self.inner.config.repair_grace_secs.get()).unwrap_or(chrono::TimeDelta::seconds(30))
    }

    /// When a lease taken at `at` runs out: claims on rules and on resources last as long.
    fn lease_end(&self, at: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
        at + chrono::TimeDelta::from_std(self.inner.config.lease()).unwrap_or(chrono::TimeDelta::seconds(30))
    }

    /// The provider of a resource and what to call it with, or why it cannot be reached.
    async fn provider_for(&self, resource_id: &str) -> StoreResult<Result<worker::ProviderTarget, ProviderError>> {
        let resource = match resources::get_by_id(&self.inner.reader, resource_id).await {
            Ok(resource) => resource,
            Err(StoreError::NotFound) => return Ok(Err(ProviderError::Rejected("the resource was deleted".into()))),
            Err(err) => return Err(err),
        };
        // Read before every batch of calls: scopes withdrawn since the resource was stored hold.
        let organization = organizations::get(&self.inner.reader, &resource.organization_id).await?;
        let read = resources::provider_config(&resource)
            .and_then(|config| Ok((config, organizations::cloud_scopes(&organization)?)));
        let (config, scopes) = match read {
            Ok(read) => read,
            Err(err) => return Ok(Err(ProviderError::Rejected(err.to_string()))),
        };
        Ok(self.providers().for_config(&config, &scopes).map(|provider| {
            (provider, Target { resource_id: resource.id, organization_id: resource.organization_id, config })
        }))
    }

    /// Sends to removal the rules among `rules` that still hold, or are about to hold, an
    /// address for a session that has ended (none should: a guard let a race through), logged
    /// by [`transitions::sweep`]. Answers the sessions of `rules` as read, and the orphans' ids.
    async fn sweep_orphans(
        &self,
        rules: &[resource_ip::Model],
    ) -> StoreResult<(HashMap<String, session::Model>, Vec<String>)> {
        let mut ids: Vec<&str> = rules.iter().map(|rule| rule.session_id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        let read = sessions::by_ids(&self.inner.reader, &ids).await?;
        let orphans: Vec<&resource_ip::Model> = rules
            .iter()
            .filter(|rule| matches!(rule.status, ResourceIpStatus::Pending | ResourceIpStatus::Applied))
            .filter(|rule| read.get(&rule.session_id).is_some_and(|session| session.status.is_terminal()))
            .collect();
        if orphans.is_empty() {
            return Ok((read, Vec::new()));
        }
        let mut ended: Vec<&str> = orphans.iter().map(|rule| rule.session_id.as_str()).collect();
        ended.sort_unstable();
        ended.dedup();
        let txn = store::begin(&self.inner.db).await?;
        let swept = transitions::sweep(&txn, &ended).await?;
        store::commit(txn).await?;
        self.announce(&swept).await;
        Ok((read, orphans.into_iter().map(|rule| rule.id.clone()).collect()))
    }

    /// Ends up to `limit` due sessions in one transaction, so the worker then removes each
    /// resource's rules of the whole batch in one provider call; a session renewed since it was
    /// read stays. Answers how many were due.
    async fn expire_due(&self, limit: u64) -> StoreResult<u64> {
        let at = now();
        let due = sessions::due_to_expire(&self.inner.reader, at, limit).await?;
        if due.is_empty() {
            return Ok(0);
        }
        self.inner.pauses.at(pauses::Point::ExpiryBeforeWrite).await;
        let ids: Vec<&str> = due.iter().map(|session| session.id.as_str()).collect();
        let txn = store::begin(&self.inner.db).await?;
        let ended = transitions::expire(&txn, &ids, at).await?;
        store::commit(txn).await?;
        if !ended.is_empty() {
            self.wake();
            self.publish(&ended.iter().map(String::as_str).collect::<Vec<_>>()).await;
        }
        Ok(due.len() as u64)
    }
}
