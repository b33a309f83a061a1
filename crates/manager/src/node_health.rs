//! The leader's node-health loop: turns heartbeats (kept in the leader's
//! memory) into `ready`/`down` in the store, and records which managers the
//! leader hears from over Raft, so every manager shows the same `node ls`.
//! It is one of the loops [`crate::leader`] starts.
//!
//! A node is down when the leader has not heard from it for three
//! heartbeat periods. Silence can also be the leader's own fault: a leader
//! too busy to read its heartbeats sees every node fall silent at once, and
//! marking them down moves their tasks, which makes it busier still (the
//! simulator at 1,000 nodes: 602 healthy nodes down, 19,000 tasks moved in
//! a few minutes). Two checks keep a busy leader from blaming the nodes:
//! - a leader whose own loop ran late (it was not scheduled) gives every
//!   node a full window again from then, as a new leader does;
//! - when more than half of a swarm of more than [`SMALL_SWARM`] nodes
//!   falls silent in the same window, none is marked down until the
//!   silence has lasted [`MASS_SILENCE_CONFIRM`] windows (as Kubernetes'
//!   node controller stops evicting when most nodes are unhealthy at once).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::manager::Manager;
use crate::store::{raft_id_of, Node, NodeRole, NodeStatus, Object, Op, Transaction};

/// A node is down after this many missed heartbeats.
const MISSED_HEARTBEATS: u32 = 3;
const TICK: Duration = Duration::from_millis(200);
/// Swarms up to this size take silence at face value: with few nodes, most
/// of them going silent at once is as likely to be real as not.
const SMALL_SWARM: usize = 10;
/// How many down windows a mass silence must last before it is believed.
const MASS_SILENCE_CONFIRM: u32 = 4;

/// What the node-health loop remembers between passes.
#[derive(Debug)]
pub struct HealthState {
    /// No node's silence counts from before this: when this manager began
    /// leading, or when it last came back from a stall.
    window_floor: Instant,
    /// Since when more than half of the swarm has been silent.
    mass_silence_since: Option<Instant>,
}

impl HealthState {
    pub fn new(now: Instant) -> Self {
        HealthState {
            window_floor: now,
            mass_silence_since: None,
        }
    }

    /// The loop meant to run at `scheduled` and runs at `now`: a lateness
    /// that is a good part of the down window means this manager was not
    /// running, not that the nodes were silent.
    pub fn note_lateness(
        &mut self,
        scheduled: Instant,
        now: Instant,
        down_after: Duration,
    ) -> Option<Duration> {
        let late = now.saturating_duration_since(scheduled);
        if late > down_after / 3 {
            self.window_floor = now;
            return Some(late);
        }
        None
    }
}

/// Decides each node's status: `nodes` gives each node's stored status and
/// when it was last heard from. Returns the nodes whose status changes.
pub fn plan_statuses(
    state: &mut HealthState,
    nodes: &[(String, NodeStatus, Option<Instant>)],
    now: Instant,
    down_after: Duration,
) -> HashMap<String, NodeStatus> {
    let mut changes = HashMap::new();
    let mut silent = Vec::new();
    for (id, stored, last) in nodes {
        let window_start = last.map_or(state.window_floor, |t| t.max(state.window_floor));
        let status = if now.saturating_duration_since(window_start) > down_after {
            silent.push(id);
            NodeStatus::Down
        } else if last.is_some() {
            NodeStatus::Ready
        } else {
            *stored
        };
        if status != *stored {
            changes.insert(id.clone(), status);
        }
    }
    let mass_silence = nodes.len() > SMALL_SWARM && silent.len() * 2 > nodes.len();
    if !mass_silence {
        state.mass_silence_since = None;
        return changes;
    }
    let since = *state.mass_silence_since.get_or_insert(now);
    if now.saturating_duration_since(since) < down_after * MASS_SILENCE_CONFIRM {
        changes.retain(|_, status| *status != NodeStatus::Down);
    }
    changes
}

/// Runs while this manager leads; the caller aborts it on losing leadership.
pub async fn run(manager: Arc<Manager>) {
    // A new leader has no heartbeat history: give every node one full
    // window from now before calling it down.
    let mut state = HealthState::new(Instant::now());
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut warned_mass_silence = false;
    loop {
        let scheduled = tick.tick().await.into_std();
        let now = Instant::now();
        let period_ms = manager
            .store
            .view(|s| s.cluster().map(|c| c.heartbeat_period_ms).unwrap_or(1000));
        let down_after = Duration::from_millis(period_ms) * MISSED_HEARTBEATS;
        if let Some(late) = state.note_lateness(scheduled, now, down_after) {
            tracing::warn!(
                late_ms = late.as_millis() as u64,
                "the leader was too busy to read heartbeats; every node gets a full window again"
            );
        }
        let heartbeats = manager.heartbeats.last_seen();
        // One look at the store: the nodes' statuses are planned and their
        // updates built from the same state.
        let (node_count, updates) = manager.store.view(|s| {
            let nodes: Vec<&Node> = s.list_typed::<Node>().collect();
            let heard: Vec<(String, NodeStatus, Option<Instant>)> =
                nodes.iter().map(|n| (n.meta.id.clone(), n.status, heartbeats.get(&n.meta.id).copied())).collect();
            let statuses = plan_statuses(&mut state, &heard, now, down_after);
            let updates: Vec<Op> = nodes
                .into_iter()
                .filter_map(|node| {
                    let status = statuses.get(&node.meta.id).copied().unwrap_or(node.status);
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
                .collect();
            (heard.len(), updates)
        });
        let silent_held_back = state.mass_silence_since.is_some();
        if silent_held_back && !warned_mass_silence {
            tracing::warn!(nodes = node_count, "most nodes fell silent at once; waiting before marking them down");
        }
        warned_mass_silence = silent_held_back;
        // One transaction per node, so a concurrent edit of one node does
        // not hold back the others' status; sent together, so the proposer
        // puts them in one log entry rather than one round trip each.
        let writes = updates
            .into_iter()
            .map(|op| manager.write(Transaction::single(op)));
        for result in futures::future::join_all(writes).await {
            if let Err(e) = result {
                tracing::debug!(error = %e, "node status update");
            }
        }
    }
}

#[cfg(test)]
#[path = "node_health_tests.rs"]
mod tests;
