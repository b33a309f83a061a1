//! The simulated nodes' control socket: the simulator asks the node
//! process what its nodes report and tells it to grow or lose nodes. One
//! JSON request per line, one JSON reply per line.

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, Context};
use serde::{Deserialize, Serialize};
use shoal_agent::simulation::{PoolStatus, RunningTask};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// A request's longest wait: growing by thousands of nodes takes a while.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum Request {
    Status,
    /// Every task running on a live simulated node.
    Tasks,
    /// Join this many more nodes; replies once they all joined.
    Grow { nodes: usize },
    /// Power off this many nodes at once; replies with their ids.
    Lose { nodes: usize },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    Status(PoolStatus),
    Tasks(Vec<RunningTask>),
    Grown,
    Lost(Vec<String>),
    Error(String),
}

/// Sends one request to the node process at `socket` and returns its reply.
pub async fn ask(socket: &Path, request: &Request) -> anyhow::Result<Reply> {
    let exchange = async {
        let mut stream = UnixStream::connect(socket).await?;
        let mut line = serde_json::to_vec(request)?;
        line.push(b'\n');
        stream.write_all(&line).await?;
        let mut reply = String::new();
        BufReader::new(stream).read_line(&mut reply).await?;
        anyhow::Ok(serde_json::from_str::<Reply>(&reply)?)
    };
    let reply = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| anyhow!("the simulated nodes at {} did not answer within {}s", socket.display(), REQUEST_TIMEOUT.as_secs()))?
        .with_context(|| format!("asking the simulated nodes at {}", socket.display()))?;
    match reply {
        Reply::Error(error) => Err(anyhow!("the simulated nodes refused: {error}")),
        reply => Ok(reply),
    }
}

/// The pool's status.
pub async fn status(socket: &Path) -> anyhow::Result<PoolStatus> {
    expect(ask(socket, &Request::Status).await?, |r| match r {
        Reply::Status(status) => Some(status),
        _ => None,
    })
}

/// The tasks running on live simulated nodes.
pub async fn tasks(socket: &Path) -> anyhow::Result<Vec<RunningTask>> {
    expect(ask(socket, &Request::Tasks).await?, |r| match r {
        Reply::Tasks(tasks) => Some(tasks),
        _ => None,
    })
}

fn expect<T>(reply: Reply, pick: impl FnOnce(Reply) -> Option<T>) -> anyhow::Result<T> {
    let shown = format!("{reply:?}");
    pick(reply).ok_or_else(|| anyhow!("the simulated nodes sent an unexpected reply: {shown:.200}"))
}

/// Reads one request line; `None` at the end of the stream.
pub async fn read_request<R: tokio::io::AsyncBufRead + Unpin>(reader: &mut R) -> anyhow::Result<Option<Request>> {
    let mut line = String::new();
    if reader.read_line(&mut line).await? == 0 {
        return Ok(None);
    }
    Ok(Some(serde_json::from_str(&line).with_context(|| format!("request {:?} is not one the simulated nodes know", line.trim()))?))
}

pub async fn write_reply<W: tokio::io::AsyncWrite + Unpin>(writer: &mut W, reply: &Reply) -> anyhow::Result<()> {
    let mut line = serde_json::to_vec(reply)?;
    line.push(b'\n');
    writer.write_all(&line).await?;
    Ok(())
}

