//! `shoal exec` / `shoal container exec`: a new process in a running
//! container, with this terminal as its own under `-t` (raw mode, window
//! size followed, Ctrl-C passed through as a byte to the container's
//! terminal) and its exit code as ours.

use std::io::IsTerminal;

use shoal_proto::pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::client::ConnectArgs;
use crate::commands::terminal::{feed_stdin, follow_window_size, relay_output, terminal_size, Ended, Keyboard, RawMode};
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
    let raw = if local_terminal { RawMode::enter() } else { None };
    if args.interactive {
        let wrap = |key: Keyboard| pb::ExecInput {
            input: Some(match key {
                Keyboard::Data(bytes) => pb::exec_input::Input::Stdin(bytes),
                Keyboard::End => pb::exec_input::Input::CloseStdin(true),
            }),
        };
        feed_stdin(input.clone(), wrap, None);
    }
    if tty {
        follow_window_size(input.clone(), |size| pb::ExecInput { input: Some(pb::exec_input::Input::Resize(size)) });
    }
    // Without -i nothing more goes in; the process sees /dev/null.
    drop(input);
    let ended = relay_output(&mut replies, None).await;
    drop(raw);
    match ended? {
        Ended::Exited(0) | Ended::Detached => Ok(()),
        Ended::Exited(code) => std::process::exit(code),
    }
}
