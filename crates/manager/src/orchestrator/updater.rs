//! The rolling updater: moves a service's tasks to its current spec a few
//! slots at a time, as a pure plan over the store like the rest of the
//! orchestrators, so a new leader continues a rollout from the store
//! alone.
//!
//! Each pass it
//! - counts the failures of the rollout's new tasks: ended within the
//!   monitor period after they started (or before), or not running by the
//!   healthy deadline after they were made (one that cannot be placed,
//!   pulled or made healthy never holds the rollout up for ever);
//! - applies the failure action once failures exceed the allowed ratio of
//!   the slots updated: pause, continue, or roll back (a rollback that
//!   fails pauses, never loops);
//! - starts as many outdated slots as `parallelism` allows, counting as
//!   in flight every slot whose new task is not yet running, is still in
//!   its delay (or a short settling time) after starting, or (start-first)
//!   still has its old task;
//! - marks the rollout completed once every slot runs the spec and the
//!   last new task has run for the monitor period.
//!
//! A slot already running the spec is never touched: a rollback replaces
//! only the tasks the update had replaced.

use super::{new_task, shut_down, Plan};
use crate::store::{Object, Op, Service, Task, TaskState, UpdateConfig, UpdateOrder, UpdateState, UpdateStatus};
use crate::store::FailureAction;

/// A new task stays in flight this long after it starts (or the monitor
/// period, if shorter), even with no delay: a container that exits at once
/// reports running and failed a few milliseconds apart, and the next batch
/// must not start in between. Not with a health check: running then means
/// healthy, which takes a probe interval at least.
pub const SETTLE_MS: u64 = 150;

/// One slot (or, for a global service, one node) as the updater sees it
/// after the slot's own reconciliation.
#[derive(Debug)]
pub struct SlotTasks<'a> {
    pub slot: u64,
    /// The node, for a global service's slot.
    pub node_id: &'a str,
    /// The task the slot keeps (runnable), if any.
    pub current: Option<&'a Task>,
    /// An outdated task kept running while its start-first replacement
    /// (`current`) is not running yet.
    pub previous: Option<&'a Task>,
    /// Every task of the slot, ended ones too.
    pub history: &'a [&'a Task],
}

/// Whether the task runs the service's spec.
pub fn runs_spec(service: &Service, task: &Task) -> bool {
    task.spec == service.spec.task && task.placement == service.spec.placement
}

/// The rollout's writes for `service`, as of `now_ms`.
pub fn reconcile(service: &Service, slots: &[SlotTasks], now_ms: u64, ops: &mut Vec<Op>, plan: &mut Plan) {
    let outdated: Vec<&SlotTasks> =
        slots.iter().filter(|s| s.previous.is_none() && s.current.is_some_and(|t| !runs_spec(service, t))).collect();
    let mut status = match &service.update_status {
        Some(status) => status.clone(),
        // Tasks that differ from the spec with no rollout recorded.
        None if !outdated.is_empty() => UpdateStatus::started(UpdateState::Updating, now_ms, "update in progress"),
        None => return,
    };
    if !status.state.in_progress() {
        let finished = matches!(status.state, UpdateState::Completed | UpdateState::RollbackCompleted);
        if !finished || outdated.is_empty() {
            // Paused: the user decides (update again, or roll back).
            return;
        }
        // Tasks went out of date after the rollout finished: a new one.
        status = UpdateStatus::started(UpdateState::Updating, now_ms, "update in progress");
    }
    let config = if status.state.is_rollback() { service.spec.rollback } else { service.spec.update };
    let of_rollout = |t: &Task| t.spec_version == service.spec_version && runs_spec(service, t);

    let mut first_failure = None;
    let mut updated = 0u64;
    for slot in slots {
        if slot.history.iter().any(|t| of_rollout(t)) {
            updated += 1;
        }
        for task in slot.history.iter().filter(|t| of_rollout(t)) {
            if status.failed_tasks.contains(&task.meta.id) {
                continue;
            }
            match failure(task, &config, now_ms) {
                Check::Failed(reason) => {
                    status.failed_tasks.push(task.meta.id.clone());
                    first_failure.get_or_insert((task.meta.id.clone(), reason));
                }
                Check::Watch { until } => plan.wake_no_later_than(until),
                Check::Fine => {}
            }
        }
    }
    let failures = status.failed_tasks.len() as u64;
    if failures > 0 && failures as f64 > config.max_failure_ratio() * updated.max(1) as f64 {
        let action = match (status.state.is_rollback(), config.failure_action) {
            (false, action) => action,
            (true, FailureAction::Continue) => FailureAction::Continue,
            // A failing rollback stops where it is rather than looping.
            (true, _) => FailureAction::Pause,
        };
        let (task_id, reason) = first_failure.unwrap_or_else(|| (status.failed_tasks[0].clone(), "it failed".into()));
        let cause = format!("failure or early termination of task {task_id} ({reason})");
        match action {
            FailureAction::Continue => {}
            FailureAction::Pause => {
                status.state = if status.state.is_rollback() { UpdateState::RollbackPaused } else { UpdateState::Paused };
                status.message = format!("{} paused due to {cause}", if status.state.is_rollback() { "rollback" } else { "update" });
                write_status(service, status, ops);
                return;
            }
            FailureAction::Rollback => {
                let mut with_failures = service.clone();
                with_failures.update_status = Some(status.clone());
                match with_failures.rolled_back(now_ms, format!("update rolled back due to {cause}")) {
                    Some(rolled) => ops.push(Op::Update { object: Object::Service(rolled), expected_version: Some(service.meta.version) }),
                    None => {
                        status.state = UpdateState::Paused;
                        status.message = format!("update paused due to {cause}; there is no previous spec to roll back to");
                        write_status(service, status, ops);
                    }
                }
                return;
            }
        }
    }

    // A task that passed a health check has already shown it does not
    // exit at once: no settling time on top.
    let checked = service.spec.task.healthcheck.as_ref().is_some_and(|h| h.test.first().is_none_or(|t| t != "NONE"));
    let settle = if checked { 0 } else { SETTLE_MS.min(config.monitor_ms) };
    let mut in_flight = 0u64;
    for slot in slots {
        if slot.previous.is_some() {
            in_flight += 1;
            continue;
        }
        let Some(task) = slot.current.filter(|t| of_rollout(t) && !status.failed_tasks.contains(&t.meta.id)) else { continue };
        if task.started_ms == 0 {
            in_flight += 1;
        } else {
            let until = task.started_ms + config.delay_ms.max(settle);
            if now_ms < until {
                in_flight += 1;
                plan.wake_no_later_than(until);
            }
        }
    }
    let mut room = if config.parallelism == 0 { u64::MAX } else { config.parallelism.saturating_sub(in_flight) };
    for slot in &outdated {
        let Some(old) = slot.current else { continue };
        // A task that is not running is out of service already: replacing
        // it takes nothing more out.
        let in_service = old.status.state == TaskState::Running;
        if in_service {
            if room == 0 {
                continue;
            }
            room -= 1;
        }
        let new = new_task(service, slot.slot, slot.node_id, 0, 0, now_ms);
        if config.order == UpdateOrder::StopFirst || !in_service {
            ops.push(shut_down(old, now_ms, false, false));
        }
        ops.push(Op::Create(Object::Task(new)));
        in_flight += 1;
    }

    if outdated.is_empty() && in_flight == 0 {
        let monitored_until = slots
            .iter()
            .filter_map(|s| s.current)
            .filter(|t| of_rollout(t) && t.started_ms > 0)
            .map(|t| t.started_ms + config.monitor_ms)
            .max()
            .unwrap_or(0);
        if now_ms >= monitored_until {
            let rollback = status.state.is_rollback();
            status.state = if rollback { UpdateState::RollbackCompleted } else { UpdateState::Completed };
            status.completed_at_ms = now_ms;
            // A rollback keeps why it started (the failure that set it off).
            status.message = if rollback { format!("rollback completed: {}", status.message) } else { "update completed".into() };
        } else {
            plan.wake_no_later_than(monitored_until);
        }
    }
    write_status(service, status, ops);
}

fn write_status(service: &Service, status: UpdateStatus, ops: &mut Vec<Op>) {
    if service.update_status.as_ref() == Some(&status) {
        return;
    }
    let mut updated = service.clone();
    updated.update_status = Some(status);
    ops.push(Op::Update { object: Object::Service(updated), expected_version: Some(service.meta.version) });
}

enum Check {
    Failed(String),
    /// Not failed yet; look again by then.
    Watch { until: u64 },
    Fine,
}

/// Whether a task of the rollout counts as failed.
fn failure(task: &Task, config: &UpdateConfig, now_ms: u64) -> Check {
    let state = task.status.state;
    if matches!(state, TaskState::Failed | TaskState::Rejected | TaskState::Complete) {
        let ended_early = task.started_ms == 0 || task.status.timestamp_ms < task.started_ms + config.monitor_ms;
        if !ended_early {
            return Check::Fine;
        }
        let why = if task.status.error.is_empty() { task.status.message.clone() } else { task.status.error.clone() };
        return Check::Failed(format!("{}: {why}", state.as_str()));
    }
    if state.is_terminal() || task.desired_state > TaskState::Running {
        return Check::Fine;
    }
    if task.started_ms > 0 {
        let until = task.started_ms + config.monitor_ms;
        return if now_ms < until { Check::Watch { until } } else { Check::Fine };
    }
    let deadline = task.meta.created_at + config.healthy_deadline_ms;
    if now_ms >= deadline {
        return Check::Failed(format!(
            "not running and healthy {:?} after it was made; it is {}",
            std::time::Duration::from_millis(config.healthy_deadline_ms),
            state.as_str()
        ));
    }
    Check::Watch { until: deadline }
}
