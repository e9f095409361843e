//! Fan-out of session changes to WatchSession streams.
//!
//! One `watch` channel per watched session holds only the latest state: a slow watcher skips
//! intermediate states and gets the newest one, and never blocks the engine or other watchers.
//! States only move forward (by revision), so a late publisher cannot make a watcher go back.
//! Whatever learns of a change publishes it: the engine and the session service after each
//! commit, and on PostgreSQL a LISTEN/NOTIFY listener for changes committed by other replicas.

use crate::store::queries::sessions::SessionRecord;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::watch;

/// One state of a session as its watchers get it.
#[derive(Debug)]
pub struct Published {
    pub record: Arc<SessionRecord>,
    /// The state's wire message, made by the first watcher that sends it and sent as the same
    /// bytes by every other (encoded once, however many watch).
    pub encoded: OnceLock<bytes::Bytes>,
}

type Slot = watch::Sender<Option<Arc<Published>>>;

#[derive(Clone, Default)]
pub struct Hub {
    channels: Arc<Mutex<HashMap<String, Slot>>>,
}

impl Hub {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.channels.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Offers a new state of a session to its watchers (a no-op when nobody watches it).
    pub fn publish(&self, record: Arc<SessionRecord>) {
        let channels = self.lock();
        if let Some(slot) = channels.get(&record.session.id) {
            slot.send_if_modified(|current| {
                let newer = current.as_ref().is_none_or(|c| c.record.session.revision < record.session.revision);
                if newer {
                    *current = Some(Arc::new(Published { record: record.clone(), encoded: OnceLock::new() }));
                }
                newer
            });
        }
    }

    /// Starts receiving the states of `session_id` published from now on.
    pub fn subscribe(&self, session_id: &str) -> Subscription {
        let mut channels = self.lock();
        let slot = channels.entry(session_id.to_owned()).or_insert_with(|| watch::channel(None).0);
        Subscription { receiver: slot.subscribe(), hub: self.clone(), session_id: session_id.to_owned() }
    }

    /// Whether anybody watches `session_id` (loading a state nobody watches is wasted work).
    pub fn is_watched(&self, session_id: &str) -> bool {
        self.lock().contains_key(session_id)
    }

    /// Whether `session_id` is watched and its watchers have not been offered `revision` yet.
    pub fn lags_behind(&self, session_id: &str, revision: i64) -> bool {
        self.lock()
            .get(session_id)
            .is_some_and(|slot| slot.borrow().as_ref().is_none_or(|current| current.record.session.revision < revision))
    }

    /// The sessions that have watchers.
    pub fn watched(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// How many sessions have watchers (for tests and metrics).
    pub fn watched_sessions(&self) -> usize {
        self.lock().len()
    }
}

/// One watcher's view of a session; the channel is dropped with its last watcher.
pub struct Subscription {
    receiver: watch::Receiver<Option<Arc<Published>>>,
    hub: Hub,
    session_id: String,
}

impl Subscription {
    /// Waits for a state newer than the last one seen; `None` if the hub is gone.
    pub async fn next(&mut self) -> Option<Arc<Published>> {
        loop {
            self.receiver.changed().await.ok()?;
            if let Some(record) = self.receiver.borrow_and_update().clone() {
                return Some(record);
            }
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut channels = self.hub.lock();
        if let Some(slot) = channels.get(&self.session_id) {
            // This subscription's receiver is still counted while it is being dropped.
            if slot.receiver_count() <= 1 {
                channels.remove(&self.session_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, revision: i64) -> Arc<SessionRecord> {
        Arc::new(SessionRecord::blank(id, revision))
    }

    #[tokio::test]
    async fn a_slow_watcher_gets_the_latest_state_and_never_an_older_one() {
        let hub = Hub::default();
        let mut slow = hub.subscribe("s");
        // Publishing never waits for the watcher, however many states it misses.
        for revision in 1..=1000 {
            hub.publish(record("s", revision));
        }
        hub.publish(record("s", 7)); // a late publisher with an old state
        assert_eq!(slow.next().await.map(|p| p.record.session.revision), Some(1000));
        hub.publish(record("s", 1001));
        assert_eq!(slow.next().await.map(|p| p.record.session.revision), Some(1001));
    }

    #[tokio::test]
    async fn every_watcher_of_a_state_gets_the_same_one_to_encode_once() {
        let hub = Hub::default();
        let (mut first, mut second) = (hub.subscribe("s"), hub.subscribe("s"));
        hub.publish(record("s", 1));
        let (a, b) = (first.next().await.expect("state"), second.next().await.expect("state"));
        assert!(Arc::ptr_eq(&a, &b), "one published state, shared");
        a.encoded.get_or_init(|| bytes::Bytes::from_static(b"encoded"));
        assert_eq!(b.encoded.get().map(|bytes| &bytes[..]), Some(&b"encoded"[..]));
    }

    #[tokio::test]
    async fn only_a_watched_session_missing_a_revision_lags_behind() {
        let hub = Hub::default();
        assert!(!hub.lags_behind("s", 1), "nobody watches it");
        let _watcher = hub.subscribe("s");
        assert!(hub.lags_behind("s", 1), "nothing was offered yet");
        hub.publish(record("s", 3));
        assert!(!hub.lags_behind("s", 3));
        assert!(!hub.lags_behind("s", 2));
        assert!(hub.lags_behind("s", 4));
        assert_eq!(hub.watched(), vec!["s".to_owned()]);
    }

    #[tokio::test]
    async fn channels_exist_only_while_watched() {
        let hub = Hub::default();
        hub.publish(record("s", 1));
        assert!(!hub.is_watched("s"));
        let first = hub.subscribe("s");
        let second = hub.subscribe("s");
        assert_eq!(hub.watched_sessions(), 1);
        drop(first);
        assert!(hub.is_watched("s"));
        drop(second);
        assert!(!hub.is_watched("s"));
    }
}
