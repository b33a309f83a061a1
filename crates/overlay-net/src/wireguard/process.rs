//! Finding, starting and stopping the userspace device process. It is
//! started in a session of its own so that a daemon killed with -9 (or
//! its terminal closing) leaves it running; the next daemon finds it by
//! its control socket, whose listener's pid the kernel tells us
//! (SO_PEERCRED).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncBufReadExt;

use super::error::{Result, WireguardError};
use super::userspace::socket_path;

/// How long a new device may take to say `ready`.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a device may take to end after SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// What the control socket of an interface name says.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    /// A process answers on it.
    Running { pid: u32 },
    /// The file is there but nobody listens: its device died.
    Stale,
    Absent,
}

pub fn probe(name: &str) -> Found {
    match UnixStream::connect(socket_path(name)) {
        Ok(stream) => match peer_pid(&stream) {
            Some(pid) => Found::Running { pid },
            None => Found::Stale,
        },
        Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => Found::Stale,
        Err(_) => Found::Absent,
    }
}

/// Whether a link of this name exists in the calling thread's network namespace.
pub fn link_exists(name: &str) -> bool {
    let Ok(name) = std::ffi::CString::new(name) else { return false };
    // SAFETY: if_nametoindex reads a NUL-terminated string.
    unsafe { libc::if_nametoindex(name.as_ptr()) != 0 }
}

/// Removes the socket file of a dead device (never a live one's).
pub fn remove_stale_socket(name: &str) {
    if probe(name) == Found::Stale {
        let _ = std::fs::remove_file(socket_path(name));
    }
}

/// Removes the socket files of every dead device whose name starts with
/// `prefix` (a live device answers and keeps its own): devices killed with
/// SIGKILL, or with the whole machine's processes, cannot remove theirs.
pub fn remove_stale_sockets(prefix: &str) {
    let Ok(entries) = std::fs::read_dir(super::SOCKET_DIR) else { return };
    for entry in entries.flatten() {
        let file = entry.file_name();
        let Some(name) = file.to_str().and_then(|f| f.strip_suffix(".sock")) else { continue };
        if name.starts_with(prefix) {
            remove_stale_socket(name);
        }
    }
}

/// Starts `shoal_exe __wireguard NAME PORT` and waits for it to be ready;
/// its pid.
pub async fn start(name: &str, listen_port: u16, shoal_exe: &Path) -> Result<u32> {
    let start_error = |reason: String| WireguardError::Start { name: name.to_string(), reason };
    let mut command = tokio::process::Command::new(shoal_exe);
    command
        .arg("__wireguard")
        .arg(name)
        .arg(listen_port.to_string())
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Ok(filter) = std::env::var("RUST_LOG") {
        command.env("RUST_LOG", filter);
    }
    // SAFETY: only async-signal-safe setsid between fork and exec: out of
    // the daemon's session and process group, so that signals to those
    // (or the daemon's death) leave the device running.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(|e| start_error(format!("cannot run {} ({e})", shoal_exe.display())))?;
    let pid = child.id().ok_or_else(|| start_error("it exited at once".into()))?;
    let stdout = child.stdout.take().ok_or_else(|| start_error("its output was not captured".into()))?;
    let mut line = String::new();
    let read = tokio::time::timeout(START_TIMEOUT, tokio::io::BufReader::new(stdout).read_line(&mut line)).await;
    // Dropping the handle leaves the process running; tokio reaps it
    // should it end while this process still lives.
    drop(child);
    match read {
        Ok(Ok(_)) if line.trim_end() == "ready" => Ok(pid),
        Ok(Ok(_)) if line.starts_with("error ") => Err(start_error(line["error ".len()..].trim_end().to_string())),
        Ok(Ok(_)) => Err(start_error("it exited before it was ready; its log is on the daemon's stderr".into())),
        Ok(Err(e)) => Err(start_error(format!("reading its start report failed ({e})"))),
        Err(_) => {
            let _ = stop(name, pid).await;
            Err(start_error(format!("it was not ready within {}s", START_TIMEOUT.as_secs())))
        }
    }
}

/// Ends the device process `pid` (SIGTERM, then SIGKILL) and waits for it.
pub async fn stop(name: &str, pid: u32) -> Result<()> {
    let stop_error = |reason: String| WireguardError::Stop { name: name.to_string(), pid, reason };
    let Some(pidfd) = pidfd_open(pid) else {
        // Already gone.
        remove_stale_socket(name);
        return Ok(());
    };
    for (signal, patience) in [(libc::SIGTERM, STOP_TIMEOUT), (libc::SIGKILL, Duration::from_secs(2))] {
        if !send_signal(&pidfd, signal) {
            break; // It ended on its own.
        }
        if wait_for_exit(&pidfd, patience).await {
            break;
        }
        if signal == libc::SIGKILL {
            return Err(stop_error("it did not end after SIGKILL".into()));
        }
        tracing::warn!(interface = name, pid, "the WireGuard device ignored SIGTERM; killing it");
    }
    // Ours to reap if this process started it (ECHILD otherwise).
    // SAFETY: waitpid with WNOHANG on one pid.
    unsafe { libc::waitpid(pid as i32, std::ptr::null_mut(), libc::WNOHANG) };
    remove_stale_socket(name);
    Ok(())
}

fn peer_pid(stream: &UnixStream) -> Option<u32> {
    let mut credentials = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: SO_PEERCRED writes one struct ucred.
    let result = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut credentials as *mut libc::ucred as *mut libc::c_void,
            &mut len,
        )
    };
    (result == 0 && credentials.pid > 0).then_some(credentials.pid as u32)
}

/// A pidfd pins the process: signals cannot reach a later process that
/// reused the pid.
fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    // SAFETY: a fresh fd, ours alone.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// False when the process has already ended.
fn send_signal(pidfd: &OwnedFd, signal: libc::c_int) -> bool {
    // SAFETY: pidfd_send_signal with no siginfo.
    let result = unsafe { libc::syscall(libc::SYS_pidfd_send_signal, pidfd.as_raw_fd(), signal, std::ptr::null::<libc::siginfo_t>(), 0) };
    result == 0
}

async fn wait_for_exit(pidfd: &OwnedFd, patience: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        let mut poll = libc::pollfd { fd: pidfd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: poll on one fd without waiting; a pidfd is readable once the process ended.
        if unsafe { libc::poll(&mut poll, 1, 0) } > 0 {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
