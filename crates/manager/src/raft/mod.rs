//! Raft replication of the cluster store (openraft 0.9).
//!
//! - `log_store`: the Raft log (in `wal`, files of its own), vote and
//!   committed index (in sled).
//! - `state_machine`: applies committed transactions to the [`Store`] and
//!   persists it and its snapshots in sled.
//! - `network`: openraft's outbound RPCs over mutual TLS.
//! - `own_runtime`: the thread Raft runs on, apart from the daemon's tasks.
//! - `rpc`: the receiving side of those RPCs and their payload format.
//! - `proposer`: batches concurrent writes into one log entry;
//!   `forwarder`: batches a follower's writes to the leader the same way.
//! - `sealed`: encryption of every stored value with the manager's data key;
//!   `dek_file`: where that key is kept; `at_rest`: opening the database
//!   encrypted, and migrating a plaintext one.
//! - `durable`: what a flush must sync, beyond sled's own, for an
//!   acknowledged write to survive a power cut.

pub mod at_rest;
pub mod dek_file;
pub mod durable;
pub mod forwarder;
pub mod framed;
pub mod log_store;
pub mod network;
pub mod own_runtime;
pub mod proposer;
pub mod rpc;
pub mod sealed;
pub mod state_machine;
pub mod wal;

use std::io::Cursor;

use crate::store::{Store, Transaction, TxnOutcome};

openraft::declare_raft_types!(
    /// Shoal's Raft: batches of store transactions in, one outcome per
    /// transaction out; node ids are the numeric form of Shoal node ids, and
    /// a node's data is the host:port of its manager endpoint.
    pub TypeConfig:
        D = Proposal,
        R = Vec<TxnOutcome>,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type NodeId = u64;

/// One Raft log entry's worth of writes: transactions from concurrent
/// callers, applied in order, each atomically and independently of the
/// others (one failing does not undo its neighbours). Batching them
/// amortises the per-entry cost of replication, fsync and apply.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Proposal {
    pub txns: Vec<Transaction>,
}

impl From<Transaction> for Proposal {
    fn from(txn: Transaction) -> Self {
        Proposal { txns: vec![txn] }
    }
}

impl std::fmt::Display for Proposal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "proposal of {} transaction(s)", self.txns.len())
    }
}
pub type Raft = openraft::Raft<TypeConfig>;

/// What the storage halves return: openraft's own error type, as its traits demand.
type StorageResult<T> = Result<T, openraft::StorageError<NodeId>>;

/// A sled or bincode failure as the openraft storage error naming what was
/// being read or written, so openraft can tell which part of storage broke.
fn io_error(
    subject: openraft::ErrorSubject<NodeId>,
    verb: openraft::ErrorVerb,
    source: &(impl std::error::Error + 'static),
) -> openraft::StorageError<NodeId> {
    openraft::StorageIOError::new(subject, verb, openraft::AnyError::new(source)).into()
}

/// Opens a manager's Raft storage in its sled database `db`, opened at
/// `db_dir`: the log store (making sled's files durable on every flush, see
/// [`durable::DurableFlush`]), and
/// the state machine with `store` loaded from disk, both sealing what they
/// store with `sealer` (see [`at_rest::open_database`], which gives both).
/// Pass them to [`Raft::new`]; on restart openraft re-applies committed
/// entries after the state machine's last applied one.
#[allow(clippy::result_large_err)] // openraft's error type, as its traits return it
pub fn open_storage(
    db: &sled::Db,
    db_dir: &std::path::Path,
    store: Store,
    sealer: sealed::Sealer,
) -> Result<(log_store::LogStore, state_machine::StateMachine), openraft::StorageError<NodeId>> {
    let log_store = log_store::LogStore::open(db, &db_dir.join(wal::DIR_NAME), sealer.clone())?;
    log_store
        .fsync_after_flush(db_dir)
        .map_err(|e| io_error(openraft::ErrorSubject::Store, openraft::ErrorVerb::Read, &e))?;
    let mut state_machine = state_machine::StateMachine::new(db, store, sealer)?;
    state_machine.flush_snapshots_with(log_store.durable_flush());
    Ok((log_store, state_machine))
}
