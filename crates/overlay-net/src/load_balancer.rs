//! The node's load balancer: what VIPs and published service ports it
//! programs, as a pure function of the managers' directory and the overlay
//! it serves, and what it cleans up when a backend leaves.
//!
//! - A VIP (vip-mode service, on a network the node serves other than
//!   ingress) balances over the service's running tasks on that network,
//!   on any node. The node routes the VIP to the overlay device so its
//!   bridge answers ARP for it; the firewall DNATs before routing.
//! - An ingress-mode published port is programmed on every node, to the
//!   tasks' addresses on the ingress network wherever they run, leaving
//!   from the node's own ingress address (the routing mesh).
//! - A host-mode published port is programmed only where a task of the
//!   service runs, to that node's own tasks, on the task's first network
//!   (where its default route is, so replies come back the same way).
//!
//! Backends are the directory's running tasks; when health checks arrive
//! the directory will list only healthy ones and nothing here changes.
//! When a backend leaves, its conntrack entries for the VIP or port go too
//! (see [`crate::conntrack`]), so no packet follows a dead task.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use crate::bridge::bridge_name;
use crate::conntrack::{EntryFilter, PROTO_TCP, PROTO_UDP};
use crate::dataplane::{OverlayNetwork, OverlayPeer};
use crate::directory::{Directory, EndpointMode, Protocol, PublishMode, ServiceEntry, TaskEntry};
use crate::firewall::{FirewallModel, MeshSource, PortProtocol, PublishedPort, ServicePort, VirtualIp};
use crate::routes::HostRoute;

/// The service part of the node's firewall model.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceRules {
    pub vips: Vec<VirtualIp>,
    pub service_ports: Vec<ServicePort>,
    pub mesh_source: Option<MeshSource>,
}

/// What the overlay looks like from this node, for building the rules.
pub struct NodeView<'a> {
    pub networks: &'a BTreeMap<String, OverlayNetwork>,
    pub peers: &'a [OverlayPeer],
    /// The node's own `-p` ports: a service port on the same port and
    /// protocol is left out (with a warning) rather than shadow them.
    pub local_published: &'a [PublishedPort],
}

impl NodeView<'_> {
    fn ingress(&self) -> Option<&OverlayNetwork> {
        self.networks.values().find(|n| n.ingress)
    }

    /// Tasks behind another node are in that node's allowed IPs; the rest
    /// of the directory's tasks on this node's networks run here.
    fn is_local(&self, task: &TaskEntry) -> bool {
        !task.addresses.is_empty()
            && !task.addresses.iter().any(|a| self.peers.iter().any(|p| p.allowed_ips.iter().any(|ip| ip.contains(&a.address))))
    }
}

/// The VIPs, service ports and mesh source `directory` asks of this node.
pub fn service_rules(view: &NodeView<'_>, directory: &Directory) -> ServiceRules {
    let ingress = view.ingress();
    let mut rules = ServiceRules {
        mesh_source: ingress.and_then(|n| Some(MeshSource { subnet: n.subnet, address: n.node_address? })),
        ..ServiceRules::default()
    };
    for service in &directory.services {
        if service.mode == EndpointMode::Vip {
            rules.vips.extend(service_vips(view, service));
        }
        for port in service.ports.iter().filter(|p| p.published > 0) {
            let backends = match port.mode {
                // Without an ingress address the node has no way back.
                PublishMode::Ingress if rules.mesh_source.is_none() => continue,
                PublishMode::Ingress => ingress.map(|n| backends_in(service, n)).unwrap_or_default(),
                PublishMode::Host => {
                    let local: Vec<Ipv4Addr> = service.tasks.iter().filter(|t| view.is_local(t)).filter_map(|t| host_target(view, t)).collect();
                    if local.is_empty() {
                        continue;
                    }
                    local
                }
            };
            let protocol = match port.protocol {
                Protocol::Tcp => PortProtocol::Tcp,
                Protocol::Udp => PortProtocol::Udp,
            };
            let candidate = ServicePort { service: service.name.clone(), protocol, published: port.published, target: port.target, backends: sorted(backends) };
            if let Some(local) = view.local_published.iter().find(|p| p.protocol == protocol && p.host_port == port.published) {
                tracing::warn!(port = %candidate, %local, "a container on this node publishes the same port; the service's port is not served here");
                continue;
            }
            if rules.service_ports.iter().any(|p| p.protocol == protocol && p.published == port.published) {
                tracing::warn!(port = %candidate, "another service publishes the same port; serving the first one");
                continue;
            }
            rules.service_ports.push(candidate);
        }
    }
    rules.vips.sort_by_key(|v| v.address);
    rules.service_ports.sort_by_key(|p| (p.protocol.as_str(), p.published));
    rules
}

fn service_vips<'a>(view: &'a NodeView<'_>, service: &'a ServiceEntry) -> impl Iterator<Item = VirtualIp> + 'a {
    service.vips.iter().filter_map(move |vip| {
        let network = view.networks.get(&vip.network_id).filter(|n| !n.ingress)?;
        if !network.subnet.contains(&vip.address) {
            tracing::warn!(service = %service.name, vip = %vip.address, subnet = %network.subnet, "ignoring a VIP outside its network");
            return None;
        }
        Some(VirtualIp { service: service.name.clone(), address: vip.address, bridge: bridge_name(&network.id), backends: sorted(backends_in(service, network)) })
    })
}

/// The service's running tasks' addresses on `network` (those the managers
/// got right: inside its subnet).
fn backends_in(service: &ServiceEntry, network: &OverlayNetwork) -> Vec<Ipv4Addr> {
    service.backends_on(&network.id).filter(|a| network.subnet.contains(a) && *a != network.gateway).collect()
}

/// Where a host-mode port reaches a local task: its first network that has
/// a way in (not internal; ingress only as a last resort).
fn host_target(view: &NodeView<'_>, task: &TaskEntry) -> Option<Ipv4Addr> {
    let usable = |a: &&crate::directory::NetworkAddress| view.networks.get(&a.network_id).is_some_and(|n| !n.internal && n.subnet.contains(&a.address));
    let on = |ingress: bool| task.addresses.iter().filter(usable).find(|a| view.networks.get(&a.network_id).is_some_and(|n| n.ingress == ingress));
    on(false).or_else(|| on(true)).map(|a| a.address)
}

fn sorted(addresses: Vec<Ipv4Addr>) -> Vec<Ipv4Addr> {
    addresses.into_iter().collect::<BTreeSet<_>>().into_iter().collect()
}

/// Routes that make the node's bridges answer ARP for the VIPs of their
/// networks (proxy_arp answers for addresses routed out another device).
/// Every VIP, with or without backends: a VIP with none must be refused,
/// not left to an ARP timeout.
pub fn vip_routes(networks: &BTreeMap<String, OverlayNetwork>, directory: &Directory) -> Vec<HostRoute> {
    let mut routes: Vec<HostRoute> = directory
        .services
        .iter()
        .filter(|s| s.mode == EndpointMode::Vip)
        .flat_map(|s| &s.vips)
        .filter_map(|vip| {
            let network = networks.get(&vip.network_id).filter(|n| !n.ingress && n.subnet.contains(&vip.address))?;
            Some(HostRoute { address: vip.address, source: network.node_address })
        })
        .collect();
    routes.sort();
    routes.dedup();
    routes
}

/// The conntrack entries to delete after going from `old` to `new`: those
/// of every backend that left a VIP or a service port.
pub fn stale_entries(old: &FirewallModel, new: &FirewallModel) -> Vec<EntryFilter> {
    let mut stale = BTreeSet::new();
    for vip in &old.vips {
        let kept = new.vips.iter().find(|v| v.address == vip.address).map(|v| v.backends.as_slice()).unwrap_or_default();
        for backend in vip.backends.iter().filter(|b| !kept.contains(b)) {
            stale.insert(EntryFilter { original_destination: Some(vip.address), reply_source: Some(*backend), ..EntryFilter::default() });
        }
    }
    for port in &old.service_ports {
        let kept = new
            .service_ports
            .iter()
            .find(|p| p.protocol == port.protocol && p.published == port.published && p.target == port.target)
            .map(|p| p.backends.as_slice())
            .unwrap_or_default();
        let protocol = match port.protocol {
            PortProtocol::Tcp => PROTO_TCP,
            PortProtocol::Udp => PROTO_UDP,
        };
        for backend in port.backends.iter().filter(|b| !kept.contains(b)) {
            stale.insert(EntryFilter {
                protocol: Some(protocol),
                original_destination_port: Some(port.published),
                reply_source: Some(*backend),
                ..EntryFilter::default()
            });
        }
    }
    stale.into_iter().collect()
}

#[cfg(test)]
#[path = "load_balancer_tests.rs"]
mod tests;
