//! Starting an exited container again (`docker start` of a stopped
//! container, `restart`): the same root filesystem, writable layer and
//! log; the network namespace and the bind sources that went with the old
//! one are the caller's to prepare anew and hand in.

use oci_spec::runtime::Spec;

use super::*;

/// What changes between two runs of a container.
#[derive(Debug, Clone, Default)]
pub struct Rebind {
    /// The network namespace to join now; None keeps the spec's (a
    /// container with a fresh namespace of its own each run has none).
    pub network_namespace: Option<PathBuf>,
    /// (target in the container, source): a bind mount at the target gets
    /// the new source if its old one is gone (a file of the old sandbox,
    /// such as its resolv.conf; a user's own source is kept).
    pub binds: Vec<(String, PathBuf)>,
}

impl ContainerManager {
    /// Starts the exited (or created) container `name` again; returns once
    /// its process runs.
    pub async fn start_again(self: &Arc<Self>, name: &str, rebind: Rebind) -> Result<()> {
        self.start_again_with(name, rebind, false).await.map(drop)
    }

    /// [`Self::start_again`], attached from before the process runs.
    pub async fn start_again_attached(self: &Arc<Self>, name: &str, rebind: Rebind) -> Result<crate::container::Attachment> {
        self.start_again_with(name, rebind, true).await?.ok_or_else(|| {
            ContainerError::Internal(format!("container {name} started, but its shim could not be attached to"))
        })
    }

    async fn start_again_with(self: &Arc<Self>, name: &str, rebind: Rebind, attach: bool) -> Result<Option<crate::container::Attachment>> {
        let entry = self.find(name)?;
        if matches!(*entry.phase.borrow(), Phase::Running(_)) {
            return Err(ContainerError::InvalidRequest(format!("container {} is already running", entry.record.name)));
        }
        if matches!(*entry.phase.borrow(), Phase::Exited(_)) {
            rewrite_spec(&entry, &rebind)?;
            for file in [EXIT_FILE, STARTED_FILE] {
                let _ = std::fs::remove_file(entry.dir.join(file));
            }
            entry.log_closed.send_replace(false);
            entry.phase.send_replace(Phase::Created);
        }
        self.start_with(&entry.record.id, attach).await
    }
}

fn rewrite_spec(entry: &Entry, rebind: &Rebind) -> Result<()> {
    let path = entry.dir.join("config.json");
    let mut spec = Spec::load(&path).map_err(|e| ContainerError::Internal(format!("the OCI bundle of container {} is unreadable: {e}", entry.record.name)))?;
    if let Some(netns) = &rebind.network_namespace {
        if let Some(linux) = spec.linux_mut() {
            if let Some(namespaces) = linux.namespaces_mut() {
                for namespace in namespaces.iter_mut() {
                    if namespace.typ() == oci_spec::runtime::LinuxNamespaceType::Network {
                        namespace.set_path(Some(netns.clone()));
                    }
                }
            }
        }
    }
    if let Some(mounts) = spec.mounts_mut() {
        for mount in mounts.iter_mut() {
            let Some((_, source)) = rebind.binds.iter().find(|(target, _)| mount.destination() == Path::new(target)) else { continue };
            if mount.source().as_ref().is_some_and(|old| !old.exists()) {
                mount.set_source(Some(source.clone()));
            }
        }
    }
    spec.save(&path).map_err(|e| ContainerError::Internal(format!("cannot update the OCI bundle of container {}: {e}", entry.record.name)))
}
