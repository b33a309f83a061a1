//! `container pause` / `unpause`: the freezer cgroup stops and resumes
//! every process of a container at once. The state lives in the cgroup
//! itself, so it survives a daemon restart with nothing recorded.

use super::*;

impl ContainerManager {
    pub async fn pause(&self, name: &str) -> Result<()> {
        let entry = self.find(name)?;
        let (_, cgroup) = self.running_cgroup(&entry)?;
        if cgroup.is_frozen() {
            return Err(ContainerError::InvalidRequest(format!("container {} is already paused", entry.record.name)));
        }
        tokio::task::spawn_blocking(move || cgroup.set_frozen(true))
            .await
            .map_err(|e| ContainerError::Internal(e.to_string()))?
            .map_err(|e| ContainerError::Internal(format!("cannot pause container {}: {e}", entry.record.name)))
    }

    pub async fn unpause(&self, name: &str) -> Result<()> {
        let entry = self.find(name)?;
        let (_, cgroup) = self.running_cgroup(&entry)?;
        if !cgroup.is_frozen() {
            return Err(ContainerError::InvalidRequest(format!("container {} is not paused", entry.record.name)));
        }
        tokio::task::spawn_blocking(move || cgroup.set_frozen(false))
            .await
            .map_err(|e| ContainerError::Internal(e.to_string()))?
            .map_err(|e| ContainerError::Internal(format!("cannot unpause container {}: {e}", entry.record.name)))
    }

    /// Thaws a paused container before it is signalled: frozen processes
    /// would not act on a signal, SIGKILL included, until thawed.
    pub(super) fn thaw_for_signal(&self, entry: &Entry) {
        if let Some(cgroup) = entry.cgroup() {
            if cgroup.is_frozen() {
                if let Err(e) = cgroup.set_frozen(false) {
                    tracing::warn!(container = %entry.record.name, error = %e, "cannot thaw a paused container to signal it");
                }
            }
        }
    }
}

/// True if `entry` runs and is paused (for `ls` and `inspect`).
pub(super) fn is_paused(entry: &Entry) -> bool {
    matches!(*entry.phase.borrow(), Phase::Running(_)) && entry.cgroup().is_some_and(|c| c.is_frozen())
}
