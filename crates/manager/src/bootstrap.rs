//! A new swarm's first objects: the cluster (with its CA and join-token
//! secrets) and the node that ran `swarm init`.

use std::net::SocketAddr;
use std::time::Duration;

use shoal_proto::identity::{generate_key_and_csr, Role};
use shoal_proto::join_token::JoinToken;
use shoal_proto::tls::Credentials;

use crate::ca::CertificateAuthority;
use crate::errors::ManagerError;
use crate::store::{
    new_object_id, now_ms, Availability, Cluster, Meta, Network, NetworkDriver, NetworkSpec, Node, NodeRole, NodeStatus, Object,
    Op, Transaction,
};

/// docker's name for the routing mesh's network.
pub const INGRESS_NETWORK: &str = "ingress";

pub const DEFAULT_HEARTBEAT_PERIOD_MS: u64 = 1_000;
pub const DEFAULT_CERT_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);

pub struct NewSwarm {
    pub cluster_id: String,
    pub credentials: Credentials,
    /// The transaction that writes the cluster and the first node.
    pub transaction: Transaction,
}

pub struct NewSwarmOptions<'a> {
    pub node_id: &'a str,
    pub hostname: &'a str,
    pub advertise: SocketAddr,
    pub heartbeat_period_ms: u64,
    pub cert_lifetime: Duration,
    pub task_history_limit: u64,
    pub orphan_grace_ms: u64,
    /// Where networks get their subnets, and the prefix length of each.
    pub address_pool: ipnet::Ipv4Net,
    pub pool_mask_length: u8,
    /// `swarm init --autolock`: the swarm's unlock key.
    pub autolock_key: Option<crate::autolock::UnlockKey>,
}

/// Docker's default: five ended tasks per slot stay visible in `service ps`.
pub const DEFAULT_TASK_HISTORY_LIMIT: u64 = 5;

/// Long enough to ride out a blip of missed heartbeats after the node is
/// already marked down, short enough to converge well within seconds.
pub const DEFAULT_ORPHAN_GRACE_MS: u64 = 500;

/// Beyond an hour a lost node's tasks would in effect never move.
pub const MAX_ORPHAN_GRACE_MS: u64 = 3_600_000;

/// The cluster's address pool from `swarm init --default-addr-pool` and
/// `--default-addr-pool-mask-length` (empty / 0: 100.64.0.0/10 in /24s).
pub fn address_pool(pool: &str, mask_length: u32) -> Result<(ipnet::Ipv4Net, u8), ManagerError> {
    let invalid = ManagerError::InvalidArgument;
    let pool_text = if pool.trim().is_empty() { crate::store::DEFAULT_ADDRESS_POOL } else { pool.trim() };
    let parsed: ipnet::Ipv4Net = pool_text.parse().map_err(|_| {
        invalid(format!("default address pool {pool_text:?} is not an IPv4 CIDR; write it as ADDRESS/PREFIX, e.g. 100.64.0.0/10"))
    })?;
    if parsed.trunc() != parsed {
        return Err(invalid(format!("default address pool {pool_text} has host bits set; did you mean {}?", parsed.trunc())));
    }
    let mask = match mask_length {
        0 => crate::store::DEFAULT_POOL_MASK_LENGTH.max(parsed.prefix_len()),
        n => u8::try_from(n).unwrap_or(u8::MAX),
    };
    if mask < parsed.prefix_len() || mask > crate::allocator::ipam::MAX_PREFIX_LENGTH {
        return Err(invalid(format!(
            "default address pool mask length {mask_length} does not fit pool {parsed}; use a length from {} to {}",
            parsed.prefix_len(),
            crate::allocator::ipam::MAX_PREFIX_LENGTH
        )));
    }
    Ok((parsed, mask))
}

/// Every node takes an address on the ingress network, so its subnet caps
/// the swarm's size: docker's /24 stops the routing mesh at 253 nodes.
/// Ours is a /16 (65,533 nodes) where the pool has room, else the pool.
const INGRESS_PREFIX_LENGTH: u8 = 16;

/// The routing mesh's network, as docker's `ingress`: the pool's first
/// subnet, sized for every node (see [`INGRESS_PREFIX_LENGTH`]).
fn ingress_network(pool: ipnet::Ipv4Net, mask_length: u8) -> Result<Network, ManagerError> {
    let mask_length = mask_length.min(INGRESS_PREFIX_LENGTH).max(pool.prefix_len());
    let subnet = crate::allocator::ipam::free_subnet(pool, mask_length, &[])
        .ok_or_else(|| ManagerError::InvalidArgument(format!("default address pool {pool} has no /{mask_length} for the ingress network")))?;
    let gateway = crate::allocator::ipam::default_gateway(subnet)
        .ok_or_else(|| ManagerError::InvalidArgument(format!("subnet {subnet} has no host addresses; use a shorter --default-addr-pool-mask-length")))?;
    Ok(Network {
        meta: Meta { id: new_object_id(), ..Default::default() },
        spec: NetworkSpec {
            name: INGRESS_NETWORK.into(),
            labels: Default::default(),
            driver: NetworkDriver::Overlay,
            attachable: false,
            internal: false,
            mtu: None,
            options: Default::default(),
            ingress: true,
        },
        subnet,
        gateway,
    })
}

/// Makes the root CA, the first manager's certificate and the objects to
/// commit once the one-member Raft cluster leads.
pub fn new_swarm(options: NewSwarmOptions<'_>) -> Result<NewSwarm, ManagerError> {
    let cluster_id = new_object_id();
    let ca = CertificateAuthority::generate(&cluster_id).map_err(|e| ManagerError::Internal(format!("creating the root CA: {e}")))?;
    let key_and_csr = generate_key_and_csr(options.node_id).map_err(|e| ManagerError::Internal(e.to_string()))?;
    let cert_pem = ca
        .sign_node_csr(
            &key_and_csr.csr_pem,
            options.node_id,
            Role::Manager,
            &cluster_id,
            options.cert_lifetime,
            &[options.advertise.ip()],
        )
        .map_err(|e| ManagerError::Internal(format!("signing the first manager certificate: {e}")))?;
    let cluster = Cluster {
        meta: Meta { id: cluster_id.clone(), ..Default::default() },
        ca_cert_pem: ca.cert_pem(),
        ca_key_pem: ca.key_pem(),
        worker_token_secret: JoinToken::generate_secret(),
        manager_token_secret: JoinToken::generate_secret(),
        heartbeat_period_ms: options.heartbeat_period_ms,
        task_history_limit: options.task_history_limit,
        orphan_grace_ms: options.orphan_grace_ms,
        cert_lifetime_secs: options.cert_lifetime.as_secs(),
        removed_nodes: Vec::new(),
        default_address_pool: options.address_pool,
        default_pool_mask_length: options.pool_mask_length,
        autolock_key: options.autolock_key,
    };
    let node = Node {
        meta: Meta { id: options.node_id.to_string(), ..Default::default() },
        hostname: options.hostname.to_string(),
        role: NodeRole::Manager,
        desired_role: NodeRole::Manager,
        availability: Availability::Active,
        labels: Default::default(),
        addr: options.advertise.ip().to_string(),
        manager_addr: options.advertise.to_string(),
        status: NodeStatus::Ready,
        manager_reachable: true,
        manager_locked: false,
        cert_expiry: now_ms() + options.cert_lifetime.as_millis() as u64,
        description: Default::default(),
        network_addresses: Default::default(),
        container_attachments: Vec::new(),
    };
    let ingress = ingress_network(options.address_pool, options.pool_mask_length)?;
    Ok(NewSwarm {
        cluster_id,
        credentials: Credentials { ca_pem: ca.cert_pem(), cert_pem, key_pem: key_and_csr.key_pem },
        transaction: Transaction::new(vec![
            Op::Create(Object::Cluster(cluster)),
            Op::Create(Object::Node(node)),
            Op::Create(Object::Network(ingress)),
        ]),
    })
}
