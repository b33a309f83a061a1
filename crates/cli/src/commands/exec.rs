//! `shoal exec` / `shoal container exec`: a new process in a running
//! container, with this terminal as its own under `-t` (raw mode, window
//! size followed, Ctrl-C passed through as a byte to the container's
//! terminal) and its exit code as ours.

use std::io::{IsTerminal, Read, Write};

use shoal_proto::pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::client::ConnectArgs;
use crate::error::{CliError, CliResult};

#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// Keep stdin open and send it to the process
    #[arg(short, long)]
    interactive: bool,
    /// Give the process a terminal
    #[arg(short, long)]
    tty: bool,
    /// Start the process and return
    #[arg(short, long)]
    detach: bool,
    /// Set an environment variable (KEY=VALUE)
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Run as this user: name, uid, user:group or uid:gid
    #[arg(short, long)]
    user: Option<String>,
    /// Working directory inside the container
    #[arg(short, long)]
    workdir: Option<String>,
    container: String,
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// Runs the exec; exits the process with the command's exit code.
pub async fn run(args: ExecArgs, connect: &ConnectArgs) -> CliResult {
    let tty = args.tty && !args.detach;
    let local_terminal = tty && std::io::stdin().is_terminal();
    let start = pb::ExecStart {
        container: args.container,
        command: args.command,
        env: args.env,
        user: args.user.unwrap_or_default(),
        workdir: args.workdir.unwrap_or_default(),
        tty: args.tty,
        stdin: args.interactive,
        detach: args.detach,
        size: if tty { terminal_size() } else { None },
    };
    let mut runtime = pb::runtime_client::RuntimeClient::new(connect.connect().await?);
    let (input, requests) = mpsc::channel(16);
    let _ = input.send(pb::ExecInput { input: Some(pb::exec_input::Input::Start(start)) }).await;
    let mut replies = runtime.exec_container(ReceiverStream::new(requests)).await?.into_inner();
    match replies.message().await? {
        Some(pb::ExecOutput { output: Some(pb::exec_output::Output::StartedPid(_)) }) => {}
        _ => return Err(CliError::msg("the daemon ended the exec before it started; see its log")),
    }
    if args.detach {
        return Ok(());
    }
    // Raw from here: keys go to the container's terminal as typed (Ctrl-C
    // included) and its echo is the only one.
    let _raw = if local_terminal { RawMode::enter() } else { None };
    if args.interactive {
        feed_stdin(input.clone());
    }
    if tty {
        follow_window_size(input.clone());
    }
    // Without -i nothing more goes in; the process sees /dev/null.
    drop(input);
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    while let Some(reply) = replies.message().await? {
        match reply.output {
            Some(pb::exec_output::Output::Stdout(bytes)) => {
                stdout.write_all(&bytes)?;
                stdout.flush()?;
            }
            Some(pb::exec_output::Output::Stderr(bytes)) => {
                stderr.write_all(&bytes)?;
                stderr.flush()?;
            }
            Some(pb::exec_output::Output::ExitCode(code)) => {
                drop(_raw);
                if code != 0 {
                    std::process::exit(code);
                }
                return Ok(());
            }
            _ => {}
        }
    }
    Err(CliError::msg("the connection to the daemon ended before the process did; its exit code is unknown"))
}

/// Sends what arrives on stdin, then its end. A thread: reading a
/// terminal or pipe blocks, and the process exits under it when done.
fn feed_stdin(input: mpsc::Sender<pb::ExecInput>) {
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            let message = match stdin.read(&mut buffer) {
                Ok(0) | Err(_) => pb::exec_input::Input::CloseStdin(true),
                Ok(read) => pb::exec_input::Input::Stdin(buffer[..read].to_vec()),
            };
            let last = matches!(message, pb::exec_input::Input::CloseStdin(_));
            if input.blocking_send(pb::ExecInput { input: Some(message) }).is_err() || last {
                return;
            }
        }
    });
}

/// Sends the terminal's new size whenever it changes (SIGWINCH).
fn follow_window_size(input: mpsc::Sender<pb::ExecInput>) {
    let Ok(mut changes) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change()) else { return };
    tokio::spawn(async move {
        while changes.recv().await.is_some() {
            let Some(size) = terminal_size() else { continue };
            if input.send(pb::ExecInput { input: Some(pb::exec_input::Input::Resize(size)) }).await.is_err() {
                return;
            }
        }
    });
}

/// This terminal's size (from stdout, else stdin), if either is one.
fn terminal_size() -> Option<pb::TerminalSize> {
    for fd in [libc::STDOUT_FILENO, libc::STDIN_FILENO] {
        let mut size = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: TIOCGWINSZ fills a winsize we own.
        if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut size) } == 0 && size.ws_row > 0 {
            return Some(pb::TerminalSize { rows: size.ws_row.into(), columns: size.ws_col.into() });
        }
    }
    None
}

/// The terminal in raw mode until dropped (also on an early return).
struct RawMode {
    saved: nix::sys::termios::Termios,
}

impl RawMode {
    fn enter() -> Option<RawMode> {
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
