//! Replicated services: slots 1..=replicas, each with one runnable task
//! (two while a start-first update replaces it).

use std::collections::BTreeMap;

use super::updater::{self, SlotTasks};
use super::{keep_in_slot, new_task, settle, shut_down, slot_wants_task, Plan, Settings};
use crate::store::{Op, Service, StoreState, Task, TaskState};

#[allow(clippy::too_many_arguments)]
pub fn reconcile(
    state: &StoreState,
    service: &Service,
    replicas: u64,
    tasks: &[&Task],
    now_ms: u64,
    settings: Settings,
    ops: &mut Vec<Op>,
    plan: &mut Plan,
) {
    let mut slots: BTreeMap<u64, Vec<&Task>> = BTreeMap::new();
    for task in tasks {
        slots.entry(task.slot).or_default().push(task);
    }
    for slot in 1..=replicas {
        slots.entry(slot).or_default();
    }
    let mut rollout = Vec::new();
    for (&slot, history) in &slots {
        let runnable: Vec<&Task> = history.iter().copied().filter(|t| t.desired_state <= TaskState::Running).collect();
        if slot > replicas || slot == 0 {
            // Scaled down: these slots go, without replacement.
            ops.extend(runnable.iter().map(|t| shut_down(t, now_ms, false, false)));
            continue;
        }
        // The kept task either stays or is replaced in the same pass (or
        // is the last its restart policy allows): the slot is handled.
        let (current, previous) = keep_in_slot(service, &runnable, now_ms, ops);
        let mut stays = None;
        if let Some(task) = current {
            let replace = |attempt, not_before| new_task(service, slot, "", attempt, not_before, now_ms);
            if settle(state, service, task, history, now_ms, settings, ops, plan, replace) {
                stays = Some(task);
            }
        } else if slot_wants_task(service, history) {
            ops.push(Op::Create(crate::store::Object::Task(new_task(service, slot, "", 0, 0, now_ms))));
        }
        rollout.push(SlotTasks { slot, node_id: "", current: stays, previous, history });
    }
    updater::reconcile(service, &rollout, now_ms, ops, plan);
}
