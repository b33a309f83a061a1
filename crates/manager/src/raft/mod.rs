//! Raft replication of the cluster store (openraft 0.9).
//!
//! - `log_store`: the Raft log, vote and committed index in sled.
//! - `state_machine`: applies committed transactions to the [`Store`] and
//!   persists it and its snapshots in sled.
//! - `network`: openraft's outbound RPCs over mutual TLS.
//! - `rpc`: the receiving side of those RPCs and their payload format.

pub mod log_store;
pub mod network;
pub mod rpc;
pub mod state_machine;

use std::io::Cursor;

use crate::store::{Store, Transaction, TxnOutcome};

openraft::declare_raft_types!(
    /// Shoal's Raft: store transactions in, transaction outcomes out; node ids
    /// are the numeric form of Shoal node ids, and a node's data is the
    /// host:port of its manager endpoint.
    pub TypeConfig:
        D = Transaction,
        R = TxnOutcome,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type NodeId = u64;
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

/// Opens a manager's Raft storage in its sled database: the log store, and
/// the state machine with `store` loaded from disk. Pass both to
/// [`Raft::new`]; on restart openraft re-applies committed entries after the
/// state machine's last applied one.
#[allow(clippy::result_large_err)] // openraft's error type, as its traits return it
pub fn open_storage(
    db: &sled::Db,
    store: Store,
) -> Result<(log_store::LogStore, state_machine::StateMachine), openraft::StorageError<NodeId>> {
    Ok((
        log_store::LogStore::new(db)?,
        state_machine::StateMachine::new(db, store)?,
    ))
}
