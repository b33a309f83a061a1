//! The CA service: how a node gets into the swarm (join token -> first
//! certificate) and stays in it (renewal with its current certificate).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use shoal_proto::identity::Role;
use shoal_proto::join_token::{secret_matches, JoinToken};
use shoal_proto::pb;
use tonic::{Request, Response, Status};

use super::auth::require_identity;
use super::control::{cluster_of, managers_of};
use crate::ca::CertificateAuthority;
use crate::errors::ManagerError;
use crate::manager::Manager;
use crate::store::{
    new_node_id, now_ms, Availability, Cluster, Kind, Meta, Node, NodeRole, NodeStatus, Object, Op, Transaction,
    TxnError,
};

pub struct CaService {
    manager: Arc<Manager>,
}

impl CaService {
    pub fn new(manager: Arc<Manager>) -> Self {
        CaService { manager }
    }
}

fn role_of(role: NodeRole) -> Role {
    match role {
        NodeRole::Manager => Role::Manager,
        NodeRole::Worker => Role::Worker,
    }
}

fn load_ca(cluster: &Cluster) -> Result<CertificateAuthority, ManagerError> {
    CertificateAuthority::from_pem(&cluster.ca_cert_pem, &cluster.ca_key_pem)
        .map_err(|e| ManagerError::Internal(format!("loading the CA: {e}")))
}

/// The node's advertised endpoint, `ip:port`.
fn parse_endpoint(value: &str) -> Result<SocketAddr, ManagerError> {
    value.parse().map_err(|_| {
        ManagerError::InvalidArgument(format!("advertise address {value:?} is invalid; use IP:PORT"))
    })
}

fn validate_hostname(hostname: &str) -> Result<(), ManagerError> {
    let ok = !hostname.is_empty()
        && hostname.len() <= 253
        && hostname.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ManagerError::InvalidArgument(format!(
            "hostname {hostname:?} is invalid; use letters, digits, '-', '_' or '.'"
        )))
    }
}

impl CaService {
    async fn join(&self, req: pb::IssueNodeCertificateRequest) -> Result<pb::IssueNodeCertificateResponse, ManagerError> {
        let token = JoinToken::parse(&req.token).map_err(|e| ManagerError::InvalidArgument(e.to_string()))?;
        validate_hostname(&req.hostname)?;
        let endpoint = parse_endpoint(&req.advertise_addr)?;
        // Retry only when the cluster object moved under us for another
        // reason; a rotated token fails the secret check on the re-read.
        for _ in 0..5 {
            self.manager.read_barrier().await?;
            let cluster = self.manager.store.view(cluster_of)?;
            let ca = load_ca(&cluster)?;
            if token.ca_digest != ca.digest() {
                return Err(ManagerError::PermissionDenied(format!(
                    "the join token is for another swarm (CA sha256:{}); get a token from this swarm with `shoal swarm join-token worker`",
                    token.ca_digest
                )));
            }
            let role = if secret_matches(&cluster.manager_token_secret, &token.secret) {
                NodeRole::Manager
            } else if secret_matches(&cluster.worker_token_secret, &token.secret) {
                NodeRole::Worker
            } else {
                return Err(ManagerError::PermissionDenied(
                    "the join token is not valid for this swarm: it was rotated or mistyped; get the current one with `shoal swarm join-token worker` (or manager)".into(),
                ));
            };
            let (_, node_id) = new_node_id();
            let lifetime = Duration::from_secs(cluster.cert_lifetime_secs);
            let cert_pem = ca
                .sign_node_csr(&req.csr_pem, &node_id, role_of(role), cluster.id(), lifetime, &[endpoint.ip()])
                .map_err(|e| ManagerError::InvalidArgument(e.to_string()))?;
            let node = Node {
                meta: Meta { id: node_id.clone(), ..Default::default() },
                hostname: req.hostname.clone(),
                role,
                desired_role: role,
                availability: Availability::Active,
                labels: Default::default(),
                addr: endpoint.ip().to_string(),
                manager_addr: if role == NodeRole::Manager { endpoint.to_string() } else { String::new() },
                status: NodeStatus::Unknown,
                manager_reachable: false,
                manager_locked: false,
                cert_expiry: now_ms() + lifetime.as_millis() as u64,
                description: Default::default(),
                network_addresses: Default::default(),
                container_attachments: Vec::new(),
            };
            let txn = Transaction::new(vec![
                // The token was checked against this version of the cluster;
                // a rotation committed meanwhile must win.
                Op::Check { kind: Kind::Cluster, id: cluster.id().to_string(), version: cluster.meta.version },
                Op::Create(Object::Node(node)),
            ]);
            match self.manager.write(txn).await {
                Ok(_) => {}
                Err(ManagerError::Txn(TxnError::VersionConflict { .. })) => continue,
                Err(e) => return Err(e),
            }
            tracing::info!(node = %node_id, hostname = %req.hostname, role = role.as_str(), "node joined");
            let managers = self.manager.store.view(managers_of);
            return Ok(pb::IssueNodeCertificateResponse {
                node_id,
                role: role.as_str().into(),
                cert_pem,
                ca_pem: cluster.ca_cert_pem.clone(),
                managers,
                cluster_id: cluster.id().to_string(),
            });
        }
        Err(ManagerError::Unavailable("the swarm's configuration kept changing during the join; retry".into()))
    }

    async fn renew(
        &self,
        node_id: &str,
        req: pb::IssueNodeCertificateRequest,
    ) -> Result<pb::IssueNodeCertificateResponse, ManagerError> {
        for _ in 0..5 {
            self.manager.read_barrier().await?;
            let (cluster, node) = self.manager.store.view(|s| {
                let cluster = cluster_of(s)?;
                let node = s.get_typed::<Node>(node_id).cloned().ok_or_else(|| {
                    ManagerError::NotFound(format!("node {node_id} is not part of the swarm; join it again"))
                })?;
                Ok::<_, ManagerError>((cluster, node))
            })?;
            let ca = load_ca(&cluster)?;
            let lifetime = Duration::from_secs(cluster.cert_lifetime_secs);
            let role = node.desired_role;
            let endpoint = if req.advertise_addr.is_empty() { None } else { Some(parse_endpoint(&req.advertise_addr)?) };
            let ip: Option<IpAddr> = endpoint.map(|e| e.ip()).or_else(|| node.addr.parse().ok());
            let cert_pem = ca
                .sign_node_csr(&req.csr_pem, node_id, role_of(role), cluster.id(), lifetime, ip.as_slice())
                .map_err(|e| ManagerError::InvalidArgument(e.to_string()))?;
            let version = node.meta.version;
            let mut updated = node;
            updated.role = role;
            updated.cert_expiry = now_ms() + lifetime.as_millis() as u64;
            updated.manager_addr = match (role, endpoint) {
                (NodeRole::Manager, Some(endpoint)) => endpoint.to_string(),
                (NodeRole::Manager, None) => updated.manager_addr,
                (NodeRole::Worker, _) => String::new(),
            };
            let txn = Transaction::single(Op::Update { object: Object::Node(updated), expected_version: Some(version) });
            match self.manager.write(txn).await {
                Ok(_) => {}
                Err(ManagerError::Txn(TxnError::VersionConflict { .. })) => continue,
                Err(e) => return Err(e),
            }
            let managers = self.manager.store.view(managers_of);
            return Ok(pb::IssueNodeCertificateResponse {
                node_id: node_id.to_string(),
                role: role.as_str().into(),
                cert_pem,
                ca_pem: cluster.ca_cert_pem.clone(),
                managers,
                cluster_id: cluster.id().to_string(),
            });
        }
        Err(ManagerError::Unavailable(format!("node {node_id} kept changing during renewal; retry")))
    }
}

#[tonic::async_trait]
impl pb::ca_server::Ca for CaService {
    async fn get_root_certificate(&self, _request: Request<pb::Empty>) -> Result<Response<pb::RootCertificate>, Status> {
        let cluster = self.manager.store.view(cluster_of)?;
        Ok(Response::new(pb::RootCertificate { ca_pem: cluster.ca_cert_pem }))
    }

    async fn issue_node_certificate(
        &self,
        request: Request<pb::IssueNodeCertificateRequest>,
    ) -> Result<Response<pb::IssueNodeCertificateResponse>, Status> {
        if !request.get_ref().token.is_empty() {
            return Ok(Response::new(self.join(request.into_inner()).await?));
        }
        let identity = require_identity(&request, &self.manager)?;
        if !matches!(identity.role, Role::Manager | Role::Worker) {
            return Err(Status::permission_denied("only nodes renew node certificates; clients get theirs from `shoal swarm client-bundle`"));
        }
        Ok(Response::new(self.renew(&identity.id, request.into_inner()).await?))
    }
}
