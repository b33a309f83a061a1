//! What the node's firewall must express, as plain data: the networks the
//! node serves, the overlay device between nodes, and the published ports.
//! Nothing here touches the kernel; [`FirewallModel::validate`] rejects a
//! model whose rules would be ambiguous before anything is applied.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::error::FirewallError;
use super::service_model::{self, MeshSource, ServicePort, VirtualIp};

/// Linux interface names are at most 15 bytes (IFNAMSIZ - 1).
const MAX_INTERFACE_NAME: usize = 15;

/// Everything the firewall of one node needs to know.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FirewallModel {
    /// Every network (local bridge or overlay) with a bridge on this node.
    pub networks: Vec<NetworkRules>,
    /// The WireGuard interface that carries overlay traffic between nodes.
    pub overlay_device: Option<String>,
    /// `-p [IP:]HOST:CONTAINER[/PROTO]` of the containers on this node.
    pub published: Vec<PublishedPort>,
    /// Swarm services' VIPs on this node's networks.
    pub vips: Vec<VirtualIp>,
    /// Ports swarm services publish on this node (routing mesh, host mode).
    pub service_ports: Vec<ServicePort>,
    /// The routing mesh's return path, once the node has an ingress address.
    pub mesh_source: Option<MeshSource>,
}

/// One network as seen by the firewall: its bridge on this node and subnet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkRules {
    pub bridge: String,
    pub subnet: Ipv4Net,
    /// `--internal`: nothing outside the subnet is reachable (the node itself is).
    pub internal: bool,
    /// Spans nodes: traffic within the subnet may cross the overlay device.
    pub overlay: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PortProtocol {
    Tcp,
    Udp,
}

impl PortProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            PortProtocol::Tcp => "tcp",
            PortProtocol::Udp => "udp",
        }
    }
}

impl fmt::Display for PortProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One published port: `host_ip:host_port/protocol` on the node forwards to
/// `container_ip:container_port` on `bridge`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PublishedPort {
    pub protocol: PortProtocol,
    /// Only this node address; `None` means every address of the node.
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub container_ip: Ipv4Addr,
    pub container_port: u16,
    /// The bridge of the network the container is reached on.
    pub bridge: String,
}

impl PublishedPort {
    /// The address the published port is bound to (0.0.0.0 for "all").
    pub fn host_ip_or_any(&self) -> Ipv4Addr {
        self.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED)
    }

    /// Two entries clash when a packet could match both: same protocol and
    /// port, and the same address or one of them on every address.
    fn clashes_with(&self, other: &PublishedPort) -> bool {
        self.protocol == other.protocol
            && self.host_port == other.host_port
            && match (self.host_ip, other.host_ip) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

/// Docker's `docker ps` notation: `0.0.0.0:8080->100.64.1.2:80/tcp`.
impl fmt::Display for PublishedPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}->{}:{}/{}",
            self.host_ip_or_any(),
            self.host_port,
            self.container_ip,
            self.container_port,
            self.protocol
        )
    }
}

impl FirewallModel {
    /// Checks that every rule the model asks for is unambiguous: valid and
    /// distinct interface names, disjoint subnets, and published ports that
    /// point into a known, non-internal network without clashing.
    pub fn validate(&self) -> Result<(), FirewallError> {
        let mut bridges = HashSet::new();
        for network in &self.networks {
            validate_interface_name("network bridge", &network.bridge)?;
            if !bridges.insert(network.bridge.as_str()) {
                return Err(FirewallError::DuplicateBridge {
                    bridge: network.bridge.clone(),
                });
            }
        }
        if let Some(device) = &self.overlay_device {
            validate_interface_name("overlay device", device)?;
            if bridges.contains(device.as_str()) {
                return Err(FirewallError::OverlayDeviceIsBridge {
                    device: device.clone(),
                });
            }
        } else if let Some(network) = self.networks.iter().find(|n| n.overlay) {
            return Err(FirewallError::MissingOverlayDevice {
                bridge: network.bridge.clone(),
            });
        }
        for (i, a) in self.networks.iter().enumerate() {
            for b in &self.networks[i + 1..] {
                if a.subnet.contains(&b.subnet.network()) || b.subnet.contains(&a.subnet.network())
                {
                    return Err(FirewallError::OverlappingSubnets {
                        bridge: b.bridge.clone(),
                        subnet: b.subnet.trunc(),
                        other_bridge: a.bridge.clone(),
                        other_subnet: a.subnet.trunc(),
                    });
                }
            }
        }
        let by_bridge: HashMap<&str, &NetworkRules> = self
            .networks
            .iter()
            .map(|n| (n.bridge.as_str(), n))
            .collect();
        for (i, port) in self.published.iter().enumerate() {
            validate_published(port, &by_bridge)?;
            if let Some(earlier) = self.published[..i].iter().find(|p| p.clashes_with(port)) {
                return Err(FirewallError::DuplicatePublishedPort {
                    first: earlier.to_string(),
                    second: port.to_string(),
                });
            }
        }
        service_model::validate(self, &by_bridge)
    }

    /// Bridges and the overlay device: the interfaces whose forwarded
    /// traffic this firewall decides about.
    pub fn interfaces(&self) -> Vec<String> {
        let mut names: Vec<String> = self.networks.iter().map(|n| n.bridge.clone()).collect();
        names.extend(self.overlay_device.iter().cloned());
        names
    }
}

fn validate_published(
    port: &PublishedPort,
    networks: &HashMap<&str, &NetworkRules>,
) -> Result<(), FirewallError> {
    if port.host_port == 0 || port.container_port == 0 {
        return Err(FirewallError::ZeroPort {
            port: port.to_string(),
        });
    }
    let Some(network) = networks.get(port.bridge.as_str()) else {
        return Err(FirewallError::UnknownPublishBridge {
            port: port.to_string(),
            bridge: port.bridge.clone(),
        });
    };
    if network.internal {
        return Err(FirewallError::PublishOnInternal {
            port: port.to_string(),
            bridge: port.bridge.clone(),
        });
    }
    if !network.subnet.contains(&port.container_ip) {
        return Err(FirewallError::ContainerOutsideSubnet {
            port: port.to_string(),
            bridge: port.bridge.clone(),
            subnet: network.subnet.trunc(),
        });
    }
    Ok(())
}

/// Names end up in nftables rules and chain names; keep them to what Shoal
/// itself generates so no name needs quoting anywhere.
fn validate_interface_name(what: &'static str, name: &str) -> Result<(), FirewallError> {
    let valid = (1..=MAX_INTERFACE_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if valid {
        Ok(())
    } else {
        Err(FirewallError::InvalidInterfaceName {
            what,
            name: name.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network(bridge: &str, subnet: &str) -> NetworkRules {
        NetworkRules {
            bridge: bridge.into(),
            subnet: subnet.parse().unwrap(),
            internal: false,
            overlay: false,
        }
    }

    fn port(host_ip: Option<&str>, host_port: u16, protocol: PortProtocol) -> PublishedPort {
        PublishedPort {
            protocol,
            host_ip: host_ip.map(|ip| ip.parse().unwrap()),
            host_port,
            container_ip: "100.64.1.2".parse().unwrap(),
            container_port: 80,
            bridge: "shl-a".into(),
        }
    }

    fn model(published: Vec<PublishedPort>) -> FirewallModel {
        FirewallModel {
            networks: vec![
                network("shl-a", "100.64.1.0/24"),
                network("shl-b", "100.64.2.0/24"),
            ],
            overlay_device: None,
            published,
            ..FirewallModel::default()
        }
    }

    #[test]
    fn a_plain_model_is_valid() {
        model(vec![
            port(None, 8080, PortProtocol::Tcp),
            port(None, 8080, PortProtocol::Udp),
        ])
        .validate()
        .unwrap();
    }

    #[test]
    fn published_ports_clash_on_the_same_address_or_a_wildcard() {
        let same_port_two_addresses = model(vec![
            port(Some("198.18.0.1"), 8080, PortProtocol::Tcp),
            port(Some("198.18.0.2"), 8080, PortProtocol::Tcp),
        ]);
        same_port_two_addresses.validate().unwrap();

        let wildcard_and_address = model(vec![
            port(None, 8080, PortProtocol::Tcp),
            port(Some("198.18.0.2"), 8080, PortProtocol::Tcp),
        ]);
        let err = wildcard_and_address.validate().unwrap_err().to_string();
        assert!(err.contains("0.0.0.0:8080->100.64.1.2:80/tcp"), "{err}");
        assert!(err.contains("198.18.0.2:8080->100.64.1.2:80/tcp"), "{err}");
    }

    #[test]
    fn bad_models_are_refused_with_the_value_named() {
        let mut overlapping = model(vec![]);
        overlapping.networks.push(network("shl-c", "100.64.0.0/16"));
        let err = overlapping.validate().unwrap_err().to_string();
        assert!(
            err.contains("100.64.0.0/16") && err.contains("shl-a"),
            "{err}"
        );

        let mut long_name = model(vec![]);
        long_name.networks[0].bridge = "a-very-long-bridge".into();
        assert!(long_name
            .validate()
            .unwrap_err()
            .to_string()
            .contains("a-very-long-bridge"));

        let mut duplicate = model(vec![]);
        duplicate.networks[1].bridge = "shl-a".into();
        assert!(matches!(
            duplicate.validate(),
            Err(FirewallError::DuplicateBridge { .. })
        ));

        let mut overlay_without_device = model(vec![]);
        overlay_without_device.networks[1].overlay = true;
        assert!(overlay_without_device
            .validate()
            .unwrap_err()
            .to_string()
            .contains("shl-b"));

        let mut device_is_bridge = model(vec![]);
        device_is_bridge.overlay_device = Some("shl-a".into());
        assert!(matches!(
            device_is_bridge.validate(),
            Err(FirewallError::OverlayDeviceIsBridge { .. })
        ));

        let mut outside = port(None, 8080, PortProtocol::Tcp);
        outside.container_ip = "100.64.2.9".parse().unwrap();
        let err = model(vec![outside]).validate().unwrap_err().to_string();
        assert!(
            err.contains("100.64.2.9") && err.contains("100.64.1.0/24"),
            "{err}"
        );

        let mut unknown = port(None, 8080, PortProtocol::Tcp);
        unknown.bridge = "shl-zz".into();
        assert!(model(vec![unknown])
            .validate()
            .unwrap_err()
            .to_string()
            .contains("shl-zz"));

        let mut internal = model(vec![port(None, 8080, PortProtocol::Tcp)]);
        internal.networks[0].internal = true;
        assert!(matches!(
            internal.validate(),
            Err(FirewallError::PublishOnInternal { .. })
        ));

        let zero = model(vec![port(None, 0, PortProtocol::Udp)]);
        assert!(matches!(
            zero.validate(),
            Err(FirewallError::ZeroPort { .. })
        ));
    }
}
