//! Global services: one runnable task on every eligible node (two while
//! a start-first update replaces it).

use std::collections::BTreeMap;

use super::updater::{self, SlotTasks};
use super::{keep_in_slot, new_task, node_lost, settle, shut_down, slot_wants_task, Plan, Settings};
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
    let mut rollout = Vec::new();
    for (&node_id, history) in &by_node {
        let runnable: Vec<&Task> = history.iter().copied().filter(|t| t.desired_state <= TaskState::Running).collect();
        let node = state.get_typed::<Node>(node_id);
        let Some(node) = node.filter(|n| eligible(n, service, now_ms, settings)) else {
            let lost = node.is_none_or(|n| node_lost(n, now_ms, settings));
            ops.extend(runnable.iter().map(|t| shut_down(t, now_ms, lost, false)));
            continue;
        };
        let (current, previous) = keep_in_slot(service, &runnable, now_ms, ops);
        let mut stays = None;
        if let Some(task) = current {
            let replace = |attempt, not_before| new_task(service, 0, node_id, attempt, not_before, now_ms);
            if settle(state, service, task, history, now_ms, settings, ops, plan, replace) {
                stays = Some(task);
            }
        } else if node.availability == Availability::Active && slot_wants_task(service, history) {
            ops.push(Op::Create(Object::Task(new_task(service, 0, node_id, 0, 0, now_ms))));
        }
        rollout.push(SlotTasks { slot: 0, node_id, current: stays, previous, history });
    }
    updater::reconcile(service, &rollout, now_ms, ops, plan);
}
