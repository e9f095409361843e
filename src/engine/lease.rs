//! Resource leases: one worker at a time writes to a firewall, across replicas. A lease is
//! short, so a dead replica's work is picked up soon, and renewed while its holder works; the
//! renewal interval plus the provider deadline stays below the lease, so a call that was
//! already running when a renewal failed ends before anyone else can take the firewall over.
//! Renewals run on connections of their own (never queued behind other work), every lease time
//! is on the database's clock (see [`super::clock`]), and a provider call starts only while the
//! lease has that call's deadline left.

use super::Engine;
use crate::domain::new_id;
use crate::store::StoreResult;
use crate::store::queries::{resource_leases, sessions};
use chrono::{DateTime, Utc};
use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// A resource lease held by one task of this process.
pub(super) struct ResourceLease {
    engine: Engine,
    pub resource_id: String,
    /// Unique per task, so two tasks of one process exclude each other too; rule claims made
    /// under the lease carry it as their token.
    pub holder: String,
    /// When the lease runs out (database clock, microseconds since the epoch), as last written.
    until_micros: AtomicI64,
}

impl ResourceLease {
    /// Takes the lease on `resource_id`, or answers None while someone else holds it.
    pub async fn acquire(engine: &Engine, resource_id: &str) -> StoreResult<Option<ResourceLease>> {
        let holder = format!("{}:{}", engine.inner.owner, new_id());
        let at = engine.inner.clock.now();
        let until = engine.lease_end(at);
        let taken = resource_leases::acquire(&engine.inner.leases, resource_id, &holder, at, until).await?;
        Ok(taken.then(|| ResourceLease {
            engine: engine.clone(),
            resource_id: resource_id.to_owned(),
            holder,
            until_micros: AtomicI64::new(until.timestamp_micros()),
        }))
    }

    /// When the lease's rule claims run out, as taken: claims made now last as long as the lease.
    pub fn claims_until(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_micros(self.until_micros.load(Ordering::Relaxed)).unwrap_or_default()
    }

    /// Whether a provider call of at most `deadline` would end while the lease still holds.
    pub fn has_time_for(&self, deadline: Duration) -> bool {
        let left = self.claims_until() - self.engine.inner.clock.now();
        left.to_std().is_ok_and(|left| left >= deadline)
    }

    /// Runs `work` while renewing the lease, and the rule claims made with its holder, every
    /// renewal interval. Once a renewal fails, `work` is dropped where it stands (no provider
    /// call starts after that) and the answer is None.
    pub async fn hold<T>(&self, work: impl Future<Output = T>) -> Option<T> {
        let renewals = async {
            let every = self.engine.inner.config.renew_every();
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                ticks.tick().await;
                if let Err(problem) = self.renew().await {
                    tracing::warn!(resource_id = %self.resource_id, %problem, "resource lease lost; work abandoned");
                    return;
                }
            }
        };
        tokio::select! {
            biased;
            done = work => Some(done),
            () = renewals => None,
        }
    }

    async fn renew(&self) -> Result<(), LeaseLost> {
        let inner = &self.engine.inner;
        let at = inner.clock.now();
        let until = self.engine.lease_end(at);
        match resource_leases::renew(&inner.leases, &self.resource_id, &self.holder, at, until).await {
            Ok(true) => {
                sessions::renew_claims(&inner.leases, &self.holder, until).await?;
                self.until_micros.store(until.timestamp_micros(), Ordering::Relaxed);
                Ok(())
            }
            Ok(false) => Err(LeaseLost::Taken),
            Err(err) => Err(err.into()),
        }
    }

    /// Gives the lease back; if that fails, it simply runs out.
    pub async fn release(self) {
        let leases = &self.engine.inner.leases;
        if let Err(err) = resource_leases::release(leases, &self.resource_id, &self.holder).await {
            tracing::warn!(resource_id = %self.resource_id, error = %err, "releasing resource lease failed");
        }
    }
}

/// Why a lease could not be renewed.
#[derive(Debug, thiserror::Error)]
enum LeaseLost {
    #[error("held by another worker")]
    Taken,
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}
