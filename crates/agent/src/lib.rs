//! The node side of a swarm: the session with the managers' dispatcher
//! (heartbeats, failover to another manager, the node's desired role),
//! certificate renewal, the node's description of itself, its overlay
//! device, and the task executor that runs the node's share of the
//! services. Every node runs
//! one, managers included.

pub mod description;
pub mod executor;
pub mod join;
pub mod managers;
pub mod overlay;
pub mod renewal;
pub mod session;
pub mod simulation;

pub use description::{describe_node, parse_engine_label};
pub use executor::{health_config, process_options, remove_all_task_containers, remove_all_task_files, Executor, ExecutorConfig, TaskRuntime};
pub use renewal::{renew_certificate, RenewedCertificate};
pub use session::{run_session, SessionConfig, SessionEvent};
