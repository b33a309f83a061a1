//! `AttachStdio` on the Runtime service: relays between the client's
//! stream and the attach socket of a container's shim (frames, see
//! `shoal_runtime::container::attach`), then ends with the exit code.

use std::future::Future;

use shoal_proto::pb;
use shoal_runtime::container::attach::{frame, resize_frame, FrameKind, FrameReader};
use shoal_runtime::container::{Attachment, ContainerError, ExitInfo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

fn output(output: pb::exec_output::Output) -> pb::ExecOutput {
    pb::ExecOutput { output: Some(output) }
}

/// Relays until the shim ends the connection (the process and its output
/// are done), then sends how it ended.
pub fn relay(
    attachment: Attachment,
    size: Option<pb::TerminalSize>,
    mut input: Streaming<pb::AttachInput>,
    exit: impl Future<Output = Result<ExitInfo, ContainerError>> + Send + 'static,
) -> ReceiverStream<Result<pb::ExecOutput, Status>> {
    let (replies, stream) = mpsc::channel(64);
    let Attachment { stream: socket, tty, open_stdin } = attachment;
    let (mut from_shim, mut to_shim) = socket.into_split();
    tokio::spawn(async move {
        if let (true, Some(size)) = (tty, size) {
            let _ = to_shim.write_all(&resize_frame(size.rows as u16, size.columns as u16)).await;
        }
        while let Ok(Some(message)) = input.message().await {
            let bytes = match message.input {
                Some(pb::attach_input::Input::Stdin(bytes)) if open_stdin => frame(FrameKind::Stdin, &bytes),
                Some(pb::attach_input::Input::CloseStdin(_)) => frame(FrameKind::CloseStdin, b""),
                Some(pb::attach_input::Input::Resize(size)) if tty => resize_frame(size.rows as u16, size.columns as u16),
                _ => continue,
            };
            if to_shim.write_all(&bytes).await.is_err() {
                return;
            }
        }
    });
    tokio::spawn(async move {
        let mut reader = FrameReader::default();
        let mut buffer = vec![0u8; 32 * 1024];
        'relay: loop {
            match from_shim.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => reader.push(&buffer[..n]),
            }
            loop {
                let reply = match reader.next_frame() {
                    Ok(Some((FrameKind::Stdout, bytes))) => output(pb::exec_output::Output::Stdout(bytes)),
                    Ok(Some((FrameKind::Stderr, bytes))) => output(pb::exec_output::Output::Stderr(bytes)),
                    Ok(Some(_)) => continue,
                    Ok(None) => break,
                    Err(_) => break 'relay,
                };
                if replies.send(Ok(reply)).await.is_err() {
                    return; // The client went away; the container runs on.
                }
            }
        }
        let last = match exit.await {
            Ok(exit) => Ok(output(pb::exec_output::Output::ExitCode(exit.code))),
            Err(e) => Err(Status::internal(format!("cannot tell how the container ended: {e}"))),
        };
        let _ = replies.send(last).await;
    });
    ReceiverStream::new(stream)
}
