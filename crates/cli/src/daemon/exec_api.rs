//! `ExecContainer` on the Runtime service: relays between the client's
//! stream and a process that `shoal_runtime` started in a container
//! (stdin and window sizes in; output, then the exit code, out).

use std::sync::Arc;

use shoal_proto::pb;
use shoal_runtime::container::{is_end_of_terminal, ContainerManager, ExecIo, ExecOptions, ExecProcess};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::runtime_wire::container_status;

type Replies = mpsc::Sender<Result<pb::ExecOutput, Status>>;

fn output(output: pb::exec_output::Output) -> pb::ExecOutput {
    pb::ExecOutput { output: Some(output) }
}

/// Starts what the stream's first message asks for and relays until the
/// process ends (or, detached, returns once it runs).
pub async fn exec(
    containers: Arc<ContainerManager>,
    mut input: Streaming<pb::ExecInput>,
) -> Result<ReceiverStream<Result<pb::ExecOutput, Status>>, Status> {
    let start = match input.message().await? {
        Some(pb::ExecInput { input: Some(pb::exec_input::Input::Start(start)) }) => start,
        _ => return Err(Status::invalid_argument("an exec must first say what to run (ExecStart)")),
    };
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let options = ExecOptions {
        command: start.command,
        env: start.env,
        user: non_empty(&start.user),
        workdir: non_empty(&start.workdir),
        tty: start.tty,
        stdin: start.stdin,
        detach: start.detach,
    };
    let ExecProcess { pid, io, mut exit } = containers.exec(&start.container, options).await.map_err(container_status)?;
    if let (ExecIo::Terminal(terminal), Some(size)) = (&io, start.size) {
        let _ = terminal.window.resize(size.rows as u16, size.columns as u16);
    }
    let (replies, stream) = mpsc::channel(64);
    let _ = replies.send(Ok(output(pb::exec_output::Output::StartedPid(pid as u32)))).await;
    if start.detach {
        tokio::spawn(async move {
            let _ = exit.wait().await;
        });
        return Ok(ReceiverStream::new(stream));
    }
    tokio::spawn(async move {
        let relayed = match io {
            ExecIo::Terminal(terminal) => {
                let window = terminal.window;
                tokio::spawn(feed(input, Some(terminal.input), move |size| {
                    let _ = window.resize(size.rows as u16, size.columns as u16);
                }));
                pump(terminal.output, &replies, pb::exec_output::Output::Stdout).await
            }
            ExecIo::Detached => Ok(()),
            ExecIo::Pipes { stdin, stdout, stderr } => {
                tokio::spawn(feed(input, stdin, |_| {}));
                let (out, err) = tokio::join!(
                    pump(stdout, &replies, pb::exec_output::Output::Stdout),
                    pump(stderr, &replies, pb::exec_output::Output::Stderr)
                );
                out.and(err)
            }
        };
        // The client went away: leave the process to its terminal's hangup
        // (or its pipes' closing), as a dropped ssh session does.
        relayed.ok()?;
        let code = match exit.wait().await {
            Ok(code) => code,
            Err(e) => {
                let _ = replies.send(Err(container_status(e))).await;
                return None;
            }
        };
        let _ = replies.send(Ok(output(pb::exec_output::Output::ExitCode(code)))).await;
        Some(())
    });
    Ok(ReceiverStream::new(stream))
}

/// Copies one output of the process to the client until it ends; Err if
/// the client is gone.
async fn pump(
    mut from: impl AsyncRead + Unpin,
    replies: &Replies,
    wrap: fn(Vec<u8>) -> pb::exec_output::Output,
) -> Result<(), ()> {
    let mut buffer = vec![0u8; 32 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) => return Ok(()),
            Ok(read) => read,
            Err(e) if is_end_of_terminal(&e) => return Ok(()),
            Err(_) => return Ok(()),
        };
        if replies.send(Ok(output(wrap(buffer[..read].to_vec())))).await.is_err() {
            return Err(());
        }
    }
}

/// Copies the client's input to the process: stdin bytes, end of stdin,
/// terminal sizes. Ends when the client's stream does.
async fn feed(mut input: Streaming<pb::ExecInput>, mut stdin: Option<pipe::Sender>, resize: impl Fn(pb::TerminalSize)) {
    while let Ok(Some(message)) = input.message().await {
        match message.input {
            Some(pb::exec_input::Input::Stdin(bytes)) => {
                if let Some(writer) = stdin.as_mut() {
                    if writer.write_all(&bytes).await.is_err() {
                        stdin = None;
                    }
                }
            }
            Some(pb::exec_input::Input::CloseStdin(_)) => stdin = None,
            Some(pb::exec_input::Input::Resize(size)) => resize(size),
            Some(pb::exec_input::Input::Start(_)) | None => {}
        }
    }
}
