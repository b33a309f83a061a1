//! The shim's side of a container's stdio: the process's output goes to
//! the log and to every attached client; what clients send goes to its
//! stdin (`-i`) or its terminal (`-t`), whose size they set. One poll
//! loop, no threads: the shim stays small.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::container::attach::{frame, parse_resize, socket_via, FrameKind, FrameReader};
use crate::container::logs::{LineBuffer, LogStream, LogWriter};
use crate::container::state::ShimConfig;

/// A client that stops reading is dropped once this much waits for it.
const MAX_OUTBOX: usize = 4 << 20;

/// The process's stdio: the ends it gets, and the shim's.
pub struct Stdio {
    /// stdin, stdout, stderr for the container's process.
    pub child: [OwnedFd; 3],
    pub ends: Ends,
}

/// The shim's ends of the process's stdio.
pub struct Ends {
    pub outputs: Vec<(File, LogStream)>,
    /// Where clients' input goes: the terminal, or the stdin pipe.
    pub input: Option<File>,
    /// The terminal's master side, for window sizes.
    pub terminal: Option<OwnedFd>,
}

/// Pipes (and /dev/null or a pipe for stdin), or one pseudo-terminal for
/// all three under `-t`.
pub fn prepare(config: &ShimConfig) -> Result<Stdio, String> {
    let pipe = || nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("cannot create a pipe: {e}"));
    if config.tty {
        let pty = nix::pty::openpty(None, None).map_err(|e| format!("cannot open a pseudo-terminal: {e}"))?;
        for fd in [&pty.master, &pty.slave] {
            nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC))
                .map_err(|e| format!("cannot set close-on-exec: {e}"))?;
        }
        let dup = |fd: &OwnedFd| fd.try_clone().map_err(|e| format!("cannot duplicate the terminal: {e}"));
        let child = [dup(&pty.slave)?, dup(&pty.slave)?, pty.slave];
        let input = config.open_stdin.then(|| dup(&pty.master)).transpose()?.map(File::from);
        let terminal = Some(dup(&pty.master)?);
        return Ok(Stdio { child, ends: Ends { outputs: vec![(File::from(pty.master), LogStream::Stdout)], input, terminal } });
    }
    let (stdin_child, input) = if config.open_stdin {
        let (read, write) = pipe()?;
        (read, Some(File::from(write)))
    } else {
        let null = File::open("/dev/null").map_err(|e| format!("cannot open /dev/null: {e}"))?;
        (OwnedFd::from(null), None)
    };
    let (out_read, out_write) = pipe()?;
    let (err_read, err_write) = pipe()?;
    Ok(Stdio {
        child: [stdin_child, out_write, err_write],
        ends: Ends {
            outputs: vec![(File::from(out_read), LogStream::Stdout), (File::from(err_read), LogStream::Stderr)],
            input,
            terminal: None,
        },
    })
}

/// The attach socket in `state_dir`, non-blocking; None if it cannot be
/// made (the container runs; it just cannot be attached to).
pub fn listen(state_dir: &Path) -> Option<UnixListener> {
    let dir = File::open(state_dir).ok()?;
    let path = socket_via(&dir);
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).ok()?;
    listener.set_nonblocking(true).ok()?;
    Some(listener)
}

/// The first client, when the daemon said it would attach before the
/// start; None after `timeout` (the start goes on without it).
pub fn first_client(listener: &UnixListener, timeout: Duration) -> Option<UnixStream> {
    let deadline = Instant::now() + timeout;
    loop {
        match listener.accept() {
            Ok((stream, _)) => return stream.set_nonblocking(true).ok().map(|()| stream),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let left = deadline.checked_duration_since(Instant::now())?;
                let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
                let _ = poll(&mut fds, PollTimeout::try_from(left).unwrap_or(PollTimeout::ZERO));
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

struct Output {
    file: File,
    stream: LogStream,
    lines: LineBuffer,
    open: bool,
}

struct Client {
    stream: UnixStream,
    reader: FrameReader,
    outbox: VecDeque<u8>,
}

impl Client {
    fn new(stream: UnixStream) -> Client {
        Client { stream, reader: FrameReader::default(), outbox: VecDeque::new() }
    }

    /// Writes what it can without blocking; false once the client is gone.
    fn flush(&mut self) -> bool {
        while !self.outbox.is_empty() {
            let (front, _) = self.outbox.as_slices();
            match self.stream.write(front) {
                Ok(0) => return false,
                Ok(n) => {
                    self.outbox.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        true
    }
}

/// Relays until the process and everything holding its output are gone;
/// `on_idle` runs once after `idle_after` (the shim sheds its start-up
/// memory then).
pub fn relay(
    state_dir: &Path,
    config: &ShimConfig,
    ends: Ends,
    listener: Option<UnixListener>,
    first: Option<UnixStream>,
    idle_after: Duration,
    mut on_idle: impl FnMut(),
) {
    let mut writer = LogWriter::open(state_dir, config.log_rotation).ok();
    let mut outputs: Vec<Output> =
        ends.outputs.into_iter().map(|(file, stream)| Output { file, stream, lines: LineBuffer::default(), open: true }).collect();
    let mut input = ends.input;
    if let Some(input) = &input {
        // A process that does not read its stdin must not stall the shim.
        let _ = set_nonblocking(input.as_raw_fd());
    }
    let terminal = ends.terminal;
    let mut clients: Vec<Client> = first.into_iter().map(Client::new).collect();
    let mut buf = vec![0u8; 32 * 1024];
    let idle_at = Instant::now() + idle_after;
    let mut idle_pending = true;
    while outputs.iter().any(|o| o.open) {
        let timeout = match idle_at.checked_duration_since(Instant::now()) {
            _ if !idle_pending => PollTimeout::NONE,
            Some(left) => PollTimeout::try_from(left).unwrap_or(PollTimeout::ZERO),
            None => {
                idle_pending = false;
                on_idle();
                continue;
            }
        };
        // Output first, then the listener, then the clients.
        let (out_ready, listener_ready, client_ready) = {
            let mut fds: Vec<PollFd> = Vec::new();
            let open: Vec<usize> = (0..outputs.len()).filter(|&i| outputs[i].open).collect();
            fds.extend(open.iter().map(|&i| PollFd::new(outputs[i].file.as_fd(), PollFlags::POLLIN)));
            if let Some(listener) = &listener {
                fds.push(PollFd::new(listener.as_fd(), PollFlags::POLLIN));
            }
            for client in &clients {
                let mut wanted = PollFlags::POLLIN;
                if !client.outbox.is_empty() {
                    wanted |= PollFlags::POLLOUT;
                }
                fds.push(PollFd::new(client.stream.as_fd(), wanted));
            }
            match poll(&mut fds, timeout) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return,
            }
            let fired = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
            let mut out_ready = vec![false; outputs.len()];
            for (k, &i) in open.iter().enumerate() {
                out_ready[i] = fired(&fds[k]);
            }
            let mut at = open.len();
            let listener_ready = listener.is_some() && fired(&fds[at]);
            if listener.is_some() {
                at += 1;
            }
            let client_ready: Vec<bool> = fds[at..].iter().map(fired).collect();
            (out_ready, listener_ready, client_ready)
        };

        for (i, output) in outputs.iter_mut().enumerate() {
            if !output.open || !out_ready[i] {
                continue;
            }
            // A terminal whose every other end has closed reads EIO.
            match output.file.read(&mut buf) {
                // The terminal's master is shared with `input`, which is
                // non-blocking: nothing to read now is not the end.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::Interrupted => {}
                Ok(0) | Err(_) => {
                    output.open = false;
                    if let Some(rest) = output.lines.finish() {
                        log(&mut writer, output.stream, &rest);
                    }
                }
                Ok(n) => {
                    let stream = output.stream;
                    output.lines.push(&buf[..n], |line| log(&mut writer, stream, line));
                    let kind = if stream == LogStream::Stderr { FrameKind::Stderr } else { FrameKind::Stdout };
                    let framed = frame(kind, &buf[..n]);
                    for client in &mut clients {
                        client.outbox.extend(&framed);
                    }
                }
            }
        }
        if listener_ready {
            if let Some(listener) = &listener {
                while let Ok((stream, _)) = listener.accept() {
                    if stream.set_nonblocking(true).is_ok() {
                        clients.push(Client::new(stream));
                    }
                }
            }
        }
        let mut keep = vec![true; clients.len()];
        for (i, client) in clients.iter_mut().enumerate() {
            if i < client_ready.len() && client_ready[i] {
                match client.stream.read(&mut buf) {
                    Ok(0) => keep[i] = false,
                    Ok(n) => {
                        client.reader.push(&buf[..n]);
                        loop {
                            match client.reader.next_frame() {
                                Ok(Some((kind, payload))) => match kind {
                                    FrameKind::Stdin => {
                                        if let Some(input) = input.as_mut() {
                                            // Dropped if the process is not reading: typing is small.
                                            let _ = input.write(&payload);
                                        }
                                    }
                                    FrameKind::CloseStdin if terminal.is_none() => input = None,
                                    FrameKind::Resize => {
                                        if let (Some(terminal), Some((rows, columns))) = (&terminal, parse_resize(&payload)) {
                                            resize(terminal, rows, columns);
                                        }
                                    }
                                    _ => {}
                                },
                                Ok(None) => break,
                                Err(_) => {
                                    keep[i] = false;
                                    break;
                                }
                            }
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => keep[i] = false,
                }
            }
            if keep[i] && (!client.flush() || client.outbox.len() > MAX_OUTBOX) {
                keep[i] = false;
            }
        }
        let mut index = 0;
        clients.retain(|_| {
            index += 1;
            keep[index - 1]
        });
    }
    // The last output goes out before the clients see the end.
    let deadline = Instant::now() + Duration::from_secs(2);
    for client in &mut clients {
        let _ = client.stream.set_nonblocking(false);
        let _ = client.stream.set_write_timeout(Some(deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(10))));
        let (front, back) = client.outbox.as_slices();
        let _ = client.stream.write_all(front).and_then(|()| client.stream.write_all(back));
    }
}

fn log(writer: &mut Option<LogWriter>, stream: LogStream, line: &[u8]) {
    if let Some(w) = writer.as_mut() {
        let _ = w.write(stream, line);
    }
}

fn resize(terminal: &OwnedFd, rows: u16, columns: u16) {
    let size = libc::winsize { ws_row: rows, ws_col: columns, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ on a terminal we own, with a valid winsize.
    unsafe { libc::ioctl(terminal.as_raw_fd(), libc::TIOCSWINSZ, &size) };
}

fn set_nonblocking(fd: i32) -> nix::Result<()> {
    let flags = OFlag::from_bits_truncate(nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL)?);
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).map(drop)
}
