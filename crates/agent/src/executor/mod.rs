//! The task executor: runs this node's share of the swarm's services.
//!
//! It keeps an `Assignments` stream open to the leader (failing over
//! through the managers like the session does), and for every task
//! assigned here runs a worker ([`worker`]) that pulls the image, creates,
//! starts, watches and stops the task's container, reporting each state
//! ([`reporter`], batched). Containers carry the task's labels, so after a
//! daemon restart the first full assignment set adopts the containers
//! that kept running and removes those of tasks that are gone. Log
//! subscriptions that come with the assignments are served by [`logs`].
//!
//! The decisions are pure functions in [`reconcile`]; this module only
//! carries them out.

pub mod backend;
#[cfg(test)]
mod container_tests;
mod logs;
mod reconcile;
mod reporter;
mod runtime_ops;
mod task_container;
mod task_files;
pub(crate) mod task_network;
mod task_state;
mod worker;

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_proto::pb;
use shoal_proto::tls::ClientTls;
use shoal_runtime::container::ContainerManager;
use shoal_overlay_net::dataplane::Dataplane;
use shoal_runtime::image::ImageStore;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};

pub use runtime_ops::remove_all_task_containers;
pub use task_files::remove_all_task_files;
pub use task_container::{health_config, process_options, LABEL_NODE_ID, LABEL_SERVICE_ID, LABEL_SERVICE_NAME, LABEL_TASK_ID, LABEL_TASK_NAME};
pub use task_state::TaskState;

pub use backend::{Rejection, TaskBackend};
pub use reconcile::TaskContainer;
pub use task_container::StopPlan;
pub use task_files::HeldFiles;
pub use task_network::OverlayView;

use crate::managers::ManagerDialer;
use backend::stop_and_remove_all;
use reconcile::{plan_assignments, SetAction};
use task_container::stop_plan;
use worker::{run_task, WorkerContext};

/// Bounds connecting to a manager and waiting for a stream to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Status reports go through Raft; give them longer.
const REPORT_TIMEOUT: Duration = Duration::from_secs(5);
const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(2);
/// How many log subscription ids are remembered, so one resent after a
/// reconnection is not published twice.
const REMEMBERED_SUBSCRIPTIONS: usize = 1024;
/// How long stopping the executor waits for its workers to wind down.
const WORKER_STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// This node's images, containers and networks, as the daemon opened them.
#[derive(Clone)]
pub struct TaskRuntime {
    pub images: ImageStore,
    pub containers: Arc<ContainerManager>,
    /// Bridges, sandboxes and the overlay; `None` where the node has no
    /// network data plane (tasks on networks are then rejected).
    pub networks: Option<Arc<Dataplane>>,
    /// Where each task's secrets and configs get a tmpfs: under the
    /// daemon's run directory, never its data root.
    pub task_files: PathBuf,
}

pub struct ExecutorConfig {
    pub node_id: String,
    pub tls: ClientTls,
    /// Managers to try, in order; the session keeps the list current.
    pub managers: Arc<Mutex<Vec<String>>>,
    /// What runs the tasks: a real node's [`TaskRuntime`], or a simulated one.
    pub backend: Arc<dyn TaskBackend>,
}

/// A running executor. Dropping it stops it without waiting.
pub struct Executor {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    files: HeldFiles,
}

/// Why the assignments stream stopped.
struct StreamFailure {
    /// Whether a manager was reached at all.
    connected: bool,
    detail: String,
}

impl Executor {
    /// Starts the executor next to the node's session.
    pub fn spawn(config: ExecutorConfig) -> Executor {
        let (stop, stopped) = oneshot::channel();
        let files = HeldFiles::default();
        let supervisor_files = files.clone();
        let task = tokio::spawn(async move {
            let mut supervisor = Supervisor::new(config, supervisor_files);
            tokio::select! {
                _ = supervisor.run() => {}
                _ = stopped => {}
            }
            supervisor.shutdown().await;
        });
        Executor { stop: Some(stop), task, files }
    }

    /// The secrets and configs held in memory for this node's tasks, by
    /// kind and id: what `shoal info` shows, never the values.
    pub fn files_held(&self) -> Vec<pb::FileKey> {
        self.files.held()
    }

    /// Stops following the managers and ends every worker. Task containers
    /// keep running (a daemon restart adopts them); on leaving the swarm,
    /// follow with [`remove_all_task_containers`].
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if tokio::time::timeout(WORKER_STOP_TIMEOUT * 2, &mut self.task).await.is_err() {
            self.task.abort();
        }
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A task's worker, and the sender of its assignment (dropping it retires
/// the worker).
struct TaskWorkerHandle {
    assignment: watch::Sender<pb::Assignment>,
    task: JoinHandle<()>,
}

struct Supervisor {
    node_id: String,
    tls: ClientTls,
    dialer: ManagerDialer,
    ctx: Arc<WorkerContext>,
    workers: HashMap<String, TaskWorkerHandle>,
    /// Retirements, stray removals and log publishing.
    background: JoinSet<()>,
    reporter: JoinHandle<()>,
    subscriptions_seen: RecentIds,
    /// The overlay as the managers describe it; a loop applies each change.
    overlay_updates: watch::Sender<OverlayView>,
    overlay_applier: JoinHandle<()>,
    /// Stray task sandboxes are swept once, on the first full set.
    swept_sandboxes: bool,
}

impl Supervisor {
    fn new(config: ExecutorConfig, files: HeldFiles) -> Self {
        let (reports, updates) = mpsc::channel(1024);
        let report_dialer = ManagerDialer::new(config.tls.clone(), config.managers.clone(), REPORT_TIMEOUT);
        let reporter = tokio::spawn(reporter::run_reporter(config.node_id.clone(), report_dialer, updates));
        let (overlay_updates, views) = watch::channel(OverlayView::default());
        let backend = config.backend.clone();
        let overlay_applier = tokio::spawn(async move { backend.follow_overlay(views).await });
        Supervisor {
            dialer: ManagerDialer::new(config.tls.clone(), config.managers, CONNECT_TIMEOUT).persistent(),
            ctx: Arc::new(WorkerContext { node_id: config.node_id.clone(), backend: config.backend, reports, files }),
            node_id: config.node_id,
            tls: config.tls,
            workers: HashMap::new(),
            background: JoinSet::new(),
            reporter,
            subscriptions_seen: RecentIds::new(REMEMBERED_SUBSCRIPTIONS),
            overlay_updates,
            overlay_applier,
            swept_sandboxes: false,
        }
    }

    /// Follows the assignments stream forever, reconnecting with a short,
    /// growing delay.
    async fn run(&mut self) {
        let mut delay = RETRY_MIN;
        let mut followed_hint = false;
        loop {
            let mut delivered = false;
            let result = self.follow_assignments(&mut delivered).await;
            match &result {
                Ok(()) => tracing::info!("assignments stream ended; reconnecting"),
                Err(error) => tracing::debug!(error = %error.detail, "assignments stream failed; trying the next manager"),
            }
            // No manager reached: the dialer paces its own attempts, and a
            // sleep here would only delay a node whose network just healed.
            // Nor after a follower's refusal that named the leader, once
            // (two managers naming each other during an election wait).
            let hinted = self.dialer.knows_the_leader() && !followed_hint;
            followed_hint = hinted;
            if result.as_ref().is_err_and(|e| !e.connected) || hinted {
                continue;
            }
            // A stream that worked for a while (e.g. until its manager
            // stopped leading) is followed by a quick retry; repeated
            // refusals back off.
            if delivered {
                delay = RETRY_MIN;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(RETRY_MAX);
        }
    }

    /// One stream, until it ends; `delivered` tells whether it brought
    /// any message.
    async fn follow_assignments(&mut self, delivered: &mut bool) -> Result<(), StreamFailure> {
        let (addr, channel) = self.dialer.connect().await.map_err(|detail| StreamFailure { connected: false, detail })?;
        let mut client = pb::dispatcher_client::DispatcherClient::new(channel);
        let request = pb::AssignmentsRequest { node_id: self.node_id.clone() };
        let mut stream = match client.assignments(request).await {
            Ok(response) => response.into_inner(),
            Err(status) => {
                self.dialer.note_refusal(&status);
                return Err(StreamFailure { connected: true, detail: format!("{addr}: {}", status.message()) });
            }
        };
        tracing::info!(manager = %addr, "following task assignments");
        loop {
            match stream.message().await {
                Ok(Some(message)) => {
                    *delivered = true;
                    self.apply(message, &addr);
                }
                Ok(None) => return Ok(()),
                Err(status) => {
                    self.dialer.note_refusal(&status);
                    return Err(StreamFailure { connected: true, detail: format!("{addr}: {}", status.message()) });
                }
            }
        }
    }

    fn apply(&mut self, message: pb::AssignmentsMessage, manager: &str) {
        while self.background.try_join_next().is_some() {}
        self.reap_finished_workers();
        let local = self.ctx.backend.task_containers();
        let workers: HashSet<String> = self.workers.keys().cloned().collect();
        tracing::debug!(
            full = message.full,
            changed = message.changed.len(),
            removed = message.removed.len(),
            "assignments received"
        );
        // The networks and peers first, so a task's network is on its way
        // before its worker asks for it. Folded into the view the applier
        // watches, in place: a message about one peer costs one entry, not
        // a copy of every peer in the swarm.
        self.overlay_updates.send_if_modified(|view| view.apply(&message));
        // So are the secrets and configs its tasks use.
        self.ctx.files.apply(&message);
        if message.full && !self.swept_sandboxes {
            self.swept_sandboxes = true;
            self.sweep_sandboxes(&message);
        }
        for action in plan_assignments(&message, &workers, &local) {
            match action {
                SetAction::Start(assignment) => self.start_worker(assignment),
                SetAction::Update(assignment) => {
                    if let Some(worker) = self.workers.get(&assignment.task_id) {
                        worker.assignment.send_if_modified(|current| {
                            let changed = *current != assignment;
                            *current = assignment;
                            changed
                        });
                    }
                }
                SetAction::Retire(task_id) => self.retire(task_id),
                SetAction::RemoveStray(container_id) => {
                    let task = local.iter().find(|c| c.container_id == container_id).map(|c| c.task_id.clone());
                    tracing::info!(container = %container_id, task = ?task, "removing the container of a task no longer assigned here");
                    let backend = self.ctx.backend.clone();
                    self.background.spawn(async move {
                        stop_and_remove_all(backend.as_ref(), vec![container_id], &stop_plan(None)).await;
                        if let Some(task) = task {
                            backend.release(&task).await;
                        }
                    });
                }
            }
        }
        for subscription in message.log_subscriptions {
            if !self.subscriptions_seen.insert(&subscription.id) {
                continue;
            }
            let backend = self.ctx.backend.clone();
            let (tls, manager) = (self.tls.clone(), manager.to_string());
            self.background.spawn(async move { backend.publish_logs(tls, manager, subscription).await });
        }
    }

    fn start_worker(&mut self, assignment: pb::Assignment) {
        let task_id = assignment.task_id.clone();
        // Every line the worker logs carries the task's ids as fields.
        let span = tracing::info_span!(
            "task",
            task_id = %assignment.task_id,
            task = %assignment.name,
            service_id = %assignment.service_id,
            node_id = %self.node_id
        );
        let (sender, receiver) = watch::channel(assignment);
        let task = tokio::spawn(tracing::Instrument::instrument(run_task(self.ctx.clone(), receiver), span));
        self.workers.insert(task_id, TaskWorkerHandle { assignment: sender, task });
    }

    /// Ends the task's worker (at its next wait), then stops and removes
    /// the task's containers.
    fn retire(&mut self, task_id: String) {
        let Some(worker) = self.workers.remove(&task_id) else { return };
        let plan = stop_plan(worker.assignment.borrow().spec.as_ref());
        let TaskWorkerHandle { assignment, task } = worker;
        drop(assignment);
        let backend = self.ctx.backend.clone();
        self.background.spawn(async move {
            let _ = task.await;
            let ids: Vec<String> = backend.containers_of(&task_id).into_iter().map(|c| c.container_id).collect();
            if !ids.is_empty() {
                tracing::info!(task = %task_id, "removing the containers of a task no longer assigned here");
                stop_and_remove_all(backend.as_ref(), ids, &plan).await;
            }
            backend.release(&task_id).await;
        });
    }

    /// Removes the sandboxes and secrets tmpfs of tasks that are not this
    /// node's any more (they ended or moved while the daemon was down).
    /// Those of assigned tasks are their workers' to keep or release.
    fn sweep_sandboxes(&mut self, message: &pb::AssignmentsMessage) {
        let assigned: HashSet<String> = message.changed.iter().map(|a| a.task_id.clone()).collect();
        let backend = self.ctx.backend.clone();
        self.background.spawn(async move { backend.sweep(assigned).await });
    }

    /// Workers only end when retired; one that ended otherwise panicked.
    /// Dropping its handle lets the next full set start it again.
    fn reap_finished_workers(&mut self) {
        self.workers.retain(|task_id, worker| {
            let finished = worker.task.is_finished();
            if finished {
                tracing::error!(task = %task_id, "a task worker ended unexpectedly");
            }
            !finished
        });
    }

    /// Ends every worker and background job, leaving containers as they
    /// are. Workers are retired first, so none is cut off halfway through
    /// creating or starting a container unless it takes too long.
    async fn shutdown(&mut self) {
        let tasks: Vec<JoinHandle<()>> = self.workers.drain().map(|(_, worker)| worker.task).collect();
        let deadline = tokio::time::Instant::now() + WORKER_STOP_TIMEOUT;
        for mut task in tasks {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                task.abort();
            }
        }
        self.background.shutdown().await;
        self.reporter.abort();
        self.overlay_applier.abort();
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        for worker in self.workers.values() {
            worker.task.abort();
        }
        self.reporter.abort();
        self.overlay_applier.abort();
    }
}

/// The last few ids seen, oldest forgotten first.
struct RecentIds {
    capacity: usize,
    order: VecDeque<String>,
    set: HashSet<String>,
}

impl RecentIds {
    fn new(capacity: usize) -> Self {
        RecentIds { capacity, order: VecDeque::new(), set: HashSet::new() }
    }

    /// True if `id` is new.
    fn insert(&mut self, id: &str) -> bool {
        if self.set.contains(id) {
            return false;
        }
        if self.order.len() == self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.set.remove(&oldest);
            }
        }
        self.order.push_back(id.to_string());
        self.set.insert(id.to_string());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_ids_forget_the_oldest() {
        let mut seen = RecentIds::new(2);
        assert!(seen.insert("a"));
        assert!(!seen.insert("a"));
        assert!(seen.insert("b"));
        assert!(seen.insert("c"));
        assert!(seen.insert("a"), "forgotten after two newer ones");
        assert!(!seen.insert("c"));
    }
}
