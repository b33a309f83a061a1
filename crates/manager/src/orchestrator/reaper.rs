//! Deleting tasks nobody needs: history beyond the retention limit, and
//! the tasks of deleted services once their containers are gone.

use std::collections::BTreeMap;

use super::{node_lost, Settings};
use crate::store::{Kind, Node, Object, Op, StoreState, Task, TaskState};

fn delete(task: &Task) -> Op {
    Op::Delete { kind: Kind::Task, id: task.meta.id.clone() }
}

/// Keeps the newest `limit` ended tasks of each slot (node, for global
/// services) for `service ps`; deletes older ones.
pub fn trim_history(tasks: &[&Task], limit: u64, ops: &mut Vec<Op>) {
    let mut slots: BTreeMap<(u64, &str), Vec<&Task>> = BTreeMap::new();
    for task in tasks.iter().filter(|t| t.desired_state > TaskState::Running && t.status.state.is_terminal()) {
        let node = if task.slot == 0 { task.node_id.as_str() } else { "" };
        slots.entry((task.slot, node)).or_default().push(task);
    }
    for mut ended in slots.into_values() {
        ended.sort_by_key(|t| std::cmp::Reverse((t.meta.created_at, t.attempt)));
        ops.extend(ended.iter().skip(limit as usize).map(|t| delete(t)));
    }
}

/// A deleted service's tasks: running ones are told to go (desired
/// `remove`); ended ones, unassigned ones and those on lost nodes (whose
/// agent will clean up when it returns) are deleted.
pub fn retire_deleted_service(state: &StoreState, tasks: &[&Task], now_ms: u64, settings: Settings) -> Vec<Op> {
    let mut ops = Vec::new();
    for task in tasks {
        let node = state.get_typed::<Node>(&task.node_id);
        let gone = task.status.state.is_terminal()
            || task.status.state < TaskState::Assigned
            || node.is_none_or(|n| node_lost(n, now_ms, settings));
        if gone {
            ops.push(delete(task));
        } else if task.desired_state < TaskState::Remove {
            let mut updated = (*task).clone();
            updated.desired_state = TaskState::Remove;
            ops.push(Op::Update { object: Object::Task(updated), expected_version: Some(task.meta.version) });
        }
    }
    ops
}
