//! Expiry warnings: a live session lasting more than twice the warning window is announced
//! (`session.expiring_soon`, which webhooks carry) and its user mailed once per end it has:
//! the session row records the end it was warned for, so an extension arms the next warning,
//! and the record is taken with a conditional update, so one replica sends it.

use super::mail::{ExpiringSession, Mail, Mailer};
use crate::config::NotificationsConfig;
use crate::domain::{Actor, now};
use crate::store::audit::AuditRecord;
use crate::store::entity::session;
use crate::store::queries::{resources, sessions, users};
use crate::store::{self, StoreResult};
use chrono::TimeDelta;
use sea_orm::DatabaseConnection;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Most warnings looked at per pass.
const BATCH: u64 = 200;

#[derive(Clone)]
pub struct ExpiryWarnings {
    db: DatabaseConnection,
    mailer: Arc<dyn Mailer>,
    /// None: no warnings.
    window: Option<TimeDelta>,
    poll: Duration,
}

impl ExpiryWarnings {
    pub fn new(db: DatabaseConnection, mailer: Arc<dyn Mailer>, config: &NotificationsConfig) -> ExpiryWarnings {
        let window = config.expiry_warning_minutes.nonzero().map(|_| config.expiry_warning_minutes.time_delta());
        ExpiryWarnings { db, mailer, window, poll: config.poll_interval_ms.get() }
    }

    /// Sends due warnings until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        if self.window.is_none() {
            return;
        }
        loop {
            if let Err(err) = self.warn_due().await {
                tracing::warn!(error = %err, "sending expiry warnings failed");
            }
            tokio::select! {
                _ = tokio::time::sleep(self.poll) => {}
                () = crate::shutdown::stopping(&mut stop) => return,
            }
        }
    }

    /// Warns about every session due for it now; answers how many.
    pub async fn warn_due(&self) -> StoreResult<usize> {
        let Some(window) = self.window else { return Ok(0) };
        let at = now();
        let mut sent = 0;
        for session in sessions::due_for_warning(&self.db, at, at + window, BATCH).await? {
            // A session no longer than twice the window would be warned about for much of its life.
            if session.expires_at - session.started_at <= window * 2 {
                continue;
            }
            if self.warn(&session).await? {
                sent += 1;
            }
        }
        Ok(sent)
    }

    async fn warn(&self, session: &session::Model) -> StoreResult<bool> {
        let minutes_left = (session.expires_at - now()).num_seconds().div_euclid(60).max(0) + 1;
        let txn = store::begin(&self.db).await?;
        if !sessions::take_warning(&txn, &session.id, session.expires_at).await? {
            return Ok(false);
        }
        AuditRecord::new("session.expiring_soon", "session", &session.id)
            .detail("expires_at", session.expires_at.to_rfc3339())
            .detail("minutes_left", minutes_left)
            .write(&txn, &Actor::server(&session.organization_id))
            .await?;
        store::commit(txn).await?;
        let user = users::get_any(&self.db, &session.user_id).await?;
        if !user.expiry_emails || user.disabled {
            return Ok(true);
        }
        let rules = sessions::rules_of(&self.db, &session.id).await?;
        let mut resource_ids: Vec<&str> = rules.iter().map(|rule| rule.resource_id.as_str()).collect();
        resource_ids.sort_unstable();
        resource_ids.dedup();
        let mut names: Vec<String> =
            resources::by_ids(&self.db, &resource_ids).await?.into_iter().map(|resource| resource.name).collect();
        names.sort();
        let addresses = [&session.ipv4_address, &session.ipv6_address].into_iter().flatten().map(String::as_str);
        let expiring = ExpiringSession {
            id: &session.id,
            expires_at: session.expires_at,
            minutes_left,
            addresses: addresses.collect(),
            resources: names,
        };
        if let Err(err) = self.mailer.send(Mail::expiry_warning(&user.email, &expiring)).await {
            tracing::warn!(session_id = %session.id, error = %err, "expiry warning mail not sent");
        }
        Ok(true)
    }
}
