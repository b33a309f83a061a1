//! The encrypted overlay network (WireGuard mesh, bridges, VIPs, DNS). Built in a later issue; nothing here yet.

pub mod wireguard;
pub mod error;
pub mod netlink;
pub mod netns;
pub mod bridge;
pub mod routes;
pub mod sandbox;
pub mod firewall;
pub mod dataplane;
pub mod local;
pub mod directory;
pub mod load_balancer;
pub mod metrics;
pub mod conntrack;
pub mod dns;
