//! The typed objects the cluster store holds.
//!
//! Every object carries [`Meta`]: an id, a version (the Raft log index of the
//! write that last changed it, so versions are comparable across objects and
//! managers) and creation/update times stamped by the proposer, which keeps
//! replicas byte-for-byte identical when they apply the same entry.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use super::network::Network;
pub use super::service::{Service, Task};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub id: String,
    pub version: u64,
    /// Unix milliseconds.
    pub created_at: u64,
    pub updated_at: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    Cluster,
    Node,
    Service,
    Task,
    Network,
    Secret,
    Config,
    Stack,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Cluster => "cluster",
            Kind::Node => "node",
            Kind::Service => "service",
            Kind::Task => "task",
            Kind::Network => "network",
            Kind::Secret => "secret",
            Kind::Config => "config",
            Kind::Stack => "stack",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The single cluster object: identity, CA material and cluster-wide settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cluster {
    pub meta: Meta,
    pub ca_cert_pem: String,
    /// The root CA key lives in the replicated store so that whichever
    /// manager leads can issue certificates after a failover.
    pub ca_key_pem: String,
    pub worker_token_secret: String,
    pub manager_token_secret: String,
    pub heartbeat_period_ms: u64,
    /// Ended tasks kept per slot for `service ps` (docker's default, 5).
    pub task_history_limit: u64,
    /// How long a node must have been down before its tasks are replaced
    /// elsewhere: long enough to ride out a blip, short enough to converge.
    pub orphan_grace_ms: u64,
    pub cert_lifetime_secs: u64,
    /// Nodes removed from the cluster; their certificates stay valid
    /// cryptographically until expiry, so every RPC checks this list.
    pub removed_nodes: Vec<String>,
    /// Where networks without `--subnet` get theirs (`swarm init
    /// --default-addr-pool`), and the prefix length of each.
    pub default_address_pool: ipnet::Ipv4Net,
    pub default_pool_mask_length: u8,
    /// Autolock's key encryption key, when autolock is on: every manager
    /// seals its DEK file with it (see [`crate::autolock`]). Kept here so
    /// every manager learns of a change or rotation through the store,
    /// which is itself encrypted at rest.
    pub autolock_key: Option<crate::autolock::UnlockKey>,
}

impl Cluster {
    /// The cluster object's id is also the cluster id carried in every certificate.
    pub fn id(&self) -> &str {
        &self.meta.id
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeRole {
    Manager,
    Worker,
}

impl NodeRole {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::Manager => "manager",
            NodeRole::Worker => "worker",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Availability {
    Active,
    Pause,
    Drain,
}

impl Availability {
    pub fn as_str(self) -> &'static str {
        match self {
            Availability::Active => "active",
            Availability::Pause => "pause",
            Availability::Drain => "drain",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(Availability::Active),
            "pause" => Some(Availability::Pause),
            "drain" => Some(Availability::Drain),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeStatus {
    Unknown,
    Ready,
    Down,
}

impl NodeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Unknown => "unknown",
            NodeStatus::Ready => "ready",
            NodeStatus::Down => "down",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub meta: Meta,
    pub hostname: String,
    /// The role the node's current certificate carries.
    pub role: NodeRole,
    /// The role an operator asked for; the node converges on it by renewing
    /// its certificate and joining or leaving Raft.
    pub desired_role: NodeRole,
    pub availability: Availability,
    pub labels: BTreeMap<String, String>,
    /// The address the node advertises (ip).
    pub addr: String,
    /// host:port of the manager endpoint; empty for workers.
    pub manager_addr: String,
    pub status: NodeStatus,
    /// Whether the leader hears from this manager over Raft; meaningless for
    /// workers. Kept in the store so every manager shows the same `node ls`.
    pub manager_reachable: bool,
    /// Whether this manager, out of Raft, says it is locked (autolock)
    /// and waits for `swarm unlock`; see [`crate::lock_beacon`].
    #[serde(default)]
    pub manager_locked: bool,
    /// Unix milliseconds.
    pub cert_expiry: u64,
    /// What the node reports about itself on its session; the scheduler's
    /// input for resources, platform and `engine.labels` constraints.
    pub description: NodeDescription,
    /// The node's own address on each network it serves (network id ->
    /// address), handed out by the allocator while the node runs tasks
    /// there: the source of traffic the node itself sends on the network.
    pub network_addresses: BTreeMap<String, std::net::Ipv4Addr>,
    /// The node's standalone containers on attachable overlays.
    pub container_attachments: Vec<super::network::ContainerAttachment>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeDescription {
    pub nano_cpus: u64,
    pub memory_bytes: u64,
    /// `linux`, `amd64`: as in image platforms.
    pub os: String,
    pub arch: String,
    /// `shoal daemon --label K=V`.
    pub engine_labels: BTreeMap<String, String>,
    /// The node's WireGuard public key (base64, as `wg` prints it); its
    /// private key never leaves the node. Empty until the node says.
    pub wireguard_public_key: String,
    /// UDP port of the node's WireGuard endpoint, on its advertise address.
    pub data_path_port: u16,
}

/// Its Debug form leaves the value out, so no log line can print it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secret {
    pub meta: Meta,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub data: Vec<u8>,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secret")
            .field("meta", &self.meta)
            .field("name", &self.name)
            .field("labels", &self.labels)
            .field("data", &shoal_proto::redacted::Redacted(self.data.len()))
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    pub meta: Meta,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub data: Vec<u8>,
}

/// A stack deployed from compose files (`stack deploy`): its services,
/// networks, secrets and configs are ordinary objects labelled with its
/// name; this records which revision of the file they came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stack {
    pub meta: Meta,
    pub name: String,
    /// Bumped by each deploy that changed something.
    pub revision: u64,
    /// sha256 of the merged, interpolated file of that revision.
    pub file_hash: String,
    /// Oldest first, at most STACK_HISTORY entries.
    pub history: Vec<StackRevision>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackRevision {
    pub revision: u64,
    pub file_hash: String,
    /// Unix milliseconds.
    pub deployed_at: u64,
}

/// How many revisions a stack remembers.
pub const STACK_HISTORY: usize = 10;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Object {
    Cluster(Cluster),
    Node(Node),
    Service(Service),
    Task(Task),
    Network(Network),
    Secret(Secret),
    Config(Config),
    Stack(Stack),
}

impl Object {
    pub fn kind(&self) -> Kind {
        match self {
            Object::Cluster(_) => Kind::Cluster,
            Object::Node(_) => Kind::Node,
            Object::Service(_) => Kind::Service,
            Object::Task(_) => Kind::Task,
            Object::Network(_) => Kind::Network,
            Object::Secret(_) => Kind::Secret,
            Object::Config(_) => Kind::Config,
            Object::Stack(_) => Kind::Stack,
        }
    }

    pub fn meta(&self) -> &Meta {
        match self {
            Object::Cluster(o) => &o.meta,
            Object::Node(o) => &o.meta,
            Object::Service(o) => &o.meta,
            Object::Task(o) => &o.meta,
            Object::Network(o) => &o.meta,
            Object::Secret(o) => &o.meta,
            Object::Config(o) => &o.meta,
            Object::Stack(o) => &o.meta,
        }
    }

    pub fn meta_mut(&mut self) -> &mut Meta {
        match self {
            Object::Cluster(o) => &mut o.meta,
            Object::Node(o) => &mut o.meta,
            Object::Service(o) => &mut o.meta,
            Object::Task(o) => &mut o.meta,
            Object::Network(o) => &mut o.meta,
            Object::Secret(o) => &mut o.meta,
            Object::Config(o) => &mut o.meta,
            Object::Stack(o) => &mut o.meta,
        }
    }

    pub fn id(&self) -> &str {
        &self.meta().id
    }

    /// The user-facing name, for kinds whose names are unique.
    pub fn name(&self) -> Option<&str> {
        match self {
            Object::Service(o) => Some(&o.spec.name),
            Object::Network(o) => Some(&o.spec.name),
            Object::Secret(o) => Some(&o.name),
            Object::Config(o) => Some(&o.name),
            Object::Stack(o) => Some(&o.name),
            Object::Cluster(_) | Object::Node(_) | Object::Task(_) => None,
        }
    }
}

/// Lets typed code pull its own kind out of an [`Object`] without matching.
pub trait Typed: Sized + Clone {
    const KIND: Kind;
    fn from_object(object: &Object) -> Option<&Self>;
    fn into_object(self) -> Object;
}

macro_rules! typed {
    ($t:ident) => {
        impl Typed for $t {
            const KIND: Kind = Kind::$t;
            fn from_object(object: &Object) -> Option<&Self> {
                match object {
                    Object::$t(o) => Some(o),
                    _ => None,
                }
            }
            fn into_object(self) -> Object {
                Object::$t(self)
            }
        }
    };
}
typed!(Cluster);
typed!(Node);
typed!(Service);
typed!(Task);
typed!(Network);
typed!(Secret);
typed!(Config);
typed!(Stack);

/// A random id in docker's style: 25 characters of [a-z0-9].
pub fn new_object_id() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    (0..25).map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char).collect()
}

/// Node ids double as Raft node ids, which openraft wants as integers; the
/// string form is that integer in 16 hex digits.
pub fn new_node_id() -> (u64, String) {
    let raw: u64 = loop {
        let v = rand::random::<u64>();
        if v != 0 {
            break v;
        }
    };
    (raw, node_id_string(raw))
}

pub fn node_id_string(raft_id: u64) -> String {
    format!("{raft_id:016x}")
}

pub fn raft_id_of(node_id: &str) -> Option<u64> {
    if node_id.len() != 16 {
        return None;
    }
    u64::from_str_radix(node_id, 16).ok()
}
