//! What one node must know of the overlay: the networks its tasks attach
//! to (and the routing mesh's ingress network, which every node serves),
//! the peers it shares them with, and the services it resolves and
//! balances ([`super::service_directory`]). Pushed on the node's
//! assignments stream, so a node learns of a peer or a backend (or loses
//! one) in the same message as the task changes that caused it.
//!
//! A node only hears of nodes it shares a network with, and of each peer
//! only the addresses on those shared networks: WireGuard drops anything a
//! peer sends from other addresses, which keeps networks apart across
//! nodes as well.

use std::collections::{BTreeMap, BTreeSet};

use shoal_proto::pb;

use super::networks::{cidr, data_path_endpoint};
use super::service_directory::service_directories;
use crate::store::{Network, Node, NodeStatus, StoreState, Task};

#[derive(Debug, Default, Clone, PartialEq)]
pub struct OverlayView {
    pub networks: BTreeMap<String, pb::NodeNetwork>,
    pub peers: BTreeMap<String, pb::OverlayPeer>,
    pub services: BTreeMap<String, pb::ServiceDirectory>,
}

/// Addresses that sit behind each node, per network: its running tasks',
/// its standalone containers', and its own.
#[derive(Default)]
struct Membership<'a> {
    /// node id -> network id -> addresses.
    addresses: BTreeMap<&'a str, BTreeMap<&'a str, BTreeSet<std::net::Ipv4Addr>>>,
}

impl<'a> Membership<'a> {
    fn of(state: &'a StoreState) -> Self {
        let mut membership = Membership::default();
        for task in state.list_typed::<Task>() {
            if task.node_id.is_empty() || task.status.state.is_terminal() {
                continue;
            }
            for attachment in &task.networks {
                membership.add(&task.node_id, &attachment.network_id, attachment.address);
            }
        }
        let ingress = state.list_typed::<Network>().find(|n| n.spec.ingress).map(|n| n.meta.id.as_str());
        for node in state.list_typed::<Node>() {
            for container in &node.container_attachments {
                membership.add(&node.meta.id, &container.network_id, container.address);
            }
            // Every node serves the routing mesh, from its own address there.
            if let Some(ingress) = ingress {
                let entry = membership.addresses.entry(&node.meta.id).or_default().entry(ingress).or_default();
                entry.extend(node.network_addresses.get(ingress));
            }
        }
        membership
    }

    fn add(&mut self, node_id: &'a str, network_id: &'a str, address: std::net::Ipv4Addr) {
        self.addresses.entry(node_id).or_default().entry(network_id).or_default().insert(address);
    }

    fn networks_of(&self, node_id: &str) -> BTreeSet<&'a str> {
        self.addresses.get(node_id).map(|n| n.keys().copied().collect()).unwrap_or_default()
    }
}

pub fn overlay_view(state: &StoreState, node_id: &str) -> OverlayView {
    let membership = Membership::of(state);
    let mine = membership.networks_of(node_id);
    let mut view = OverlayView::default();
    if mine.is_empty() {
        return view;
    }
    let own_addresses = state.get_typed::<Node>(node_id).map(|n| &n.network_addresses);
    for network_id in &mine {
        let Some(network) = state.get_typed::<Network>(network_id) else { continue };
        let mut served = node_network(network, own_addresses.and_then(|a| a.get(*network_id)));
        served.containers = containers_on(state, network);
        view.networks.insert(network.meta.id.clone(), served);
    }
    view.services = service_directories(state, &mine);
    for (peer_id, networks) in &membership.addresses {
        if *peer_id == node_id {
            continue;
        }
        let Some(peer) = state.get_typed::<Node>(peer_id) else { continue };
        let endpoint = data_path_endpoint(peer);
        // A down node's tasks are being replaced; its entry goes, and comes
        // back with it.
        if peer.status == NodeStatus::Down || endpoint.is_empty() {
            continue;
        }
        let mut allowed: BTreeSet<String> = BTreeSet::new();
        for (network_id, addresses) in networks {
            if !mine.contains(network_id) {
                continue;
            }
            allowed.extend(addresses.iter().map(|a| format!("{a}/32")));
            // Its own address on the network is among `addresses` for the
            // ingress network; on the others it is added here.
            if let Some(own) = peer.network_addresses.get(*network_id) {
                allowed.insert(format!("{own}/32"));
            }
        }
        if allowed.is_empty() {
            continue;
        }
        view.peers.insert(
            peer.meta.id.clone(),
            pb::OverlayPeer {
                node_id: peer.meta.id.clone(),
                hostname: peer.hostname.clone(),
                public_key: peer.description.wireguard_public_key.clone(),
                endpoint,
                allowed_ips: allowed.into_iter().collect(),
            },
        );
    }
    view
}

pub(crate) fn node_network(network: &Network, node_address: Option<&std::net::Ipv4Addr>) -> pb::NodeNetwork {
    pb::NodeNetwork {
        id: network.meta.id.clone(),
        name: network.spec.name.clone(),
        subnet: network.subnet.to_string(),
        gateway: network.gateway.to_string(),
        node_address: node_address.map(|a| a.to_string()).unwrap_or_default(),
        mtu: network.spec.mtu.unwrap_or(0),
        internal: network.spec.internal,
        version: network.meta.version,
        ingress: network.spec.ingress,
        containers: Vec::new(),
    }
}

/// The standalone containers on `network`, on any node, for names.
fn containers_on(state: &StoreState, network: &Network) -> Vec<pb::NamedAddress> {
    state
        .list_typed::<Node>()
        .flat_map(|n| &n.container_attachments)
        .filter(|c| c.network_id == network.meta.id && !c.container_name.is_empty())
        .map(|c| pb::NamedAddress { name: c.container_name.clone(), address: cidr(Some(network), c.address), aliases: c.aliases.clone() })
        .collect()
}

/// What changed between two views, as the assignments stream sends it.
pub fn diff(sent: &OverlayView, current: &OverlayView, message: &mut pb::AssignmentsMessage) {
    message.networks_removed = sent.networks.keys().filter(|id| !current.networks.contains_key(*id)).cloned().collect();
    message.networks_changed =
        current.networks.iter().filter(|(id, n)| message.full || sent.networks.get(*id) != Some(n)).map(|(_, n)| n.clone()).collect();
    message.peers_removed = sent.peers.keys().filter(|id| !current.peers.contains_key(*id)).cloned().collect();
    message.peers_changed =
        current.peers.iter().filter(|(id, p)| message.full || sent.peers.get(*id) != Some(p)).map(|(_, p)| p.clone()).collect();
    message.services_removed = sent.services.keys().filter(|id| !current.services.contains_key(*id)).cloned().collect();
    message.services_changed =
        current.services.iter().filter(|(id, d)| message.full || sent.services.get(*id) != Some(d)).map(|(_, d)| d.clone()).collect();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{fixtures, NetworkAttachment, Object, TaskState};

    fn node(id: &str, key: &str) -> Node {
        let mut node = fixtures::node(id);
        node.addr = format!("198.18.0.{}", id.len());
        node.description.wireguard_public_key = key.into();
        node.description.data_path_port = 51820;
        node
    }

    fn task_on(id: &str, node: &str, network: &str, address: [u8; 4]) -> Task {
        let mut task = fixtures::task(id, "web", TaskState::Running);
        task.node_id = node.into();
        task.networks = vec![NetworkAttachment { network_id: network.into(), address: address.into(), aliases: vec![] }];
        task
    }

    fn world() -> StoreState {
        StoreState::from_objects([
            Object::Network(fixtures::network("red", "red", "100.64.1.0/24")),
            Object::Network(fixtures::network("blue", "blue", "100.64.2.0/24")),
            Object::Node(node("a", "KA")),
            Object::Node(node("bb", "KB")),
            Object::Node(node("ccc", "KC")),
            Object::Task(task_on("t1", "a", "red", [100, 64, 1, 2])),
            Object::Task(task_on("t2", "bb", "red", [100, 64, 1, 3])),
            Object::Task(task_on("t3", "bb", "blue", [100, 64, 2, 2])),
            Object::Task(task_on("t4", "ccc", "blue", [100, 64, 2, 3])),
        ])
    }

    #[test]
    fn a_node_hears_only_of_peers_and_addresses_on_its_networks() {
        let state = world();
        let a = overlay_view(&state, "a");
        assert_eq!(a.networks.keys().collect::<Vec<_>>(), ["red"]);
        assert_eq!(a.peers.keys().collect::<Vec<_>>(), ["bb"], "ccc shares no network with a");
        assert_eq!(a.peers["bb"].allowed_ips, ["100.64.1.3/32"], "not bb's blue task");
        assert_eq!(a.peers["bb"].endpoint, "198.18.0.2:51820");
        let b = overlay_view(&state, "bb");
        assert_eq!(b.peers.keys().collect::<Vec<_>>(), ["a", "ccc"]);
        assert_eq!(b.peers["ccc"].allowed_ips, ["100.64.2.3/32"]);
    }

    #[test]
    fn a_down_node_leaves_its_peers_and_an_ended_task_its_addresses() {
        let mut state = world();
        let mut down = node("bb", "KB");
        down.status = NodeStatus::Down;
        state = StoreState::from_objects(state.all_objects().cloned().filter(|o| o.id() != "bb").chain([Object::Node(down)]));
        assert!(overlay_view(&state, "a").peers.is_empty());

        let mut ended = task_on("t2", "bb", "red", [100, 64, 1, 3]);
        ended.status.state = TaskState::Failed;
        let state = StoreState::from_objects(world().all_objects().cloned().filter(|o| o.id() != "t2").chain([Object::Task(ended)]));
        let a = overlay_view(&state, "a");
        assert!(a.peers.is_empty(), "bb no longer serves red: {a:?}");
    }

    #[test]
    fn a_standalone_container_makes_its_node_a_peer_on_its_network() {
        let mut ccc = node("ccc", "KC");
        ccc.container_attachments.push(crate::store::ContainerAttachment {
            sandbox_id: "ctr-1".into(),
            container_name: "debug".into(),
            network_id: "red".into(),
            address: [100, 64, 1, 9].into(),
            aliases: vec![],
        });
        let state = StoreState::from_objects(world().all_objects().cloned().filter(|o| o.id() != "ccc").chain([Object::Node(ccc.clone())]));
        let a = overlay_view(&state, "a");
        assert_eq!(a.peers["ccc"].allowed_ips, ["100.64.1.9/32"], "only the container's address on red");
        assert!(overlay_view(&state, "ccc").networks.contains_key("red"));
        // The address is held: a task cannot take it too.
        let mut thief = task_on("t9", "a", "red", [100, 64, 1, 9]);
        thief.meta.version = 0;
        let mut store = state.clone();
        let refused = store.apply(99, &crate::store::Transaction::single(crate::store::Op::Create(Object::Task(thief)))).0;
        assert!(matches!(refused, Err(crate::store::TxnError::AddressInUse { .. })), "{refused:?}");
    }

    fn service(id: &str, networks: &[&str], mode: crate::store::EndpointMode) -> crate::store::Service {
        crate::store::Service {
            meta: crate::store::Meta { id: id.into(), ..Default::default() },
            spec: crate::store::ServiceSpec {
                name: id.into(),
                labels: Default::default(),
                mode: crate::store::ServiceMode::Replicated { replicas: 1 },
                task: crate::store::TaskSpec {
                    networks: networks
                        .iter()
                        .map(|n| crate::store::NetworkAttachmentSpec { network_id: n.to_string(), aliases: vec![format!("{id}-alias")] })
                        .collect(),
                    ..Default::default()
                },
                restart: Default::default(),
                placement: Default::default(),
                endpoint: crate::store::EndpointSpec { mode, ports: vec![] },
                update: Default::default(),
                rollback: Default::default(),
                depends_on: Vec::new(),
            },
            spec_version: 1,
            vips: networks.iter().map(|n| crate::store::Vip { network_id: n.to_string(), address: [100, 64, 1, 200].into() }).collect(),
            previous_spec: None,
            update_status: None,
        }
    }

    #[test]
    fn services_are_listed_with_running_tasks_on_the_nodes_networks_only() {
        let mut web_task = task_on("t1", "a", "red", [100, 64, 1, 2]);
        web_task.service_id = "web".into();
        let mut stopping = task_on("t2", "bb", "red", [100, 64, 1, 3]);
        stopping.service_id = "web".into();
        stopping.desired_state = TaskState::Shutdown;
        let base = world();
        let objects = base
            .all_objects()
            .cloned()
            .filter(|o| o.id() != "t1" && o.id() != "t2")
            .chain([
                Object::Task(web_task),
                Object::Task(stopping),
                Object::Service(service("web", &["red"], crate::store::EndpointMode::Vip)),
                Object::Service(service("db", &["blue"], crate::store::EndpointMode::Dnsrr)),
            ]);
        let state = StoreState::from_objects(objects);
        let a = overlay_view(&state, "a");
        assert_eq!(a.services.keys().collect::<Vec<_>>(), ["web"], "db is on blue, which a does not serve");
        let web = &a.services["web"];
        assert_eq!(web.vips[0].address, "100.64.1.200/24");
        assert_eq!(web.aliases[0].aliases, ["web-alias"]);
        assert_eq!(web.tasks.len(), 1, "the task being stopped is no backend: {web:?}");
        assert_eq!(web.tasks[0].name, "web.1.t1");
        let ccc = overlay_view(&state, "ccc");
        assert!(ccc.services["db"].vips.is_empty(), "dnsrr has no VIP");
    }

    #[test]
    fn every_node_serves_the_ingress_network_and_peers_over_it() {
        let mut ingress = fixtures::network("ing", "ingress", "100.64.0.0/24");
        ingress.spec.ingress = true;
        let mut lone = node("dddd", "KD");
        lone.network_addresses.insert("ing".into(), [100, 64, 0, 9].into());
        let base = world();
        let state = StoreState::from_objects(base.all_objects().cloned().chain([Object::Network(ingress), Object::Node(lone)]));
        let a = overlay_view(&state, "a");
        assert!(a.networks.contains_key("ing"));
        assert!(a.networks["ing"].ingress);
        assert_eq!(a.peers["dddd"].allowed_ips, ["100.64.0.9/32"], "a node with no task is a peer on ingress");
        // ccc shares nothing with a and has no address on ingress yet.
        assert_eq!(a.peers.keys().collect::<Vec<_>>(), ["bb", "dddd"]);
    }

    #[test]
    fn diffs_carry_only_what_changed() {
        let state = world();
        let before = overlay_view(&state, "bb");
        let mut after = before.clone();
        after.peers.remove("ccc");
        let mut message = pb::AssignmentsMessage::default();
        diff(&before, &after, &mut message);
        assert_eq!(message.peers_removed, ["ccc"]);
        assert!(message.peers_changed.is_empty() && message.networks_changed.is_empty());
        let mut full = pb::AssignmentsMessage { full: true, ..Default::default() };
        diff(&OverlayView::default(), &after, &mut full);
        assert_eq!(full.networks_changed.len(), 2);
    }
}
