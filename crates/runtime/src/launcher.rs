//! The shim launcher (`shoal __shim --launcher`): a small, single-threaded
//! process the daemon starts once, which forks one shim per container on
//! request. Exec'ing the large `shoal` binary for every container took
//! about 3 ms of each start (mapping, relocating and faulting in the
//! binary, after forking the multi-threaded daemon); a fork of this
//! already-started process takes a tenth of that.
//!
//! The daemon and the launcher talk over a SOCK_SEQPACKET socket pair (the
//! launcher's stdin), one request per message, tagged by its first byte:
//! - `S` + a container's state directory, with the shim's ready pipe
//!   attached (SCM_RIGHTS): forks a shim;
//! - `E` + an [`ExecRequest`] (JSON), with the process's stdin, stdout,
//!   stderr and the status pipe attached: forks an exec supervisor (see
//!   [`crate::container::exec`]);
//! - `C` + a [`JailRequest`] (JSON), with the archive's pipe and the status
//!   pipe attached: forks a `cp` jail (see [`crate::container::copy::jail`]).
//!
//! The launcher answers with the new process's pid, or a negative errno. The shims are the launcher's
//! children and it lets the kernel reap them (the daemon watches them
//! through pidfds and reads how they ended from their state directories).
//! When the daemon goes away its end of the socket closes and the launcher
//! exits; the shims carry on, as they do after any daemon restart.

use std::ffi::OsString;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::container::copy::jail::{self, JailRequest};
use crate::container::exec::{self, ExecRequest};
use nix::sys::socket::{recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType};

/// Longest request: a state directory path, or an exec's command line and
/// environment.
const MAX_REQUEST: usize = 256 * 1024;
const FORK_SHIM: u8 = b'S';
const FORK_EXEC: u8 = b'E';
const FORK_COPY: u8 = b'C';

/// The daemon's side: a running launcher.
pub struct Launcher {
    socket: OwnedFd,
    process: Child,
}

impl Launcher {
    /// Starts `program leading... --launcher`.
    pub fn start(program: &OsString, leading: &[OsString]) -> std::io::Result<Launcher> {
        let (ours, theirs) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)?;
        let process = Command::new(program)
            .args(leading)
            .arg("--launcher")
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::from(theirs))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        Ok(Launcher { socket: ours, process })
    }

    pub fn pid(&self) -> u32 {
        self.process.id()
    }

    /// Forks a shim for the container in `state_dir`, handing it `ready`
    /// as its ready pipe; returns the shim's pid.
    pub fn start_shim(&mut self, state_dir: &Path, ready: &OwnedFd) -> std::io::Result<i32> {
        self.request(FORK_SHIM, state_dir.as_os_str().as_bytes(), &[ready.as_raw_fd()])
    }

    /// Forks the supervisor of an exec; returns its pid. `stdio` and
    /// `status` as [`crate::container::exec::supervise`] takes them.
    pub fn start_exec(&mut self, request: &ExecRequest, stdio: [&OwnedFd; 3], status: &OwnedFd) -> std::io::Result<i32> {
        let body = exec::encode(request);
        if body.len() + 1 > MAX_REQUEST {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "the command line and environment are over 256 KiB"));
        }
        let fds = [stdio[0].as_raw_fd(), stdio[1].as_raw_fd(), stdio[2].as_raw_fd(), status.as_raw_fd()];
        self.request(FORK_EXEC, &body, &fds)
    }

    /// Forks a `cp` jail; returns its pid. `data` is the archive's pipe
    /// end, `status` where it reports.
    pub fn start_copy(&mut self, request: &JailRequest, data: &OwnedFd, status: &OwnedFd) -> std::io::Result<i32> {
        let body = jail::encode(request);
        if body.len() + 1 > MAX_REQUEST {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "the paths are over 256 KiB"));
        }
        self.request(FORK_COPY, &body, &[data.as_raw_fd(), status.as_raw_fd()])
    }

    fn request(&mut self, tag: u8, body: &[u8], fds: &[RawFd]) -> std::io::Result<i32> {
        let socket = &self.socket;
        let tag = [tag];
        let parts = [IoSlice::new(&tag), IoSlice::new(body)];
        sendmsg::<()>(socket.as_raw_fd(), &parts, &[ControlMessage::ScmRights(fds)], MsgFlags::MSG_NOSIGNAL, None)?;
        let mut answer = [0u8; 4];
        let n = nix::sys::socket::recv(socket.as_raw_fd(), &mut answer, MsgFlags::empty())?;
        if n != answer.len() {
            return Err(std::io::Error::other("the shim launcher closed its socket"));
        }
        match i32::from_le_bytes(answer) {
            pid if pid > 0 => Ok(pid),
            errno => Err(std::io::Error::from_raw_os_error(-errno)),
        }
    }
}

impl Drop for Launcher {
    fn drop(&mut self) {
        // Closing our end ends the launcher (its shims keep running).
        let _ = nix::sys::socket::shutdown(self.socket.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        let _ = self.process.wait();
    }
}

/// The launcher's side: serves requests on stdin until the daemon's end
/// closes.
pub fn serve() -> i32 {
    // Shims are reaped by the kernel; each forked shim restores the default
    // first, as it must wait for its own container.
    // SAFETY: setting a signal disposition; no handler runs.
    unsafe {
        libc::signal(libc::SIGCHLD, libc::SIG_IGN);
    }
    // Every shim starts as a copy of this process: keep it lean.
    crate::shim::shed_startup_memory();
    let socket: RawFd = 0;
    let mut message = vec![0u8; MAX_REQUEST];
    loop {
        let mut space = nix::cmsg_space!([RawFd; 4]);
        let (len, mut fds) = {
            let mut iov = [IoSliceMut::new(&mut message)];
            let received = match recvmsg::<()>(socket, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC) {
                Ok(received) => received,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return 1,
            };
            let mut fds = Vec::new();
            if let Ok(cmsgs) = received.cmsgs() {
                for cmsg in cmsgs {
                    if let ControlMessageOwned::ScmRights(raw) = cmsg {
                        // SAFETY: the kernel just installed these fds for us.
                        fds.extend(raw.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
                    }
                }
            }
            (received.bytes, fds)
        };
        if len == 0 {
            return 0; // The daemon is gone.
        }
        let answer = match (message[0], &message[1..len]) {
            (FORK_SHIM, path) if fds.len() == 1 => {
                fork_shim(PathBuf::from(OsString::from_vec(path.to_vec())), fds.pop().expect("one fd"))
            }
            (FORK_EXEC, body) if fds.len() == 4 => match exec::decode(body) {
                Some(request) => fork_exec(&request, fds),
                None => -libc::EINVAL,
            },
            (FORK_COPY, body) if fds.len() == 2 => match jail::decode(body) {
                Some(request) => fork_copy(&request, fds),
                None => -libc::EINVAL,
            },
            _ => -libc::EINVAL,
        };
        if nix::sys::socket::send(socket, &answer.to_le_bytes(), MsgFlags::MSG_NOSIGNAL).is_err() {
            return 1;
        }
    }
}

/// Forks one shim; its pid, or a negative errno.
fn fork_shim(state_dir: PathBuf, ready: OwnedFd) -> i32 {
    // SAFETY: the launcher is single-threaded, so the child may run
    // ordinary code; it never returns into the serve loop.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Parent { child }) => child.as_raw(),
        Err(e) => -(e as i32),
        Ok(nix::unistd::ForkResult::Child) => {
            name_process();
            let code = match shim_stdio(&state_dir, ready) {
                Ok(()) => crate::shim::run(state_dir),
                Err(_) => 1,
            };
            // SAFETY: ends the forked shim without the launcher's destructors.
            unsafe { libc::_exit(code) }
        }
    }
}

/// Forks one exec supervisor; its pid, or a negative errno. `fds` are the
/// process's stdin, stdout, stderr and the status pipe.
fn fork_exec(request: &ExecRequest, fds: Vec<OwnedFd>) -> i32 {
    // SAFETY: as in `fork_shim`.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Parent { child }) => child.as_raw(),
        Err(e) => -(e as i32),
        Ok(nix::unistd::ForkResult::Child) => {
            let _ = nix::sys::prctl::set_name(c"shoal-exec");
            // SAFETY: restoring a signal's default disposition: the
            // supervisor waits for its process.
            unsafe {
                libc::signal(libc::SIGCHLD, libc::SIG_DFL);
            }
            let mut fds = fds.into_iter();
            let (Some(stdin), Some(stdout), Some(stderr), Some(status)) = (fds.next(), fds.next(), fds.next(), fds.next()) else {
                // SAFETY: ends the fork without the launcher's destructors.
                unsafe { libc::_exit(1) }
            };
            let code = exec::supervise(request, [stdin, stdout, stderr], status);
            // SAFETY: as above.
            unsafe { libc::_exit(code) }
        }
    }
}

/// Forks one `cp` jail; its pid, or a negative errno. `fds` are the
/// archive's pipe end and the status pipe.
fn fork_copy(request: &JailRequest, fds: Vec<OwnedFd>) -> i32 {
    // SAFETY: as in `fork_shim`.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Parent { child }) => child.as_raw(),
        Err(e) => -(e as i32),
        Ok(nix::unistd::ForkResult::Child) => {
            let _ = nix::sys::prctl::set_name(c"shoal-cp");
            let mut fds = fds.into_iter();
            let (Some(data), Some(status)) = (fds.next(), fds.next()) else {
                // SAFETY: ends the fork without the launcher's destructors.
                unsafe { libc::_exit(1) }
            };
            // The daemon's socket has no business in the container's root.
            let _ = nix::unistd::close(0);
            let code = jail::run(request, data, status);
            // SAFETY: as above.
            unsafe { libc::_exit(code) }
        }
    }
}

/// Names the forked shim `shoal-shim` (its comm, as ps -e and top show
/// it); its command line stays the launcher's, since rewriting it needs
/// CAP_SYS_RESOURCE, and its working directory names its container.
fn name_process() {
    let _ = nix::sys::prctl::set_name(c"shoal-shim");
}

/// The file descriptors a shim expects, as the daemon's direct exec gives
/// them: /dev/null in, /dev/null out, its log as stderr, the ready pipe as
/// [`crate::shim::READY_FD`]; default SIGCHLD handling; and its state
/// directory as working directory, so that (with a command line that does
/// not name the container) it can still be told whose shim it is.
fn shim_stdio(state_dir: &Path, ready: OwnedFd) -> std::io::Result<()> {
    std::env::set_current_dir(state_dir)?;
    // SAFETY: restoring a signal's default disposition.
    unsafe {
        libc::signal(libc::SIGCHLD, libc::SIG_DFL);
    }
    let null = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null")?;
    let log = std::fs::File::create(state_dir.join(crate::container::state::SHIM_LOG_FILE))?;
    for (fd, target) in [(null.as_raw_fd(), 0), (null.as_raw_fd(), 1), (log.as_raw_fd(), 2)] {
        nix::unistd::dup2(fd, target)?;
    }
    // The ready pipe must stay open as READY_FD; it may already be there.
    let ready = ready.into_raw_fd();
    if ready != crate::shim::READY_FD {
        nix::unistd::dup2(ready, crate::shim::READY_FD)?;
        let _ = nix::unistd::close(ready);
    }
    Ok(())
}
