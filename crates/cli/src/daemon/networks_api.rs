//! The `LocalNetworks` gRPC service on the local socket (`network create
//! -d bridge`, `network connect`, ...) and the networks side of `shoal run`.
//! Only translation and container bookkeeping live here: the networks
//! themselves are `shoal_overlay_net::local::BridgeNetworks`.
//!
//! A standalone container's networks follow its life: prepared before it
//! is created (it is created inside their sandbox), released by a watcher
//! once it ends, and after a daemon restart re-adopted while it still
//! runs or released when it ended meanwhile.

use std::collections::HashSet;
use std::sync::Arc;

use shoal_manager::api::control::ControlService;
use shoal_manager::api::{ManagerSlot, Transport};
use shoal_overlay_net::dataplane::Dataplane;
use shoal_overlay_net::dns::DnsSettings;
use shoal_overlay_net::firewall::PortProtocol;
use shoal_agent::overlay::ContainerAttacher;
use shoal_overlay_net::local::{
    AddressPool, BridgeNetworks, ErrorKind, LocalNetError, NetworkChoice, NetworkRequest,
    NetworkView, PortMapping, PreparedSandbox, Protocol, Requested, DEFAULT_NETWORK,
};
use shoal_proto::pb;
use shoal_runtime::container::{ContainerManager, Status as ContainerStatus};
use tonic::{Request, Response, Status};

/// `--network none`: loopback only.
const NO_NETWORK: &str = "none";

/// How standalone containers reach the managers for addresses on
/// attachable overlays; set while the node is in a swarm.
#[derive(Clone, Default)]
pub struct SwarmAttachments {
    attacher: Arc<std::sync::Mutex<Option<Arc<ContainerAttacher>>>>,
    /// Sandboxes whose swarm addresses are still to be given back (their
    /// containers ended while the node was out of touch).
    pending: Arc<std::sync::Mutex<Vec<String>>>,
}

impl SwarmAttachments {
    fn get(&self) -> Option<Arc<ContainerAttacher>> {
        self.attacher.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The node joined (or resumed) a swarm: addresses left to give back go now.
    pub fn set(&self, attacher: Option<Arc<ContainerAttacher>>) {
        *self.attacher.lock().unwrap_or_else(|p| p.into_inner()) = attacher;
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        for sandbox in pending {
            self.give_back(sandbox);
        }
    }

    /// Gives sandbox `sandbox`'s swarm addresses back, now or once the node
    /// is in touch with the managers again.
    fn give_back(&self, sandbox: String) {
        let Some(attacher) = self.get() else {
            self.pending.lock().unwrap_or_else(|p| p.into_inner()).push(sandbox);
            return;
        };
        let pending = self.pending.clone();
        tokio::spawn(async move {
            if let Err(status) = attacher.detach(&sandbox).await {
                tracing::warn!(%sandbox, error = %status.message(), "giving a container's swarm addresses back; will retry");
                pending.lock().unwrap_or_else(|p| p.into_inner()).push(sandbox);
            }
        });
    }
}

/// The node's bridge networks as the daemon's APIs use them. Cheap to clone.
#[derive(Clone)]
pub struct ContainerNetworks {
    networks: Result<Arc<BridgeNetworks>, Arc<str>>,
    containers: Arc<ContainerManager>,
    /// Tells a swarm network's name from an unknown one (on managers).
    control: Arc<ControlService>,
    hostname: String,
    swarm: SwarmAttachments,
    /// Each `run` container's network request, kept so that a stopped
    /// container starts again on the same networks and ports.
    requests_dir: std::path::PathBuf,
}

fn status(error: LocalNetError) -> Status {
    let message = error.to_string();
    match error.kind() {
        ErrorKind::InvalidArgument => Status::invalid_argument(message),
        ErrorKind::NotFound => Status::not_found(message),
        ErrorKind::AlreadyExists => Status::already_exists(message),
        ErrorKind::FailedPrecondition => Status::failed_precondition(message),
        ErrorKind::Internal => Status::internal(message),
    }
}

impl ContainerNetworks {
    /// Opens the node's bridge networks on `dataplane` and adopts the
    /// containers that outlived the previous daemon. Call before the agent
    /// starts: it removes `shl-` bridges it does not know to be local.
    /// Without a data plane, or when opening fails, containers get
    /// loopback only and network commands say why.
    pub async fn open(
        state_dir: &std::path::Path,
        pool: AddressPool,
        default_bridge: bool,
        dataplane: Option<Arc<Dataplane>>,
        containers: Arc<ContainerManager>,
        slot: ManagerSlot,
        hostname: String,
        swarm: SwarmAttachments,
    ) -> ContainerNetworks {
        let networks = match dataplane {
            None => Err(Arc::from(
                "the node's network data plane did not start; see the daemon's log",
            )),
            Some(dataplane) => {
                match BridgeNetworks::open(state_dir, pool, default_bridge, dataplane).await {
                    Ok(networks) => Ok(networks),
                    Err(error) => {
                        tracing::error!(%error, "the node's bridge networks are unavailable; containers get loopback only");
                        Err(Arc::from(error.to_string()))
                    }
                }
            }
        };
        let this = ContainerNetworks {
            networks,
            containers,
            control: Arc::new(ControlService::new(slot, Transport::LocalSocket)),
            hostname,
            swarm,
            requests_dir: state_dir.join("run-requests"),
        };
        if let Ok(networks) = &this.networks {
            let running: HashSet<String> = this
                .containers
                .list(false)
                .into_iter()
                .filter(|c| c.status == ContainerStatus::Running)
                .map(|c| c.id)
                .collect();
            match networks.restore(&running).await {
                Ok(restored) => {
                    restored.running.into_iter().for_each(|id| this.watch(id));
                    restored.swarm_released.into_iter().for_each(|sandbox| this.swarm.give_back(sandbox));
                }
                Err(error) => tracing::error!(%error, "restoring the node's bridge networks"),
            }
        }
        this
    }

    fn networks(&self) -> Result<&Arc<BridgeNetworks>, Status> {
        self.networks.as_ref().map_err(|reason| {
            status(LocalNetError::Unavailable {
                reason: reason.to_string(),
            })
        })
    }

    /// Prepares the networks `request` asks for (the default network when
    /// it names none); `None`: loopback only.
    pub async fn prepare(
        &self,
        request: &pb::RunContainerRequest,
    ) -> Result<Option<PreparedSandbox>, Status> {
        let ports = request
            .published
            .iter()
            .map(port_mapping)
            .collect::<Result<Vec<_>, _>>()?;
        let mut choices: Vec<NetworkChoice> = request
            .networks
            .iter()
            .map(|n| NetworkChoice {
                network: n.target.clone(),
                aliases: n.aliases.clone(),
            })
            .collect();
        if choices.iter().any(|c| c.network == NO_NETWORK) {
            if choices.len() > 1 {
                return Err(Status::invalid_argument("--network none cannot be combined with other networks; give either none or networks"));
            }
            if !ports.is_empty() {
                return Err(Status::invalid_argument("published ports need a network, but the container runs with --network none; drop -p or --network none"));
            }
            return Ok(None);
        }
        if let Some(host) = choices.iter().find(|c| c.network == "host") {
            return Err(Status::invalid_argument(format!(
                "--network {} is not offered; use a bridge network",
                host.network
            )));
        }
        if choices.is_empty() {
            let default_exists = match &self.networks {
                Ok(networks) => networks.exists(DEFAULT_NETWORK).await,
                Err(_) => false,
            };
            if !default_exists {
                if !ports.is_empty() {
                    self.networks()?;
                    return Err(Status::failed_precondition(
                        "published ports need a network, and this node has no default bridge network (the daemon runs with --bridge none); pass --network NAME",
                    ));
                }
                return Ok(None);
            }
            choices.push(NetworkChoice {
                network: DEFAULT_NETWORK.to_string(),
                aliases: Vec::new(),
            });
        }
        let networks = self.networks()?;
        let sandbox_id = networks.new_sandbox_id().await;
        let mut requested = Vec::new();
        let mut on_swarm = false;
        for choice in choices {
            if networks.exists(&choice.network).await {
                requested.push(Requested::Local(choice));
                continue;
            }
            let Some(attacher) = self.swarm.get() else {
                return Err(self.unknown_network(&choice.network).await);
            };
            // Not a bridge network here: an attachable overlay, if the
            // managers know it; they hand out the address.
            match attacher.attach(&sandbox_id, &request.name, &choice.network, &choice.aliases).await {
                Ok((network_id, address)) => {
                    on_swarm = true;
                    requested.push(Requested::Swarm { network_id, address });
                }
                Err(refused) => {
                    if on_swarm {
                        self.swarm.give_back(sandbox_id.clone());
                    }
                    return Err(match refused.code() {
                        tonic::Code::NotFound => self.unknown_network(&choice.network).await,
                        _ => refused,
                    });
                }
            }
        }
        let dns = request.dns.clone().unwrap_or_default();
        let dns = match DnsSettings::parse(&dns.nameservers, &dns.search, &dns.options) {
            Ok(dns) => dns,
            Err(error) => {
                if on_swarm {
                    self.swarm.give_back(sandbox_id);
                }
                return Err(Status::invalid_argument(error.to_string()));
            }
        };
        let prepared = networks.prepare_container(&sandbox_id, &requested, &ports, &dns).await.map_err(status);
        if prepared.is_err() && on_swarm {
            self.swarm.give_back(sandbox_id);
        }
        prepared.map(Some)
    }

    /// Keeps what `request` asked of the network for the container `id`.
    pub fn remember(&self, container_id: &str, request: &pb::RunContainerRequest) {
        let kept = pb::RunContainerRequest {
            name: request.name.clone(),
            networks: request.networks.clone(),
            published: request.published.clone(),
            dns: request.dns.clone(),
            ..Default::default()
        };
        let written = std::fs::create_dir_all(&self.requests_dir)
            .and_then(|()| std::fs::write(self.request_path(container_id), prost::Message::encode_to_vec(&kept)));
        if let Err(error) = written {
            tracing::warn!(container = container_id, %error, "keeping a container's network request; it will not start again on its networks");
        }
    }

    /// The container `id` is gone: so is its request.
    pub fn forget(&self, container_id: &str) {
        let _ = std::fs::remove_file(self.request_path(container_id));
    }

    /// The networks of the stopped container `id` prepared anew, as its
    /// `run` asked for them.
    pub async fn prepare_again(&self, container_id: &str) -> Result<Option<PreparedSandbox>, Status> {
        let request = match std::fs::read(self.request_path(container_id)) {
            Ok(bytes) => <pb::RunContainerRequest as prost::Message>::decode(bytes.as_slice())
                .map_err(|e| Status::internal(format!("the network request kept for container {container_id} is unreadable ({e}); remove the container and run it again")))?,
            // Made before requests were kept: the default network.
            Err(_) => pb::RunContainerRequest::default(),
        };
        self.prepare(&request).await
    }

    fn request_path(&self, container_id: &str) -> std::path::PathBuf {
        // Ids are hex; anything else never names a file outside.
        let safe: String = container_id.chars().filter(char::is_ascii_hexdigit).collect();
        self.requests_dir.join(format!("{safe}.pb"))
    }

    /// Why `name` cannot be used by a standalone container.
    async fn unknown_network(&self, name: &str) -> Status {
        use pb::control_server::Control;
        let swarm = self
            .control
            .inspect_network(Request::new(pb::NetworkRef {
                network: name.to_string(),
            }))
            .await;
        if swarm.is_ok() {
            return Status::invalid_argument(format!(
                "network {name} is a swarm network and this node is not in touch with its managers; retry once the node has joined, or use a bridge network"
            ));
        }
        Status::invalid_argument(format!(
            "network {name} does not exist on this node; create it with `shoal network create -d bridge {name}` or pick one from `shoal network ls`"
        ))
    }

    /// The container created in `prepared` exists: record it.
    pub async fn created(&self, prepared: &PreparedSandbox, container_id: &str) {
        let Ok(networks) = &self.networks else { return };
        let name = self
            .containers
            .inspect(container_id)
            .map(|d| d.name)
            .unwrap_or_default();
        if let Err(error) = networks
            .bind_container(&prepared.sandbox_id, container_id, &name)
            .await
        {
            tracing::warn!(container = container_id, %error, "recording a container's networks");
        }
    }

    /// The container was renamed: its networks answer the new name.
    pub async fn renamed(&self, container_id: &str, new_name: &str) {
        if let Ok(networks) = &self.networks {
            if let Err(error) = networks.rename_container(container_id, new_name).await {
                tracing::warn!(container = container_id, %error, "renaming a container on its networks");
            }
        }
    }

    /// The container for `prepared` could not be created.
    pub async fn abandon(&self, prepared: &PreparedSandbox) {
        if let Ok(networks) = &self.networks {
            networks.release_sandbox(&prepared.sandbox_id).await;
            // Its swarm addresses, if it had any; giving back none is harmless.
            if self.swarm.get().is_some() {
                self.swarm.give_back(prepared.sandbox_id.clone());
            }
        }
    }

    /// Frees a container's networks now (its start failed).
    pub async fn release(&self, container_id: &str) {
        if let Ok(networks) = &self.networks {
            if let Some(sandbox) = networks.release_container(container_id).await {
                self.swarm.give_back(sandbox);
            }
        }
    }

    /// Releases the container's networks once it has ended.
    pub fn watch(&self, container_id: String) {
        let Ok(networks) = self.networks.clone() else {
            return;
        };
        let containers = self.containers.clone();
        let swarm = self.swarm.clone();
        tokio::spawn(async move {
            // An error means the container is gone already: release too.
            let _ = containers.wait(&container_id).await;
            if let Some(sandbox) = networks.release_container(&container_id).await {
                swarm.give_back(sandbox);
            }
        });
    }

    /// `container inspect`'s networks and ports, as a JSON value.
    pub async fn settings(&self, container_id: &str) -> serde_json::Value {
        let Ok(networks) = &self.networks else {
            return serde_json::Value::Null;
        };
        let endpoints = networks.container_endpoints(container_id).await;
        let ports: Vec<String> = endpoints
            .iter()
            .flat_map(|e| &e.published)
            .map(|p| {
                let host_ip = p.host_ip.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED);
                format!(
                    "{host_ip}:{}->{}/{}",
                    p.host_port,
                    p.container_port,
                    PortProtocol::from(p.protocol)
                )
            })
            .collect();
        let networks: serde_json::Map<String, serde_json::Value> = endpoints
            .iter()
            .map(|e| {
                (
                    e.network.clone(),
                    serde_json::json!({
                        "network_id": e.network_id,
                        "address": e.address.to_string(),
                        "ip_address": e.address.addr().to_string(),
                        "gateway": e.gateway.to_string(),
                        "aliases": e.aliases,
                    }),
                )
            })
            .collect();
        serde_json::json!({ "networks": networks, "ports": ports })
    }

    /// A running container of this node, by name, id or id prefix: (id, name).
    fn running_container(&self, reference: &str) -> Result<(String, String), Status> {
        let details = self
            .containers
            .inspect(reference)
            .map_err(|e| Status::not_found(e.to_string()))?;
        if details.state.status != ContainerStatus::Running {
            return Err(Status::failed_precondition(format!(
                "container {} is not running; start a new one with shoal run",
                details.name
            )));
        }
        Ok((details.id, details.name))
    }

    fn network_pb(&self, view: &NetworkView) -> pb::Network {
        let network = &view.network;
        let prefix = network.subnet.prefix_len();
        pb::Network {
            id: network.id.clone(),
            spec: Some(pb::NetworkSpec {
                name: network.name.clone(),
                labels: network.labels.clone().into_iter().collect(),
                driver: pb::NetworkDriver::Bridge.into(),
                subnet: network.subnet.to_string(),
                gateway: network.gateway.to_string(),
                attachable: false,
                internal: network.internal,
                options: network.options.clone().into_iter().collect(),
                ingress: false,
            }),
            scope: pb::NetworkScope::Local.into(),
            subnet: network.subnet.to_string(),
            gateway: network.gateway.to_string(),
            mtu: network.mtu,
            version: 0,
            created_at: network.created.clone(),
            updated_at: network.created.clone(),
            attachments: view
                .containers
                .iter()
                .map(|(id, name, endpoint)| pb::NetworkAttachmentInfo {
                    kind: pb::AttachmentKind::Container.into(),
                    id: id.clone(),
                    name: name.clone(),
                    node_id: String::new(),
                    node_hostname: self.hostname.clone(),
                    address: format!("{}/{prefix}", endpoint.address),
                    aliases: endpoint.aliases.clone(),
                })
                .collect(),
            nodes: Vec::new(),
        }
    }
}

/// `-p` as the CLI sent it.
fn port_mapping(port: &pb::PublishedPort) -> Result<PortMapping, Status> {
    let port_number = |value: u32, what: &str| {
        u16::try_from(value).ok().filter(|p| *p > 0).ok_or_else(|| {
            Status::invalid_argument(format!(
                "{what} {value} is invalid; use a port from 1 to 65535"
            ))
        })
    };
    let host_ip = match port.host_ip.as_str() {
        "" => None,
        ip => Some(ip.parse().map_err(|_| {
            Status::invalid_argument(format!(
                "host address {ip:?} of a published port is not an IPv4 address"
            ))
        })?),
    };
    Ok(PortMapping {
        protocol: match port.protocol() {
            pb::PortProtocol::Udp => Protocol::Udp,
            _ => Protocol::Tcp,
        },
        host_ip,
        host_port: port_number(port.host_port, "host port")?,
        container_port: port_number(port.container_port, "container port")?,
    })
}

/// The gRPC service over [`ContainerNetworks`].
pub struct LocalNetworksApi {
    pub networks: ContainerNetworks,
}

#[tonic::async_trait]
impl pb::local_networks_server::LocalNetworks for LocalNetworksApi {
    async fn create_network(
        &self,
        request: Request<pb::CreateNetworkRequest>,
    ) -> Result<Response<pb::Network>, Status> {
        let spec = request.into_inner().spec.unwrap_or_default();
        if spec.driver() == pb::NetworkDriver::Overlay {
            return Err(Status::invalid_argument(
                "overlay networks belong to the swarm; create them on a manager with -d overlay",
            ));
        }
        let non_empty = |s: String| (!s.trim().is_empty()).then_some(s);
        let request = NetworkRequest {
            name: spec.name,
            subnet: non_empty(spec.subnet),
            gateway: non_empty(spec.gateway),
            internal: spec.internal,
            labels: spec.labels.into_iter().collect(),
            options: spec.options.into_iter().collect(),
        };
        let networks = self.networks.networks()?;
        let created = networks.create_network(&request).await.map_err(status)?;
        let view = networks.inspect(&created.id).await.map_err(status)?;
        Ok(Response::new(self.networks.network_pb(&view)))
    }

    async fn list_networks(
        &self,
        _: Request<pb::ListNetworksRequest>,
    ) -> Result<Response<pb::ListNetworksResponse>, Status> {
        let networks = match &self.networks.networks {
            Ok(networks) => networks
                .list()
                .await
                .iter()
                .map(|v| self.networks.network_pb(v))
                .collect(),
            Err(_) => Vec::new(),
        };
        Ok(Response::new(pb::ListNetworksResponse { networks }))
    }

    async fn inspect_network(
        &self,
        request: Request<pb::NetworkRef>,
    ) -> Result<Response<pb::Network>, Status> {
        let reference = request.into_inner().network;
        let networks = self.networks.networks.as_ref().map_err(|_| {
            status(LocalNetError::NotFound {
                reference: reference.clone(),
            })
        })?;
        let view = networks.inspect(&reference).await.map_err(status)?;
        Ok(Response::new(self.networks.network_pb(&view)))
    }

    async fn remove_network(
        &self,
        request: Request<pb::NetworkRef>,
    ) -> Result<Response<pb::Empty>, Status> {
        self.networks
            .networks()?
            .remove_network(&request.into_inner().network)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn prune_networks(
        &self,
        _: Request<pb::Empty>,
    ) -> Result<Response<pb::PruneNetworksResponse>, Status> {
        let deleted = match &self.networks.networks {
            Ok(networks) => networks.prune().await.map_err(status)?,
            Err(_) => Vec::new(),
        };
        Ok(Response::new(pb::PruneNetworksResponse { deleted }))
    }

    async fn connect_container(
        &self,
        request: Request<pb::ConnectContainerRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let request = request.into_inner();
        let networks = self.networks.networks()?;
        if !networks.exists(&request.network).await {
            return Err(self.networks.unknown_network(&request.network).await);
        }
        let (id, name) = self.networks.running_container(&request.container)?;
        networks
            .connect(&id, &name, &request.network, &request.aliases)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn disconnect_container(
        &self,
        request: Request<pb::DisconnectContainerRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let request = request.into_inner();
        let networks = self.networks.networks()?;
        let details = self
            .networks
            .containers
            .inspect(&request.container)
            .map_err(|e| Status::not_found(e.to_string()))?;
        networks
            .disconnect(&details.id, &details.name, &request.network)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::Empty {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_ports_are_checked_at_the_edge() {
        let port = |host_ip: &str, host_port, container_port, protocol: pb::PortProtocol| {
            pb::PublishedPort {
                protocol: protocol.into(),
                host_ip: host_ip.into(),
                host_port,
                container_port,
            }
        };
        let mapped = port_mapping(&port("127.0.0.1", 8080, 80, pb::PortProtocol::Udp)).unwrap();
        assert_eq!(mapped.host_side(), "127.0.0.1:8080/udp");
        assert_eq!(
            port_mapping(&port("", 8080, 80, pb::PortProtocol::Unspecified))
                .unwrap()
                .protocol,
            Protocol::Tcp
        );
        for (bad, named) in [
            (port("", 70000, 80, pb::PortProtocol::Tcp), "70000"),
            (port("", 8080, 0, pb::PortProtocol::Tcp), "0"),
            (port("::1", 1, 2, pb::PortProtocol::Tcp), "::1"),
        ] {
            let error = port_mapping(&bad).unwrap_err();
            assert_eq!(error.code(), tonic::Code::InvalidArgument);
            assert!(error.message().contains(named), "{}", error.message());
        }
    }
}
