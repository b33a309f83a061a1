//! The node side of a swarm: the session with the managers' dispatcher
//! (heartbeats, failover to another manager, the node's desired role) and
//! certificate renewal. Every node runs one, managers included.

pub mod renewal;
pub mod session;

pub use renewal::{renew_certificate, RenewedCertificate};
pub use session::{run_session, SessionConfig, SessionEvent};
