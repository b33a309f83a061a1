//! Forwarding names that are not the swarm's to upstream servers: the
//! node's own resolvers, or a container's `--dns` servers.
//!
//! Upstreams are tried one at a time in their order, moving to the next on
//! a timeout, a network error, SERVFAIL or REFUSED (what glibc's resolver
//! does with `nameserver` lines; hickory-resolver's pool hands SERVFAIL
//! and REFUSED back instead of trying another server, hence this small
//! forwarder over hickory-proto). An upstream that failed is tried last
//! for a while, so a dead first server costs one timeout, not one per
//! query. A truncated UDP answer is asked again over TCP. Answers with
//! records are cached for their TTL.
//!
//! Queries leave from the namespace the daemon runs in (the node's), with
//! a fresh socket and a random id each, so the upstream sees the node as
//! the client.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// How long one upstream has to answer before the next is asked.
const UPSTREAM_TIMEOUT: Duration = Duration::from_millis(1500);
/// How long a failed upstream stays at the back of the line.
const FAILED_FOR: Duration = Duration::from_secs(30);
/// The UDP payload offered upstream (the DNS flag day's safe size).
const EDNS_PAYLOAD: u16 = 1232;
/// Longest an upstream answer is kept, whatever its TTL.
const MAX_CACHE_TTL: u32 = 300;
/// Entries kept before the cache starts over.
const MAX_CACHE_ENTRIES: usize = 10_000;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct CacheKey {
    name: String,
    qtype: RecordType,
    qclass: DNSClass,
    upstreams: Vec<SocketAddr>,
}

struct Cached {
    message: Message,
    stored: Instant,
    ttl: u32,
}

/// Why no upstream answered.
#[derive(Debug, PartialEq, Eq)]
pub enum ForwardError {
    /// No upstream to ask.
    NoUpstream,
    /// Every upstream timed out, failed or refused.
    AllFailed,
}

pub struct Forwarder {
    timeout: Duration,
    cache: Mutex<HashMap<CacheKey, Cached>>,
    failed: Mutex<HashMap<SocketAddr, Instant>>,
}

impl Default for Forwarder {
    fn default() -> Self {
        Forwarder::new(UPSTREAM_TIMEOUT)
    }
}

impl Forwarder {
    pub fn new(timeout: Duration) -> Self {
        Forwarder { timeout, cache: Mutex::new(HashMap::new()), failed: Mutex::new(HashMap::new()) }
    }

    /// The upstreams' answer to `query` (its records as the upstream sent
    /// them); the caller copies them into its own response.
    pub async fn forward(&self, query: &Query, upstreams: &[SocketAddr]) -> Result<Message, ForwardError> {
        if upstreams.is_empty() {
            return Err(ForwardError::NoUpstream);
        }
        let key = CacheKey {
            name: super::names::lowercase_key(query.name()),
            qtype: query.query_type(),
            qclass: query.query_class(),
            upstreams: upstreams.to_vec(),
        };
        if let Some(message) = self.cached(&key) {
            return Ok(message);
        }
        for upstream in self.ordered(upstreams) {
            match self.ask(query, upstream).await {
                Ok(answer) if matches!(answer.metadata.response_code, ResponseCode::ServFail | ResponseCode::Refused) => {
                    tracing::debug!(%upstream, name = %query.name(), code = ?answer.metadata.response_code, "upstream declined; trying the next");
                    self.mark_failed(upstream);
                }
                Ok(answer) => {
                    self.forget_failure(upstream);
                    self.store(key, &answer);
                    return Ok(answer);
                }
                Err(error) => {
                    tracing::debug!(%upstream, name = %query.name(), %error, "upstream failed; trying the next");
                    self.mark_failed(upstream);
                }
            }
        }
        Err(ForwardError::AllFailed)
    }

    /// `upstreams` in order, those that failed lately last.
    fn ordered(&self, upstreams: &[SocketAddr]) -> Vec<SocketAddr> {
        let now = Instant::now();
        let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        failed.retain(|_, since| now.duration_since(*since) < FAILED_FOR);
        let (mut good, bad): (Vec<SocketAddr>, Vec<SocketAddr>) = upstreams.iter().partition(|u| !failed.contains_key(u));
        good.extend(bad);
        good
    }

    fn mark_failed(&self, upstream: SocketAddr) {
        self.failed.lock().unwrap_or_else(|p| p.into_inner()).insert(upstream, Instant::now());
    }

    fn forget_failure(&self, upstream: SocketAddr) {
        let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        if !failed.is_empty() {
            failed.remove(&upstream);
        }
    }

    fn cached(&self, key: &CacheKey) -> Option<Message> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let entry = cache.get(key)?;
        let elapsed = u32::try_from(entry.stored.elapsed().as_secs()).unwrap_or(u32::MAX);
        if elapsed >= entry.ttl {
            return None;
        }
        let mut message = entry.message.clone();
        for record in message.answers.iter_mut().chain(message.authorities.iter_mut()).chain(message.additionals.iter_mut()) {
            record.ttl = record.ttl.saturating_sub(elapsed);
        }
        Some(message)
    }

    /// Keeps an answer that has records, for the shortest TTL among them.
    fn store(&self, key: CacheKey, answer: &Message) {
        if answer.metadata.response_code != ResponseCode::NoError || answer.answers.is_empty() || answer.metadata.truncation {
            return;
        }
        let ttl = answer.answers.iter().map(|r| r.ttl).min().unwrap_or(0).min(MAX_CACHE_TTL);
        if ttl == 0 {
            return;
        }
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MAX_CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(key, Cached { message: answer.clone(), stored: Instant::now(), ttl });
    }

    /// One upstream's answer: over UDP, then TCP when it was truncated.
    async fn ask(&self, query: &Query, upstream: SocketAddr) -> std::io::Result<Message> {
        let request = request_for(query);
        let bytes = request.to_vec().map_err(std::io::Error::other)?;
        let answer = tokio::time::timeout(self.timeout, ask_udp(&bytes, &request, upstream))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer in time"))??;
        if !answer.metadata.truncation {
            return Ok(answer);
        }
        tokio::time::timeout(self.timeout, ask_tcp(&bytes, &request, upstream))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer over TCP in time"))?
    }
}

fn request_for(query: &Query) -> Message {
    let mut request = Message::new(rand::random(), MessageType::Query, OpCode::Query);
    request.metadata.recursion_desired = true;
    request.add_query(query.clone());
    let mut edns = Edns::new();
    edns.set_max_payload(EDNS_PAYLOAD);
    request.set_edns(edns);
    request
}

/// Whether `answer` answers `request` (its id and question): anything else
/// on the socket is ignored, as a spoofed or late reply would be.
fn answers(request: &Message, answer: &Message) -> bool {
    answer.metadata.id == request.metadata.id
        && answer.metadata.message_type == MessageType::Response
        && answer.queries.len() == request.queries.len()
        && answer.queries.iter().zip(&request.queries).all(|(a, q)| {
            a.query_type() == q.query_type() && a.query_class() == q.query_class() && a.name().eq_ignore_root(q.name())
        })
}

async fn ask_udp(bytes: &[u8], request: &Message, upstream: SocketAddr) -> std::io::Result<Message> {
    let local: SocketAddr = match upstream.ip() {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await?;
    // Connected, so an ICMP "port unreachable" fails the next receive at
    // once instead of waiting out the timeout.
    socket.connect(upstream).await?;
    socket.send(bytes).await?;
    let mut buffer = vec![0u8; usize::from(EDNS_PAYLOAD).max(4096)];
    loop {
        let n = socket.recv(&mut buffer).await?;
        if let Ok(answer) = Message::from_vec(&buffer[..n]) {
            if answers(request, &answer) {
                return Ok(answer);
            }
        }
    }
}

async fn ask_tcp(bytes: &[u8], request: &Message, upstream: SocketAddr) -> std::io::Result<Message> {
    let mut stream = TcpStream::connect(upstream).await?;
    let length = u16::try_from(bytes.len()).map_err(std::io::Error::other)?;
    let mut framed = Vec::with_capacity(bytes.len() + 2);
    framed.extend_from_slice(&length.to_be_bytes());
    framed.extend_from_slice(bytes);
    stream.write_all(&framed).await?;
    loop {
        let length = stream.read_u16().await?;
        let mut buffer = vec![0u8; usize::from(length)];
        stream.read_exact(&mut buffer).await?;
        let answer = Message::from_vec(&buffer).map_err(std::io::Error::other)?;
        if answers(request, &answer) {
            return Ok(answer);
        }
    }
}

/// A question as a query to send on.
pub fn query(name: Name, qtype: RecordType, qclass: DNSClass) -> Query {
    let mut query = Query::query(name, qtype);
    query.set_query_class(qclass);
    query
}
