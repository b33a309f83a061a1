//! The manager's errors, and how they become gRPC statuses at the API edge.

use tonic::{Code, Status};

use crate::store::TxnError;

#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error("no manager is currently the leader; the swarm may have lost quorum: bring managers back or run `shoal swarm init --force-new-cluster` on a surviving manager")]
    NoLeader,
    #[error("the write was not committed within 5 s: this manager cannot reach a majority of managers; check the managers' network or bring failed managers back")]
    NoQuorum,
    #[error("this manager is not the leader")]
    NotLeader,
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Txn(#[from] TxnError),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("cannot remove the last manager of the swarm; use `shoal swarm leave --force` on it to dismantle the swarm")]
    LastManager,
    #[error("removing this manager would leave {reachable} reachable of {remaining} managers, which is not a quorum; bring the unreachable managers back first")]
    WouldLoseQuorum { reachable: usize, remaining: usize },
    #[error("internal error: {0}")]
    Internal(String),
}

impl ManagerError {
    /// Turns a failed call to another manager back into an error, keeping
    /// the remote's sentence when it has one.
    pub fn from_forwarded(addr: &str, status: Status) -> Self {
        match status.code() {
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => {
                ManagerError::Unavailable(format!("manager {addr} is unreachable: {}", status.message()))
            }
            Code::FailedPrecondition if status.message().contains("not the leader") => ManagerError::NotLeader,
            _ => ManagerError::Internal(status.message().to_string()),
        }
    }
}

impl From<ManagerError> for Status {
    fn from(err: ManagerError) -> Status {
        let message = err.to_string();
        match err {
            ManagerError::NoLeader | ManagerError::NoQuorum | ManagerError::Unavailable(_) => {
                Status::unavailable(message)
            }
            ManagerError::NotLeader => Status::failed_precondition(message),
            ManagerError::Txn(TxnError::NotFound { .. }) | ManagerError::NotFound(_) => Status::not_found(message),
            ManagerError::Txn(TxnError::AlreadyExists { .. } | TxnError::NameInUse { .. }) => {
                Status::already_exists(message)
            }
            ManagerError::Txn(TxnError::VersionConflict { .. } | TxnError::AddressInUse { .. }) => Status::aborted(message),
            ManagerError::Txn(TxnError::SubnetOverlap { .. }) => Status::invalid_argument(message),
            ManagerError::Txn(TxnError::InUse { .. }) => Status::failed_precondition(message),
            ManagerError::InvalidArgument(_) => Status::invalid_argument(message),
            ManagerError::FailedPrecondition(_) | ManagerError::LastManager | ManagerError::WouldLoseQuorum { .. } => {
                Status::failed_precondition(message)
            }
            ManagerError::PermissionDenied(_) => Status::permission_denied(message),
            ManagerError::Internal(_) => Status::internal(message),
        }
    }
}
