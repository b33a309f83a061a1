//! Simulated nodes for the scale simulator (`shoal dev-cluster sim`): real
//! agents to the managers (join token, certificate, WireGuard key,
//! dispatcher session, assignments, status reports), with the runtime and
//! the data path replaced by [`SimulatedRuntime`], so thousands fit in one
//! process beside the managers.

mod pool;
mod runtime;

pub use pool::{PoolConfig, PoolStatus, RunningTask, SimulatedPool};
pub use runtime::{SimulatedBehaviour, SimulatedRuntime, SimulationCounters, FAILED_START_EXIT, STOPPED_EXIT};
