//! Real TCP and UDP exchanges between namespaces, with Rust sockets created
//! inside them. Servers answer every message with the peer address they
//! see, which tells DNAT (client address kept), masquerade (node address)
//! and the relay (bridge address) apart.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::firewall::namespace::run_in;
use crate::firewall::{FirewallError, PortProxy, PublishedPort};

const TIMEOUT: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(20);

/// A TCP and a UDP server on one address in one namespace, until dropped.
pub struct PeerEcho {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl PeerEcho {
    pub fn start(netns: &Path, addr: SocketAddr) -> PeerEcho {
        let (tcp, udp) = run_in(Some(netns), |_| {
            let tcp = TcpListener::bind(addr).expect("bind the TCP echo");
            let udp = UdpSocket::bind(addr).expect("bind the UDP echo");
            Ok((tcp, udp))
        })
        .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        tcp.set_nonblocking(true).unwrap();
        udp.set_read_timeout(Some(POLL)).unwrap();
        let tcp_stop = stop.clone();
        let tcp_thread = std::thread::spawn(move || {
            while !tcp_stop.load(Ordering::Relaxed) {
                match tcp.accept() {
                    Ok((mut stream, peer)) => {
                        stream.set_nonblocking(false).unwrap();
                        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
                        let mut buffer = [0u8; 64];
                        if stream.read(&mut buffer).is_ok() {
                            let _ = stream.write_all(peer.to_string().as_bytes());
                        }
                    }
                    Err(_) => std::thread::sleep(POLL),
                }
            }
        });
        let udp_stop = stop.clone();
        let udp_thread = std::thread::spawn(move || {
            let mut buffer = [0u8; 64];
            while !udp_stop.load(Ordering::Relaxed) {
                if let Ok((_, peer)) = udp.recv_from(&mut buffer) {
                    let _ = udp.send_to(peer.to_string().as_bytes(), peer);
                }
            }
        });
        PeerEcho {
            stop,
            threads: vec![tcp_thread, udp_thread],
        }
    }
}

impl Drop for PeerEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Connects from namespace `from` to `to` over TCP; the peer address the
/// server saw, or `None` when no answer came.
pub fn tcp_peer(from: &Path, to: SocketAddr) -> Option<SocketAddr> {
    run_in(Some(from), |_| {
        let exchange = || -> std::io::Result<String> {
            let mut stream = TcpStream::connect_timeout(&to, TIMEOUT)?;
            stream.set_read_timeout(Some(TIMEOUT))?;
            stream.write_all(b"hello")?;
            let mut reply = String::new();
            stream.read_to_string(&mut reply)?;
            Ok(reply)
        };
        Ok(exchange().ok().and_then(|reply| reply.parse().ok()))
    })
    .unwrap()
}

/// Sends a UDP datagram from namespace `from` to `to`; the peer address
/// the server saw, or `None`. Three tries: UDP may lose the first one
/// while ARP resolves.
pub fn udp_peer(from: &Path, to: SocketAddr) -> Option<SocketAddr> {
    run_in(Some(from), |_| {
        let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(700)))
            .unwrap();
        for _ in 0..3 {
            let _ = socket.send_to(b"hello", to);
            let mut buffer = [0u8; 64];
            if let Ok((len, _)) = socket.recv_from(&mut buffer) {
                return Ok(std::str::from_utf8(&buffer[..len])
                    .ok()
                    .and_then(|s| s.parse().ok()));
            }
        }
        Ok(None)
    })
    .unwrap()
}

/// A [`PortProxy`] running on a tokio runtime whose thread lives in a
/// namespace, as the daemon's does in a node's namespace.
#[derive(Debug)]
pub struct ProxyInNamespace {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ProxyInNamespace {
    pub fn start(netns: &Path, port: PublishedPort) -> Result<ProxyInNamespace, FirewallError> {
        let (started_tx, started_rx) = mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let netns: PathBuf = netns.to_path_buf();
        let thread = std::thread::spawn(move || {
            let _ = run_in(Some(&netns), |_| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async {
                    match PortProxy::start(&port).await {
                        Ok(proxy) => {
                            let _ = started_tx.send(Ok(()));
                            let _ = stop_rx.await;
                            drop(proxy);
                        }
                        Err(error) => {
                            let _ = started_tx.send(Err(error));
                        }
                    }
                });
                Ok(())
            });
        });
        match started_rx.recv() {
            Ok(Ok(())) => Ok(ProxyInNamespace {
                stop: Some(stop_tx),
                thread: Some(thread),
            }),
            Ok(Err(error)) => {
                let _ = thread.join();
                Err(error)
            }
            Err(_) => panic!("the relay thread died before reporting"),
        }
    }
}

impl Drop for ProxyInNamespace {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
