//! The node's networks as one whole: what the agent and the daemon call.
//!
//! It turns what the managers push (the overlay networks this node serves
//! and the peers it shares them with) and the node's own bridge networks
//! into kernel state: a bridge per network ([`crate::bridge`]), a sandbox
//! namespace per task or container with a veth into each of its networks
//! ([`crate::sandbox`]), /32 routes to remote tasks over the WireGuard
//! device ([`crate::routes`], [`crate::wireguard`]), and one nftables
//! ruleset for all of it ([`crate::firewall`]). Every step is idempotent
//! and converges on the desired state, so a restarted daemon adopts what
//! the previous one left (the device process, bridges and sandboxes all
//! outlive it) instead of building a second copy.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ipnet::Ipv4Net;
use tokio::sync::{watch, Mutex};

use crate::bridge::{bridge_name, ensure_bridge, remove_bridge, BridgeConfig, BRIDGE_PREFIX};
use crate::directory::Directory;
use crate::dns::{DnsService, NetworkInfo};
use crate::error::{NetError, Result};
use crate::firewall::{Firewall, FirewallModel, NetworkRules, PublishedPort};
use crate::load_balancer::{self, NodeView};
use crate::netlink::{Netlink, Rtnl};
use crate::netns::NetnsDir;
use crate::routes::{sync_host_routes, HostRoute};
use crate::sandbox::{EndpointConfig, Sandboxes};
use crate::wireguard::{PeerConfig, PublicKey, WireguardDevice};

/// IPv4 (20) + UDP (8) + WireGuard's header and tag (32): what the
/// WireGuard device adds to each packet on an IPv4 underlay.
pub const WIREGUARD_OVERHEAD: u32 = 60;
/// Used when the underlay's MTU cannot be read.
const FALLBACK_UNDERLAY_MTU: u32 = 1500;
/// How long a task's attachment waits for the managers' view to bring its
/// network to this node (they come in the same message; this covers the
/// gap between applying the view and starting the task).
const NETWORK_READY_TIMEOUT: Duration = Duration::from_secs(10);

/// An overlay network as this node serves it (from the managers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverlayNetwork {
    pub id: String,
    pub name: String,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    /// This node's own address on the network, once allocated.
    pub node_address: Option<Ipv4Addr>,
    /// `None`: the underlay's MTU less [`WIREGUARD_OVERHEAD`].
    pub mtu: Option<u32>,
    pub internal: bool,
    /// The swarm's routing-mesh network.
    pub ingress: bool,
}

/// Another node sharing networks with this one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverlayPeer {
    pub node_id: String,
    pub public_key: PublicKey,
    pub endpoint: SocketAddr,
    /// Its tasks' and its own addresses on the shared networks.
    pub allowed_ips: Vec<Ipv4Net>,
}

/// A task's (or container's) address on one network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    pub network_id: String,
    pub address: Ipv4Addr,
}

/// A network with its bridge up on this node: what an endpoint needs.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ReadyNetwork {
    bridge: String,
    subnet: Ipv4Net,
    gateway: Ipv4Addr,
    mtu: u32,
}

/// This node's own bridge networks, as the daemon's local network store
/// describes them to the data plane.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalNetworks {
    pub networks: Vec<LocalNetwork>,
    pub published: Vec<PublishedPort>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalNetwork {
    pub id: String,
    pub bridge: String,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub mtu: u32,
    pub internal: bool,
}

/// The overlay device once the node joined a swarm.
struct Overlay {
    device: WireguardDevice,
    underlay_mtu: u32,
    networks: BTreeMap<String, OverlayNetwork>,
    peers: Vec<OverlayPeer>,
}

#[derive(Default)]
struct State {
    overlay: Option<Overlay>,
    local: LocalNetworks,
    /// The swarm's services (and named containers) on this node's
    /// networks, as the managers last pushed them.
    directory: Directory,
    /// What the firewall was last made to match: most overlay changes
    /// (peers, addresses) leave it as it is, and an nft run costs tens of ms.
    firewall: Option<FirewallModel>,
}

pub struct Dataplane {
    node: Rtnl,
    sandboxes: Sandboxes<Rtnl>,
    firewall: Firewall,
    state_dir: PathBuf,
    shoal_exe: PathBuf,
    state: Mutex<State>,
    ready: watch::Sender<BTreeMap<String, ReadyNetwork>>,
    /// The embedded DNS: a server in each sandbox, answers from the directory.
    dns: DnsService,
}

impl Dataplane {
    /// Opens the data plane of the namespace this daemon runs in. Task
    /// sandboxes live under `state_dir/netns`, the node's WireGuard key in
    /// `state_dir/wireguard`. `shoal_exe` runs the userspace device.
    pub async fn open(state_dir: &Path, shoal_exe: &Path) -> Result<Arc<Self>> {
        std::fs::create_dir_all(state_dir)
            .map_err(|source| NetError::Io { action: "create the network state directory", path: state_dir.to_path_buf(), source })?;
        let node = Rtnl::current()?;
        let sandboxes = Sandboxes::new(Rtnl::current()?, NetnsDir::new(state_dir.join("netns")));
        Ok(Arc::new(Dataplane {
            node,
            sandboxes,
            firewall: Firewall::current_namespace(),
            state_dir: state_dir.to_path_buf(),
            shoal_exe: shoal_exe.to_path_buf(),
            state: Mutex::new(State::default()),
            ready: watch::channel(BTreeMap::new()).0,
            dns: DnsService::new(state_dir.join("dns"), PathBuf::from("/etc/resolv.conf")),
        }))
    }

    /// The node's embedded DNS (a container's resolv.conf, local names).
    pub fn dns(&self) -> &DnsService {
        &self.dns
    }

    /// The WireGuard device's peers with their counters; none before the
    /// node joins a swarm or when the device does not answer.
    pub async fn wireguard_peers(&self) -> Vec<crate::wireguard::PeerStatus> {
        let device = self.state.lock().await.overlay.as_ref().map(|o| o.device.clone());
        match device {
            Some(device) => device.peers().await.unwrap_or_default(),
            None => Vec::new(),
        }
    }

    fn key_path(&self) -> PathBuf {
        self.state_dir.join("wireguard").join("private.key")
    }

    /// Starts (or adopts, after a restart) the node's WireGuard device for
    /// the swarm and returns its public key for the managers. `advertise`
    /// is the node's underlay address: its link's MTU sizes the overlay.
    pub async fn join_overlay(&self, device_name: &str, listen_port: u16, advertise: Ipv4Addr) -> Result<PublicKey> {
        let device = WireguardDevice::ensure(device_name, listen_port, &self.key_path(), &self.shoal_exe)
            .await
            .map_err(|e| NetError::Wireguard(e.to_string()))?;
        let underlay_mtu = self.underlay_mtu(advertise).await;
        let key = device.public_key();
        let mut state = self.state.lock().await;
        match &mut state.overlay {
            Some(overlay) if overlay.device.name() == device_name => overlay.underlay_mtu = underlay_mtu,
            _ => state.overlay = Some(Overlay { device, underlay_mtu, networks: BTreeMap::new(), peers: Vec::new() }),
        }
        Ok(key)
    }

    /// The MTU of the link that carries `advertise`.
    async fn underlay_mtu(&self, advertise: Ipv4Addr) -> u32 {
        let Ok(links) = self.node.links().await else { return FALLBACK_UNDERLAY_MTU };
        for link in links {
            if let Ok(addresses) = self.node.addresses(&link.name).await {
                if addresses.iter().any(|a| a.addr() == advertise) {
                    return link.mtu;
                }
            }
        }
        FALLBACK_UNDERLAY_MTU
    }

    /// Applies one view from the managers: the overlay ([`Self::set_overlay`])
    /// and the directory ([`Self::set_directory`]), with one firewall run.
    /// A newly served network is announced ready only once all of it is in
    /// place (names, VIP routes and rules), so a container that was waiting
    /// for the network to start resolves and reaches its services from its
    /// first packet.
    pub async fn set_view(&self, networks: Vec<OverlayNetwork>, peers: Vec<OverlayPeer>, directory: Directory) -> Result<()> {
        let mut state = self.state.lock().await;
        self.apply_overlay(&mut state, networks, peers).await?;
        self.apply_directory(&mut state, directory).await?;
        self.apply_firewall(&mut state).await?;
        self.publish_ready(&state);
        Ok(())
    }

    /// Makes the overlay match the managers' view: a bridge per network,
    /// the device's peers, /32 routes to every remote address, and the
    /// firewall. Bridges of overlay networks no longer served go.
    pub async fn set_overlay(&self, networks: Vec<OverlayNetwork>, peers: Vec<OverlayPeer>) -> Result<()> {
        let mut state = self.state.lock().await;
        self.apply_overlay(&mut state, networks, peers).await?;
        self.publish_ready(&state);
        self.apply_firewall(&mut state).await
    }

    /// The kernel part of [`Self::set_overlay`]: bridges, peers, routes.
    async fn apply_overlay(&self, state: &mut State, networks: Vec<OverlayNetwork>, peers: Vec<OverlayPeer>) -> Result<()> {
        let Some(overlay) = state.overlay.as_mut() else {
            if networks.is_empty() && peers.is_empty() {
                return Ok(());
            }
            return Err(NetError::NotReady("the node has no overlay device, so it cannot serve overlay networks; see the daemon's log for why it did not start".into()));
        };
        let derived_mtu = overlay.underlay_mtu.saturating_sub(WIREGUARD_OVERHEAD);
        let wanted: BTreeMap<String, OverlayNetwork> = networks.into_iter().map(|n| (n.id.clone(), n)).collect();
        // The device carries the largest packet any network may send.
        let device_mtu = wanted.values().map(|n| n.mtu.unwrap_or(derived_mtu)).max().unwrap_or(derived_mtu).max(derived_mtu);
        let device_link = self.node.require_link(overlay.device.name()).await?;
        if device_link.mtu != device_mtu {
            self.node.set_mtu(overlay.device.name(), device_mtu).await?;
        }
        for network in wanted.values() {
            let config = BridgeConfig {
                name: bridge_name(&network.id),
                mtu: network.mtu.unwrap_or(derived_mtu),
                gateway: Ipv4Net::new(network.gateway, network.subnet.prefix_len()).map_err(|_| NetError::InvalidValue {
                    what: "subnet",
                    value: network.subnet.to_string(),
                    rule: "the prefix must be a valid IPv4 prefix length",
                })?,
                node_address: network.node_address,
            };
            ensure_bridge(&self.node, &config).await?;
        }
        // Bridges of networks this node stopped serving, including those a
        // previous daemon left behind.
        let local_bridges: BTreeSet<String> = state_local_bridges(&state.local);
        let routes = host_routes(&wanted, &peers, &state.directory);
        let overlay = state.overlay.as_mut().expect("checked above");
        let wanted_bridges: BTreeSet<String> = wanted.keys().map(|id| bridge_name(id)).collect();
        for link in self.node.links().await? {
            if link.name.starts_with(BRIDGE_PREFIX) && !wanted_bridges.contains(&link.name) && !local_bridges.contains(&link.name) {
                remove_bridge(&self.node, &link.name).await?;
            }
        }

        let peer_configs: Vec<PeerConfig> = peers
            .iter()
            .map(|p| PeerConfig { public_key: p.public_key, endpoint: p.endpoint, allowed_ips: p.allowed_ips.clone(), persistent_keepalive: None })
            .collect();
        overlay.device.set_peers(&peer_configs).await.map_err(|e| NetError::Wireguard(e.to_string()))?;
        sync_host_routes(&self.node, overlay.device.name(), &routes).await?;
        overlay.networks = wanted;
        overlay.peers = peers;
        Ok(())
    }

    /// Takes the managers' latest directory of services and named
    /// containers on this node's networks: what the embedded DNS answers
    /// and the load balancer forwards to.
    pub async fn set_directory(&self, directory: Directory) -> Result<()> {
        let mut state = self.state.lock().await;
        if state.directory == directory {
            return Ok(());
        }
        self.apply_directory(&mut state, directory).await?;
        self.apply_firewall(&mut state).await
    }

    /// The names and VIP routes of [`Self::set_directory`] (the firewall
    /// is the caller's).
    async fn apply_directory(&self, state: &mut State, directory: Directory) -> Result<()> {
        if state.directory == directory {
            return Ok(());
        }
        // Names first: the firewall after may take tens of milliseconds.
        self.dns.set_directory(&directory);
        let old = std::mem::replace(&mut state.directory, directory);
        // New or removed VIPs need their routes (the bridges answer ARP for them).
        if let Some(overlay) = &state.overlay {
            if load_balancer::vip_routes(&overlay.networks, &old) != load_balancer::vip_routes(&overlay.networks, &state.directory) {
                let routes = host_routes(&overlay.networks, &overlay.peers, &state.directory);
                sync_host_routes(&self.node, overlay.device.name(), &routes).await?;
            }
        }
        Ok(())
    }

    /// Stops serving the overlay: the device, the overlay bridges, their
    /// routes and rules go (the node left the swarm).
    pub async fn leave_overlay(&self) -> Result<()> {
        let mut state = self.state.lock().await;
        let Some(overlay) = state.overlay.take() else { return Ok(()) };
        for id in overlay.networks.keys() {
            remove_bridge(&self.node, &bridge_name(id)).await?;
        }
        WireguardDevice::remove(overlay.device.name()).await.map_err(|e| NetError::Wireguard(e.to_string()))?;
        self.publish_ready(&state);
        self.apply_firewall(&mut state).await
    }

    /// Makes this node's bridge networks and published ports match `local`.
    pub async fn set_local(&self, local: LocalNetworks) -> Result<()> {
        let mut state = self.state.lock().await;
        for network in &local.networks {
            let config = BridgeConfig {
                name: network.bridge.clone(),
                mtu: network.mtu,
                gateway: Ipv4Net::new(network.gateway, network.subnet.prefix_len()).map_err(|_| NetError::InvalidValue {
                    what: "subnet",
                    value: network.subnet.to_string(),
                    rule: "the prefix must be a valid IPv4 prefix length",
                })?,
                node_address: None,
            };
            ensure_bridge(&self.node, &config).await?;
        }
        for gone in state.local.networks.iter().filter(|old| !local.networks.iter().any(|n| n.bridge == old.bridge)) {
            remove_bridge(&self.node, &gone.bridge).await?;
        }
        state.local = local;
        self.publish_ready(&state);
        self.apply_firewall(&mut state).await
    }

    fn publish_ready(&self, state: &State) {
        let mut ready = BTreeMap::new();
        if let Some(overlay) = &state.overlay {
            let derived_mtu = overlay.underlay_mtu.saturating_sub(WIREGUARD_OVERHEAD);
            for network in overlay.networks.values() {
                ready.insert(
                    network.id.clone(),
                    ReadyNetwork {
                        bridge: bridge_name(&network.id),
                        subnet: network.subnet,
                        gateway: network.gateway,
                        mtu: network.mtu.unwrap_or(derived_mtu),
                    },
                );
            }
        }
        for network in &state.local.networks {
            ready.insert(
                network.id.clone(),
                ReadyNetwork { bridge: network.bridge.clone(), subnet: network.subnet, gateway: network.gateway, mtu: network.mtu },
            );
        }
        self.ready.send_replace(ready);
        let overlay = state.overlay.iter().flat_map(|o| o.networks.values()).map(|n| NetworkInfo { id: n.id.clone(), subnet: n.subnet, internal: n.internal });
        let local = state.local.networks.iter().map(|n| NetworkInfo { id: n.id.clone(), subnet: n.subnet, internal: n.internal });
        self.dns.set_networks(overlay.chain(local).collect());
    }

    async fn apply_firewall(&self, state: &mut State) -> Result<()> {
        let mut model = FirewallModel::default();
        if let Some(overlay) = &state.overlay {
            model.overlay_device = Some(overlay.device.name().to_string());
            model.networks.extend(overlay.networks.values().map(|n| NetworkRules {
                bridge: bridge_name(&n.id),
                subnet: n.subnet,
                internal: n.internal,
                overlay: true,
            }));
        }
        model.networks.extend(state.local.networks.iter().map(|n| NetworkRules {
            bridge: n.bridge.clone(),
            subnet: n.subnet,
            internal: n.internal,
            overlay: false,
        }));
        model.published = state.local.published.clone();
        if let Some(overlay) = &state.overlay {
            let view = NodeView { networks: &overlay.networks, peers: &overlay.peers, local_published: &state.local.published };
            let services = load_balancer::service_rules(&view, &state.directory);
            (model.vips, model.service_ports, model.mesh_source) = (services.vips, services.service_ports, services.mesh_source);
        }
        if state.firewall.as_ref() == Some(&model) {
            return Ok(());
        }
        let stale = state.firewall.as_ref().map(|old| load_balancer::stale_entries(old, &model)).unwrap_or_default();
        let firewall = self.firewall.clone();
        let applied = model.clone();
        tokio::task::spawn_blocking(move || {
            firewall.apply(&applied)?;
            // After the new rules: no new connection can pick a gone
            // backend any more, so what is deleted stays deleted.
            if let Err(error) = crate::conntrack::delete_matching(&stale) {
                tracing::warn!(%error, "deleting conntrack entries of backends that left");
            }
            Ok::<_, crate::firewall::FirewallError>(())
        })
        .await
        .map_err(|e| NetError::Firewall(format!("the firewall task failed: {e}")))?
        .map_err(|e| NetError::Firewall(e.to_string()))?;
        state.firewall = Some(model);
        Ok(())
    }

    /// Gives sandbox `id` (a task or container) its endpoints, in order:
    /// the first network carries the default route. Waits, bounded, for a
    /// network this node does not serve yet. Returns the namespace for the
    /// container to join. Calling it again repairs and changes nothing else.
    pub async fn attach(&self, id: &str, attachments: &[Attachment]) -> Result<PathBuf> {
        let mut ready = self.ready.subscribe();
        let wanted: Vec<&str> = attachments.iter().map(|a| a.network_id.as_str()).collect();
        let networks = tokio::time::timeout(NETWORK_READY_TIMEOUT, async {
            loop {
                {
                    let current = ready.borrow_and_update();
                    if wanted.iter().all(|id| current.contains_key(*id)) {
                        return Ok(current.clone());
                    }
                }
                if ready.changed().await.is_err() {
                    return Err(NetError::NotReady("the data plane is shutting down".into()));
                }
            }
        })
        .await
        .map_err(|_| {
            let missing: Vec<&str> = wanted.iter().copied().filter(|id| !ready.borrow().contains_key(*id)).collect();
            NetError::NotReady(format!(
                "network {} is not served on this node after {}s; check that the node is in the swarm and its session with the managers is up",
                missing.join(", "),
                NETWORK_READY_TIMEOUT.as_secs()
            ))
        })??;
        let path = self.sandboxes.create(id).await?;
        for (position, attachment) in attachments.iter().enumerate() {
            let network = &networks[&attachment.network_id];
            let address = Ipv4Net::new(attachment.address, network.subnet.prefix_len()).map_err(|_| NetError::InvalidValue {
                what: "address",
                value: attachment.address.to_string(),
                rule: "it must lie in the network's subnet",
            })?;
            let config = EndpointConfig {
                network_id: attachment.network_id.clone(),
                bridge: network.bridge.clone(),
                address,
                mtu: network.mtu,
                default_gateway: (position == 0).then_some(network.gateway),
            };
            self.sandboxes.attach(id, &config).await?;
        }
        // Endpoints of networks no longer wanted (a repair after a change).
        for endpoint in self.sandboxes.endpoints(id).await? {
            if !wanted.contains(&endpoint.network_id.as_str()) {
                self.sandboxes.detach(id, &endpoint.network_id).await?;
            }
        }
        self.dns.serve(id, &path, wanted.iter().map(|id| id.to_string()).collect()).await?;
        Ok(path)
    }

    /// Removes one endpoint of sandbox `id` (`network disconnect`).
    pub async fn detach(&self, id: &str, network_id: &str) -> Result<()> {
        self.sandboxes.detach(id, network_id).await?;
        // Its names go with the network.
        let remaining = self.sandboxes.endpoints(id).await?.into_iter().map(|e| e.network_id).collect();
        self.dns.serve(id, &self.sandboxes.path(id), remaining).await
    }

    /// Removes sandbox `id` and its endpoints; missing is fine.
    pub async fn release(&self, id: &str) -> Result<()> {
        self.dns.stop(id).await?;
        self.sandboxes.destroy(id).await
    }

    /// The ids of every sandbox on this node, for reconciling after a restart.
    pub async fn sandbox_ids(&self) -> Result<Vec<String>> {
        Ok(self.sandboxes.list().await?.into_iter().map(|s| s.id).collect())
    }

    /// A route of this host that overlaps `pool`, as `ip route` prints it:
    /// networks carved from such a pool would be unreachable or would
    /// hijack the host's traffic. Routes of the node's own networks do
    /// not count.
    pub async fn route_overlapping(&self, pool: Ipv4Net) -> Result<Option<String>> {
        let own = |device: &str| device.starts_with(BRIDGE_PREFIX) || device.starts_with("wgs-") || device == crate::bridge::DEFAULT_BRIDGE;
        Ok(self
            .node
            .routes()
            .await?
            .into_iter()
            .filter(|r| !r.is_default() && !own(&r.device))
            .find(|r| r.destination.contains(&pool.network()) || pool.contains(&r.destination.network()))
            .map(|r| r.to_string()))
    }

    /// The public key of the node's device, when it has one.
    pub async fn public_key(&self) -> Option<PublicKey> {
        self.state.lock().await.overlay.as_ref().map(|o| o.device.public_key())
    }
}

/// /32 routes over the overlay device: every remote address the peers
/// carry, and the VIPs of the node's networks.
fn host_routes(networks: &BTreeMap<String, OverlayNetwork>, peers: &[OverlayPeer], directory: &Directory) -> Vec<HostRoute> {
    let mut routes: Vec<HostRoute> = peers
        .iter()
        .flat_map(|p| p.allowed_ips.iter())
        .filter(|ip| ip.prefix_len() == 32)
        .map(|ip| HostRoute {
            address: ip.addr(),
            source: networks.values().find(|n| n.subnet.contains(&ip.addr())).and_then(|n| n.node_address),
        })
        .collect();
    routes.extend(load_balancer::vip_routes(networks, directory));
    routes
}

fn state_local_bridges(local: &LocalNetworks) -> BTreeSet<String> {
    local.networks.iter().map(|n| n.bridge.clone()).collect()
}
