//! Errors of the node's bridge networks. Each message is one sentence that
//! names the value at fault and says what to do; [`LocalNetError::kind`]
//! tells the API edge which status code it is.

use std::path::PathBuf;

use ipnet::Ipv4Net;

use crate::error::NetError;
use crate::firewall::FirewallError;

/// How a caller should treat an error (the daemon maps it to gRPC codes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request itself is wrong (bad CIDR, unknown option, ...).
    InvalidArgument,
    NotFound,
    AlreadyExists,
    /// Valid, but the node's current state refuses it (in use, port taken).
    FailedPrecondition,
    /// The node could not do it (kernel, disk).
    Internal,
}

#[derive(Debug, thiserror::Error)]
pub enum LocalNetError {
    #[error("network name {name:?} is invalid: use letters, digits, '_', '.' or '-', starting with a letter or digit, at most 64 characters")]
    InvalidName { name: String },

    #[error("network name {name:?} is reserved; choose another name")]
    ReservedName { name: String },

    #[error("a network named {name:?} already exists on this node; choose another name or remove it first")]
    DuplicateName { name: String },

    #[error(
        "subnet {value:?} is not an IPv4 CIDR; write it as ADDRESS/PREFIX, e.g. 100.80.0.0/24"
    )]
    InvalidSubnet { value: String },

    #[error("subnet {subnet} has host bits set; use {network}")]
    HostBitsSet { subnet: Ipv4Net, network: Ipv4Net },

    #[error("subnet {subnet} leaves no room for containers; use a prefix of /30 or shorter")]
    SubnetTooSmall { subnet: Ipv4Net },

    #[error("gateway {value:?} is not an IPv4 address; give one inside the subnet, e.g. its first address")]
    InvalidGateway { value: String },

    #[error("--gateway {gateway} needs --subnet; give the subnet it belongs to")]
    GatewayWithoutSubnet { gateway: String },

    #[error("gateway {gateway} is outside subnet {subnet}; choose a host address inside it")]
    GatewayOutsideSubnet { gateway: String, subnet: Ipv4Net },

    #[error("subnet {subnet} overlaps subnet {other_subnet} of network {other}; choose a subnet that does not")]
    OverlapsNetwork {
        subnet: Ipv4Net,
        other: String,
        other_subnet: Ipv4Net,
    },

    #[error("subnet {subnet} overlaps route {route} of this host; choose a subnet this host does not route elsewhere")]
    OverlapsHostRoute { subnet: Ipv4Net, route: String },

    #[error("the address pool {pool} has no /{size} left that overlaps neither another network nor a route of this host; remove a network or start the daemon with another --default-address-pool")]
    PoolExhausted { pool: Ipv4Net, size: u8 },

    #[error("address pool {value:?} is invalid: {rule}")]
    InvalidPool { value: String, rule: &'static str },

    #[error("option {option:?} is not supported by bridge networks; use mtu=N (1280 to 65535)")]
    UnknownOption { option: String },

    #[error("MTU {value:?} is invalid: use a number from 1280 to 65535")]
    InvalidMtu { value: String },

    #[error("network {reference:?} does not exist on this node; see `shoal network ls`")]
    NotFound { reference: String },

    #[error("network {name} is this node's default network and cannot be removed")]
    DefaultNetwork { name: String },

    #[error("network {name} is in use by {containers}; remove or disconnect them first")]
    InUse { name: String, containers: String },

    #[error("network {network} is named twice for one container; name each network once")]
    DuplicateAttachment { network: String },

    #[error("network {network} has no free address left in {subnet}; remove a container from it or use a network with a larger subnet")]
    SubnetFull { network: String, subnet: Ipv4Net },

    #[error("network {network} is internal, so it cannot publish port {port}; publish on a non-internal network listed first")]
    PublishOnInternal { network: String, port: String },

    #[error("port {port} cannot be published: the container is on no bridge network; add one with --network (e.g. --network bridge)")]
    PublishWithoutBridge { port: String },

    #[error("container {container} is already connected to network {network}")]
    AlreadyConnected { container: String, network: String },

    #[error("container {container} is not connected to network {network}")]
    NotConnected { container: String, network: String },

    #[error("container {container} has no network sandbox (it runs with --network none or is a swarm task); only containers started on a bridge network can be connected")]
    NoSandbox { container: String },

    #[error("the node's bridge networks are unavailable: {reason}")]
    Unavailable { reason: String },

    #[error("network alias {alias:?} is invalid: use letters, digits, '_', '.' or '-', at most 64 characters")]
    InvalidAlias { alias: String },

    #[error("could not {action} {}: {source}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{} is not a valid local network state file ({detail}); move it away to start with no user networks", .path.display())]
    CorruptState { path: PathBuf, detail: String },

    /// A bug on our side, said plainly.
    #[error("{detail}")]
    Internal { detail: String },

    /// A published port that cannot be bound (in use, not an address of the node).
    #[error(transparent)]
    Port(FirewallError),

    /// The kernel side (bridges, sandboxes, firewall) failed.
    #[error(transparent)]
    Dataplane(#[from] NetError),
}

impl LocalNetError {
    pub fn kind(&self) -> ErrorKind {
        use LocalNetError::*;
        match self {
            InvalidName { .. }
            | ReservedName { .. }
            | InvalidSubnet { .. }
            | HostBitsSet { .. }
            | SubnetTooSmall { .. }
            | InvalidGateway { .. }
            | GatewayWithoutSubnet { .. }
            | GatewayOutsideSubnet { .. }
            | OverlapsNetwork { .. }
            | OverlapsHostRoute { .. }
            | InvalidPool { .. }
            | UnknownOption { .. }
            | InvalidMtu { .. }
            | DuplicateAttachment { .. }
            | PublishOnInternal { .. }
            | PublishWithoutBridge { .. }
            | InvalidAlias { .. } => ErrorKind::InvalidArgument,
            NotFound { .. } => ErrorKind::NotFound,
            DuplicateName { .. } | AlreadyConnected { .. } => ErrorKind::AlreadyExists,
            DefaultNetwork { .. }
            | InUse { .. }
            | SubnetFull { .. }
            | PoolExhausted { .. }
            | NotConnected { .. }
            | NoSandbox { .. }
            | Unavailable { .. } => ErrorKind::FailedPrecondition,
            Port(FirewallError::PortInUse { .. }) => ErrorKind::FailedPrecondition,
            Port(_) => ErrorKind::InvalidArgument,
            Io { .. } | CorruptState { .. } | Internal { .. } | Dataplane(_) => ErrorKind::Internal,
        }
    }
}

pub type Result<T, E = LocalNetError> = std::result::Result<T, E>;
