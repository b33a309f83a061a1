//! One sandbox's DNS server: a UDP socket and a TCP listener bound to
//! 127.0.0.11:53 inside the sandbox's network namespace, served on the
//! daemon's runtime with a handler that knows which networks the sandbox
//! is on and which upstreams it forwards to.
//!
//! Why sockets in the sandbox rather than one server on the node and a
//! DNAT rule per container: a socket keeps the namespace it was made in,
//! so a thread that enters the namespace, binds and leaves hands the
//! daemon a socket that receives the container's queries directly. No
//! nftables, conntrack or route_localnet in the container, nothing on the
//! node's own addresses, and the socket a query came in on says which
//! sandbox asked.
//!
//! UDP, where nearly every query comes, is served by a loop of ours over
//! hickory-proto messages: a swarm name is answered in line (no task, no
//! channel per query), only forwarded queries get a task. Measured with
//! dnsperf (benches/dns.rs): hickory-server's UDP path gave 52k queries/s,
//! 1.25x Docker's embedded DNS; this loop gives more than twice Docker's.
//! TCP (truncated answers, clients that insist) keeps hickory-server's
//! listener, which owns framing, idle timeouts and connection limits.

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_proto::op::{Edns, Header, HeaderCounts, Message, MessageType, Metadata, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Record};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use hickory_server::Server;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

use super::names::Answer;
use super::udp_batch::{self, RecvBatch};
use super::upstream;
use super::Shared;
use crate::error::{NetError, Result};
use crate::netns;

/// Where containers find the embedded DNS (docker's address).
pub const RESOLVER_ADDRESS: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 11);
pub const RESOLVER_PORT: u16 = 53;
/// A TCP client that sends nothing for this long is dropped.
const TCP_IDLE: Duration = Duration::from_secs(5);
/// Responses queued per TCP connection.
const TCP_RESPONSE_BUFFER: usize = 16;
/// The UDP payload our answers may fill when a client offers more.
const EDNS_PAYLOAD: u16 = 1232;
/// How long a bind waits, at most, for the sockets of a stopped server of
/// the same sandbox to close.
const REBIND_ATTEMPTS: u32 = 50;
const REBIND_PAUSE: Duration = Duration::from_millis(20);
/// A UDP answer without EDNS fits in this.
const PLAIN_UDP_PAYLOAD: usize = 512;

/// What one sandbox may ask: its networks, in attachment order, and the
/// upstreams of its own `--dns` (none: the node's).
#[derive(Default)]
pub struct Scope {
    networks: RwLock<Arc<Vec<String>>>,
    upstreams: RwLock<Option<Arc<Vec<SocketAddr>>>>,
}

impl Scope {
    pub fn set_networks(&self, networks: Vec<String>) {
        *self.networks.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(networks);
    }

    pub fn networks(&self) -> Arc<Vec<String>> {
        self.networks.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set_upstreams(&self, upstreams: Option<Vec<SocketAddr>>) {
        *self.upstreams.write().unwrap_or_else(|p| p.into_inner()) = upstreams.map(Arc::new);
    }

    fn upstreams(&self) -> Option<Arc<Vec<SocketAddr>>> {
        self.upstreams.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A sandbox's server; dropping it closes its sockets.
pub struct SandboxServer {
    pub scope: Arc<Scope>,
    /// The namespace it serves: a sandbox made again under the same id is
    /// a new namespace and needs new sockets.
    pub netns_inode: u64,
    udp: JoinHandle<()>,
    _tcp: Server<Handler>,
}

impl Drop for SandboxServer {
    fn drop(&mut self) {
        // The loop owns the UDP socket: aborting it closes the socket.
        self.udp.abort();
    }
}

/// Binds 127.0.0.11:53 (UDP and TCP) in the namespace at `netns` and
/// serves it. Call within the daemon's tokio runtime.
pub async fn start(shared: Arc<Shared>, scope: Arc<Scope>, netns: &Path) -> Result<SandboxServer> {
    let mut attempt = 0;
    let (udp, tcp, netns_inode) = loop {
        let path = netns.to_path_buf();
        let opened = tokio::task::spawn_blocking(move || open_sockets(&path))
            .await
            .map_err(|_| NetError::ThreadPanicked { path: netns.to_path_buf() })?;
        match opened {
            // The sockets of a server just stopped close once its aborted
            // tasks are dropped, on the runtime's next turn.
            Err(error) if error.errno() == Some(libc::EADDRINUSE) && attempt < REBIND_ATTEMPTS => {
                attempt += 1;
                tokio::time::sleep(REBIND_PAUSE).await;
            }
            opened => break opened?,
        }
    };
    let failed = |source: std::io::Error| NetError::Netns { action: "serve DNS in", path: netns.to_path_buf(), source };
    let udp = UdpSocket::from_std(udp).map_err(failed)?;
    let tcp = tokio::net::TcpListener::from_std(tcp).map_err(failed)?;
    let handler = Handler { shared, scope: scope.clone() };
    let mut server = Server::new(handler.clone());
    server.register_listener(tcp, TCP_IDLE, TCP_RESPONSE_BUFFER);
    let udp = tokio::spawn(serve_udp(Arc::new(udp), handler));
    Ok(SandboxServer { scope, netns_inode, udp, _tcp: server })
}

/// The sockets, made by a thread inside the namespace (they stay bound
/// there), and the namespace's inode.
fn open_sockets(netns: &Path) -> Result<(std::net::UdpSocket, std::net::TcpListener, u64)> {
    let inode = netns::inode_of_path(netns)?;
    let address = SocketAddrV4::new(RESOLVER_ADDRESS, RESOLVER_PORT);
    let bound = netns::run_in(netns, move || -> std::io::Result<_> {
        let udp = std::net::UdpSocket::bind(address)?;
        udp.set_nonblocking(true)?;
        // std sets SO_REUSEADDR, so a restarted daemon binds again at once.
        let tcp = std::net::TcpListener::bind(address)?;
        tcp.set_nonblocking(true)?;
        Ok((udp, tcp))
    })?;
    let (udp, tcp) = bound.map_err(|source| NetError::Netns { action: "bind 127.0.0.11:53 for the embedded DNS in", path: netns.to_path_buf(), source })?;
    Ok((udp, tcp, inode))
}

/// A response, before it is encoded for UDP or TCP.
struct Reply {
    code: ResponseCode,
    authoritative: bool,
    answers: Vec<Record>,
    authorities: Vec<Record>,
    additionals: Vec<Record>,
}

impl Reply {
    fn code(code: ResponseCode, authoritative: bool) -> Reply {
        Reply { code, authoritative, answers: Vec::new(), authorities: Vec::new(), additionals: Vec::new() }
    }
}

/// What to do with a question.
enum Decision {
    Reply(Reply),
    Forward(Arc<Vec<SocketAddr>>),
}

#[derive(Clone)]
pub struct Handler {
    shared: Arc<Shared>,
    scope: Arc<Scope>,
}

impl Handler {
    /// The answer from the swarm's names, or the upstreams to ask.
    fn decide(&self, query: &Query) -> Decision {
        let names = self.shared.names();
        let scope = self.scope.networks();
        let answer =
            if query.query_class() == DNSClass::IN { names.answer(&scope, query.name(), query.query_type()) } else { Answer::Forward };
        match answer {
            Answer::Records { answers, additionals } => {
                Decision::Reply(Reply { code: ResponseCode::NoError, authoritative: true, answers, authorities: Vec::new(), additionals })
            }
            Answer::NoData => Decision::Reply(Reply::code(ResponseCode::NoError, true)),
            Answer::NxDomain => Decision::Reply(Reply::code(ResponseCode::NXDomain, true)),
            Answer::Forward if !names.forwards_for(&scope) => Decision::Reply(Reply::code(ResponseCode::Refused, false)),
            Answer::Forward => Decision::Forward(self.scope.upstreams().unwrap_or_else(|| self.shared.host_upstreams())),
        }
    }

    async fn forward(&self, query: &Query, upstreams: &[SocketAddr]) -> Reply {
        let forwarded = upstream::query(query.name().clone(), query.query_type(), query.query_class());
        match self.shared.forwarder.forward(&forwarded, upstreams).await {
            Ok(answer) => Reply {
                code: answer.metadata.response_code,
                authoritative: false,
                answers: answer.answers,
                authorities: answer.authorities,
                additionals: answer.additionals,
            },
            Err(error) => {
                tracing::debug!(name = %query.name(), ?error, upstreams = upstreams.len(), "no upstream answered");
                Reply::code(ResponseCode::ServFail, false)
            }
        }
    }

    async fn reply(&self, query: &Query) -> Reply {
        match self.decide(query) {
            Decision::Reply(reply) => reply,
            Decision::Forward(upstreams) => self.forward(query, &upstreams).await,
        }
    }
}

/// Serves UDP queries until the socket fails or the task is aborted: a
/// batch of queries per receive, their answers in one send; forwarded
/// questions answer from a task of their own.
async fn serve_udp(socket: Arc<UdpSocket>, handler: Handler) {
    let fd = socket.as_raw_fd();
    let mut batch = RecvBatch::default();
    let mut replies: Vec<(Vec<u8>, SocketAddr)> = Vec::with_capacity(udp_batch::BATCH);
    loop {
        let received = match socket.readable().await {
            Ok(()) => socket.try_io(Interest::READABLE, || batch.receive(fd)),
            Err(error) => Err(error),
        };
        let count = match received {
            Ok(count) => count,
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted | ErrorKind::ConnectionRefused) => continue,
            Err(error) => {
                tracing::warn!(%error, "the embedded DNS's UDP socket failed; this sandbox's names stop resolving over UDP");
                return;
            }
        };
        let asked = std::time::Instant::now();
        for i in 0..count {
            let Some((bytes, client)) = batch.datagram(i) else { continue };
            let Ok(request) = Message::from_vec(bytes) else { continue };
            if request.metadata.message_type != MessageType::Query {
                continue;
            }
            let query = match request.queries.as_slice() {
                [query] if request.metadata.op_code == OpCode::Query => query.clone(),
                _ => {
                    let code = if request.metadata.op_code == OpCode::Query { ResponseCode::FormErr } else { ResponseCode::NotImp };
                    crate::metrics::dns_answered(code, asked);
                    replies.extend(encode_udp(&request, Reply::code(code, false)).map(|bytes| (bytes, client)));
                    continue;
                }
            };
            match handler.decide(&query) {
                Decision::Reply(reply) => {
                    crate::metrics::dns_answered(reply.code, asked);
                    replies.extend(encode_udp(&request, reply).map(|bytes| (bytes, client)));
                }
                Decision::Forward(upstreams) => {
                    let (socket, handler) = (socket.clone(), handler.clone());
                    tokio::spawn(async move {
                        let reply = handler.forward(&query, &upstreams).await;
                        crate::metrics::dns_answered(reply.code, asked);
                        if let Some(bytes) = encode_udp(&request, reply) {
                            send_one(&socket, &bytes, client).await;
                        }
                    });
                }
            }
        }
        if replies.is_empty() {
            continue;
        }
        let sent = socket.try_io(Interest::WRITABLE, || udp_batch::send(fd, &replies)).unwrap_or(0);
        // What a full socket buffer did not take waits for room.
        for (bytes, client) in &replies[sent..] {
            send_one(&socket, bytes, *client).await;
        }
        replies.clear();
    }
}

async fn send_one(socket: &UdpSocket, bytes: &[u8], client: SocketAddr) {
    if let Err(error) = socket.send_to(bytes, client).await {
        tracing::debug!(%error, %client, "sending a DNS answer");
    }
}

/// `reply` to `request` as a datagram; an answer larger than the client
/// takes goes out truncated (records dropped, TC set) so it asks again
/// over TCP.
fn encode_udp(request: &Message, reply: Reply) -> Option<Vec<u8>> {
    let limit = request.edns.as_ref().map_or(PLAIN_UDP_PAYLOAD, |e| usize::from(e.max_payload().clamp(512, EDNS_PAYLOAD)));
    let mut message = Message::new(request.metadata.id, MessageType::Response, request.metadata.op_code);
    message.metadata = response_metadata(&request.metadata, &reply);
    message.add_queries(request.queries.iter().cloned());
    if request.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_PAYLOAD);
        message.set_edns(edns);
    }
    message.answers = reply.answers;
    message.authorities = reply.authorities;
    message.additionals = reply.additionals;
    match message.to_vec() {
        Ok(bytes) if bytes.len() <= limit => Some(bytes),
        Ok(_) => message.truncate().to_vec().ok(),
        Err(error) => {
            tracing::debug!(%error, "encoding a DNS answer");
            None
        }
    }
}

fn response_metadata(request: &Metadata, reply: &Reply) -> Metadata {
    let mut metadata = Metadata::response_from_request(request);
    metadata.recursion_available = true;
    metadata.authoritative = reply.authoritative;
    metadata.response_code = reply.code;
    metadata
}

/// TCP, through hickory-server.
#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(&self, request: &Request, mut response: R) -> ResponseInfo {
        let edns = request.edns.as_ref().map(|_| {
            let mut edns = Edns::new();
            edns.set_max_payload(EDNS_PAYLOAD);
            edns
        });
        let builder = MessageResponseBuilder::new(&request.queries, edns.as_ref());
        let asked = std::time::Instant::now();
        let reply = match request.request_info() {
            Ok(info) if request.metadata.message_type == MessageType::Query && request.metadata.op_code == OpCode::Query => {
                self.reply(info.query.original()).await
            }
            Ok(_) => Reply::code(ResponseCode::NotImp, false),
            Err(_) => Reply::code(ResponseCode::FormErr, false),
        };
        crate::metrics::dns_answered(reply.code, asked);
        let metadata = response_metadata(&request.metadata, &reply);
        let message = builder.build(metadata, reply.answers.iter(), reply.authorities.iter(), std::iter::empty(), reply.additionals.iter());
        match response.send_response(message).await {
            Ok(info) => info,
            Err(error) => {
                tracing::debug!(%error, "sending a DNS answer over TCP");
                let mut failed = metadata;
                failed.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header { metadata: failed, counts: HeaderCounts::default() })
            }
        }
    }
}
