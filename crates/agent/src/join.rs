//! Joining a swarm with a join token: fetch the swarm's CA from a manager,
//! trusting it only by the digest in the token, then have the CA sign a
//! fresh key's certificate request. The private key never leaves the node.
//! The daemon's `swarm join` and the scale simulator's nodes both join so.

use std::net::SocketAddr;
use std::time::Duration;

use shoal_proto::identity::generate_key_and_csr;
use shoal_proto::join_token::JoinToken;
use shoal_proto::pb;
use shoal_proto::tls::{self, ClientTls, Credentials};
use tonic::Status;

/// What the swarm gave a node that joined.
#[derive(Debug, Clone)]
pub struct Membership {
    pub node_id: String,
    /// "manager" or "worker", as the token decided.
    pub role: String,
    pub cluster_id: String,
    /// The managers' endpoints (the one joined through when none are known).
    pub managers: Vec<String>,
    pub credentials: Credentials,
}

/// What the node says about itself when it joins.
pub struct JoinRequest<'a> {
    /// A manager's `host:port`.
    pub remote: &'a str,
    pub token: &'a str,
    pub hostname: &'a str,
    /// Where the managers reach this node.
    pub advertise: SocketAddr,
    /// Bounds each step (fetching the CA, the certificate).
    pub timeout: Duration,
}

/// Joins through `request.remote`. Errors are the manager's statuses, or
/// `Unavailable` / `DeadlineExceeded` for a manager that cannot be reached.
pub async fn join_swarm(request: JoinRequest<'_>) -> Result<Membership, Status> {
    let token = JoinToken::parse(request.token).map_err(|e| Status::invalid_argument(e.to_string()))?;
    // Trust nothing until the manager proves it holds the CA the token names.
    let ca_pem = tls::fetch_pinned_ca(request.remote, &token.ca_digest, request.timeout)
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    // The CA names the node; this name only helps someone reading the request.
    let provisional_name = format!("joining-{:016x}", rand::random::<u64>());
    let key_and_csr = generate_key_and_csr(&provisional_name).map_err(|e| Status::internal(e.to_string()))?;
    let anonymous = ClientTls::anonymous(&ca_pem).map_err(|e| Status::internal(e.to_string()))?;
    let issue = async {
        let channel = tls::connect(request.remote, &anonymous, request.timeout)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        pb::ca_client::CaClient::new(channel)
            .issue_node_certificate(pb::IssueNodeCertificateRequest {
                csr_pem: key_and_csr.csr_pem.clone(),
                token: request.token.to_string(),
                hostname: request.hostname.to_string(),
                advertise_addr: request.advertise.to_string(),
            })
            .await
            .map(|r| r.into_inner())
    };
    let issued = tokio::time::timeout(request.timeout, issue).await.map_err(|_| {
        Status::deadline_exceeded(format!(
            "manager {} did not answer the join within {}s",
            request.remote,
            request.timeout.as_secs()
        ))
    })??;
    Ok(Membership {
        managers: if issued.managers.is_empty() { vec![request.remote.to_string()] } else { issued.managers },
        node_id: issued.node_id,
        role: issued.role,
        cluster_id: issued.cluster_id,
        credentials: Credentials { ca_pem: issued.ca_pem, cert_pem: issued.cert_pem, key_pem: key_and_csr.key_pem },
    })
}
