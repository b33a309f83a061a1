//! The leader's scheduling loop: hands pending tasks to the pure
//! [`crate::scheduler::schedule`] in batches and writes its decisions.
//! Tasks that fit nowhere stay pending with the reason, and are looked at
//! again whenever nodes or tasks change.

use std::sync::Arc;

use super::Plan;
use crate::manager::Manager;
use crate::store::{Node, Object, Op, StoreState, Task, TaskState, TaskStatus};

/// Writes for one pass, and when the next restart delay runs out. One
/// transaction per task: they share a Raft entry, and a conflict on one
/// task does not undo the others.
pub fn plan(state: &StoreState, now_ms: u64) -> Plan {
    let mut plan = Plan::default();
    let mut ops = Vec::new();
    let mut unplaced: Vec<&Task> = Vec::new();
    for task in state.list_typed::<Task>() {
        if task.status.state != TaskState::Pending || task.desired_state != TaskState::Running {
            continue;
        }
        if task.not_before_ms > now_ms {
            plan.wake_no_later_than(task.not_before_ms);
            continue;
        }
        if task.node_id.is_empty() {
            unplaced.push(task);
        } else {
            // A global task: its node was chosen with it.
            ops.push(assign(task, &task.node_id, now_ms));
        }
    }
    if !unplaced.is_empty() {
        place(state, unplaced, now_ms, &mut ops);
    }
    plan.transactions = ops.into_iter().map(|op| vec![op]).collect();
    plan
}

/// The scheduler's decisions for the tasks that have no node yet.
fn place<'a>(state: &'a StoreState, mut unplaced: Vec<&'a Task>, now_ms: u64, ops: &mut Vec<Op>) {
    // Oldest first, so a burst does not starve earlier tasks.
    unplaced.sort_by_key(|t| (t.meta.created_at, t.slot));
    let nodes: Vec<&Node> = state.list_typed::<Node>().collect();
    for decision in crate::scheduler::schedule(&nodes, state.task_load(), &unplaced) {
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
}

fn assign(task: &Task, node_id: &str, now_ms: u64) -> Op {
    let mut updated = task.clone();
    updated.node_id = node_id.to_string();
    updated.status = TaskStatus::new(TaskState::Assigned, now_ms, "assigned");
    Op::Update { object: Object::Task(updated), expected_version: Some(task.meta.version) }
}

pub async fn run(manager: Arc<Manager>) {
    crate::control_loop::drive(manager, "scheduler", plan).await
}
