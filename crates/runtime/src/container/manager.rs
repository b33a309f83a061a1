//! The containers of one node: create (rootfs, spec), start (through a
//! shim), wait, stop, kill, remove, list, inspect, logs; and re-attaching
//! to containers that kept running while the daemon was down.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::io::unix::AsyncFd;
use tokio::io::AsyncReadExt;
use tokio::sync::watch;

use super::logs::{self, LogEntries, LogOptions, LogRotation};
use super::model::*;
use super::state::{self, ShimConfig, EXIT_FILE, RECORD_FILE, SHIM_CONFIG_FILE, SHIM_LOG_FILE, STARTED_FILE};
use super::cgroups::Cgroup;
use super::record::random_id;
use super::{cgroups, process_options, record, rootfs, spec, ContainerError};
use crate::launcher::Launcher;

mod pause;
mod restart;
pub use restart::Rebind;
mod shims;
use shims::{pidfd_open, reap, ReadyLines};
mod views;
mod health_monitor;

type Result<T> = std::result::Result<T, ContainerError>;

/// How long `start` waits for the shim to say whether the container runs.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a SIGKILLed container may take to be reported gone.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and how one manager keeps its containers. Several managers (one
/// per daemon) can share a machine if their directories and cgroup
/// parents differ.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// Container state directories (`<data-root>/containers`).
    pub root: PathBuf,
    /// Named volumes (`<data-root>/volumes`).
    pub volumes: PathBuf,
    /// Cgroup the containers' cgroups go under: `<parent>/<container id>`.
    pub cgroup_parent: String,
    /// Program and leading arguments that run [`crate::shim::main`]
    /// (`shoal __shim`); the state directory is appended.
    pub shim_command: Vec<OsString>,
    pub log_rotation: LogRotation,
}

#[derive(Debug, Clone)]
enum Phase {
    Created,
    Running(Started),
    Exited(ExitInfo),
}

struct Entry {
    record: ContainerRecord,
    dir: PathBuf,
    /// Shared with the entry a rename replaces this one by, so whoever
    /// holds either (a shim's watcher, a waiter) sees the same container.
    phase: Arc<watch::Sender<Phase>>,
    /// True once the shim has ended: the log is complete.
    log_closed: Arc<watch::Sender<bool>>,
    /// Present when the container has a health check.
    health: Option<Arc<watch::Sender<super::health::Health>>>,
}

impl Entry {
    fn new(record: ContainerRecord, dir: PathBuf, phase: Phase) -> Arc<Self> {
        let closed = matches!(phase, Phase::Exited(_));
        let health = record.healthcheck.as_ref().map(|_| Arc::new(watch::channel(health_monitor::recovered(&dir, &phase)).0));
        Arc::new(Entry {
            record,
            dir,
            phase: Arc::new(watch::channel(phase).0),
            log_closed: Arc::new(watch::channel(closed).0),
            health,
        })
    }

    /// The container's cgroup, from the shim's config.
    fn cgroup(&self) -> Option<Cgroup> {
        let config = state::read_json::<ShimConfig>(&self.dir.join(SHIM_CONFIG_FILE))?;
        Cgroup::existing(&config.cgroup_path).ok()
    }

    /// The same container under another name.
    fn renamed(&self, name: &str) -> Arc<Self> {
        let record = ContainerRecord { name: name.to_string(), ..self.record.clone() };
        Arc::new(Entry {
            record,
            dir: self.dir.clone(),
            phase: self.phase.clone(),
            log_closed: self.log_closed.clone(),
            health: self.health.clone(),
        })
    }

    fn exited(&self, exit: ExitInfo) {
        let was_running = matches!(*self.phase.borrow(), Phase::Running(_));
        if was_running {
            let container = (&self.record.id, &self.record.name);
            if exit.oom_killed {
                crate::metrics::metrics().oom_kills.inc();
                crate::events::emit(crate::events::Subject::Container, "oom", container.0, container.1, &[]);
            }
            let attributes = [("exitCode", exit.code.to_string()), ("image", self.record.image.clone())];
            crate::events::emit(crate::events::Subject::Container, "die", container.0, container.1, &attributes);
        }
        self.phase.send_replace(Phase::Exited(exit));
        self.log_closed.send_replace(true);
        // docker's status once a container's monitor stops.
        if let (true, Some(health)) = (was_running, &self.health) {
            health_monitor::update(self, health, |h| {
                h.status = super::health::HealthStatus::Unhealthy;
                true
            });
        }
    }
}

/// One row of `container ls`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ContainerSummary {
    pub id: String,
    pub name: String,
    pub image: String,
    pub image_id: String,
    pub command: String,
    pub created: String,
    pub status: Status,
    /// Running, but frozen by `container pause`.
    pub paused: bool,
    pub exit_code: Option<i32>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// Its health check's status; `None` without one.
    pub health: Option<super::health::HealthStatus>,
}

pub struct ContainerManager {
    config: ManagerConfig,
    /// Forks the shims; started on first use, and again after it died
    /// (shims are exec'd directly while none can be had).
    launcher: Mutex<Option<Launcher>>,
    containers: Mutex<HashMap<String, Arc<Entry>>>,
    /// Dropped with the manager: ends the tasks watching shims.
    shutdown: watch::Sender<()>,
}

impl ContainerManager {
    /// Opens the state under `config.root`, re-attaching to containers
    /// whose shims survived a daemon restart.
    pub async fn open(config: ManagerConfig) -> Result<Arc<Self>> {
        for dir in [&config.root, &config.volumes] {
            std::fs::create_dir_all(dir).map_err(|e| ContainerError::io(format!("creating {}", dir.display()), e))?;
        }
        let manager = Arc::new(ContainerManager {
            config,
            launcher: Mutex::new(None),
            containers: Mutex::new(HashMap::new()),
            shutdown: watch::channel(()).0,
        });
        let entries = std::fs::read_dir(&manager.config.root)
            .map_err(|e| ContainerError::io(format!("reading {}", manager.config.root.display()), e))?;
        let mut to_remove = Vec::new();
        for dir in entries.flatten().map(|e| e.path()) {
            let Some(record) = state::read_json::<ContainerRecord>(&dir.join(RECORD_FILE)) else {
                // A create that crashed before writing its record.
                if let Some(id) = dir.file_name().and_then(|n| n.to_str()) {
                    manager.discard(id, &dir);
                }
                continue;
            };
            let phase = recover_phase(&dir);
            if let Phase::Exited(exit) = &phase {
                if exit.error.as_deref() == Some(SHIM_VANISHED) {
                    // Nobody cleaned up after this container.
                    manager.release_runtime_state(&record.id);
                }
            }
            let entry = Entry::new(record, dir, phase);
            manager.lock().insert(entry.record.id.clone(), entry.clone());
            let phase = entry.phase.borrow().clone();
            match phase {
                Phase::Running(started) => {
                    manager.monitor_health(&entry, &started, false);
                    manager.watch_shim(entry, started.shim_pid);
                }
                Phase::Exited(_) if entry.record.auto_remove => to_remove.push(entry.record.id.clone()),
                _ => {}
            }
        }
        for id in to_remove {
            if let Err(e) = manager.remove(&id, true).await {
                tracing::warn!(container = %id, error = %e, "auto-removing a container that exited while the daemon was down");
            }
        }
        Ok(manager)
    }

    /// A running container's start record and cgroup (pause, top, stats);
    /// an error naming it if it is not running.
    fn running_cgroup(&self, entry: &Entry) -> Result<(Started, Cgroup)> {
        let Phase::Running(started) = entry.phase.borrow().clone() else {
            return Err(ContainerError::NotRunning(entry.record.name.clone()));
        };
        let cgroup = entry
            .cgroup()
            .ok_or_else(|| ContainerError::Internal(format!("the cgroup of container {} is unknown", entry.record.name)))?;
        Ok((started, cgroup))
    }

    /// `container rename`: the record on disk first, then the name here.
    pub fn rename(&self, name: &str, new_name: &str) -> Result<()> {
        record::validate_name(new_name)?;
        let entry = self.find(name)?;
        let mut containers = self.lock();
        if containers.values().any(|e| e.record.name == new_name && e.record.id != entry.record.id) {
            return Err(ContainerError::NameInUse(new_name.to_string()));
        }
        let renamed = entry.renamed(new_name);
        state::write_json(&entry.dir.join(RECORD_FILE), &renamed.record)
            .map_err(|e| ContainerError::io(format!("recording the new name of container {}", entry.record.name), e))?;
        containers.insert(entry.record.id.clone(), renamed);
        Ok(())
    }

    /// The node's named volumes.
    pub fn volumes(&self) -> crate::volume::VolumeStore {
        crate::volume::VolumeStore::new(&self.config.volumes)
    }

    /// Which containers (by name, stopped ones too) use each named volume.
    pub fn volume_users(&self) -> HashMap<String, Vec<String>> {
        let mut users: HashMap<String, Vec<String>> = HashMap::new();
        for entry in self.lock().values() {
            for mount in &entry.record.mounts {
                if let MountSpec::Volume { name, .. } = mount {
                    users.entry(name.clone()).or_default().push(entry.record.name.clone());
                }
            }
        }
        users
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Entry>>> {
        self.containers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates a container (not started): its rootfs is mounted and its OCI
    /// bundle written. Nothing is left behind when this fails.
    pub async fn create(&self, request: CreateRequest, image: &ImageInput) -> Result<String> {
        let id = random_id();
        let name = match &request.name {
            Some(name) => {
                record::validate_name(name)?;
                name.clone()
            }
            None => random_name(&id),
        };
        if self.lock().values().any(|e| e.record.name == name) {
            return Err(ContainerError::NameInUse(name));
        }
        let record = record::make(&id, name.clone(), &request, image)?;
        let dir = self.config.root.join(&id);
        std::fs::create_dir(&dir).map_err(|e| ContainerError::io(format!("creating {}", dir.display()), e))?;
        let record = match self.prepare(&dir, record, &request, image) {
            Ok(record) => record,
            Err(e) => {
                self.discard(&id, &dir);
                return Err(e);
            }
        };
        let entry = Entry::new(record, dir, Phase::Created);
        let mut containers = self.lock();
        // Checked again: another create may have taken the name meanwhile.
        if containers.values().any(|e| e.record.name == name) {
            drop(containers);
            self.discard(&id, &entry.dir);
            return Err(ContainerError::NameInUse(name));
        }
        let image = entry.record.image.clone();
        containers.insert(id.clone(), entry);
        drop(containers);
        crate::events::emit(crate::events::Subject::Container, "create", &id, &name, &[("image", image)]);
        Ok(id)
    }

    /// Mounts the rootfs and writes the bundle, the shim's instructions
    /// and (last, as the sign the container exists) the record.
    fn prepare(&self, dir: &Path, mut record: ContainerRecord, request: &CreateRequest, image: &ImageInput) -> Result<ContainerRecord> {
        let rootfs = rootfs::mount_overlay(dir, &image.layers)?;
        let user = rootfs::resolve_user(&rootfs, &record.user)?;
        if !record.env.iter().any(|e| e.starts_with("HOME=")) {
            record.env.push(format!("HOME={}", user.home.clone().unwrap_or_else(|| "/".into())));
        }
        let program = record.args.first().cloned().unwrap_or_default();
        rootfs::check_command(&rootfs, &program, &record.env)?;
        let mut volume_sources = Vec::new();
        for mount in &record.mounts {
            volume_sources.push(match mount {
                MountSpec::Volume { name, .. } => Some(self.volumes().ensure(name)?),
                _ => None,
            });
        }
        let hosts_file = dir.join("hosts");
        let has_hosts = !record.options.extra_hosts.is_empty();
        if has_hosts {
            std::fs::write(&hosts_file, process_options::hosts_file(&record.options.extra_hosts))
                .map_err(|e| ContainerError::io("writing the container's hosts file", e))?;
        }
        let cgroup_path = cgroups::container_path(&self.config.cgroup_parent, &record.id);
        let spec = spec::build(&spec::SpecInput {
            record: &record,
            rootfs: &rootfs,
            uid: user.uid,
            gid: user.gid,
            additional_gids: user.additional_gids,
            cgroups_path: cgroup_path.clone(),
            network_namespace: request.network_namespace.as_deref(),
            volume_sources,
            hosts_file: has_hosts.then_some(hosts_file.as_path()),
        })?;
        spec.save(dir.join("config.json")).map_err(|e| ContainerError::Internal(format!("writing the OCI bundle: {e}")))?;
        let shim = ShimConfig {
            id: record.id.clone(),
            cgroup_path,
            log_rotation: self.config.log_rotation,
            tty: record.tty,
            open_stdin: record.open_stdin,
        };
        state::write_json(&dir.join(SHIM_CONFIG_FILE), &shim).map_err(|e| ContainerError::io("writing the shim's configuration", e))?;
        state::write_json(&dir.join(RECORD_FILE), &record).map_err(|e| ContainerError::io("writing the container record", e))?;
        Ok(record)
    }

    /// Removes everything a container may have on the host but its named
    /// volumes: rootfs mount, state directory, cgroups.
    fn discard(&self, id: &str, dir: &Path) {
        let _ = rootfs::unmount_overlay(dir);
        let _ = std::fs::remove_dir_all(dir);
        self.release_runtime_state(id);
    }

    /// The cgroups, which the shim normally removes itself when the
    /// container ends.
    fn release_runtime_state(&self, id: &str) {
        // Only plain container ids: never let a stray name reach outside.
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_hexdigit()) {
            return;
        }
        cgroups::remove(&cgroups::container_path(&self.config.cgroup_parent, id));
    }

    /// Starts a created container through its shim; returns once the
    /// container's process runs (or with why it could not).
    pub async fn start(self: &Arc<Self>, name: &str) -> Result<()> {
        self.start_with(name, false).await.map(drop)
    }

    /// [`Self::start`], attached to the process's stdio from before it
    /// runs, so none of its output is missed (`run -it`, `start -ai`).
    pub async fn start_attached(self: &Arc<Self>, name: &str) -> Result<super::Attachment> {
        let entry = self.find(name)?;
        self.start_with(&entry.record.id, true).await?.ok_or_else(|| {
            ContainerError::Internal(format!("container {} started, but its shim could not be attached to", entry.record.name))
        })
    }

    async fn start_with(self: &Arc<Self>, name: &str, attach: bool) -> Result<Option<super::Attachment>> {
        let asked = std::time::Instant::now();
        let entry = self.find(name)?;
        if !matches!(*entry.phase.borrow(), Phase::Created) {
            return Err(ContainerError::InvalidRequest(format!(
                "container {} was already started; create a new one",
                entry.record.name
            )));
        }
        let (ready_read, ready_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
            .map_err(|e| ContainerError::Internal(format!("cannot create a pipe: {e}")))?;
        let marker = entry.dir.join(super::attach::ATTACH_AT_START_FILE);
        if attach {
            std::fs::write(&marker, b"").map_err(|e| ContainerError::io("asking the shim to wait for an attach", e))?;
        }
        let shim_pid = match self.spawn_shim(&entry, ready_write) {
            Ok(pid) => pid,
            Err(e) => {
                let _ = std::fs::remove_file(&marker);
                return Err(e);
            }
        };
        // None if the shim has already ended (and, forked by the launcher,
        // been reaped): its answer and exit file still tell what happened.
        let pidfd = pidfd_open(shim_pid).ok();

        // The shim answers `ok PID` or `err MESSAGE` and keeps running, so
        // read one line rather than to EOF; a shim that dies without a
        // word closes the pipe.
        let mut attachment = None;
        let line = match ReadyLines::new(ready_read) {
            Err(e) => format!("err cannot read the shim's answer: {e}"),
            Ok(mut lines) => loop {
                let line = match tokio::time::timeout(START_TIMEOUT, lines.next()).await {
                    Ok(Ok(line)) => line,
                    Ok(Err(e)) => break format!("err cannot read the shim's answer: {e}"),
                    Err(_) => break format!("err the shim did not start the container within {}s", START_TIMEOUT.as_secs()),
                };
                if attach && line.trim() == "attach" {
                    // The shim waits for this connection before it starts the process.
                    attachment = super::attach::connect(&entry.dir).ok().map(|stream| super::Attachment {
                        stream,
                        tty: entry.record.tty,
                        open_stdin: entry.record.open_stdin,
                    });
                    continue;
                }
                break line;
            },
        };
        let _ = std::fs::remove_file(&marker);
        if let Some(pid) = line.trim().strip_prefix("ok ") {
            let started = state::read_json::<Started>(&entry.dir.join(STARTED_FILE)).unwrap_or(Started {
                shim_pid,
                shim_start_ticks: 0,
                pid: pid.parse().unwrap_or(0),
                started_at: state::now_rfc3339(),
            });
            entry.phase.send_replace(Phase::Running(started.clone()));
            crate::metrics::metrics().container_start_seconds.observe(asked.elapsed().as_secs_f64());
            crate::events::emit(crate::events::Subject::Container, "start", &entry.record.id, &entry.record.name, &[("image", entry.record.image.clone())]);
            self.monitor_health(&entry, &started, true);
            match pidfd {
                Some(pidfd) => self.watch_pidfd(entry, shim_pid, pidfd),
                None => self.watch_shim(entry, shim_pid),
            }
            return Ok(attachment);
        }
        // The shim failed: it has recorded why and cleaned up, or died.
        let _ = nix::sys::signal::kill(Pid::from_raw(shim_pid), Signal::SIGKILL);
        if let Some(pidfd) = pidfd {
            reap(pidfd).await;
        }
        let _ = nix::sys::wait::waitpid(Pid::from_raw(shim_pid), Some(nix::sys::wait::WaitPidFlag::WNOHANG));
        let message = match line.trim().strip_prefix("err ") {
            Some(message) => message.to_string(),
            None => {
                self.release_runtime_state(&entry.record.id);
                format!(
                    "the container's shim ended without starting it; see {}",
                    entry.dir.join(SHIM_LOG_FILE).display()
                )
            }
        };
        let exit = state::read_json::<ExitInfo>(&entry.dir.join(EXIT_FILE)).unwrap_or(ExitInfo {
            code: 127,
            oom_killed: false,
            finished_at: state::now_rfc3339(),
            error: Some(message.clone()),
        });
        entry.exited(exit);
        Err(ContainerError::StartFailed(message))
    }

    /// A wait for the container's exit that holds on to it from now, so it
    /// still tells how the container ended if the container is removed
    /// (`--rm`) before it is awaited.
    pub fn waiter(&self, name: &str) -> Result<impl std::future::Future<Output = Result<ExitInfo>> + Send + 'static> {
        let entry = self.find(name)?;
        let mut phase = entry.phase.subscribe();
        Ok(async move {
            loop {
                if let Phase::Exited(exit) = &*phase.borrow_and_update() {
                    return Ok(exit.clone());
                }
                if phase.changed().await.is_err() {
                    return Err(ContainerError::NotFound(entry.record.name.clone()));
                }
            }
        })
    }

    /// Waits until the container has exited; any number of callers may.
    pub async fn wait(&self, name: &str) -> Result<ExitInfo> {
        self.waiter(name)?.await
    }

    /// True once the container is not running, within `timeout`.
    async fn wait_stopped(&self, entry: &Entry, timeout: Duration) -> bool {
        let mut phase = entry.phase.subscribe();
        tokio::time::timeout(timeout, async {
            while matches!(&*phase.borrow_and_update(), Phase::Running(_)) {
                if phase.changed().await.is_err() {
                    return;
                }
            }
        })
        .await
        .is_ok()
    }

    /// The image's stop signal (SIGTERM by default), then SIGKILL after
    /// `timeout`. Stopping a container that is not running does nothing.
    pub async fn stop(&self, name: &str, timeout: Duration) -> Result<()> {
        let entry = self.find(name)?;
        let signal = parse_signal(&entry.record.stop_signal).unwrap_or(Signal::SIGTERM);
        if !self.signal(&entry, signal)? {
            return Ok(());
        }
        if self.wait_stopped(&entry, timeout).await {
            return Ok(());
        }
        self.signal(&entry, Signal::SIGKILL)?;
        if !self.wait_stopped(&entry, KILL_TIMEOUT).await {
            return Err(ContainerError::Internal(format!("container {} did not die after SIGKILL", entry.record.name)));
        }
        Ok(())
    }

    /// The container's own `--stop-timeout`, for a stop that names no time.
    pub fn stop_timeout(&self, name: &str) -> Result<Option<Duration>> {
        Ok(self.find(name)?.record.stop_timeout_secs.map(Duration::from_secs))
    }

    /// Sends `signal` (`TERM`, `SIGKILL`, `9`, ...) to the container's init.
    pub async fn kill(&self, name: &str, signal: &str) -> Result<()> {
        let entry = self.find(name)?;
        let signal = parse_signal(signal).ok_or_else(|| {
            ContainerError::InvalidRequest(format!("signal {signal:?} is unknown; use a name such as TERM or KILL, or a number"))
        })?;
        if !self.signal(&entry, signal)? {
            return Err(ContainerError::NotRunning(entry.record.name.clone()));
        }
        Ok(())
    }

    /// Signals the container's init; false when it is not running. The
    /// init is the shim's child and stays a zombie until the shim has
    /// reaped it, so its pid cannot have been reused while we see it
    /// running.
    fn signal(&self, entry: &Entry, signal: Signal) -> Result<bool> {
        let Phase::Running(started) = entry.phase.borrow().clone() else { return Ok(false) };
        self.thaw_for_signal(entry);
        match nix::sys::signal::kill(Pid::from_raw(started.pid), signal) {
            Ok(()) => Ok(true),
            Err(nix::errno::Errno::ESRCH) => Ok(false),
            Err(e) => Err(ContainerError::Internal(format!("cannot signal container {}: {e}", entry.record.name))),
        }
    }

    /// Removes a container and everything it had on this host but its
    /// named volumes. A running one only with `force` (it is killed).
    pub async fn remove(&self, name: &str, force: bool) -> Result<()> {
        let entry = self.find(name)?;
        if matches!(*entry.phase.borrow(), Phase::Running(_)) {
            if !force {
                return Err(ContainerError::Running(entry.record.name.clone()));
            }
            self.signal(&entry, Signal::SIGKILL)?;
            if !self.wait_stopped(&entry, KILL_TIMEOUT).await {
                return Err(ContainerError::Internal(format!("container {} did not die after SIGKILL", entry.record.name)));
            }
        }
        if self.lock().remove(&entry.record.id).is_none() {
            return Ok(()); // removed meanwhile (e.g. --rm)
        }
        rootfs::unmount_overlay(&entry.dir)?;
        std::fs::remove_dir_all(&entry.dir).map_err(|e| ContainerError::io(format!("removing {}", entry.dir.display()), e))?;
        if matches!(*entry.phase.borrow(), Phase::Created) {
            // Never started: no shim to have cleaned up (normally nothing).
            self.release_runtime_state(&entry.record.id);
        }
        entry.log_closed.send_replace(true);
        crate::events::emit(crate::events::Subject::Container, "destroy", &entry.record.id, &entry.record.name, &[]);
        Ok(())
    }

    /// The container `name` names: its name, its id, or a unique id prefix.
    fn find(&self, name: &str) -> Result<Arc<Entry>> {
        let containers = self.lock();
        if let Some(e) = containers.get(name) {
            return Ok(e.clone());
        }
        if let Some(e) = containers.values().find(|e| e.record.name == name) {
            return Ok(e.clone());
        }
        let unique = |mut matches: Box<dyn Iterator<Item = &Arc<Entry>> + '_>| match (matches.next(), matches.next()) {
            (Some(e), None) => Some(Ok(e.clone())),
            (Some(_), Some(_)) => Some(Err(ContainerError::Ambiguous(name.to_string()))),
            _ => None,
        };
        if name.is_empty() {
            return Err(ContainerError::NotFound(name.to_string()));
        }
        let by_id = containers.values().filter(|e| e.record.id.starts_with(name));
        // A swarm task's container is `service.slot.TASK_ID`: the task id
        // (or its prefix, as `service ps` shows it) names it too.
        let by_task = containers
            .values()
            .filter(|e| e.record.name.rsplit_once('.').is_some_and(|(_, task)| task.starts_with(name)));
        unique(Box::new(by_id))
            .or_else(|| unique(Box::new(by_task)))
            .unwrap_or_else(|| Err(ContainerError::NotFound(name.to_string())))
    }
}

/// What a container was when the daemon (re)started. A shim is only
/// believed alive if its pid still names the process that started then.
fn recover_phase(dir: &Path) -> Phase {
    if let Some(exit) = state::read_json::<ExitInfo>(&dir.join(EXIT_FILE)) {
        return Phase::Exited(exit);
    }
    match state::read_json::<Started>(&dir.join(STARTED_FILE)) {
        Some(started) if state::process_start_ticks(started.shim_pid) == Some(started.shim_start_ticks) => {
            Phase::Running(started)
        }
        // The exit may have landed between the two reads.
        Some(_) => Phase::Exited(state::read_json(&dir.join(EXIT_FILE)).unwrap_or_else(shim_vanished)),
        None => Phase::Created,
    }
}

const SHIM_VANISHED: &str = "the container's shim died without recording an exit";

fn shim_vanished() -> ExitInfo {
    ExitInfo { code: 255, oom_killed: false, finished_at: state::now_rfc3339(), error: Some(SHIM_VANISHED.into()) }
}

/// `TERM`, `SIGTERM`, `15`.
pub fn parse_signal(name: &str) -> Option<Signal> {
    if let Ok(number) = name.parse::<i32>() {
        return Signal::try_from(number).ok();
    }
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") { upper } else { format!("SIG{upper}") };
    full.parse().ok()
}


/// docker-like `adjective_noun` names with a bit of the id to stay unique.
fn random_name(id: &str) -> String {
    const ADJECTIVES: [&str; 8] = ["brave", "calm", "eager", "keen", "quick", "quiet", "bold", "merry"];
    const NOUNS: [&str; 8] = ["herring", "mackerel", "sardine", "anchovy", "tuna", "sprat", "shad", "smelt"];
    let n = u32::from_str_radix(&id[..8], 16).unwrap_or(0) as usize;
    format!("{}_{}_{}", ADJECTIVES[n % 8], NOUNS[(n / 8) % 8], &id[..6])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_in_every_docker_form() {
        assert_eq!(parse_signal("TERM"), Some(Signal::SIGTERM));
        assert_eq!(parse_signal("sigkill"), Some(Signal::SIGKILL));
        assert_eq!(parse_signal("9"), Some(Signal::SIGKILL));
        assert_eq!(parse_signal("NOPE"), None);
    }
}
