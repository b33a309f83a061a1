//! Global services: one runnable task on every eligible node.

use std::collections::BTreeMap;

use super::{new_task, node_lost, settle, shut_down, slot_wants_task, Plan, Settings};
use crate::store::{Availability, Node, Object, Op, Service, StoreState, Task, TaskState};

/// Whether a global service belongs on `node`: active, not lost, and
/// within the service's constraints. A paused node keeps its tasks but
/// gets no new ones.
fn eligible(node: &Node, service: &Service, now_ms: u64, settings: Settings) -> bool {
    node.availability != Availability::Drain
        && !node_lost(node, now_ms, settings)
        && service.spec.placement.constraints.iter().all(|c| c.matches(node))
}

#[allow(clippy::too_many_arguments)]
pub fn reconcile(
    state: &StoreState,
    service: &Service,
    tasks: &[&Task],
    now_ms: u64,
    settings: Settings,
    ops: &mut Vec<Op>,
    plan: &mut Plan,
) {
    let mut by_node: BTreeMap<&str, Vec<&Task>> = BTreeMap::new();
    for task in tasks {
        by_node.entry(task.node_id.as_str()).or_default().push(task);
    }
    for node in state.list_typed::<Node>() {
        by_node.entry(node.meta.id.as_str()).or_default();
    }
    for (node_id, history) in by_node {
        let runnable: Vec<&Task> = history.iter().copied().filter(|t| t.desired_state <= TaskState::Running).collect();
        let node = state.get_typed::<Node>(node_id);
        let Some(node) = node.filter(|n| eligible(n, service, now_ms, settings)) else {
            let lost = node.is_none_or(|n| node_lost(n, now_ms, settings));
            ops.extend(runnable.iter().map(|t| shut_down(t, now_ms, lost, false)));
            continue;
        };
        for (i, task) in runnable.iter().enumerate() {
            if i > 0 {
                ops.push(shut_down(task, now_ms, false, false));
                continue;
            }
            let replace = |attempt, not_before| new_task(service, 0, node_id, attempt, not_before, now_ms);
            settle(state, service, task, &history, now_ms, settings, ops, plan, replace);
        }
        let wanted = runnable.is_empty() && node.availability == Availability::Active && slot_wants_task(service, &history);
        if wanted {
            ops.push(Op::Create(Object::Task(new_task(service, 0, node_id, 0, 0, now_ms))));
        }
    }
}
