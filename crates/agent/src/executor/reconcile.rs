//! The executor's decisions, as pure functions of what the managers want
//! and what is on this node, so they can be tested without containers:
//!
//! - [`plan_assignments`]: an assignments message against the tasks the
//!   executor already works on and the task containers on the node ->
//!   which task workers to start, update or retire, and which containers
//!   belong to no task.
//! - [`next_step`]: one task's desired state, what was reported for it and
//!   its containers -> the one thing its worker does next.
//! - [`exit_outcome`]: how a container's exit reads as a task's end.

use std::collections::HashSet;

use shoal_proto::pb;
use shoal_runtime::container::{ContainerSummary, ExitInfo, Status};

use super::task_container::LABEL_TASK_ID;
use super::task_state::{ReportGuard, TaskState};

/// A container on this node made for a swarm task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskContainer {
    pub container_id: String,
    pub task_id: String,
    pub status: Status,
    /// RFC 3339, to tell the newest of several.
    pub created: String,
}

impl TaskContainer {
    /// The task containers among `containers` (the others are the user's).
    pub fn from_summaries(containers: Vec<ContainerSummary>) -> Vec<TaskContainer> {
        containers
            .into_iter()
            .filter_map(|c| {
                let task_id = c.labels.get(LABEL_TASK_ID)?.clone();
                Some(TaskContainer { container_id: c.id, task_id, status: c.status, created: c.created })
            })
            .collect()
    }
}

/// What the executor does about one task (or stray container) after an
/// assignments message.
#[derive(Debug, Clone, PartialEq)]
pub enum SetAction {
    /// A task the executor has no worker for: start one.
    Start(pb::Assignment),
    /// A task with a worker: hand it the new assignment.
    Update(pb::Assignment),
    /// The task is no longer this node's: end its worker and remove its
    /// containers, reporting nothing (the managers already moved on).
    Retire(String),
    /// A task container that no assigned task owns (its task ended while
    /// the daemon was down, or belongs to an earlier membership): stop
    /// and remove it.
    RemoveStray(String),
}

/// Turns one assignments message into actions. `workers` are the tasks the
/// executor runs a worker for; `local` the task containers on the node.
/// A full message replaces the set: tasks missing from it are retired.
pub fn plan_assignments(
    message: &pb::AssignmentsMessage,
    workers: &HashSet<String>,
    local: &[TaskContainer],
) -> Vec<SetAction> {
    let mut actions = Vec::new();
    let removed: HashSet<&str> = message.removed.iter().map(String::as_str).collect();
    let assigned: HashSet<&str> =
        message.changed.iter().map(|a| a.task_id.as_str()).filter(|id| !removed.contains(id)).collect();

    // Tasks leaving the node: by name in `removed`, or by absence from a full set.
    let mut leaving: Vec<&str> = if message.full {
        workers.iter().map(String::as_str).filter(|id| !assigned.contains(id)).collect()
    } else {
        message.removed.iter().map(String::as_str).collect()
    };
    leaving.sort_unstable();
    leaving.dedup();
    for task_id in &leaving {
        if workers.contains(*task_id) {
            actions.push(SetAction::Retire(task_id.to_string()));
        }
    }

    for assignment in message.changed.iter().filter(|a| assigned.contains(a.task_id.as_str())) {
        if workers.contains(&assignment.task_id) {
            actions.push(SetAction::Update(assignment.clone()));
        } else {
            actions.push(SetAction::Start(assignment.clone()));
        }
    }

    // Containers no worker will look after: a retired worker's are removed
    // with it; those of a task that is assigned are its worker's to judge.
    for container in local {
        let task = container.task_id.as_str();
        let owned = assigned.contains(task) || (workers.contains(task) && !leaving.contains(&task));
        let retired_with_worker = workers.contains(task) && leaving.contains(&task);
        let stray = if message.full { !owned && !retired_with_worker } else { removed.contains(task) && !retired_with_worker };
        if stray {
            actions.push(SetAction::RemoveStray(container.container_id.clone()));
        }
    }
    actions
}

/// The one thing a task's worker does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskStep {
    /// Pull the image, create and start the container, reporting
    /// accepted, preparing, starting and running on the way.
    Start,
    /// The container runs: report running (once) and wait for it to exit
    /// or for the assignment to change.
    Watch { container_id: String },
    /// The container ended by itself: report how.
    ReportExit { container_id: String },
    /// The task must end: stop the container and report shutdown.
    Stop { container_id: String },
    /// A state to report with no container to act on.
    Report { state: TaskState, error: String },
    /// Containers to remove without reporting: duplicates, or one that
    /// was created but never started.
    Remove { container_ids: Vec<String> },
    /// Nothing to do until the assignment changes.
    Idle,
}

/// Decides a task's next step. `desired` is `None` when the managers sent
/// a state this agent does not know; it then waits rather than guess.
pub fn next_step(desired: Option<TaskState>, guard: &ReportGuard, containers: &[TaskContainer]) -> TaskStep {
    // An ended task's stopped container stays, for `service logs`, until
    // the managers drop the task from the node's set with the slot's
    // history; an end whose report a daemon restart lost is reported again
    // from it. A container still running for an ended task is stopped
    // (its stop is not reported: the task has ended already).
    let (primary, extras) = pick_container(containers);
    if guard.is_terminal() {
        return match primary {
            Some(c) if c.status == Status::Running => TaskStep::Stop { container_id: c.container_id.clone() },
            _ => TaskStep::Idle,
        };
    }
    let Some(desired) = desired else { return TaskStep::Idle };
    if !extras.is_empty() {
        return TaskStep::Remove { container_ids: extras };
    }
    if desired > TaskState::Running {
        return match primary {
            Some(container) => TaskStep::Stop { container_id: container.container_id.clone() },
            None => TaskStep::Report { state: TaskState::Shutdown, error: String::new() },
        };
    }
    match primary {
        None if guard.reported().is_some_and(|r| r >= TaskState::Starting) => {
            TaskStep::Report { state: TaskState::Failed, error: "task: its container was removed from the node".into() }
        }
        None => TaskStep::Start,
        // Created but never started (the daemon stopped in between):
        // start over with a fresh container.
        Some(c) if c.status == Status::Created => TaskStep::Remove { container_ids: vec![c.container_id.clone()] },
        Some(c) if c.status == Status::Running => TaskStep::Watch { container_id: c.container_id.clone() },
        Some(c) => TaskStep::ReportExit { container_id: c.container_id.clone() },
    }
}

/// The container that stands for the task (running first, then created,
/// then ended; the newest among equals), and the ids of the others.
pub fn pick_container(containers: &[TaskContainer]) -> (Option<&TaskContainer>, Vec<String>) {
    let rank = |status: Status| match status {
        Status::Running => 3,
        Status::Created => 2,
        Status::Exited | Status::Dead => 1,
    };
    let primary = containers.iter().max_by(|a, b| (rank(a.status), &a.created).cmp(&(rank(b.status), &b.created)));
    let extras = match primary {
        Some(p) => containers.iter().filter(|c| c.container_id != p.container_id).map(|c| c.container_id.clone()).collect(),
        None => Vec::new(),
    };
    (primary, extras)
}

/// How a container's exit ends its task: complete on a clean exit 0,
/// failed otherwise, with docker's error wording.
pub fn exit_outcome(exit: &ExitInfo) -> (TaskState, String) {
    if let Some(error) = &exit.error {
        return (TaskState::Failed, error.clone());
    }
    if exit.oom_killed {
        return (TaskState::Failed, "out of memory".into());
    }
    if exit.code == 0 {
        return (TaskState::Complete, String::new());
    }
    (TaskState::Failed, format!("task: non-zero exit ({})", exit.code))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assignment(task_id: &str, desired: &str) -> pb::Assignment {
        pb::Assignment {
            task_id: task_id.into(),
            name: format!("web.{task_id}"),
            desired_state: desired.into(),
            ..Default::default()
        }
    }

    fn container(id: &str, task_id: &str, status: Status, created: &str) -> TaskContainer {
        TaskContainer { container_id: id.into(), task_id: task_id.into(), status, created: created.into() }
    }

    fn workers(ids: &[&str]) -> HashSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    fn guard(states: &[TaskState]) -> ReportGuard {
        let mut guard = ReportGuard::default();
        for state in states {
            guard.advance(*state);
        }
        guard
    }

    // ------------------------------------------------------------ set level

    #[test]
    fn a_full_set_replaces_what_the_executor_had() {
        let message = pb::AssignmentsMessage {
            full: true,
            changed: vec![assignment("keep", "running"), assignment("new", "running")],
            ..Default::default()
        };
        let actions = plan_assignments(&message, &workers(&["keep", "gone"]), &[]);
        assert_eq!(
            actions,
            vec![
                SetAction::Retire("gone".into()),
                SetAction::Update(assignment("keep", "running")),
                SetAction::Start(assignment("new", "running")),
            ]
        );
    }

    #[test]
    fn first_full_set_after_a_restart_adopts_and_cleans_up() {
        // No workers yet; the node has containers of an assigned task and
        // of one that ended while the daemon was down.
        let local = vec![
            container("c-live", "assigned", Status::Running, "2024-01-01T00:00:00Z"),
            container("c-old", "ended", Status::Running, "2024-01-01T00:00:00Z"),
            container("c-old-exited", "ended", Status::Exited, "2024-01-01T00:00:00Z"),
        ];
        let message = pb::AssignmentsMessage { full: true, changed: vec![assignment("assigned", "running")], ..Default::default() };
        let actions = plan_assignments(&message, &workers(&[]), &local);
        assert_eq!(
            actions,
            vec![
                // The worker finds the running container and watches it.
                SetAction::Start(assignment("assigned", "running")),
                SetAction::RemoveStray("c-old".into()),
                SetAction::RemoveStray("c-old-exited".into()),
            ]
        );
    }

    #[test]
    fn a_full_set_leaves_retired_tasks_containers_to_the_retirement() {
        let local = vec![container("c1", "gone", Status::Running, "t")];
        let message = pb::AssignmentsMessage { full: true, ..Default::default() };
        let actions = plan_assignments(&message, &workers(&["gone"]), &local);
        assert_eq!(actions, vec![SetAction::Retire("gone".into())]);
    }

    #[test]
    fn changes_start_update_and_retire() {
        let message = pb::AssignmentsMessage {
            full: false,
            changed: vec![assignment("a", "shutdown"), assignment("b", "running")],
            removed: vec!["c".into(), "unknown".into()],
            ..Default::default()
        };
        let local = vec![
            container("c-a", "a", Status::Running, "t"),
            container("c-c", "c", Status::Exited, "t"),
            container("c-other", "other", Status::Running, "t"),
        ];
        let actions = plan_assignments(&message, &workers(&["a", "c", "other"]), &local);
        assert_eq!(
            actions,
            vec![
                SetAction::Retire("c".into()),
                SetAction::Update(assignment("a", "shutdown")),
                SetAction::Start(assignment("b", "running")),
            ],
            "a change message leaves tasks it does not name alone"
        );
    }

    #[test]
    fn removed_tasks_without_a_worker_lose_their_containers() {
        let message = pb::AssignmentsMessage { removed: vec!["x".into()], ..Default::default() };
        let local = vec![container("c-x", "x", Status::Exited, "t")];
        assert_eq!(plan_assignments(&message, &workers(&[]), &local), vec![SetAction::RemoveStray("c-x".into())]);
    }

    #[test]
    fn a_task_both_changed_and_removed_is_removed() {
        let message =
            pb::AssignmentsMessage { changed: vec![assignment("x", "running")], removed: vec!["x".into()], ..Default::default() };
        assert_eq!(plan_assignments(&message, &workers(&["x"]), &[]), vec![SetAction::Retire("x".into())]);
    }

    // ----------------------------------------------------------- task level

    #[test]
    fn a_new_task_starts() {
        assert_eq!(next_step(Some(TaskState::Running), &guard(&[]), &[]), TaskStep::Start);
        assert_eq!(next_step(Some(TaskState::Assigned), &guard(&[]), &[]), TaskStep::Start, "desired below running");
    }

    #[test]
    fn a_running_container_is_watched_not_duplicated() {
        let containers = [container("c1", "t", Status::Running, "1")];
        assert_eq!(next_step(Some(TaskState::Running), &guard(&[]), &containers), TaskStep::Watch { container_id: "c1".into() });
        let reported = guard(&[TaskState::Running]);
        assert_eq!(next_step(Some(TaskState::Running), &reported, &containers), TaskStep::Watch { container_id: "c1".into() });
    }

    #[test]
    fn an_exited_container_is_reported() {
        let containers = [container("c1", "t", Status::Exited, "1")];
        let reported = guard(&[TaskState::Running]);
        assert_eq!(next_step(Some(TaskState::Running), &reported, &containers), TaskStep::ReportExit { container_id: "c1".into() });
        // After a restart too (nothing reported by this run yet).
        assert_eq!(next_step(Some(TaskState::Running), &guard(&[]), &containers), TaskStep::ReportExit { container_id: "c1".into() });
        let dead = [container("c1", "t", Status::Dead, "1")];
        assert_eq!(next_step(Some(TaskState::Running), &guard(&[]), &dead), TaskStep::ReportExit { container_id: "c1".into() });
    }

    #[test]
    fn shutdown_stops_whatever_container_there_is() {
        for status in [Status::Running, Status::Created, Status::Exited] {
            let containers = [container("c1", "t", status, "1")];
            for desired in [TaskState::Shutdown, TaskState::Remove] {
                assert_eq!(
                    next_step(Some(desired), &guard(&[TaskState::Running]), &containers),
                    TaskStep::Stop { container_id: "c1".into() }
                );
            }
        }
    }

    #[test]
    fn shutdown_without_a_container_is_just_reported() {
        for reported in [&[][..], &[TaskState::Preparing][..]] {
            assert_eq!(
                next_step(Some(TaskState::Shutdown), &guard(reported), &[]),
                TaskStep::Report { state: TaskState::Shutdown, error: String::new() }
            );
        }
    }

    #[test]
    fn a_vanished_container_fails_the_task() {
        let step = next_step(Some(TaskState::Running), &guard(&[TaskState::Running]), &[]);
        assert!(matches!(step, TaskStep::Report { state: TaskState::Failed, .. }), "{step:?}");
    }

    #[test]
    fn ended_tasks_wait_for_retirement_and_report_nothing_more() {
        let containers = [container("c1", "t", Status::Exited, "1")];
        for end in [TaskState::Complete, TaskState::Failed, TaskState::Rejected, TaskState::Shutdown] {
            let ended = guard(&[TaskState::Running, end]);
            assert_eq!(next_step(Some(TaskState::Running), &ended, &containers), TaskStep::Idle);
            assert_eq!(next_step(Some(TaskState::Running), &ended, &[]), TaskStep::Idle);
            assert_eq!(next_step(Some(TaskState::Shutdown), &ended, &containers), TaskStep::Idle);
        }
        // Recorded as ended, yet its container runs (the daemon restarted
        // in between): stopped, and the stop is not reported.
        let running = [container("c1", "t", Status::Running, "1")];
        let ended = guard(&[TaskState::Failed]);
        assert_eq!(next_step(Some(TaskState::Shutdown), &ended, &running), TaskStep::Stop { container_id: "c1".into() });
    }

    #[test]
    fn a_created_container_is_replaced() {
        let containers = [container("c1", "t", Status::Created, "1")];
        assert_eq!(
            next_step(Some(TaskState::Running), &guard(&[]), &containers),
            TaskStep::Remove { container_ids: vec!["c1".into()] }
        );
    }

    #[test]
    fn duplicates_are_removed_keeping_the_running_one() {
        let containers = [
            container("old", "t", Status::Exited, "2"),
            container("live", "t", Status::Running, "1"),
            container("newer-exited", "t", Status::Exited, "3"),
        ];
        assert_eq!(
            next_step(Some(TaskState::Running), &guard(&[]), &containers),
            TaskStep::Remove { container_ids: vec!["old".into(), "newer-exited".into()] }
        );
        let ended = [container("a", "t", Status::Exited, "1"), container("b", "t", Status::Exited, "2")];
        assert_eq!(
            next_step(Some(TaskState::Running), &guard(&[]), &ended),
            TaskStep::Remove { container_ids: vec!["a".into()] },
            "the newest ended one is kept to be reported"
        );
    }

    #[test]
    fn an_unknown_desired_state_waits() {
        assert_eq!(next_step(None, &guard(&[]), &[]), TaskStep::Idle);
    }

    #[test]
    fn exits_read_as_docker_reports_them() {
        let exit = |code, oom_killed, error: Option<&str>| ExitInfo {
            code,
            oom_killed,
            finished_at: String::new(),
            error: error.map(String::from),
        };
        assert_eq!(exit_outcome(&exit(0, false, None)), (TaskState::Complete, String::new()));
        assert_eq!(exit_outcome(&exit(3, false, None)), (TaskState::Failed, "task: non-zero exit (3)".into()));
        assert_eq!(exit_outcome(&exit(137, true, None)), (TaskState::Failed, "out of memory".into()));
        assert_eq!(
            exit_outcome(&exit(127, false, Some("executable file not found"))),
            (TaskState::Failed, "executable file not found".into())
        );
    }

    #[test]
    fn only_labelled_containers_are_task_containers() {
        let summary = |id: &str, task: Option<&str>| ContainerSummary {
            id: id.into(),
            name: id.into(),
            image: String::new(),
            image_id: String::new(),
            command: String::new(),
            created: "1".into(),
            status: Status::Running,
            paused: false,
            exit_code: None,
            started_at: None,
            finished_at: None,
            labels: task.map(|t| (LABEL_TASK_ID.to_string(), t.to_string())).into_iter().collect(),
            health: None,
        };
        let found = TaskContainer::from_summaries(vec![summary("mine", Some("t1")), summary("users", None)]);
        assert_eq!(found, vec![container("mine", "t1", Status::Running, "1")]);
    }
}
