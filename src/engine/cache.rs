//! Sessions as last read, so GetSession and the first WatchSession message need no database.
//!
//! Whatever learns of a change tells the cache before anyone can read the new state (the
//! engine after each local commit, the change listener for other replicas' commits); a changed
//! session is read again on its next use. A read that raced with a change is not kept: every
//! change is stamped with a counter, and a read is kept only when no change of its session was
//! stamped after the read began. Bounded: when full, everything is dropped at once (a miss
//! costs one read; an exact LRU would cost a lock-held list on every hit).

use crate::store::queries::sessions::SessionRecord;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub struct SessionCache {
    capacity: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Stamps changes; a read remembers the value it began at.
    clock: u64,
    /// Reads that began before this were made before something dropped everything.
    floor: u64,
    entries: HashMap<String, Entry>,
    /// Changes elsewhere cannot be heard now (the listener is down): nothing is kept or served.
    suspended: bool,
}

enum Entry {
    Read(Arc<SessionRecord>),
    /// Changed at this stamp: reads that began earlier may hold the old state.
    Changed(u64),
}

/// When a read began: pass it back with what was read.
#[derive(Debug, Clone, Copy)]
pub struct ReadStamp(u64);

impl SessionCache {
    pub fn new(capacity: usize) -> SessionCache {
        SessionCache { capacity, state: Mutex::new(State::default()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The stamp for a read that begins now.
    pub fn stamp(&self) -> ReadStamp {
        ReadStamp(self.lock().clock)
    }

    /// The session as last read, or the stamp to read it under.
    pub fn get(&self, id: &str) -> Result<Arc<SessionRecord>, ReadStamp> {
        let state = self.lock();
        match state.entries.get(id) {
            Some(Entry::Read(record)) if !state.suspended => Ok(record.clone()),
            _ => Err(ReadStamp(state.clock)),
        }
    }

    /// Keeps what a read that began at `stamp` found, unless its session changed since.
    pub fn keep(&self, stamp: ReadStamp, record: Arc<SessionRecord>) {
        let mut state = self.lock();
        if stamp.0 < state.floor || state.suspended {
            return;
        }
        let stale = match state.entries.get(&record.session.id) {
            Some(Entry::Changed(at)) => *at > stamp.0,
            Some(Entry::Read(kept)) => kept.session.revision >= record.session.revision,
            None => false,
        };
        if stale {
            return;
        }
        if state.entries.len() >= self.capacity {
            state.drop_all();
        }
        state.entries.insert(record.session.id.clone(), Entry::Read(record));
    }

    /// These sessions changed: their next use reads them again.
    pub fn changed<'a>(&self, ids: impl IntoIterator<Item = &'a str>) {
        let mut state = self.lock();
        state.changed(ids, self.capacity);
    }

    /// Another replica changed a session to `revision`: forget any older state of it.
    pub fn changed_to(&self, id: &str, revision: i64) {
        let mut state = self.lock();
        if !matches!(state.entries.get(id), Some(Entry::Read(kept)) if kept.session.revision >= revision) {
            state.changed([id], self.capacity);
        }
    }

    /// A user changed (their name, which their sessions show): read their sessions again.
    pub fn forget_user(&self, user_id: &str) {
        let mut state = self.lock();
        let theirs: Vec<String> = state
            .entries
            .iter()
            .filter(|(_, entry)| matches!(entry, Entry::Read(record) if record.session.user_id == user_id))
            .map(|(id, _)| id.clone())
            .collect();
        state.changed(theirs.iter().map(String::as_str), self.capacity);
    }

    /// Changes may have been missed: read everything again.
    pub fn clear(&self) {
        self.lock().drop_all();
    }

    /// Other replicas' changes cannot be heard for now: serve nothing from memory until
    /// [`resume`](Self::resume).
    pub fn suspend(&self) {
        let mut state = self.lock();
        state.drop_all();
        state.suspended = true;
    }

    /// Other replicas' changes are heard again; what was read before may be stale.
    pub fn resume(&self) {
        let mut state = self.lock();
        state.drop_all();
        state.suspended = false;
    }
}

impl State {
    fn changed<'a>(&mut self, ids: impl IntoIterator<Item = &'a str>, capacity: usize) {
        self.clock += 1;
        let at = self.clock;
        for id in ids {
            self.entries.insert(id.to_owned(), Entry::Changed(at));
        }
        if self.entries.len() > capacity {
            self.drop_all();
        }
    }

    /// Forgets everything, and every read under way.
    fn drop_all(&mut self) {
        self.clock += 1;
        self.floor = self.clock;
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, revision: i64) -> Arc<SessionRecord> {
        Arc::new(SessionRecord::blank(id, revision))
    }

    fn revision(cache: &SessionCache, id: &str) -> Option<i64> {
        cache.get(id).ok().map(|record| record.session.revision)
    }

    #[test]
    fn a_read_is_kept_until_its_session_changes() {
        let cache = SessionCache::new(10);
        let stamp = cache.get("s").unwrap_err();
        cache.keep(stamp, record("s", 1));
        assert_eq!(revision(&cache, "s"), Some(1));
        cache.changed(["s"]);
        assert_eq!(revision(&cache, "s"), None, "changed: read again");
        let stamp = cache.get("s").unwrap_err();
        cache.keep(stamp, record("s", 2));
        assert_eq!(revision(&cache, "s"), Some(2));
    }

    #[test]
    fn a_read_that_raced_with_a_change_is_not_kept() {
        let cache = SessionCache::new(10);
        let stamp = cache.get("s").unwrap_err();
        // The change commits and is told while the read (of the old state) is under way.
        cache.changed(["s"]);
        cache.keep(stamp, record("s", 1));
        assert_eq!(revision(&cache, "s"), None);
        // Changes of other sessions do not spoil a read.
        let stamp = cache.get("s").unwrap_err();
        cache.changed(["t"]);
        cache.keep(stamp, record("s", 2));
        assert_eq!(revision(&cache, "s"), Some(2));
        // Nor does an older state replace a newer one.
        cache.keep(cache.get("u").unwrap_err(), record("s", 1));
        assert_eq!(revision(&cache, "s"), Some(2));
    }

    #[test]
    fn another_replicas_change_drops_only_older_states() {
        let cache = SessionCache::new(10);
        cache.keep(cache.get("s").unwrap_err(), record("s", 5));
        cache.changed_to("s", 5);
        assert_eq!(revision(&cache, "s"), Some(5), "already seen");
        cache.changed_to("s", 6);
        assert_eq!(revision(&cache, "s"), None);
        // Announced before a slow read of the old state ended: that read is not kept.
        let stamp = cache.get("t").unwrap_err();
        cache.changed_to("t", 3);
        cache.keep(stamp, record("t", 2));
        assert_eq!(revision(&cache, "t"), None);
    }

    #[test]
    fn it_stays_within_its_capacity_and_clearing_spoils_reads_under_way() {
        let cache = SessionCache::new(3);
        for (n, id) in ["a", "b", "c", "d"].into_iter().enumerate() {
            cache.keep(cache.get(id).unwrap_err(), record(id, n as i64));
        }
        assert!(cache.lock().entries.len() <= 3);
        assert_eq!(revision(&cache, "d"), Some(3), "the newest read is kept");
        let stamp = cache.get("e").unwrap_err();
        cache.clear();
        cache.keep(stamp, record("e", 1));
        assert_eq!(revision(&cache, "e"), None);
        assert_eq!(revision(&cache, "d"), None);
    }

    #[test]
    fn a_suspended_cache_serves_and_keeps_nothing() {
        let cache = SessionCache::new(10);
        cache.keep(cache.get("s").unwrap_err(), record("s", 1));
        cache.suspend();
        assert_eq!(revision(&cache, "s"), None);
        cache.keep(cache.get("s").unwrap_err(), record("s", 2));
        assert_eq!(revision(&cache, "s"), None);
        let under_way = cache.get("s").unwrap_err();
        cache.resume();
        cache.keep(under_way, record("s", 2));
        assert_eq!(revision(&cache, "s"), None, "read while suspended");
        cache.keep(cache.get("s").unwrap_err(), record("s", 3));
        assert_eq!(revision(&cache, "s"), Some(3));
    }
}
