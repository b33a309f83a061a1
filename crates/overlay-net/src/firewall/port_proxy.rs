//! The userland relay behind each published port, as Docker's docker-proxy:
//! a TCP or UDP socket bound on `host_ip:host_port` (0.0.0.0 without an
//! address) that forwards to `container_ip:container_port`.
//!
//! It exists for two reasons. Loopback (`127.0.0.1:PORT`) cannot be DNAT'd
//! without route_localnet, so only a socket can serve it. And binding the
//! socket is how a port that something else already uses is detected, with
//! a clear error instead of a DNAT rule that silently steals the traffic.
//! DNAT still handles everything it can: external traffic is rewritten in
//! prerouting before it reaches this socket.
//!
//! Sockets belong to the network namespace of the thread that creates
//! them: start the relay from a runtime living in the node's namespace (the
//! daemon's own). Dropping the [`PortProxy`] closes the socket and ends
//! every relayed connection and flow.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{timeout, Instant};

use super::error::FirewallError;
use super::model::{PortProtocol, PublishedPort};

/// A container that does not answer a TCP connect within this long is not
/// going to; the client gets its connection closed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// UDP has no close: a flow with no datagram either way for this long is
/// forgotten (docker-proxy uses the same 90 s).
const UDP_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Each UDP client gets its own upstream socket; cap them so a flood of
/// spoofed sources cannot exhaust the node's file descriptors.
const MAX_UDP_FLOWS: usize = 4096;
/// Largest UDP payload over IPv4.
const UDP_BUFFER: usize = 65_507;
/// Pause after a failed accept (EMFILE and the like) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// A running relay for one published port.
#[derive(Debug)]
pub struct PortProxy {
    protocol: PortProtocol,
    local_addr: SocketAddr,
    target: SocketAddr,
    task: JoinHandle<()>,
}

impl PortProxy {
    /// Binds `port.host_ip:port.host_port` now (so the caller learns at once
    /// when the port is taken) and relays in the background on the current
    /// tokio runtime.
    pub async fn start(port: &PublishedPort) -> Result<PortProxy, FirewallError> {
        let bind_addr = SocketAddr::from((port.host_ip_or_any(), port.host_port));
        let target = SocketAddr::from((port.container_ip, port.container_port));
        let bind_error = |source: io::Error| match source.kind() {
            io::ErrorKind::AddrInUse => FirewallError::PortInUse {
                addr: bind_addr,
                protocol: port.protocol,
            },
            _ => FirewallError::PortBind {
                addr: bind_addr,
                protocol: port.protocol,
                source,
            },
        };
        let (local_addr, task) = match port.protocol {
            PortProtocol::Tcp => {
                let listener = TcpListener::bind(bind_addr).await.map_err(bind_error)?;
                let local = listener.local_addr().map_err(bind_error)?;
                (local, tokio::spawn(relay_tcp(listener, target)))
            }
            PortProtocol::Udp => {
                let socket = UdpSocket::bind(bind_addr).await.map_err(bind_error)?;
                let local = socket.local_addr().map_err(bind_error)?;
                (local, tokio::spawn(relay_udp(Arc::new(socket), target)))
            }
        };
        tracing::debug!(%local_addr, %target, protocol = %port.protocol, "port relay started");
        Ok(PortProxy {
            protocol: port.protocol,
            local_addr,
            target,
            task,
        })
    }

    /// The bound address (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn target(&self) -> SocketAddr {
        self.target
    }

    pub fn protocol(&self) -> PortProtocol {
        self.protocol
    }

    /// Stops relaying and frees the port (the same as dropping it).
    pub fn stop(self) {}
}

impl Drop for PortProxy {
    fn drop(&mut self) {
        // The connection tasks live in a JoinSet owned by this task, so
        // aborting it ends them all.
        self.task.abort();
    }
}

async fn relay_tcp(listener: TcpListener, target: SocketAddr) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, peer)) => {
                    connections.spawn(relay_tcp_connection(client, peer, target));
                }
                Err(error) => {
                    tracing::warn!(%error, %target, "port relay could not accept a connection");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            // Reap finished connections so the set does not grow forever.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn relay_tcp_connection(mut client: TcpStream, peer: SocketAddr, target: SocketAddr) {
    let mut upstream = match timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            tracing::debug!(%error, %peer, %target, "port relay could not reach the container");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, %target, "port relay timed out connecting to the container");
            return;
        }
    };
    // Relayed bytes should leave as soon as they arrive, as with DNAT.
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    // copy_bidirectional passes a half-close on in each direction.
    if let Err(error) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        tracing::debug!(%error, %peer, %target, "relayed connection ended with an error");
    }
}

/// Milliseconds since a fixed start, shared between a flow's two directions.
struct LastActive {
    origin: Instant,
    millis: AtomicU64,
}

impl LastActive {
    fn new() -> LastActive {
        LastActive {
            origin: Instant::now(),
            millis: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let now = self.origin.elapsed().as_millis() as u64;
        self.millis.store(now, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.millis.load(Ordering::Relaxed));
        self.origin.elapsed().saturating_sub(last)
    }
}

struct UdpFlow {
    upstream: Arc<UdpSocket>,
    active: Arc<LastActive>,
}

async fn relay_udp(listener: Arc<UdpSocket>, target: SocketAddr) {
    let mut flows: HashMap<SocketAddr, UdpFlow> = HashMap::new();
    let mut replies: JoinSet<SocketAddr> = JoinSet::new();
    let mut buffer = vec![0u8; UDP_BUFFER];
    loop {
        tokio::select! {
            received = listener.recv_from(&mut buffer) => {
                let (len, client) = match received {
                    Ok(received) => received,
                    Err(error) => {
                        // E.g. ECONNREFUSED from an earlier ICMP error; the
                        // socket itself is still fine.
                        tracing::debug!(%error, %target, "port relay receive failed");
                        continue;
                    }
                };
                if !flows.contains_key(&client) {
                    if flows.len() >= MAX_UDP_FLOWS {
                        tracing::debug!(%client, %target, "port relay has too many UDP flows; datagram dropped");
                        continue;
                    }
                    match open_udp_flow(target).await {
                        Ok(flow) => {
                            replies.spawn(relay_udp_replies(
                                listener.clone(),
                                flow.upstream.clone(),
                                flow.active.clone(),
                                client,
                            ));
                            flows.insert(client, flow);
                        }
                        Err(error) => {
                            tracing::debug!(%error, %target, "port relay could not open a UDP flow");
                            continue;
                        }
                    }
                }
                if let Some(flow) = flows.get(&client) {
                    flow.active.touch();
                    if let Err(error) = flow.upstream.send(&buffer[..len]).await {
                        tracing::debug!(%error, %client, %target, "port relay could not forward a datagram");
                    }
                }
            }
            Some(ended) = replies.join_next(), if !replies.is_empty() => {
                if let Ok(client) = ended {
                    flows.remove(&client);
                }
            }
        }
    }
}

async fn open_udp_flow(target: SocketAddr) -> io::Result<UdpFlow> {
    let upstream = UdpSocket::bind(SocketAddr::from(([0, 0, 0, 0], 0))).await?;
    upstream.connect(target).await?;
    let active = Arc::new(LastActive::new());
    active.touch();
    Ok(UdpFlow {
        upstream: Arc::new(upstream),
        active,
    })
}

/// Sends the container's datagrams back to `client` until the flow has been
/// idle both ways for [`UDP_IDLE_TIMEOUT`]; returns the client to forget.
async fn relay_udp_replies(
    listener: Arc<UdpSocket>,
    upstream: Arc<UdpSocket>,
    active: Arc<LastActive>,
    client: SocketAddr,
) -> SocketAddr {
    let mut buffer = vec![0u8; UDP_BUFFER];
    loop {
        let wait = UDP_IDLE_TIMEOUT.saturating_sub(active.idle_for());
        match timeout(wait, upstream.recv(&mut buffer)).await {
            Ok(Ok(len)) => {
                active.touch();
                if let Err(error) = listener.send_to(&buffer[..len], client).await {
                    tracing::debug!(%error, %client, "port relay could not return a datagram");
                }
            }
            // ICMP port unreachable from the container shows up here; the
            // client will retry or give up on its own.
            Ok(Err(error)) => {
                tracing::debug!(%error, %client, "container side of a UDP flow failed")
            }
            Err(_) if active.idle_for() >= UDP_IDLE_TIMEOUT => return client,
            Err(_) => {}
        }
    }
}
