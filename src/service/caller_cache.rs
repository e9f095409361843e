//! Recently authenticated callers, so a busy client's calls skip the credential lookups.
//!
//! An entry lives at most the configured TTL and never past its credential's own expiry. Any
//! change to users, organizations or credentials empties the cache at once: this replica's
//! directly, the others' through an announcement (see [`super::changes`]).

use super::Caller;
use crate::store::{self, StoreResult, changes};
use chrono::{DateTime, Utc};
use sea_orm::DatabaseTransaction;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Beyond this many entries the cache starts over rather than tracking recency.
const CAPACITY: usize = 10_000;

#[derive(Clone)]
pub struct CallerCache {
    ttl: Duration,
    entries: Arc<Mutex<HashMap<[u8; 32], Entry>>>,
}

struct Entry {
    caller: Caller,
    stored_at: Instant,
    valid_until: Option<DateTime<Utc>>,
}

/// Keys entries by a digest of the presented secret, so the cache holds no secret itself.
fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

impl CallerCache {
    /// A TTL of zero disables the cache.
    pub fn new(ttl: Duration) -> CallerCache {
        CallerCache { ttl, entries: Arc::default() }
    }

    /// How long a caller is remembered: a change nobody announced applies within this long.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    pub fn get(&self, secret: &str) -> Option<Caller> {
        if self.ttl.is_zero() {
            return None;
        }
        let key = digest(secret);
        let mut entries = self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let entry = entries.get(&key)?;
        let fresh =
            entry.stored_at.elapsed() < self.ttl && entry.valid_until.is_none_or(|until| crate::domain::now() < until);
        if fresh {
            Some(entry.caller.clone())
        } else {
            entries.remove(&key);
            None
        }
    }

    /// Remembers `caller` for `secret`; `valid_until` is when the credential itself stops working.
    pub fn put(&self, secret: &str, caller: &Caller, valid_until: Option<DateTime<Utc>>) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if entries.len() >= CAPACITY {
            entries.clear();
        }
        entries.insert(digest(secret), Entry { caller: caller.clone(), stored_at: Instant::now(), valid_until });
    }

    /// Forgets every caller: a user, organization or credential changed.
    pub fn clear(&self) {
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clear();
    }

    /// Commits a change to users, organizations or credentials and forgets every caller: here
    /// once committed (so no stale caller is cached again in between), on the other replicas
    /// through an announcement that the commit delivers.
    pub async fn commit_change(&self, txn: DatabaseTransaction) -> StoreResult<()> {
        changes::announce(&txn, changes::CREDENTIALS_CHANNEL, "").await?;
        store::commit(txn).await?;
        self.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Role;

    fn caller() -> Caller {
        Caller {
            user_id: "u".into(),
            organization_id: "o".into(),
            email: "a@example.com".into(),
            full_name: String::new(),
            role: Role::User,
            permissions: Vec::new(),
            api_key_id: None,
            login_session_id: None,
            peer_ip: None,
            organization_suspended: false,
            reach: crate::domain::Reach::Own,
        }
    }

    #[test]
    fn remembers_until_cleared() {
        let cache = CallerCache::new(Duration::from_secs(60));
        assert!(cache.get("secret").is_none());
        cache.put("secret", &caller(), None);
        assert_eq!(cache.get("secret").map(|c| c.user_id), Some("u".to_owned()));
        assert!(cache.get("other").is_none());
        cache.clear();
        assert!(cache.get("secret").is_none());
    }

    #[test]
    fn never_outlives_the_credential() {
        let cache = CallerCache::new(Duration::from_secs(60));
        cache.put("secret", &caller(), Some(crate::domain::now() - chrono::TimeDelta::seconds(1)));
        assert!(cache.get("secret").is_none());
    }

    #[test]
    fn zero_ttl_disables() {
        let cache = CallerCache::new(Duration::ZERO);
        cache.put("secret", &caller(), None);
        assert!(cache.get("secret").is_none());
    }
}
