//! One task's worker: a tokio task that drives the task's container
//! towards what its assignment asks, one [`next_step`] at a time, and
//! reports the states it passes through.
//!
//! The worker ends when the executor drops the task's assignment sender
//! (the task is no longer this node's); it checks at every wait, never in
//! the middle of creating or starting a container, so the executor can
//! then remove the task's containers knowing no new one will appear.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use shoal_proto::pb;
use shoal_runtime::container::HealthStatus;
use tokio::sync::{mpsc, watch};

use super::backend::TaskBackend;
use super::reconcile::{exit_outcome, next_step, TaskStep};
use super::task_container::stop_plan;
use super::task_files::HeldFiles;
use super::task_state::{ReportGuard, TaskState};

/// How long a task on a network keeps serving after the managers told it
/// to stop: they took it out of the service's VIP and DNS answers at that
/// moment, and every node applies that within tens of milliseconds; a
/// connection made meanwhile still finds the task (a zero-downtime update).
const NETWORK_DRAIN: Duration = Duration::from_millis(500);
const ERROR_BACKOFF_MIN: Duration = Duration::from_millis(500);
const ERROR_BACKOFF_MAX: Duration = Duration::from_secs(10);

/// What every worker shares.
pub struct WorkerContext {
    pub node_id: String,
    /// What runs the tasks.
    pub backend: Arc<dyn TaskBackend>,
    pub reports: mpsc::Sender<pb::TaskStatusUpdate>,
    /// The secrets' and configs' values the managers sent, in memory.
    pub files: HeldFiles,
}

/// A report, before the guard and the timestamp.
struct Report {
    state: TaskState,
    message: &'static str,
    error: String,
    exit_code: Option<i32>,
    container_id: String,
    /// When it happened, if not now (Unix milliseconds).
    at_ms: Option<u64>,
}

impl Report {
    fn new(state: TaskState, message: &'static str) -> Self {
        Report { state, message, error: String::new(), exit_code: None, container_id: String::new(), at_ms: None }
    }

    /// Dates the report from the runtime's RFC 3339 time, so a report made
    /// again after a daemon restart reads the same as the first and the
    /// managers' store sees nothing new.
    fn at(mut self, rfc3339: Option<&str>) -> Self {
        self.at_ms = rfc3339.and_then(unix_ms);
        self
    }

    fn error(mut self, error: impl Into<String>) -> Self {
        self.error = error.into();
        self
    }

    fn container(mut self, container_id: &str) -> Self {
        self.container_id = container_id.to_string();
        self
    }

    fn exit_code(mut self, code: Option<i32>) -> Self {
        self.exit_code = code;
        self
    }
}

struct TaskWorker {
    ctx: Arc<WorkerContext>,
    task_id: String,
    assignment: watch::Receiver<pb::Assignment>,
    guard: ReportGuard,
    /// Whether this worker has made sure the task's network is as it
    /// should be: at start, or on adopting a running container after a
    /// restart (a bridge may have been rebuilt meanwhile).
    network_checked: bool,
}

/// Runs one task until its assignment sender is dropped.
pub async fn run_task(ctx: Arc<WorkerContext>, assignment: watch::Receiver<pb::Assignment>) {
    let (task_id, observed) = {
        let first = assignment.borrow();
        (first.task_id.clone(), TaskState::parse(&first.observed_state))
    };
    // A task the managers already recorded as ended (a worker started after
    // a daemon restart) has nothing more to report: its container is only
    // kept for its logs.
    let mut guard = ReportGuard::default();
    if let Some(ended) = observed.filter(|s| s.is_terminal()) {
        guard.advance(ended);
        // Its network and secrets went with its container, unless a
        // restart cut that short.
        ctx.backend.release(&task_id).await;
    }
    let mut worker = TaskWorker { ctx, task_id, assignment, guard, network_checked: false };
    worker.run().await;
}

impl TaskWorker {
    async fn run(&mut self) {
        let mut backoff = ERROR_BACKOFF_MIN;
        loop {
            if self.retired() {
                return;
            }
            let assignment = self.assignment.borrow_and_update().clone();
            let desired = TaskState::parse(&assignment.desired_state);
            if desired.is_none() {
                tracing::warn!(task = %self.task_id, desired = %assignment.desired_state, "unknown desired state; waiting for another");
            }
            let containers = self.ctx.backend.containers_of(&self.task_id);
            let step = next_step(desired, &self.guard, &containers);
            tracing::debug!(task = %self.task_id, ?step, "task step");
            let outcome = match step {
                TaskStep::Start => self.start(&assignment).await,
                TaskStep::Watch { container_id } => self.watch(&container_id).await,
                TaskStep::ReportExit { container_id } => self.report_exit(&container_id).await,
                TaskStep::Stop { container_id } => self.stop(&assignment, &container_id).await,
                TaskStep::Report { state, error } => {
                    self.release_resources().await;
                    let message = if state == TaskState::Shutdown { "shut down before it started" } else { "container gone" };
                    self.report(Report::new(state, message).error(error)).await;
                    Ok(())
                }
                TaskStep::Remove { container_ids } => self.remove(&container_ids).await,
                TaskStep::Idle => {
                    if self.assignment.changed().await.is_err() {
                        return;
                    }
                    Ok(())
                }
            };
            match outcome {
                Ok(()) => backoff = ERROR_BACKOFF_MIN,
                Err(error) => {
                    // The runtime refused something that is not the task's
                    // fault (e.g. a remove): try again later, not in a loop.
                    tracing::warn!(task = %self.task_id, %error, "task step failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        changed = self.assignment.changed() => if changed.is_err() { return },
                    }
                    backoff = (backoff * 2).min(ERROR_BACKOFF_MAX);
                }
            }
        }
    }

    /// True once the executor dropped the task.
    fn retired(&self) -> bool {
        self.assignment.has_changed().is_err()
    }

    /// Accepted -> preparing (the image) -> starting (create, start) ->
    /// running. A task that cannot be prepared or created is rejected; one
    /// whose container does not start has failed.
    async fn start(&mut self, assignment: &pb::Assignment) -> Result<(), String> {
        self.report(Report::new(TaskState::Accepted, "accepted")).await;
        self.report(Report::new(TaskState::Preparing, "preparing")).await;
        // The pull may take long; give up on it if the task is called off.
        let pulled = tokio::select! {
            pulled = self.ctx.backend.pull(assignment) => pulled,
            _ = wait_until_unwanted(&mut self.assignment) => return Ok(()),
        };
        if let Err(error) = pulled {
            self.report(Report::new(TaskState::Rejected, "preparing failed").error(error)).await;
            return Ok(());
        }
        if is_unwanted(&self.assignment.borrow()) {
            return Ok(());
        }
        self.report(Report::new(TaskState::Starting, "starting")).await;
        let container_id = match self.ctx.backend.create(assignment, &self.ctx.node_id, &self.ctx.files).await {
            Ok(id) => id,
            Err(rejection) => {
                self.report(Report::new(TaskState::Rejected, rejection.message).error(rejection.error)).await;
                return Ok(());
            }
        };
        if let Err(error) = self.ctx.backend.start(&container_id).await {
            self.release_resources().await;
            let exit_code = self.ctx.backend.exit_of(&container_id).map(|e| e.code);
            let report = Report::new(TaskState::Failed, "starting the container failed")
                .error(error.to_string())
                .container(&container_id)
                .exit_code(exit_code);
            self.report(report).await;
            return Ok(());
        }
        self.network_checked = true;
        if self.ctx.backend.health_watch(&container_id).is_some() {
            // Running (and so a VIP backend) only once healthy: the watch
            // step reports it.
            return Ok(());
        }
        self.report(Report::new(TaskState::Running, "started").container(&container_id)).await;
        Ok(())
    }

    /// Reports running (after a restart too: the container is adopted) and
    /// waits for the container to end or the assignment to change.
    async fn watch(&mut self, container_id: &str) -> Result<(), String> {
        if !self.network_checked {
            self.network_checked = true;
            let assignment = self.assignment.borrow().clone();
            if let Err(error) = self.ctx.backend.repair_network(&assignment).await {
                tracing::warn!(task = %self.task_id, %error, "repairing the network of an adopted task");
            }
        }
        let backend = self.ctx.backend.clone();
        let Some(mut health) = backend.health_watch(container_id) else {
            let started_at = backend.started_at(container_id);
            self.report(Report::new(TaskState::Running, "started").container(container_id).at(started_at.as_deref())).await;
            tokio::select! {
                // Ended, or removed behind our back: the next step sees which.
                _ = backend.wait(container_id) => {}
                _ = self.assignment.changed() => {}
            }
            return Ok(());
        };
        let now = health.borrow_and_update().clone();
        match now.status {
            // Stays starting until its check passes.
            HealthStatus::Starting => {}
            HealthStatus::Healthy => self.report(Report::new(TaskState::Running, "healthy").container(container_id)).await,
            // A container that exited is unhealthy too: that is an exit.
            HealthStatus::Unhealthy if backend.exit_of(container_id).is_none() => {
                // Failed first, so it leaves its VIPs at once; the next
                // step stops the container, and the restart policy decides.
                let output = now.log.last().map(|p| p.output.trim().to_string()).unwrap_or_default();
                let error = format!("task: container unhealthy after {} failed checks: {output}", now.failing_streak);
                self.report(Report::new(TaskState::Failed, "unhealthy").error(error).container(container_id)).await;
                return Ok(());
            }
            HealthStatus::Unhealthy => {}
        }
        tokio::select! {
            _ = backend.wait(container_id) => {}
            _ = self.assignment.changed() => {}
            _ = health.changed() => {}
        }
        Ok(())
    }

    async fn report_exit(&mut self, container_id: &str) -> Result<(), String> {
        let exit = self.ctx.backend.exit_of(container_id)
            .ok_or_else(|| format!("container {container_id} has not exited yet"))?;
        let (state, error) = exit_outcome(&exit);
        let message = if state == TaskState::Complete { "finished" } else { "container exited with an error" };
        let report = Report::new(state, message).error(error).container(container_id).exit_code(Some(exit.code));
        // The end goes out first: every node drops the task from its VIPs
        // and names once the managers know, and tearing the sandbox down
        // takes tens of milliseconds. The addresses go back with the end;
        // one handed out again meets a sandbox already gone, as a new
        // task needs an allocation, a placement and its own preparation
        // first. The stopped container stays for its logs.
        self.report(report.at(Some(&exit.finished_at))).await;
        self.release_resources().await;
        Ok(())
    }

    async fn stop(&mut self, assignment: &pb::Assignment, container_id: &str) -> Result<(), String> {
        let plan = stop_plan(assignment.spec.as_ref());
        if !assignment.networks.is_empty() && self.guard.reported() == Some(TaskState::Running) {
            // Ended meanwhile: nothing to drain.
            let _ = tokio::time::timeout(NETWORK_DRAIN, self.ctx.backend.wait(container_id)).await;
        }
        self.ctx.backend.stop(container_id, &plan).await?;
        self.release_resources().await;
        let exit_code = self.ctx.backend.exit_of(container_id).map(|e| e.code);
        self.report(Report::new(TaskState::Shutdown, "shutdown").container(container_id).exit_code(exit_code)).await;
        Ok(())
    }

    async fn remove(&mut self, container_ids: &[String]) -> Result<(), String> {
        for container_id in container_ids {
            self.ctx.backend.remove(container_id).await?;
        }
        Ok(())
    }

    /// The task's addresses and its secrets' tmpfs go with its container.
    async fn release_resources(&self) {
        self.ctx.backend.release(&self.task_id).await;
    }

    /// Sends the report if it moves the task forward, and only while the
    /// task is still this node's.
    async fn report(&mut self, report: Report) {
        if self.retired() || !self.guard.advance(report.state) {
            return;
        }
        tracing::info!(task = %self.task_id, state = %report.state, error = %report.error, "task state");
        let update = pb::TaskStatusUpdate {
            task_id: self.task_id.clone(),
            state: report.state.as_str().into(),
            message: report.message.into(),
            error: report.error,
            exit_code: report.exit_code,
            container_id: report.container_id,
            timestamp_ms: report.at_ms.unwrap_or_else(now_ms),
        };
        // Only fails when the executor is stopping.
        let _ = self.ctx.reports.send(update).await;
    }
}

/// Resolves once the task should no longer run (its desired state moved
/// beyond running) or was dropped.
async fn wait_until_unwanted(assignment: &mut watch::Receiver<pb::Assignment>) {
    loop {
        if assignment.changed().await.is_err() {
            return;
        }
        if is_unwanted(&assignment.borrow_and_update()) {
            return;
        }
    }
}

fn is_unwanted(assignment: &pb::Assignment) -> bool {
    TaskState::parse(&assignment.desired_state).is_some_and(|d| d > TaskState::Running)
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn unix_ms(rfc3339: &str) -> Option<u64> {
    let time = humantime::parse_rfc3339_weak(rfc3339.trim_end_matches('Z')).ok()?;
    time.duration_since(UNIX_EPOCH).ok().map(|d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_times_read_as_unix_milliseconds() {
        assert_eq!(unix_ms("1970-01-01T00:00:01.5Z"), Some(1500));
        assert_eq!(unix_ms("2024-01-01T00:00:00.123456789Z"), Some(1_704_067_200_123));
        assert_eq!(unix_ms("yesterday"), None);
    }
}
