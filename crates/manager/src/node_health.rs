//! The leader's node-health loop: turns heartbeats (kept in the leader's
//! memory) into `ready`/`down` in the store, and records which managers the
//! leader hears from over Raft, so every manager shows the same `node ls`.
//! It is one of the loops [`crate::leader`] starts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::manager::Manager;
use crate::store::{raft_id_of, Node, NodeRole, NodeStatus, Object, Op, Transaction};

/// A node is down after this many missed heartbeats.
const MISSED_HEARTBEATS: u32 = 3;
const TICK: Duration = Duration::from_millis(200);

/// Runs while this manager leads; the caller aborts it on losing leadership.
pub async fn run(manager: Arc<Manager>) {
    // A new leader has no heartbeat history: give every node one full
    // window from now before calling it down.
    let leading_since = Instant::now();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let period_ms = manager.store.view(|s| s.cluster().map(|c| c.heartbeat_period_ms).unwrap_or(1000));
        let down_after = Duration::from_millis(period_ms) * MISSED_HEARTBEATS;
        let heartbeats = manager.heartbeats.last_seen();
        let updates: Vec<Op> = manager.store.view(|s| {
            s.list_typed::<Node>()
                .filter_map(|node| {
                    let last = heartbeats.get(&node.meta.id).copied();
                    let window_start = last.map_or(leading_since, |t| t.max(leading_since));
                    let status = if window_start.elapsed() > down_after {
                        NodeStatus::Down
                    } else if last.is_some() {
                        NodeStatus::Ready
                    } else {
                        node.status
                    };
                    let reachable = node.role == NodeRole::Manager
                        && raft_id_of(&node.meta.id).is_some_and(|id| manager.hears_from(id));
                    if status == node.status && reachable == node.manager_reachable {
                        return None;
                    }
                    if status == NodeStatus::Down && node.status != NodeStatus::Down {
                        crate::metrics::metrics().heartbeat_timeouts.inc();
                    }
                    let mut updated = node.clone();
                    updated.status = status;
                    updated.manager_reachable = reachable;
                    Some(Op::Update { object: Object::Node(updated), expected_version: Some(node.meta.version) })
                })
                .collect()
        });
        if updates.is_empty() {
            continue;
        }
        // One transaction per node so a concurrent edit of one node does
        // not hold back the others' status.
        for op in updates {
            if let Err(e) = manager.write(Transaction::single(op)).await {
                tracing::debug!(error = %e, "node status update");
            }
        }
    }
}
