//! Swarm networks and the addresses handed out on them.
//!
//! A [`Network`] is an overlay shared by the nodes whose tasks attach to
//! it. Its subnet comes from the cluster's address pool unless the user
//! gave one. Addresses live on the objects that hold them: a task's
//! [`NetworkAttachment`]s, a node's address on each network it serves, a
//! service's VIPs. The [`AddressIndex`] over them is what makes "no
//! address is ever handed out twice" a property of the store itself: the
//! state machine refuses a write that would give an address a second
//! holder, whoever proposed it (an old leader included).

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::objects::Meta;

/// The cluster's default address pool: the shared address space of
/// RFC 6598, carved into /24s, one per network.
pub const DEFAULT_ADDRESS_POOL: &str = "100.64.0.0/10";
pub const DEFAULT_POOL_MASK_LENGTH: u8 = 24;
/// IPv6 requires it, and below it fragmentation of ordinary traffic starts.
pub const MIN_MTU: u32 = 1280;
/// What a veth or bridge accepts.
pub const MAX_MTU: u32 = 65_535;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NetworkDriver {
    /// Spans the swarm's nodes; traffic between nodes always goes through
    /// WireGuard (there is no plaintext mode).
    Overlay,
}

impl NetworkDriver {
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkDriver::Overlay => "overlay",
        }
    }
}

/// What the user asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSpec {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub driver: NetworkDriver,
    /// `shoal run --network` may attach standalone containers.
    pub attachable: bool,
    /// No way out of the network: no route to anything outside its subnet.
    pub internal: bool,
    /// `-o mtu=N`; `None`: the underlay's MTU less WireGuard's overhead,
    /// worked out on each node.
    pub mtu: Option<u32>,
    /// Driver options as given (`-o encrypted` is accepted and changes
    /// nothing: overlay traffic is always encrypted).
    pub options: BTreeMap<String, String>,
    /// The routing mesh's network, made at `swarm init`: every node serves
    /// it, and services publishing ingress ports join it.
    pub ingress: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub meta: Meta,
    pub spec: NetworkSpec,
    /// Given with `--subnet` or taken from the cluster's address pool.
    pub subnet: Ipv4Net,
    /// The tasks' default route; on every node serving the network, the
    /// network's bridge carries it.
    pub gateway: Ipv4Addr,
}

impl Network {
    /// Whether `address` may be handed to a task, a node or a VIP: inside
    /// the subnet, and neither its network, broadcast nor gateway address.
    pub fn is_assignable(&self, address: Ipv4Addr) -> bool {
        self.subnet.contains(&address)
            && address != self.subnet.network()
            && address != self.subnet.broadcast()
            && address != self.gateway
    }
}

/// A network a task should join, as the service spec names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NetworkAttachmentSpec {
    pub network_id: String,
    /// Other names the task answers to on this network (`--network
    /// name=N,alias=A`), resolved by the embedded DNS.
    pub aliases: Vec<String>,
}

/// A network a task has joined, with the address it got there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkAttachment {
    pub network_id: String,
    pub address: Ipv4Addr,
    pub aliases: Vec<String>,
}

/// A service's virtual IP on one of its networks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vip {
    pub network_id: String,
    pub address: Ipv4Addr,
}

/// A standalone container (`shoal run --network N` on a node) on an
/// attachable overlay: the node asked the managers for its address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerAttachment {
    /// The container's network sandbox on its node (known before the
    /// container exists, so it names the attachment).
    pub sandbox_id: String,
    /// For people (`network inspect`).
    pub container_name: String,
    pub network_id: String,
    pub address: Ipv4Addr,
    pub aliases: Vec<String>,
}

/// Who holds an address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AddressHolder {
    Task(String),
    Node(String),
    Service(String),
    /// A standalone container: its node and sandbox.
    Container { node_id: String, sandbox_id: String },
}

impl std::fmt::Display for AddressHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AddressHolder::Task(id) => write!(f, "task {id}"),
            AddressHolder::Node(id) => write!(f, "node {id}"),
            AddressHolder::Service(id) => write!(f, "service {id}"),
            AddressHolder::Container { node_id, sandbox_id } => write!(f, "container sandbox {sandbox_id} on node {node_id}"),
        }
    }
}

/// One address held on one network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Claim {
    pub holder: AddressHolder,
    pub network_id: String,
    pub address: Ipv4Addr,
}

/// Every address in use, per network, kept current by every write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressIndex {
    by_network: HashMap<String, BTreeMap<Ipv4Addr, AddressHolder>>,
}

impl AddressIndex {
    pub fn holder(&self, network_id: &str, address: Ipv4Addr) -> Option<&AddressHolder> {
        self.by_network.get(network_id)?.get(&address)
    }

    /// The addresses in use on `network_id`, lowest first.
    pub fn used(&self, network_id: &str) -> impl Iterator<Item = (&Ipv4Addr, &AddressHolder)> {
        self.by_network.get(network_id).into_iter().flatten()
    }

    pub fn count(&self, network_id: &str) -> usize {
        self.by_network.get(network_id).map_or(0, BTreeMap::len)
    }

    pub(crate) fn add(&mut self, claims: Vec<Claim>) {
        for Claim { holder, network_id, address } in claims {
            self.by_network.entry(network_id).or_default().insert(address, holder);
        }
    }

    /// Releases what the claims' holders held; an address since taken by
    /// another holder is left alone.
    pub(crate) fn remove(&mut self, claims: Vec<Claim>) {
        for Claim { holder, network_id, address } in claims {
            if let Some(addresses) = self.by_network.get_mut(&network_id) {
                if addresses.get(&address) == Some(&holder) {
                    addresses.remove(&address);
                }
                if addresses.is_empty() {
                    self.by_network.remove(&network_id);
                }
            }
        }
    }
}
