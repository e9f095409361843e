//! Passes session changes committed by other replicas to this replica's watchers (PostgreSQL
//! only). Every session update announces "<id> <revision>" on [`CHANGES_CHANNEL`]; the listener
//! reloads the announced sessions that are watched here and newer than what their watchers have.
//! Announcements made while it is disconnected are lost, so after every (re)connection it
//! reloads all watched sessions.

use super::{Engine, stopping};
use crate::store::queries::sessions::{CHANGES_CHANNEL, parse_announcement};
use sea_orm::DbBackend;
use sea_orm::sqlx::postgres::{PgListener, PgPoolOptions};
use std::time::Duration;
use tokio::sync::watch;

const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_LONGEST: Duration = Duration::from_secs(30);

pub(super) async fn run(engine: Engine, mut stop: watch::Receiver<bool>) {
    let db = &engine.inner.db;
    if db.get_database_backend() != DbBackend::Postgres {
        return;
    }
    // A connection of its own: LISTEN holds it for good, and the shared pool may be small.
    let options = db.get_postgres_connection_pool().connect_options();
    let pool = PgPoolOptions::new().max_connections(1).connect_lazy_with((*options).clone());
    let mut retry = RETRY_FIRST;
    loop {
        let connected = tokio::select! {
            connected = listen(&pool) => connected,
            _ = stopping(&mut stop) => return,
        };
        match connected {
            Ok(mut listener) => {
                retry = RETRY_FIRST;
                let watched = engine.hub().watched();
                engine.publish(&watched.iter().map(String::as_str).collect::<Vec<_>>()).await;
                loop {
                    let received = tokio::select! {
                        received = listener.try_recv() => received,
                        _ = stopping(&mut stop) => return,
                    };
                    match received {
                        Ok(Some(notification)) => {
                            if let Some((id, revision)) = parse_announcement(notification.payload())
                                && engine.hub().lags_behind(id, revision)
                            {
                                engine.publish(&[id]).await;
                            }
                        }
                        Ok(None) => {
                            tracing::warn!("lost the connection listening for session changes; reconnecting");
                            break;
                        }
                        Err(err) => {
                            tracing::warn!(error = %err, "listening for session changes failed; reconnecting");
                            break;
                        }
                    }
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, retry_in = ?retry, "cannot listen for session changes");
                tokio::select! {
                    _ = tokio::time::sleep(retry) => {}
                    _ = stopping(&mut stop) => return,
                }
                retry = (retry * 2).min(RETRY_LONGEST);
            }
        }
    }
}

async fn listen(pool: &sea_orm::sqlx::PgPool) -> Result<PgListener, sea_orm::sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANGES_CHANNEL).await?;
    Ok(listener)
}
