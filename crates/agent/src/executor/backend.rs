//! The seam between the executor and what runs tasks on the node.
//!
//! The executor (assignments, workers, reports) is the same for every
//! node; a [`TaskBackend`] is what it drives: the node's containers,
//! images, secrets tmpfs and network sandboxes on a real node
//! ([`TaskRuntime`]), or an in-memory stand-in on the scale simulator's
//! nodes (`crate::simulation::SimulatedRuntime`). Everything a worker
//! decides stays in [`super::reconcile`]; a backend only carries it out.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use shoal_overlay_net::dataplane::Dataplane;
use shoal_proto::pb;
use shoal_proto::tls::ClientTls;
use shoal_runtime::container::{ExitInfo, Health, ImageInput, MountSpec};
use shoal_overlay_net::dns::CONTAINER_RESOLV_CONF as RESOLV_CONF;
use tokio::sync::watch;

use super::reconcile::TaskContainer;
use super::runtime_ops::{ensure_image, exit_of, remove_container, stop_container, task_containers};
use super::task_container::{create_request, StopPlan};
use super::task_files::{HeldFiles, TaskFilesRoot};
use super::task_network::{self, OverlayView};
use super::TaskRuntime;

/// Why a task could not be made into a container: the short message of
/// its rejected report, and the error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub message: &'static str,
    pub error: String,
}

impl Rejection {
    pub fn new(message: &'static str, error: impl Into<String>) -> Self {
        Rejection { message, error: error.into() }
    }
}

/// What runs a node's tasks. Container ids are the backend's own; every
/// task container carries its task's id, so the executor can find them
/// again after a restart.
#[async_trait]
pub trait TaskBackend: Send + Sync + 'static {
    /// Every task container on the node, running or not.
    fn task_containers(&self) -> Vec<TaskContainer>;

    /// The containers of one task.
    fn containers_of(&self, task_id: &str) -> Vec<TaskContainer> {
        self.task_containers().into_iter().filter(|c| c.task_id == task_id).collect()
    }

    /// Makes the task's image available on the node (pulled if need be).
    async fn pull(&self, assignment: &pb::Assignment) -> Result<(), String>;

    /// Creates the task's container with its secrets, configs and network,
    /// not started; on failure nothing of the task is left behind.
    async fn create(&self, assignment: &pb::Assignment, node_id: &str, files: &HeldFiles) -> Result<String, Rejection>;

    async fn start(&self, container_id: &str) -> Result<(), String>;

    /// How the container ended, or `None` while it has not.
    fn exit_of(&self, container_id: &str) -> Option<ExitInfo>;

    /// When the container started (RFC 3339), if it did.
    fn started_at(&self, container_id: &str) -> Option<String>;

    /// The container's health, when it has a check.
    fn health_watch(&self, container_id: &str) -> Option<watch::Receiver<Health>>;

    /// Resolves once the container is no longer running (or is gone).
    async fn wait(&self, container_id: &str);

    /// Stops the container as the plan asks; one not running is left as it is.
    async fn stop(&self, container_id: &str, plan: &StopPlan) -> Result<(), String>;

    /// Removes the container (killing it if it still runs); one gone is fine.
    async fn remove(&self, container_id: &str) -> Result<(), String>;

    /// Puts an adopted task's network back as it should be (after a
    /// daemon restart something may have drifted).
    async fn repair_network(&self, assignment: &pb::Assignment) -> Result<(), String>;

    /// Gives back what the task held besides its container: its sandbox
    /// and addresses, its secrets' tmpfs. Missing is fine.
    async fn release(&self, task_id: &str);

    /// Releases the sandboxes and secrets of tasks not in `assigned`
    /// (they ended or moved while the daemon was down).
    async fn sweep(&self, assigned: HashSet<String>);

    /// Applies each overlay view the managers describe (networks, peers,
    /// names), until the sender goes.
    async fn follow_overlay(&self, views: watch::Receiver<OverlayView>);

    /// Sends the logs a `service logs` subscription asks for to `manager`.
    async fn publish_logs(&self, tls: ClientTls, manager: String, subscription: pb::LogSubscription);
}

/// Stops (gracefully) and removes each container, all at once.
pub async fn stop_and_remove_all(backend: &dyn TaskBackend, container_ids: Vec<String>, plan: &StopPlan) {
    let removals = container_ids.into_iter().map(|id| async move {
        if let Err(error) = backend.stop(&id, plan).await {
            tracing::warn!(container = %id, %error, "stopping a task container; killing it");
        }
        if let Err(error) = backend.remove(&id).await {
            tracing::warn!(container = %id, %error, "removing a task container");
        }
    });
    futures::future::join_all(removals).await;
}

impl TaskRuntime {
    fn dataplane(&self) -> Option<&Arc<Dataplane>> {
        self.networks.as_ref()
    }

    fn files_root(&self) -> TaskFilesRoot {
        TaskFilesRoot(self.task_files.clone())
    }
}

/// A real node: containers from the runtime, images from its store,
/// secrets on tmpfs, sandboxes on the node's bridges and overlay.
#[async_trait]
impl TaskBackend for TaskRuntime {
    fn task_containers(&self) -> Vec<TaskContainer> {
        task_containers(&self.containers)
    }

    async fn pull(&self, assignment: &pb::Assignment) -> Result<(), String> {
        let spec = assignment.spec.as_ref();
        let reference = spec.map(|s| s.image.as_str()).unwrap_or_default();
        ensure_image(&self.images, reference, spec.and_then(|s| s.registry_auth.as_ref())).await.map(drop)
    }

    async fn create(&self, assignment: &pb::Assignment, node_id: &str, files: &HeldFiles) -> Result<String, Rejection> {
        let spec = assignment.spec.clone().unwrap_or_default();
        // Pulled already: this finds the local copy.
        let image = ensure_image(&self.images, &spec.image, spec.registry_auth.as_ref())
            .await
            .map_err(|e| Rejection::new("preparing failed", e))?;
        let mut request = create_request(assignment, node_id).map_err(|e| Rejection::new("invalid task", e))?;
        let mounts = self
            .files_root()
            .prepare(&assignment.task_id, &spec, files)
            .await
            .map_err(|e| Rejection::new("placing the secrets and configs failed", e))?;
        request.mounts.extend(mounts);
        match task_network::prepare(self.dataplane(), assignment).await {
            Ok(Some(prepared)) => {
                request.network_namespace = Some(prepared.netns);
                // A mount of the task's own at /etc/resolv.conf wins, as in docker.
                if !request.mounts.iter().any(|m| m.target() == RESOLV_CONF) {
                    request.mounts.push(MountSpec::Bind { source: prepared.resolv_conf, target: RESOLV_CONF.into(), readonly: true });
                }
            }
            Ok(None) => {}
            Err(error) => {
                self.release(&assignment.task_id).await;
                return Err(Rejection::new("preparing the network failed", error));
            }
        }
        let input = ImageInput::from_store(&image, &spec.image);
        match self.containers.create(request, &input).await {
            Ok(id) => Ok(id),
            Err(error) => {
                self.release(&assignment.task_id).await;
                Err(Rejection::new("creating the container failed", error.to_string()))
            }
        }
    }

    async fn start(&self, container_id: &str) -> Result<(), String> {
        self.containers.start(container_id).await.map_err(|e| e.to_string())
    }

    fn exit_of(&self, container_id: &str) -> Option<ExitInfo> {
        exit_of(&self.containers, container_id)
    }

    fn started_at(&self, container_id: &str) -> Option<String> {
        self.containers.inspect(container_id).ok().and_then(|d| d.state.started_at)
    }

    fn health_watch(&self, container_id: &str) -> Option<watch::Receiver<Health>> {
        self.containers.health_watch(container_id)
    }

    async fn wait(&self, container_id: &str) {
        let _ = self.containers.wait(container_id).await;
    }

    async fn stop(&self, container_id: &str, plan: &StopPlan) -> Result<(), String> {
        stop_container(&self.containers, container_id, plan).await
    }

    async fn remove(&self, container_id: &str) -> Result<(), String> {
        remove_container(&self.containers, container_id).await
    }

    async fn repair_network(&self, assignment: &pb::Assignment) -> Result<(), String> {
        // Attaching is idempotent: on an adopted container it only
        // repairs what drifted (a veth off its bridge, a lost address).
        task_network::prepare(self.dataplane(), assignment).await.map(drop)
    }

    async fn release(&self, task_id: &str) {
        task_network::release(self.dataplane(), task_id).await;
        self.files_root().release(task_id).await;
    }

    async fn sweep(&self, assigned: HashSet<String>) {
        self.files_root().sweep(&assigned).await;
        let Some(networks) = self.dataplane() else { return };
        let sandboxes = match networks.sandbox_ids().await {
            Ok(sandboxes) => sandboxes,
            Err(error) => {
                tracing::warn!(%error, "listing task sandboxes");
                return;
            }
        };
        for sandbox in sandboxes {
            if let Some(task) = task_network::task_of_sandbox(&sandbox).filter(|t| !assigned.contains(*t)) {
                tracing::info!(task = %task, "removing the sandbox of a task no longer assigned here");
                task_network::release(Some(networks), task).await;
            }
        }
    }

    async fn follow_overlay(&self, views: watch::Receiver<OverlayView>) {
        match self.dataplane() {
            Some(dataplane) => task_network::apply_views(dataplane.clone(), views).await,
            // No data plane: tasks on networks are rejected at create.
            None => std::future::pending().await,
        }
    }

    async fn publish_logs(&self, tls: ClientTls, manager: String, subscription: pb::LogSubscription) {
        super::logs::publish_subscription(self.containers.clone(), tls, manager, subscription).await;
    }
}
