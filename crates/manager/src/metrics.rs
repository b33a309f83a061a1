//! What a manager exports to Prometheus. Counted as things happen: Raft
//! proposals (time to commit), leader changes, store writes by kind and
//! action, placements, leader-loop passes, dispatcher sessions, heartbeat
//! timeouts and assignments sent. Read from the manager when scraped: Raft
//! term and indexes, tasks by state and service, pending tasks by reason,
//! nodes by status and role. Counters are process-wide (one manager per
//! daemon); the collector finds the current manager, if any, in its slot.

use std::sync::LazyLock;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::api::ManagerSlot;
use crate::store::{Change, Node, Object, Task, TaskState};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    pub kind: &'static str,
    /// create, update or delete.
    pub action: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LoopName {
    /// orchestrator, allocator or scheduler.
    pub control_loop: &'static str,
}

pub struct ManagerMetrics {
    pub proposal_seconds: Histogram,
    pub leader_changes: Counter,
    pub store_writes: Family<WriteLabels, Counter>,
    pub placements: Counter,
    pub plan_seconds: Family<LoopName, Histogram>,
    pub sessions: Gauge,
    pub heartbeat_timeouts: Counter,
    pub heartbeats: Counter,
    pub assignments_sent: Counter,
    pub assignment_bytes_sent: Counter,
}

static METRICS: LazyLock<ManagerMetrics> = LazyLock::new(|| ManagerMetrics {
    // 0.5 ms .. ~2 s: a commit is a round trip and an fsync.
    proposal_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 13)),
    leader_changes: Counter::default(),
    store_writes: Family::default(),
    placements: Counter::default(),
    plan_seconds: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.00001, 4.0, 12))),
    sessions: Gauge::default(),
    heartbeat_timeouts: Counter::default(),
    heartbeats: Counter::default(),
    assignments_sent: Counter::default(),
    assignment_bytes_sent: Counter::default(),
});

pub fn metrics() -> &'static ManagerMetrics {
    &METRICS
}

/// Counts what one applied transaction changed (every manager applies
/// every entry, so each reports the same writes).
pub fn count_changes(changes: &[Change]) {
    for change in changes {
        let (object, action) = match change {
            Change::Created(object) => (object, "create"),
            Change::Updated { new, .. } => (new, "update"),
            Change::Deleted(object) => (object, "delete"),
        };
        METRICS.store_writes.get_or_create(&WriteLabels { kind: object.kind().as_str(), action }).inc();
        if let Change::Updated { old: Object::Task(old), new: Object::Task(new) } = change {
            if old.status.state == TaskState::Pending && new.status.state == TaskState::Assigned {
                METRICS.placements.inc();
            }
        }
    }
}

/// Adds the manager's metrics to `registry`; `slot` is read on each scrape.
pub fn register(registry: &mut Registry, slot: ManagerSlot) {
    let m = metrics();
    registry.register_with_unit("shoal_raft_proposal", "Time from proposing a write to its commit, on the leader", Unit::Seconds, m.proposal_seconds.clone());
    registry.register("shoal_raft_leader_changes", "Times this manager saw the leader change", m.leader_changes.clone());
    registry.register("shoal_store_writes", "Objects written to the store, by kind and action", m.store_writes.clone());
    registry.register("shoal_scheduler_placements", "Tasks the scheduler assigned to a node", m.placements.clone());
    registry.register_with_unit("shoal_leader_loop_plan", "Time a leader loop took to plan one pass", Unit::Seconds, m.plan_seconds.clone());
    registry.register("shoal_dispatcher_sessions", "Agent sessions this manager serves", m.sessions.clone());
    registry.register("shoal_dispatcher_heartbeat_timeouts", "Nodes declared down after missing their heartbeats", m.heartbeat_timeouts.clone());
    registry.register("shoal_dispatcher_heartbeats", "Node heartbeats the leader recorded (its followers relay theirs in batches)", m.heartbeats.clone());
    registry.register("shoal_dispatcher_assignments_sent", "Assignment messages sent to agents", m.assignments_sent.clone());
    registry.register("shoal_dispatcher_assignment_bytes_sent", "Encoded bytes of the assignment messages sent to agents", m.assignment_bytes_sent.clone());
    registry.register_collector(Box::new(ManagerState { slot }));
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskLabels {
    state: &'static str,
    service: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    status: &'static str,
    role: &'static str,
}

struct ManagerState {
    slot: ManagerSlot,
}

impl std::fmt::Debug for ManagerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ManagerState")
    }
}

/// The leader's commit index: the highest index a majority of voters
/// (itself included) holds. A follower knows no more than what it applied.
fn commit_index(raft: &openraft::RaftMetrics<crate::raft::NodeId, openraft::BasicNode>) -> u64 {
    let applied = raft.last_applied.map_or(0, |l| l.index);
    let Some(replication) = &raft.replication else { return applied };
    let voters: Vec<crate::raft::NodeId> = raft.membership_config.membership().voter_ids().collect();
    let mut held: Vec<u64> = voters
        .iter()
        .map(|v| if *v == raft.id { raft.last_log_index.unwrap_or(0) } else { replication.get(v).copied().flatten().map_or(0, |l| l.index) })
        .collect();
    held.sort_unstable_by(|a, b| b.cmp(a));
    held.get(voters.len() / 2).copied().unwrap_or(applied).max(applied)
}

/// Bytes of the files under `dir` (missing: 0).
pub fn directory_size(dir: &std::path::Path) -> u64 {
    // Links are not followed: a link's target is not this tree's to count.
    walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// A pending task's reason without its counts ("no suitable node (2 nodes
/// down)" -> "no suitable node"), so the label set stays small.
fn pending_reason(error: &str) -> String {
    let reason = error.split(['(', ':', ';']).next().unwrap_or_default().trim();
    let words: Vec<&str> = reason.split_whitespace().filter(|w| !w.chars().any(|c| c.is_ascii_digit())).collect();
    if words.is_empty() { "waiting".into() } else { words.join(" ") }
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: i64) -> Result<(), std::fmt::Error> {
    let gauge = Gauge::<i64>::default();
    gauge.set(value);
    gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)
}

impl Collector for ManagerState {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(manager) = self.slot.get() else { return Ok(()) };
        let raft = manager.raft.metrics().borrow().clone();
        let as_i64 = |v: Option<u64>| i64::try_from(v.unwrap_or(0)).unwrap_or(i64::MAX);
        gauge(&mut encoder, "shoal_raft_term", "The Raft term this manager is in", as_i64(Some(raft.current_term)))?;
        gauge(&mut encoder, "shoal_raft_is_leader", "1 while this manager leads", i64::from(raft.current_leader == Some(manager.raft_id)))?;
        gauge(&mut encoder, "shoal_raft_last_log_index", "Index of the last entry in this manager's Raft log", as_i64(raft.last_log_index))?;
        gauge(&mut encoder, "shoal_raft_applied_index", "Index of the last entry applied to this manager's store", as_i64(raft.last_applied.map(|l| l.index)))?;
        gauge(&mut encoder, "shoal_raft_snapshot_index", "Index the last snapshot covers", as_i64(raft.snapshot.map(|l| l.index)))?;
        let kept = raft.last_log_index.unwrap_or(0).saturating_sub(raft.purged.map_or(0, |p| p.index));
        gauge(&mut encoder, "shoal_raft_log_entries", "Entries in the Raft log since the last purge", as_i64(Some(kept)))?;
        gauge(&mut encoder, "shoal_raft_commit_index", "Index of the last entry a majority holds (a follower: the last it applied)", as_i64(Some(commit_index(&raft))))?;
        let on_disk = crate::metrics::directory_size(&manager.raft_dir);
        gauge(&mut encoder, "shoal_raft_storage_bytes", "Bytes of this manager's Raft log, snapshot and state on disk", i64::try_from(on_disk).unwrap_or(i64::MAX))?;

        // The swarm's tasks and nodes come from the leader alone, so a sum
        // over every node's metrics counts each once.
        if raft.current_leader != Some(manager.raft_id) {
            return Ok(());
        }
        let tasks = Family::<TaskLabels, Gauge>::default();
        let pending = Family::<ReasonLabel, Gauge>::default();
        let nodes = Family::<NodeLabels, Gauge>::default();
        manager.store.view(|s| {
            for task in s.list_typed::<Task>() {
                tasks.get_or_create(&TaskLabels { state: task.status.state.as_str(), service: task.service_name.clone() }).inc();
                if task.status.state == TaskState::Pending {
                    pending.get_or_create(&ReasonLabel { reason: pending_reason(&task.status.error) }).inc();
                }
            }
            for node in s.list_typed::<Node>() {
                nodes.get_or_create(&NodeLabels { status: node.status.as_str(), role: node.role.as_str() }).inc();
            }
        });
        tasks.encode(encoder.encode_descriptor("shoal_tasks", "Tasks in the store, by state and service", None, tasks.metric_type())?)?;
        pending.encode(encoder.encode_descriptor("shoal_tasks_pending", "Pending tasks, by why they wait", None, pending.metric_type())?)?;
        nodes.encode(encoder.encode_descriptor("shoal_nodes", "Nodes, by status and role", None, nodes.metric_type())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_reasons_drop_their_counts() {
        assert_eq!(pending_reason(""), "waiting");
        assert_eq!(pending_reason("no suitable node (2 nodes down; 1 drained)"), "no suitable node");
        assert_eq!(pending_reason("waiting for 3 dependencies: db"), "waiting for dependencies");
    }
}
