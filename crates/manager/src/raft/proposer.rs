//! Write batching on the leader (group commit at the Raft level).
//!
//! Every log entry costs a round of replication, a flush on each manager
//! and an apply; under concurrent writers that per-entry cost, not the
//! transactions themselves, limits throughput. The proposer queues writes
//! and sends whatever queued up while earlier entries were in flight as one
//! [`Proposal`]. A lone writer still gets its own entry at once, so batching
//! adds no latency.

use std::sync::Arc;

use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::{Proposal, Raft};
use crate::store::{Transaction, TxnOutcome};

/// Most transactions per entry: bounds the entry size well below the
/// replication batch limit in `log_store`.
const MAX_BATCH: usize = 256;
/// Entries proposed but not yet committed. While all are in flight, new
/// writes wait and form the next, larger batch. One: the managers share a
/// few cores, so throughput is bound by CPU, and every entry costs a sled
/// flush (with its thread hand-offs) on each manager, an AppendEntries
/// round trip per follower and a state machine batch, whatever its size.
/// Measured with the control-plane bench (64 writers, 3 managers on 2
/// cores): 1 in flight commits ~25% more writes/s than 4 (fewer, fuller
/// entries), and 8 fewer still.
const MAX_IN_FLIGHT: usize = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProposeError {
    /// This manager is not (or no longer) the leader.
    NotLeader,
    Raft(String),
}

struct Pending {
    txn: Transaction,
    reply: oneshot::Sender<Result<TxnOutcome, ProposeError>>,
}

#[derive(Clone)]
pub struct Proposer {
    queue: mpsc::UnboundedSender<Pending>,
}

impl Proposer {
    /// Starts the batching task; it ends when the last handle is dropped.
    pub fn start(raft: Raft) -> Self {
        let (queue, waiting) = mpsc::unbounded_channel();
        tokio::spawn(batch_loop(raft, waiting));
        Proposer { queue }
    }

    /// Commits `txn` (this manager must lead) and returns its outcome.
    pub async fn propose(&self, txn: Transaction) -> Result<TxnOutcome, ProposeError> {
        let proposed = std::time::Instant::now();
        let (reply, outcome) = oneshot::channel();
        self.queue
            .send(Pending { txn, reply })
            .map_err(|_| ProposeError::Raft("the manager is shutting down".into()))?;
        let outcome = outcome
            .await
            .unwrap_or_else(|_| Err(ProposeError::Raft("the manager is shutting down".into())));
        if outcome.is_ok() {
            crate::metrics::metrics().proposal_seconds.observe(proposed.elapsed().as_secs_f64());
        }
        outcome
    }
}

async fn batch_loop(raft: Raft, mut waiting: mpsc::UnboundedReceiver<Pending>) {
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    loop {
        // Wait for room first, so writes that arrive meanwhile join this batch.
        let Ok(permit) = in_flight.clone().acquire_owned().await else { return };
        let Some(first) = waiting.recv().await else { return };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match waiting.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            commit(&raft, batch).await;
            drop(permit);
        });
    }
}

async fn commit(raft: &Raft, batch: Vec<Pending>) {
    let (txns, replies): (Vec<_>, Vec<_>) = batch.into_iter().map(|p| (p.txn, p.reply)).unzip();
    let count = txns.len();
    let result = match raft.client_write(Proposal { txns }).await {
        Ok(response) if response.data.len() == count => Ok(response.data),
        Ok(response) => Err(ProposeError::Raft(format!(
            "raft returned {} outcomes for {count} transactions",
            response.data.len()
        ))),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => Err(ProposeError::NotLeader),
        Err(e) => Err(ProposeError::Raft(e.to_string())),
    };
    match result {
        Ok(outcomes) => {
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                let _ = reply.send(Ok(outcome));
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}
