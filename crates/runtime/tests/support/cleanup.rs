//! What a runtime test leaves behind, and the sweep after a failed one:
//! shared by the container and health-check tests.

use std::path::{Path, PathBuf};
use std::time::Duration;

pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Mount points under `dir`.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|m| m.starts_with(&prefix))
        .collect()
}

pub fn cgroup_hierarchies() -> Vec<PathBuf> {
    std::fs::read_dir(CGROUP_ROOT)
        .map(|d| d.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// Container cgroups under the test's parent, in every hierarchy.
pub fn container_cgroups(parent: &str) -> Vec<PathBuf> {
    cgroup_hierarchies()
        .into_iter()
        .filter_map(|h| std::fs::read_dir(h.join(parent)).ok())
        .flat_map(|d| d.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()).collect::<Vec<_>>())
        .collect()
}

/// After a failure: kill what runs in the test's cgroups, unmount its
/// mounts under `dir` and remove its cgroup directories.
pub fn sweep(dir: &Path, cgroup_parent: &str) {
    for cgroup in container_cgroups(cgroup_parent) {
        let procs = std::fs::read_to_string(cgroup.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines().filter_map(|p| p.parse().ok()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
    std::thread::sleep(Duration::from_millis(50));
    for mount in mounts_under(dir).iter().rev() {
        let _ = nix::mount::umount2(mount.as_str(), nix::mount::MntFlags::MNT_DETACH);
    }
    for cgroup in container_cgroups(cgroup_parent) {
        let _ = std::fs::remove_dir(cgroup);
    }
    for hierarchy in cgroup_hierarchies() {
        let _ = std::fs::remove_dir(hierarchy.join(cgroup_parent));
    }
}
