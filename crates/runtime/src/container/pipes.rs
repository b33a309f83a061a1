//! Pipes between the daemon and the processes the launcher forks for it
//! (exec supervisors, cp jails): made close-on-exec, the daemon's ends
//! non-blocking for tokio.

use std::os::fd::{AsRawFd, OwnedFd};

use tokio::net::unix::pipe;

use super::ContainerError;

type Result<T> = std::result::Result<T, ContainerError>;

/// (read end, write end).
pub fn pipe_pair() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| ContainerError::Internal(format!("cannot create a pipe: {e}")))
}

fn set_nonblocking(fd: &OwnedFd) -> Result<()> {
    let flags = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL)
        .map_err(|e| ContainerError::Internal(format!("cannot read file flags: {e}")))?;
    let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(flags))
        .map_err(|e| ContainerError::Internal(format!("cannot make a file non-blocking: {e}")))?;
    Ok(())
}

/// The daemon's reading end.
pub fn receiver(fd: OwnedFd) -> Result<pipe::Receiver> {
    set_nonblocking(&fd)?;
    pipe::Receiver::from_owned_fd_unchecked(fd).map_err(|e| ContainerError::io("watching a pipe", e))
}

/// The daemon's writing end.
pub fn sender(fd: OwnedFd) -> Result<pipe::Sender> {
    set_nonblocking(&fd)?;
    pipe::Sender::from_owned_fd_unchecked(fd).map_err(|e| ContainerError::io("watching a pipe", e))
}
