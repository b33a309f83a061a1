//! The control API's networks: `shoal network create/ls/inspect/rm/prune`
//! for swarm (overlay) networks, and how networks appear on the wire. The
//! allocator hands out the addresses on them; nodes serve them.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use shoal_proto::pb;

use super::control::{cluster_of, rfc3339};
use crate::allocator::ipam;
use crate::errors::ManagerError;
use crate::manager::Manager;
use crate::store::{
    new_object_id, AddressHolder, Kind, Meta, Network, NetworkAttachmentSpec, NetworkDriver, NetworkSpec, Node, Object, Op,
    Service, StoreState, Task, Transaction, MAX_MTU, MIN_MTU,
};

fn invalid(message: String) -> ManagerError {
    ManagerError::InvalidArgument(message)
}

/// Option keys docker users pass to overlay networks.
const OPTION_ENCRYPTED: &str = "encrypted";
const OPTION_MTU: &str = "mtu";
const OPTION_DOCKER_MTU: &str = "com.docker.network.driver.mtu";

pub async fn create(manager: &Manager, request: pb::CreateNetworkRequest) -> Result<pb::Network, ManagerError> {
    let spec = request.spec.unwrap_or_default();
    manager.read_barrier().await?;
    let network = manager.store.view(|s| network_from_spec(s, spec))?;
    let written = manager.write(Transaction::single(Op::Create(Object::Network(network)))).await?;
    let Some(Object::Network(network)) = written.into_iter().next() else {
        return Err(ManagerError::Internal("creating the network wrote nothing".into()));
    };
    Ok(manager.store.view(|s| network_to_pb(s, &network)))
}

/// Validates a create request and picks the subnet (from the cluster's pool
/// when none is given), so that `network create` answers with the subnet or
/// with why there is none, at once.
pub fn network_from_spec(state: &StoreState, spec: pb::NetworkSpec) -> Result<Network, ManagerError> {
    validate_name(&spec.name)?;
    if state.find_by_name(Kind::Network, &spec.name).is_some() {
        return Err(crate::store::TxnError::NameInUse { kind: Kind::Network, name: spec.name }.into());
    }
    let driver = match pb::NetworkDriver::try_from(spec.driver).unwrap_or_default() {
        pb::NetworkDriver::Unspecified | pb::NetworkDriver::Overlay => NetworkDriver::Overlay,
        pb::NetworkDriver::Bridge => {
            return Err(invalid(format!(
                "network {:?} uses the bridge driver, which is local to one node; create it on that node's daemon, or use -d overlay for a swarm network",
                spec.name
            )))
        }
    };
    let mtu = parse_options(&spec.name, &spec.options)?;
    let taken: Vec<Ipv4Net> = state.list_typed::<Network>().map(|n| n.subnet).collect();
    let subnet = match spec.subnet.trim() {
        "" => {
            if !spec.gateway.is_empty() {
                return Err(invalid(format!(
                    "gateway {} is given without a subnet; give --subnet too",
                    spec.gateway
                )));
            }
            let cluster = cluster_of(state)?;
            ipam::free_subnet(cluster.default_address_pool, cluster.default_pool_mask_length, &taken).ok_or_else(|| {
                ManagerError::FailedPrecondition(format!(
                    "the swarm's address pool {} has no free /{} left; remove unused networks (`shoal network prune`) or give --subnet",
                    cluster.default_address_pool, cluster.default_pool_mask_length
                ))
            })?
        }
        text => parse_subnet(text)?,
    };
    if let Some(other) = state.list_typed::<Network>().find(|n| ipam::overlaps(n.subnet, subnet)) {
        return Err(crate::store::TxnError::SubnetOverlap { subnet, other: other.subnet, other_name: other.spec.name.clone() }.into());
    }
    let gateway = match spec.gateway.trim() {
        "" => ipam::default_gateway(subnet).ok_or_else(|| invalid(format!("subnet {subnet} has no host addresses; use a larger one")))?,
        text => {
            let gateway: Ipv4Addr = text
                .parse()
                .map_err(|_| invalid(format!("gateway {text:?} is not an IPv4 address; give one inside the subnet, e.g. {}", subnet.hosts().next().unwrap_or(subnet.network()))))?;
            if !subnet.contains(&gateway) || gateway == subnet.network() || gateway == subnet.broadcast() {
                return Err(invalid(format!("gateway {gateway} is outside subnet {subnet} (or is its network or broadcast address); give an address inside it")));
            }
            gateway
        }
    };
    Ok(Network {
        meta: Meta { id: new_object_id(), ..Default::default() },
        spec: NetworkSpec {
            name: spec.name,
            labels: spec.labels.into_iter().collect(),
            driver,
            attachable: spec.attachable,
            internal: spec.internal,
            mtu,
            options: spec.options.into_iter().collect(),
            ingress: false,
        },
        subnet,
        gateway,
    })
}

fn validate_name(name: &str) -> Result<(), ManagerError> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if valid {
        Ok(())
    } else {
        Err(invalid(format!(
            "network name {name:?} is invalid; use 1 to 64 letters, digits, '-', '_' or '.', starting with a letter or digit"
        )))
    }
}

/// A CIDR with no host bits set, small enough to hold a gateway and a task.
pub fn parse_subnet(text: &str) -> Result<Ipv4Net, ManagerError> {
    let subnet: Ipv4Net = text
        .parse()
        .map_err(|_| invalid(format!("subnet {text:?} is not an IPv4 CIDR; write it as ADDRESS/PREFIX, e.g. 100.80.0.0/24")))?;
    if subnet.trunc() != subnet {
        return Err(invalid(format!("subnet {text} has host bits set; did you mean {}?", subnet.trunc())));
    }
    if subnet.prefix_len() > ipam::MAX_PREFIX_LENGTH {
        return Err(invalid(format!(
            "subnet {subnet} is too small; use a prefix of /{} or shorter",
            ipam::MAX_PREFIX_LENGTH
        )));
    }
    Ok(subnet)
}

/// The MTU the options ask for, refusing options overlay networks do not have.
fn parse_options(name: &str, options: &std::collections::HashMap<String, String>) -> Result<Option<u32>, ManagerError> {
    let mut mtu = None;
    for (key, value) in options {
        match key.as_str() {
            // Always on; accepted so docker command lines and compose files work.
            OPTION_ENCRYPTED => {}
            OPTION_MTU | OPTION_DOCKER_MTU => {
                let parsed: u32 = value
                    .parse()
                    .ok()
                    .filter(|m| (MIN_MTU..=MAX_MTU).contains(m))
                    .ok_or_else(|| invalid(format!("MTU {value:?} of network {name:?} is invalid; use a number from {MIN_MTU} to {MAX_MTU}")))?;
                mtu = Some(parsed);
            }
            other => {
                return Err(invalid(format!(
                    "network option {other:?} is unknown; overlay networks take -o encrypted and -o mtu=N"
                )))
            }
        }
    }
    Ok(mtu)
}

pub async fn list(manager: &Manager) -> Result<pb::ListNetworksResponse, ManagerError> {
    manager.read_barrier().await?;
    let networks = manager.store.view(|s| {
        let mut networks: Vec<pb::Network> = s.list_typed::<Network>().map(|n| network_to_pb(s, n)).collect();
        networks.sort_by(|a, b| a.spec.as_ref().map(|s| &s.name).cmp(&b.spec.as_ref().map(|s| &s.name)));
        networks
    });
    Ok(pb::ListNetworksResponse { networks })
}

pub async fn inspect(manager: &Manager, reference: &str) -> Result<pb::Network, ManagerError> {
    manager.read_barrier().await?;
    manager.store.view(|s| resolve_network(s, reference).map(|n| network_to_pb(s, n)))
}

pub async fn remove(manager: &Manager, reference: &str) -> Result<(), ManagerError> {
    manager.read_barrier().await?;
    let id = manager.store.view(|s| {
        let network = resolve_network(s, reference)?;
        if let Some(users) = users_of(s, network) {
            return Err(ManagerError::FailedPrecondition(format!("network {} is in use by {users}; remove those first", network.spec.name)));
        }
        Ok(network.meta.id.clone())
    })?;
    manager.write(Transaction::single(Op::Delete { kind: Kind::Network, id })).await?;
    Ok(())
}

/// Removes the network once nothing uses it any more (the tasks of
/// services just removed detach as they stop), waiting at most `wait`;
/// returns its name. Nothing waits on a network already gone.
pub async fn remove_when_detached(manager: &Manager, id: &str, wait: std::time::Duration) -> Result<Option<String>, ManagerError> {
    let mut events = manager.store.watch();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let found = manager.store.view(|s| s.get_typed::<Network>(id).map(|n| (n.spec.name.clone(), users_of(s, n))));
        let Some((name, users)) = found else { return Ok(None) };
        match users {
            None => {
                manager.write(Transaction::single(Op::Delete { kind: Kind::Network, id: id.to_string() })).await?;
                return Ok(Some(name));
            }
            Some(users) => {
                if tokio::time::timeout_at(deadline, events.recv()).await.is_err() {
                    return Err(ManagerError::FailedPrecondition(format!(
                        "network {name} is still in use by {users}; remove it later with `shoal network rm {name}`"
                    )));
                }
            }
        }
    }
}

pub async fn prune(manager: &Manager) -> Result<pb::PruneNetworksResponse, ManagerError> {
    manager.read_barrier().await?;
    let unused: Vec<(String, String)> = manager.store.view(|s| {
        // The routing mesh's network stays, as docker's ingress does.
        s.list_typed::<Network>()
            .filter(|n| !n.spec.ingress && users_of(s, n).is_none())
            .map(|n| (n.meta.id.clone(), n.spec.name.clone()))
            .collect()
    });
    let mut deleted = Vec::new();
    // One at a time: a network that gained a user meanwhile stays.
    for (id, name) in unused {
        if manager.write(Transaction::single(Op::Delete { kind: Kind::Network, id })).await.is_ok() {
            deleted.push(name);
        }
    }
    Ok(pb::PruneNetworksResponse { deleted })
}

/// What keeps `network` from being removed, for the user: the services
/// whose spec names it and the tasks still holding addresses on it.
fn users_of(state: &StoreState, network: &Network) -> Option<String> {
    let services: Vec<&str> = state
        .list_typed::<Service>()
        .filter(|s| s.spec.task.networks.iter().any(|n| n.network_id == network.meta.id))
        .map(|s| s.spec.name.as_str())
        .collect();
    if !services.is_empty() {
        return Some(format!("service {}", services.join(", ")));
    }
    let users: Vec<String> = state
        .addresses()
        .used(&network.meta.id)
        .filter_map(|(_, holder)| match holder {
            AddressHolder::Task(id) => state.get_typed::<Task>(id).map(|t| format!("task {} ({})", t.name(), t.status.state)),
            AddressHolder::Container { node_id, sandbox_id } => {
                let node = state.get_typed::<Node>(node_id);
                let name = node
                    .and_then(|n| n.container_attachments.iter().find(|c| c.sandbox_id == *sandbox_id))
                    .map(|c| c.container_name.clone())
                    .unwrap_or_else(|| sandbox_id.clone());
                Some(format!("container {name} on {}", node.map(|n| n.hostname.as_str()).unwrap_or(node_id)))
            }
            _ => None,
        })
        .collect();
    (!users.is_empty()).then(|| users.join(", "))
}

/// A network by id, unique id prefix or name.
pub fn resolve_network<'a>(state: &'a StoreState, reference: &str) -> Result<&'a Network, ManagerError> {
    if let Some(network) = state.get_typed::<Network>(reference) {
        return Ok(network);
    }
    if let Some(Object::Network(network)) = state.find_by_name(Kind::Network, reference) {
        return Ok(network);
    }
    let matches: Vec<&Network> = state.list_typed::<Network>().filter(|n| n.meta.id.starts_with(reference)).collect();
    match matches.as_slice() {
        [one] if !reference.is_empty() => Ok(one),
        [] | [_] => Err(ManagerError::NotFound(format!(
            "network {reference:?} does not exist; create it with `shoal network create -d overlay {reference}`"
        ))),
        _ => Err(invalid(format!("network id prefix {reference:?} matches {} networks; give more of the id", matches.len()))),
    }
}

/// Turns the networks a service spec names (names, ids or id prefixes, as
/// the user typed them) into network ids, refusing unknown ones and
/// repeats.
pub fn resolve_attachments(state: &StoreState, attachments: &mut [NetworkAttachmentSpec]) -> Result<(), ManagerError> {
    let mut seen = std::collections::HashSet::new();
    for attachment in attachments.iter_mut() {
        let network = resolve_network(state, &attachment.network_id)?;
        if !seen.insert(network.meta.id.clone()) {
            return Err(invalid(format!("network {} is named twice; attach to each network once", network.spec.name)));
        }
        attachment.network_id = network.meta.id.clone();
    }
    Ok(())
}

/// A service publishing through the routing mesh joins the ingress network
/// (after its own networks, so they keep its default route); one that no
/// longer does leaves it.
pub fn attach_ingress(state: &StoreState, spec: &mut crate::store::ServiceSpec) -> Result<(), ManagerError> {
    let ingress = state.list_typed::<Network>().find(|n| n.spec.ingress);
    if let Some(ingress) = ingress {
        spec.task.networks.retain(|n| n.network_id != ingress.meta.id);
    }
    if !spec.endpoint.uses_ingress() {
        return Ok(());
    }
    let ingress = ingress.ok_or_else(|| {
        ManagerError::FailedPrecondition(format!(
            "service {} publishes ports through the routing mesh, but the swarm has no ingress network; publish with mode=host",
            spec.name
        ))
    })?;
    spec.task.networks.push(NetworkAttachmentSpec { network_id: ingress.meta.id.clone(), aliases: Vec::new() });
    Ok(())
}

/// Refuses a published port another service already publishes.
pub fn check_published_ports(state: &StoreState, spec: &crate::store::ServiceSpec, service_id: Option<&str>) -> Result<(), ManagerError> {
    for port in spec.endpoint.ports.iter().filter(|p| p.published_port > 0) {
        let taken = state.list_typed::<Service>().find(|other| {
            Some(other.meta.id.as_str()) != service_id
                && other.spec.endpoint.ports.iter().any(|p| p.published_port == port.published_port && p.protocol == port.protocol)
        });
        if let Some(other) = taken {
            return Err(ManagerError::FailedPrecondition(format!(
                "port {}/{} is already published by service {}; publish another port or remove it from {}",
                port.published_port,
                port.protocol.as_str(),
                other.spec.name,
                other.spec.name
            )));
        }
    }
    Ok(())
}

/// ADDRESS/PREFIX of `address` on `network`.
pub fn cidr(network: Option<&Network>, address: Ipv4Addr) -> String {
    format!("{address}/{}", network.map_or(32, |n| n.subnet.prefix_len()))
}

pub fn network_to_pb(state: &StoreState, network: &Network) -> pb::Network {
    let hostname = |node_id: &str| state.get_typed::<Node>(node_id).map(|n| n.hostname.clone()).unwrap_or_default();
    let mut attachments = Vec::new();
    let mut serving: BTreeMap<String, ()> = BTreeMap::new();
    for (address, holder) in state.addresses().used(&network.meta.id) {
        let address = cidr(Some(network), *address);
        let info = match holder {
            AddressHolder::Task(id) => {
                let Some(task) = state.get_typed::<Task>(id) else { continue };
                serving.insert(task.node_id.clone(), ());
                let aliases = task.networks.iter().find(|a| a.network_id == network.meta.id).map(|a| a.aliases.clone()).unwrap_or_default();
                pb::NetworkAttachmentInfo {
                    kind: pb::AttachmentKind::Task.into(),
                    id: id.clone(),
                    name: task.name(),
                    node_id: task.node_id.clone(),
                    node_hostname: hostname(&task.node_id),
                    address,
                    aliases,
                }
            }
            AddressHolder::Node(id) => {
                serving.insert(id.clone(), ());
                pb::NetworkAttachmentInfo {
                    kind: pb::AttachmentKind::Node.into(),
                    id: id.clone(),
                    name: hostname(id),
                    node_id: id.clone(),
                    node_hostname: hostname(id),
                    address,
                    aliases: Vec::new(),
                }
            }
            AddressHolder::Service(id) => pb::NetworkAttachmentInfo {
                kind: pb::AttachmentKind::Vip.into(),
                id: id.clone(),
                name: state.get_typed::<Service>(id).map(|s| s.spec.name.clone()).unwrap_or_default(),
                address,
                ..Default::default()
            },
            AddressHolder::Container { node_id, sandbox_id } => {
                serving.insert(node_id.clone(), ());
                let attachment = state
                    .get_typed::<Node>(node_id)
                    .and_then(|n| n.container_attachments.iter().find(|c| c.sandbox_id == *sandbox_id && c.network_id == network.meta.id));
                pb::NetworkAttachmentInfo {
                    kind: pb::AttachmentKind::Container.into(),
                    id: sandbox_id.clone(),
                    name: attachment.map(|c| c.container_name.clone()).unwrap_or_default(),
                    node_id: node_id.clone(),
                    node_hostname: hostname(node_id),
                    address,
                    aliases: attachment.map(|c| c.aliases.clone()).unwrap_or_default(),
                }
            }
        };
        attachments.push(info);
    }
    let nodes = serving
        .keys()
        .filter(|id| !id.is_empty())
        .filter_map(|id| state.get_typed::<Node>(id))
        .map(|node| pb::NetworkNodeInfo {
            node_id: node.meta.id.clone(),
            hostname: node.hostname.clone(),
            endpoint: data_path_endpoint(node),
            public_key: node.description.wireguard_public_key.clone(),
        })
        .collect();
    pb::Network {
        id: network.meta.id.clone(),
        spec: Some(pb::NetworkSpec {
            name: network.spec.name.clone(),
            labels: network.spec.labels.clone().into_iter().collect(),
            driver: match network.spec.driver {
                NetworkDriver::Overlay => pb::NetworkDriver::Overlay.into(),
            },
            subnet: network.subnet.to_string(),
            gateway: network.gateway.to_string(),
            attachable: network.spec.attachable,
            internal: network.spec.internal,
            options: network.spec.options.clone().into_iter().collect(),
            ingress: network.spec.ingress,
        }),
        scope: pb::NetworkScope::Swarm.into(),
        subnet: network.subnet.to_string(),
        gateway: network.gateway.to_string(),
        mtu: network.spec.mtu.unwrap_or(0),
        version: network.meta.version,
        created_at: rfc3339(network.meta.created_at),
        updated_at: rfc3339(network.meta.updated_at),
        attachments,
        nodes,
    }
}

/// ip:port of the node's WireGuard endpoint; empty until the node has
/// reported its key and port.
pub fn data_path_endpoint(node: &Node) -> String {
    if node.description.wireguard_public_key.is_empty() || node.description.data_path_port == 0 || node.addr.is_empty() {
        return String::new();
    }
    format!("{}:{}", node.addr, node.description.data_path_port)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::fixtures;

    fn state_with(networks: &[Network]) -> StoreState {
        let mut objects = vec![Object::Cluster(fixtures::cluster())];
        objects.extend(networks.iter().cloned().map(Object::Network));
        StoreState::from_objects(objects)
    }

    fn spec(name: &str) -> pb::NetworkSpec {
        pb::NetworkSpec { name: name.into(), ..Default::default() }
    }

    #[test]
    fn subnets_come_from_the_pool_around_existing_networks() {
        let state = state_with(&[fixtures::network("a", "first", "100.64.0.0/24")]);
        let network = network_from_spec(&state, spec("appnet")).unwrap();
        assert_eq!(network.subnet.to_string(), "100.64.1.0/24");
        assert_eq!(network.gateway, Ipv4Addr::new(100, 64, 1, 1));
        assert_eq!(network.spec.driver, NetworkDriver::Overlay);
    }

    #[test]
    fn bad_networks_are_refused_naming_the_value() {
        let state = state_with(&[fixtures::network("a", "first", "100.64.0.0/24")]);
        let refuse = |change: &dyn Fn(&mut pb::NetworkSpec)| {
            let mut spec = spec("appnet");
            change(&mut spec);
            network_from_spec(&state, spec).unwrap_err().to_string()
        };
        assert!(refuse(&|s| s.subnet = "100.64.0.128/25".into()).contains("overlaps subnet 100.64.0.0/24"));
        assert!(refuse(&|s| s.subnet = "banana".into()).contains("\"banana\""));
        assert!(refuse(&|s| s.subnet = "100.80.0.5/29".into()).contains("100.80.0.0/29"));
        assert!(refuse(&|s| {
            s.subnet = "100.80.0.0/24".into();
            s.gateway = "100.81.0.1".into();
        })
        .contains("gateway 100.81.0.1 is outside subnet 100.80.0.0/24"));
        assert!(refuse(&|s| s.gateway = "100.80.0.1".into()).contains("without a subnet"));
        assert!(refuse(&|s| {
            s.options.insert("mtu".into(), "1000".into());
        })
        .contains("\"1000\""));
        assert!(refuse(&|s| s.name = "first".into()).contains("already in use"));
        assert!(refuse(&|s| s.name = "bad name".into()).contains("\"bad name\""));
        assert!(refuse(&|s| s.driver = pb::NetworkDriver::Bridge.into()).contains("bridge driver"));
    }

    #[test]
    fn encrypted_is_accepted_and_mtu_is_read() {
        let state = state_with(&[]);
        let mut request = spec("appnet");
        request.options.insert("encrypted".into(), String::new());
        request.options.insert("mtu".into(), "1400".into());
        assert_eq!(network_from_spec(&state, request).unwrap().spec.mtu, Some(1400));
    }
}
