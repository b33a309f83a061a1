//! `container exec` on the daemon's side: resolves what to run against the
//! container (its user, environment and working directory unless the exec
//! names its own), gives the process a pseudo-terminal or pipes, has the
//! launcher start it (see [`super::exec`]) and hands back its I/O and a
//! way to wait for its exit code.

use std::os::fd::{AsRawFd, OwnedFd};

use oci_spec::runtime::Spec;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::unix::pipe;

use super::exec::ExecRequest;
use super::pipes::{pipe_pair, receiver, sender};
use super::{rootfs, ContainerError, ContainerManager};

type Result<T> = std::result::Result<T, ContainerError>;

/// How long the launcher and supervisor may take to report the start.
const START_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What `exec` was asked to run; unset fields take the container's.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    pub command: Vec<String>,
    /// `KEY=VALUE`, over the container's environment.
    pub env: Vec<String>,
    /// docker's `user[:group]` forms, resolved in the container.
    pub user: Option<String>,
    pub workdir: Option<String>,
    /// A pseudo-terminal for stdin, stdout and stderr (`-t`).
    pub tty: bool,
    /// Keep stdin open (`-i`); without it the process reads /dev/null.
    pub stdin: bool,
    /// Nobody will read or write (`-d`): stdio is /dev/null.
    pub detach: bool,
}

/// The daemon's ends of a running exec's input and output.
pub enum ExecIo {
    /// The terminal's master side; its output is stdout and stderr merged,
    /// as on any terminal.
    Terminal(Terminal),
    Pipes { stdin: Option<pipe::Sender>, stdout: pipe::Receiver, stderr: pipe::Receiver },
    /// Started with `detach`: nothing to relay.
    Detached,
}

pub struct Terminal {
    pub output: pipe::Receiver,
    pub input: pipe::Sender,
    pub window: Window,
}

/// The terminal's size, as the process sees it.
pub struct Window {
    master: OwnedFd,
}

impl Window {
    /// Tells the process its terminal is now `rows` x `columns` (it gets
    /// SIGWINCH, as under any terminal emulator).
    pub fn resize(&self, rows: u16, columns: u16) -> std::io::Result<()> {
        let size = libc::winsize { ws_row: rows, ws_col: columns, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: TIOCSWINSZ on a terminal fd we own, with a valid winsize.
        if unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &size) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

/// A started exec.
pub struct ExecProcess {
    /// The process's host pid.
    pub pid: i32,
    pub io: ExecIo,
    pub exit: ExecExit,
}

/// How a started exec ends.
pub struct ExecExit {
    status: BufReader<pipe::Receiver>,
}

impl ExecExit {
    /// Waits for the process to end: its exit code (128 + the signal if
    /// one killed it).
    pub async fn wait(&mut self) -> Result<i32> {
        let mut line = String::new();
        loop {
            line.clear();
            let read = self.status.read_line(&mut line).await.map_err(|e| ContainerError::io("reading an exec's status", e))?;
            if read == 0 {
                // The supervisor died without a word: killed with the
                // container, most likely, which took the process too.
                return Ok(137);
            }
            if let Some(code) = line.trim().strip_prefix("exit ") {
                return Ok(code.parse().unwrap_or(255));
            }
        }
    }
}

/// Reads a terminal's master side. Once every process holding the other
/// side is gone, Linux answers EIO instead of end-of-file; callers treat
/// both alike through this.
pub fn is_end_of_terminal(error: &std::io::Error) -> bool {
    error.raw_os_error() == Some(libc::EIO)
}

impl ContainerManager {
    /// Starts `options.command` inside the running container `name` (a
    /// name, id or unique id prefix).
    pub async fn exec(&self, name: &str, options: ExecOptions) -> Result<ExecProcess> {
        if options.command.is_empty() {
            return Err(ContainerError::InvalidRequest("exec needs a command to run, e.g. `shoal exec web sh`".into()));
        }
        let (name, dir, pid) = self.running(name)?;
        let request = resolve(&name, &dir, pid, &options)?;

        let (io, child_stdio) = match (options.detach, options.tty) {
            (true, _) => (ExecIo::Detached, [dev_null()?, dev_null()?, dev_null()?]),
            (false, true) => terminal()?,
            (false, false) => pipes(options.stdin)?,
        };
        let (status_read, status_write) = pipe_pair()?;
        let [stdin, stdout, stderr] = &child_stdio;
        self.launch_exec(&request, [stdin, stdout, stderr], &status_write)?;
        // Only the process may hold its ends now, so end-of-file means it
        // (and whatever it started) is gone.
        drop(child_stdio);
        drop(status_write);

        let mut status = BufReader::new(receiver(status_read)?);
        let mut line = String::new();
        let read = tokio::time::timeout(START_TIMEOUT, status.read_line(&mut line))
            .await
            .map_err(|_| ContainerError::StartFailed(format!("the exec in {name} did not start within {}s", START_TIMEOUT.as_secs())))?
            .map_err(|e| ContainerError::io("reading an exec's status", e))?;
        let line = line.trim();
        if let Some(pid) = line.strip_prefix("pid ") {
            return Ok(ExecProcess { pid: pid.parse().unwrap_or(0), io, exit: ExecExit { status } });
        }
        let reason = match line.strip_prefix("err ") {
            Some(reason) => reason.to_string(),
            None if read == 0 => "the exec's supervisor ended without a word".to_string(),
            None => line.to_string(),
        };
        Err(ContainerError::StartFailed(format!("cannot exec in container {name}: {reason}")))
    }
}

/// The request with the container's defaults filled in.
fn resolve(name: &str, dir: &std::path::Path, pid: i32, options: &ExecOptions) -> Result<ExecRequest> {
    let spec = Spec::load(dir.join("config.json"))
        .map_err(|e| ContainerError::Internal(format!("the OCI bundle of container {name} is unreadable: {e}")))?;
    let process = spec.process().clone().ok_or_else(|| ContainerError::Internal(format!("container {name} has no process")))?;
    let (uid, gid, additional_gids) = match options.user.as_deref().filter(|u| !u.is_empty()) {
        Some(user) => {
            let resolved = rootfs::resolve_user(&dir.join("rootfs"), user)?;
            (resolved.uid, resolved.gid, resolved.additional_gids)
        }
        None => {
            let user = process.user();
            (user.uid(), user.gid(), user.additional_gids().clone().unwrap_or_default())
        }
    };
    let mut env = process.env().clone().unwrap_or_default();
    for pair in &options.env {
        let key = pair.split_once('=').map_or(pair.as_str(), |(k, _)| k);
        if key.is_empty() {
            return Err(ContainerError::InvalidRequest(format!("environment variable {pair:?} has no name; pass KEY=VALUE")));
        }
        env.retain(|existing| existing.split_once('=').map_or(existing.as_str(), |(k, _)| k) != key);
        env.push(pair.clone());
    }
    if options.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
    }
    let cwd = match options.workdir.as_deref().filter(|w| !w.is_empty()) {
        Some(dir) if !dir.starts_with('/') => {
            return Err(ContainerError::InvalidRequest(format!("working directory {dir:?} is not absolute; pass a path starting with /")))
        }
        Some(dir) => dir.to_string(),
        None => process.cwd().to_string_lossy().into_owned(),
    };
    Ok(ExecRequest {
        state_dir: dir.to_path_buf(),
        pid,
        args: options.command.clone(),
        env,
        cwd,
        uid,
        gid,
        additional_gids,
        tty: options.tty,
    })
}

/// A pseudo-terminal: our side, and its other side three times over.
fn terminal() -> Result<(ExecIo, [OwnedFd; 3])> {
    let pty = nix::pty::openpty(None, None).map_err(|e| ContainerError::Internal(format!("cannot open a pseudo-terminal: {e}")))?;
    let dup = |fd: &OwnedFd| fd.try_clone().map_err(|e| ContainerError::io("duplicating a terminal", e));
    let (master_in, master_out, master) = (dup(&pty.master)?, dup(&pty.master)?, pty.master);
    // Ours must not leak into the process; openpty's are inheritable.
    for fd in [&master, &master_in, &master_out, &pty.slave] {
        nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC))
            .map_err(|e| ContainerError::Internal(format!("cannot set close-on-exec: {e}")))?;
    }
    let stdio = [dup(&pty.slave)?, dup(&pty.slave)?, pty.slave];
    Ok((ExecIo::Terminal(Terminal { output: receiver(master_out)?, input: sender(master_in)?, window: Window { master } }), stdio))
}

fn dev_null() -> Result<OwnedFd> {
    let null = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null").map_err(|e| ContainerError::io("opening /dev/null", e))?;
    Ok(OwnedFd::from(null))
}

/// Pipes for stdout and stderr, and for stdin if the exec keeps it open.
fn pipes(keep_stdin: bool) -> Result<(ExecIo, [OwnedFd; 3])> {
    let (stdin_child, stdin) = if keep_stdin {
        let (read, write) = pipe_pair()?;
        (read, Some(sender(write)?))
    } else {
        (dev_null()?, None)
    };
    let (stdout, stdout_child) = pipe_pair()?;
    let (stderr, stderr_child) = pipe_pair()?;
    let io = ExecIo::Pipes { stdin, stdout: receiver(stdout)?, stderr: receiver(stderr)? };
    Ok((io, [stdin_child, stdout_child, stderr_child]))
}
