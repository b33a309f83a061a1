//! Raft between managers as frames on one mutual-TLS connection per peer.
//!
//! gRPC over HTTP/2 made every Raft message several socket writes (headers,
//! data and trailers, each its own TLS record and TCP segment) and several
//! task hand-offs (the channel's buffer worker, the connection task, the
//! handler task). Measured on a 3-manager dev cluster, a heartbeat's round
//! trip took ~0.45 ms with a receiving handler of a few microseconds: most
//! of a write's replication time. Here a request is one frame written by
//! the caller itself and answered with one frame; the receiving manager
//! handles AppendEntries on the connection's own task.
//!
//! The connection is chosen by ALPN on the manager port (see
//! `shoal_proto::tls::ALPN_RAFT`), so it shares the port, certificates and
//! CA checks with gRPC.
//!
//! Frames: a u32 big-endian length of what follows, then
//! - request: u64 id, u8 [`Kind`], u32 deadline in ms, payload
//! - reply:   u64 id, u8 [`Status`], payload
//!
//! Payloads are those of `rpc.rs` (bincode openraft requests and
//! [`super::rpc::Reply`]s); ids pair replies with requests, which may be
//! answered out of order.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::oneshot;

use super::rpc::RaftRpcHandler;

/// Largest frame either side accepts: well above openraft's snapshot chunk
/// (3 MiB) and a full replication batch, far below what would hurt memory.
pub const MAX_FRAME: usize = 64 << 20;

/// Which Raft RPC a request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    AppendEntries = 1,
    Vote = 2,
    InstallSnapshot = 3,
}

impl Kind {
    fn from_byte(byte: u8) -> Option<Kind> {
        match byte {
            1 => Some(Kind::AppendEntries),
            2 => Some(Kind::Vote),
            3 => Some(Kind::InstallSnapshot),
            _ => None,
        }
    }
}

/// How the receiving manager dealt with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The payload is the RPC's reply.
    Answered = 0,
    /// The request's deadline passed before Raft answered.
    DeadlineExceeded = 1,
    /// Refused before reaching Raft; the payload says why (UTF-8).
    Refused = 2,
}

impl Status {
    fn from_byte(byte: u8) -> Option<Status> {
        match byte {
            0 => Some(Status::Answered),
            1 => Some(Status::DeadlineExceeded),
            2 => Some(Status::Refused),
            _ => None,
        }
    }
}

/// A request as the receiving side reads it.
#[derive(Debug)]
pub struct Request {
    pub id: u64,
    pub kind: Kind,
    pub deadline: Duration,
    pub payload: Vec<u8>,
}

/// A reply as the calling side reads it.
#[derive(Debug)]
pub struct Reply {
    pub id: u64,
    pub status: Status,
    pub payload: Vec<u8>,
}

fn invalid(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message)
}

/// One frame's body (after the length), or `None` at a clean end of stream.
async fn read_body(reader: &mut (impl AsyncRead + Unpin)) -> std::io::Result<Option<Vec<u8>>> {
    let length = match reader.read_u32().await {
        Ok(length) => length as usize,
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    };
    if length > MAX_FRAME {
        return Err(invalid(format!("a Raft frame of {length} bytes is over the {MAX_FRAME}-byte limit")));
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await?;
    Ok(Some(body))
}

/// Reads the next request; `None` when the peer closed the connection.
pub async fn read_request(reader: &mut (impl AsyncRead + Unpin)) -> std::io::Result<Option<Request>> {
    let Some(body) = read_body(reader).await? else { return Ok(None) };
    if body.len() < 13 {
        return Err(invalid(format!("a Raft request frame of {} bytes is too short", body.len())));
    }
    let id = u64::from_be_bytes(body[0..8].try_into().expect("8 bytes"));
    let kind = Kind::from_byte(body[8]).ok_or_else(|| invalid(format!("unknown Raft request kind {}", body[8])))?;
    let deadline = Duration::from_millis(u32::from_be_bytes(body[9..13].try_into().expect("4 bytes")).into());
    Ok(Some(Request { id, kind, deadline, payload: body[13..].to_vec() }))
}

/// Reads the next reply; `None` when the peer closed the connection.
pub async fn read_reply(reader: &mut (impl AsyncRead + Unpin)) -> std::io::Result<Option<Reply>> {
    let Some(body) = read_body(reader).await? else { return Ok(None) };
    if body.len() < 9 {
        return Err(invalid(format!("a Raft reply frame of {} bytes is too short", body.len())));
    }
    let id = u64::from_be_bytes(body[0..8].try_into().expect("8 bytes"));
    let status = Status::from_byte(body[8]).ok_or_else(|| invalid(format!("unknown Raft reply status {}", body[8])))?;
    Ok(Some(Reply { id, status, payload: body[9..].to_vec() }))
}

/// A whole frame in one buffer, so it leaves in one write (one TLS record).
fn frame(header: &[u8], payload: &[u8]) -> std::io::Result<Vec<u8>> {
    let length = header.len() + payload.len();
    if length > MAX_FRAME {
        return Err(invalid(format!("a Raft message of {length} bytes is over the {MAX_FRAME}-byte frame limit")));
    }
    let mut buffer = Vec::with_capacity(4 + length);
    buffer.extend_from_slice(&(length as u32).to_be_bytes());
    buffer.extend_from_slice(header);
    buffer.extend_from_slice(payload);
    Ok(buffer)
}

pub fn request_frame(id: u64, kind: Kind, deadline: Duration, payload: &[u8]) -> std::io::Result<Vec<u8>> {
    let millis = u32::try_from(deadline.as_millis()).unwrap_or(u32::MAX);
    let mut header = [0u8; 13];
    header[0..8].copy_from_slice(&id.to_be_bytes());
    header[8] = kind as u8;
    header[9..13].copy_from_slice(&millis.to_be_bytes());
    frame(&header, payload)
}

pub fn reply_frame(id: u64, status: Status, payload: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut header = [0u8; 9];
    header[0..8].copy_from_slice(&id.to_be_bytes());
    header[8] = status as u8;
    frame(&header, payload)
}

/// Writes one frame and pushes it to the socket.
pub async fn write_frame(writer: &mut (impl AsyncWrite + Unpin), frame: &[u8]) -> std::io::Result<()> {
    writer.write_all(frame).await?;
    writer.flush().await
}

/// Why a call got no reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The connection failed or closed (before or while waiting); a new
    /// connection is needed.
    Broken(String),
    /// The peer gave up at the request's deadline.
    DeadlineExceeded,
    /// The peer refused the request (role, swarm, format); reason attached.
    Refused(String),
}

/// Callers waiting for replies, by request id.
#[derive(Default)]
struct Waiting {
    replies: HashMap<u64, oneshot::Sender<Reply>>,
    /// Set once the reading side has stopped; later calls fail at once.
    broken: Option<String>,
    /// When the peer last sent a reply (or the connection was made).
    last_heard: Option<std::time::Instant>,
}

/// The calling side of one connection: any number of concurrent calls,
/// each written by its caller and answered through the reader task.
pub struct FramedClient<S> {
    writer: tokio::sync::Mutex<WriteHalf<S>>,
    waiting: Arc<Mutex<Waiting>>,
    next_id: AtomicU64,
    reader: tokio::task::JoinHandle<()>,
}

impl<S> Drop for FramedClient<S> {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl<S: AsyncRead + AsyncWrite + Send + 'static> FramedClient<S> {
    /// Takes over `stream` and starts reading replies from it.
    pub fn new(stream: S) -> Self {
        let (reader, writer) = tokio::io::split(stream);
        let waiting = Arc::new(Mutex::new(Waiting { last_heard: Some(std::time::Instant::now()), ..Waiting::default() }));
        let reader = tokio::spawn(read_replies(reader, waiting.clone()));
        FramedClient { writer: tokio::sync::Mutex::new(writer), waiting, next_id: AtomicU64::new(1), reader }
    }

    /// False once the connection has failed; make a new one.
    pub fn is_broken(&self) -> bool {
        lock(&self.waiting).broken.is_some()
    }

    /// How long the peer has sent nothing while this connection was open.
    pub fn silent_for(&self) -> Duration {
        lock(&self.waiting).last_heard.map_or(Duration::ZERO, |at| at.elapsed())
    }

    /// Sends one request and waits for its reply. The caller bounds the
    /// wait (dropping the future forgets the request).
    pub async fn call(&self, kind: Kind, deadline: Duration, payload: &[u8]) -> Result<Vec<u8>, CallError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = request_frame(id, kind, deadline, payload).map_err(|e| CallError::Refused(e.to_string()))?;
        let (sender, reply) = oneshot::channel();
        {
            let mut waiting = lock(&self.waiting);
            if let Some(reason) = &waiting.broken {
                return Err(CallError::Broken(reason.clone()));
            }
            waiting.replies.insert(id, sender);
        }
        let _forget = Forget { waiting: &self.waiting, id };
        {
            let mut writer = self.writer.lock().await;
            // A caller dropped mid-write (its deadline passed) would leave half
            // a frame on the stream, and every later frame misread: the
            // connection is then given up.
            let mut unfinished = Unfinished { waiting: &self.waiting, armed: true };
            if let Err(e) = write_frame(&mut *writer, &frame).await {
                let reason = format!("sending: {e}");
                lock(&self.waiting).broken.get_or_insert(reason.clone());
                return Err(CallError::Broken(reason));
            }
            unfinished.armed = false;
        }
        let reply = reply.await.map_err(|_| {
            CallError::Broken(lock(&self.waiting).broken.clone().unwrap_or_else(|| "the connection closed".into()))
        })?;
        match reply.status {
            Status::Answered => Ok(reply.payload),
            Status::DeadlineExceeded => Err(CallError::DeadlineExceeded),
            Status::Refused => Err(CallError::Refused(String::from_utf8_lossy(&reply.payload).into_owned())),
        }
    }
}

/// Removes a call's slot however the call ends (answered, failed, dropped).
struct Forget<'a> {
    waiting: &'a Mutex<Waiting>,
    id: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        lock(self.waiting).replies.remove(&self.id);
    }
}

/// Marks the connection broken if a write is abandoned halfway.
struct Unfinished<'a> {
    waiting: &'a Mutex<Waiting>,
    armed: bool,
}

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        if self.armed {
            lock(self.waiting).broken.get_or_insert_with(|| "a request was abandoned while being sent".into());
        }
    }
}

fn lock(waiting: &Mutex<Waiting>) -> std::sync::MutexGuard<'_, Waiting> {
    waiting.lock().unwrap_or_else(|p| p.into_inner())
}

async fn read_replies<S: AsyncRead>(mut reader: ReadHalf<S>, waiting: Arc<Mutex<Waiting>>) {
    let reason = loop {
        match read_reply(&mut reader).await {
            Ok(Some(reply)) => {
                let mut waiting = lock(&waiting);
                waiting.last_heard = Some(std::time::Instant::now());
                // A reply nobody waits for any more (its caller timed out) is dropped.
                if let Some(sender) = waiting.replies.remove(&reply.id) {
                    let _ = sender.send(reply);
                }
            }
            Ok(None) => break "the peer closed the connection".to_string(),
            Err(e) => break format!("receiving: {e}"),
        }
    };
    let mut waiting = lock(&waiting);
    waiting.broken.get_or_insert(reason);
    // Dropping the senders wakes every caller with the failure.
    waiting.replies.clear();
}

/// Answers the requests arriving on `stream` (the receiving side) until the
/// peer closes it. `admit` runs before each request and names a reason to
/// refuse it, if any (the caller's certificate may have been revoked since
/// the connection was made). AppendEntries are handled on this task, in
/// order, without a hand-off; votes and snapshot chunks on their own tasks,
/// so they never wait behind a slow append.
pub async fn serve<S>(stream: S, rpc: RaftRpcHandler, admit: impl Fn() -> Option<String>)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut reader, writer) = tokio::io::split(stream);
    let writer = Arc::new(tokio::sync::Mutex::new(writer));
    loop {
        let request = match read_request(&mut reader).await {
            Ok(Some(request)) => request,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(error = %e, "closing a Raft connection that sent a malformed frame");
                return;
            }
        };
        if let Some(reason) = admit() {
            reply(&writer, request.id, Status::Refused, reason.as_bytes()).await;
            continue;
        }
        if request.kind == Kind::AppendEntries {
            answer(&rpc, &writer, request).await;
        } else {
            let (rpc, writer) = (rpc.clone(), writer.clone());
            tokio::spawn(async move { answer(&rpc, &writer, request).await });
        }
    }
}

async fn answer<S: AsyncWrite>(rpc: &RaftRpcHandler, writer: &tokio::sync::Mutex<WriteHalf<S>>, request: Request) {
    let handling = async {
        match request.kind {
            Kind::AppendEntries => rpc.append_entries(&request.payload).await,
            Kind::Vote => rpc.vote(&request.payload).await,
            Kind::InstallSnapshot => rpc.install_snapshot(&request.payload).await,
        }
    };
    match tokio::time::timeout(request.deadline, handling).await {
        Ok(payload) => reply(writer, request.id, Status::Answered, &payload).await,
        Err(_) => reply(writer, request.id, Status::DeadlineExceeded, &[]).await,
    }
}

async fn reply<S: AsyncWrite>(writer: &tokio::sync::Mutex<WriteHalf<S>>, id: u64, status: Status, payload: &[u8]) {
    let frame = match reply_frame(id, status, payload) {
        Ok(frame) => frame,
        Err(e) => match reply_frame(id, Status::Refused, e.to_string().as_bytes()) {
            Ok(frame) => frame,
            Err(_) => return,
        },
    };
    // A failed write means the connection is gone; the reading loop sees it.
    if let Err(e) = write_frame(&mut *writer.lock().await, &frame).await {
        tracing::debug!(error = %e, "could not send a Raft reply");
    }
}

#[cfg(test)]
#[path = "framed_tests.rs"]
mod tests;
