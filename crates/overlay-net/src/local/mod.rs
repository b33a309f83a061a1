//! This node's bridge networks (docker's bridge driver): the default
//! network `bridge` on `shoal0` and the user's `shl-<id>` networks, the
//! standalone containers attached to them, and their published ports.
//!
//! [`BridgeNetworks`] owns the decisions and their record ([`store`]);
//! what concerns one container (its sandbox, addresses, ports, `network
//! connect`) is in `containers.rs`. It makes the kernel match through the
//! node's [`Dataplane`]: bridges and the firewall via `set_local`, a
//! sandbox namespace per container (`ctr-...`; task sandboxes `task-...`
//! are the agent's and never touched here) via `attach` / `detach` /
//! `release`. Each published port also
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

mod containers;
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
use containers::attachments;
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
