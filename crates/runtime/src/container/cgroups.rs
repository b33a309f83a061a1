//! A container's cgroup as files, on v1, v2 and hybrid hosts: the shim
//! creates it and writes the limits before the container exists
//! ([`Cgroup::create`]); the container's first process moves itself in
//! ([`Cgroup::join`]); the shim reads the OOM count and removes it when
//! the container has ended ([`Cgroup::oom_kills`], [`Cgroup::remove`]);
//! the daemon sweeps up after a shim that died ([`remove`]).
//!
//! Why not libcgroups: its v1 manager re-reads /proc/self/mountinfo once
//! per controller each time it is built (about 2.5 ms), and it moves the
//! container in by writing the pid to `cgroup.procs`, which makes the
//! kernel wait for an RCU grace period (5-16 ms here) on every container
//! start. A single-threaded process writing `0` to each v1 `tasks` file
//! (or created straight into a v2 cgroup with CLONE_INTO_CGROUP) takes
//! the fast path: about 0.4 ms for all hierarchies.

use std::fs::File;
use std::path::{Path, PathBuf};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// CFS period the `--cpus` quota is expressed in, as docker uses.
pub const CPU_PERIOD_US: u64 = 100_000;

/// Devices a container may use, as runc and Docker allow by default:
/// `type major:minor access` lines for the v1 devices controller.
const ALLOWED_DEVICES: [&str; 12] = [
    "c 1:3 rwm",    // null
    "c 1:5 rwm",    // zero
    "c 1:7 rwm",    // full
    "c 5:0 rwm",    // tty
    "c 1:8 rwm",    // random
    "c 1:9 rwm",    // urandom
    "c *:* m",      // mknod of any character device (but not its use)
    "b *:* m",      // mknod of any block device (but not its use)
    "c 5:1 rwm",    // console
    "c 136:* rwm",  // pseudo-terminals
    "c 5:2 rwm",    // ptmx
    "c 10:200 rwm", // tun
];

/// `<parent>/<id>` as the OCI spec's absolute `cgroupsPath`.
/// How long freezing or thawing may take before `pause` gives up.
const FREEZE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

pub fn container_path(parent: &str, id: &str) -> String {
    format!("/{}/{id}", parent.trim_matches('/'))
}

/// The limits a container's cgroup enforces.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    pub memory_bytes: Option<u64>,
    /// CFS quota per [`CPU_PERIOD_US`].
    pub cpu_quota_us: Option<u64>,
    pub pids: Option<i64>,
}

/// How this host mounts cgroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// One v2 tree at /sys/fs/cgroup.
    Unified,
    /// v1 hierarchies (legacy or hybrid): each mount point with the
    /// controllers it carries (`cpu`, `cpu,cpuacct`, ...). Named
    /// hierarchies (name=systemd) and the hybrid v2 tree hold no
    /// controllers and are left alone, as runc's v1 manager does.
    V1(Vec<Hierarchy>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    pub mount_point: PathBuf,
    /// The mount's controllers as its options name them, e.g. `cpu,cpuacct`.
    pub controllers: String,
}

impl Hierarchy {
    fn has(&self, controller: &str) -> bool {
        self.controllers.split(',').any(|c| c == controller)
    }
}

/// The host's cgroups as `info` names them: v2 (one unified tree),
/// hybrid (v1 controllers beside an empty v2 tree) or v1.
pub fn layout_name() -> &'static str {
    match Layout::detect() {
        Ok(Layout::Unified) => "v2",
        Ok(Layout::V1(_)) if Path::new(CGROUP_ROOT).join("unified/cgroup.controllers").exists() => "hybrid",
        Ok(Layout::V1(_)) => "v1",
        Err(_) => "unknown",
    }
}

impl Layout {
    /// Read from /proc/self/mountinfo (once per shim).
    pub fn detect() -> std::io::Result<Layout> {
        if Path::new(CGROUP_ROOT).join("cgroup.controllers").exists() {
            return Ok(Layout::Unified);
        }
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
        Ok(Layout::V1(parse_v1_hierarchies(&mountinfo)))
    }
}

/// The controllers a v1 cgroup mount's options may name (the other
/// options are flags such as `rw`, `xattr` or `name=systemd`).
const V1_CONTROLLERS: [&str; 14] = [
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "blkio",
    "perf_event",
    "net_prio",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
];

/// The v1 controller hierarchies in a mountinfo text.
fn parse_v1_hierarchies(mountinfo: &str) -> Vec<Hierarchy> {
    let mut hierarchies: Vec<Hierarchy> = Vec::new();
    for line in mountinfo.lines() {
        // ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS [OPTIONAL...] - TYPE SOURCE SUPER_OPTIONS
        let Some((before, after)) = line.split_once(" - ") else {
            continue;
        };
        let mut after = after.split(' ');
        if after.next() != Some("cgroup") {
            continue;
        }
        let Some(mount_point) = before.split(' ').nth(4) else {
            continue;
        };
        let super_options = after.nth(1).unwrap_or_default();
        let controllers: Vec<&str> = super_options
            .split(',')
            .filter(|o| V1_CONTROLLERS.contains(o))
            .collect();
        let mount_point = PathBuf::from(mount_point.replace("\\040", " "));
        if controllers.is_empty() || hierarchies.iter().any(|h| h.mount_point == mount_point) {
            continue;
        }
        hierarchies.push(Hierarchy {
            mount_point,
            controllers: controllers.join(","),
        });
    }
    hierarchies
}

/// A container's cgroup on this host: one directory per v1 hierarchy, or
/// one v2 directory.
#[derive(Debug)]
pub struct Cgroup {
    pub layout: Layout,
    dirs: Vec<PathBuf>,
}

impl Cgroup {
    /// The directories of `path` (`/<parent>/<id>`) in `layout`, made or not.
    fn at(path: &str, layout: Layout) -> Cgroup {
        let relative = path.trim_start_matches('/');
        let dirs = match &layout {
            Layout::Unified => vec![Path::new(CGROUP_ROOT).join(relative)],
            Layout::V1(hierarchies) => hierarchies.iter().map(|h| h.mount_point.join(relative)).collect(),
        };
        Cgroup { layout, dirs }
    }

    /// How often the kernel's OOM killer struck in the cgroup: the
    /// `oom_kill` line of v1's memory.oom_control (kernel 4.13+) or of
    /// v2's memory.events.
    /// The cgroup of a container that exists (for `exec` to join).
    pub fn existing(path: &str) -> Result<Cgroup, String> {
        let layout = Layout::detect().map_err(|e| format!("cannot read this host's cgroup mounts: {e}"))?;
        Ok(Cgroup::at(path, layout))
    }

    /// Freezes (or thaws) every process in the cgroup, as `container
    /// pause` / `unpause` do, and returns once the kernel reports it done.
    pub fn set_frozen(&self, frozen: bool) -> Result<(), String> {
        let (file, value, done) = match &self.layout {
            Layout::Unified => {
                (self.dirs[0].join("cgroup.freeze"), if frozen { "1" } else { "0" }, if frozen { "frozen 1" } else { "frozen 0" })
            }
            Layout::V1(_) => {
                let dir = self.freezer_dir().ok_or("this host mounts no freezer cgroup controller, so containers cannot be paused")?;
                (dir.join("freezer.state"), if frozen { "FROZEN" } else { "THAWED" }, if frozen { "FROZEN" } else { "THAWED" })
            }
        };
        let deadline = std::time::Instant::now() + FREEZE_TIMEOUT;
        loop {
            // v1 may stay FREEZING while a task is busy in the kernel;
            // writing again retries, as runc does.
            std::fs::write(&file, value).map_err(|e| format!("cannot write {}: {e}", file.display()))?;
            if self.freezer_reports(done) {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                return Err(format!("the container's processes did not {} within {FREEZE_TIMEOUT:?}", if frozen { "freeze" } else { "thaw" }));
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// The host pids of every process in the cgroup.
    pub fn processes(&self) -> Vec<i32> {
        // Every v1 hierarchy holds the same processes; any one will do.
        let Some(dir) = self.dirs.first() else { return Vec::new() };
        let text = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        let mut pids: Vec<i32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
        pids.sort_unstable();
        pids
    }

    /// True while the cgroup's processes are frozen (or being frozen).
    pub fn is_frozen(&self) -> bool {
        match &self.layout {
            Layout::Unified => std::fs::read_to_string(self.dirs[0].join("cgroup.freeze")).is_ok_and(|v| v.trim() == "1"),
            Layout::V1(_) => self
                .freezer_dir()
                .and_then(|d| std::fs::read_to_string(d.join("freezer.state")).ok())
                .is_some_and(|state| state.trim() != "THAWED"),
        }
    }

    fn freezer_reports(&self, done: &str) -> bool {
        match &self.layout {
            Layout::Unified => {
                std::fs::read_to_string(self.dirs[0].join("cgroup.events")).is_ok_and(|events| events.lines().any(|l| l == done))
            }
            Layout::V1(_) => self
                .freezer_dir()
                .and_then(|d| std::fs::read_to_string(d.join("freezer.state")).ok())
                .is_some_and(|state| state.trim() == done),
        }
    }

    /// The directory holding `controller`'s files: the one v2 directory,
    /// or the v1 hierarchy that carries it.
    pub fn controller_dir(&self, controller: &str) -> Option<&Path> {
        match &self.layout {
            Layout::Unified => self.dirs.first().map(PathBuf::as_path),
            Layout::V1(hierarchies) => {
                hierarchies.iter().zip(&self.dirs).find(|(h, _)| h.has(controller)).map(|(_, dir)| dir.as_path())
            }
        }
    }

    fn freezer_dir(&self) -> Option<&PathBuf> {
        let Layout::V1(hierarchies) = &self.layout else { return None };
        hierarchies.iter().zip(&self.dirs).find(|(h, _)| h.has("freezer")).map(|(_, dir)| dir)
    }

    pub fn oom_kills(&self) -> u64 {
        let file = match &self.layout {
            Layout::Unified => Some(self.dirs[0].join("memory.events")),
            Layout::V1(hierarchies) => {
                hierarchies.iter().zip(&self.dirs).find(|(h, _)| h.has("memory")).map(|(_, dir)| dir.join("memory.oom_control"))
            }
        };
        let text = file.and_then(|f| std::fs::read_to_string(f).ok()).unwrap_or_default();
        text.lines().find_map(|line| line.strip_prefix("oom_kill ")).and_then(|count| count.trim().parse().ok()).unwrap_or(0)
    }

    /// Creates the directories of `path` (`/<parent>/<id>`) and writes the
    /// limits; a failure removes what was made.
    pub fn create(path: &str, resources: &Resources) -> Result<Cgroup, String> {
        let layout =
            Layout::detect().map_err(|e| format!("cannot read this host's cgroup mounts: {e}"))?;
        let cgroup = Cgroup::at(path, layout);
        if cgroup.dirs.is_empty() {
            return Err("this host mounts no cgroup controllers; mount cgroup v1 controllers or cgroup2 at /sys/fs/cgroup".into());
        }
        if let Err(e) = cgroup.populate(resources) {
            cgroup.remove();
            return Err(e);
        }
        Ok(cgroup)
    }

    fn populate(&self, resources: &Resources) -> Result<(), String> {
        match &self.layout {
            Layout::Unified => {
                let dir = &self.dirs[0];
                enable_v2_controllers(dir)?;
                make_dir(dir)?;
                if let Some(memory) = resources.memory_bytes {
                    write(dir, "memory.max", &memory.to_string())?;
                    // No swap on top of the limit, as `--memory` alone means.
                    write_if_present(dir, "memory.swap.max", "0")?;
                }
                if let Some(quota) = resources.cpu_quota_us {
                    write(dir, "cpu.max", &format!("{quota} {CPU_PERIOD_US}"))?;
                }
                if let Some(pids) = resources.pids {
                    write(dir, "pids.max", &pids_value(pids))?;
                }
            }
            Layout::V1(hierarchies) => {
                for (hierarchy, dir) in hierarchies.iter().zip(&self.dirs) {
                    make_dir(dir)?;
                    if hierarchy.has("cpuset") {
                        // A new cpuset has no CPUs or memory nodes, and
                        // nothing may join it until it has.
                        inherit_cpuset(dir, &hierarchy.mount_point)?;
                    }
                    if hierarchy.has("memory") {
                        if let Some(memory) = resources.memory_bytes {
                            write(dir, "memory.limit_in_bytes", &memory.to_string())?;
                            // Memory plus swap equal to the limit: no swap on
                            // top (the file exists only with swap accounting).
                            write_if_present(
                                dir,
                                "memory.memsw.limit_in_bytes",
                                &memory.to_string(),
                            )?;
                        }
                    }
                    if hierarchy.has("cpu") {
                        if let Some(quota) = resources.cpu_quota_us {
                            write(dir, "cpu.cfs_period_us", &CPU_PERIOD_US.to_string())?;
                            write(dir, "cpu.cfs_quota_us", &quota.to_string())?;
                        }
                    }
                    if hierarchy.has("pids") {
                        if let Some(pids) = resources.pids {
                            write(dir, "pids.max", &pids_value(pids))?;
                        }
                    }
                    if hierarchy.has("devices") {
                        write(dir, "devices.deny", "a *:* rwm")?;
                        for rule in ALLOWED_DEVICES {
                            write(dir, "devices.allow", rule)?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// A directory to hand to clone3's CLONE_INTO_CGROUP (v2 only): the
    /// child then starts inside the cgroup, with no migration at all.
    pub fn v2_dir(&self) -> Option<File> {
        match self.layout {
            Layout::Unified => File::open(&self.dirs[0]).ok(),
            Layout::V1(_) => None,
        }
    }

    /// Moves the calling process into the cgroup. Must run in a
    /// single-threaded process (the container's first one): writing `0`
    /// to a v1 `tasks` file moves only the calling thread, which is what
    /// spares the kernel's grace-period wait.
    pub fn join(&self) -> Result<(), String> {
        match self.layout {
            // Created there by CLONE_INTO_CGROUP when the kernel has it.
            Layout::Unified => {
                let dir = &self.dirs[0];
                let procs = dir.join("cgroup.procs");
                let mine = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
                let relative = dir.strip_prefix(CGROUP_ROOT).unwrap_or(dir);
                if mine.lines().any(|l| {
                    l.strip_prefix("0::")
                        .is_some_and(|p| Path::new(p) == Path::new("/").join(relative))
                }) {
                    return Ok(());
                }
                std::fs::write(&procs, "0")
                    .map_err(|e| format!("cannot join cgroup {}: {e}", dir.display()))
            }
            Layout::V1(_) => {
                for dir in &self.dirs {
                    std::fs::write(dir.join("tasks"), "0")
                        .map_err(|e| format!("cannot join cgroup {}: {e}", dir.display()))?;
                }
                Ok(())
            }
        }
    }

    /// Removes the directories once the container has ended. Its pid
    /// namespace died with its init, so they are normally empty already;
    /// whatever is still inside is killed first.
    pub fn remove(&self) {
        for dir in &self.dirs {
            if std::fs::remove_dir(dir).is_err() && dir.exists() {
                kill_all(dir);
                remove_tree(dir);
            }
        }
    }
}

fn pids_value(pids: i64) -> String {
    if pids > 0 {
        pids.to_string()
    } else {
        "max".into()
    }
}

fn make_dir(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create cgroup {}: {e}", dir.display()))
}

fn write(dir: &Path, file: &str, value: &str) -> Result<(), String> {
    std::fs::write(dir.join(file), value)
        .map_err(|e| format!("cannot set {file} to {value} in {}: {e}", dir.display()))
}

fn write_if_present(dir: &Path, file: &str, value: &str) -> Result<(), String> {
    if dir.join(file).exists() {
        write(dir, file, value)?;
    }
    Ok(())
}

/// Copies `cpuset.cpus` and `cpuset.mems` from the nearest ancestor that
/// has them into `dir` and every empty ancestor between.
fn inherit_cpuset(dir: &Path, mount_point: &Path) -> Result<(), String> {
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let mut empty = Vec::new();
        let mut current = Some(dir);
        let mut value = String::new();
        while let Some(d) = current {
            value = std::fs::read_to_string(d.join(file))
                .unwrap_or_default()
                .trim()
                .to_string();
            if !value.is_empty() || d == mount_point {
                break;
            }
            empty.push(d);
            current = d.parent();
        }
        for d in empty.into_iter().rev() {
            write(d, file, &value)?;
        }
    }
    Ok(())
}

/// Turns on the cpu, memory and pids controllers for the children of every
/// ancestor of `dir` (v2 hands a controller down only when asked).
fn enable_v2_controllers(dir: &Path) -> Result<(), String> {
    let root = Path::new(CGROUP_ROOT);
    let Ok(relative) = dir.strip_prefix(root) else {
        return Ok(());
    };
    let mut current = root.to_path_buf();
    for component in relative.parent().into_iter().flat_map(|p| p.components()) {
        enable_in(&current)?;
        current.push(component);
        make_dir(&current)?;
    }
    enable_in(&current)
}

fn enable_in(dir: &Path) -> Result<(), String> {
    let available = std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    let wanted: Vec<String> = available
        .split_whitespace()
        .filter(|c| matches!(*c, "cpu" | "memory" | "pids"))
        .map(|c| format!("+{c}"))
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    write(dir, "cgroup.subtree_control", &wanted.join(" "))
}

/// Kills whatever still runs in the cgroup `path` and removes its
/// directories (deepest first): for a container whose shim died before
/// cleaning up.
pub fn remove(path: &str) {
    if let Ok(layout) = Layout::detect() {
        Cgroup::at(path, layout).remove();
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
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_hierarchies_come_from_mountinfo_without_named_or_v2_ones() {
        let mountinfo = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
        let hierarchies = parse_v1_hierarchies(mountinfo);
        assert_eq!(
            hierarchies,
            vec![
                Hierarchy {
                    mount_point: "/sys/fs/cgroup/cpu,cpuacct".into(),
                    controllers: "cpu,cpuacct".into()
                },
                Hierarchy {
                    mount_point: "/sys/fs/cgroup/memory".into(),
                    controllers: "memory".into()
                },
            ]
        );
        assert!(hierarchies[0].has("cpuacct") && !hierarchies[0].has("cpuset"));
    }
}
