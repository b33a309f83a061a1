//! Fetching a swarm's CA from a manager, trusted only by the join token's
//! digest.

use super::*;
use super::client::{check_host_port, handshake_within, manager_server_name, tls13_client};

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
    let mut config = tls13_client()?
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
    handshake_within(addr, timeout, handshake).await?;

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
