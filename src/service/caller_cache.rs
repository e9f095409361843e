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
    entries: Arc<Mutex<Entries>>,
}

#[derive(Default)]
struct Entries {
    callers: HashMap<[u8; 32], Entry>,
    /// Counts clears: a caller looked up before a clear may be stale, and is not stored after it.
    generation: u64,
}

/// When a lookup began, as [`CallerCache::generation`] tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Generation(u64);

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

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Taken before a credential is looked up, and handed to [`CallerCache::put`] with the result.
    pub fn generation(&self) -> Generation {
        Generation(self.lock().generation)
    }

    pub fn get(&self, secret: &str) -> Option<Caller> {
        if self.ttl.is_zero() {
            return None;
        }
        let key = digest(secret);
        let mut entries = self.lock();
        let entry = entries.callers.get(&key)?;
        let fresh =
            entry.stored_at.elapsed() < self.ttl && entry.valid_until.is_none_or(|until| crate::domain::now() < until);
        if fresh {
            Some(entry.caller.clone())
        } else {
            entries.callers.remove(&key);
            None
        }
    }

    /// Remembers `caller` for `secret`, looked up since `looked_up`; `valid_until` is when the
    /// credential itself stops working. A caller read before the last clear is not remembered:
    /// its credential may have been revoked while the lookup was in flight.
    pub fn put(&self, secret: &str, caller: &Caller, valid_until: Option<DateTime<Utc>>, looked_up: Generation) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.lock();
        if entries.generation != looked_up.0 {
            return;
        }
        if entries.callers.len() >= CAPACITY {
            entries.callers.clear();
        }
        entries
            .callers
            .insert(digest(secret), Entry { caller: caller.clone(), stored_at: Instant::now(), valid_until });
    }

    /// Forgets every caller: changes may have been missed.
    pub fn clear(&self) {
        let mut entries = self.lock();
        entries.callers.clear();
        entries.generation += 1;
    }

    /// Forgets the callers a change to `whose` may have made stale, and only those: one user's
    /// change (a key revoked, a preference set) must not send every other caller back to the
    /// database, on every replica.
    pub fn forget(&self, whose: &Whose) {
        let mut entries = self.lock();
        entries.callers.retain(|_, entry| match whose {
            Whose::User(id) => entry.caller.user_id != *id,
            Whose::Organization(id) => entry.caller.organization_id != *id,
        });
        entries.generation += 1;
    }

    /// Commits a change to `whose` users or credentials and forgets their callers: here once
    /// committed (so no stale caller is cached again in between), on the other replicas through
    /// an announcement that the commit delivers.
    pub async fn commit_change(&self, txn: DatabaseTransaction, whose: Whose) -> StoreResult<()> {
        changes::announce(&txn, changes::CREDENTIALS_CHANNEL, &whose.to_payload()).await?;
        store::commit(txn).await?;
        self.forget(&whose);
        Ok(())
    }
}

/// Whose callers a change concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Whose {
    User(String),
    Organization(String),
}

impl Whose {
    /// As announced to the other replicas.
    fn to_payload(&self) -> String {
        match self {
            Whose::User(id) => format!("user:{id}"),
            Whose::Organization(id) => format!("organization:{id}"),
        }
    }

    /// What another replica announced; None for anything else (forget everyone then).
    pub fn from_payload(payload: &str) -> Option<Whose> {
        match payload.split_once(':')? {
            ("user", id) => Some(Whose::User(id.to_owned())),
            ("organization", id) => Some(Whose::Organization(id.to_owned())),
            _ => None,
        }
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
            organization: None,
            reach: crate::domain::Reach::Own,
        }
    }

    #[test]
    fn remembers_until_cleared() {
        let cache = CallerCache::new(Duration::from_secs(60));
        assert!(cache.get("secret").is_none());
        cache.put("secret", &caller(), None, cache.generation());
        assert_eq!(cache.get("secret").map(|c| c.user_id), Some("u".to_owned()));
        assert!(cache.get("other").is_none());
        cache.clear();
        assert!(cache.get("secret").is_none());
    }

    /// A lookup that began before a revocation's clear read the credential as it was: storing it
    /// would bring the revoked credential back for a whole TTL.
    #[test]
    fn a_lookup_overtaken_by_a_change_is_not_remembered() {
        let cache = CallerCache::new(Duration::from_secs(60));
        let looked_up = cache.generation();
        cache.clear();
        cache.put("secret", &caller(), None, looked_up);
        assert!(cache.get("secret").is_none());
        cache.put("secret", &caller(), None, cache.generation());
        assert!(cache.get("secret").is_some(), "a lookup after the change is");
    }

    #[test]
    fn never_outlives_the_credential() {
        let cache = CallerCache::new(Duration::from_secs(60));
        cache.put("secret", &caller(), Some(crate::domain::now() - chrono::TimeDelta::seconds(1)), cache.generation());
        assert!(cache.get("secret").is_none());
    }

    #[test]
    fn zero_ttl_disables() {
        let cache = CallerCache::new(Duration::ZERO);
        cache.put("secret", &caller(), None, cache.generation());
        assert!(cache.get("secret").is_none());
    }
}
