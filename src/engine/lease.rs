//! Resource leases: one worker at a time writes to a firewall, across replicas. A lease is
//! short, so a dead replica's work is picked up soon, and renewed while its holder works; the
//! renewal interval plus the provider deadline stays below the lease, so a call that was
//! already running when a renewal failed ends before anyone else can take the firewall over.

use super::Engine;
use crate::domain::{new_id, now};
use crate::store::StoreResult;
use crate::store::queries::{resource_leases, sessions};
use std::future::Future;

/// A resource lease held by one task of this process.
pub(super) struct ResourceLease {
    engine: Engine,
    pub resource_id: String,
    /// Unique per task, so two tasks of one process exclude each other too; rule claims made
    /// under the lease carry it as their token.
    pub holder: String,
}

impl ResourceLease {
    /// Takes the lease on `resource_id`, or answers None while someone else holds it.
    pub async fn acquire(engine: &Engine, resource_id: &str) -> StoreResult<Option<ResourceLease>> {
        let holder = format!("{}:{}", engine.inner.owner, new_id());
        let at = now();
        let taken = resource_leases::acquire(&engine.inner.db, resource_id, &holder, at, engine.lease_end(at)).await?;
        Ok(taken.then(|| ResourceLease { engine: engine.clone(), resource_id: resource_id.to_owned(), holder }))
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
                    tracing::warn!(resource_id = %self.resource_id, problem, "resource lease lost; work abandoned");
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

    async fn renew(&self) -> Result<(), String> {
        let inner = &self.engine.inner;
        let at = now();
        let until = self.engine.lease_end(at);
        match resource_leases::renew(&inner.db, &self.resource_id, &self.holder, at, until).await {
            Ok(true) => sessions::renew_claims(&inner.db, &self.holder, until).await.map_err(|err| err.to_string()),
            Ok(false) => Err("held by another worker".to_owned()),
            Err(err) => Err(err.to_string()),
        }
    }

    /// Gives the lease back; if that fails, it simply runs out.
    pub async fn release(self) {
        if let Err(err) = resource_leases::release(&self.engine.inner.db, &self.resource_id, &self.holder).await {
            tracing::warn!(resource_id = %self.resource_id, error = %err, "releasing resource lease failed");
        }
    }
}
