//! The daemon's local API (unix socket only): entering and leaving a swarm,
//! and what this node knows about itself.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use shoal_manager::api::ManagerSlot;
use shoal_manager::bootstrap::{
    new_swarm, NewSwarmOptions, DEFAULT_CERT_LIFETIME, DEFAULT_HEARTBEAT_PERIOD_MS, DEFAULT_ORPHAN_GRACE_MS,
    DEFAULT_TASK_HISTORY_LIMIT, MAX_ORPHAN_GRACE_MS,
};
use shoal_manager::store::{new_node_id, now_ms, Kind, NodeRole, Object, Op, Transaction};
use shoal_manager::Manager;
use shoal_proto::join_token::JoinToken;
use shoal_proto::pb;
use shoal_proto::tls::Credentials;
use tokio::sync::{mpsc, Mutex};
use tonic::{Request, Response, Status};

use super::node::{ManagerStart, NodeRuntime, RunningNode};
use super::state::{SwarmDir, SwarmState, DEFAULT_DATA_PATH_PORT};

pub const DEFAULT_PORT: u16 = 4242;
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);

pub struct LocalApi {
    pub data_root: PathBuf,
    pub hostname: String,
    pub slot: ManagerSlot,
    pub node: Arc<Mutex<Option<Arc<RunningNode>>>>,
    pub removed: mpsc::Sender<()>,
    /// What every swarm node this daemon starts runs its tasks with.
    pub runtime: Arc<NodeRuntime>,
    /// While this manager is locked: its answer on the manager port, so
    /// the others show it as locked (dropped when it unlocks or leaves).
    pub lock_beacon: super::autolock::BeaconSlot,
}

/// `ip` or `ip:port` (port defaults to 4242). Names are refused: the
/// address ends up in certificates and other nodes' configuration.
pub fn parse_advertise(value: &str, default_port: u16) -> Result<SocketAddr, Status> {
    if let Ok(addr) = value.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Ok(ip) = value.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, default_port));
    }
    Err(Status::invalid_argument(format!(
        "advertise address {value:?} is invalid; use an IP address, optionally with a port (e.g. 198.18.0.1 or 198.18.0.1:4242)"
    )))
}

fn parse_listen(value: &str, advertise: SocketAddr) -> Result<SocketAddr, Status> {
    if value.is_empty() {
        return Ok(SocketAddr::new(IpAddr::from([0, 0, 0, 0]), advertise.port()));
    }
    value.parse().map_err(|_| {
        Status::invalid_argument(format!("listen address {value:?} is invalid; use IP:PORT (e.g. 0.0.0.0:4242)"))
    })
}

/// Fails early (before anything is written) when the port is taken.
fn check_can_listen(listen: SocketAddr) -> Result<(), Status> {
    std::net::TcpListener::bind(listen).map(drop).map_err(|e| {
        Status::failed_precondition(format!("cannot listen on {listen}: {e}; choose another --listen-addr"))
    })
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

impl LocalApi {
    async fn start_node(
        &self,
        state: SwarmState,
        credentials: Credentials,
        start: Option<ManagerStart>,
    ) -> Result<Arc<RunningNode>, Status> {
        let dir = SwarmDir::new(&self.data_root);
        dir.save_credentials(&credentials).map_err(internal)?;
        dir.save_state(&state).map_err(internal)?;
        match RunningNode::start(
            self.data_root.clone(),
            state,
            credentials,
            self.slot.clone(),
            start,
            self.removed.clone(),
            self.runtime.clone(),
        )
        .await
        {
            Ok(node) => Ok(node),
            Err(e) => {
                // Leave nothing half-made: the node is not in a swarm.
                let _ = dir.remove();
                Err(Status::internal(format!("{e:#}")))
            }
        }
    }

    async fn force_new_cluster(&self, node: Arc<RunningNode>) -> Result<pb::SwarmInitResponse, Status> {
        let manager = node.manager().ok_or_else(|| {
            Status::failed_precondition("--force-new-cluster works only on a manager; this node is a worker")
        })?;
        // Keep the surviving state, drop the other managers: they must join
        // again, and their old certificates are refused from now on.
        let mut objects: Vec<Object> = manager.store.snapshot().all_objects().cloned().collect();
        let me = node.state().node_id;
        let others: Vec<String> = objects
            .iter()
            .filter_map(|o| match o {
                Object::Node(n) if n.meta.id != me && n.desired_role == NodeRole::Manager => Some(n.meta.id.clone()),
                _ => None,
            })
            .collect();
        objects.retain(|o| !(o.kind() == Kind::Node && others.iter().any(|id| id == o.id())));
        for object in &mut objects {
            if let Object::Cluster(cluster) = object {
                cluster.removed_nodes.extend(others.iter().cloned());
            }
        }
        node.stop_manager().await;
        let _ = std::fs::remove_dir_all(node.dir().raft_dir());
        node.start_manager(ManagerStart::Bootstrap(Transaction::single(Op::Restore(objects))))
            .await
            .map_err(|e| Status::internal(format!("{e:#}")))?;
        let manager = node.manager().ok_or_else(|| Status::internal("manager did not restart"))?;
        let (worker_token, manager_token) = tokens(&manager).await?;
        Ok(pb::SwarmInitResponse { node_id: me, worker_token, manager_token, unlock_key: String::new() })
    }
}

async fn tokens(manager: &Manager) -> Result<(String, String), Status> {
    let cluster = manager.store.view(|s| s.cluster().cloned()).ok_or_else(|| Status::internal("no cluster object"))?;
    let digest = shoal_proto::join_token::ca_digest_from_pem(&cluster.ca_cert_pem).map_err(internal)?;
    let worker = JoinToken { ca_digest: digest.clone(), secret: cluster.worker_token_secret }.to_string();
    let manager = JoinToken { ca_digest: digest, secret: cluster.manager_token_secret }.to_string();
    Ok((worker, manager))
}

/// The local address the kernel would use to reach `remote`: a sensible
/// advertise address when the user gives none.
fn route_source(remote: SocketAddr) -> Option<IpAddr> {
    let socket = UdpSocket::bind(if remote.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }).ok()?;
    socket.connect(remote).ok()?;
    socket.local_addr().ok().map(|a| a.ip())
}

/// The data path's UDP port: WireGuard's usual 51820 unless given.
fn data_path_port(port: u32) -> Result<u16, Status> {
    match port {
        0 => Ok(DEFAULT_DATA_PATH_PORT),
        p => u16::try_from(p)
            .ok()
            .filter(|p| *p >= 1024)
            .ok_or_else(|| Status::invalid_argument(format!("data path port {p} is invalid; use a UDP port from 1024 to 65535"))),
    }
}

fn parse_remote(value: &str) -> Result<SocketAddr, Status> {
    parse_advertise(value, DEFAULT_PORT).map_err(|_| {
        Status::invalid_argument(format!("manager address {value:?} is invalid; use IP[:PORT] (e.g. 198.18.0.1:4242)"))
    })
}

#[tonic::async_trait]
impl pb::daemon_server::Daemon for LocalApi {
    async fn swarm_init(&self, request: Request<pb::SwarmInitRequest>) -> Result<Response<pb::SwarmInitResponse>, Status> {
        let req = request.into_inner();
        let mut slot = self.node.lock().await;
        if let Some(node) = slot.as_ref() {
            if req.force_new_cluster {
                return Ok(Response::new(self.force_new_cluster(node.clone()).await?));
            }
            return Err(Status::failed_precondition(
                "this node is already part of a swarm; use `shoal swarm leave` to leave it first",
            ));
        }
        refuse_if_locked(&self.data_root)?;
        if req.force_new_cluster {
            return Err(Status::failed_precondition(
                "--force-new-cluster needs a node that was a manager of a swarm; this node is in no swarm",
            ));
        }
        if req.advertise_addr.is_empty() {
            return Err(Status::invalid_argument("--advertise-addr is required (e.g. --advertise-addr 198.18.0.1)"));
        }
        let advertise = parse_advertise(&req.advertise_addr, DEFAULT_PORT)?;
        let listen = parse_listen(&req.listen_addr, advertise)?;
        check_can_listen(listen)?;
        let cert_lifetime = match req.cert_lifetime_secs {
            0 => DEFAULT_CERT_LIFETIME,
            secs if secs < 10 => {
                return Err(Status::invalid_argument(format!(
                    "certificate lifetime {secs}s is too short; use at least 10s"
                )))
            }
            secs => Duration::from_secs(secs),
        };
        let heartbeat_period_ms = match req.heartbeat_period_ms {
            0 => DEFAULT_HEARTBEAT_PERIOD_MS,
            ms if ms < 100 => {
                return Err(Status::invalid_argument(format!("heartbeat period {ms}ms is too short; use at least 100ms")))
            }
            ms => ms,
        };
        let task_history_limit = match req.task_history_limit {
            None => DEFAULT_TASK_HISTORY_LIMIT,
            Some(0) => {
                return Err(Status::invalid_argument(
                    "task history limit 0 would forget a task as soon as it ends; use at least 1",
                ))
            }
            Some(n) => n,
        };
        let orphan_grace_ms = match req.orphan_grace_ms {
            None => DEFAULT_ORPHAN_GRACE_MS,
            Some(ms) if ms > MAX_ORPHAN_GRACE_MS => {
                return Err(Status::invalid_argument(format!(
                    "orphan grace period {ms}ms would leave a lost node's tasks down for too long; use at most 1h"
                )))
            }
            Some(ms) => ms,
        };
        let (address_pool, pool_mask_length) = shoal_manager::bootstrap::address_pool(&req.default_addr_pool, req.default_addr_pool_mask_length)?;
        if let Some(networks) = &self.runtime.tasks.networks {
            let overlapping = networks.route_overlapping(address_pool).await.map_err(|e| Status::internal(e.to_string()))?;
            if let Some(route) = overlapping {
                return Err(Status::invalid_argument(format!(
                    "default address pool {address_pool} overlaps this host's route {route}; pick another pool with --default-addr-pool"
                )));
            }
        }
        let data_path_port = data_path_port(req.data_path_port)?;
        let (_, node_id) = new_node_id();
        let unlock_key = req.autolock.then(shoal_manager::autolock::UnlockKey::generate);
        let swarm = new_swarm(NewSwarmOptions {
            node_id: &node_id,
            hostname: &self.hostname,
            advertise,
            heartbeat_period_ms,
            cert_lifetime,
            task_history_limit,
            orphan_grace_ms,
            address_pool,
            pool_mask_length,
            autolock_key: unlock_key.clone(),
        })?;
        let state = SwarmState {
            node_id: node_id.clone(),
            cluster_id: swarm.cluster_id.clone(),
            role: "manager".into(),
            managers: vec![advertise.to_string()],
            advertise: advertise.to_string(),
            listen: listen.to_string(),
            cert_issued_at_ms: now_ms(),
            data_path_port,
        };
        let node = self
            .start_node(state, swarm.credentials, Some(ManagerStart::Bootstrap(swarm.transaction)))
            .await?;
        let manager = node.manager().ok_or_else(|| Status::internal("manager did not start"))?;
        let (worker_token, manager_token) = tokens(&manager).await?;
        *slot = Some(node);
        tracing::info!(node = %node_id, %advertise, "swarm initialised");
        let unlock_key = unlock_key.map(|k| k.to_text().as_str().to_owned()).unwrap_or_default();
        Ok(Response::new(pb::SwarmInitResponse { node_id, worker_token, manager_token, unlock_key }))
    }

    async fn swarm_join(&self, request: Request<pb::SwarmJoinRequest>) -> Result<Response<pb::SwarmJoinResponse>, Status> {
        let req = request.into_inner();
        let mut slot = self.node.lock().await;
        if slot.is_some() {
            return Err(Status::failed_precondition(
                "this node is already part of a swarm; use `shoal swarm leave` to leave it first",
            ));
        }
        refuse_if_locked(&self.data_root)?;
        // A mistyped token is refused before anything else is looked up.
        JoinToken::parse(&req.token).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let remote = parse_remote(&req.remote_addr)?;
        let advertise = if req.advertise_addr.is_empty() {
            let ip = route_source(remote).ok_or_else(|| {
                Status::invalid_argument(format!("no local address routes to {remote}; pass --advertise-addr"))
            })?;
            SocketAddr::new(ip, DEFAULT_PORT)
        } else {
            parse_advertise(&req.advertise_addr, DEFAULT_PORT)?
        };
        let listen = parse_listen(&req.listen_addr, advertise)?;
        let data_path_port = data_path_port(req.data_path_port)?;

        let remote_str = remote.to_string();
        let issued = shoal_agent::join::join_swarm(shoal_agent::join::JoinRequest {
            remote: &remote_str,
            token: &req.token,
            hostname: &self.hostname,
            advertise,
            timeout: JOIN_TIMEOUT,
        })
        .await?;
        let is_manager = issued.role == "manager";
        if is_manager {
            check_can_listen(listen)?;
        }
        let state = SwarmState {
            node_id: issued.node_id.clone(),
            cluster_id: issued.cluster_id.clone(),
            role: issued.role.clone(),
            managers: issued.managers.clone(),
            advertise: advertise.to_string(),
            listen: listen.to_string(),
            cert_issued_at_ms: now_ms(),
            data_path_port,
        };
        let credentials = issued.credentials;
        let start = is_manager.then_some(ManagerStart::Join);
        let node = self.start_node(state, credentials, start).await?;
        *slot = Some(node);
        tracing::info!(node = %issued.node_id, role = %issued.role, "joined swarm");
        Ok(Response::new(pb::SwarmJoinResponse { node_id: issued.node_id, role: issued.role }))
    }

    async fn swarm_leave(&self, request: Request<pb::SwarmLeaveRequest>) -> Result<Response<pb::Empty>, Status> {
        let force = request.into_inner().force;
        let mut slot = self.node.lock().await;
        if slot.is_none() && SwarmDir::new(&self.data_root).is_locked() {
            if !force {
                return Err(Status::failed_precondition(
                    "this node is a locked manager: leaving drops its copy of the swarm state; unlock it with `shoal swarm unlock`, or use --force",
                ));
            }
            self.lock_beacon.lock().unwrap_or_else(|p| p.into_inner()).take();
            SwarmDir::new(&self.data_root).remove().map_err(internal)?;
            return Ok(Response::new(pb::Empty {}));
        }
        let node = slot.clone().ok_or_else(|| Status::failed_precondition("this node is not part of a swarm"))?;
        if let Some(manager) = node.manager() {
            if !force {
                return Err(Status::failed_precondition(
                    "this node is a manager: leaving can cost the swarm its quorum; demote it first with `shoal node demote`, or use --force",
                ));
            }
            // Best effort: tell the others we are gone so quorum math stays right.
            if manager.voters().len() > 1 {
                let _ = tokio::time::timeout(Duration::from_secs(5), manager.leave_raft(manager.raft_id)).await;
            }
        }
        node.shutdown().await;
        node.dir().remove().map_err(internal)?;
        *slot = None;
        Ok(Response::new(pb::Empty {}))
    }

    async fn info(&self, _request: Request<pb::Empty>) -> Result<Response<pb::InfoResponse>, Status> {
        let slot = self.node.lock().await;
        let Some(node) = slot.as_ref() else {
            if let Some(locked) = super::autolock::locked_info(self) {
                return Ok(Response::new(locked));
            }
            return Ok(Response::new(pb::InfoResponse {
                hostname: self.hostname.clone(),
                swarm_state: "inactive".into(),
                engine: Some(self.engine_info(None).await),
                ..Default::default()
            }));
        };
        let state = node.state();
        let manager = node.manager();
        let engine = Some(self.engine_info(manager.clone()).await);
        Ok(Response::new(pb::InfoResponse {
            node_id: state.node_id.clone(),
            hostname: self.hostname.clone(),
            swarm_state: "active".into(),
            role: state.role.clone(),
            cluster_id: state.cluster_id.clone(),
            managers: state.managers.clone(),
            advertise_addr: state.advertise.clone(),
            is_leader: manager.as_ref().is_some_and(|m| m.is_leader()),
            files_held: node.files_held(),
            engine,
        }))
    }

    async fn swarm_update(&self, request: Request<pb::SwarmUpdateRequest>) -> Result<Response<pb::SwarmUpdateResponse>, Status> {
        super::autolock::swarm_update(self, request.into_inner()).await.map(Response::new)
    }

    async fn swarm_unlock(&self, request: Request<pb::SwarmUnlockRequest>) -> Result<Response<pb::Empty>, Status> {
        super::autolock::unlock(self, request.into_inner()).await.map(|()| Response::new(pb::Empty {}))
    }

    async fn get_unlock_key(&self, request: Request<pb::UnlockKeyRequest>) -> Result<Response<pb::UnlockKeyResponse>, Status> {
        super::autolock::unlock_key(self, request.into_inner()).await.map(Response::new)
    }
}

/// A locked manager keeps its swarm: it may not start or join another.
fn refuse_if_locked(data_root: &std::path::Path) -> Result<(), Status> {
    if SwarmDir::new(data_root).is_locked() {
        return Err(Status::failed_precondition(
            "this node is a locked manager of a swarm; unlock it with `shoal swarm unlock`, or leave that swarm with `shoal swarm leave --force`",
        ));
    }
    Ok(())
}

impl LocalApi {
    /// What `docker info` counts of the node: its containers by state, its
    /// images, how it stores and limits them, and (on a manager) the nodes.
    async fn engine_info(&self, manager: Option<std::sync::Arc<shoal_manager::manager::Manager>>) -> pb::EngineInfo {
        let containers = self.runtime.tasks.containers.list(true);
        let count = |state: &str| containers.iter().filter(|c| c.status.as_str() == state && !c.paused).count() as u32;
        let paused = containers.iter().filter(|c| c.paused).count() as u32;
        pb::EngineInfo {
            containers: containers.len() as u32,
            containers_running: count("running"),
            containers_paused: paused,
            containers_stopped: containers.len() as u32 - count("running") - paused,
            images: self.runtime.tasks.images.list().await.len() as u32,
            storage_driver: "overlay".into(),
            cgroup_layout: shoal_runtime::container::cgroup_layout().into(),
            server_version: env!("CARGO_PKG_VERSION").into(),
            nodes: manager.map_or(0, |m| m.store.view(|s| s.list_typed::<shoal_manager::store::Node>().count()) as u32),
        }
    }
}
