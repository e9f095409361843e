//! Follows what other replicas commit (PostgreSQL only): session updates reach this replica's
//! watchers and session cache; credential changes empty its caller and session caches, so a
//! revoked key or disabled user stops working here too at once; new or retired signing keys
//! are read again. Announcements made while the listening connection is down are lost: the
//! session cache serves nothing meanwhile, and after every (re)connection all watched sessions
//! are reloaded and the caches emptied.

use super::{Authenticator, CallerCache, Whose};
use crate::engine::Engine;
use crate::shutdown::stopping;
use crate::store::changes::{CREDENTIALS_CHANNEL, SESSIONS_CHANNEL, SIGNING_KEYS_CHANNEL, parse_session_change};
use sea_orm::sqlx::postgres::{PgListener, PgNotification, PgPoolOptions};
use sea_orm::{DatabaseConnection, DbBackend};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_LONGEST: Duration = Duration::from_secs(30);

/// Most sessions read again in one statement for this replica's watchers.
const LARGEST_PUBLISH: usize = 500;

/// Runs until `stop` turns true; returns at once on a database other than PostgreSQL.
pub async fn follow(
    db: DatabaseConnection,
    engine: Engine,
    callers: CallerCache,
    auth: Authenticator,
    mut stop: watch::Receiver<bool>,
) {
    if db.get_database_backend() != DbBackend::Postgres {
        return;
    }
    // A connection of its own: LISTEN holds it for good, and the shared pool may be small.
    let options = db.get_postgres_connection_pool().connect_options();
    let pool = PgPoolOptions::new().max_connections(1).connect_lazy_with((*options).clone());
    let mut retry = RETRY_FIRST;
    // The publisher ends when this function returns and drops the sender.
    let (lagging, behind) = mpsc::unbounded_channel();
    tokio::spawn(publish_batches(engine.clone(), behind));
    // Until another replica's changes can be heard, sessions are not served from memory.
    engine.cache().suspend();
    loop {
        let connected = tokio::select! {
            connected = listen(&pool) => connected,
            _ = stopping(&mut stop) => return,
        };
        let mut listener = match connected {
            Ok(listener) => listener,
            Err(err) => {
                tracing::warn!(error = %err, retry_in = ?retry, "cannot listen for other replicas' changes");
                tokio::select! {
                    _ = tokio::time::sleep(retry) => {}
                    _ = stopping(&mut stop) => return,
                }
                retry = (retry * 2).min(RETRY_LONGEST);
                continue;
            }
        };
        retry = RETRY_FIRST;
        callers.clear();
        engine.cache().resume();
        reload_keys(&auth).await;
        let watched = engine.hub().watched();
        engine.publish(&watched.iter().map(String::as_str).collect::<Vec<_>>()).await;
        loop {
            let received = tokio::select! {
                received = listener.try_recv() => received,
                _ = stopping(&mut stop) => return,
            };
            match received {
                Ok(Some(notification)) => apply(&notification, &engine, &callers, &auth, &lagging).await,
                Ok(None) => {
                    tracing::warn!("lost the connection listening for other replicas' changes; reconnecting");
                    engine.cache().suspend();
                    break;
                }
                Err(err) => {
                    tracing::warn!(error = %err, "listening for other replicas' changes failed; reconnecting");
                    engine.cache().suspend();
                    break;
                }
            }
        }
    }
}

async fn listen(pool: &sea_orm::sqlx::PgPool) -> Result<PgListener, sea_orm::sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen_all([SESSIONS_CHANNEL, CREDENTIALS_CHANNEL, SIGNING_KEYS_CHANNEL]).await?;
    Ok(listener)
}

async fn apply(
    notification: &PgNotification,
    engine: &Engine,
    callers: &CallerCache,
    auth: &Authenticator,
    lagging: &mpsc::UnboundedSender<String>,
) {
    match notification.channel() {
        // A user's change may be a new name, which cached sessions show.
        CREDENTIALS_CHANNEL => match Whose::from_payload(notification.payload()) {
            Some(whose) => {
                callers.forget(&whose);
                if let Whose::User(id) = &whose {
                    engine.cache().forget_user(id);
                }
            }
            None => {
                callers.clear();
                engine.cache().clear();
            }
        },
        SIGNING_KEYS_CHANNEL => reload_keys(auth).await,
        _ => {
            if let Some((id, revision)) = parse_session_change(notification.payload()) {
                engine.cache().changed_to(id, revision);
                if engine.hub().lags_behind(id, revision) {
                    // Only fails once the publisher is gone, that is while this replica stops.
                    let _ = lagging.send(id.to_owned());
                }
            }
        }
    }
}

/// Reads again and publishes the watched sessions other replicas changed, all that were
/// announced while the last read ran in one read: reading each before hearing the next put a
/// burst of changes (a pass settles dozens of sessions) in a queue of reads, one at a time.
async fn publish_batches(engine: Engine, mut lagging: mpsc::UnboundedReceiver<String>) {
    let mut ids = Vec::with_capacity(LARGEST_PUBLISH);
    while lagging.recv_many(&mut ids, LARGEST_PUBLISH).await > 0 {
        ids.sort_unstable();
        ids.dedup();
        engine.publish(&ids.iter().map(String::as_str).collect::<Vec<_>>()).await;
        ids.clear();
    }
}

async fn reload_keys(auth: &Authenticator) {
    if let Err(err) = auth.reload_keys().await {
        tracing::warn!(error = %err, "reading the token signing keys again failed; the current ones stay");
    }
}
