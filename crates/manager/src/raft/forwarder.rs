//! Write forwarding on followers, batched as the leader batches.
//!
//! A follower cannot commit; it hands client writes to the leader. One RPC
//! per write made a follower's clients pay a TLS round trip and a leader
//! task each, and reached the leader's [`super::proposer::Proposer`] one by
//! one. Instead the forwarder sends whatever queued up while its previous
//! batch was in flight as one `ForwardWrite` call, which the leader
//! proposes together (so they usually share one log entry), and hands each
//! writer its own outcome. A lone write is sent at once.

use std::collections::VecDeque;
use std::sync::Weak;

use shoal_proto::pb;
use tokio::sync::{mpsc, oneshot};

use crate::errors::ManagerError;
use crate::manager::{ForwardedError, Manager};
use crate::store::{Transaction, TxnOutcome};

/// Most writes per forwarded batch; the leader's proposer takes up to 256
/// per entry.
const MAX_BATCH: usize = 256;
/// Batches sent but not yet answered.
const MAX_IN_FLIGHT: usize = 2;

struct Pending {
    leader_addr: String,
    txn: Transaction,
    reply: oneshot::Sender<Result<TxnOutcome, ManagerError>>,
}

#[derive(Clone)]
pub struct Forwarder {
    queue: mpsc::UnboundedSender<Pending>,
}

impl Forwarder {
    /// Starts the batching task for `manager`; it ends with the manager.
    pub fn start(manager: Weak<Manager>) -> Self {
        let (queue, waiting) = mpsc::unbounded_channel();
        tokio::spawn(batch_loop(manager, waiting));
        Forwarder { queue }
    }

    /// Commits `txn` through the leader at `leader_addr`.
    pub async fn forward(&self, leader_addr: &str, txn: Transaction) -> Result<TxnOutcome, ManagerError> {
        let (reply, outcome) = oneshot::channel();
        self.queue
            .send(Pending { leader_addr: leader_addr.to_string(), txn, reply })
            .map_err(|_| ManagerError::Unavailable("this manager is shutting down".into()))?;
        outcome.await.map_err(|_| ManagerError::Unavailable("this manager is shutting down".into()))?
    }
}

async fn batch_loop(manager: Weak<Manager>, mut waiting: mpsc::UnboundedReceiver<Pending>) {
    // Writes for another leader than the batch's, kept for the next one
    // (the leader changed while they queued).
    let mut held: VecDeque<Pending> = VecDeque::new();
    let in_flight = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    loop {
        // Wait for room first, so writes that arrive meanwhile join this batch.
        let Ok(permit) = in_flight.clone().acquire_owned().await else { return };
        let first = match held.pop_front() {
            Some(first) => first,
            None => match waiting.recv().await {
                Some(first) => first,
                None => return,
            },
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            let next = match held.pop_front() {
                Some(next) => next,
                None => match waiting.try_recv() {
                    Ok(next) => next,
                    Err(_) => break,
                },
            };
            if next.leader_addr == batch[0].leader_addr {
                batch.push(next);
            } else {
                held.push_back(next);
                break;
            }
        }
        let Some(manager) = manager.upgrade() else { return };
        tokio::spawn(async move {
            forward_batch(&manager, batch).await;
            drop(permit);
        });
    }
}

/// Sends one batch and hands each writer its outcome.
async fn forward_batch(manager: &Manager, batch: Vec<Pending>) {
    let leader_addr = batch[0].leader_addr.clone();
    let (txns, replies): (Vec<Transaction>, Vec<_>) = batch.into_iter().map(|p| (p.txn, p.reply)).unzip();
    match send(manager, &leader_addr, &txns).await {
        Ok(outcomes) if outcomes.len() == replies.len() => {
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                let _ = reply.send(outcome.map_err(ForwardedError::into_error));
            }
        }
        Ok(outcomes) => {
            let error = format!("the leader answered {} forwarded writes with {} outcomes", replies.len(), outcomes.len());
            for reply in replies {
                let _ = reply.send(Err(ManagerError::Internal(error.clone())));
            }
        }
        Err(SendError::Call(status)) => {
            for reply in replies {
                let _ = reply.send(Err(ManagerError::from_forwarded(&leader_addr, status.clone())));
            }
        }
        Err(SendError::Local(error)) => {
            let message = error.to_string();
            let mut replies = replies.into_iter();
            if let Some(first) = replies.next() {
                let _ = first.send(Err(error));
            }
            for reply in replies {
                let _ = reply.send(Err(ManagerError::Unavailable(message.clone())));
            }
        }
    }
}

/// Why a batch got no outcomes: the call failed (every writer gets the
/// leader's answer), or it could not be made here.
enum SendError {
    Call(tonic::Status),
    Local(ManagerError),
}

async fn send(
    manager: &Manager,
    leader_addr: &str,
    txns: &[Transaction],
) -> Result<Vec<Result<TxnOutcome, ForwardedError>>, SendError> {
    let data = bincode::serialize(txns)
        .map_err(|e| SendError::Local(ManagerError::Internal(format!("encoding writes: {e}"))))?;
    let channel = manager.peer_channel(leader_addr).map_err(SendError::Local)?;
    let reply = pb::raft_client::RaftClient::new(channel)
        .forward_write(pb::RaftPayload { data })
        .await
        .map_err(SendError::Call)?;
    bincode::deserialize(&reply.into_inner().data)
        .map_err(|e| SendError::Local(ManagerError::Internal(format!("decoding forwarded writes: {e}"))))
}
