//! A new process in a running container (`container exec`), on the
//! process side: the shim launcher forks a supervisor per exec
//! ([`supervise`]), which joins the container's pid namespace and forks the
//! process; that one joins the container's cgroup and its other
//! namespaces, takes the container's user, capabilities, no_new_privs and
//! seccomp filter (with the exec's own user, directory and environment),
//! and executes the command. The supervisor waits for it and reports on
//! the status pipe, one line each:
//! - `pid PID` once the command runs (its host pid), or `err MESSAGE`
//! - `exit CODE` when it ends (128 + the signal when killed by one)
//!
//! Forked from the single-threaded launcher, not from the daemon: joining
//! a mount namespace needs a single-threaded process, and the setup
//! allocates, which a child of a multi-threaded process may not.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

use nix::sched::CloneFlags;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{ForkResult, Pid};
use oci_spec::runtime::Spec;

use super::cgroups::Cgroup;
use super::state::{self, ShimConfig};

/// What to run, as the daemon resolved it (user names to ids, the
/// environment merged with the container's).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ExecRequest {
    /// The container's state directory: its OCI bundle and shim config.
    pub state_dir: PathBuf,
    /// The container's first process, by its host pid.
    pub pid: i32,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    /// stdin is a terminal to make the process's controlling terminal.
    pub tty: bool,
}

/// The namespaces an exec joins, in the order it joins them: the mount
/// namespace last, since after it the host's /proc is out of sight (the
/// files are opened before any join).
const NAMESPACES: [(&str, CloneFlags); 5] = [
    ("cgroup", CloneFlags::CLONE_NEWCGROUP),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("mnt", CloneFlags::CLONE_NEWNS),
];

/// Runs in the launcher's forked child: starts the exec and reports on
/// `status` until the process ends. `stdio` are the process's stdin,
/// stdout and stderr. Returns the supervisor's exit code.
pub fn supervise(request: &ExecRequest, stdio: [OwnedFd; 3], status: OwnedFd) -> i32 {
    let mut status = File::from(status);
    let pid = match start(request, &stdio) {
        Ok(pid) => pid,
        Err(message) => {
            let _ = writeln!(status, "err {}", message.replace('\n', " "));
            return 1;
        }
    };
    drop(stdio);
    let _ = writeln!(status, "pid {}", pid.as_raw());
    let code = loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => break code,
            Ok(WaitStatus::Signaled(_, signal, _)) => break 128 + signal as i32,
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => break 255,
        }
    };
    let _ = writeln!(status, "exit {code}");
    0
}

/// Forks the process into the container; its host pid once it runs the
/// command, or why it could not.
fn start(request: &ExecRequest, stdio: &[OwnedFd; 3]) -> Result<Pid, String> {
    let spec = Spec::load(request.state_dir.join("config.json"))
        .map_err(|e| format!("the container's OCI bundle is unreadable ({e}); recreate the container"))?;
    let shim = state::read_json::<ShimConfig>(&request.state_dir.join(state::SHIM_CONFIG_FILE))
        .ok_or("the container's state is unreadable; recreate the container")?;
    let cgroup = Cgroup::existing(&shim.cgroup_path)?;
    let linux = spec.linux().as_ref().ok_or("the container's spec has no linux section")?;
    let open = |name: &str| {
        File::open(format!("/proc/{}/ns/{name}", request.pid))
            .map_err(|e| format!("cannot open the container's {name} namespace ({e}); is it still running?"))
    };
    let pid_namespace = open("pid")?;
    // All of them, whether the container has its own or shares the
    // host's (joining the namespace one is in changes nothing).
    let mut namespaces = Vec::new();
    for (name, flag) in NAMESPACES {
        namespaces.push((open(name)?, flag, name));
    }
    let mut process = spec.process().clone().ok_or("the container's spec has no process")?;
    let mut user = process.user().clone();
    user.set_uid(request.uid).set_gid(request.gid).set_additional_gids(Some(request.additional_gids.clone()));
    process
        .set_args(Some(request.args.clone()))
        .set_env(Some(request.env.clone()))
        .set_cwd(PathBuf::from(&request.cwd))
        .set_user(user)
        .set_terminal(Some(request.tty));
    let seccomp = linux.seccomp().clone();

    // The pid namespace applies to children only: join, then fork.
    nix::sched::setns(&pid_namespace, CloneFlags::CLONE_NEWPID)
        .map_err(|e| format!("cannot join the container's pid namespace: {e}"))?;
    let (report_read, report_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| format!("cannot create a pipe: {e}"))?;
    // SAFETY: the supervisor is a single-threaded fork of the launcher, so
    // the child may allocate; it never returns.
    match unsafe { nix::unistd::fork() } {
        Err(e) => Err(format!("cannot create the process: {e}")),
        Ok(ForkResult::Child) => {
            drop(report_read);
            let Err(message) = enter(&cgroup, &namespaces, stdio, request.tty, &process, seccomp.as_ref());
            let _ = File::from(report_write).write_all(message.as_bytes());
            // SAFETY: ends the child without the supervisor's destructors.
            unsafe { libc::_exit(127) }
        }
        Ok(ForkResult::Parent { child }) => {
            drop(report_write);
            let mut message = String::new();
            let _ = File::from(report_read).read_to_string(&mut message);
            if message.is_empty() {
                return Ok(child);
            }
            let _ = waitpid(child, None);
            Err(message)
        }
    }
}

/// The forked process: into the cgroup and namespaces, stdio in place, then
/// the container's process settings and exec. Returns only on failure.
fn enter(
    cgroup: &Cgroup,
    namespaces: &[(File, CloneFlags, &str)],
    stdio: &[OwnedFd; 3],
    tty: bool,
    process: &oci_spec::runtime::Process,
    seccomp: Option<&oci_spec::runtime::LinuxSeccomp>,
) -> Result<std::convert::Infallible, String> {
    // Before the cgroup namespace, whose root is the container's cgroup.
    cgroup.join()?;
    for (file, flag, name) in namespaces {
        nix::sched::setns(file, *flag).map_err(|e| format!("cannot join the container's {name} namespace: {e}"))?;
    }
    for (fd, target) in stdio.iter().zip(0..) {
        nix::unistd::dup2(fd.as_raw_fd(), target).map_err(|e| format!("cannot set up the process's input and output: {e}"))?;
    }
    if tty {
        // A session of its own with the terminal as its controlling one, so
        // Ctrl-C reaches it and a shell gets job control.
        nix::unistd::setsid().map_err(|e| format!("cannot start a session: {e}"))?;
        // SAFETY: TIOCSCTTY on stdin, a terminal the daemon opened.
        if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } < 0 {
            return Err(format!("cannot take the terminal: {}", std::io::Error::last_os_error()));
        }
    }
    super::init::become_process(process, seccomp, false)
}

/// The launcher's wire form of a request: JSON. A path or argument that
/// is not valid UTF-8 never gets here (the API takes strings).
pub fn encode(request: &ExecRequest) -> Vec<u8> {
    serde_json::to_vec(request).unwrap_or_default()
}

pub fn decode(bytes: &[u8]) -> Option<ExecRequest> {
    serde_json::from_slice(bytes).ok()
}
