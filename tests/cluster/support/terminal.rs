//! A command run under a pseudo-terminal, as a user at a terminal runs it:
//! the test types into it and reads what the terminal shows.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Terminal {
    master: std::fs::File,
    child: Child,
    /// Everything the terminal has shown so far.
    pub screen: String,
}

impl Terminal {
    /// Starts `program args` as the session leader of a new terminal of
    /// 24 x 80.
    pub fn spawn(program: &str, args: &[&str]) -> Terminal {
        let size = nix::pty::Winsize { ws_row: 24, ws_col: 80, ws_xpixel: 0, ws_ypixel: 0 };
        let pty = nix::pty::openpty(Some(&size), None).expect("openpty");
        let slave: OwnedFd = pty.slave;
        let stdio = || Stdio::from(slave.try_clone().expect("dup the terminal"));
        let mut command = Command::new(program);
        command.args(args).stdin(stdio()).stdout(stdio()).stderr(stdio());
        // SAFETY: setsid and an ioctl on stdin, both async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().unwrap_or_else(|e| panic!("starting {program} under a terminal: {e}"));
        drop(slave);
        Terminal { master: std::fs::File::from(pty.master), child, screen: String::new() }
    }

    /// Types `keys`.
    pub fn send(&mut self, keys: &str) {
        self.master.write_all(keys.as_bytes()).expect("typing into the terminal");
    }

    /// Reads until the screen shows `text` (panics after `timeout`, with
    /// the screen so far).
    pub fn expect(&mut self, text: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.screen.contains(text) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "the terminal never showed {text:?}; it shows:\n{}", self.screen);
            self.read_for(left.min(Duration::from_millis(100)));
        }
    }

    fn read_for(&mut self, wait: Duration) {
        let mut fds = [nix::poll::PollFd::new(self.master.as_fd_ref(), nix::poll::PollFlags::POLLIN)];
        let millis = u16::try_from(wait.as_millis()).unwrap_or(u16::MAX);
        if nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(millis)).unwrap_or(0) == 0 {
            return;
        }
        let mut buffer = [0u8; 4096];
        // EIO once the command and everything it started have closed it.
        if let Ok(read) = self.master.read(&mut buffer) {
            self.screen.push_str(&String::from_utf8_lossy(&buffer[..read]));
        }
    }

    /// Waits for the command to exit: its exit code (None on timeout).
    pub fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            // Keep draining so the command never blocks on a full terminal.
            self.read_for(Duration::from_millis(20));
        }
    }
}

trait AsFdRef {
    fn as_fd_ref(&self) -> std::os::fd::BorrowedFd<'_>;
}

impl AsFdRef for std::fs::File {
    fn as_fd_ref(&self) -> std::os::fd::BorrowedFd<'_> {
        // SAFETY: the file outlives the borrow.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(self.as_raw_fd()) }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
