//! This terminal as a container process's own, for `exec -it`, `run -it`,
//! `start -ai` and `attach`: raw mode, stdin forwarded as typed (ending,
//! or detaching on Ctrl-P Ctrl-Q, docker's detach keys), the window size
//! followed, output written as it comes, the exit code as ours.

use std::io::{Read, Write};
use std::sync::Arc;

use shoal_proto::pb;
use tokio::sync::{mpsc, Notify};

use crate::error::{CliError, CliResult};

/// docker's default detach sequence: Ctrl-P then Ctrl-Q.
pub const DETACH_KEYS: [u8; 2] = [0x10, 0x11];

/// What the keyboard (or piped stdin) produced.
pub enum Keyboard {
    Data(Vec<u8>),
    /// stdin ended.
    End,
}

/// How a relayed session ended.
pub enum Ended {
    Exited(i32),
    /// The user typed the detach keys; the process runs on.
    Detached,
}

/// Sends what arrives on stdin as `wrap` makes it, then its end. With
/// `detach_keys`, that sequence is not sent but notifies `detached`. A
/// thread: reading a terminal or pipe blocks, and the process exits
/// under it when done.
pub fn feed_stdin<T: Send + 'static>(
    input: mpsc::Sender<T>,
    wrap: impl Fn(Keyboard) -> T + Send + 'static,
    detach_keys: Option<(&'static [u8], Arc<Notify>)>,
) {
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buffer = vec![0u8; 16 * 1024];
        // How much of the detach sequence the last bytes matched.
        let mut matched = 0;
        loop {
            let (message, last) = match stdin.read(&mut buffer) {
                Ok(0) | Err(_) => (wrap(Keyboard::End), true),
                Ok(read) => {
                    let mut data = buffer[..read].to_vec();
                    if let Some((keys, detached)) = &detach_keys {
                        let mut kept = Vec::with_capacity(data.len());
                        for &byte in &data {
                            if byte == keys[matched] {
                                matched += 1;
                                if matched == keys.len() {
                                    detached.notify_one();
                                    return;
                                }
                            } else {
                                kept.extend_from_slice(&keys[..matched]);
                                matched = usize::from(byte == keys[0]);
                                if matched == 0 {
                                    kept.push(byte);
                                }
                            }
                        }
                        data = kept;
                        if data.is_empty() {
                            continue;
                        }
                    }
                    (wrap(Keyboard::Data(data)), false)
                }
            };
            if input.blocking_send(message).is_err() || last {
                return;
            }
        }
    });
}

/// Sends the terminal's new size whenever it changes (SIGWINCH).
pub fn follow_window_size<T: Send + 'static>(input: mpsc::Sender<T>, wrap: impl Fn(pb::TerminalSize) -> T + Send + 'static) {
    let Ok(mut changes) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change()) else { return };
    tokio::spawn(async move {
        while changes.recv().await.is_some() {
            let Some(size) = terminal_size() else { continue };
            if input.send(wrap(size)).await.is_err() {
                return;
            }
        }
    });
}

/// This terminal's size (from stdout, else stdin), if either is one.
pub fn terminal_size() -> Option<pb::TerminalSize> {
    for fd in [libc::STDOUT_FILENO, libc::STDIN_FILENO] {
        let mut size = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: TIOCGWINSZ fills a winsize we own.
        if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut size) } == 0 && size.ws_row > 0 {
            return Some(pb::TerminalSize { rows: size.ws_row.into(), columns: size.ws_col.into() });
        }
    }
    None
}

/// Writes the process's output as it comes until its exit code (or the
/// detach keys, when `detached` is given).
pub async fn relay_output(replies: &mut tonic::Streaming<pb::ExecOutput>, detached: Option<Arc<Notify>>) -> CliResult<Ended> {
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    let detach = async {
        match &detached {
            Some(notify) => notify.notified().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(detach);
    loop {
        let reply = tokio::select! {
            reply = replies.message() => reply?,
            () = &mut detach => return Ok(Ended::Detached),
        };
        let Some(reply) = reply else { break };
        match reply.output {
            Some(pb::exec_output::Output::Stdout(bytes)) => {
                stdout.write_all(&bytes)?;
                stdout.flush()?;
            }
            Some(pb::exec_output::Output::Stderr(bytes)) => {
                stderr.write_all(&bytes)?;
                stderr.flush()?;
            }
            Some(pb::exec_output::Output::ExitCode(code)) => return Ok(Ended::Exited(code)),
            _ => {}
        }
    }
    Err(CliError::msg("the connection to the daemon ended before the process did; its exit code is unknown"))
}

/// The terminal in raw mode until dropped (also on an early return).
pub struct RawMode {
    saved: nix::sys::termios::Termios,
}

impl RawMode {
    pub fn enter() -> Option<RawMode> {
        let stdin = std::io::stdin();
        let saved = nix::sys::termios::tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        nix::sys::termios::cfmakeraw(&mut raw);
        nix::sys::termios::tcsetattr(&stdin, nix::sys::termios::SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = nix::sys::termios::tcsetattr(std::io::stdin(), nix::sys::termios::SetArg::TCSANOW, &self.saved);
    }
}
