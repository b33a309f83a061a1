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

mod client;
mod pinning;
mod server;
#[cfg(test)]
mod tests;

pub use client::{connect, connect_first, connect_lazy, connect_raft, connect_unix, ClientTls, RaftClientStream};
pub use pinning::fetch_pinned_ca;
pub use server::{RaftServerStream, ServerTls, TlsIncoming};

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
/// Raft between managers, on the same port and certificates as gRPC but as
/// length-prefixed frames, one write per message: HTTP/2 costs each
/// message several writes and task hand-offs, which made up most of a
/// replication round trip (see `shoal_manager::raft::framed`).
pub const ALPN_RAFT: &[u8] = b"shoal-raft/1";

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

