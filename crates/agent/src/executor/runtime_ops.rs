//! The executor's calls into this node's runtime: finding task
//! containers, getting a task's image, stopping and removing containers.
//! Errors come back as the runtime's one-sentence messages.

use std::sync::Arc;
use std::time::Duration;

use shoal_runtime::container::{ContainerError, ContainerManager, ExitInfo, Status};
use shoal_runtime::image::{ignore_progress, Image, ImageStore, Reference, RegistryAuth};

use super::reconcile::TaskContainer;
use super::task_container::{StopPlan, DEFAULT_STOP_GRACE};

/// How long a container may take to go after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// Every swarm task container on this node, running or not.
pub fn task_containers(containers: &ContainerManager) -> Vec<TaskContainer> {
    TaskContainer::from_summaries(containers.list(true))
}

/// The containers of one task.
#[cfg(test)]
pub fn containers_of(containers: &ContainerManager, task_id: &str) -> Vec<TaskContainer> {
    task_containers(containers).into_iter().filter(|c| c.task_id == task_id).collect()
}

/// The task's image: the local one if this node has it, else pulled. Tasks
/// name their image pinned to a digest, so a local copy is the right one;
/// several tasks pulling the same image share one pull in the store.
/// `login` is the service's `--with-registry-auth` credentials, if any.
pub async fn ensure_image(images: &ImageStore, reference: &str, login: Option<&shoal_proto::pb::RegistryCredentials>) -> Result<Image, String> {
    if reference.is_empty() {
        return Err("the task names no image".into());
    }
    if let Some(image) = images.get(reference).await {
        return Ok(image);
    }
    let parsed = Reference::parse(reference).map_err(|e| e.to_string())?;
    let auth = match login.filter(|l| !l.username.is_empty()) {
        Some(login) => RegistryAuth::Basic { username: login.username.clone(), password: login.password.clone() },
        None => RegistryAuth::Anonymous,
    };
    images.pull(&parsed, &auth, &ignore_progress).await.map_err(|e| e.to_string())
}

/// How the container ended, or `None` while it has not.
pub fn exit_of(containers: &ContainerManager, container_id: &str) -> Option<ExitInfo> {
    let state = containers.inspect(container_id).ok()?.state;
    if !matches!(state.status, Status::Exited | Status::Dead) {
        return None;
    }
    Some(ExitInfo {
        code: state.exit_code.unwrap_or(-1),
        oom_killed: state.oom_killed,
        finished_at: state.finished_at.unwrap_or_default(),
        error: state.error,
    })
}

fn is_running(containers: &ContainerManager, container_id: &str) -> bool {
    containers.inspect(container_id).is_ok_and(|d| d.state.status == Status::Running)
}

/// Stops the container as the task asks: its stop signal (the
/// container's own when it names none), then SIGKILL after the grace
/// period. A container that is not running is left as it is.
pub async fn stop_container(containers: &ContainerManager, container_id: &str, plan: &StopPlan) -> Result<(), String> {
    if !is_running(containers, container_id) {
        return Ok(());
    }
    let Some(signal) = &plan.signal else {
        return containers.stop(container_id, plan.grace).await.map_err(|e| e.to_string());
    };
    signal_unless_gone(containers, container_id, signal).await?;
    if tokio::time::timeout(plan.grace, containers.wait(container_id)).await.is_ok() {
        return Ok(());
    }
    signal_unless_gone(containers, container_id, "KILL").await?;
    match tokio::time::timeout(KILL_WAIT, containers.wait(container_id)).await {
        Ok(_) => Ok(()),
        Err(_) => Err(format!("container {container_id} did not stop after SIGKILL")),
    }
}

async fn signal_unless_gone(containers: &ContainerManager, container_id: &str, signal: &str) -> Result<(), String> {
    match containers.kill(container_id, signal).await {
        Ok(()) | Err(ContainerError::NotRunning(_)) | Err(ContainerError::NotFound(_)) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

/// Removes the container (killing it if it still runs); one already gone
/// is fine.
pub async fn remove_container(containers: &ContainerManager, container_id: &str) -> Result<(), String> {
    match containers.remove(container_id, true).await {
        Ok(()) | Err(ContainerError::NotFound(_)) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

/// Stops (gracefully) and removes each container, all at once.
pub async fn stop_and_remove_all(containers: &Arc<ContainerManager>, container_ids: Vec<String>, plan: &StopPlan) {
    let removals = container_ids.into_iter().map(|id| async move {
        if let Err(error) = stop_container(containers, &id, plan).await {
            tracing::warn!(container = %id, %error, "stopping a task container; killing it");
        }
        if let Err(error) = remove_container(containers, &id).await {
            tracing::warn!(container = %id, %error, "removing a task container");
        }
    });
    futures::future::join_all(removals).await;
}

/// Stops and removes every swarm task container on this node: the node
/// left the swarm, and nothing will look after them any more.
pub async fn remove_all_task_containers(containers: &Arc<ContainerManager>) {
    let ids: Vec<String> = task_containers(containers).into_iter().map(|c| c.container_id).collect();
    if ids.is_empty() {
        return;
    }
    tracing::info!(containers = ids.len(), "removing the swarm's task containers");
    let plan = StopPlan { signal: None, grace: DEFAULT_STOP_GRACE };
    stop_and_remove_all(containers, ids, &plan).await;
}
