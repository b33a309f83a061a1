//! One standalone `shoal daemon` (in no swarm) on this machine, for the
//! runtime tests: it pulls from the loopback test registry and runs real
//! containers. Dropping it (also on panic) kills the daemon and every shim
//! and container it started, unmounts what it mounted and removes its
//! cgroups and files; `assert_clean` proves a test left none of that.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{run, wait_until, Output, CLI_TIMEOUT, SHOAL};

pub struct LocalNode {
    pub root: PathBuf,
    pub socket: PathBuf,
    pub cgroup_parent: String,
    daemon: Option<Child>,
    insecure_registries: Vec<String>,
}

impl LocalNode {
    /// Starts a daemon under `/run/shoal-test/<tag>-<pid>`.
    pub fn start(tag: &str) -> LocalNode {
        Self::start_with_registries(tag, &[])
    }

    /// Starts with `--insecure-registry` for each of `registries`.
    pub fn start_with_registries(tag: &str, registries: &[String]) -> LocalNode {
        let name = format!("{tag}-{}", std::process::id());
        let root = PathBuf::from("/run/shoal-test").join(&name);
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("creating the node's directory");
        let mut node = LocalNode {
            socket: root.join("shoal.sock"),
            cgroup_parent: format!("shoal-test-{name}"),
            root,
            daemon: None,
            insecure_registries: registries.to_vec(),
        };
        node.spawn_daemon();
        node
    }

    pub fn data_root(&self) -> PathBuf {
        self.root.join("data")
    }

    fn spawn_daemon(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.join("daemon.log"))
            .expect("opening the daemon log");
        let mut args = vec![
            "-H".to_string(),
            format!("unix://{}", self.socket.display()),
            "daemon".into(),
            "--data-root".into(),
            self.data_root().display().to_string(),
            "--cgroup-parent".into(),
            self.cgroup_parent.clone(),
            // It runs in the machine's own namespace: no default bridge
            // network, so no bridge, nftables or sysctl change lands there.
            "--bridge".into(),
            "none".into(),
        ];
        for registry in &self.insecure_registries {
            args.extend(["--insecure-registry".to_string(), registry.clone()]);
        }
        let child = Command::new(SHOAL)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            // Its own process group, so killing it never reaches the test.
            .process_group(0)
            .spawn()
            .expect("starting shoal daemon");
        self.daemon = Some(child);
        let socket = self.socket.clone();
        wait_until(Duration::from_secs(20), "the daemon's socket", || {
            std::os::unix::net::UnixStream::connect(&socket).ok()
        });
    }

    /// `shoal -H unix://<socket> args...`
    pub fn shoal(&self, args: &[&str]) -> Output {
        self.shoal_with_timeout(args, CLI_TIMEOUT)
    }

    pub fn shoal_with_timeout(&self, args: &[&str], timeout: Duration) -> Output {
        let host = format!("unix://{}", self.socket.display());
        let mut full = vec!["-H", host.as_str()];
        full.extend_from_slice(args);
        run(SHOAL, &full, timeout)
    }

    /// `shoal ARGS` with `input` on its stdin.
    pub fn shoal_with_input(&self, args: &[&str], input: &[u8]) -> Output {
        let host = format!("unix://{}", self.socket.display());
        let mut full = vec!["-H", host.as_str()];
        full.extend_from_slice(args);
        super::run_with_input(SHOAL, &full, Some(input), CLI_TIMEOUT)
    }

    /// `-H` and this node's socket, for a command run another way.
    pub fn host_args(&self) -> [String; 2] {
        ["-H".into(), format!("unix://{}", self.socket.display())]
    }

    /// kill -9 the daemon alone (its shims and containers live on).
    pub fn kill_daemon(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart_daemon(&mut self) {
        self.kill_daemon();
        self.spawn_daemon();
    }

    /// The daemon's log, to explain a failure.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("daemon.log")).unwrap_or_default()
    }

    /// Panics naming whatever the node's containers left behind: mounts
    /// under its directory, cgroups under its parent, or processes.
    #[track_caller]
    pub fn assert_clean(&self) {
        let mounts = mounts_under(&self.root);
        assert!(mounts.is_empty(), "mounts left behind: {mounts:?}");
        // The parent is the daemon's (as /docker is dockerd's); containers'
        // cgroups live below it.
        let cgroups: Vec<PathBuf> =
            cgroups_under(&self.cgroup_parent).into_iter().filter(|c| !c.ends_with(&self.cgroup_parent)).collect();
        assert!(cgroups.is_empty(), "cgroups left behind: {cgroups:?}");
        let processes = processes_using(&self.root, self.daemon.as_ref().map(|c| c.id()));
        assert!(processes.is_empty(), "processes left behind: {processes:?}");
    }
}

impl Drop for LocalNode {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!("--- last lines of the daemon log ---\n{}", lines[lines.len().saturating_sub(40)..].join("\n"));
        }
        // Remove containers through the daemon first: the normal path.
        let ids = self.shoal_with_timeout(&["container", "ls", "-a", "-q"], Duration::from_secs(10));
        if ids.success() {
            for id in ids.lines() {
                let _ = self.shoal_with_timeout(&["container", "rm", "-f", id], Duration::from_secs(15));
            }
        }
        self.kill_daemon();
        // Then by force whatever a broken daemon could not remove.
        for pid in processes_using(&self.root, None) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
        }
        for cgroup in cgroups_under(&self.cgroup_parent) {
            kill_cgroup(&cgroup);
        }
        let mut mounts = mounts_under(&self.root);
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for mount in mounts {
            let _ = nix::mount::umount2(mount.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
        let mut cgroups = cgroups_under(&self.cgroup_parent);
        cgroups.sort_by_key(|c| std::cmp::Reverse(c.as_os_str().len()));
        for cgroup in cgroups {
            let _ = std::fs::remove_dir(&cgroup);
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Mount points at or below `dir`, from this process's mount table.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let prefix = dir.display().to_string();
    table
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .filter(|point| point.starts_with(&prefix))
        .map(str::to_string)
        .collect()
}

/// `parent` and everything below it, in every cgroup hierarchy (v1
/// controllers and the v2 tree).
pub fn cgroups_under(parent: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else { return found };
    let mut roots: Vec<PathBuf> = hierarchies.flatten().map(|e| e.path()).collect();
    roots.push(PathBuf::from("/sys/fs/cgroup"));
    for root in roots {
        let top = root.join(parent);
        if top.is_dir() {
            collect_dirs(&top, &mut found);
        }
    }
    found
}

fn collect_dirs(dir: &Path, found: &mut Vec<PathBuf>) {
    found.push(dir.to_path_buf());
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                collect_dirs(&entry.path(), found);
            }
        }
    }
}

fn kill_cgroup(cgroup: &Path) {
    let procs = std::fs::read_to_string(cgroup.join("cgroup.procs")).unwrap_or_default();
    for pid in procs.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
}

/// Processes (other than `except`) whose command line or working directory
/// mentions `dir`: shims carry the container's state directory.
pub fn processes_using(dir: &Path, except: Option<u32>) -> Vec<u32> {
    let needle = dir.display().to_string();
    let mut pids = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else { return pids };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else { continue };
        if Some(pid) == except || pid == std::process::id() {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let cwd = std::fs::read_link(entry.path().join("cwd")).map(|p| p.display().to_string()).unwrap_or_default();
        if cmdline.contains(&needle) || cwd.starts_with(&needle) {
            pids.push(pid);
        }
    }
    pids
}

/// Runs a plain command (not shoal) with the CLI timeout.
pub fn sh(command: &str) -> Output {
    run("sh", &["-c", command], CLI_TIMEOUT)
}

/// A registry on loopback holding the test busybox as `busybox:1`.
pub fn registry_with_busybox() -> (shoal_runtime::testing::TestRegistry, shoal_runtime::testing::PushedImage) {
    let registry = shoal_runtime::testing::TestRegistry::start().expect("starting docker-registry");
    let images = shoal_runtime::testing::TestImages::shared().expect("building the test images");
    let pushed = registry.push(&images.layout, shoal_runtime::testing::TestImages::BUSYBOX, "busybox", "1").expect("pushing busybox");
    (registry, pushed)
}
