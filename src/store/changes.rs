//! Announcements to the other replicas, over PostgreSQL's LISTEN/NOTIFY. An announcement made
//! inside a transaction is delivered when it commits and never if it rolls back. SQLite serves a
//! single process, so there announcing is a no-op.

use crate::store::StoreResult;
use sea_orm::{ConnectionTrait, DbBackend, Statement};

/// Every session update, as "<id> <revision>": replicas pass it to their watchers.
pub const SESSIONS_CHANNEL: &str = "portcullis_session_changes";
/// Any change to users, organizations or credentials: replicas forget their cached callers.
pub const CREDENTIALS_CHANNEL: &str = "portcullis_credential_changes";
/// A token signing key was added or retired: replicas read the keys again.
pub const SIGNING_KEYS_CHANNEL: &str = "portcullis_signing_keys";

pub async fn announce(db: &impl ConnectionTrait, channel: &str, payload: &str) -> StoreResult<()> {
    announce_all(db, channel, &[payload.to_owned()]).await
}

/// Several announcements on one channel, in one statement per thousand.
pub async fn announce_all(db: &impl ConnectionTrait, channel: &str, payloads: &[String]) -> StoreResult<()> {
    if db.get_database_backend() != DbBackend::Postgres {
        return Ok(());
    }
    for chunk in payloads.chunks(1000) {
        let calls: Vec<String> = (0..chunk.len()).map(|n| format!("pg_notify($1, ${})", n + 2)).collect();
        let values = std::iter::once(channel.into()).chain(chunk.iter().map(|payload| payload.as_str().into()));
        let notify =
            Statement::from_sql_and_values(DbBackend::Postgres, format!("SELECT {}", calls.join(", ")), values);
        db.query_one_raw(notify).await?;
    }
    Ok(())
}

/// Reads a [`SESSIONS_CHANNEL`] announcement: the session id and its new revision.
pub fn parse_session_change(payload: &str) -> Option<(&str, i64)> {
    let (id, revision) = payload.split_once(' ')?;
    Some((id, revision.parse().ok()?))
}
