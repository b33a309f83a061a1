//! The server side: the live server config and the manager port's accept
//! loop (concurrent handshakes, bounded).

use super::*;

/// A manager-port connection that negotiated [`ALPN_RAFT`].
pub type RaftServerStream = tokio_rustls::server::TlsStream<TcpStream>;

/// Raft connections waiting for the manager to take them: a few per peer.
const RAFT_BACKLOG: usize = 64;

/// The server side of mutual TLS, shared by a server's accept loop and
/// whoever renews its certificate. Clones share the same config.
#[derive(Clone)]
pub struct ServerTls {
    current: LiveConfig<ServerConfig>,
}

impl ServerTls {
    pub fn new(credentials: &Credentials) -> Result<Self, TlsError> {
        Ok(ServerTls {
            current: LiveConfig::new(server_config(credentials)?),
        })
    }

    /// Makes every later handshake use `credentials`. On error the current
    /// config stays in force.
    pub fn update(&self, credentials: &Credentials) -> Result<(), TlsError> {
        self.current.set(server_config(credentials)?);
        Ok(())
    }

    fn current(&self) -> Arc<ServerConfig> {
        self.current.get()
    }

    /// Completed TLS connections from `listener`, for
    /// `tonic::transport::Server::serve_with_incoming`. Handshakes run
    /// concurrently as separate tasks; a failed or slow one is logged at
    /// debug and dropped, never yielded as an error (tonic would stop
    /// serving on some errors). Dropping the stream closes the listener and
    /// aborts handshakes in flight.
    pub fn incoming(&self, listener: TcpListener) -> TlsIncoming {
        TlsIncoming {
            listener,
            tls: self.clone(),
            handshakes: JoinSet::new(),
            backoff: None,
            raft: None,
            raft_runtime: None,
        }
    }
}

fn server_config(credentials: &Credentials) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let ca_certs = parse_certs(&credentials.ca_pem, "CA certificate")?;
    let roots = root_store(&ca_certs)?;
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
        // Joining nodes have no certificate yet; each RPC checks for one.
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::BadCa {
            reason: e.to_string(),
        })?;
    // Send the CA after the leaf: a joining node pins the CA by comparing
    // its digest with the token, so it must see the CA in the handshake.
    let mut chain = parse_certs(&credentials.cert_pem, "certificate")?;
    for ca in ca_certs {
        if !chain.contains(&ca) {
            chain.push(ca);
        }
    }
    let key = parse_key(&credentials.key_pem)?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(PROTOCOLS)
        .map_err(|e| TlsError::BadCredentials {
            reason: e.to_string(),
        })?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::BadCredentials {
            reason: e.to_string(),
        })?;
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_RAFT.to_vec()];
    Ok(Arc::new(config))
}

/// The stream returned by [`ServerTls::incoming`].
pub struct TlsIncoming {
    listener: TcpListener,
    tls: ServerTls,
    handshakes: JoinSet<Option<tokio_rustls::server::TlsStream<TcpStream>>>,
    backoff: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Where connections that chose [`ALPN_RAFT`] go instead of gRPC.
    raft: Option<tokio::sync::mpsc::Sender<RaftServerStream>>,
    /// The runtime Raft connections are moved to before their handshake.
    raft_runtime: Option<tokio::runtime::Handle>,
}

impl TlsIncoming {
    /// Takes the connections that negotiate [`ALPN_RAFT`] out of this
    /// stream (gRPC never sees them) and hands them to the receiver. Without
    /// a call, such connections are closed.
    ///
    /// With `runtime`, a connection that offers [`ALPN_RAFT`] (seen in its
    /// ClientHello, before any handshake) leaves this runtime: its socket
    /// is registered with `runtime`'s reactor and its handshake and frames
    /// run there. A Raft connection left on a busy daemon's runtime had its
    /// readiness noticed only when that runtime's workers got round to
    /// polling their reactor: seconds, under a thousand nodes' sessions,
    /// and followers that did not hear their leader stood for election.
    pub fn raft_connections(&mut self, runtime: Option<tokio::runtime::Handle>) -> tokio::sync::mpsc::Receiver<RaftServerStream> {
        let (sender, receiver) = tokio::sync::mpsc::channel(RAFT_BACKLOG);
        self.raft = Some(sender);
        self.raft_runtime = runtime;
        receiver
    }

    /// Sends a Raft connection to its taker; true if `stream` was one.
    fn divert_raft(&self, stream: RaftServerStream) -> Option<RaftServerStream> {
        if stream.get_ref().1.alpn_protocol() != Some(ALPN_RAFT) {
            return Some(stream);
        }
        match &self.raft {
            Some(raft) => {
                if let Err(e) = raft.try_send(stream) {
                    tracing::warn!(error = %e, "dropping a Raft connection: the manager is not taking them");
                }
            }
            None => tracing::debug!("dropping a Raft connection: this server serves gRPC only"),
        }
        None
    }

    /// Accepts every connection that is ready and starts its handshake.
    fn accept_ready(&mut self, cx: &mut Context<'_>) {
        loop {
            if let Some(backoff) = self.backoff.as_mut() {
                if backoff.as_mut().poll(cx).is_pending() {
                    return;
                }
                self.backoff = None;
            }
            // At the limit, stop accepting; a finishing handshake wakes us
            // through the join set.
            if self.handshakes.len() >= MAX_PENDING_HANDSHAKES {
                return;
            }
            match self.listener.poll_accept(cx) {
                Poll::Ready(Ok((tcp, peer))) => self.start_handshake(tcp, peer),
                // The peer gave up before we accepted: nothing to do.
                Poll::Ready(Err(e))
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::ConnectionReset
                            | io::ErrorKind::Interrupted
                    ) => {}
                Poll::Ready(Err(e)) => {
                    tracing::warn!(error = %e, "accepting a connection failed; pausing accepts briefly");
                    self.backoff = Some(Box::pin(tokio::time::sleep(ACCEPT_ERROR_BACKOFF)));
                }
                Poll::Pending => return,
            }
        }
    }

    fn start_handshake(&mut self, tcp: TcpStream, peer: std::net::SocketAddr) {
        // gRPC messages are small and latency-bound; Nagle would delay them.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "could not set TCP_NODELAY");
        }
        // Take the config now, so a renewal applies to every later handshake.
        let acceptor = TlsAcceptor::from(self.tls.current());
        let raft = self.raft.clone().zip(self.raft_runtime.clone());
        self.handshakes.spawn(async move {
            if let Some((taker, runtime)) = raft {
                if offers_raft(&tcp).await {
                    move_raft_connection(tcp, peer, acceptor, runtime, taker);
                    return None;
                }
            }
            handshake(acceptor, tcp, peer).await
        });
    }
}

/// Whether the ClientHello waiting on `tcp` offers [`ALPN_RAFT`]; read with
/// `peek`, so the handshake still finds it. False for anything that is not
/// a well-formed ClientHello within [`HANDSHAKE_TIMEOUT`]: the handshake
/// then deals with it as it would.
async fn offers_raft(tcp: &TcpStream) -> bool {
    let look = async {
        let mut buffer = vec![0u8; 2048];
        loop {
            let read = tcp.peek(&mut buffer).await.ok()?;
            let mut acceptor = rustls::server::Acceptor::default();
            acceptor.read_tls(&mut &buffer[..read]).ok()?;
            match acceptor.accept() {
                Ok(Some(accepted)) => {
                    return Some(accepted.client_hello().alpn().is_some_and(|mut offered| offered.any(|p| p == ALPN_RAFT)));
                }
                Ok(None) if read == 0 => return None,
                // Not all of it has arrived: look again in a moment (peek
                // would return the same bytes at once).
                Ok(None) => {
                    if read == buffer.len() {
                        buffer.resize(buffer.len() * 2, 0);
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                }
                Err(_) => return None,
            }
        }
    };
    matches!(tokio::time::timeout(HANDSHAKE_TIMEOUT, look).await, Ok(Some(true)))
}

/// Re-registers `tcp` with `runtime` and completes its handshake there; the
/// Raft connection then goes to `taker`.
fn move_raft_connection(
    tcp: TcpStream,
    peer: std::net::SocketAddr,
    acceptor: TlsAcceptor,
    runtime: tokio::runtime::Handle,
    taker: tokio::sync::mpsc::Sender<RaftServerStream>,
) {
    let socket = match tcp.into_std() {
        Ok(socket) => socket,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "could not hand a Raft connection over");
            return;
        }
    };
    runtime.spawn(async move {
        let tcp = match TcpStream::from_std(socket) {
            Ok(tcp) => tcp,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "could not take a Raft connection over");
                return;
            }
        };
        if let Some(stream) = handshake(acceptor, tcp, peer).await {
            if stream.get_ref().1.alpn_protocol() != Some(ALPN_RAFT) {
                tracing::debug!(%peer, "a connection offering Raft chose another protocol; closed");
                return;
            }
            if let Err(e) = taker.send(stream).await {
                tracing::warn!(error = %e, "dropping a Raft connection: the manager is not taking them");
            }
        }
    });
}

/// The TLS handshake of one accepted connection, bounded in time.
async fn handshake(acceptor: TlsAcceptor, tcp: TcpStream, peer: std::net::SocketAddr) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, timeout = ?HANDSHAKE_TIMEOUT, "TLS handshake timed out");
            None
        }
    }
}

impl Stream for TlsIncoming {
    type Item = Result<tokio_rustls::server::TlsStream<TcpStream>, io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        this.accept_ready(cx);
        loop {
            match this.handshakes.poll_join_next(cx) {
                Poll::Ready(Some(Ok(Some(stream)))) => {
                    if let Some(grpc) = this.divert_raft(stream) {
                        return Poll::Ready(Some(Ok(grpc)));
                    }
                }
                Poll::Ready(Some(Ok(None))) => {}
                Poll::Ready(Some(Err(e))) => {
                    tracing::warn!(error = %e, "TLS handshake task failed")
                }
                // Empty or all pending: the listener or the join set has
                // registered the waker. The stream itself never ends.
                Poll::Ready(None) | Poll::Pending => return Poll::Pending,
            }
            // A finished handshake frees a slot; accept what queued meanwhile.
            this.accept_ready(cx);
        }
    }
}
