//! The cgroups a host's containers lived in. Each dev-cluster daemon puts
//! its containers under a cgroup named after its network namespace (see
//! `daemon.rs`); containers run in namespaces of their own, so only their
//! cgroup finds them once their daemon and shims are gone.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
const EMPTY_TIMEOUT: Duration = Duration::from_secs(5);

/// Kills every process under cgroup `parent` (in each v1 hierarchy and the
/// v2 tree) and removes the cgroups. Safe to repeat.
pub async fn remove_tree(parent: &str) -> anyhow::Result<()> {
    let mut tops: Vec<PathBuf> = std::fs::read_dir(CGROUP_ROOT)
        .map(|entries| entries.flatten().map(|e| e.path().join(parent)).collect())
        .unwrap_or_default();
    tops.push(Path::new(CGROUP_ROOT).join(parent));
    for top in tops.into_iter().filter(|t| t.is_dir()) {
        let mut dirs = Vec::new();
        collect(&top, &mut dirs);
        // Deepest first: a cgroup can only go once its children have.
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for dir in dirs {
            empty(&dir).await?;
            std::fs::remove_dir(&dir).with_context(|| format!("could not remove cgroup {}", dir.display()))?;
        }
    }
    Ok(())
}

fn collect(dir: &Path, found: &mut Vec<PathBuf>) {
    found.push(dir.to_path_buf());
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            collect(&entry.path(), found);
        }
    }
}

/// SIGKILLs the cgroup's processes until none is left.
async fn empty(dir: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + EMPTY_TIMEOUT;
    loop {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        let pids: Vec<i32> = procs.lines().filter_map(|p| p.trim().parse().ok()).collect();
        if pids.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!("processes {pids:?} in cgroup {} would not die", dir.display());
        }
        for pid in pids {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
