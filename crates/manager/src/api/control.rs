//! The control API: what `shoal node ...`, `swarm join-token`, `config ...`,
//! `secret ...` and remote clients use (secrets and configs are served by
//! [`super::secrets`], services by [`super::services`]). Reads go through
//! the Raft read-index so they see every acknowledged write; writes go
//! through [`Manager::write`].

use std::sync::Arc;

use shoal_proto::identity::Role;
use shoal_proto::join_token::JoinToken;
use shoal_proto::pb;
use tonic::{Request, Response, Status};

use super::auth::{authorize, Transport};
use super::{networks, secrets, services, stacks};
use super::slot::ManagerSlot;
use crate::ca::CertificateAuthority;
use crate::errors::ManagerError;
use crate::manager::{Manager, RaftView};
use crate::store::{raft_id_of, Availability, Cluster, Kind, Node, NodeRole, Object, Op, StoreState, Transaction};

const CONTROL_ROLES: &[Role] = &[Role::Manager, Role::Client];

#[derive(Clone)]
pub struct ControlService {
    slot: ManagerSlot,
    transport: Transport,
}

impl ControlService {
    pub fn new(slot: ManagerSlot, transport: Transport) -> Self {
        ControlService { slot, transport }
    }

    /// The manager to serve from, after checking the caller may use the API.
    fn manager<T>(&self, request: &Request<T>) -> Result<Arc<Manager>, Status> {
        let manager = self.slot.get().ok_or_else(not_a_manager)?;
        authorize(self.transport, request, &manager, CONTROL_ROLES)?;
        Ok(manager)
    }
}

pub fn not_a_manager() -> Status {
    Status::failed_precondition(
        "this node is not a swarm manager; run the command on a manager node, or use `shoal swarm init` / `shoal swarm join` first",
    )
}

/// Finds a node by full id, unique id prefix or hostname, as docker does.
pub fn resolve_node<'a>(state: &'a StoreState, reference: &str) -> Result<&'a Node, ManagerError> {
    if reference.is_empty() {
        return Err(ManagerError::InvalidArgument("a node id or hostname is required".into()));
    }
    if let Some(node) = state.get_typed::<Node>(reference) {
        return Ok(node);
    }
    let by_name: Vec<&Node> = state.list_typed::<Node>().filter(|n| n.hostname == reference).collect();
    if by_name.len() == 1 {
        return Ok(by_name[0]);
    }
    let by_prefix: Vec<&Node> = state.list_typed::<Node>().filter(|n| n.meta.id.starts_with(reference)).collect();
    match (by_name.len(), by_prefix.len()) {
        (0, 1) => Ok(by_prefix[0]),
        (0, 0) => Err(ManagerError::NotFound(format!(
            "node {reference:?} not found; list nodes with `shoal node ls`"
        ))),
        _ => Err(ManagerError::InvalidArgument(format!(
            "node {reference:?} is ambiguous; use more characters of its id"
        ))),
    }
}

pub fn cluster_of(state: &StoreState) -> Result<Cluster, ManagerError> {
    state.cluster().cloned().ok_or_else(|| ManagerError::FailedPrecondition("the swarm has no cluster object yet".into()))
}

/// Renders a node for the API; manager status comes from Raft membership
/// (who is a voter, who leads) and the leader's view of reachability.
pub fn node_to_pb(node: &Node, raft: &RaftView) -> pb::Node {
    let raft_id = raft_id_of(&node.meta.id);
    let is_voter = raft_id.is_some_and(|id| raft.voters.contains(&id));
    let manager_status = if !is_voter {
        ""
    } else if raft_id == raft.leader {
        "leader"
    } else if node.manager_reachable {
        "reachable"
    } else if node.manager_locked {
        "locked"
    } else {
        "unreachable"
    };
    pb::Node {
        id: node.meta.id.clone(),
        hostname: node.hostname.clone(),
        role: node.role.as_str().into(),
        status: node.status.as_str().into(),
        availability: node.availability.as_str().into(),
        manager_status: manager_status.into(),
        addr: node.addr.clone(),
        labels: node.labels.clone().into_iter().collect(),
        version: node.meta.version,
        created_at: rfc3339(node.meta.created_at),
        updated_at: rfc3339(node.meta.updated_at),
        desired_role: node.desired_role.as_str().into(),
        cert_expiry: rfc3339(node.cert_expiry),
    }
}

pub fn rfc3339(unix_ms: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(unix_ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

pub fn managers_of(state: &StoreState) -> Vec<String> {
    state
        .list_typed::<Node>()
        .filter(|n| n.role == NodeRole::Manager && !n.manager_addr.is_empty())
        .map(|n| n.manager_addr.clone())
        .collect()
}

fn validate_label_key(key: &str) -> Result<(), ManagerError> {
    if key.is_empty() || key.chars().any(|c| c.is_whitespace() || c == '=') {
        return Err(ManagerError::InvalidArgument(format!(
            "label key {key:?} is invalid; use a non-empty key without spaces or '='"
        )));
    }
    Ok(())
}

impl ControlService {
    /// Read-modify-write of one node, retried when someone else wrote the
    /// node in between (heartbeat status changes are frequent).
    async fn update_node(
        &self,
        manager: &Manager,
        reference: &str,
        change: impl Fn(&mut Node) -> Result<(), ManagerError>,
    ) -> Result<Node, ManagerError> {
        for _ in 0..5 {
            manager.read_barrier().await?;
            let mut node = manager.store.view(|s| resolve_node(s, reference).cloned())?;
            let version = node.meta.version;
            change(&mut node)?;
            let txn = Transaction::single(Op::Update { object: Object::Node(node), expected_version: Some(version) });
            match manager.write(txn).await {
                Ok(written) => {
                    if let Some(Object::Node(node)) = written.into_iter().next() {
                        return Ok(node);
                    }
                }
                Err(ManagerError::Txn(crate::store::TxnError::VersionConflict { .. })) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(ManagerError::Unavailable(format!("node {reference} kept changing; retry")))
    }
}

#[tonic::async_trait]
impl pb::control_server::Control for ControlService {
    async fn list_nodes(&self, request: Request<pb::ListNodesRequest>) -> Result<Response<pb::ListNodesResponse>, Status> {
        let manager = self.manager(&request)?;
        manager.read_barrier().await?;
        let nodes = manager.store.view(|s| {
            let mut nodes: Vec<Node> = s.list_typed::<Node>().cloned().collect();
            nodes.sort_by(|a, b| a.hostname.cmp(&b.hostname).then(a.meta.id.cmp(&b.meta.id)));
            nodes
        });
        let raft = manager.raft_view();
        Ok(Response::new(pb::ListNodesResponse {
            nodes: nodes.iter().map(|n| node_to_pb(n, &raft)).collect(),
            self_id: crate::store::node_id_string(manager.raft_id),
        }))
    }

    async fn inspect_node(&self, request: Request<pb::NodeRef>) -> Result<Response<pb::Node>, Status> {
        let manager = self.manager(&request)?;
        manager.read_barrier().await?;
        let node = manager.store.view(|s| resolve_node(s, &request.get_ref().node).cloned())?;
        Ok(Response::new(node_to_pb(&node, &manager.raft_view())))
    }

    async fn update_node(&self, request: Request<pb::UpdateNodeRequest>) -> Result<Response<pb::Node>, Status> {
        let manager = self.manager(&request)?;
        let req = request.into_inner();
        let availability = match req.availability.as_str() {
            "" => None,
            other => Some(Availability::parse(other).ok_or_else(|| {
                ManagerError::InvalidArgument(format!(
                    "availability {other:?} is invalid; use active, pause or drain"
                ))
            })?),
        };
        for key in req.label_add.keys().chain(req.label_rm.iter()) {
            validate_label_key(key)?;
        }
        let node = self
            .update_node(&manager, &req.node, |node| {
                if let Some(availability) = availability {
                    node.availability = availability;
                }
                for (k, v) in &req.label_add {
                    node.labels.insert(k.clone(), v.clone());
                }
                for k in &req.label_rm {
                    if node.labels.remove(k).is_none() {
                        return Err(ManagerError::InvalidArgument(format!(
                            "node {} has no label {k:?} to remove",
                            node.hostname
                        )));
                    }
                }
                Ok(())
            })
            .await?;
        Ok(Response::new(node_to_pb(&node, &manager.raft_view())))
    }

    async fn promote_node(&self, request: Request<pb::NodeRef>) -> Result<Response<pb::Node>, Status> {
        let manager = self.manager(&request)?;
        let reference = request.into_inner().node;
        // The node converges by itself: its agent sees the desired role,
        // renews its certificate as a manager and asks to join Raft.
        let node = self
            .update_node(&manager, &reference, |node| {
                node.desired_role = NodeRole::Manager;
                Ok(())
            })
            .await?;
        Ok(Response::new(node_to_pb(&node, &manager.raft_view())))
    }

    async fn demote_node(&self, request: Request<pb::NodeRef>) -> Result<Response<pb::Node>, Status> {
        let manager = self.manager(&request)?;
        let reference = request.into_inner().node;
        manager.read_barrier().await?;
        let node = manager.store.view(|s| resolve_node(s, &reference).cloned())?;
        let managers = manager.store.view(|s| s.list_typed::<Node>().filter(|n| n.desired_role == NodeRole::Manager).count());
        if node.desired_role == NodeRole::Manager && managers <= 1 {
            return Err(ManagerError::FailedPrecondition(format!(
                "cannot demote {}: it is the last manager of the swarm; promote another node first",
                node.hostname
            ))
            .into());
        }
        if let Some(raft_id) = raft_id_of(&node.meta.id) {
            // Leave Raft first: if that would cost quorum, nothing changes.
            manager.leave_raft(raft_id).await?;
        }
        let node = self
            .update_node(&manager, &reference, |node| {
                node.desired_role = NodeRole::Worker;
                Ok(())
            })
            .await?;
        Ok(Response::new(node_to_pb(&node, &manager.raft_view())))
    }

    async fn remove_node(&self, request: Request<pb::RemoveNodeRequest>) -> Result<Response<pb::Empty>, Status> {
        let manager = self.manager(&request)?;
        let req = request.into_inner();
        manager.read_barrier().await?;
        let (node, cluster) = manager.store.view(|s| Ok::<_, ManagerError>((resolve_node(s, &req.node)?.clone(), cluster_of(s)?)))?;
        if node.role == NodeRole::Manager || node.desired_role == NodeRole::Manager {
            return Err(ManagerError::FailedPrecondition(format!(
                "node {} is a manager; demote it with `shoal node demote {}` before removing it",
                node.hostname, node.hostname
            ))
            .into());
        }
        if node.status != crate::store::NodeStatus::Down && !req.force {
            return Err(ManagerError::FailedPrecondition(format!(
                "node {} is not down and can't be removed; stop it or run `shoal swarm leave` on it first, or use --force",
                node.hostname
            ))
            .into());
        }
        let mut cluster = cluster;
        let cluster_version = cluster.meta.version;
        cluster.removed_nodes.push(node.meta.id.clone());
        manager
            .write(Transaction::new(vec![
                Op::Delete { kind: Kind::Node, id: node.meta.id.clone() },
                Op::Update { object: Object::Cluster(cluster), expected_version: Some(cluster_version) },
            ]))
            .await?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn get_join_token(&self, request: Request<pb::JoinTokenRequest>) -> Result<Response<pb::JoinTokenResponse>, Status> {
        let manager = self.manager(&request)?;
        let req = request.into_inner();
        let role = match req.role.as_str() {
            "worker" => NodeRole::Worker,
            "manager" => NodeRole::Manager,
            other => {
                return Err(ManagerError::InvalidArgument(format!(
                    "role {other:?} is invalid; use worker or manager"
                ))
                .into())
            }
        };
        manager.read_barrier().await?;
        let mut cluster = manager.store.view(cluster_of)?;
        if req.rotate {
            let version = cluster.meta.version;
            let secret = JoinToken::generate_secret();
            match role {
                NodeRole::Worker => cluster.worker_token_secret = secret,
                NodeRole::Manager => cluster.manager_token_secret = secret,
            }
            let written = manager
                .write(Transaction::single(Op::Update { object: Object::Cluster(cluster), expected_version: Some(version) }))
                .await?;
            cluster = match written.into_iter().next() {
                Some(Object::Cluster(c)) => c,
                _ => return Err(Status::internal("rotating the token wrote no cluster object")),
            };
        }
        let ca = CertificateAuthority::from_pem(&cluster.ca_cert_pem, &cluster.ca_key_pem)
            .map_err(|e| ManagerError::Internal(format!("loading the CA: {e}")))?;
        let secret = match role {
            NodeRole::Worker => cluster.worker_token_secret.clone(),
            NodeRole::Manager => cluster.manager_token_secret.clone(),
        };
        let token = JoinToken { ca_digest: ca.digest(), secret };
        let managers = manager.store.view(managers_of);
        Ok(Response::new(pb::JoinTokenResponse { token: token.to_string(), managers }))
    }

    async fn issue_client_certificate(
        &self,
        request: Request<pb::IssueClientCertificateRequest>,
    ) -> Result<Response<pb::IssueClientCertificateResponse>, Status> {
        let manager = self.manager(&request)?;
        let req = request.into_inner();
        let name = if req.name.is_empty() { "client".to_string() } else { req.name };
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            return Err(ManagerError::InvalidArgument(format!(
                "client name {name:?} is invalid; use letters, digits, '-', '_' or '.'"
            ))
            .into());
        }
        manager.read_barrier().await?;
        let cluster = manager.store.view(cluster_of)?;
        let ca = CertificateAuthority::from_pem(&cluster.ca_cert_pem, &cluster.ca_key_pem)
            .map_err(|e| ManagerError::Internal(format!("loading the CA: {e}")))?;
        let lifetime = std::time::Duration::from_secs(cluster.cert_lifetime_secs);
        let cert_pem = ca
            .sign_node_csr(&req.csr_pem, &name, Role::Client, cluster.id(), lifetime, &[])
            .map_err(|e| ManagerError::InvalidArgument(e.to_string()))?;
        Ok(Response::new(pb::IssueClientCertificateResponse { cert_pem, ca_pem: cluster.ca_cert_pem }))
    }

    async fn inspect_cluster(&self, request: Request<pb::Empty>) -> Result<Response<pb::Cluster>, Status> {
        let manager = self.manager(&request)?;
        manager.read_barrier().await?;
        let cluster = manager.store.view(cluster_of)?;
        let metrics = manager.raft.metrics().borrow().clone();
        let ca_digest = CertificateAuthority::from_pem(&cluster.ca_cert_pem, &cluster.ca_key_pem)
            .map(|ca| ca.digest())
            .unwrap_or_default();
        Ok(Response::new(pb::Cluster {
            id: cluster.meta.id.clone(),
            created_at: rfc3339(cluster.meta.created_at),
            version: cluster.meta.version,
            heartbeat_period_ms: cluster.heartbeat_period_ms,
            cert_lifetime_secs: cluster.cert_lifetime_secs,
            ca_digest,
            leader_id: metrics.current_leader.map(crate::store::node_id_string).unwrap_or_default(),
            raft_term: metrics.current_term,
            raft_commit_index: metrics.last_applied.map(|l| l.index).unwrap_or(0),
        }))
    }

    async fn create_config(&self, request: Request<pb::CreateConfigRequest>) -> Result<Response<pb::Config>, Status> {
        let manager = self.manager(&request)?;
        Ok(Response::new(secrets::create_config(&manager, request.into_inner()).await?))
    }

    async fn list_configs(&self, request: Request<pb::Empty>) -> Result<Response<pb::ListConfigsResponse>, Status> {
        let manager = self.manager(&request)?;
        Ok(Response::new(secrets::list_configs(&manager).await?))
    }

    async fn inspect_config(&self, request: Request<pb::ConfigRef>) -> Result<Response<pb::Config>, Status> {
        let manager = self.manager(&request)?;
        Ok(Response::new(secrets::inspect_config(&manager, &request.get_ref().config).await?))
    }

    async fn remove_config(&self, request: Request<pb::ConfigRef>) -> Result<Response<pb::Empty>, Status> {
        let manager = self.manager(&request)?;
        secrets::remove_config(&manager, &request.get_ref().config).await?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn create_secret(&self, request: Request<pb::CreateSecretRequest>) -> Result<Response<pb::Secret>, Status> {
        let manager = self.manager(&request)?;
        Ok(Response::new(secrets::create_secret(&manager, request.into_inner()).await?))
    }

    async fn list_secrets(&self, request: Request<pb::Empty>) -> Result<Response<pb::ListSecretsResponse>, Status> {
        let manager = self.manager(&request)?;
        Ok(Response::new(secrets::list_secrets(&manager).await?))
    }

    async fn inspect_secret(&self, request: Request<pb::SecretRef>) -> Result<Response<pb::Secret>, Status> {
        let manager = self.manager(&request)?;
        Ok(Response::new(secrets::inspect_secret(&manager, &request.get_ref().secret).await?))
    }

    async fn remove_secret(&self, request: Request<pb::SecretRef>) -> Result<Response<pb::Empty>, Status> {
        let manager = self.manager(&request)?;
        secrets::remove_secret(&manager, &request.get_ref().secret).await?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn create_service(
        &self,
        request: Request<pb::CreateServiceRequest>,
    ) -> Result<Response<pb::CreateServiceResponse>, Status> {
        let manager = self.manager(&request)?;
        Ok(Response::new(services::create(&manager, request.into_inner()).await?))
    }

    async fn list_services(&self, request: Request<pb::Empty>) -> Result<Response<pb::ListServicesResponse>, Status> {
        let manager = self.manager(&request)?;
        Ok(Response::new(services::list(&manager).await?))
    }

    async fn inspect_service(&self, request: Request<pb::ServiceRef>) -> Result<Response<pb::Service>, Status> {
        let manager = self.manager(&request)?;
        Ok(Response::new(services::inspect(&manager, &request.get_ref().service).await?))
    }

    async fn update_service(&self, request: Request<pb::UpdateServiceRequest>) -> Result<Response<pb::Service>, Status> {
        let manager = self.manager(&request)?;
        Ok(Response::new(services::update(&manager, request.into_inner()).await?))
    }

    async fn deploy_stack(&self, request: Request<pb::DeployStackRequest>) -> Result<Response<pb::DeployStackResponse>, Status> {
        let manager = self.manager(&request)?;
        Ok(Response::new(stacks::deploy(&manager, request.into_inner()).await?))
    }

    async fn list_stacks(&self, request: Request<pb::Empty>) -> Result<Response<pb::ListStacksResponse>, Status> {
        let manager = self.manager(&request)?;
        Ok(Response::new(stacks::list(&manager).await?))
    }

    async fn remove_stack(&self, request: Request<pb::StackRef>) -> Result<Response<pb::RemoveStackResponse>, Status> {
        let manager = self.manager(&request)?;
        Ok(Response::new(stacks::remove(&manager, &request.get_ref().name).await?))
    }

    async fn remove_service(&self, request: Request<pb::ServiceRef>) -> Result<Response<pb::Empty>, Status> {
        let manager = self.manager(&request)?;
        services::remove(&manager, &request.get_ref().service).await?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn list_tasks(&self, request: Request<pb::ListTasksRequest>) -> Result<Response<pb::ListTasksResponse>, Status> {
        let manager = self.manager(&request)?;
        Ok(Response::new(services::list_tasks(&manager, request.into_inner()).await?))
    }

    async fn create_network(&self, request: Request<pb::CreateNetworkRequest>) -> Result<Response<pb::Network>, Status> {
        let manager = self.manager(&request)?;
        Ok(Response::new(networks::create(&manager, request.into_inner()).await?))
    }

    async fn list_networks(&self, request: Request<pb::ListNetworksRequest>) -> Result<Response<pb::ListNetworksResponse>, Status> {
        let manager = self.manager(&request)?;
        Ok(Response::new(networks::list(&manager).await?))
    }

    async fn inspect_network(&self, request: Request<pb::NetworkRef>) -> Result<Response<pb::Network>, Status> {
        let manager = self.manager(&request)?;
        Ok(Response::new(networks::inspect(&manager, &request.get_ref().network).await?))
    }

    async fn remove_network(&self, request: Request<pb::NetworkRef>) -> Result<Response<pb::Empty>, Status> {
        let manager = self.manager(&request)?;
        networks::remove(&manager, &request.get_ref().network).await?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn prune_networks(&self, request: Request<pb::Empty>) -> Result<Response<pb::PruneNetworksResponse>, Status> {
        let manager = self.manager(&request)?;
        Ok(Response::new(networks::prune(&manager).await?))
    }

    type EventsStream = super::events_api::EventStream;

    async fn events(&self, request: Request<pb::EventsRequest>) -> Result<Response<Self::EventsStream>, Status> {
        let manager = self.manager(&request)?;
        let (stream, truncated) = super::events_api::stream(&manager, request.into_inner());
        Ok(shoal_proto::event_stream::response(stream, truncated))
    }

    type ServiceLogsStream = services::LogLines;

    async fn service_logs(&self, request: Request<pb::ServiceLogsRequest>) -> Result<Response<Self::ServiceLogsStream>, Status> {
        let manager = self.manager(&request)?;
        Ok(Response::new(services::logs(&manager, request.into_inner()).await?))
    }
}
