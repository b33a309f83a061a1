//! What a manager does only while it leads: every leader-only control loop
//! is started from the one list in [`leader_loops`] when this manager
//! becomes leader, and all of them stop together when it stops leading.
//! Each loop restarts from the store alone, so a new leader picks up where
//! the old one left off.

use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;

use crate::manager::Manager;

/// The leader's loops, in the order a task meets them: node health (who is
/// up), the orchestrators (services -> tasks), the allocator (addresses;
/// New -> Pending), and scheduling (Pending -> Assigned).
fn leader_loops(manager: &Arc<Manager>) -> Vec<(&'static str, BoxFuture<'static, ()>)> {
    vec![
        ("node health", crate::node_health::run(manager.clone()).boxed()),
        ("locked managers", crate::lock_beacon::run(manager.clone()).boxed()),
        ("orchestrator", crate::orchestrator::run(manager.clone()).boxed()),
        ("allocator", crate::allocator::run(manager.clone()).boxed()),
        ("scheduler", crate::orchestrator::scheduling::run(manager.clone()).boxed()),
    ]
}

/// Starts and stops the leader-only loops as leadership comes and goes.
pub fn spawn_leader_loops(manager: Arc<Manager>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut metrics = manager.raft.metrics();
        // Each loop its own task, so a long pass of one (the orchestrator
        // over a million tasks) neither holds up node health nor keeps the
        // others off the second core; dropping the set aborts them all.
        let mut running: Option<tokio::task::JoinSet<()>> = None;
        let mut last_leader = None;
        loop {
            let leader = metrics.borrow().current_leader;
            if leader.is_some() && leader != last_leader {
                crate::metrics::metrics().leader_changes.inc();
                last_leader = leader;
            }
            let leading = metrics.borrow().current_leader == Some(manager.raft_id)
                && metrics.borrow().state == openraft::ServerState::Leader;
            match (leading, running.is_some()) {
                (true, false) => {
                    let loops = leader_loops(&manager);
                    let names: Vec<&str> = loops.iter().map(|(name, _)| *name).collect();
                    tracing::info!(loops = ?names, "became leader; starting control loops");
                    let mut set = tokio::task::JoinSet::new();
                    for (_, future) in loops {
                        set.spawn(future);
                    }
                    running = Some(set);
                }
                (false, true) => {
                    tracing::info!("lost leadership; stopping control loops");
                    running = None;
                }
                _ => {}
            }
            if metrics.changed().await.is_err() {
                return;
            }
        }
    })
}
