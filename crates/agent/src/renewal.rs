//! Certificate renewal: a fresh key and a certificate for whatever role the
//! swarm wants this node to have, from any reachable manager.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_proto::identity::generate_key_and_csr;
use shoal_proto::pb;
use shoal_proto::tls::{ClientTls, Credentials};

use crate::managers::ManagerDialer;

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
    let mut dialer = ManagerDialer::new(tls.clone(), Arc::new(Mutex::new(managers.to_vec())), RENEW_TIMEOUT);
    // Each manager once, as the dialer takes them in turn.
    for _ in 0..managers.len() {
        let (addr, channel) = match dialer.connect().await {
            Ok(connected) => connected,
            Err(error) => {
                last_error = error;
                continue;
            }
        };
        let mut client = pb::ca_client::CaClient::new(channel);
        let call = client.issue_node_certificate(pb::IssueNodeCertificateRequest {
            csr_pem: key_and_csr.csr_pem.clone(),
            token: String::new(),
            hostname: String::new(),
            advertise_addr: advertise.to_string(),
        });
        match tokio::time::timeout(RENEW_TIMEOUT, call).await {
            Ok(Ok(reply)) => {
                let reply = reply.into_inner();
                return Ok(RenewedCertificate {
                    credentials: Credentials {
                        ca_pem: reply.ca_pem,
                        cert_pem: reply.cert_pem,
                        key_pem: key_and_csr.key_pem.clone(),
                    },
                    role: reply.role,
                    managers: reply.managers,
                });
            }
            Ok(Err(status)) => last_error = format!("{addr}: {}", status.message()),
            Err(_) => last_error = format!("{addr}: timed out"),
        }
    }
    Err(format!("could not renew the node certificate: {last_error}"))
}
