//! What the node keeps about its bridge networks, and the pure decisions
//! over it: the networks (the default `bridge` and the user's), each with
//! its endpoints (which container sandbox has which address, aliases and
//! published ports). Kept as JSON in `<state dir>/local.json`, written to
//! a temporary file and renamed over the old one, so a crash leaves either
//! the old or the new state and never half of one.
//!
//! Nothing here touches the kernel: [`super::BridgeNetworks`] decides with
//! these functions, then makes the kernel match.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::Path;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::error::{LocalNetError, Result};
use super::ipam::{self, AddressPool};
use crate::bridge::{bridge_name, DEFAULT_BRIDGE};
use crate::dataplane::LocalNetwork;
use crate::firewall::{PortProtocol, PublishedPort};
use crate::netlink::Ipv4Route;

/// The node's default network, as docker's.
pub const DEFAULT_NETWORK: &str = "bridge";
/// Names no user network may take: docker's special networks.
const RESERVED_NAMES: [&str; 4] = [DEFAULT_NETWORK, "none", "host", "default"];
pub const STATE_FILE: &str = "local.json";
const STATE_VERSION: u32 = 1;
pub const DEFAULT_MTU: u32 = 1500;
/// IPv6's minimum link MTU: below it, common traffic breaks in odd ways.
pub const MIN_MTU: u32 = 1280;
pub const MAX_MTU: u32 = 65535;
const MAX_NAME_LEN: usize = 64;
/// Spellings of the MTU option: ours and docker's.
const MTU_OPTIONS: [&str; 2] = ["mtu", "com.docker.network.driver.mtu"];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl From<Protocol> for PortProtocol {
    fn from(protocol: Protocol) -> Self {
        match protocol {
            Protocol::Tcp => PortProtocol::Tcp,
            Protocol::Udp => PortProtocol::Udp,
        }
    }
}

/// `-p [HOST_IP:]HOST_PORT:CONTAINER_PORT[/PROTO]` of one container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    pub protocol: Protocol,
    /// `None`: every address of the node.
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub container_port: u16,
}

impl PortMapping {
    /// The firewall's view: forwarded to `address` on `bridge`.
    pub fn published(&self, address: Ipv4Addr, bridge: &str) -> PublishedPort {
        PublishedPort {
            protocol: self.protocol.into(),
            host_ip: self.host_ip,
            host_port: self.host_port,
            container_ip: address,
            container_port: self.container_port,
            bridge: bridge.to_string(),
        }
    }

    /// docker's `8080/tcp` notation of the host side, for messages.
    pub fn host_side(&self) -> String {
        let protocol: PortProtocol = self.protocol.into();
        match self.host_ip {
            Some(ip) => format!("{ip}:{}/{protocol}", self.host_port),
            None => format!("{}/{protocol}", self.host_port),
        }
    }
}

/// A standalone container's network namespace and whose it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxRecord {
    /// `ctr-` and random hex: chosen before the container (and so its id)
    /// exists, because the container is created inside it.
    pub id: String,
    /// Empty while the container is being created.
    #[serde(default)]
    pub container_id: String,
    #[serde(default)]
    pub container_name: String,
    /// Its addresses on swarm overlays, handed out by the managers and
    /// given back to them when the container ends.
    #[serde(default)]
    pub swarm: Vec<SwarmEndpoint>,
}

/// A standalone container's place on an attachable swarm overlay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwarmEndpoint {
    pub network_id: String,
    pub address: Ipv4Addr,
    /// Order among the container's networks, as for [`EndpointRecord`].
    pub position: u32,
}

/// A container's place on one network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    pub sandbox_id: String,
    pub address: Ipv4Addr,
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Only on the container's first network, which they are forwarded to.
    #[serde(default)]
    pub published: Vec<PortMapping>,
    /// Order among the container's networks; the lowest carries its
    /// default route.
    pub position: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRecord {
    pub id: String,
    pub name: String,
    /// Its bridge on this node: `shoal0` for the default network.
    pub bridge: String,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub internal: bool,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    pub mtu: u32,
    /// RFC 3339.
    pub created: String,
    #[serde(default)]
    pub endpoints: Vec<EndpointRecord>,
}

impl NetworkRecord {
    pub fn is_default(&self) -> bool {
        self.name == DEFAULT_NETWORK
    }

    /// The data plane's view of the network.
    pub fn dataplane(&self) -> LocalNetwork {
        LocalNetwork {
            id: self.id.clone(),
            bridge: self.bridge.clone(),
            subnet: self.subnet,
            gateway: self.gateway,
            mtu: self.mtu,
            internal: self.internal,
        }
    }

    /// The lowest address no endpoint holds.
    pub fn free_address(&self) -> Result<Ipv4Addr> {
        let used: BTreeSet<Ipv4Addr> = self.endpoints.iter().map(|e| e.address).collect();
        ipam::lowest_free(self.subnet, self.gateway, &used).ok_or_else(|| {
            LocalNetError::SubnetFull {
                network: self.name.clone(),
                subnet: self.subnet,
            }
        })
    }
}

/// `network create -d bridge`'s request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetworkRequest {
    pub name: String,
    /// CIDR; `None`: the next free subnet of the pool.
    pub subnet: Option<String>,
    /// `None`: the subnet's first host address.
    pub gateway: Option<String>,
    pub internal: bool,
    pub labels: BTreeMap<String, String>,
    pub options: BTreeMap<String, String>,
}

/// Everything the node keeps about its bridge networks.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalState {
    #[serde(default)]
    pub version: u32,
    #[serde(default)]
    pub networks: Vec<NetworkRecord>,
    #[serde(default)]
    pub sandboxes: Vec<SandboxRecord>,
}

impl LocalState {
    /// Reads the state; a missing file is an empty state.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(LocalState::default()),
            Err(source) => {
                return Err(LocalNetError::Io {
                    action: "read",
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        serde_json::from_slice(&bytes).map_err(|e| LocalNetError::CorruptState {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })
    }

    /// Writes the state next to `path` and renames it over `path`.
    pub fn save(&self, path: &Path) -> Result<()> {
        let io = |action, source| LocalNetError::Io {
            action,
            path: path.to_path_buf(),
            source,
        };
        let mut state = self.clone();
        state.version = STATE_VERSION;
        let json = serde_json::to_vec_pretty(&state)
            .map_err(|e| io("serialise", std::io::Error::other(e)))?;
        let temporary = path.with_extension("json.tmp");
        let mut file = std::fs::File::create(&temporary).map_err(|e| io("create", e))?;
        file.write_all(&json)
            .and_then(|()| file.sync_all())
            .map_err(|e| io("write", e))?;
        std::fs::rename(&temporary, path).map_err(|e| io("replace", e))
    }

    /// The network `reference` names: its id, its name, or a unique id
    /// prefix (in that order, as docker resolves them).
    pub fn find(&self, reference: &str) -> Option<&NetworkRecord> {
        self.position(reference).map(|i| &self.networks[i])
    }

    pub fn position(&self, reference: &str) -> Option<usize> {
        if reference.is_empty() {
            return None;
        }
        if let Some(i) = self.networks.iter().position(|n| n.id == reference) {
            return Some(i);
        }
        if let Some(i) = self.networks.iter().position(|n| n.name == reference) {
            return Some(i);
        }
        let mut prefixed = self
            .networks
            .iter()
            .enumerate()
            .filter(|(_, n)| n.id.starts_with(reference));
        match (prefixed.next(), prefixed.next()) {
            (Some((i, _)), None) => Some(i),
            _ => None,
        }
    }

    /// Bridges of the node's networks.
    pub fn bridges(&self) -> BTreeSet<String> {
        self.networks.iter().map(|n| n.bridge.clone()).collect()
    }

    /// Checks `request` against the node (other networks, host routes) and
    /// returns the network it describes, with a fresh id; not yet stored.
    pub fn plan_network(
        &self,
        request: &NetworkRequest,
        pool: &AddressPool,
        routes: &[Ipv4Route],
    ) -> Result<NetworkRecord> {
        validate_name(&request.name)?;
        if RESERVED_NAMES.contains(&request.name.as_str()) {
            return Err(LocalNetError::ReservedName {
                name: request.name.clone(),
            });
        }
        self.plan(request, pool, routes, None)
    }

    /// The default network, on bridge `shoal0` with a subnet of the pool.
    pub fn plan_default_network(
        &self,
        pool: &AddressPool,
        routes: &[Ipv4Route],
    ) -> Result<NetworkRecord> {
        let request = NetworkRequest {
            name: DEFAULT_NETWORK.to_string(),
            ..Default::default()
        };
        self.plan(&request, pool, routes, Some(DEFAULT_BRIDGE))
    }

    fn plan(
        &self,
        request: &NetworkRequest,
        pool: &AddressPool,
        routes: &[Ipv4Route],
        bridge: Option<&str>,
    ) -> Result<NetworkRecord> {
        if self.networks.iter().any(|n| n.name == request.name) {
            return Err(LocalNetError::DuplicateName {
                name: request.name.clone(),
            });
        }
        let mtu = mtu_option(&request.options)?;
        let own = self.bridges();
        let conflicting: Vec<&Ipv4Route> = ipam::conflicting_routes(routes, &own).collect();
        let subnet = match &request.subnet {
            Some(value) => {
                let subnet = ipam::parse_subnet(value)?;
                if let Some(other) = self
                    .networks
                    .iter()
                    .find(|n| ipam::overlaps(&subnet, &n.subnet))
                {
                    return Err(LocalNetError::OverlapsNetwork {
                        subnet,
                        other: other.name.clone(),
                        other_subnet: other.subnet,
                    });
                }
                if let Some(route) = conflicting
                    .iter()
                    .find(|r| ipam::overlaps(&subnet, &r.destination))
                {
                    return Err(LocalNetError::OverlapsHostRoute {
                        subnet,
                        route: route.to_string(),
                    });
                }
                subnet
            }
            None => {
                if let Some(gateway) = &request.gateway {
                    return Err(LocalNetError::GatewayWithoutSubnet {
                        gateway: gateway.clone(),
                    });
                }
                let mut taken: Vec<Ipv4Net> = self.networks.iter().map(|n| n.subnet).collect();
                taken.extend(conflicting.iter().map(|r| r.destination));
                pool.free_subnet(&taken)
                    .ok_or(LocalNetError::PoolExhausted {
                        pool: pool.base,
                        size: pool.size,
                    })?
            }
        };
        let gateway = ipam::gateway_for(subnet, request.gateway.as_deref())?;
        let id = self.fresh_id();
        Ok(NetworkRecord {
            bridge: bridge.map_or_else(|| bridge_name(&id), str::to_string),
            id,
            name: request.name.clone(),
            subnet,
            gateway,
            internal: request.internal,
            labels: request.labels.clone(),
            options: request.options.clone(),
            mtu,
            created: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            endpoints: Vec::new(),
        })
    }

    /// 64 hex characters, as docker's ids, whose bridge name (the first 11)
    /// no other network of the node has.
    fn fresh_id(&self) -> String {
        loop {
            let bytes: [u8; 32] = rand::random();
            let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            if !self.networks.iter().any(|n| n.bridge == bridge_name(&id)) {
                return id;
            }
        }
    }

    /// The endpoints of `sandbox_id` as (network index, endpoint), in the
    /// container's network order.
    pub fn sandbox_endpoints(&self, sandbox_id: &str) -> Vec<(usize, &EndpointRecord)> {
        let mut found: Vec<(usize, &EndpointRecord)> = self
            .networks
            .iter()
            .enumerate()
            .flat_map(|(i, n)| {
                n.endpoints
                    .iter()
                    .filter(|e| e.sandbox_id == sandbox_id)
                    .map(move |e| (i, e))
            })
            .collect();
        found.sort_by_key(|(_, e)| e.position);
        found
    }

    /// The sandbox of container `container_id`.
    pub fn sandbox_of(&self, container_id: &str) -> Option<&SandboxRecord> {
        self.sandboxes
            .iter()
            .find(|s| !container_id.is_empty() && s.container_id == container_id)
    }

    pub fn sandbox(&self, sandbox_id: &str) -> Option<&SandboxRecord> {
        self.sandboxes.iter().find(|s| s.id == sandbox_id)
    }

    /// Who is attached to network `index`: (sandbox, endpoint), in address order.
    pub fn attached(&self, index: usize) -> Vec<(&SandboxRecord, &EndpointRecord)> {
        let mut attached: Vec<(&SandboxRecord, &EndpointRecord)> = self.networks[index]
            .endpoints
            .iter()
            .filter_map(|e| self.sandbox(&e.sandbox_id).map(|s| (s, e)))
            .collect();
        attached.sort_by_key(|(_, e)| e.address);
        attached
    }

    /// Names of the containers attached to network `index` (the sandbox id
    /// for one still being created).
    pub fn container_names(&self, index: usize) -> Vec<String> {
        self.attached(index)
            .into_iter()
            .map(|(s, _)| {
                if s.container_name.is_empty() {
                    s.id.clone()
                } else {
                    s.container_name.clone()
                }
            })
            .collect()
    }

    /// Forgets sandbox `sandbox_id` and its endpoints (their addresses are
    /// free again); returns whether it was known.
    pub fn remove_sandbox(&mut self, sandbox_id: &str) -> bool {
        let before = self.sandboxes.len();
        self.sandboxes.retain(|s| s.id != sandbox_id);
        let mut removed = self.sandboxes.len() != before;
        for network in &mut self.networks {
            let before = network.endpoints.len();
            network.endpoints.retain(|e| e.sandbox_id != sandbox_id);
            removed |= network.endpoints.len() != before;
        }
        removed
    }

    /// The containers with a name on each network, with their aliases:
    /// what the embedded DNS answers on bridge networks.
    pub fn named_containers(&self) -> Vec<crate::directory::ContainerEntry> {
        self.networks
            .iter()
            .flat_map(|network| {
                network.endpoints.iter().filter_map(move |endpoint| {
                    let sandbox = self.sandbox(&endpoint.sandbox_id)?;
                    (!sandbox.container_name.is_empty()).then(|| crate::directory::ContainerEntry {
                        network_id: network.id.clone(),
                        name: sandbox.container_name.clone(),
                        address: endpoint.address,
                        aliases: endpoint.aliases.clone(),
                    })
                })
            })
            .collect()
    }

    /// The data plane's view: every network and every published port.
    pub fn dataplane(&self) -> crate::dataplane::LocalNetworks {
        crate::dataplane::LocalNetworks {
            networks: self.networks.iter().map(NetworkRecord::dataplane).collect(),
            published: self
                .networks
                .iter()
                .flat_map(|n| {
                    n.endpoints.iter().flat_map(move |e| {
                        e.published
                            .iter()
                            .map(move |p| p.published(e.address, &n.bridge))
                    })
                })
                .collect(),
        }
    }
}

/// docker's rule for network names (and, here, aliases).
pub fn validate_name(name: &str) -> Result<()> {
    if is_valid_name(name) {
        Ok(())
    } else {
        Err(LocalNetError::InvalidName {
            name: name.to_string(),
        })
    }
}

pub fn validate_alias(alias: &str) -> Result<()> {
    if is_valid_name(alias) {
        Ok(())
    } else {
        Err(LocalNetError::InvalidAlias {
            alias: alias.to_string(),
        })
    }
}

fn is_valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    name.len() <= MAX_NAME_LEN
        && bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// The MTU from `-o mtu=N`; any other option is refused.
fn mtu_option(options: &BTreeMap<String, String>) -> Result<u32> {
    let mut mtu = DEFAULT_MTU;
    for (key, value) in options {
        if !MTU_OPTIONS.contains(&key.as_str()) {
            return Err(LocalNetError::UnknownOption {
                option: key.clone(),
            });
        }
        mtu = value
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|m| (MIN_MTU..=MAX_MTU).contains(m))
            .ok_or_else(|| LocalNetError::InvalidMtu {
                value: value.clone(),
            })?;
    }
    Ok(mtu)
}

#[cfg(test)]
mod tests;
