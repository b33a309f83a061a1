//! The manager role: Raft-replicated cluster store, certificate authority,
//! control API and the control loops that only the leader runs.
//!
//! - [`store`]: typed objects, transactions, watches: the spine.
//! - [`raft`]: replication of the store (openraft + sled).
//! - [`manager`]: a running manager and its write/read primitives.
//! - [`ca`]: the swarm's root CA.
//! - [`api`]: the gRPC services on the manager port and the local socket.
//! - [`leader`]: the one list of leader-only loops, started and stopped
//!   with leadership; [`control_loop`]: how each of them runs.
//! - [`node_health`]: the leader's heartbeat -> node status loop;
//!   [`lock_beacon`]: how a locked manager shows as locked, not down.
//! - [`orchestrator`]: services -> tasks (replicated, global, restarts),
//!   and the loop that feeds the scheduler.
//! - [`allocator`]: network addresses for tasks, nodes and VIPs (a task
//!   leaves `New` once it has them).
//! - [`scheduler`]: the pure placement of pending tasks onto nodes.
//! - [`bootstrap`]: creating a new swarm's first objects.
//! - [`autolock`]: the swarm's unlock key and what it protects on disk.

pub mod allocator;
pub mod api;
pub mod autolock;
pub mod bootstrap;
pub mod ca;
pub mod control_loop;
pub mod errors;
pub mod events;
pub mod heartbeats;
pub mod image_pinning;
pub mod leader;
pub mod lock_beacon;
pub mod log_broker;
pub mod manager;
pub mod metrics;
pub mod node_health;
pub mod orchestrator;
pub mod raft;
pub mod scheduler;
pub mod store;

pub use errors::ManagerError;
pub use manager::{Manager, ManagerConfig};
