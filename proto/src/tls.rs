//! Mutual TLS for every Shoal connection over TCP.
//!
//! Node certificates renew at half-life while the daemon keeps running, so
//! tonic's static `ServerTlsConfig`/`ClientTlsConfig` cannot be used: they
//! freeze one certificate for the life of a server or channel. Instead
//! [`ServerTls`] and [`ClientTls`] hold the current rustls config behind a
//! lock; every new handshake reads it, and [`ServerTls::update`] /
//! [`ClientTls::update`] swap it. Connections already open keep the
//! certificate they were made with, which is fine: the old certificate stays
//! valid until long after renewal.
//!
//! Trust model: one root CA per swarm. Servers (managers) present
//! `[leaf, ca]` with a DNS SAN of [`MANAGER_SERVER_NAME`]; clients verify that
//! name against the CA. Client certificates are optional at the TLS layer (a
//! joining node has none yet) but, when presented, must chain to the CA; the
//! RPC layer then decides per call what role it needs (see
//! [`crate::identity::peer_identity`]).
//!
//! Nothing here installs a process-wide rustls crypto provider: every builder
//! gets the ring provider explicitly, so linking another TLS user into the
//! binary cannot change what Shoal does.

use std::fmt;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::task::JoinSet;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_stream::Stream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::join_token::ca_digest;

/// The DNS name in every manager's server certificate. Clients connect to
/// managers by IP, so they verify this fixed name instead of the address:
/// the CA is private to the swarm, so any certificate it issued with this name
/// belongs to one of the swarm's managers.
pub const MANAGER_SERVER_NAME: &str = "swarm-manager";

/// A client that opens TCP but never finishes the handshake must not hold a
/// task and a socket forever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on handshakes in flight, so a flood of half-open connections runs
/// into this limit (and waits) rather than into the file descriptor limit.
const MAX_PENDING_HANDSHAKES: usize = 1024;
/// Pause after an accept error such as EMFILE, which would otherwise repeat
/// immediately and spin the accept loop.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);
/// HTTP/2 pings notice a dead manager (powered off, partitioned) within a
/// few seconds, where TCP alone could take minutes. Failover depends on it.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(2);
/// Connecting to the local daemon socket either works at once or not at all.
const UNIX_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// gRPC runs over HTTP/2 only.
const ALPN_H2: &[u8] = b"h2";

/// Anything that stops a TLS setup or connection, as one sentence each.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("the {what} PEM could not be read ({reason}); pass a PEM file with a BEGIN CERTIFICATE block")]
    BadCertificatePem { what: &'static str, reason: String },
    #[error("the {what} PEM holds no certificate; pass a PEM file with a BEGIN CERTIFICATE block")]
    NoCertificate { what: &'static str },
    #[error("the private key PEM could not be read ({reason}); pass the key file created together with the certificate")]
    BadKey { reason: String },
    #[error(
        "the CA certificate cannot be used as a trust root ({reason}); pass the swarm's ca.pem"
    )]
    BadCa { reason: String },
    #[error("the certificate and key cannot be used for TLS ({reason}); check that the key belongs to the certificate")]
    BadCredentials { reason: String },
    #[error("manager address {addr:?} is not host:port ({reason}); pass an address like 198.18.0.1:4242")]
    BadAddress { addr: String, reason: String },
    #[error(
        "the expected CA digest {digest:?} is not 64 hex characters; copy the whole join token"
    )]
    BadDigest { digest: String },
    #[error("could not connect to manager {addr} ({detail}); check the address and that the manager is running")]
    Connect { addr: String, detail: String },
    #[error("the TLS handshake with manager {addr} failed ({detail}); check that {addr} is a manager of this swarm and that your CA certificate is this swarm's")]
    Handshake { addr: String, detail: String },
    #[error("could not reach manager {addr} within {timeout:?}: {detail}")]
    Timeout {
        addr: String,
        timeout: Duration,
        detail: String,
    },
    #[error("the manager at {addr} presents CA sha256:{presented} but the join token expects sha256:{expected}; check the token and the address")]
    CaMismatch {
        addr: String,
        presented: String,
        expected: String,
    },
    #[error("{addr} presented {count} certificate(s) instead of a certificate followed by its CA; check that {addr} is a Shoal manager")]
    NoCaInChain { addr: String, count: usize },
    #[error("the manager at {addr} presents a certificate that its CA did not issue to a manager ({reason}); check the address")]
    UntrustedServer { addr: String, reason: String },
    #[error("could not connect to the daemon socket {} ({detail}); is `shoal daemon` running?", path.display())]
    Unix { path: PathBuf, detail: String },
}

/// A node's or client's TLS material, all PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The swarm's root CA certificate.
    pub ca_pem: String,
    /// This holder's certificate (leaf first if it is a chain).
    pub cert_pem: String,
    /// The private key of `cert_pem`.
    pub key_pem: String,
}

// Debug must never print the key: credentials end up in `{:?}` of bigger
// structs that get logged.
impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("ca_pem", &self.ca_pem)
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS 1.3 only: every peer is a Shoal binary, so there is nothing older to
/// interoperate with and no reason to carry TLS 1.2's extra surface.
const PROTOCOLS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

// ---------------------------------------------------------------- live config

/// A rustls config that renewal swaps while connections keep taking the
/// current one. Clones share the slot.
#[derive(Clone)]
struct LiveConfig<T>(Arc<RwLock<Arc<T>>>);

impl<T> LiveConfig<T> {
    fn new(config: Arc<T>) -> Self {
        LiveConfig(Arc::new(RwLock::new(config)))
    }

    fn get(&self) -> Arc<T> {
        // A poisoned lock still holds a complete config: the writer only
        // ever replaces the whole Arc.
        self.0.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn set(&self, config: Arc<T>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = config;
    }
}

// ---------------------------------------------------------------- server

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
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// The stream returned by [`ServerTls::incoming`].
pub struct TlsIncoming {
    listener: TcpListener,
    tls: ServerTls,
    handshakes: JoinSet<Option<tokio_rustls::server::TlsStream<TcpStream>>>,
    backoff: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl TlsIncoming {
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
        self.handshakes.spawn(async move {
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
        });
    }
}

impl Stream for TlsIncoming {
    type Item = Result<tokio_rustls::server::TlsStream<TcpStream>, io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        this.accept_ready(cx);
        loop {
            match this.handshakes.poll_join_next(cx) {
                Poll::Ready(Some(Ok(Some(stream)))) => return Poll::Ready(Some(Ok(stream))),
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

// ---------------------------------------------------------------- client

/// The client side of mutual TLS. Clones share the same config, so one
/// `update` after a renewal reaches every channel made from it.
#[derive(Clone)]
pub struct ClientTls {
    current: LiveConfig<ClientConfig>,
}

impl ClientTls {
    /// Presents `credentials`' certificate and trusts only its CA.
    pub fn new(credentials: &Credentials) -> Result<Self, TlsError> {
        Ok(ClientTls {
            current: LiveConfig::new(client_config(credentials)?),
        })
    }

    /// Trusts only `ca_pem` and presents no certificate: how a joining node
    /// asks the CA for its first certificate.
    pub fn anonymous(ca_pem: &str) -> Result<Self, TlsError> {
        let roots = root_store(&parse_certs(ca_pem, "CA certificate")?)?;
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(PROTOCOLS)
            .map_err(|e| TlsError::BadCredentials {
                reason: e.to_string(),
            })?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        Ok(ClientTls {
            current: LiveConfig::new(Arc::new(config)),
        })
    }

    /// Makes every later connection use `credentials`. On error the current
    /// config stays in force.
    pub fn update(&self, credentials: &Credentials) -> Result<(), TlsError> {
        self.current.set(client_config(credentials)?);
        Ok(())
    }

    fn current(&self) -> Arc<ClientConfig> {
        self.current.get()
    }
}

fn client_config(credentials: &Credentials) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = root_store(&parse_certs(&credentials.ca_pem, "CA certificate")?)?;
    let chain = parse_certs(&credentials.cert_pem, "certificate")?;
    let key = parse_key(&credentials.key_pem)?;
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(PROTOCOLS)
        .map_err(|e| TlsError::BadCredentials {
            reason: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| TlsError::BadCredentials {
            reason: e.to_string(),
        })?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// A gRPC channel to the manager at `addr` (host:port) over mutual TLS,
/// connected before it returns. `timeout` bounds the connection and every
/// call's wait for a response.
///
/// The channel reconnects by itself after a failure, each time with the
/// config `tls` holds then, so it picks up renewed certificates.
pub async fn connect(addr: &str, tls: &ClientTls, timeout: Duration) -> Result<Channel, TlsError> {
    let endpoint = manager_endpoint(addr, timeout)?;
    let connecting = endpoint.connect_with_connector(tls_connector(addr, tls));
    // connect_timeout covers TCP and TLS; this also bounds the HTTP/2 setup.
    match tokio::time::timeout(timeout, connecting).await {
        Ok(Ok(channel)) => Ok(channel),
        Ok(Err(e)) => Err(classify(addr, timeout, &e)),
        Err(_) => Err(TlsError::Timeout {
            addr: addr.to_string(),
            timeout,
            detail: "the TLS or HTTP/2 setup did not finish".into(),
        }),
    }
}

/// Sorts a connection failure into timeout, TLS refusal or plain network
/// error, because each needs a different fix.
fn classify(addr: &str, timeout: Duration, error: &(dyn std::error::Error + 'static)) -> TlsError {
    let addr = addr.to_string();
    let detail = error_chain(error);
    let mut next = Some(error);
    while let Some(e) = next {
        let io = e.downcast_ref::<io::Error>();
        if io.is_some_and(|io| io.kind() == io::ErrorKind::TimedOut) {
            return TlsError::Timeout {
                addr,
                timeout,
                detail: "the TCP connection or TLS handshake did not finish".into(),
            };
        }
        // tokio-rustls wraps rustls errors in io::Error, whose source()
        // skips the wrapped error itself; look inside explicitly.
        let wrapped = io
            .and_then(|io| io.get_ref())
            .is_some_and(|inner| inner.is::<rustls::Error>());
        if wrapped || e.is::<rustls::Error>() {
            return TlsError::Handshake { addr, detail };
        }
        next = e.source();
    }
    TlsError::Connect { addr, detail }
}

/// Like [`connect`], but connects on first use; only a malformed `addr`
/// fails here. For peers that may be down right now (other managers).
pub fn connect_lazy(addr: &str, tls: &ClientTls, timeout: Duration) -> Result<Channel, TlsError> {
    Ok(manager_endpoint(addr, timeout)?.connect_with_connector_lazy(tls_connector(addr, tls)))
}

fn manager_endpoint(addr: &str, timeout: Duration) -> Result<Endpoint, TlsError> {
    check_host_port(addr)?;
    // The scheme is nominal: the connector below does TLS itself.
    let endpoint =
        Endpoint::from_shared(format!("http://{addr}")).map_err(|e| TlsError::BadAddress {
            addr: addr.to_string(),
            reason: error_chain(&e),
        })?;
    Ok(endpoint
        .connect_timeout(timeout)
        .timeout(timeout)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true))
}

/// TCP + rustls to `addr`, reading the client config at each connection.
fn tls_connector(
    addr: &str,
    tls: &ClientTls,
) -> impl tower::Service<
    Uri,
    Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>,
    Error = io::Error,
    Future = impl Future<Output = io::Result<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>>>
                 + Send,
> + Send
       + 'static {
    let addr = addr.to_string();
    let tls = tls.clone();
    tower::service_fn(move |_: Uri| {
        let addr = addr.clone();
        let config = tls.current();
        async move {
            let tcp = TcpStream::connect(addr.as_str()).await?;
            tcp.set_nodelay(true)?;
            let stream = TlsConnector::from(config)
                .connect(manager_server_name()?, tcp)
                .await?;
            Ok(TokioIo::new(stream))
        }
    })
}

fn manager_server_name() -> io::Result<ServerName<'static>> {
    ServerName::try_from(MANAGER_SERVER_NAME)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

/// Rejects what would otherwise fail later with a vaguer message (a missing
/// port would silently become port 80).
fn check_host_port(addr: &str) -> Result<(), TlsError> {
    let bad = |reason: &str| TlsError::BadAddress {
        addr: addr.to_string(),
        reason: reason.to_string(),
    };
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| bad("there is no port"))?;
    if host.is_empty() {
        return Err(bad("there is no host"));
    }
    port.parse::<u16>()
        .map_err(|_| bad("the port is not a number from 0 to 65535"))?;
    Ok(())
}

/// A plain (no TLS) gRPC channel to the local daemon's unix socket; file
/// permissions on the socket are its access control.
pub async fn connect_unix(path: &Path) -> Result<Channel, TlsError> {
    let socket = path.to_path_buf();
    let connector = tower::service_fn(move |_: Uri| {
        let socket = socket.clone();
        async move { UnixStream::connect(socket).await.map(TokioIo::new) }
    });
    // tonic needs a URI; the connector ignores it.
    Endpoint::from_static("http://localhost")
        .connect_timeout(UNIX_CONNECT_TIMEOUT)
        .connect_with_connector(connector)
        .await
        .map_err(|e| TlsError::Unix {
            path: path.to_path_buf(),
            detail: error_chain(&e),
        })
}

// ---------------------------------------------------------------- CA pinning

/// Fetches the swarm's CA certificate from the manager at `addr`, trusting
/// it only if its SHA-256 is `expected_digest` (from the join token) and the
/// manager's own certificate is a manager certificate issued by it. Returns
/// the CA as PEM.
///
/// The handshake accepts any chain, but only to capture it; nothing is sent
/// over the connection, and all trust decisions happen on the captured chain.
pub async fn fetch_pinned_ca(
    addr: &str,
    expected_digest: &str,
    timeout: Duration,
) -> Result<String, TlsError> {
    check_host_port(addr)?;
    let expected = expected_digest.trim().to_ascii_lowercase();
    if expected.len() != 64 || !expected.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(TlsError::BadDigest {
            digest: expected_digest.to_string(),
        });
    }
    let provider = provider();
    let capture = Arc::new(CapturingVerifier {
        provider: provider.clone(),
        chain: Mutex::new(None),
    });
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(PROTOCOLS)
        .map_err(|e| TlsError::BadCredentials {
            reason: e.to_string(),
        })?
        .dangerous()
        .with_custom_certificate_verifier(capture.clone())
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    // A resumed session would skip the verifier and capture nothing.
    config.resumption = Resumption::disabled();

    let handshake = async {
        let tcp = TcpStream::connect(addr).await?;
        let mut stream = TlsConnector::from(Arc::new(config))
            .connect(manager_server_name()?, tcp)
            .await?;
        // Say goodbye properly so the manager logs nothing alarming.
        let _ = stream.shutdown().await;
        Ok::<_, io::Error>(())
    };
    match tokio::time::timeout(timeout, handshake).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(classify(addr, timeout, &e)),
        Err(_) => {
            return Err(TlsError::Timeout {
                addr: addr.to_string(),
                timeout,
                detail: "the TCP connection or TLS handshake did not finish".into(),
            })
        }
    }

    let chain = capture
        .chain
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
        .unwrap_or_default();
    let (leaf, ca) = match chain.as_slice() {
        [leaf, .., ca] => (leaf, ca),
        _ => {
            return Err(TlsError::NoCaInChain {
                addr: addr.to_string(),
                count: chain.len(),
            })
        }
    };
    let presented = ca_digest(ca);
    if presented != expected {
        return Err(TlsError::CaMismatch {
            addr: addr.to_string(),
            presented,
            expected,
        });
    }
    // The digest matches, so `ca` is the swarm's CA. Now make sure the
    // manager's certificate really comes from it (the handshake already
    // proved the manager holds the leaf's key).
    let roots = root_store(std::slice::from_ref(ca))?;
    let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider)
        .build()
        .map_err(|e| TlsError::BadCa {
            reason: e.to_string(),
        })?;
    let intermediates = &chain[1..chain.len() - 1];
    let untrusted = |reason: String| TlsError::UntrustedServer {
        addr: addr.to_string(),
        reason,
    };
    let name = manager_server_name().map_err(|e| untrusted(e.to_string()))?;
    verifier
        .verify_server_cert(leaf, intermediates, &name, &[], UnixTime::now())
        .map_err(|e| untrusted(e.to_string()))?;
    Ok(pem_encode("CERTIFICATE", ca))
}

/// Accepts any server chain and records it; see [`fetch_pinned_ca`]. It
/// still checks the handshake signatures, which prove the server holds the
/// private key of the leaf it presented.
#[derive(Debug)]
struct CapturingVerifier {
    provider: Arc<CryptoProvider>,
    chain: Mutex<Option<Vec<CertificateDer<'static>>>>,
}

impl ServerCertVerifier for CapturingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let chain = std::iter::once(end_entity)
            .chain(intermediates)
            .map(|c| c.clone().into_owned())
            .collect();
        *self.chain.lock().unwrap_or_else(PoisonError::into_inner) = Some(chain);
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

// ---------------------------------------------------------------- helpers

fn parse_certs(pem: &str, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let mut reader = pem.as_bytes();
    let certs = rustls_pemfile::certs(&mut reader)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadCertificatePem {
            what,
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { what });
    }
    Ok(certs)
}

fn parse_key(pem: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    let mut reader = pem.as_bytes();
    match rustls_pemfile::private_key(&mut reader) {
        Ok(Some(key)) => Ok(key),
        Ok(None) => Err(TlsError::BadKey {
            reason: "it holds no PRIVATE KEY block".into(),
        }),
        Err(e) => Err(TlsError::BadKey {
            reason: e.to_string(),
        }),
    }
}

fn root_store(cas: &[CertificateDer<'static>]) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for ca in cas {
        roots.add(ca.clone()).map_err(|e| TlsError::BadCa {
            reason: e.to_string(),
        })?;
    }
    Ok(Arc::new(roots))
}

/// tonic's errors say only "transport error" at the top; the cause (refused,
/// unknown CA, ...) is further down the source chain.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(error);
    while let Some(e) = next {
        let text = e.to_string();
        // Wrappers often repeat their source's message verbatim, and tonic's
        // top-level "transport error" says nothing.
        let says_nothing = text == "transport error" && e.source().is_some();
        if !says_nothing && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

/// PEM-encodes DER. rustls-pemfile only decodes, and this is all we need of
/// an encoder.
fn pem_encode(label: &str, der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut base64 = Vec::with_capacity(der.len().div_ceil(3) * 4);
    for chunk in der.chunks(3) {
        let byte = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let group = (byte(0) << 16) | (byte(1) << 8) | byte(2);
        // n input bytes give n+1 significant sextets; '=' pads the rest.
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            base64.push(if i <= chunk.len() {
                ALPHABET[((group >> shift) & 63) as usize]
            } else {
                b'='
            });
        }
    }
    let mut pem = format!("-----BEGIN {label}-----\n");
    for line in base64.chunks(64) {
        pem.extend(line.iter().map(|&b| char::from(b)));
        pem.push('\n');
    }
    pem.push_str(&format!("-----END {label}-----\n"));
    pem
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let cert = rcgen::CertificateParams::new(vec![name.to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn pem_encoding_round_trips_every_padding() {
        for len in [0usize, 1, 2, 3, 47, 48, 49, 100] {
            let der: Vec<u8> = (0..len).map(|i| (i * 37 % 256) as u8).collect();
            let pem = pem_encode("CERTIFICATE", &der);
            assert!(pem.lines().all(|l| l.len() <= 64 || l.starts_with("-----")));
            let mut reader = pem.as_bytes();
            let item = rustls_pemfile::read_one(&mut reader).expect("pem parses");
            match item {
                Some(rustls_pemfile::Item::X509Certificate(decoded)) => {
                    assert_eq!(decoded.as_ref(), der.as_slice())
                }
                None if len == 0 => {}
                other => panic!("unexpected {other:?} for length {len}"),
            }
        }
        let (cert, _) = self_signed("x");
        let der = parse_certs(&cert, "certificate").expect("cert")[0].clone();
        assert_eq!(pem_encode("CERTIFICATE", &der), cert.replace("\r\n", "\n"));
    }

    #[test]
    fn credentials_debug_hides_the_key() {
        let credentials = Credentials {
            ca_pem: "ca".into(),
            cert_pem: "cert".into(),
            key_pem: "SECRETKEY".into(),
        };
        assert!(!format!("{credentials:?}").contains("SECRETKEY"));
    }

    #[test]
    fn bad_material_is_named() {
        let (cert, key) = self_signed("a");
        let (_, other_key) = self_signed("b");
        let good = Credentials {
            ca_pem: cert.clone(),
            cert_pem: cert.clone(),
            key_pem: key.clone(),
        };
        assert!(ServerTls::new(&good).is_ok());
        assert!(ClientTls::new(&good).is_ok());

        let no_ca = Credentials {
            ca_pem: "nothing".into(),
            ..good.clone()
        };
        assert!(matches!(
            ServerTls::new(&no_ca),
            Err(TlsError::NoCertificate {
                what: "CA certificate"
            })
        ));
        let no_key = Credentials {
            key_pem: cert.clone(),
            ..good.clone()
        };
        assert!(matches!(
            ClientTls::new(&no_key),
            Err(TlsError::BadKey { .. })
        ));
        let wrong_key = Credentials {
            key_pem: other_key,
            ..good.clone()
        };
        assert!(matches!(
            ServerTls::new(&wrong_key),
            Err(TlsError::BadCredentials { .. })
        ));
        assert!(matches!(
            ClientTls::new(&wrong_key),
            Err(TlsError::BadCredentials { .. })
        ));

        // A failed update keeps the old config working.
        let server = ServerTls::new(&good).expect("server");
        assert!(server.update(&no_ca).is_err());
        assert!(server.update(&good).is_ok());
    }

    #[test]
    fn addresses_must_be_host_and_port() {
        assert!(check_host_port("198.18.0.1:4242").is_ok());
        assert!(check_host_port("[::1]:4242").is_ok());
        assert!(check_host_port("manager-1:4242").is_ok());
        for bad in ["198.18.0.1", ":4242", "host:port", "host:70000", ""] {
            let err = check_host_port(bad).unwrap_err();
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[tokio::test]
    async fn fetch_rejects_a_malformed_digest_before_connecting() {
        let err = fetch_pinned_ca("127.0.0.1:1", "abc", Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(err, TlsError::BadDigest { .. }), "{err}");
    }

    #[tokio::test]
    async fn refused_connections_say_so() {
        // Bind then drop to get a port that is (almost certainly) closed.
        let port = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let addr = format!("127.0.0.1:{port}");
        let (cert, key) = self_signed("a");
        let tls = ClientTls::new(&Credentials {
            ca_pem: cert.clone(),
            cert_pem: cert,
            key_pem: key,
        })
        .expect("tls");
        let err = connect(&addr, &tls, Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(matches!(err, TlsError::Connect { .. }), "{err}");
        assert!(err.to_string().contains(&addr), "{err}");
        let digest = "0".repeat(64);
        let err = fetch_pinned_ca(&addr, &digest, Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(matches!(err, TlsError::Connect { .. }), "{err}");
        let err = connect_unix(Path::new("/nonexistent/shoal.sock"))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/shoal.sock"), "{err}");
    }
}
