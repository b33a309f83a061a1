//! Errors of the firewall and the port relay. Each message is one sentence
//! that names the value at fault and says what to do.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};

use ipnet::Ipv4Net;

use super::model::PortProtocol;
use crate::error::NetError;

#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("{what} name {name:?} is invalid: use 1 to 15 letters, digits, '-', '_' or '.'")]
    InvalidInterfaceName { what: &'static str, name: String },

    #[error("bridge {bridge} is listed for two networks; give each network its own bridge")]
    DuplicateBridge { bridge: String },

    #[error(
        "overlay device {device} is also a network bridge; use a separate WireGuard interface"
    )]
    OverlayDeviceIsBridge { device: String },

    #[error("the overlay network on bridge {bridge} needs an overlay device; set overlay_device to the WireGuard interface")]
    MissingOverlayDevice { bridge: String },

    #[error("subnet {subnet} of bridge {bridge} overlaps subnet {other_subnet} of bridge {other_bridge}; networks on one node need disjoint subnets")]
    OverlappingSubnets {
        bridge: String,
        subnet: Ipv4Net,
        other_bridge: String,
        other_subnet: Ipv4Net,
    },

    #[error("published port {port} uses port 0; choose a port from 1 to 65535")]
    ZeroPort { port: String },

    #[error("published port {port} targets bridge {bridge}, which is not a network of this node; attach the container to that network first")]
    UnknownPublishBridge { port: String, bridge: String },

    #[error("published port {port} targets the internal network on bridge {bridge}, which has no way in; publish it on a non-internal network")]
    PublishOnInternal { port: String, bridge: String },

    #[error("published port {port} points outside subnet {subnet} of bridge {bridge}; use the container's address on that network")]
    ContainerOutsideSubnet {
        port: String,
        bridge: String,
        subnet: Ipv4Net,
    },

    #[error("published port {second} clashes with {first}; a host address and port can be published only once")]
    DuplicatePublishedPort { first: String, second: String },

    #[error("{vip} is on bridge {bridge}, which is not a network of this node; balance VIPs only on the node's networks")]
    UnknownVipBridge { vip: String, bridge: String },

    #[error("{vip} uses address {address}, outside its network's subnet {subnet}; VIPs and their backends must be host addresses of the network")]
    VipAddressOutsideSubnet {
        vip: String,
        address: Ipv4Addr,
        subnet: Ipv4Net,
    },

    #[error("{vip} is listed twice; give each VIP one entry with all its backends")]
    DuplicateVip { vip: String },

    #[error("{port} has backend {backend}, which is on none of this node's non-internal networks; forward only to tasks on the node's networks")]
    BackendOutsideNetworks { port: String, backend: Ipv4Addr },

    #[error("{port} is listed twice; a node publishes a port for one service only")]
    DuplicateServicePort { port: String },

    #[error("{port} is taken on this node by the container port {local}; publish the service on another port or remove the container's")]
    ServicePortTaken { port: String, local: String },

    #[error("routing-mesh source {address} is not an address of an overlay network with subnet {subnet}; use the node's address on the ingress network")]
    BadMeshSource { address: Ipv4Addr, subnet: Ipv4Net },

    /// The namespace could not be entered (missing, or not a namespace).
    #[error(transparent)]
    Netns(#[from] NetError),

    #[error("nft failed while {action} in {netns}: {detail}; check that the nftables package is installed and that Shoal runs as root")]
    Nft {
        action: &'static str,
        netns: String,
        detail: String,
    },

    #[error("the ip filter table in {netns} could not be read ({detail}); check it with `nft -j list table ip filter`")]
    ForeignTable { netns: String, detail: String },

    #[error("could not set net.ipv4.ip_forward to 1 in {netns}: {source}; Shoal must run as root")]
    IpForward {
        netns: String,
        #[source]
        source: io::Error,
    },

    #[error("host port {addr}/{protocol} is already in use on this node; choose another host port or stop what is using it")]
    PortInUse {
        addr: SocketAddr,
        protocol: PortProtocol,
    },

    #[error("could not bind host port {addr}/{protocol}: {source}; use an address of this node and a free port")]
    PortBind {
        addr: SocketAddr,
        protocol: PortProtocol,
        #[source]
        source: io::Error,
    },
}
