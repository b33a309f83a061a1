//! The processes behind a container: shims forked by the launcher (or
//! exec'd when none can be had), exec supervisors, and watching shims end.

use super::*;
use super::pause;

impl ContainerManager {
    pub(super) fn spawn_shim(&self, entry: &Entry, ready_write: OwnedFd) -> Result<i32> {
        if let Some(pid) = self.fork_shim(&entry.dir, &ready_write) {
            return Ok(pid);
        }
        self.exec_shim(entry, ready_write)
    }

    /// A shim forked by the launcher (the fast way); None if no launcher
    /// can be had, after one restart of a launcher that died.
    fn fork_shim(&self, dir: &Path, ready_write: &OwnedFd) -> Option<i32> {
        let (program, leading) = self.config.shim_command.split_first()?;
        let mut launcher = self.launcher.lock().unwrap_or_else(|p| p.into_inner());
        for _ in 0..2 {
            if launcher.is_none() {
                match Launcher::start(program, leading) {
                    Ok(started) => *launcher = Some(started),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot start the shim launcher; starting shims directly");
                        return None;
                    }
                }
            }
            match launcher.as_mut()?.start_shim(dir, ready_write) {
                Ok(pid) => return Some(pid),
                Err(e) => {
                    tracing::warn!(error = %e, "the shim launcher failed; restarting it");
                    *launcher = None;
                }
            }
        }
        None
    }

    /// Where a running container is, for `exec`: its state directory and
    /// its first process's host pid; an error naming it if it is not
    /// running.
    pub(crate) fn running(&self, name: &str) -> Result<(String, PathBuf, i32)> {
        let entry = self.find(name)?;
        let phase = entry.phase.borrow().clone();
        match phase {
            Phase::Running(_) if pause::is_paused(&entry) => Err(ContainerError::InvalidRequest(format!(
                "container {} is paused; unpause it first (`shoal container unpause {}`)",
                entry.record.name, entry.record.name
            ))),
            Phase::Running(started) => Ok((entry.record.name.clone(), entry.dir.clone(), started.pid)),
            _ => Err(ContainerError::InvalidRequest(format!(
                "container {} is not running; see how it ended with `shoal container inspect {}`",
                entry.record.name, entry.record.name
            ))),
        }
    }

    /// The container's name and its root as seen from here: a running
    /// init's root (its volumes mounted in it), else the root filesystem,
    /// mounted from create to removal.
    pub(crate) fn copy_root(&self, name: &str) -> Result<(String, PathBuf)> {
        let entry = self.find(name)?;
        let root = match &*entry.phase.borrow() {
            Phase::Running(started) => PathBuf::from(format!("/proc/{}/root", started.pid)),
            _ => entry.dir.join("rootfs"),
        };
        Ok((entry.record.name.clone(), root))
    }

    /// Attaches to the running container `name`'s stdio (`attach`).
    pub fn attach(&self, name: &str) -> Result<crate::container::Attachment> {
        let entry = self.find(name)?;
        if !matches!(*entry.phase.borrow(), Phase::Running(_)) {
            return Err(ContainerError::InvalidRequest(format!(
                "container {} is not running; start it with `shoal container start -ai {}`",
                entry.record.name, entry.record.name
            )));
        }
        let stream = crate::container::attach::connect(&entry.dir)?;
        Ok(crate::container::Attachment { stream, tty: entry.record.tty, open_stdin: entry.record.open_stdin })
    }

    /// Forks an exec's supervisor through the launcher (see
    /// [`super::exec`]); its pid.
    pub(crate) fn launch_exec(&self, request: &crate::container::exec::ExecRequest, stdio: [&OwnedFd; 3], status: &OwnedFd) -> Result<i32> {
        self.with_launcher("the exec", |launcher| launcher.start_exec(request, stdio, status))
    }

    /// Forks a `cp` jail through the launcher (see
    /// [`crate::container::copy::jail`]); its pid.
    pub(crate) fn launch_copy(&self, request: &crate::container::copy::jail::JailRequest, data: &OwnedFd, status: &OwnedFd) -> Result<i32> {
        self.with_launcher("the copy", |launcher| launcher.start_copy(request, data, status))
    }

    /// Runs `fork` on the launcher, starting one if none runs and once
    /// more after a launcher that failed.
    fn with_launcher(&self, what: &str, mut fork: impl FnMut(&mut Launcher) -> std::io::Result<i32>) -> Result<i32> {
        let (program, leading) =
            self.config.shim_command.split_first().ok_or_else(|| ContainerError::Internal("no shim command configured".into()))?;
        let mut launcher = self.launcher.lock().unwrap_or_else(|p| p.into_inner());
        let mut last_error = String::new();
        for _ in 0..2 {
            if launcher.is_none() {
                *launcher = Some(Launcher::start(program, leading).map_err(|e| ContainerError::io("starting the shim launcher", e))?);
            }
            match launcher.as_mut().map(&mut fork) {
                Some(Ok(pid)) => return Ok(pid),
                Some(Err(e)) if e.kind() == std::io::ErrorKind::InvalidInput => {
                    return Err(ContainerError::InvalidRequest(format!("{e}; shorten them")))
                }
                Some(Err(e)) => {
                    last_error = e.to_string();
                    *launcher = None;
                }
                None => {}
            }
        }
        Err(ContainerError::Internal(format!("the shim launcher cannot start {what}: {last_error}")))
    }

    /// The pid of the process forking the shims, once one runs.
    pub fn shim_launcher_pid(&self) -> Option<u32> {
        self.launcher.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(Launcher::pid)
    }

    /// A shim exec'd by the daemon itself.
    fn exec_shim(&self, entry: &Entry, ready_write: OwnedFd) -> Result<i32> {
        let shim_log =
            std::fs::File::create(entry.dir.join(SHIM_LOG_FILE)).map_err(|e| ContainerError::io("creating the shim log", e))?;
        let (program, leading) =
            self.config.shim_command.split_first().ok_or_else(|| ContainerError::Internal("no shim command configured".into()))?;
        let mut command = std::process::Command::new(program);
        command
            .args(leading)
            .arg(&entry.dir)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(shim_log);
        let ready_fd = ready_write.as_raw_fd();
        // SAFETY: only async-signal-safe calls between fork and exec: dup2
        // gives the shim the write end as READY_FD without CLOEXEC, setsid
        // takes it out of the daemon's session and process group so that
        // killing those leaves the shim (and its container) running.
        unsafe {
            command.pre_exec(move || {
                if libc::setsid() < 0 || libc::dup2(ready_fd, crate::shim::READY_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .map_err(|e| ContainerError::io(format!("starting the shim {}", program.to_string_lossy()), e))?;
        // Reaped in `watch_pidfd`, which also covers shims we did not start.
        Ok(child.id() as i32)
    }

    /// Watches a shim the daemon did not start (after a restart).
    pub(super) fn watch_shim(self: &Arc<Self>, entry: Arc<Entry>, shim_pid: i32) {
        match pidfd_open(shim_pid) {
            Ok(pidfd) => self.watch_pidfd(entry, shim_pid, pidfd),
            Err(_) => {
                let exit = state::read_json::<ExitInfo>(&entry.dir.join(EXIT_FILE)).unwrap_or_else(shim_vanished);
                entry.exited(exit);
            }
        }
    }

    /// Waits for the shim to end (it outlives the container by the time
    /// it takes to clean up), then records the exit and honours `--rm`.
    pub(super) fn watch_pidfd(self: &Arc<Self>, entry: Arc<Entry>, shim_pid: i32, pidfd: OwnedFd) {
        let manager = Arc::downgrade(self);
        let mut shutdown = self.shutdown.subscribe();
        tokio::spawn(async move {
            tokio::select! {
                _ = reap(pidfd) => {}
                // The manager is gone (daemon shutting down): leave the
                // shim running for the next one.
                _ = shutdown.changed() => return,
            }
            // Ours to reap if we started it; ECHILD after a daemon restart.
            let _ = nix::sys::wait::waitpid(Pid::from_raw(shim_pid), Some(nix::sys::wait::WaitPidFlag::WNOHANG));
            let exit = match state::read_json::<ExitInfo>(&entry.dir.join(EXIT_FILE)) {
                Some(exit) => exit,
                None => {
                    if let Some(manager) = manager.upgrade() {
                        manager.release_runtime_state(&entry.record.id);
                    }
                    shim_vanished()
                }
            };
            entry.exited(exit);
            if entry.record.auto_remove {
                if let Some(manager) = Weak::upgrade(&manager) {
                    if let Err(e) = manager.remove(&entry.record.id, true).await {
                        tracing::warn!(container = %entry.record.id, error = %e, "auto-removing");
                    }
                }
            }
        });
    }
}

/// Reads the shim's one-line answer from the ready pipe.
/// The shim's lines on its ready pipe: `attach` (when asked to wait for
/// the daemon's attach), then `ok PID` or `err MESSAGE`. The shim keeps
/// running, so lines are read one at a time rather than to EOF; a shim
/// that dies without a word ends the pipe (an empty line).
pub(super) struct ReadyLines {
    pipe: tokio::net::unix::pipe::Receiver,
    pending: Vec<u8>,
}

impl ReadyLines {
    pub(super) fn new(ready: OwnedFd) -> std::io::Result<ReadyLines> {
        Ok(ReadyLines { pipe: tokio::net::unix::pipe::Receiver::from_owned_fd(ready)?, pending: Vec::new() })
    }

    pub(super) async fn next(&mut self) -> std::io::Result<String> {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                return Ok(String::from_utf8_lossy(&line).into_owned());
            }
            let n = self.pipe.read(&mut buf).await?;
            if n == 0 {
                return Ok(String::from_utf8_lossy(&std::mem::take(&mut self.pending)).into_owned());
            }
            self.pending.extend_from_slice(&buf[..n]);
        }
    }
}

/// Resolves when the process behind `pidfd` has ended.
pub(super) async fn reap(pidfd: OwnedFd) {
    // SAFETY: AsyncFd owns the pidfd while it is registered, so the fd
    // cannot be closed (and its number reused) under the reactor.
    if let Ok(fd) = unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) } {
        let _ = fd.readable().await;
    }
}

pub(super) fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this fd, owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
