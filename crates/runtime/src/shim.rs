//! The per-container shim (`shoal __shim STATE_DIR`), like
//! containerd-shim: it creates and starts the container through youki's
//! libcontainer, is the parent of the container's init, copies its output
//! into the log, records how it ended and cleans up. The daemon starts it
//! in a session of its own, so the daemon can die and restart around it.
//!
//! Synchronous on purpose (no async runtime): it must stay a few MiB.
//! It tells the daemon whether the start worked with one line on
//! [`READY_FD`]: `ok PID` or `err MESSAGE`.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::syscall::syscall::SyscallType;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{signal, SigHandler, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

use crate::container::cgroups;
use crate::container::logs::{LineBuffer, LogStream, LogWriter};
use crate::container::model::{ExitInfo, Started};
use crate::container::state::{self, ShimConfig};

/// The file descriptor the daemon reads the start result from.
pub const READY_FD: i32 = 3;

/// Entry point; `args` are the arguments after the shim's own name
/// (`shoal __shim ARGS` or `shoal-shim ARGS`): the state directory.
pub fn main(args: Vec<String>) -> ExitCode {
    let [state_dir] = match <[String; 1]>::try_from(args) {
        Ok(a) => a,
        Err(_) => {
            eprintln!("usage: shoal __shim STATE_DIR (started by the daemon, not by hand)");
            return ExitCode::FAILURE;
        }
    };
    // Outlive the daemon: a session (and process group) of our own, so a
    // signal to the daemon's group or the end of its terminal session
    // does not reach us. The daemon already did this before exec (EPERM
    // then: we lead the session); done again for any other launcher.
    let _ = nix::unistd::setsid();
    // Stay deaf to the signals a dying terminal or daemon session sends.
    // A no-op handler, not SIG_IGN: ignored signals stay ignored across
    // exec, and a shell started with SIGTERM ignored cannot trap it, so
    // the container would never see `stop`. Handlers are reset by exec.
    for sig in [Signal::SIGHUP, Signal::SIGINT, Signal::SIGPIPE, Signal::SIGTERM] {
        // SAFETY: the handler does nothing, so it is async-signal-safe.
        unsafe {
            let _ = signal(sig, SigHandler::Handler(ignore_signal));
        }
    }
    // SAFETY: the daemon passes READY_FD open for us alone (see the manager).
    let mut ready = unsafe { File::from_raw_fd(READY_FD) };
    let state_dir = PathBuf::from(state_dir);
    let config = match state::read_json::<ShimConfig>(&state_dir.join(state::SHIM_CONFIG_FILE)) {
        Some(config) => config,
        None => {
            let _ = writeln!(ready, "err the container's state in {} is unreadable; remove it", state_dir.display());
            return ExitCode::FAILURE;
        }
    };
    match supervise(&state_dir, &config, &mut ready) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            let exit = ExitInfo { code: 127, oom_killed: false, finished_at: state::now_rfc3339(), error: Some(message.clone()) };
            let _ = state::write_json(&state_dir.join(state::EXIT_FILE), &exit);
            let _ = writeln!(ready, "err {}", message.replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

extern "C" fn ignore_signal(_: i32) {}

fn supervise(state_dir: &Path, config: &ShimConfig, ready: &mut File) -> Result<(), String> {
    let (out_read, out_write) = nix::unistd::pipe().map_err(|e| format!("cannot create a pipe: {e}"))?;
    let (err_read, err_write) = nix::unistd::pipe().map_err(|e| format!("cannot create a pipe: {e}"))?;
    let stdin: OwnedFd = File::open("/dev/null").map_err(|e| format!("cannot open /dev/null: {e}"))?.into();
    let built = ContainerBuilder::new(config.id.clone(), SyscallType::default())
        .with_root_path(&config.libcontainer_root)
        .map_err(|e| format!("cannot use {}: {}", config.libcontainer_root.display(), describe(&e)))
        .and_then(|builder| {
            builder
                .with_stdin(stdin)
                .with_stdout(out_write)
                .with_stderr(err_write)
                .as_init(state_dir)
                .with_systemd(false)
                .with_detach(true)
                .build()
                .map_err(|e| format!("cannot create the container: {}", describe(&e)))
        });
    // The builder has dropped its copies of the write ends; the
    // container's processes hold the only ones, so EOF means they are gone.
    let mut container = match built {
        Ok(container) => container,
        Err(message) => {
            release(config, None);
            return Err(message);
        }
    };
    let Some(pid) = container.pid() else {
        release(config, Some(&mut container));
        return Err("libcontainer reported no process for the container".into());
    };
    if config.loopback_up {
        if let Err(e) = loopback_up(pid.as_raw()) {
            release(config, Some(&mut container));
            return Err(format!("cannot bring up the container's loopback interface: {e}"));
        }
    }
    if let Err(e) = container.start() {
        release(config, Some(&mut container));
        return Err(format!("cannot start the container: {}", describe(&e)));
    }
    let shim_pid = std::process::id() as i32;
    let started = Started {
        shim_pid,
        shim_start_ticks: state::process_start_ticks(shim_pid).unwrap_or(0),
        pid: pid.as_raw(),
        started_at: state::now_rfc3339(),
    };
    if let Err(e) = state::write_json(&state_dir.join(state::STARTED_FILE), &started) {
        let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
        let _ = waitpid(pid, None);
        release(config, Some(&mut container));
        return Err(format!("cannot record the start in {}: {e}", state_dir.display()));
    }
    let _ = writeln!(ready, "ok {}", pid.as_raw());

    copy_output(state_dir, config, out_read, err_read);
    let code = wait_exit(pid);
    let oom_killed = cgroups::oom_kills(&config.cgroup_path) > 0;
    release(config, Some(&mut container));
    let exit = ExitInfo { code, oom_killed, finished_at: state::now_rfc3339(), error: None };
    state::write_json(&state_dir.join(state::EXIT_FILE), &exit).map_err(|e| format!("cannot record the exit: {e}"))?;
    Ok(())
}

/// The exit status, or 128 + signal number as shells report it.
fn wait_exit(pid: Pid) -> i32 {
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => return code,
            Ok(WaitStatus::Signaled(_, sig, _)) => return 128 + sig as i32,
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return 255,
        }
    }
}

/// libcontainer's errors nest: "failed to build" > "failed to create
/// container" > the cause. The chain, deduplicated, reads as one sentence.
fn describe(error: &dyn std::error::Error) -> String {
    let mut parts = vec![error.to_string()];
    let mut source = error.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = inner.source();
    }
    parts.join(": ")
}

/// Removes libcontainer's state and the container's cgroups (killing
/// anything left in them).
fn release(config: &ShimConfig, container: Option<&mut Container>) {
    if let Some(container) = container {
        let _ = container.delete(true);
    }
    // A failed build can leave both behind; so can a delete that failed.
    cgroups::remove(&config.cgroup_path);
    let _ = std::fs::remove_dir_all(config.libcontainer_root.join(&config.id));
}

/// Copies both output pipes into the log until every process holding
/// them is gone (the container's pid namespace dies with its init).
fn copy_output(state_dir: &Path, config: &ShimConfig, out: OwnedFd, err: OwnedFd) {
    let mut writer = LogWriter::open(state_dir, config.log_rotation).ok();
    let mut log = |stream: LogStream, line: &[u8]| {
        if let Some(w) = writer.as_mut() {
            let _ = w.write(stream, line);
        }
    };
    struct Pipe {
        file: File,
        stream: LogStream,
        lines: LineBuffer,
        open: bool,
    }
    let mut pipes = [
        Pipe { file: File::from(out), stream: LogStream::Stdout, lines: LineBuffer::default(), open: true },
        Pipe { file: File::from(err), stream: LogStream::Stderr, lines: LineBuffer::default(), open: true },
    ];
    let mut buf = vec![0u8; 32 * 1024];
    while pipes.iter().any(|p| p.open) {
        let mut ready = [false; 2];
        {
            let mut fds: Vec<(usize, PollFd)> = pipes
                .iter()
                .enumerate()
                .filter(|(_, p)| p.open)
                .map(|(i, p)| (i, PollFd::new(p.file.as_fd(), PollFlags::POLLIN)))
                .collect();
            let mut polled: Vec<PollFd> = fds.iter().map(|(_, fd)| *fd).collect();
            match poll(&mut polled, PollTimeout::NONE) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return,
            }
            for ((i, _), fd) in fds.iter_mut().zip(&polled) {
                ready[*i] = fd.revents().is_some_and(|r| !r.is_empty());
            }
        }
        for pipe in pipes.iter_mut().filter(|p| p.open) {
            if !ready[pipe.stream as usize] {
                continue;
            }
            match pipe.file.read(&mut buf) {
                Ok(0) | Err(_) => {
                    pipe.open = false;
                    if let Some(rest) = pipe.lines.finish() {
                        log(pipe.stream, &rest);
                    }
                }
                Ok(n) => {
                    let stream = pipe.stream;
                    pipe.lines.push(&buf[..n], |line| log(stream, line));
                }
            }
        }
    }
}

/// A new network namespace starts with `lo` down; containers expect
/// 127.0.0.1 to work, as in docker (libcontainer leaves it down). Done
/// from a thread that joins the container's namespace, so the shim itself
/// stays where it is.
fn loopback_up(pid: i32) -> std::io::Result<()> {
    let netns = File::open(format!("/proc/{pid}/ns/net"))?;
    std::thread::spawn(move || -> std::io::Result<()> {
        nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET)?;
        // SAFETY: plain ioctls on a socket we own, with a zeroed ifreq
        // whose name is set within bounds.
        unsafe {
            let socket = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
            if socket < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let socket = OwnedFd::from_raw_fd(socket);
            let mut request: libc::ifreq = std::mem::zeroed();
            for (dst, src) in request.ifr_name.iter_mut().zip(b"lo\0") {
                *dst = *src as libc::c_char;
            }
            let fd = std::os::fd::AsRawFd::as_raw_fd(&socket);
            if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut request) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            if libc::ioctl(fd, libc::SIOCSIFFLAGS, &request) < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    })
    .join()
    .unwrap_or_else(|_| Err(std::io::Error::other("the loopback thread panicked")))
}
