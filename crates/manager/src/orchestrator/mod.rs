//! The orchestrators: make the tasks in the store match the services.
//!
//! [`plan`] is a pure function from a store snapshot and the time to the
//! writes that move the store towards the services' specs; the leader's
//! [`run`] loop applies it whenever the store changes or a deadline (a
//! restart delay, a node's grace) passes. A service waits for its
//! dependencies before its first tasks ([`dependencies`]). Replicated services keep one
//! runnable task per slot ([`replicated`]), global ones one per eligible
//! node ([`global`]); [`restart`] decides whether an ended task comes back,
//! and [`reaper`] deletes what nobody needs to see any more.

pub mod dependencies;
pub mod global;
pub mod reaper;
pub mod replicated;
pub mod restart;
pub mod scheduling;
pub mod updater;

use std::collections::BTreeMap;
use std::sync::Arc;

pub use crate::control_loop::Plan;
use crate::manager::Manager;
use crate::store::{new_object_id, Meta, Node, NodeStatus, Object, Op, Service, StoreState, Task, TaskState, TaskStatus};

/// Cluster-wide settings the orchestrators read.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub history_limit: u64,
    pub orphan_grace_ms: u64,
}

impl Settings {
    pub fn of(state: &StoreState) -> Self {
        let cluster = state.cluster();
        Settings {
            history_limit: cluster.map_or(5, |c| c.task_history_limit).max(1),
            orphan_grace_ms: cluster.map_or(crate::bootstrap::DEFAULT_ORPHAN_GRACE_MS, |c| c.orphan_grace_ms),
        }
    }
}

/// Everything the orchestrators want done, as of `now_ms`.
pub fn plan(state: &StoreState, now_ms: u64) -> Plan {
    let settings = Settings::of(state);
    let mut plan = Plan::default();
    let mut tasks_by_service: BTreeMap<&str, Vec<&Task>> = BTreeMap::new();
    for task in state.list_typed::<Task>() {
        tasks_by_service.entry(task.service_id.as_str()).or_default().push(task);
    }
    let services: Vec<&Service> = state.list_typed::<Service>().collect();
    for service in &services {
        let tasks = tasks_by_service.get(service.meta.id.as_str()).cloned().unwrap_or_default();
        // compose's depends_on orders a service's first tasks only.
        if tasks.is_empty() && !dependencies::ready(state, service, &tasks_by_service) {
            continue;
        }
        let mut ops = Vec::new();
        match service.spec.mode {
            crate::store::ServiceMode::Replicated { replicas } => {
                replicated::reconcile(state, service, replicas, &tasks, now_ms, settings, &mut ops, &mut plan)
            }
            crate::store::ServiceMode::Global => global::reconcile(state, service, &tasks, now_ms, settings, &mut ops, &mut plan),
        }
        reaper::trim_history(&tasks, settings.history_limit, &mut ops);
        if !ops.is_empty() {
            plan.transactions.push(ops);
        }
    }
    // What is left belongs to deleted services.
    for service in &services {
        tasks_by_service.remove(service.meta.id.as_str());
    }
    for tasks in tasks_by_service.into_values() {
        let ops = reaper::retire_deleted_service(state, &tasks, now_ms, settings);
        if !ops.is_empty() {
            plan.transactions.push(ops);
        }
    }
    plan
}

/// Why a runnable task must give way, if it must.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Keep,
    /// Its container ended: the restart policy decides what follows.
    Ended,
    /// Its node is gone or has been down past the grace period.
    NodeLost,
    /// Its node is draining, or no longer fits the service (global).
    Moved,
}

fn verdict(state: &StoreState, task: &Task, now_ms: u64, settings: Settings) -> Verdict {
    if task.status.state.is_terminal() {
        return Verdict::Ended;
    }
    if !task.node_id.is_empty() {
        match state.get_typed::<Node>(&task.node_id) {
            None => return Verdict::NodeLost,
            Some(node) if node_lost(node, now_ms, settings) => return Verdict::NodeLost,
            Some(node) if node.availability == crate::store::Availability::Drain => return Verdict::Moved,
            Some(_) => {}
        }
    }
    // A task whose spec is out of date stays until the updater replaces it.
    Verdict::Keep
}

/// Down for longer than the grace period. The node's last update is when
/// it went down (status is the only thing that changes on a down node).
pub fn node_lost(node: &Node, now_ms: u64, settings: Settings) -> bool {
    node.status == NodeStatus::Down && now_ms >= node.meta.updated_at + settings.orphan_grace_ms
}

/// When a down node's tasks become due for replacement.
fn grace_deadline(node: &Node, settings: Settings) -> Option<u64> {
    (node.status == NodeStatus::Down).then_some(node.meta.updated_at + settings.orphan_grace_ms)
}

/// A new task for `slot` (or for `node_id`, for a global service).
fn new_task(service: &Service, slot: u64, node_id: &str, attempt: u64, not_before_ms: u64, now_ms: u64) -> Task {
    // Every task starts New: the allocator gives it its network addresses
    // and makes it Pending. Global tasks name their node already; the
    // scheduling loop still hands them over, once their restart delay is up.
    let (state, message) = (TaskState::New, "new");
    Task {
        meta: Meta { id: new_object_id(), ..Default::default() },
        service_id: service.meta.id.clone(),
        service_name: service.spec.name.clone(),
        slot,
        node_id: node_id.to_string(),
        spec: service.spec.task.clone(),
        placement: service.spec.placement.clone(),
        spec_version: service.spec_version,
        desired_state: TaskState::Running,
        status: TaskStatus::new(state, now_ms, message),
        attempt,
        not_before_ms,
        final_attempt: false,
        networks: Vec::new(),
        started_ms: 0,
    }
}

/// The update that stops a task: desired `Shutdown`; a task no agent holds
/// (never assigned, or its node lost) is also marked ended here, since no
/// agent will report it.
fn shut_down(task: &Task, now_ms: u64, node_lost: bool, final_attempt: bool) -> Op {
    let mut updated = task.clone();
    updated.desired_state = updated.desired_state.max(TaskState::Shutdown);
    updated.final_attempt = final_attempt;
    if node_lost && !task.status.state.is_terminal() {
        updated.status = TaskStatus { error: "the task's node is down; replaced on another node".into(), ..TaskStatus::new(TaskState::Orphaned, now_ms, "orphaned") };
    } else if task.status.state < TaskState::Assigned {
        updated.status = TaskStatus::new(TaskState::Shutdown, now_ms, "shut down before it was assigned");
    }
    Op::Update { object: Object::Task(updated), expected_version: Some(task.meta.version) }
}

/// Handles one runnable task of a slot (or node) and says whether it stays.
/// Writes the shutdown and any replacement (made by `replace`).
#[allow(clippy::too_many_arguments)]
fn settle(
    state: &StoreState,
    service: &Service,
    task: &Task,
    history: &[&Task],
    now_ms: u64,
    settings: Settings,
    ops: &mut Vec<Op>,
    plan: &mut Plan,
    replace: impl FnOnce(u64, u64) -> Task,
) -> bool {
    match verdict(state, task, now_ms, settings) {
        Verdict::Keep => {
            if let Some(node) = state.get_typed::<Node>(&task.node_id) {
                if let Some(deadline) = grace_deadline(node, settings) {
                    plan.wake_no_later_than(deadline);
                }
            }
            true
        }
        Verdict::Ended => {
            match restart::decide(&service.spec.restart, task, history, now_ms) {
                restart::Decision::Restart { at_ms } => {
                    ops.push(shut_down(task, now_ms, false, false));
                    ops.push(Op::Create(Object::Task(replace(task.attempt + 1, at_ms))));
                    if at_ms > now_ms {
                        plan.wake_no_later_than(at_ms);
                    }
                }
                restart::Decision::Stop => ops.push(shut_down(task, now_ms, false, true)),
            }
            false
        }
        Verdict::NodeLost => {
            ops.push(shut_down(task, now_ms, true, false));
            ops.push(Op::Create(Object::Task(replace(task.attempt, 0))));
            false
        }
        Verdict::Moved => {
            ops.push(shut_down(task, now_ms, false, false));
            ops.push(Op::Create(Object::Task(replace(task.attempt, 0))));
            false
        }
    }
}

/// Picks the runnable task a slot keeps: its newest that runs the spec,
/// else its first. An outdated task stays beside it while that one is not
/// running yet (a start-first update: the old task serves meanwhile);
/// every other runnable task of the slot (a write that raced a failover)
/// is stopped. Returns the kept task and the outdated one kept beside it.
fn keep_in_slot<'a>(service: &Service, runnable: &[&'a Task], now_ms: u64, ops: &mut Vec<Op>) -> (Option<&'a Task>, Option<&'a Task>) {
    let current = runnable
        .iter()
        .copied()
        .filter(|t| updater::runs_spec(service, t))
        .max_by_key(|t| t.meta.created_at)
        .or_else(|| runnable.first().copied());
    let mut previous = None;
    for task in runnable.iter().copied() {
        if current.is_some_and(|c| std::ptr::eq(c, task)) {
            continue;
        }
        // Also while a failed replacement waits to be restarted.
        let replacement_starting = current.is_some_and(|c| updater::runs_spec(service, c) && c.status.state != TaskState::Running);
        let overlaps = replacement_starting && !updater::runs_spec(service, task) && !task.status.state.is_terminal();
        if overlaps && previous.is_none() {
            previous = Some(task);
        } else {
            ops.push(shut_down(task, now_ms, false, false));
        }
    }
    (current, previous)
}

/// Whether a slot whose tasks have all ended should get a fresh one: not
/// when its restart policy is spent for the current spec.
fn slot_wants_task(service: &Service, history: &[&Task]) -> bool {
    let latest = history.iter().max_by_key(|t| (t.meta.created_at, t.attempt));
    !latest.is_some_and(|t| t.final_attempt && t.spec_version == service.spec_version)
}

/// The leader's orchestration loop.
pub async fn run(manager: Arc<Manager>) {
    crate::control_loop::drive(manager, "orchestrator", plan).await
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod updater_tests;
