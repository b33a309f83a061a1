//! What the firewall must express for swarm services, as plain data: VIPs
//! balanced over their tasks, ports published through the routing mesh or
//! in host mode, and the mesh's return path. [`validate`] refuses a model
//! whose service rules would be ambiguous or point outside the node's
//! networks, before anything is applied.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::error::FirewallError;
use super::model::{FirewallModel, NetworkRules, PortProtocol};

/// A service's virtual IP on one network of this node: new connections
/// from that network's containers (and from the node itself) to any port
/// of `address` go to one of `backends`, port kept.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct VirtualIp {
    /// The service, for rule comments and errors.
    pub service: String,
    pub address: Ipv4Addr,
    /// The bridge of the VIP's network: only what arrives from it is
    /// balanced, so a VIP is no way into another network.
    pub bridge: String,
    /// The running tasks' addresses on that network. Empty: connections
    /// are refused (an ICMP port unreachable, so a TCP client sees
    /// "connection refused" at once instead of a timeout).
    pub backends: Vec<Ipv4Addr>,
}

impl fmt::Display for VirtualIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VIP {} of service {}", self.address, self.service)
    }
}

/// A port a swarm service publishes on this node: connections to any
/// non-loopback, non-container address of the node on `published` go to
/// one of `backends` on `target`. Routing mesh: the tasks' ingress
/// addresses, anywhere in the swarm. Host mode: this node's own tasks.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServicePort {
    pub service: String,
    pub protocol: PortProtocol,
    pub published: u16,
    pub target: u16,
    /// Empty: nothing answers (the node refuses as for any closed port).
    pub backends: Vec<Ipv4Addr>,
}

impl fmt::Display for ServicePort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "port {}/{} of service {} (target {})", self.published, self.protocol, self.service, self.target)
    }
}

/// The routing mesh's way back: connections DNAT'd into the ingress
/// network leave from the node's own address there, so a task on another
/// node answers through the node that accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MeshSource {
    pub subnet: Ipv4Net,
    pub address: Ipv4Addr,
}

/// Checks the service part of `model`; `by_bridge` are its networks.
pub(super) fn validate(model: &FirewallModel, by_bridge: &HashMap<&str, &NetworkRules>) -> Result<(), FirewallError> {
    let mut addresses = HashSet::new();
    for vip in &model.vips {
        let Some(network) = by_bridge.get(vip.bridge.as_str()) else {
            return Err(FirewallError::UnknownVipBridge { vip: vip.to_string(), bridge: vip.bridge.clone() });
        };
        let subnet = network.subnet.trunc();
        for address in std::iter::once(&vip.address).chain(&vip.backends) {
            if !subnet.contains(address) || *address == subnet.network() || *address == subnet.broadcast() {
                return Err(FirewallError::VipAddressOutsideSubnet { vip: vip.to_string(), address: *address, subnet });
            }
        }
        if !addresses.insert(vip.address) {
            return Err(FirewallError::DuplicateVip { vip: vip.to_string() });
        }
    }
    let mut ports = HashSet::new();
    for port in &model.service_ports {
        if port.published == 0 || port.target == 0 {
            return Err(FirewallError::ZeroPort { port: port.to_string() });
        }
        if let Some(backend) = port.backends.iter().find(|b| !model.networks.iter().any(|n| !n.internal && n.subnet.contains(*b))) {
            return Err(FirewallError::BackendOutsideNetworks { port: port.to_string(), backend: *backend });
        }
        if !ports.insert((port.protocol, port.published)) {
            return Err(FirewallError::DuplicateServicePort { port: port.to_string() });
        }
        if let Some(local) = model.published.iter().find(|p| p.protocol == port.protocol && p.host_port == port.published) {
            return Err(FirewallError::ServicePortTaken { port: port.to_string(), local: local.to_string() });
        }
    }
    if let Some(mesh) = &model.mesh_source {
        if !model.networks.iter().any(|n| n.overlay && n.subnet.trunc() == mesh.subnet.trunc()) || !mesh.subnet.contains(&mesh.address) {
            return Err(FirewallError::BadMeshSource { address: mesh.address, subnet: mesh.subnet });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::PublishedPort;

    fn model() -> FirewallModel {
        FirewallModel {
            networks: vec![
                NetworkRules { bridge: "shl-a".into(), subnet: "100.64.1.0/24".parse().unwrap(), internal: false, overlay: true },
                NetworkRules { bridge: "shl-i".into(), subnet: "100.64.0.0/24".parse().unwrap(), internal: false, overlay: true },
                NetworkRules { bridge: "shl-x".into(), subnet: "100.64.9.0/24".parse().unwrap(), internal: true, overlay: true },
            ],
            overlay_device: Some("wgs-x".into()),
            published: vec![PublishedPort {
                protocol: PortProtocol::Tcp,
                host_ip: None,
                host_port: 9000,
                container_ip: "100.64.1.9".parse().unwrap(),
                container_port: 80,
                bridge: "shl-a".into(),
            }],
            vips: vec![VirtualIp {
                service: "web".into(),
                address: "100.64.1.2".parse().unwrap(),
                bridge: "shl-a".into(),
                backends: vec!["100.64.1.3".parse().unwrap()],
            }],
            service_ports: vec![ServicePort {
                service: "web".into(),
                protocol: PortProtocol::Tcp,
                published: 8080,
                target: 80,
                backends: vec!["100.64.0.3".parse().unwrap()],
            }],
            mesh_source: Some(MeshSource { subnet: "100.64.0.0/24".parse().unwrap(), address: "100.64.0.2".parse().unwrap() }),
        }
    }

    #[test]
    fn a_plain_service_model_is_valid() {
        model().validate().unwrap();
    }

    #[test]
    fn bad_service_rules_are_refused_with_the_value_named() {
        let mut outside = model();
        outside.vips[0].backends.push("100.64.2.7".parse().unwrap());
        let error = outside.validate().unwrap_err().to_string();
        assert!(error.contains("100.64.2.7") && error.contains("100.64.1.0/24") && error.contains("web"), "{error}");

        let mut unknown = model();
        unknown.vips[0].bridge = "shl-zz".into();
        assert!(unknown.validate().unwrap_err().to_string().contains("shl-zz"));

        let mut twice = model();
        twice.vips.push(twice.vips[0].clone());
        assert!(matches!(twice.validate(), Err(FirewallError::DuplicateVip { .. })));

        let mut internal_backend = model();
        internal_backend.service_ports[0].backends = vec!["100.64.9.5".parse().unwrap()];
        assert!(internal_backend.validate().unwrap_err().to_string().contains("100.64.9.5"));

        let mut clash = model();
        clash.service_ports[0].published = 9000;
        let error = clash.validate().unwrap_err().to_string();
        assert!(error.contains("9000") && error.contains("100.64.1.9:80"), "{error}");

        let mut duplicate = model();
        duplicate.service_ports.push(duplicate.service_ports[0].clone());
        assert!(matches!(duplicate.validate(), Err(FirewallError::DuplicateServicePort { .. })));
        let mut other_protocol = model();
        other_protocol.service_ports.push(ServicePort { protocol: PortProtocol::Udp, ..other_protocol.service_ports[0].clone() });
        other_protocol.validate().unwrap();

        let mut mesh = model();
        mesh.mesh_source = Some(MeshSource { subnet: "100.64.7.0/24".parse().unwrap(), address: "100.64.7.2".parse().unwrap() });
        assert!(mesh.validate().unwrap_err().to_string().contains("100.64.7.2"));
    }
}
