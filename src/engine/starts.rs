//! Group commit of new sessions: StartSessions that arrive while the previous write runs are
//! written together, in one transaction of a few multi-row statements, instead of one
//! transaction each (on SQLite every statement waits its turn at the single writer).
//!
//! Each start is admitted in that transaction (see [`transitions::start_all`]): one whose user
//! lost a right after the request was checked, or whose address its user already has live
//! (before it, or earlier in the same batch), is refused alone. If the batch still fails (another
//! replica took an address meanwhile), each start is written again on its own.

use super::pauses::{Pauses, Point};
use super::transitions::{self, NewSession};
use crate::domain::session::StartRefusal;
use crate::store::{self, StoreError, StoreResult};
use sea_orm::DatabaseConnection;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Most sessions written in one transaction.
const LARGEST_BATCH: usize = 256;

/// A start's answer: committed, refused at commit, or the store failed.
pub type StartAnswer = StoreResult<Result<(), StartRefusal>>;

type Reply = oneshot::Sender<StartAnswer>;

/// The queue to the writer task.
#[derive(Clone)]
pub(super) struct Starts {
    queue: mpsc::UnboundedSender<(NewSession, Reply)>,
}

impl Starts {
    /// Starts the writer task (it ends with the last handle).
    pub(super) fn spawn(db: DatabaseConnection, pauses: Arc<Pauses>) -> Starts {
        let (queue, received) = mpsc::unbounded_channel();
        tokio::spawn(write_batches(db, received, pauses));
        Starts { queue }
    }

    /// Writes a new session and its rules (with its audit event); answers once committed.
    pub(super) async fn start(&self, new: NewSession) -> StartAnswer {
        let (reply, answer) = oneshot::channel();
        let gone = || StoreError::Unavailable(sea_orm::DbErr::Custom("the session writer has stopped".into()));
        self.queue.send((new, reply)).map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

async fn write_batches(
    db: DatabaseConnection,
    mut received: mpsc::UnboundedReceiver<(NewSession, Reply)>,
    pauses: Arc<Pauses>,
) {
    let mut batch = Vec::with_capacity(LARGEST_BATCH);
    while received.recv_many(&mut batch, LARGEST_BATCH).await > 0 {
        pauses.at(Point::StartBeforeWrite).await;
        write(&db, std::mem::take(&mut batch), &pauses).await;
    }
}

async fn write(db: &DatabaseConnection, batch: Vec<(NewSession, Reply)>, pauses: &Pauses) {
    let (starts, replies): (Vec<NewSession>, Vec<Reply>) = batch.into_iter().unzip();
    match write_together(db, &starts, pauses).await {
        Ok(answers) => {
            for (reply, answer) in replies.into_iter().zip(answers) {
                let _ = reply.send(Ok(answer));
            }
        }
        Err(err) if starts.len() > 1 => {
            tracing::debug!(sessions = starts.len(), error = %err, "writing starts together failed; writing each alone");
            for (new, reply) in starts.into_iter().zip(replies) {
                let answer = write_together(db, std::slice::from_ref(&new), pauses).await;
                let _ = reply.send(answer.map(|mut answers| answers.pop().unwrap_or(Ok(()))));
            }
        }
        Err(err) => {
            if let Some(reply) = replies.into_iter().next() {
                let _ = reply.send(Err(err));
            }
        }
    }
}

/// One transaction for `starts`; answers each start's refusal, if any.
async fn write_together(
    db: &DatabaseConnection,
    starts: &[NewSession],
    pauses: &Pauses,
) -> StoreResult<Vec<Result<(), StartRefusal>>> {
    let txn = store::begin(db).await?;
    let answers = transitions::start_all(&txn, starts).await?;
    pauses.at(Point::StartBeforeCommit).await;
    store::commit(txn).await?;
    Ok(answers)
}
