//! The containers of one node: create (rootfs, spec), start (through a
//! shim), wait, stop, kill, remove, list, inspect, logs; and re-attaching
//! to containers that kept running while the daemon was down.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, watch};

use super::logs::{self, LogEntry};
use super::model::*;
use super::state::{self, EXIT_FILE, RECORD_FILE, STARTED_FILE};
use super::{rootfs, spec, ContainerError};
use crate::image::ImageConfig;

type Result<T> = std::result::Result<T, ContainerError>;

/// How long `start` waits for the shim to say whether the container runs.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a followed log is checked for new lines while the container runs.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(100);
const LIBCONTAINER_DIR: &str = ".libcontainer";

pub struct ManagerConfig {
    /// Where container state directories live (`<data-root>/containers`).
    pub root: PathBuf,
    /// Where named volumes live (`<data-root>/volumes`).
    pub volumes: PathBuf,
    /// Cgroup the containers' cgroups are made under.
    pub cgroup_parent: String,
    /// Program and leading arguments that run [`crate::shim::main`].
    pub shim_command: Vec<OsString>,
}

/// The image as a container needs it.
pub struct ImageInput {
    pub id: String,
    /// As the user named it.
    pub reference: String,
    /// overlayfs `lowerdir=` value, topmost layer first.
    pub lowerdir: String,
    pub config: ImageConfig,
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
    phase: watch::Sender<Phase>,
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
    pub exit_code: Option<i32>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub labels: BTreeMap<String, String>,
}

pub struct ContainerManager {
    config: ManagerConfig,
    containers: Mutex<HashMap<String, Arc<Entry>>>,
}

impl ContainerManager {
    /// Opens the state under `config.root`, re-attaching to containers
    /// whose shims survived a daemon restart.
    pub async fn open(config: ManagerConfig) -> Result<Arc<Self>> {
        for dir in [&config.root, &config.volumes] {
            std::fs::create_dir_all(dir).map_err(|e| ContainerError::io(format!("creating {}", dir.display()), e))?;
        }
        let manager = Arc::new(ContainerManager { config, containers: Mutex::new(HashMap::new()) });
        let entries = std::fs::read_dir(&manager.config.root)
            .map_err(|e| ContainerError::io(format!("reading {}", manager.config.root.display()), e))?;
        for dir in entries.flatten().map(|e| e.path()) {
            let Some(record) = state::read_json::<ContainerRecord>(&dir.join(RECORD_FILE)) else {
                // A create that crashed before writing its record.
                if dir.file_name().is_some_and(|n| n != LIBCONTAINER_DIR) {
                    let _ = rootfs::unmount_overlay(&dir);
                    let _ = std::fs::remove_dir_all(&dir);
                }
                continue;
            };
            let phase = recover_phase(&dir);
            let running = matches!(phase, Phase::Running(_));
            let entry = Arc::new(Entry { record, dir, phase: watch::channel(phase).0 });
            manager.lock().insert(entry.record.id.clone(), entry.clone());
            if running {
                manager.clone().watch_shim(entry);
            }
        }
        Ok(manager)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Entry>>> {
        self.containers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates a container (not started): its rootfs is mounted and its OCI
    /// bundle written. Nothing is left behind when this fails.
    pub async fn create(&self, request: CreateRequest, image: &ImageInput) -> Result<String> {
        let id = random_id();
        let name = match &request.name {
            Some(name) => name.clone(),
            None => random_name(&id),
        };
        {
            let containers = self.lock();
            if containers.values().any(|e| e.record.name == name) {
                return Err(ContainerError::NameInUse(name));
            }
        }
        for mount in &request.mounts {
            if let MountSpec::Bind { source, .. } = mount {
                if !source.exists() {
                    return Err(ContainerError::InvalidRequest(format!(
                        "mount source {} does not exist on this host; create it or fix the path",
                        source.display()
                    )));
                }
            }
        }
        let record = make_record(&id, name.clone(), &request, image)?;
        let dir = self.config.root.join(&id);
        std::fs::create_dir_all(&dir).map_err(|e| ContainerError::io(format!("creating {}", dir.display()), e))?;
        let prepared = self.prepare(&dir, &record, &request, image);
        if let Err(e) = prepared {
            let _ = rootfs::unmount_overlay(&dir);
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
        let entry = Arc::new(Entry { record, dir, phase: watch::channel(Phase::Created).0 });
        let mut containers = self.lock();
        if containers.values().any(|e| e.record.name == name) {
            drop(containers);
            let _ = rootfs::unmount_overlay(&entry.dir);
            let _ = std::fs::remove_dir_all(&entry.dir);
            return Err(ContainerError::NameInUse(name));
        }
        containers.insert(id.clone(), entry);
        Ok(id)
    }

    fn prepare(&self, dir: &Path, record: &ContainerRecord, request: &CreateRequest, image: &ImageInput) -> Result<()> {
        let rootfs = rootfs::mount_overlay(dir, &image.lowerdir)?;
        let user = rootfs::resolve_user(&rootfs, &record.user)?;
        let mut record = record.clone();
        if !record.env.iter().any(|e| e.starts_with("HOME=")) {
            record.env.push(format!("HOME={}", user.home.clone().unwrap_or_else(|| "/".into())));
        }
        let program = record.args.first().cloned().unwrap_or_default();
        rootfs::check_command(&rootfs, &program, &record.env)?;
        let mut volume_sources = Vec::new();
        for mount in &record.mounts {
            volume_sources.push(match mount {
                MountSpec::Volume { name, .. } => {
                    let data = self.config.volumes.join(name).join("_data");
                    std::fs::create_dir_all(&data).map_err(|e| ContainerError::io(format!("creating volume {name}"), e))?;
                    Some(data)
                }
                _ => None,
            });
        }
        let spec = spec::build(&spec::SpecInput {
            record: &record,
            rootfs: &rootfs,
            uid: user.uid,
            gid: user.gid,
            additional_gids: user.additional_gids,
            cgroups_path: self.cgroups_path(&record.id),
            network_namespace: request.network_namespace.as_deref(),
            volume_sources,
        })?;
        spec.save(dir.join("config.json")).map_err(|e| ContainerError::Internal(format!("writing the OCI bundle: {e}")))?;
        state::write_json(&dir.join(RECORD_FILE), &record).map_err(|e| ContainerError::io("writing the container record", e))?;
        Ok(())
    }

    fn cgroups_path(&self, id: &str) -> String {
        format!("/{}/{id}", self.config.cgroup_parent.trim_matches('/'))
    }

    /// Starts a created container through its shim; returns once the
    /// container's process runs (or says why it could not).
    pub async fn start(self: &Arc<Self>, name: &str) -> Result<()> {
        let entry = self.find(name)?;
        if !matches!(*entry.phase.borrow(), Phase::Created) {
            return Err(ContainerError::InvalidRequest(format!("container {} was already started; create a new one", entry.record.name)));
        }
        let (ready_read, ready_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| ContainerError::Internal(format!("cannot create a pipe: {e}")))?;
        let shim_log = std::fs::File::create(entry.dir.join("shim.log")).map_err(|e| ContainerError::io("creating the shim log", e))?;
        let (program, leading) = self.config.shim_command.split_first().ok_or_else(|| ContainerError::Internal("no shim command configured".into()))?;
        let mut command = std::process::Command::new(program);
        command
            .args(leading)
            .arg(&entry.dir)
            .arg(self.config.root.join(LIBCONTAINER_DIR))
            .arg(&entry.record.id)
            .arg(self.cgroups_path(&entry.record.id))
            .stdin(std::process::Stdio::null())
            .stdout(shim_log.try_clone().map_err(|e| ContainerError::io("opening the shim log", e))?)
            .stderr(shim_log);
        let ready_fd = std::os::fd::AsRawFd::as_raw_fd(&ready_write);
        // SAFETY: dup2 is async-signal-safe; it gives the shim the write end
        // as fd 3 without CLOEXEC while every other child keeps it closed.
        unsafe {
            command.pre_exec(move || {
                if libc::dup2(ready_fd, crate::shim::READY_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().map_err(|e| ContainerError::io(format!("starting the shim {}", program.to_string_lossy()), e))?;
        drop(ready_write);
        let shim_pid = child.id() as i32;
        // Reaped in `watch_shim`, which also covers shims we did not start.
        std::mem::forget(child);
        let pidfd = pidfd_open(shim_pid).map_err(|e| ContainerError::io("watching the shim", e))?;

        let answer = tokio::time::timeout(START_TIMEOUT, tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            let mut reader = std::io::BufReader::new(std::fs::File::from(ready_read));
            std::io::BufRead::read_line(&mut reader, &mut line).map(|_| line)
        }))
        .await;
        let line = match answer {
            Ok(Ok(Ok(line))) => line,
            _ => String::new(),
        };
        if let Some(pid) = line.trim().strip_prefix("ok ") {
            let started = state::read_json::<Started>(&entry.dir.join(STARTED_FILE)).unwrap_or(Started {
                shim_pid,
                shim_start_ticks: 0,
                pid: pid.parse().unwrap_or(0),
                started_at: state::now_rfc3339(),
            });
            entry.phase.send_replace(Phase::Running(started));
            self.clone().watch_pidfd(entry, shim_pid, pidfd);
            return Ok(());
        }
        // The shim failed (it reported why, or died): reap it, keep the record.
        let _ = nix::sys::wait::waitpid(Pid::from_raw(shim_pid), None);
        let message = line.trim().strip_prefix("err ").map(str::to_string).unwrap_or_else(|| {
            format!("the container's shim ended without starting it; see {}", entry.dir.join("shim.log").display())
        });
        let exit = state::read_json::<ExitInfo>(&entry.dir.join(EXIT_FILE)).unwrap_or(ExitInfo {
            code: 127,
            oom_killed: false,
            finished_at: state::now_rfc3339(),
            error: Some(message.clone()),
        });
        entry.phase.send_replace(Phase::Exited(exit));
        Err(ContainerError::StartFailed(message))
    }

    fn watch_shim(self: Arc<Self>, entry: Arc<Entry>) {
        let Phase::Running(started) = entry.phase.borrow().clone() else { return };
        match pidfd_open(started.shim_pid) {
            Ok(pidfd) => self.watch_pidfd(entry, started.shim_pid, pidfd),
            Err(_) => {
                let exit = state::read_json::<ExitInfo>(&entry.dir.join(EXIT_FILE)).unwrap_or_else(shim_vanished);
                entry.phase.send_replace(Phase::Exited(exit));
            }
        }
    }

    /// Waits for the shim to end (it outlives the container by a moment),
    /// then records the exit and honours `--rm`.
    fn watch_pidfd(self: Arc<Self>, entry: Arc<Entry>, shim_pid: i32, pidfd: OwnedFd) {
        tokio::spawn(async move {
            // SAFETY: the AsyncFd owns the pidfd, so the fd stays open (and
            // is not reused) for as long as it is registered.
            if let Ok(fd) = unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) } {
                let _ = fd.readable().await;
            }
            // Ours to reap if we started it; ECHILD after a daemon restart.
            let _ = nix::sys::wait::waitpid(Pid::from_raw(shim_pid), Some(nix::sys::wait::WaitPidFlag::WNOHANG));
            let exit = state::read_json::<ExitInfo>(&entry.dir.join(EXIT_FILE)).unwrap_or_else(shim_vanished);
            entry.phase.send_replace(Phase::Exited(exit));
            if entry.record.auto_remove {
                if let Err(e) = self.remove(&entry.record.id, true).await {
                    tracing::warn!(container = %entry.record.id, error = %e, "auto-removing");
                }
            }
        });
    }

    /// Waits until the container has exited.
    pub async fn wait(&self, name: &str) -> Result<ExitInfo> {
        let entry = self.find(name)?;
        let mut phase = entry.phase.subscribe();
        loop {
            if let Phase::Exited(exit) = &*phase.borrow_and_update() {
                return Ok(exit.clone());
            }
            if phase.changed().await.is_err() {
                return Err(ContainerError::NotFound(name.to_string()));
            }
        }
    }

    async fn wait_for(&self, entry: &Arc<Entry>, timeout: Duration) -> bool {
        let mut phase = entry.phase.subscribe();
        tokio::time::timeout(timeout, async {
            loop {
                if matches!(&*phase.borrow_and_update(), Phase::Exited(_) | Phase::Created) {
                    return;
                }
                if phase.changed().await.is_err() {
                    return;
                }
            }
        })
        .await
        .is_ok()
    }

    /// The stop signal, then SIGKILL after `timeout`.
    pub async fn stop(&self, name: &str, timeout: Duration) -> Result<()> {
        let entry = self.find(name)?;
        let signal = parse_signal(&entry.record.stop_signal).unwrap_or(Signal::SIGTERM);
        if !self.signal(&entry, signal)? {
            return Ok(());
        }
        if self.wait_for(&entry, timeout).await {
            return Ok(());
        }
        self.signal(&entry, Signal::SIGKILL)?;
        self.wait_for(&entry, Duration::from_secs(10)).await;
        Ok(())
    }

    pub async fn kill(&self, name: &str, signal: &str) -> Result<()> {
        let entry = self.find(name)?;
        let signal = parse_signal(signal).ok_or_else(|| {
            ContainerError::InvalidRequest(format!("signal {signal:?} is unknown; use a name such as TERM or KILL, or a number"))
        })?;
        if !self.signal(&entry, signal)? {
            return Err(ContainerError::InvalidRequest(format!("container {} is not running", entry.record.name)));
        }
        Ok(())
    }

    /// Signals the container's init; false when it is not running.
    fn signal(&self, entry: &Entry, signal: Signal) -> Result<bool> {
        let Phase::Running(started) = entry.phase.borrow().clone() else { return Ok(false) };
        match nix::sys::signal::kill(Pid::from_raw(started.pid), signal) {
            Ok(()) => Ok(true),
            Err(nix::errno::Errno::ESRCH) => Ok(false),
            Err(e) => Err(ContainerError::Internal(format!("cannot signal container {}: {e}", entry.record.name))),
        }
    }

    /// Removes a container and everything it had on this host but its
    /// named volumes.
    pub async fn remove(&self, name: &str, force: bool) -> Result<()> {
        let entry = self.find(name)?;
        if matches!(*entry.phase.borrow(), Phase::Running(_)) {
            if !force {
                return Err(ContainerError::Running(entry.record.name.clone()));
            }
            self.signal(&entry, Signal::SIGKILL)?;
            if !self.wait_for(&entry, Duration::from_secs(10)).await {
                return Err(ContainerError::Internal(format!("container {} did not die after SIGKILL", entry.record.name)));
            }
        }
        if self.lock().remove(&entry.record.id).is_none() {
            return Ok(()); // removed meanwhile (e.g. --rm)
        }
        rootfs::unmount_overlay(&entry.dir)?;
        std::fs::remove_dir_all(&entry.dir).map_err(|e| ContainerError::io(format!("removing {}", entry.dir.display()), e))?;
        Ok(())
    }

    pub fn list(&self, all: bool) -> Vec<ContainerSummary> {
        let mut rows: Vec<ContainerSummary> = self
            .lock()
            .values()
            .map(|e| summary(e))
            .filter(|s| all || s.status == Status::Running)
            .collect();
        rows.sort_by(|a, b| b.created.cmp(&a.created));
        rows
    }

    pub fn inspect(&self, name: &str) -> Result<ContainerDetails> {
        let entry = self.find(name)?;
        let state = match entry.phase.borrow().clone() {
            Phase::Created => ContainerState { status: Status::Created, pid: None, exit_code: None, oom_killed: false, started_at: None, finished_at: None, error: None },
            Phase::Running(s) => ContainerState { status: Status::Running, pid: Some(s.pid), exit_code: None, oom_killed: false, started_at: Some(s.started_at), finished_at: None, error: None },
            Phase::Exited(x) => {
                let started = state::read_json::<Started>(&entry.dir.join(STARTED_FILE));
                ContainerState {
                    status: if x.error.is_some() { Status::Dead } else { Status::Exited },
                    pid: None,
                    exit_code: Some(x.code),
                    oom_killed: x.oom_killed,
                    started_at: started.map(|s| s.started_at),
                    finished_at: Some(x.finished_at),
                    error: x.error,
                }
            }
        };
        Ok(ContainerDetails {
            id: entry.record.id.clone(),
            name: entry.record.name.clone(),
            image: entry.record.image.clone(),
            image_id: entry.record.image_id.clone(),
            created: entry.record.created.clone(),
            state,
            config: entry.record.clone(),
            log_path: entry.dir.join(logs::LOG_FILE),
        })
    }

    /// The container's output; with `follow`, new lines until it exits.
    pub fn logs(&self, name: &str, follow: bool, tail: Option<usize>) -> Result<mpsc::Receiver<LogEntry>> {
        let entry = self.find(name)?;
        let (lines, receiver) = mpsc::channel(256);
        tokio::spawn(async move {
            let dir = entry.dir.clone();
            let Ok((entries, mut cursor)) = logs::read_all(&dir, tail) else { return };
            for e in entries {
                if lines.send(e).await.is_err() {
                    return;
                }
            }
            if !follow {
                return;
            }
            let mut phase = entry.phase.subscribe();
            loop {
                let exited = matches!(&*phase.borrow_and_update(), Phase::Exited(_));
                for e in logs::read_since(&dir, &mut cursor).unwrap_or_default() {
                    if lines.send(e).await.is_err() {
                        return;
                    }
                }
                if exited {
                    return;
                }
                // The shim writes the log; there is no event for a new line
                // short of inotify, so check often, and at once on exit.
                tokio::select! {
                    _ = tokio::time::sleep(FOLLOW_INTERVAL) => {}
                    _ = phase.changed() => {}
                    _ = lines.closed() => return,
                }
            }
        });
        Ok(receiver)
    }

    /// Ids of the images containers (running or not) were made from.
    pub fn images_in_use(&self) -> HashSet<String> {
        self.lock().values().map(|e| e.record.image_id.clone()).collect()
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
        let mut matches = containers.values().filter(|e| !name.is_empty() && e.record.id.starts_with(name));
        match (matches.next(), matches.next()) {
            (Some(e), None) => Ok(e.clone()),
            (Some(_), Some(_)) => Err(ContainerError::Ambiguous(name.to_string())),
            _ => Err(ContainerError::NotFound(name.to_string())),
        }
    }
}

fn summary(entry: &Entry) -> ContainerSummary {
    let (status, exit_code, started_at, finished_at) = match entry.phase.borrow().clone() {
        Phase::Created => (Status::Created, None, None, None),
        Phase::Running(s) => (Status::Running, None, Some(s.started_at), None),
        Phase::Exited(x) => (if x.error.is_some() { Status::Dead } else { Status::Exited }, Some(x.code), None, Some(x.finished_at)),
    };
    ContainerSummary {
        id: entry.record.id.clone(),
        name: entry.record.name.clone(),
        image: entry.record.image.clone(),
        image_id: entry.record.image_id.clone(),
        command: entry.record.args.join(" "),
        created: entry.record.created.clone(),
        status,
        exit_code,
        started_at,
        finished_at,
        labels: entry.record.labels.clone(),
    }
}

/// What a container was when the daemon (re)started.
fn recover_phase(dir: &Path) -> Phase {
    if let Some(exit) = state::read_json::<ExitInfo>(&dir.join(EXIT_FILE)) {
        return Phase::Exited(exit);
    }
    match state::read_json::<Started>(&dir.join(STARTED_FILE)) {
        Some(started) if state::process_start_ticks(started.shim_pid) == Some(started.shim_start_ticks) => Phase::Running(started),
        Some(_) => Phase::Exited(state::read_json(&dir.join(EXIT_FILE)).unwrap_or_else(shim_vanished)),
        None => Phase::Created,
    }
}

fn shim_vanished() -> ExitInfo {
    ExitInfo {
        code: 255,
        oom_killed: false,
        finished_at: state::now_rfc3339(),
        error: Some("the container's shim died without recording an exit".into()),
    }
}

fn make_record(id: &str, name: String, request: &CreateRequest, image: &ImageInput) -> Result<ContainerRecord> {
    let entrypoint: Vec<String> = match &request.entrypoint {
        Some(e) if e.is_empty() => Vec::new(),
        Some(e) => vec![e.clone()],
        None => image.config.entrypoint.clone(),
    };
    // A new entrypoint drops the image's CMD, as in docker.
    let cmd = if !request.command.is_empty() {
        request.command.clone()
    } else if request.entrypoint.is_some() {
        Vec::new()
    } else {
        image.config.cmd.clone()
    };
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if args.is_empty() {
        return Err(ContainerError::InvalidRequest(format!(
            "image {} has no default command; give one after the image name",
            image.reference
        )));
    }
    let mut env: Vec<String> = Vec::new();
    for item in image.config.env.iter().chain(&request.env) {
        let key = item.split('=').next().unwrap_or(item);
        env.retain(|e| e.split('=').next() != Some(key));
        env.push(item.clone());
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    }
    let hostname = request.hostname.clone().filter(|h| !h.is_empty()).unwrap_or_else(|| id[..12].to_string());
    env.push(format!("HOSTNAME={hostname}"));
    for mount in &request.mounts {
        if let MountSpec::Volume { name, .. } = mount {
            let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
            if !valid {
                return Err(ContainerError::InvalidRequest(format!(
                    "volume name {name:?} is invalid; use letters, digits, '_', '.' and '-'"
                )));
            }
        }
    }
    let mut labels = image.config.labels.clone();
    labels.extend(request.labels.clone());
    Ok(ContainerRecord {
        id: id.to_string(),
        name,
        image: image.reference.clone(),
        image_id: image.id.clone(),
        args,
        env,
        workdir: request.workdir.clone().or_else(|| image.config.working_dir.clone()).unwrap_or_else(|| "/".into()),
        user: request.user.clone().or_else(|| image.config.user.clone()).unwrap_or_default(),
        hostname,
        labels,
        read_only: request.read_only,
        mounts: request.mounts.clone(),
        limits: request.limits.clone(),
        stop_signal: image.config.stop_signal.clone().unwrap_or_else(|| "SIGTERM".into()),
        auto_remove: request.auto_remove,
        created: state::now_rfc3339(),
    })
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

fn random_id() -> String {
    let bytes: [u8; 32] = rand::random();
    hex::encode(bytes)
}

/// docker-like `adjective_noun` names; the id keeps them unique.
fn random_name(id: &str) -> String {
    const ADJECTIVES: [&str; 8] = ["brave", "calm", "eager", "keen", "quick", "quiet", "bold", "merry"];
    const NOUNS: [&str; 8] = ["herring", "mackerel", "sardine", "anchovy", "tuna", "sprat", "shad", "smelt"];
    let n = u32::from_str_radix(&id[..8], 16).unwrap_or(0) as usize;
    format!("{}_{}_{}", ADJECTIVES[n % 8], NOUNS[(n / 8) % 8], &id[..6])
}

fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
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

    #[test]
    fn entrypoint_and_command_follow_docker() {
        let image = ImageInput {
            id: "sha256:x".into(),
            reference: "busybox".into(),
            lowerdir: String::new(),
            config: ImageConfig { entrypoint: vec!["/init".into()], cmd: vec!["sh".into()], env: vec!["A=1".into()], ..Default::default() },
        };
        let id = random_id();
        let request = CreateRequest { command: vec!["echo".into(), "hi".into()], env: vec!["A=2".into()], ..Default::default() };
        let record = make_record(&id, "n".into(), &request, &image).unwrap();
        assert_eq!(record.args, vec!["/init", "echo", "hi"]);
        assert!(record.env.contains(&"A=2".to_string()) && !record.env.contains(&"A=1".to_string()));
        let request = CreateRequest { entrypoint: Some("/bin/true".into()), ..Default::default() };
        assert_eq!(make_record(&id, "n".into(), &request, &image).unwrap().args, vec!["/bin/true"]);
    }
}
