//! The container's cgroup as files: libcontainer (through libcgroups)
//! creates, limits and deletes it; this module reads the OOM count and
//! sweeps up what a crashed shim left behind, on v1, v2 and hybrid hosts.

use std::path::{Path, PathBuf};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// `<parent>/<id>` as the OCI spec's absolute `cgroupsPath`.
pub fn container_path(parent: &str, id: &str) -> String {
    format!("/{}/{id}", parent.trim_matches('/'))
}

/// Every directory the cgroup `path` may have: one per v1 hierarchy
/// (/sys/fs/cgroup/<controller>/path), the hybrid unified one, or the v2
/// one on a pure v2 host. Only those that exist.
pub fn existing_dirs(path: &str) -> Vec<PathBuf> {
    let relative = path.trim_start_matches('/');
    if Path::new(CGROUP_ROOT).join("cgroup.controllers").exists() {
        // Pure v2: one tree.
        let dir = Path::new(CGROUP_ROOT).join(relative);
        return if dir.is_dir() { vec![dir] } else { Vec::new() };
    }
    let Ok(hierarchies) = std::fs::read_dir(CGROUP_ROOT) else { return Vec::new() };
    hierarchies
        .flatten()
        // Co-mounted controllers appear as symlinks (cpu -> cpu,cpuacct);
        // the real directory is listed under its own name too.
        .filter(|h| h.file_type().is_ok_and(|t| t.is_dir()))
        .map(|h| h.path().join(relative))
        .filter(|dir| dir.is_dir())
        .collect()
}

/// How often the kernel's OOM killer struck in the cgroup: v1's
/// `oom_kill` line in memory.oom_control (kernel 4.13+), or v2's
/// memory.events.
pub fn oom_kills(path: &str) -> u64 {
    let relative = path.trim_start_matches('/');
    let candidates = [
        Path::new(CGROUP_ROOT).join("memory").join(relative).join("memory.oom_control"),
        Path::new(CGROUP_ROOT).join(relative).join("memory.events"),
        Path::new(CGROUP_ROOT).join("unified").join(relative).join("memory.events"),
    ];
    candidates
        .iter()
        .filter_map(|file| std::fs::read_to_string(file).ok())
        .filter_map(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("oom_kill "))
                .and_then(|count| count.trim().parse::<u64>().ok())
        })
        .max()
        .unwrap_or(0)
}

/// Kills whatever still runs in the cgroup and removes its directories
/// (deepest first). For a container whose shim died before cleaning up;
/// normally libcontainer's delete does this.
pub fn remove(path: &str) {
    for dir in existing_dirs(path) {
        kill_all(&dir);
        remove_tree(&dir);
    }
}

fn kill_all(dir: &Path) {
    for _ in 0..50 {
        let pids = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        let pids: Vec<i32> = pids.lines().filter_map(|p| p.trim().parse().ok()).collect();
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
        // Killed processes leave the cgroup once the kernel has torn them
        // down; a short pause, bounded, only on this rare path.
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

fn remove_tree(dir: &Path) {
    if let Ok(children) = std::fs::read_dir(dir) {
        for child in children.flatten() {
            if child.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&child.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}
