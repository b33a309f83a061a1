//! Transactions: the only way the store changes.
//!
//! A transaction is a list of operations proposed through Raft and applied
//! atomically by every manager: either every precondition holds and all of
//! them apply, or none does and the proposer gets a [`TxnError`] back. The
//! outcome is a pure function of the store and the entry, so replicas agree.

use serde::{Deserialize, Serialize};

use super::objects::{Kind, Object};
use super::service::TaskStatus;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Fails if the id exists, or the name is taken for named kinds.
    Create(Object),
    /// Replaces an existing object. With `expected_version`, fails when the
    /// stored object has moved on (optimistic concurrency for read-modify-write).
    Update { object: Object, expected_version: Option<u64> },
    /// Fails if the object does not exist.
    Delete { kind: Kind, id: String },
    /// Writes nothing; fails unless the object is still at `version`. Lets a
    /// decision taken on a read (a join token check, say) commit only if
    /// what it read is still current.
    Check { kind: Kind, id: String, version: u64 },
    /// An agent's report of a task's state. Never fails, so one stale
    /// report does not sink the batch it came in: it applies only when
    /// the task exists, is assigned to `node_id`, and the state moves
    /// forward (or stays, with new details such as the container id).
    TaskStatus { task_id: String, node_id: String, status: TaskStatus },
    /// Replaces the whole store; used when forcing a new cluster from a
    /// surviving manager's state.
    Restore(Vec<Object>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    pub ops: Vec<Op>,
    /// Unix milliseconds, stamped by the proposer so that every replica writes
    /// the same created/updated times.
    pub timestamp_ms: u64,
}

impl Transaction {
    pub fn new(ops: Vec<Op>) -> Self {
        Transaction { ops, timestamp_ms: now_ms() }
    }

    pub fn single(op: Op) -> Self {
        Self::new(vec![op])
    }
}

/// Why a transaction was not applied. Deterministic: every replica reaches
/// the same verdict for the same entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum TxnError {
    #[error("{kind} {id} already exists")]
    AlreadyExists { kind: Kind, id: String },
    #[error("{kind} name {name:?} is already in use; choose another name")]
    NameInUse { kind: Kind, name: String },
    #[error("{kind} {id} not found")]
    NotFound { kind: Kind, id: String },
    #[error("{kind} {id} was changed concurrently (version {actual}, expected {expected}); retry")]
    VersionConflict { kind: Kind, id: String, expected: u64, actual: u64 },
    #[error("address {address} on network {network_id} is already held by {holder}")]
    AddressInUse { network_id: String, address: std::net::Ipv4Addr, holder: String },
    #[error("{kind} {name} is in use by service {service}; remove it from the service first")]
    InUse { kind: Kind, name: String, service: String },
    #[error("subnet {subnet} overlaps subnet {other} of network {other_name:?}; choose a subnet that does not overlap")]
    SubnetOverlap { subnet: ipnet::Ipv4Net, other: ipnet::Ipv4Net, other_name: String },
}

/// The after-images of what the transaction wrote (deleted objects as they
/// were), with versions set, so the proposer sees exactly what landed.
pub type TxnOutcome = Result<Vec<Object>, TxnError>;

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
