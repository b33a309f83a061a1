//! The per-container shim (`shoal __shim STATE_DIR LIBCONTAINER_ROOT ID
//! CGROUP`), like containerd-shim: it creates and starts the container
//! through youki's libcontainer, is the parent of the container's init,
//! copies its output into the log, and records how it ended. It runs in
//! its own session, so the daemon can die and restart around it.
//!
//! Synchronous on purpose (no async runtime): it must stay a few MiB.
//! It tells the daemon whether the start worked with one line on fd 3:
//! `ok PID` or `err MESSAGE`.

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

use crate::container::logs::{LineBuffer, LogWriter};
use crate::container::model::{ExitInfo, Started};
use crate::container::state;

/// The file descriptor the daemon reads the start result from.
pub const READY_FD: i32 = 3;

/// Entry point; `args` are the arguments after `__shim`.
pub fn main(args: Vec<String>) -> ExitCode {
    let [state_dir, libcontainer_root, id, cgroup] = match <[String; 4]>::try_from(args) {
        Ok(a) => a,
        Err(_) => {
            eprintln!("usage: shoal __shim STATE_DIR LIBCONTAINER_ROOT ID CGROUP (started by the daemon, not by hand)");
            return ExitCode::FAILURE;
        }
    };
    // Outlive the daemon: no controlling terminal, not in its process group,
    // and deaf to the signals a dying terminal or session sends. A no-op
    // handler, not SIG_IGN: ignored signals stay ignored across exec, and a
    // shell that starts with SIGTERM ignored may not trap it (POSIX), so the
    // container would never see `stop`. Handlers are reset by exec.
    let _ = nix::unistd::setsid();
    for sig in [Signal::SIGHUP, Signal::SIGINT, Signal::SIGPIPE, Signal::SIGTERM] {
        // SAFETY: the handler does nothing, so it is async-signal-safe.
        unsafe {
            let _ = signal(sig, SigHandler::Handler(ignore_signal));
        }
    }
    // SAFETY: the daemon passes fd 3 open for us alone (see the manager).
    let mut ready = unsafe { File::from_raw_fd(READY_FD) };
    let state_dir = PathBuf::from(state_dir);
    match supervise(&state_dir, Path::new(&libcontainer_root), &id, &cgroup, &mut ready) {
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

fn supervise(state_dir: &Path, libcontainer_root: &Path, id: &str, cgroup: &str, ready: &mut File) -> Result<(), String> {
    let join_netns = std::env::var_os("SHOAL_SHIM_NETNS");
    let (out_read, out_write) = nix::unistd::pipe().map_err(|e| format!("cannot create a pipe: {e}"))?;
    let (err_read, err_write) = nix::unistd::pipe().map_err(|e| format!("cannot create a pipe: {e}"))?;
    let stdin: OwnedFd = File::open("/dev/null").map_err(|e| format!("cannot open /dev/null: {e}"))?.into();
    let mut container = ContainerBuilder::new(id.to_string(), SyscallType::default())
        .with_root_path(libcontainer_root)
        .map_err(|e| format!("cannot use {}: {e}", libcontainer_root.display()))?
        .with_stdin(stdin)
        .with_stdout(out_write)
        .with_stderr(err_write)
        .as_init(state_dir)
        .with_systemd(false)
        .with_detach(true)
        .build()
        .map_err(|e| format!("cannot create the container: {}", describe(&e)))?;
    let pid = container.pid().ok_or("the container has no process")?;
    if join_netns.is_none() {
        if let Err(e) = loopback_up(pid.as_raw()) {
            let _ = container.delete(true);
            return Err(format!("cannot bring up the container's loopback interface: {e}"));
        }
    }

    if let Err(e) = container.start() {
        let _ = container.delete(true);
        return Err(format!("cannot start the container: {}", describe(&e)));
    }
    let started = Started {
        shim_pid: std::process::id() as i32,
        shim_start_ticks: state::process_start_ticks(std::process::id() as i32).unwrap_or(0),
        pid: pid.as_raw(),
        started_at: state::now_rfc3339(),
    };
    state::write_json(&state_dir.join(state::STARTED_FILE), &started).map_err(|e| format!("cannot record the start: {e}"))?;
    let _ = writeln!(ready, "ok {}", pid.as_raw());

    copy_output(state_dir, out_read, err_read);
    let code = loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => break code,
            Ok(WaitStatus::Signaled(_, sig, _)) => break 128 + sig as i32,
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => break 255,
        }
    };
    let oom_killed = oom_kills(cgroup) > 0;
    delete(&mut container, libcontainer_root, id);
    let exit = ExitInfo { code, oom_killed, finished_at: state::now_rfc3339(), error: None };
    state::write_json(&state_dir.join(state::EXIT_FILE), &exit).map_err(|e| format!("cannot record the exit: {e}"))?;
    Ok(())
}

/// libcontainer's errors nest; the innermost cause is what a user can act on.
fn describe(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        message = inner.to_string();
        source = inner.source();
    }
    message
}

/// Removes libcontainer's state and the container's cgroups.
fn delete(container: &mut Container, libcontainer_root: &Path, id: &str) {
    if let Ok(mut fresh) = Container::load(libcontainer_root.join(id)) {
        let _ = fresh.delete(true);
    } else {
        let _ = container.delete(true);
    }
}

/// Copies both output pipes into the log until the container (and every
/// process holding them) is gone.
fn copy_output(state_dir: &Path, out: OwnedFd, err: OwnedFd) {
    let mut writer = match LogWriter::open(state_dir) {
        Ok(w) => Some(w),
        Err(_) => None,
    };
    let mut streams = [(File::from(out), "stdout", LineBuffer::default(), true), (File::from(err), "stderr", LineBuffer::default(), true)];
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let open: Vec<usize> = (0..2).filter(|i| streams[*i].3).collect();
        if open.is_empty() {
            return;
        }
        let mut fds: Vec<PollFd> = open.iter().map(|i| PollFd::new(streams[*i].0.as_fd(), PollFlags::POLLIN)).collect();
        if poll(&mut fds, PollTimeout::NONE).is_err() {
            continue;
        }
        let readable: Vec<bool> = fds.iter().map(|f| f.revents().is_some_and(|r| !r.is_empty())).collect();
        drop(fds);
        for (slot, i) in open.into_iter().enumerate() {
            if !readable[slot] {
                continue;
            }
            let (file, name, lines, alive) = &mut streams[i];
            match file.read(&mut buf) {
                Ok(0) | Err(_) => {
                    *alive = false;
                    if let (Some(rest), Some(w)) = (lines.finish(), writer.as_mut()) {
                        let _ = w.write(name, &rest);
                    }
                }
                Ok(n) => {
                    for line in lines.push(&buf[..n]) {
                        if let Some(w) = writer.as_mut() {
                            let _ = w.write(name, &line);
                        }
                    }
                }
            }
        }
    }
}

/// How often the kernel's OOM killer struck in the container's cgroup
/// (v1 memory.oom_control, or v2 memory.events).
fn oom_kills(cgroup: &str) -> u64 {
    let cgroup = cgroup.trim_start_matches('/');
    let candidates = [
        (format!("/sys/fs/cgroup/memory/{cgroup}/memory.oom_control"), "oom_kill "),
        (format!("/sys/fs/cgroup/{cgroup}/memory.events"), "oom_kill "),
        (format!("/sys/fs/cgroup/unified/{cgroup}/memory.events"), "oom_kill "),
    ];
    for (path, key) in candidates {
        if let Ok(text) = std::fs::read_to_string(&path) {
            if let Some(count) = text.lines().find_map(|l| l.strip_prefix(key)).and_then(|n| n.trim().parse().ok()) {
                return count;
            }
        }
    }
    0
}


/// A new network namespace starts with `lo` down; containers expect
/// 127.0.0.1 to work, as in docker. Done from a thread that joins the
/// container's namespace, so the shim itself stays where it is.
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
            if libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&socket), libc::SIOCGIFFLAGS, &mut request) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            if libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&socket), libc::SIOCSIFFLAGS, &request) < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    })
    .join()
    .unwrap_or_else(|_| Err(std::io::Error::other("the loopback thread panicked")))
}
