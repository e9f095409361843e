//! Fixed-window rate limits kept in the database, so every replica counts the same hits.

use crate::chore::Chore;
use crate::domain::now;
use crate::store::{StoreResult, queries};
use chrono::TimeDelta;
use sea_orm::DatabaseConnection;
use sha2::{Digest, Sha256};
use std::time::Duration;

/// Allows `limit` hits per key in each `window`, counted from a key's first hit.
#[derive(Clone)]
pub struct RateLimiter {
    db: DatabaseConnection,
    /// Keeps keys of different limiters apart in the shared table.
    scope: &'static str,
    limit: u32,
    window: Duration,
    /// Forgetting ended windows, once a window on each replica.
    purge: Chore,
}

impl RateLimiter {
    pub fn new(db: DatabaseConnection, scope: &'static str, limit: u32, window: Duration) -> RateLimiter {
        RateLimiter { db, scope, limit, window, purge: Chore::new(window, false) }
    }

    /// Records a hit on `key`, or answers how long until one is allowed.
    pub async fn hit(&self, key: &str) -> StoreResult<Result<(), Duration>> {
        let at = now();
        let window = TimeDelta::from_std(self.window).unwrap_or(TimeDelta::MAX);
        let cutoff = at - window;
        if self.purge.due() {
            queries::rate_limits::purge(&self.db, cutoff).await?;
        }
        // Keys are emails and addresses: only their hashes are kept.
        let stored_key = hex::encode(Sha256::digest(format!("{}\n{key}", self.scope)));
        let counted = queries::rate_limits::hit(&self.db, &stored_key, at, cutoff).await?;
        if u32::try_from(counted.hits).unwrap_or(u32::MAX) <= self.limit {
            return Ok(Ok(()));
        }
        Ok(Err((counted.window_start + window - at).to_std().unwrap_or_default()))
    }
}
