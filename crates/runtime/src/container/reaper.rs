//! `--init`: the container's PID 1 stays a small reaper instead of
//! becoming the command, as docker's tini does. A command that is not
//! written to be PID 1 then gets signals as anywhere else (the kernel
//! drops signals PID 1 has no handler for, so a plain `sleep` as PID 1
//! ignores `docker stop`), and the orphans it or `exec` leave behind are
//! reaped instead of piling up as zombies.
//!
//! The reaper is the container's first process itself, forked right
//! before exec: it runs no binary from the image, so it works in any
//! image, and it keeps the user, capabilities and seccomp filter already
//! applied to the command.


use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

/// Forks: returns in the child, which goes on to exec the command; the
/// parent reaps and forwards signals until the command exits, then exits
/// with its status (128 + the signal's number when a signal ended it).
pub fn fork_reaper(terminal: bool) -> Result<(), String> {
    // Blocked before the fork so no signal slips between fork and wait;
    // blocked signals reach even a PID 1 that has no handler for them.
    let all = SigSet::all();
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&all), None)
        .map_err(|e| format!("cannot block signals for the init process: {e}"))?;
    // SAFETY: the process is single-threaded here (the container's first
    // process, cloned without threads), so the child may run anything.
    match unsafe { fork() }.map_err(|e| format!("cannot start the command under the init process: {e}"))? {
        ForkResult::Child => {
            if terminal {
                take_terminal_foreground();
            }
            nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
                .map_err(|e| format!("cannot unblock signals for the command: {e}"))?;
            Ok(())
        }
        ForkResult::Parent { child } => reap(child),
    }
}

/// Gives the command a process group of its own in the foreground of its
/// terminal, so Ctrl-C reaches it once (from the terminal), not twice
/// (from the terminal and forwarded by the reaper).
fn take_terminal_foreground() {
    let me = nix::unistd::getpid();
    let _ = nix::unistd::setpgid(me, me);
    // SAFETY: TIOCSPGRP on stdin, the container's terminal, with the
    // caller's own process group; SIGTTOU is blocked at this point, so
    // doing it from a background group does not stop the process.
    unsafe { libc::tcsetpgrp(0, me.as_raw()) };
}

fn reap(command: Pid) -> ! {
    // Only the standard streams: the start's error pipe must close here
    // (the command's copy closes on exec) for the shim to see it started.
    // SAFETY: closes descriptors this process owns and no longer uses.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    let all = SigSet::all();
    loop {
        let signal = match all.wait() {
            Ok(signal) => signal,
            Err(_) => continue,
        };
        if signal != Signal::SIGCHLD {
            let _ = kill(command, signal);
            continue;
        }
        // Every child that has exited: the command, or an orphan.
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == command => std::process::exit(code),
                Ok(WaitStatus::Signaled(pid, signal, _)) if pid == command => std::process::exit(128 + signal as i32),
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
}
