//! This node's bridge networks (docker's bridge driver): the default
//! network `bridge` on `shoal0` and the user's `shl-<id>` networks, the
//! standalone containers attached to them, and their published ports.
//!
//! [`BridgeNetworks`] owns the decisions and their record ([`store`]),
//! and makes the kernel match through the node's [`Dataplane`]: bridges
//! and the firewall via `set_local`, a sandbox namespace per container
//! (`ctr-...`; task sandboxes `task-...` are the agent's and never touched
//! here) via `attach` / `detach` / `release`. Each published port also
//! gets a [`PortProxy`] bound on the host port, started before anything
//! else: binding it is how a port already in use is found, and it serves
//! 127.0.0.1, which DNAT cannot.
//!
//! The daemon calls [`BridgeNetworks::prepare_container`] before creating
//! a container (the container joins the returned namespace),
//! [`BridgeNetworks::release_container`] when it ends, and
//! [`BridgeNetworks::restore`] once at start, before anything else may
//! touch bridges (the agent's overlay removes `shl-` bridges it does not
//! know of, and knows local ones only once they are applied).

pub mod error;
pub mod ipam;
pub mod store;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ipnet::Ipv4Net;
use tokio::sync::Mutex;

use crate::bridge::remove_bridge;
use crate::dataplane::{Attachment, Dataplane};
use crate::dns::DnsSettings;
use crate::firewall::PortProxy;
use crate::netlink::{Netlink, Rtnl};
pub use error::{ErrorKind, LocalNetError, Result};
pub use ipam::AddressPool;
use store::STATE_FILE;
pub use store::{
    EndpointRecord, LocalState, NetworkRecord, NetworkRequest, PortMapping, Protocol,
    SandboxRecord, SwarmEndpoint, DEFAULT_NETWORK,
};

/// Prefix of standalone containers' sandboxes.
pub const CONTAINER_SANDBOX_PREFIX: &str = "ctr-";
/// Random hex characters after the prefix.
const SANDBOX_ID_HEX: usize = 24;

/// One network a container asks for: name, id or id prefix, and aliases.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetworkChoice {
    pub network: String,
    pub aliases: Vec<String>,
}

/// A container's networks in the order asked for: this node's bridge
/// networks, and swarm overlays whose address the managers already gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Requested {
    Local(NetworkChoice),
    Swarm { network_id: String, address: Ipv4Addr },
}

/// What a container about to be created gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreparedSandbox {
    pub sandbox_id: String,
    /// The namespace the container joins.
    pub netns: PathBuf,
    /// Its resolv.conf (the node's embedded DNS), to bind-mount read-only
    /// at /etc/resolv.conf.
    pub resolv_conf: PathBuf,
}

/// A container's endpoint, for `container inspect`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerEndpoint {
    pub network_id: String,
    pub network: String,
    /// Address with the network's prefix.
    pub address: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub aliases: Vec<String>,
    pub published: Vec<PortMapping>,
}

/// What [`BridgeNetworks::restore`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Restored {
    /// Containers still running: watch them.
    pub running: Vec<String>,
    /// Sandboxes of containers that ended meanwhile and held swarm
    /// addresses: give those back to the managers.
    pub swarm_released: Vec<String>,
}

/// A network with who is attached, for `network ls/inspect`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkView {
    pub network: NetworkRecord,
    /// (container id, container name, endpoint), in address order.
    pub containers: Vec<(String, String, EndpointRecord)>,
}

struct Inner {
    state: LocalState,
    /// The relays of each sandbox's published ports; dropping them frees
    /// the ports.
    proxies: HashMap<String, Vec<PortProxy>>,
    /// Whether our networks were ever applied: a node with none (e.g.
    /// `--bridge none` and no user networks) leaves the kernel untouched.
    applied: bool,
}

pub struct BridgeNetworks {
    dataplane: Arc<Dataplane>,
    /// The node's namespace: its routes are checked before a subnet is taken.
    node: Rtnl,
    pool: AddressPool,
    state_path: PathBuf,
    inner: Mutex<Inner>,
}

impl BridgeNetworks {
    /// Loads the record under `state_dir` and, with `default_network`,
    /// makes sure the default network exists (a subnet of `pool` that
    /// overlaps no route of the host). Nothing reaches the kernel until
    /// [`BridgeNetworks::restore`].
    pub async fn open(
        state_dir: &Path,
        pool: AddressPool,
        default_network: bool,
        dataplane: Arc<Dataplane>,
    ) -> Result<Arc<Self>> {
        let node = Rtnl::current()?;
        let state_path = state_dir.join(STATE_FILE);
        let mut state = LocalState::load(&state_path)?;
        let has_default = state.networks.iter().any(NetworkRecord::is_default);
        if default_network && !has_default {
            let routes = node.routes().await?;
            let network = state.plan_default_network(&pool, &routes)?;
            tracing::info!(subnet = %network.subnet, bridge = %network.bridge, "default bridge network created");
            state.networks.insert(0, network);
            state.save(&state_path)?;
        } else if !default_network && has_default {
            // `--bridge none`: the default network goes once nothing uses it.
            if let Some(index) = state
                .networks
                .iter()
                .position(|n| n.is_default() && n.endpoints.is_empty())
            {
                state.networks.remove(index);
                state.save(&state_path)?;
            }
        }
        Ok(Arc::new(BridgeNetworks {
            dataplane,
            node,
            pool,
            state_path,
            inner: Mutex::new(Inner {
                state,
                proxies: HashMap::new(),
                applied: false,
            }),
        }))
    }

    /// Brings the kernel in line after a (re)start: forgets the sandboxes
    /// of containers not in `running` (they ended while the daemon was
    /// down, or their create never finished) and removes them, applies
    /// bridges and firewall, repairs the kept sandboxes and restarts their
    /// port relays. Returns the container ids to watch.
    pub async fn restore(&self, running: &HashSet<String>) -> Result<Restored> {
        let mut inner = self.inner.lock().await;
        let gone: Vec<String> = inner
            .state
            .sandboxes
            .iter()
            .filter(|s| !running.contains(&s.container_id))
            .map(|s| s.id.clone())
            .collect();
        // Endpoints whose sandbox record is missing (a crash between writes).
        let orphans: BTreeSet<String> = inner
            .state
            .networks
            .iter()
            .flat_map(|n| &n.endpoints)
            .filter(|e| inner.state.sandbox(&e.sandbox_id).is_none())
            .map(|e| e.sandbox_id.clone())
            .collect();
        let swarm_released: Vec<String> = gone
            .iter()
            .filter(|id| inner.state.sandbox(id).is_some_and(|s| !s.swarm.is_empty()))
            .cloned()
            .collect();
        for sandbox in gone.iter().chain(&orphans) {
            inner.state.remove_sandbox(sandbox);
        }
        inner.state.save(&self.state_path)?;
        self.apply(&mut inner).await?;

        let kept: Vec<SandboxRecord> = inner.state.sandboxes.clone();
        for sandbox in &kept {
            if let Err(error) = self
                .dataplane
                .attach(&sandbox.id, &attachments(&inner.state, &sandbox.id))
                .await
            {
                tracing::warn!(sandbox = %sandbox.id, container = %sandbox.container_id, %error, "repairing a container's network sandbox");
            }
            let mut proxies = Vec::new();
            for (index, endpoint) in inner.state.sandbox_endpoints(&sandbox.id) {
                let bridge = inner.state.networks[index].bridge.clone();
                for port in &endpoint.published {
                    match PortProxy::start(&port.published(endpoint.address, &bridge)).await {
                        Ok(proxy) => proxies.push(proxy),
                        // DNAT still serves it from outside; only loopback is lost.
                        Err(error) => {
                            tracing::warn!(container = %sandbox.container_id, %error, "restarting a published port's relay")
                        }
                    }
                }
            }
            inner.proxies.insert(sandbox.id.clone(), proxies);
        }
        self.publish_names(&inner);
        let known: BTreeSet<String> = kept.iter().map(|s| s.id.clone()).collect();
        for sandbox in self.dataplane.sandbox_ids().await? {
            if sandbox.starts_with(CONTAINER_SANDBOX_PREFIX) && !known.contains(&sandbox) {
                tracing::info!(%sandbox, "removing the sandbox of a container that is gone");
                self.dataplane.release(&sandbox).await?;
            }
        }
        Ok(Restored { running: kept.into_iter().map(|s| s.container_id).collect(), swarm_released })
    }

    /// Tells the embedded DNS which named containers are on which network.
    fn publish_names(&self, inner: &Inner) {
        self.dataplane.dns().set_local_containers(inner.state.named_containers());
    }

    /// Makes bridges and firewall match the record.
    async fn apply(&self, inner: &mut Inner) -> Result<()> {
        if inner.state.networks.is_empty() && !inner.applied {
            return Ok(());
        }
        self.dataplane.set_local(inner.state.dataplane()).await?;
        inner.applied = true;
        Ok(())
    }

    /// `network create -d bridge`.
    pub async fn create_network(&self, request: &NetworkRequest) -> Result<NetworkRecord> {
        let mut inner = self.inner.lock().await;
        let routes = self.node.routes().await?;
        let network = inner.state.plan_network(request, &self.pool, &routes)?;
        inner.state.networks.push(network.clone());
        let applied = match self.apply(&mut inner).await {
            Ok(()) => inner.state.save(&self.state_path),
            Err(error) => Err(error),
        };
        if let Err(error) = applied {
            inner.state.networks.retain(|n| n.id != network.id);
            let _ = remove_bridge(&self.node, &network.bridge).await;
            let _ = self.apply(&mut inner).await;
            return Err(error);
        }
        tracing::info!(name = %network.name, id = %network.id, subnet = %network.subnet, "bridge network created");
        Ok(network)
    }

    pub async fn list(&self) -> Vec<NetworkView> {
        let inner = self.inner.lock().await;
        (0..inner.state.networks.len())
            .map(|i| view(&inner.state, i))
            .collect()
    }

    /// The network `reference` (id, name or id prefix) names.
    pub async fn inspect(&self, reference: &str) -> Result<NetworkView> {
        let inner = self.inner.lock().await;
        let index = inner
            .state
            .position(reference)
            .ok_or_else(|| not_found(reference))?;
        Ok(view(&inner.state, index))
    }

    /// `network rm`: refused for the default network and while anything
    /// is attached.
    pub async fn remove_network(&self, reference: &str) -> Result<NetworkRecord> {
        let mut inner = self.inner.lock().await;
        let index = inner
            .state
            .position(reference)
            .ok_or_else(|| not_found(reference))?;
        let network = inner.state.networks[index].clone();
        if network.is_default() {
            return Err(LocalNetError::DefaultNetwork { name: network.name });
        }
        if !network.endpoints.is_empty() {
            let names = inner.state.container_names(index);
            let containers = format!(
                "{} {}",
                if names.len() == 1 {
                    "container"
                } else {
                    "containers"
                },
                names.join(", ")
            );
            return Err(LocalNetError::InUse {
                containers,
                name: network.name,
            });
        }
        inner.state.networks.remove(index);
        self.apply(&mut inner).await?;
        inner.state.save(&self.state_path)?;
        tracing::info!(name = %network.name, id = %network.id, "bridge network removed");
        Ok(network)
    }

    /// `network prune`: every user network with nothing attached; returns
    /// their names.
    pub async fn prune(&self) -> Result<Vec<String>> {
        let mut inner = self.inner.lock().await;
        let unused: Vec<String> = inner
            .state
            .networks
            .iter()
            .filter(|n| !n.is_default() && n.endpoints.is_empty())
            .map(|n| n.name.clone())
            .collect();
        if unused.is_empty() {
            return Ok(unused);
        }
        inner.state.networks.retain(|n| !unused.contains(&n.name));
        self.apply(&mut inner).await?;
        inner.state.save(&self.state_path)?;
        Ok(unused)
    }

    /// Whether `reference` names one of this node's bridge networks.
    pub async fn exists(&self, reference: &str) -> bool {
        self.inner.lock().await.state.position(reference).is_some()
    }

    /// Everything a container about to be created needs: an address on
    /// each of `networks` (the first carries its default route), its
    /// published ports (relays bound first: a port in use fails here with
    /// nothing changed; then DNAT), and a sandbox namespace with its
    /// endpoints. Call [`BridgeNetworks::bind_container`] once the
    /// container exists, or [`BridgeNetworks::release_sandbox`] if it
    /// could not be created.
    pub async fn prepare_container(
        &self,
        sandbox_id: &str,
        requested: &[Requested],
        ports: &[PortMapping],
        dns: &DnsSettings,
    ) -> Result<PreparedSandbox> {
        let networks: Vec<NetworkChoice> = requested
            .iter()
            .filter_map(|r| match r {
                Requested::Local(choice) => Some(choice.clone()),
                Requested::Swarm { .. } => None,
            })
            .collect();
        // Positions follow the order asked for, across both kinds.
        let local_positions: Vec<u32> = requested
            .iter()
            .enumerate()
            .filter(|(_, r)| matches!(r, Requested::Local(_)))
            .map(|(i, _)| i as u32)
            .collect();
        let swarm: Vec<SwarmEndpoint> = requested
            .iter()
            .enumerate()
            .filter_map(|(i, r)| match r {
                Requested::Swarm { network_id, address } => {
                    Some(SwarmEndpoint { network_id: network_id.clone(), address: *address, position: i as u32 })
                }
                Requested::Local(_) => None,
            })
            .collect();
        for alias in networks.iter().flat_map(|n| &n.aliases) {
            store::validate_alias(alias)?;
        }
        let mut inner = self.inner.lock().await;
        let mut indices: Vec<usize> = Vec::new();
        for choice in &networks {
            let index = inner
                .state
                .position(&choice.network)
                .ok_or_else(|| not_found(&choice.network))?;
            if indices.contains(&index) {
                return Err(LocalNetError::DuplicateAttachment {
                    network: choice.network.clone(),
                });
            }
            indices.push(index);
        }
        if indices.is_empty() && swarm.is_empty() {
            return Err(LocalNetError::NotFound {
                reference: String::new(),
            });
        }
        if let (None, Some(port)) = (indices.first(), ports.first()) {
            return Err(LocalNetError::PublishWithoutBridge { port: port.host_side() });
        }
        if let (Some(&first), Some(port)) = (indices.first(), ports.first()) {
            if inner.state.networks[first].internal {
                return Err(LocalNetError::PublishOnInternal {
                    network: inner.state.networks[first].name.clone(),
                    port: port.host_side(),
                });
            }
        }
        let addresses = indices
            .iter()
            .map(|&i| inner.state.networks[i].free_address())
            .collect::<Result<Vec<_>>>()?;

        if inner.state.sandbox(sandbox_id).is_some() {
            return Err(LocalNetError::Internal {
                detail: format!("sandbox {sandbox_id} exists already; pick a new one with new_sandbox_id"),
            });
        }
        let sandbox_id = sandbox_id.to_string();
        let mut proxies = Vec::new();
        if let Some(&first) = indices.first() {
            let first_bridge = inner.state.networks[first].bridge.clone();
            for port in ports {
                proxies.push(
                    PortProxy::start(&port.published(addresses[0], &first_bridge))
                        .await
                        .map_err(LocalNetError::Port)?,
                );
            }
        }

        inner.state.sandboxes.push(SandboxRecord {
            id: sandbox_id.clone(),
            container_id: String::new(),
            container_name: String::new(),
            swarm,
        });
        for (nth, ((&index, choice), address)) in
            indices.iter().zip(&networks).zip(&addresses).enumerate()
        {
            let position = local_positions[nth];
            inner.state.networks[index].endpoints.push(EndpointRecord {
                sandbox_id: sandbox_id.clone(),
                address: *address,
                aliases: choice.aliases.clone(),
                published: if nth == 0 {
                    ports.to_vec()
                } else {
                    Vec::new()
                },
                position,
            });
        }
        let attached = match self
            .commit_and_attach(&mut inner, &sandbox_id, !ports.is_empty())
            .await
        {
            Ok(netns) => match self.dataplane.dns().configure(&sandbox_id, dns).await {
                Ok(resolv_conf) => Ok((netns, resolv_conf)),
                Err(error) => Err(error.into()),
            },
            Err(error) => Err(error),
        };
        match attached {
            Ok((netns, resolv_conf)) => {
                inner.proxies.insert(sandbox_id.clone(), proxies);
                tracing::info!(sandbox = %sandbox_id, ?addresses, ports = ports.len(), "container networks prepared");
                Ok(PreparedSandbox { sandbox_id, netns, resolv_conf })
            }
            Err(error) => {
                self.forget_sandbox(&mut inner, &sandbox_id).await;
                Err(error)
            }
        }
    }

    /// Saves the record (applying bridges and firewall first when
    /// `ports_changed`: the firewall depends on networks and published
    /// ports only, so most containers leave it alone), then (re)makes the
    /// sandbox's endpoints.
    async fn commit_and_attach(
        &self,
        inner: &mut Inner,
        sandbox_id: &str,
        ports_changed: bool,
    ) -> Result<PathBuf> {
        if ports_changed {
            self.apply(inner).await?;
        }
        inner.state.save(&self.state_path)?;
        Ok(self
            .dataplane
            .attach(sandbox_id, &attachments(&inner.state, sandbox_id))
            .await?)
    }

    /// Takes a sandbox out of the record and the kernel, best effort (it
    /// undoes a failed step, or follows a container that ended). Returns
    /// whether it had swarm addresses, which the caller gives back to the
    /// managers.
    async fn forget_sandbox(&self, inner: &mut Inner, sandbox_id: &str) -> bool {
        let had_swarm = inner.state.sandbox(sandbox_id).is_some_and(|s| !s.swarm.is_empty());
        inner.proxies.remove(sandbox_id);
        let had_ports = inner
            .state
            .sandbox_endpoints(sandbox_id)
            .iter()
            .any(|(_, e)| !e.published.is_empty());
        if inner.state.remove_sandbox(sandbox_id) {
            if had_ports {
                if let Err(error) = self.apply(inner).await {
                    tracing::warn!(sandbox = sandbox_id, %error, "updating the firewall after a container");
                }
            }
            if let Err(error) = inner.state.save(&self.state_path) {
                tracing::warn!(sandbox = sandbox_id, %error, "saving the local network state");
            }
        }
        self.publish_names(inner);
        if let Err(error) = self.dataplane.release(sandbox_id).await {
            tracing::warn!(sandbox = sandbox_id, %error, "removing a container's network sandbox");
        }
        had_swarm
    }

    /// A fresh sandbox id for a container about to be prepared (the
    /// managers learn it first when the container joins a swarm overlay).
    pub async fn new_sandbox_id(&self) -> String {
        let inner = self.inner.lock().await;
        loop {
            let bytes: [u8; SANDBOX_ID_HEX / 2] = rand::random();
            let id = format!(
                "{CONTAINER_SANDBOX_PREFIX}{}",
                bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
            );
            if inner.state.sandbox(&id).is_none() {
                return id;
            }
        }
    }

    /// Records which container lives in `sandbox_id`.
    pub async fn bind_container(
        &self,
        sandbox_id: &str,
        container_id: &str,
        container_name: &str,
    ) -> Result<()> {
        let mut inner = self.inner.lock().await;
        if let Some(sandbox) = inner
            .state
            .sandboxes
            .iter_mut()
            .find(|s| s.id == sandbox_id)
        {
            sandbox.container_id = container_id.to_string();
            sandbox.container_name = container_name.to_string();
        }
        self.publish_names(&inner);
        inner.state.save(&self.state_path)
    }

    /// Undoes [`BridgeNetworks::prepare_container`] for a container that
    /// was never created.
    pub async fn release_sandbox(&self, sandbox_id: &str) {
        let mut inner = self.inner.lock().await;
        self.forget_sandbox(&mut inner, sandbox_id).await;
    }

    /// Frees everything of a container that ended: addresses, published
    /// ports (relays and DNAT) and its sandbox. Fine to call twice.
    /// Returns its sandbox when it held swarm addresses, for the caller to
    /// give back to the managers.
    pub async fn release_container(&self, container_id: &str) -> Option<String> {
        let mut inner = self.inner.lock().await;
        let sandbox = inner.state.sandbox_of(container_id).map(|s| s.id.clone())?;
        let had_swarm = self.forget_sandbox(&mut inner, &sandbox).await;
        tracing::info!(container = container_id, sandbox = %sandbox, "container networks released");
        had_swarm.then_some(sandbox)
    }

    /// `network connect`: attaches the running container's sandbox to one
    /// more network, live.
    pub async fn connect(
        &self,
        container_id: &str,
        container_name: &str,
        reference: &str,
        aliases: &[String],
    ) -> Result<()> {
        for alias in aliases {
            store::validate_alias(alias)?;
        }
        let mut inner = self.inner.lock().await;
        let sandbox_id = inner
            .state
            .sandbox_of(container_id)
            .map(|s| s.id.clone())
            .ok_or_else(|| LocalNetError::NoSandbox {
                container: container_name.to_string(),
            })?;
        let index = inner
            .state
            .position(reference)
            .ok_or_else(|| not_found(reference))?;
        let network = &inner.state.networks[index];
        if network.endpoints.iter().any(|e| e.sandbox_id == sandbox_id) {
            return Err(LocalNetError::AlreadyConnected {
                container: container_name.to_string(),
                network: network.name.clone(),
            });
        }
        let address = network.free_address()?;
        let position = inner
            .state
            .sandbox_endpoints(&sandbox_id)
            .last()
            .map_or(0, |(_, e)| e.position + 1);
        inner.state.networks[index].endpoints.push(EndpointRecord {
            sandbox_id: sandbox_id.clone(),
            address,
            aliases: aliases.to_vec(),
            published: Vec::new(),
            position,
        });
        if let Err(error) = self.commit_and_attach(&mut inner, &sandbox_id, false).await {
            inner.state.networks[index]
                .endpoints
                .retain(|e| e.sandbox_id != sandbox_id);
            let _ = self
                .dataplane
                .detach(&sandbox_id, &inner.state.networks[index].id.clone())
                .await;
            let _ = inner.state.save(&self.state_path);
            return Err(error);
        }
        self.publish_names(&inner);
        tracing::info!(container = container_id, network = %inner.state.networks[index].name, %address, "container connected");
        Ok(())
    }

    /// `network disconnect`: removes the container's endpoint on the
    /// network, with the published ports it carried.
    pub async fn disconnect(
        &self,
        container_id: &str,
        container_name: &str,
        reference: &str,
    ) -> Result<()> {
        let mut inner = self.inner.lock().await;
        let index = inner
            .state
            .position(reference)
            .ok_or_else(|| not_found(reference))?;
        let network_name = inner.state.networks[index].name.clone();
        let not_connected = || LocalNetError::NotConnected {
            container: container_name.to_string(),
            network: network_name.clone(),
        };
        let sandbox_id = inner
            .state
            .sandbox_of(container_id)
            .map(|s| s.id.clone())
            .ok_or_else(not_connected)?;
        let network = &mut inner.state.networks[index];
        let Some(at) = network
            .endpoints
            .iter()
            .position(|e| e.sandbox_id == sandbox_id)
        else {
            return Err(not_connected());
        };
        let endpoint = network.endpoints.remove(at);
        let network_id = network.id.clone();
        if !endpoint.published.is_empty() {
            inner.proxies.remove(&sandbox_id);
            self.apply(&mut inner).await?;
        }
        inner.state.save(&self.state_path)?;
        self.publish_names(&inner);
        self.dataplane.detach(&sandbox_id, &network_id).await?;
        tracing::info!(container = container_id, network = %network_name, "container disconnected");
        Ok(())
    }

    /// The networks of a container, in its order.
    pub async fn container_endpoints(&self, container_id: &str) -> Vec<ContainerEndpoint> {
        let inner = self.inner.lock().await;
        let Some(sandbox) = inner.state.sandbox_of(container_id) else {
            return Vec::new();
        };
        inner
            .state
            .sandbox_endpoints(&sandbox.id)
            .into_iter()
            .map(|(index, endpoint)| {
                let network = &inner.state.networks[index];
                ContainerEndpoint {
                    network_id: network.id.clone(),
                    network: network.name.clone(),
                    address: Ipv4Net::new(endpoint.address, network.subnet.prefix_len())
                        .unwrap_or(network.subnet),
                    gateway: network.gateway,
                    aliases: endpoint.aliases.clone(),
                    published: endpoint.published.clone(),
                }
            })
            .collect()
    }
}

/// The data plane's attachments of a sandbox, in its network order.
/// The sandbox's endpoints on bridge networks and swarm overlays, in the
/// order the container asked for them (the first carries its default route).
fn attachments(state: &LocalState, sandbox_id: &str) -> Vec<Attachment> {
    let mut ordered: Vec<(u32, Attachment)> = state
        .sandbox_endpoints(sandbox_id)
        .into_iter()
        .map(|(index, endpoint)| {
            (endpoint.position, Attachment { network_id: state.networks[index].id.clone(), address: endpoint.address })
        })
        .collect();
    if let Some(sandbox) = state.sandbox(sandbox_id) {
        ordered.extend(sandbox.swarm.iter().map(|s| (s.position, Attachment { network_id: s.network_id.clone(), address: s.address })));
    }
    ordered.sort_by_key(|(position, _)| *position);
    ordered.into_iter().map(|(_, attachment)| attachment).collect()
}

fn view(state: &LocalState, index: usize) -> NetworkView {
    NetworkView {
        network: state.networks[index].clone(),
        containers: state
            .attached(index)
            .into_iter()
            .map(|(sandbox, endpoint)| {
                (
                    sandbox.container_id.clone(),
                    sandbox.container_name.clone(),
                    endpoint.clone(),
                )
            })
            .collect(),
    }
}

fn not_found(reference: &str) -> LocalNetError {
    LocalNetError::NotFound {
        reference: reference.to_string(),
    }
}
