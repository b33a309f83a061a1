//! A container's own process on this terminal: `run -it` / `run -i`,
//! `start -ai` and `attach`. The daemon attaches to it through its shim
//! (from before it starts, when it starts it), and this relays stdin,
//! window sizes and output; Ctrl-P Ctrl-Q on a terminal detaches.

use std::io::IsTerminal;
use std::sync::Arc;

use shoal_proto::pb;
use tokio::sync::{mpsc, Notify};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::client::ConnectArgs;
use crate::commands::terminal::{feed_stdin, follow_window_size, relay_output, terminal_size, Ended, Keyboard, RawMode, DETACH_KEYS};
use crate::error::CliResult;

#[derive(Debug, clap::Args)]
pub struct AttachArgs {
    /// Do not send this terminal's input
    #[arg(long)]
    no_stdin: bool,
    container: String,
}

/// How to attach.
pub struct Session {
    pub container: String,
    /// Start it first (created or stopped), attached from before it runs.
    pub start: bool,
    /// Send this terminal's input (`-i`).
    pub stdin: bool,
    /// End its stdin when ours ends (`run -i`; `attach` leaves it open).
    pub close_stdin_at_end: bool,
}

/// Runs the session; the process's exit code, or None once detached.
pub async fn attached(runtime: &mut pb::runtime_client::RuntimeClient<Channel>, session: Session) -> CliResult<Option<i32>> {
    let local_terminal = std::io::stdin().is_terminal();
    let start = pb::AttachStart { container: session.container.clone(), start: session.start, size: terminal_size() };
    let (input, requests) = mpsc::channel(16);
    let _ = input.send(pb::AttachInput { input: Some(pb::attach_input::Input::Start(start)) }).await;
    let mut replies = runtime.attach_stdio(ReceiverStream::new(requests)).await?.into_inner();
    // Raw from here: keys go to the container's terminal as typed.
    let raw = if local_terminal && session.stdin { RawMode::enter() } else { None };
    let detached = Arc::new(Notify::new());
    if session.stdin {
        let close = session.close_stdin_at_end;
        let wrap = move |key: Keyboard| pb::AttachInput {
            input: Some(match key {
                Keyboard::Data(bytes) => pb::attach_input::Input::Stdin(bytes),
                Keyboard::End if close => pb::attach_input::Input::CloseStdin(true),
                // Left open for the next client, as docker's attach does.
                Keyboard::End => pb::attach_input::Input::Stdin(Vec::new()),
            }),
        };
        let detach_keys = local_terminal.then(|| (&DETACH_KEYS[..], detached.clone()));
        feed_stdin(input.clone(), wrap, detach_keys);
    }
    follow_window_size(input.clone(), |size| pb::AttachInput { input: Some(pb::attach_input::Input::Resize(size)) });
    drop(input);
    let ended = relay_output(&mut replies, Some(detached)).await;
    drop(raw);
    Ok(match ended? {
        Ended::Exited(code) => Some(code),
        Ended::Detached => {
            eprintln!("\r\nDetached from {}; it runs on (`shoal attach {}` to come back).", session.container, session.container);
            None
        }
    })
}

/// `shoal attach CONTAINER`.
pub async fn run(args: AttachArgs, connect: &ConnectArgs) -> CliResult {
    let mut runtime = pb::runtime_client::RuntimeClient::new(connect.connect().await?);
    let session = Session { container: args.container, start: false, stdin: !args.no_stdin, close_stdin_at_end: false };
    exit_with(attached(&mut runtime, session).await?)
}

/// Ends the CLI with the container's exit code, as docker does.
pub fn exit_with(code: Option<i32>) -> CliResult {
    match code {
        Some(code) if code != 0 => std::process::exit(code),
        _ => Ok(()),
    }
}
