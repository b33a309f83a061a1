//! The leader's scheduling loop: hands pending tasks to the pure
//! [`crate::scheduler::schedule`] in batches and writes its decisions.
//! Tasks that fit nowhere stay pending with the reason, and are looked at
//! again whenever nodes or tasks change.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;

use crate::manager::Manager;
use crate::store::{Node, Object, Op, StoreState, Task, TaskState, TaskStatus, Transaction};

const IDLE_TICK: Duration = Duration::from_secs(1);

/// Writes for one pass, and when the next restart delay runs out.
pub fn plan(state: &StoreState, now_ms: u64) -> (Vec<Op>, Option<u64>) {
    let mut wake_at: Option<u64> = None;
    let mut ops = Vec::new();
    let mut unplaced: Vec<&Task> = Vec::new();
    for task in state.list_typed::<Task>() {
        if task.status.state != TaskState::Pending || task.desired_state != TaskState::Running {
            continue;
        }
        if task.not_before_ms > now_ms {
            wake_at = Some(wake_at.map_or(task.not_before_ms, |w| w.min(task.not_before_ms)));
            continue;
        }
        if task.node_id.is_empty() {
            unplaced.push(task);
        } else {
            // A global task: its node was chosen with it.
            ops.push(assign(task, &task.node_id, now_ms));
        }
    }
    if unplaced.is_empty() {
        return (ops, wake_at);
    }
    // Oldest first, so a burst does not starve earlier tasks.
    unplaced.sort_by_key(|t| (t.meta.created_at, t.slot));
    let nodes: Vec<&Node> = state.list_typed::<Node>().collect();
    let existing: Vec<&Task> = state.list_typed::<Task>().collect();
    for decision in crate::scheduler::schedule(&nodes, &existing, &unplaced) {
        let Some(task) = state.get_typed::<Task>(&decision.task_id) else { continue };
        match decision.outcome {
            Ok(node_id) => ops.push(assign(task, &node_id, now_ms)),
            Err(reason) if reason != task.status.error => {
                let mut updated = task.clone();
                updated.status.error = reason;
                updated.status.message = "pending".into();
                ops.push(Op::Update { object: Object::Task(updated), expected_version: Some(task.meta.version) });
            }
            Err(_) => {}
        }
    }
    (ops, wake_at)
}

fn assign(task: &Task, node_id: &str, now_ms: u64) -> Op {
    let mut updated = task.clone();
    updated.node_id = node_id.to_string();
    updated.status = TaskStatus::new(TaskState::Assigned, now_ms, "assigned");
    Op::Update { object: Object::Task(updated), expected_version: Some(task.meta.version) }
}

pub async fn run(manager: Arc<Manager>) {
    let mut events = manager.store.watch();
    // A new leader may not have applied everything committed before it
    // took over; planning on a stale store would duplicate tasks.
    while let Err(e) = manager.read_barrier().await {
        tracing::debug!(error = %e, "waiting for the store to catch up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    loop {
        let now = crate::store::now_ms();
        let (ops, wake_at) = manager.store.view(|s| plan(s, now));
        // One transaction per task, proposed together: they share a Raft
        // entry, and a conflict on one task does not undo the others.
        let writes = ops.into_iter().map(|op| manager.write(Transaction::single(op)));
        for result in futures::future::join_all(writes).await {
            if let Err(e) = result {
                tracing::debug!(error = %e, "scheduler write");
            }
        }
        let sleep = wake_at
            .map(|at| Duration::from_millis(at.saturating_sub(crate::store::now_ms())))
            .unwrap_or(IDLE_TICK)
            .min(IDLE_TICK);
        tokio::select! {
            event = events.recv() => {
                if let Err(RecvError::Closed) = event { return; }
                while events.try_recv().is_ok() {}
            }
            _ = tokio::time::sleep(sleep) => {}
        }
    }
}
