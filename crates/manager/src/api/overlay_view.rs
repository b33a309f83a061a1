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

use std::net::Ipv4Addr;

use super::networks::{cidr, data_path_endpoint};
use super::service_directory::{directory_on, service_directories, task_entry_on};
use crate::store::{Change, Network, Node, NodeStatus, Object, Service, StoreState};

#[derive(Debug, Default, Clone, PartialEq)]
pub struct OverlayView {
    pub networks: BTreeMap<String, pb::NodeNetwork>,
    pub peers: BTreeMap<String, pb::OverlayPeer>,
    pub services: BTreeMap<String, pb::ServiceDirectory>,
    /// Whether the node ran a routing-mesh task when the view was made
    /// (it then peers with every node on ingress; see [`Viewer`]).
    pub runs_mesh_tasks: bool,
}

/// The addresses that sit behind one node, per network: its live tasks',
/// its standalone containers', and its own on the ingress network (every
/// node serves the routing mesh). The networks it serves are the keys.
fn addresses_behind<'a>(state: &'a StoreState, node_id: &str, ingress: Option<&'a str>) -> BTreeMap<&'a str, BTreeSet<Ipv4Addr>> {
    let mut addresses: BTreeMap<&str, BTreeSet<Ipv4Addr>> = BTreeMap::new();
    for (network_id, held) in state.task_addresses_on_node(node_id).into_iter().flatten() {
        addresses.entry(network_id.as_str()).or_default().extend(held);
    }
    if let Some(node) = state.get_typed::<Node>(node_id) {
        for container in &node.container_attachments {
            addresses.entry(container.network_id.as_str()).or_default().insert(container.address);
        }
        if let Some(ingress) = ingress {
            addresses.entry(ingress).or_default().extend(node.network_addresses.get(ingress));
        }
    }
    addresses
}

fn ingress_of(state: &StoreState) -> Option<&str> {
    state.list_typed::<Network>().find(|n| n.spec.ingress).map(|n| n.meta.id.as_str())
}

/// Whether `node_id` runs a task of a service publishing through the
/// routing mesh (a task on the ingress network).
fn runs_mesh_tasks(state: &StoreState, node_id: &str, ingress: Option<&str>) -> bool {
    let Some(ingress) = ingress else { return false };
    state.task_addresses_on_node(node_id).and_then(|held| held.get(ingress)).is_some_and(|addresses| !addresses.is_empty())
}

/// Who the routing mesh makes peers on the ingress network. Every node
/// serves the mesh, but traffic on ingress only goes from the node a
/// client reached to a node running a published service's task, and back:
/// two nodes are ingress peers only when one of them runs such a task.
/// Peering every node with every other (as the network's membership alone
/// would) costs N x N WireGuard peers and view entries, and a message to
/// every node whenever any node comes or goes.
#[derive(Clone, Copy)]
struct Viewer<'a> {
    ingress: Option<&'a str>,
    runs_mesh_tasks: bool,
}

impl<'a> Viewer<'a> {
    fn of(state: &'a StoreState, node_id: &str) -> Self {
        let ingress = ingress_of(state);
        Viewer { ingress, runs_mesh_tasks: runs_mesh_tasks(state, node_id, ingress) }
    }
}

/// `peer`'s entry in the view of a node serving `mine`: its endpoint and
/// its addresses on those networks; `None` when it shares none of them,
/// is down, or has no data path.
fn peer_entry(state: &StoreState, mine: &BTreeSet<&str>, peer: &Node, viewer: Viewer<'_>) -> Option<pb::OverlayPeer> {
    let ingress = viewer.ingress;
    let endpoint = data_path_endpoint(peer);
    // A down node's tasks are being replaced; its entry goes, and comes
    // back with it.
    if peer.status == NodeStatus::Down || endpoint.is_empty() {
        return None;
    }
    let mut allowed: BTreeSet<String> = BTreeSet::new();
    for (network_id, addresses) in addresses_behind(state, &peer.meta.id, ingress) {
        if !mine.contains(network_id) {
            continue;
        }
        if Some(network_id) == ingress && !viewer.runs_mesh_tasks && !runs_mesh_tasks(state, &peer.meta.id, ingress) {
            continue;
        }
        allowed.extend(addresses.iter().map(|a| format!("{a}/32")));
        // Its own address on the network is among `addresses` for the
        // ingress network; on the others it is added here.
        if let Some(own) = peer.network_addresses.get(network_id) {
            allowed.insert(format!("{own}/32"));
        }
    }
    if allowed.is_empty() {
        return None;
    }
    Some(pb::OverlayPeer {
        node_id: peer.meta.id.clone(),
        hostname: peer.hostname.clone(),
        public_key: peer.description.wireguard_public_key.clone(),
        endpoint,
        allowed_ips: allowed.into_iter().collect(),
    })
}

pub fn overlay_view(state: &StoreState, node_id: &str) -> OverlayView {
    let viewer = Viewer::of(state, node_id);
    let ingress = viewer.ingress;
    let mine: BTreeSet<&str> = addresses_behind(state, node_id, ingress).into_keys().collect();
    let mut view = OverlayView { runs_mesh_tasks: viewer.runs_mesh_tasks, ..Default::default() };
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
    for peer in state.list_typed::<Node>().filter(|p| p.meta.id != node_id) {
        if let Some(entry) = peer_entry(state, &mine, peer, viewer) {
            view.peers.insert(peer.meta.id.clone(), entry);
        }
    }
    view
}

/// What of one node's view a batch of store changes can alter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViewChanges {
    Nothing,
    /// The node's own networks may have changed (or a network did):
    /// the view is rebuilt and diffed whole.
    Everything,
    /// Only these entries: the cost is theirs, not the swarm's.
    Entries {
        peers: BTreeSet<String>,
        services: BTreeSet<String>,
        /// Tasks that changed, by service: each only its own entry.
        tasks: BTreeMap<String, BTreeSet<String>>,
        /// A node's standalone containers changed: the networks' names.
        containers: bool,
        /// Some of the node's own tasks changed.
        own_tasks: bool,
    },
}

impl ViewChanges {
    /// What `self` and `later` alter together.
    pub fn merge(&mut self, later: ViewChanges) {
        match (&mut *self, later) {
            (ViewChanges::Everything, _) | (_, ViewChanges::Nothing) => {}
            (this @ ViewChanges::Nothing, later) => *this = later,
            (this, ViewChanges::Everything) => *this = ViewChanges::Everything,
            (
                ViewChanges::Entries { peers, services, tasks, containers, own_tasks },
                ViewChanges::Entries { peers: more_peers, services: more_services, tasks: more_tasks, containers: more_containers, own_tasks: more_own },
            ) => {
                peers.extend(more_peers);
                services.extend(more_services);
                for (service, ids) in more_tasks {
                    tasks.entry(service).or_default().extend(ids);
                }
                *containers |= more_containers;
                *own_tasks |= more_own;
            }
        }
    }

    /// What `changes` can alter in `node_id`'s view.
    pub fn of(changes: &[Change], node_id: &str) -> ViewChanges {
        let mut peers = BTreeSet::new();
        let mut services = BTreeSet::new();
        let mut tasks: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut containers = false;
        let mut own_tasks = false;
        let objects = changes.iter().flat_map(|change| match change {
            Change::Created(o) | Change::Deleted(o) => [Some(o), None],
            Change::Updated { old, new } => [Some(old), Some(new)],
        });
        for object in objects.flatten() {
            match object {
                Object::Network(_) => return ViewChanges::Everything,
                // Its own status or description is nothing to its view.
                Object::Node(node) if node.meta.id == node_id && own_membership_changed(changes, node_id) => return ViewChanges::Everything,
                Object::Node(node) if node.meta.id == node_id => {}
                Object::Node(node) => {
                    peers.insert(node.meta.id.clone());
                    containers |= !node.container_attachments.is_empty();
                }
                // A task on no network is nobody's peer or backend.
                Object::Task(task) if task.networks.is_empty() => {}
                // Its own task: a backend in its service's records like any
                // other, unless it changes which networks the node serves
                // ([`update_entries`] checks that).
                Object::Task(task) if task.node_id == node_id => {
                    own_tasks = true;
                    tasks.entry(task.service_id.clone()).or_default().insert(task.meta.id.clone());
                }
                Object::Task(task) => {
                    peers.insert(task.node_id.clone());
                    tasks.entry(task.service_id.clone()).or_default().insert(task.meta.id.clone());
                }
                Object::Service(service) => {
                    services.insert(service.meta.id.clone());
                }
                _ => {}
            }
        }
        if peers.is_empty() && services.is_empty() && tasks.is_empty() && !containers {
            return ViewChanges::Nothing;
        }
        ViewChanges::Entries { peers, services, tasks, containers, own_tasks }
    }
}

/// Whether the node's own addresses (on networks, of its standalone
/// containers) changed: what decides which networks it serves.
fn own_membership_changed(changes: &[Change], node_id: &str) -> bool {
    let membership = |object: &Object| match object {
        Object::Node(node) if node.meta.id == node_id => Some((node.network_addresses.clone(), node.container_attachments.clone())),
        _ => None,
    };
    changes.iter().any(|change| match change {
        Change::Updated { old, new } => membership(old).is_some() && membership(old) != membership(new),
        Change::Created(o) | Change::Deleted(o) => membership(o).is_some(),
    })
}

/// Brings `sent` (the view a node has) up to date with the store for the
/// entries `changes` names, and puts what changed into `message`. Without
/// cloning or rebuilding the view: a peer joining a swarm of N nodes costs
/// each of them one entry, not N. Returns `false`, having changed nothing,
/// when the node's own tasks changed which networks it serves (or whether
/// it runs routing-mesh tasks): then only a rebuild gives the right view.
#[must_use]
pub fn update_entries(state: &StoreState, node_id: &str, sent: &mut OverlayView, changes: &ViewChanges, message: &mut pb::AssignmentsMessage) -> bool {
    let ViewChanges::Entries { peers, services, tasks, containers, own_tasks } = changes else { return true };
    let viewer = Viewer::of(state, node_id);
    if *own_tasks {
        let mine = addresses_behind(state, node_id, viewer.ingress);
        if viewer.runs_mesh_tasks != sent.runs_mesh_tasks || !mine.keys().copied().eq(sent.networks.keys().map(String::as_str)) {
            return false;
        }
    }
    if sent.networks.is_empty() {
        // On no network: nothing to hear of.
        return true;
    }
    let mine: BTreeSet<&str> = sent.networks.keys().map(String::as_str).collect();
    for peer_id in peers.iter().filter(|p| *p != node_id) {
        let entry = state.get_typed::<Node>(peer_id).and_then(|peer| peer_entry(state, &mine, peer, viewer));
        update(&mut sent.peers, peer_id, entry, &mut message.peers_changed, &mut message.peers_removed);
    }
    for service_id in services {
        let directory = state.get_typed::<Service>(service_id).and_then(|service| directory_on(state, service, &mine));
        update(&mut sent.services, service_id, directory, &mut message.services_changed, &mut message.services_removed);
    }
    for (service_id, task_ids) in tasks.iter().filter(|(id, _)| !services.contains(*id)) {
        let Some(service) = state.get_typed::<Service>(service_id) else { continue };
        let Some(directory) = sent.services.get_mut(service_id) else {
            // Not sent yet (its first change on this node's networks): whole.
            let directory = directory_on(state, service, &mine);
            update(&mut sent.services, service_id, directory, &mut message.services_changed, &mut message.services_removed);
            continue;
        };
        let mut delta = pb::ServiceTasks { service_id: service_id.clone(), ..Default::default() };
        for task_id in task_ids {
            let entry = task_entry_on(state, service, task_id, &mine);
            let at = directory.tasks.binary_search_by(|t| t.id.as_str().cmp(task_id));
            match (entry, at) {
                (Some(entry), Ok(i)) if directory.tasks[i] == entry => {}
                (Some(entry), Ok(i)) => {
                    directory.tasks[i] = entry.clone();
                    delta.changed.push(entry);
                }
                (Some(entry), Err(i)) => {
                    directory.tasks.insert(i, entry.clone());
                    delta.changed.push(entry);
                }
                (None, Ok(i)) => {
                    directory.tasks.remove(i);
                    delta.removed.push(task_id.clone());
                }
                (None, Err(_)) => {}
            }
        }
        if !delta.changed.is_empty() || !delta.removed.is_empty() {
            message.service_tasks_changed.push(delta);
        }
    }
    if *containers {
        for (network_id, served) in sent.networks.iter_mut() {
            let Some(network) = state.get_typed::<Network>(network_id) else { continue };
            let named = containers_on(state, network);
            if served.containers != named {
                served.containers = named;
                message.networks_changed.push(served.clone());
            }
        }
    }
    true
}

/// Sets one entry of a sent map, noting a change or a removal.
fn update<T: Clone + PartialEq>(sent: &mut BTreeMap<String, T>, id: &str, current: Option<T>, changed: &mut Vec<T>, removed: &mut Vec<String>) {
    match current {
        Some(current) if sent.get(id) != Some(&current) => {
            changed.push(current.clone());
            sent.insert(id.to_string(), current);
        }
        Some(_) => {}
        None => {
            if sent.remove(id).is_some() {
                removed.push(id.to_string());
            }
        }
    }
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
    use crate::store::{fixtures, NetworkAttachment, Object, Op, Task, TaskState, Transaction};

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
    fn every_node_serves_the_ingress_network_but_peers_over_it_only_with_mesh_tasks() {
        let mut ingress = fixtures::network("ing", "ingress", "100.64.0.0/24");
        ingress.spec.ingress = true;
        let mut lone = node("dddd", "KD");
        lone.network_addresses.insert("ing".into(), [100, 64, 0, 9].into());
        let base = world();
        let with_ingress = |extra: Vec<Object>| {
            let objects = base.all_objects().cloned().map(|o| match o {
                Object::Node(mut n) if n.meta.id == "a" => {
                    n.network_addresses.insert("ing".into(), [100, 64, 0, 2].into());
                    Object::Node(n)
                }
                other => other,
            });
            StoreState::from_objects(objects.chain([Object::Network(ingress.clone()), Object::Node(lone.clone())]).chain(extra))
        };
        // Nobody publishes through the mesh: no ingress peers at all.
        let state = with_ingress(Vec::new());
        let a = overlay_view(&state, "a");
        assert!(a.networks["ing"].ingress, "every node serves the mesh");
        assert_eq!(a.peers.keys().collect::<Vec<_>>(), ["bb"], "only the node a shares red with");
        assert!(overlay_view(&state, "dddd").peers.is_empty());
        // dddd runs a published service's task: every node peers with it.
        let state = with_ingress(vec![Object::Task(task_on("mesh", "dddd", "ing", [100, 64, 0, 20]))]);
        let a = overlay_view(&state, "a");
        assert_eq!(a.peers["dddd"].allowed_ips, ["100.64.0.20/32", "100.64.0.9/32"], "its task and its own address");
        let dddd = overlay_view(&state, "dddd");
        assert_eq!(dddd.peers["a"].allowed_ips, ["100.64.0.2/32"], "the mesh's replies go back to a's ingress address");
        assert!(!dddd.peers.contains_key("ccc"), "ccc has no address on ingress yet");
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

    /// Applies `ops` and brings `node`'s sent view up to date entry by
    /// entry, as its stream does; returns it with the message sent.
    fn updated(state: &mut StoreState, node: &str, ops: Vec<Op>) -> (OverlayView, pb::AssignmentsMessage) {
        let mut sent = overlay_view(state, node);
        let (outcome, changes) = state.apply(1000, &Transaction::new(ops));
        outcome.expect("the change applies");
        let mut message = pb::AssignmentsMessage::default();
        match ViewChanges::of(&changes, node) {
            ViewChanges::Everything => panic!("a change of others' tasks and nodes rebuilt {node}'s whole view"),
            entries => assert!(update_entries(state, node, &mut sent, &entries, &mut message), "{node}'s networks did not change"),
        }
        (sent, message)
    }

    #[test]
    fn entry_updates_arrive_at_the_view_a_rebuild_gives() {
        // Another node's task on a shared network ends: its address goes.
        let mut state = world();
        let mut ended = task_on("t2", "bb", "red", [100, 64, 1, 3]);
        ended.status.state = TaskState::Failed;
        let (sent, message) = updated(&mut state, "a", vec![Op::Update { object: Object::Task(ended), expected_version: None }]);
        assert_eq!(sent, overlay_view(&state, "a"));
        assert_eq!(message.peers_removed, ["bb"]);

        // A node joins a shared network with a new task: one peer entry.
        let mut state = world();
        let (sent, message) = updated(&mut state, "a", vec![Op::Create(Object::Task(task_on("t5", "ccc", "red", [100, 64, 1, 5])))]);
        assert_eq!(sent, overlay_view(&state, "a"));
        assert_eq!(message.peers_changed.len(), 1, "only ccc's entry is sent: {message:?}");

        // A peer goes down: its entry goes; a node on no shared network changes nothing.
        let mut state = world();
        let mut down = node("bb", "KB");
        down.status = NodeStatus::Down;
        let (sent, message) = updated(&mut state, "a", vec![Op::Update { object: Object::Node(down), expected_version: None }]);
        assert_eq!(sent, overlay_view(&state, "a"));
        assert_eq!(message.peers_removed, ["bb"]);
        let mut state = world();
        let mut renamed = node("ccc", "KC2");
        renamed.hostname = "elsewhere".into();
        let (sent, message) = updated(&mut state, "a", vec![Op::Update { object: Object::Node(renamed), expected_version: None }]);
        assert_eq!(sent, overlay_view(&state, "a"));
        assert!(message.peers_changed.is_empty() && message.peers_removed.is_empty());
    }

    #[test]
    fn a_task_starting_or_ending_sends_its_own_record_not_its_services_list() {
        let with_web = |state: StoreState| {
            let mut objects: Vec<Object> = state.all_objects().cloned().collect();
            objects.push(Object::Service(service("web", &["red"], crate::store::EndpointMode::Vip)));
            StoreState::from_objects(objects)
        };
        let mut started = task_on("t8", "ccc", "red", [100, 64, 1, 8]);
        started.service_id = "web".into();
        let mut state = with_web(world());
        let (sent, message) = updated(&mut state, "a", vec![Op::Create(Object::Task(started.clone()))]);
        assert_eq!(sent, overlay_view(&state, "a"));
        assert!(message.services_changed.is_empty(), "the service's whole directory was resent: {message:?}");
        assert_eq!(message.service_tasks_changed.len(), 1);
        assert_eq!(message.service_tasks_changed[0].changed.len(), 1);
        assert_eq!(message.service_tasks_changed[0].changed[0].id, "t8");

        let mut ended = started;
        ended.status.state = TaskState::Failed;
        let (sent, message) = updated(&mut state, "a", vec![Op::Update { object: Object::Task(ended), expected_version: None }]);
        assert_eq!(sent, overlay_view(&state, "a"));
        assert!(message.services_changed.is_empty());
        assert_eq!(message.service_tasks_changed[0].removed, ["t8"]);
    }

    #[test]
    fn a_change_of_the_nodes_own_networks_rebuilds_its_view() {
        // Its own task on a network it did not serve: entries cannot do.
        let mut state = world();
        let mut sent = overlay_view(&state, "a");
        let (outcome, changes) = state.apply(1000, &Transaction::new(vec![Op::Create(Object::Task(task_on("t6", "a", "blue", [100, 64, 2, 6])))]));
        outcome.expect("the change applies");
        let entries = ViewChanges::of(&changes, "a");
        assert!(!update_entries(&state, "a", &mut sent, &entries, &mut pb::AssignmentsMessage::default()));
        // Another task of its own on a network it serves already: entries do.
        let (sent, _) = updated(&mut state, "a", vec![Op::Create(Object::Task(task_on("t9", "a", "blue", [100, 64, 2, 9])))]);
        assert_eq!(sent, overlay_view(&state, "a"));
        let elsewhere = Change::Created(Object::Task(fixtures::task("t7", "web", TaskState::Running)));
        assert_eq!(ViewChanges::of(&[elsewhere], "a"), ViewChanges::Nothing, "a task on no network is nobody's peer");
        let mut ready = node("a", "KA");
        ready.status = NodeStatus::Ready;
        let status_only = Change::Updated { old: Object::Node(node("a", "KA")), new: Object::Node(ready.clone()) };
        assert_eq!(ViewChanges::of(&[status_only], "a"), ViewChanges::Nothing, "its own status is nothing to its view");
        let mut addressed = ready.clone();
        addressed.network_addresses.insert("red".into(), [100, 64, 1, 200].into());
        let addressed = Change::Updated { old: Object::Node(ready), new: Object::Node(addressed) };
        assert_eq!(ViewChanges::of(&[addressed], "a"), ViewChanges::Everything);
    }
}
