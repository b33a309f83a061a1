//! The client side: the live client config and channels to managers (and
//! to the local daemon's socket).

use super::*;

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
        let mut config = tls13_client()?.with_root_certificates(roots).with_no_client_auth();
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

/// A client config builder for TLS 1.3 with the ring provider.
pub(super) fn tls13_client() -> Result<rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier>, TlsError> {
    ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(PROTOCOLS)
        .map_err(|e| TlsError::BadCredentials { reason: e.to_string() })
}

fn client_config(credentials: &Credentials) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = root_store(&parse_certs(&credentials.ca_pem, "CA certificate")?)?;
    let chain = parse_certs(&credentials.cert_pem, "certificate")?;
    let key = parse_key(&credentials.key_pem)?;
    let mut config = tls13_client()?
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

/// Connects to the first of `addrs` that answers, trying them in order but
/// starting the next one whenever the attempts under way have not answered
/// within `stagger` (or at once when one fails). A manager whose host is
/// down answers nothing, not even a refusal, so trying strictly in turn
/// would cost a whole `timeout` (or the ARP failure's 3 s) per lost manager;
/// overlapping costs one `stagger`. Returns the address that answered, or
/// every address's failure in the order given.
pub async fn connect_first(
    addrs: &[String],
    tls: &ClientTls,
    stagger: Duration,
    timeout: Duration,
) -> Result<(String, Channel), Vec<(String, TlsError)>> {
    let mut pending = tokio::task::JoinSet::new();
    let mut failures: Vec<(usize, String, TlsError)> = Vec::new();
    let mut next = addrs.iter().enumerate();
    let mut start_next = true;
    loop {
        if start_next {
            if let Some((index, addr)) = next.next() {
                let (addr, tls) = (addr.clone(), tls.clone());
                pending.spawn(async move {
                    let result = connect(&addr, &tls, timeout).await;
                    (index, addr, result)
                });
            }
        }
        if pending.is_empty() {
            failures.sort_by_key(|(index, _, _)| *index);
            return Err(failures.into_iter().map(|(_, addr, e)| (addr, e)).collect());
        }
        tokio::select! {
            joined = pending.join_next() => {
                match joined {
                    Some(Ok((_, addr, Ok(channel)))) => return Ok((addr, channel)),
                    Some(Ok((index, addr, Err(e)))) => failures.push((index, addr, e)),
                    // A connect task cannot panic short of a bug; count it as
                    // no answer and go on with the others.
                    Some(Err(_)) | None => {}
                }
                start_next = true;
            }
            _ = tokio::time::sleep(stagger) => start_next = true,
        }
    }
}

/// Sorts a connection failure into timeout, TLS refusal or plain network
/// error, because each needs a different fix.
pub(super) fn classify(addr: &str, timeout: Duration, error: &(dyn std::error::Error + 'static)) -> TlsError {
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

/// Runs a TCP connect and TLS handshake to `addr` within `timeout`, its
/// failure sorted as [`classify`] does.
pub(super) async fn handshake_within<T>(
    addr: &str,
    timeout: Duration,
    handshake: impl Future<Output = io::Result<T>>,
) -> Result<T, TlsError> {
    match tokio::time::timeout(timeout, handshake).await {
        Ok(Ok(done)) => Ok(done),
        Ok(Err(e)) => Err(classify(addr, timeout, &e)),
        Err(_) => Err(TlsError::Timeout {
            addr: addr.to_string(),
            timeout,
            detail: "the TCP connection or TLS handshake did not finish".into(),
        }),
    }
}

/// A client connection to a manager's Raft frames ([`ALPN_RAFT`]).
pub type RaftClientStream = tokio_rustls::client::TlsStream<TcpStream>;

/// A mutual-TLS connection to the manager at `addr` that speaks Raft frames
/// instead of gRPC, connected within `timeout`.
pub async fn connect_raft(addr: &str, tls: &ClientTls, timeout: Duration) -> Result<RaftClientStream, TlsError> {
    check_host_port(addr)?;
    let mut config = (*tls.current()).clone();
    config.alpn_protocols = vec![ALPN_RAFT.to_vec()];
    let connecting = async {
        let tcp = TcpStream::connect(addr).await?;
        // Raft messages are small and latency-bound; Nagle would hold them.
        tcp.set_nodelay(true)?;
        TlsConnector::from(Arc::new(config)).connect(manager_server_name()?, tcp).await
    };
    let stream = handshake_within(addr, timeout, connecting).await?;
    if stream.get_ref().1.alpn_protocol() != Some(ALPN_RAFT) {
        return Err(TlsError::Handshake {
            addr: addr.to_string(),
            detail: "it did not agree to Raft frames; upgrade that manager to this version".into(),
        });
    }
    Ok(stream)
}

pub(super) fn manager_server_name() -> io::Result<ServerName<'static>> {
    ServerName::try_from(MANAGER_SERVER_NAME)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

/// Rejects what would otherwise fail later with a vaguer message (a missing
/// port would silently become port 80).
pub(super) fn check_host_port(addr: &str) -> Result<(), TlsError> {
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
