//! Docker Swarm as the benches' yardstick: a private dockerd in swarm mode
//! (single node) with its own data root, exec root, socket and cgroup
//! parent, no iptables or bridge changes to this machine, and the test
//! busybox image loaded as `busybox:1`.
//!
//! Dropping it removes everything it made: services and the swarm through
//! dockerd when it still answers, then by force whatever a killed dockerd
//! left (an interrupted bench SIGKILLs its descendants): shims and
//! container processes, mounts under its directories, its cgroups, and the
//! `docker_gwbridge` bridge when this dockerd created it.
//!
//! Included by the benches with `#[path]`; it expects the cluster test
//! harness as the bench's `support` module.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use shoal_runtime::testing::TestImages;

use crate::support::node::{cgroups_under, mounts_under, processes_using};
use crate::support::{run, wait_until, Output, CLI_TIMEOUT};

/// The bridge swarm mode adds to the root namespace for its tasks.
const GATEWAY_BRIDGE: &str = "docker_gwbridge";

pub struct DockerSwarm {
    dir: tempfile::TempDir,
    daemon: Child,
    cgroup_parent: String,
    /// Whether `docker_gwbridge` was there before this dockerd started
    /// (then it is someone else's and stays).
    bridge_existed: bool,
}

impl DockerSwarm {
    pub fn start(images: &TestImages) -> Result<DockerSwarm, String> {
        let dockerd = which("dockerd").ok_or("dockerd is not installed (apt-get install docker.io)")?;
        which("docker").ok_or("the docker CLI is not installed (apt-get install docker.io)")?;
        let dir = tempfile::Builder::new().prefix("shoal-bench-docker-").tempdir().map_err(|e| e.to_string())?;
        let root = dir.path();
        let cgroup_parent = format!("shoal-bench-docker-{}", std::process::id());
        let bridge_existed = Path::new("/sys/class/net").join(GATEWAY_BRIDGE).exists();
        let daemon = Command::new(dockerd)
            .args(["--data-root", &root.join("data").display().to_string()])
            .args(["--exec-root", &root.join("exec").display().to_string()])
            .args(["--pidfile", &root.join("docker.pid").display().to_string()])
            .args(["-H", &format!("unix://{}", root.join("docker.sock").display())])
            .args(["--cgroup-parent", &format!("/{cgroup_parent}")])
            .args(["--iptables=false", "--ip-masq=false", "--bridge=none"])
            // The image is loaded on the node and no registry is reachable:
            // without this every task start would first try (and fail) to
            // pull from Docker Hub. Moby's own integration daemons set it.
            .env("DOCKER_SERVICE_PREFER_OFFLINE_IMAGE", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(root.join("dockerd.log")).map_err(|e| e.to_string())?)
            .spawn()
            .map_err(|e| format!("starting dockerd: {e}"))?;
        // Built before the first wait, so Drop cleans up a failed start.
        let swarm = DockerSwarm { dir, daemon, cgroup_parent, bridge_existed };
        wait_until(Duration::from_secs(60), "dockerd to answer", || swarm.docker(&["info"]).success().then_some(()));
        swarm.docker(&["swarm", "init", "--advertise-addr", "127.0.0.1"]).ok();
        let archive = swarm.dir.path().join("busybox.tar");
        images.docker_save_archive(TestImages::BUSYBOX, "busybox:1", &archive).map_err(|e| e.to_string())?;
        swarm.docker(&["load", "-i", &archive.display().to_string()]).ok();
        Ok(swarm)
    }

    /// `docker -H <this dockerd> ARGS`; check the result with `.ok()`.
    pub fn docker(&self, args: &[&str]) -> Output {
        self.docker_with_timeout(args, Duration::from_secs(300).max(CLI_TIMEOUT))
    }

    fn docker_with_timeout(&self, args: &[&str], timeout: Duration) -> Output {
        let host = format!("unix://{}", self.dir.path().join("docker.sock").display());
        let mut full = vec!["-H", host.as_str()];
        full.extend_from_slice(args);
        run("docker", &full, timeout)
    }

    /// The orderly way out, while dockerd still runs: no service, no
    /// container, out of swarm mode, dockerd stopped with SIGTERM (so it
    /// stops its containerd too). Never panics: it runs from Drop.
    fn stop_through_dockerd(&mut self) {
        let quick = Duration::from_secs(30);
        let services = self.docker_with_timeout(&["service", "ls", "-q"], quick);
        let services: Vec<String> = services.lines().into_iter().map(String::from).collect();
        if !services.is_empty() {
            let mut args = vec!["service", "rm"];
            args.extend(services.iter().map(String::as_str));
            let _ = self.docker_with_timeout(&args, quick);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let containers = self.docker_with_timeout(&["ps", "-aq"], quick);
            if !containers.success() || containers.lines().is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = self.docker_with_timeout(&["swarm", "leave", "--force"], quick);
        let _ = kill(Pid::from_raw(self.daemon.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while matches!(self.daemon.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whatever is left, by force: processes that name its directory
    /// (containerd, shims), every process in its cgroups (the containers),
    /// then its mounts (deepest first) and its cgroups.
    fn remove_by_force(&self) {
        let root = self.dir.path();
        for pid in processes_using(root, None) {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        let cgroups = cgroups_under(&self.cgroup_parent);
        for cgroup in &cgroups {
            let procs = std::fs::read_to_string(cgroup.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        let mut mounts = mounts_under(root);
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for mount in mounts {
            let _ = nix::mount::umount2(mount.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
        // A killed process leaves its cgroup only once it is reaped.
        let mut cgroups = cgroups;
        cgroups.sort_by_key(|c| std::cmp::Reverse(c.as_os_str().len()));
        for cgroup in cgroups {
            let deadline = Instant::now() + Duration::from_secs(5);
            while std::fs::remove_dir(&cgroup).is_err() && cgroup.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        if !self.bridge_existed && Path::new("/sys/class/net").join(GATEWAY_BRIDGE).exists() {
            let _ = Command::new("ip").args(["link", "delete", GATEWAY_BRIDGE]).stderr(Stdio::null()).status();
        }
    }
}

impl Drop for DockerSwarm {
    fn drop(&mut self) {
        if matches!(self.daemon.try_wait(), Ok(None)) {
            self.stop_through_dockerd();
        }
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        self.remove_by_force();
    }
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|p| p.is_file())
}
