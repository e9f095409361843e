//! Stopping background work: every long-running task holds a `watch::Receiver<bool>` that turns
//! true when the server stops, and waits on [`stopping`] beside its work.

use tokio::sync::watch;

/// Completes once `stop` turns true (or its sender is gone).
pub async fn stopping(stop: &mut watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}
