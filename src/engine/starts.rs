//! Group commit of new sessions: StartSessions that arrive while the previous write runs are
//! written together, in one transaction of a few multi-row statements, instead of one
//! transaction each (on SQLite every statement waits its turn at the single writer).
//!
//! One start's refusal never fails the others: a start whose address its user already has live
//! (before it, or earlier in the same batch) is refused alone; if the batch still fails (another
//! replica took an address meanwhile), each start is written again on its own.

use super::transitions::{self, NewSession};
use crate::store::queries::sessions;
use crate::store::{self, StoreError, StoreResult};
use sea_orm::DatabaseConnection;
use std::collections::HashSet;
use tokio::sync::{mpsc, oneshot};

/// Most sessions written in one transaction.
const LARGEST_BATCH: usize = 256;

type Reply = oneshot::Sender<StoreResult<()>>;

/// The queue to the writer task.
#[derive(Clone)]
pub(super) struct Starts {
    queue: mpsc::UnboundedSender<(NewSession, Reply)>,
}

impl Starts {
    /// Starts the writer task (it ends with the last handle).
    pub(super) fn spawn(db: DatabaseConnection) -> Starts {
        let (queue, received) = mpsc::unbounded_channel();
        tokio::spawn(write_batches(db, received));
        Starts { queue }
    }

    /// Writes a new session and its rules (with its audit event); answers once committed.
    pub(super) async fn start(&self, new: NewSession) -> StoreResult<()> {
        let (reply, answer) = oneshot::channel();
        let gone = || StoreError::Unavailable(sea_orm::DbErr::Custom("the session writer has stopped".into()));
        self.queue.send((new, reply)).map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

async fn write_batches(db: DatabaseConnection, mut received: mpsc::UnboundedReceiver<(NewSession, Reply)>) {
    let mut batch = Vec::with_capacity(LARGEST_BATCH);
    while received.recv_many(&mut batch, LARGEST_BATCH).await > 0 {
        write(&db, std::mem::take(&mut batch)).await;
    }
}

async fn write(db: &DatabaseConnection, batch: Vec<(NewSession, Reply)>) {
    if batch.len() == 1 {
        for (new, reply) in batch {
            let _ = reply.send(write_one(db, new).await);
        }
        return;
    }
    let (starts, replies): (Vec<NewSession>, Vec<Reply>) = batch.into_iter().unzip();
    match write_together(db, &starts).await {
        Ok(refused) => {
            for (index, reply) in replies.into_iter().enumerate() {
                let answer = match refused.contains(&index) {
                    true => Err(StoreError::AlreadyExists("a live session holds this address".into())),
                    false => Ok(()),
                };
                let _ = reply.send(answer);
            }
        }
        Err(err) => {
            tracing::debug!(sessions = starts.len(), error = %err, "writing starts together failed; writing each alone");
            for (new, reply) in starts.into_iter().zip(replies) {
                let _ = reply.send(write_one(db, new).await);
            }
        }
    }
}

/// One transaction for the whole batch; answers the starts refused for an address already live.
async fn write_together(db: &DatabaseConnection, starts: &[NewSession]) -> StoreResult<HashSet<usize>> {
    let txn = store::begin(db).await?;
    let keys: Vec<&str> = starts.iter().flat_map(NewSession::live_keys).collect();
    let mut held: HashSet<String> = sessions::live_keys_taken(&txn, &keys).await?;
    let mut refused = HashSet::new();
    let mut accepted = Vec::with_capacity(starts.len());
    for (index, new) in starts.iter().enumerate() {
        if new.live_keys().any(|key| held.contains(key)) {
            refused.insert(index);
        } else {
            held.extend(new.live_keys().map(str::to_owned));
            accepted.push(new.clone());
        }
    }
    transitions::start_all(&txn, accepted).await?;
    store::commit(txn).await?;
    Ok(refused)
}

async fn write_one(db: &DatabaseConnection, new: NewSession) -> StoreResult<()> {
    let txn = store::begin(db).await?;
    transitions::start_all(&txn, vec![new]).await?;
    store::commit(txn).await
}
