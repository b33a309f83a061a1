//! `CopyFromContainer` and `CopyToContainer` on the Runtime service:
//! relay between the client's stream and the archive pipe of a `cp` jail
//! that `shoal_runtime` started in the container.

use std::sync::Arc;

use shoal_proto::pb;
use shoal_runtime::container::ContainerManager;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::runtime_wire::container_status;
use crate::wire::{copy_source_from_wire, copy_source_to_wire};

const CHUNK: usize = 64 * 1024;

/// Streams `path` out of the container: what it is, then its archive;
/// a failure of the archiving ends the stream with its reason.
pub async fn copy_from(
    containers: Arc<ContainerManager>,
    request: pb::CopyFromRequest,
) -> Result<ReceiverStream<Result<pb::CopyFromReply, Status>>, Status> {
    let copy = containers.copy_from(&request.container, &request.path, request.follow_link).await.map_err(container_status)?;
    let (replies, stream) = mpsc::channel(8);
    let source = pb::copy_from_reply::Reply::Source(copy_source_to_wire(&copy.source));
    let _ = replies.send(Ok(pb::CopyFromReply { reply: Some(source) })).await;
    let mut data = copy.data;
    let done = copy.done;
    tokio::spawn(async move {
        let mut buffer = vec![0u8; CHUNK];
        loop {
            match data.read(&mut buffer).await {
                Ok(0) => break,
                Ok(n) => {
                    let chunk = pb::copy_from_reply::Reply::Data(buffer[..n].to_vec());
                    if replies.send(Ok(pb::CopyFromReply { reply: Some(chunk) })).await.is_err() {
                        return; // The client went away; the jail gets EPIPE.
                    }
                }
                Err(e) => {
                    let _ = replies.send(Err(Status::internal(format!("reading the archive failed: {e}")))).await;
                    return;
                }
            }
        }
        if let Err(e) = done.wait().await {
            let _ = replies.send(Err(container_status(e))).await;
        }
    });
    Ok(ReceiverStream::new(stream))
}

/// Unpacks the client's archive in the container.
pub async fn copy_to(containers: Arc<ContainerManager>, mut input: Streaming<pb::CopyToInput>) -> Result<pb::CopyToResult, Status> {
    let start = match input.message().await? {
        Some(pb::CopyToInput { input: Some(pb::copy_to_input::Input::Start(start)) }) => start,
        _ => return Err(Status::invalid_argument("a copy into a container must first say where (CopyToStart)")),
    };
    let source = match &start.source {
        Some(source) => Some(copy_source_from_wire(source).ok_or_else(|| {
            Status::invalid_argument(format!("copy source kind {} is unknown to this daemon; upgrade it", source.kind))
        })?),
        None => None,
    };
    let copy = containers.copy_to(&start.container, &start.path, source, start.keep_owners).await.map_err(container_status)?;
    let mut data = copy.data;
    let mut jail_gone = false;
    while let Some(message) = input.message().await? {
        let Some(pb::copy_to_input::Input::Data(bytes)) = message.input else { continue };
        if data.write_all(&bytes).await.is_err() {
            // The jail stopped reading: it failed, and says why below.
            jail_gone = true;
            break;
        }
    }
    drop(data);
    let bytes = copy.done.wait().await.map_err(container_status)?;
    if jail_gone {
        return Err(Status::internal("the copy stopped reading the archive before its end"));
    }
    Ok(pb::CopyToResult { bytes })
}
