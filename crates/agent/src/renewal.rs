//! Certificate renewal: a fresh key and a certificate for whatever role the
//! swarm wants this node to have, from any reachable manager.

use std::time::Duration;

use shoal_proto::identity::generate_key_and_csr;
use shoal_proto::pb;
use shoal_proto::tls::{self, ClientTls, Credentials};

const RENEW_TIMEOUT: Duration = Duration::from_secs(5);

pub struct RenewedCertificate {
    pub credentials: Credentials,
    pub role: String,
    pub managers: Vec<String>,
}

/// Asks the managers in turn for a new certificate, authenticating with the
/// current one. `advertise` is this node's manager endpoint (ip:port), which
/// the CA records when the node becomes a manager.
pub async fn renew_certificate(
    node_id: &str,
    tls: &ClientTls,
    managers: &[String],
    advertise: &str,
) -> Result<RenewedCertificate, String> {
    let key_and_csr = generate_key_and_csr(node_id).map_err(|e| e.to_string())?;
    let mut last_error = String::from("no managers are known");
    for addr in managers {
        let attempt = async {
            let channel = tls::connect(addr, tls, RENEW_TIMEOUT).await.map_err(|e| e.to_string())?;
            let mut client = pb::ca_client::CaClient::new(channel);
            client
                .issue_node_certificate(pb::IssueNodeCertificateRequest {
                    csr_pem: key_and_csr.csr_pem.clone(),
                    token: String::new(),
                    hostname: String::new(),
                    advertise_addr: advertise.to_string(),
                })
                .await
                .map(|r| r.into_inner())
                .map_err(|s| s.message().to_string())
        };
        match tokio::time::timeout(RENEW_TIMEOUT * 2, attempt).await {
            Ok(Ok(reply)) => {
                return Ok(RenewedCertificate {
                    credentials: Credentials {
                        ca_pem: reply.ca_pem,
                        cert_pem: reply.cert_pem,
                        key_pem: key_and_csr.key_pem.clone(),
                    },
                    role: reply.role,
                    managers: reply.managers,
                })
            }
            Ok(Err(e)) => last_error = format!("{addr}: {e}"),
            Err(_) => last_error = format!("{addr}: timed out"),
        }
    }
    Err(format!("could not renew the node certificate: {last_error}"))
}
