//! The load balancer's rules as a function of the directory, without a kernel.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};

use super::*;
use crate::directory::{NetworkAddress, ServicePort as DirectoryPort};
use crate::wireguard::PublicKey;

const FRONT: &str = "front0123456789";
const INGRESS: &str = "ingress12345678";
const CLOSED: &str = "closed123456789";

fn network(id: &str, subnet: &str, ingress: bool, internal: bool) -> OverlayNetwork {
    let subnet: ipnet::Ipv4Net = subnet.parse().unwrap();
    let base = u32::from(subnet.network());
    OverlayNetwork {
        id: id.into(),
        name: id.into(),
        subnet,
        gateway: Ipv4Addr::from(base + 1),
        node_address: Some(Ipv4Addr::from(base + 250)),
        mtu: None,
        internal,
        ingress,
    }
}

fn networks() -> BTreeMap<String, OverlayNetwork> {
    [network(FRONT, "100.64.1.0/24", false, false), network(INGRESS, "100.64.0.0/24", true, false), network(CLOSED, "100.64.9.0/24", false, true)]
        .into_iter()
        .map(|n| (n.id.clone(), n))
        .collect()
}

/// The other node runs every task whose last octet is odd.
fn peers() -> Vec<OverlayPeer> {
    vec![OverlayPeer {
        node_id: "other".into(),
        public_key: PublicKey::from_bytes([7; 32]),
        endpoint: SocketAddr::from(([198, 18, 0, 2], 51820)),
        allowed_ips: ["100.64.1.3/32", "100.64.0.3/32", "100.64.1.5/32", "100.64.0.5/32", "100.64.0.251/32"].iter().map(|s| s.parse().unwrap()).collect(),
    }]
}

fn address(network: &str, address: &str) -> NetworkAddress {
    NetworkAddress { network_id: network.into(), address: address.parse().unwrap() }
}

fn task(id: &str, addresses: Vec<NetworkAddress>) -> TaskEntry {
    TaskEntry { id: id.into(), name: format!("web.{id}"), node_id: String::new(), addresses }
}

fn port(published: u16, mode: PublishMode) -> DirectoryPort {
    DirectoryPort { protocol: Protocol::Tcp, target: 80, published, mode }
}

/// web: 3 tasks on front and ingress (one here, two on the other node),
/// VIPs on both, port 8080 through the mesh.
fn web() -> ServiceEntry {
    ServiceEntry {
        id: "w".into(),
        name: "web".into(),
        mode: EndpointMode::Vip,
        vips: vec![address(FRONT, "100.64.1.2"), address(INGRESS, "100.64.0.2")],
        aliases: Vec::new(),
        ports: vec![port(8080, PublishMode::Ingress)],
        tasks: vec![
            task("t5", vec![address(FRONT, "100.64.1.5"), address(INGRESS, "100.64.0.5")]),
            task("t4", vec![address(FRONT, "100.64.1.4"), address(INGRESS, "100.64.0.4")]),
            task("t3", vec![address(FRONT, "100.64.1.3"), address(INGRESS, "100.64.0.3")]),
        ],
    }
}

fn rules(directory: &Directory) -> ServiceRules {
    let networks = networks();
    let peers = peers();
    service_rules(&NodeView { networks: &networks, peers: &peers, local_published: &[] }, directory)
}

fn ips(list: &[&str]) -> Vec<Ipv4Addr> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

#[test]
fn a_vip_balances_over_every_running_task_on_its_network_but_not_on_ingress() {
    let rules = rules(&Directory { services: vec![web()], containers: Vec::new() });
    assert_eq!(
        rules.vips,
        vec![VirtualIp { service: "web".into(), address: ips(&["100.64.1.2"])[0], bridge: bridge_name(FRONT), backends: ips(&["100.64.1.3", "100.64.1.4", "100.64.1.5"]) }]
    );
}

#[test]
fn the_mesh_forwards_to_ingress_addresses_anywhere_and_leaves_from_the_nodes_own() {
    let rules = rules(&Directory { services: vec![web()], containers: Vec::new() });
    assert_eq!(
        rules.service_ports,
        vec![ServicePort { service: "web".into(), protocol: PortProtocol::Tcp, published: 8080, target: 80, backends: ips(&["100.64.0.3", "100.64.0.4", "100.64.0.5"]) }]
    );
    assert_eq!(rules.mesh_source, Some(MeshSource { subnet: "100.64.0.0/24".parse().unwrap(), address: ips(&["100.64.0.250"])[0] }));

    // A service with no running task still has its port on every node.
    let mut idle = web();
    idle.tasks.clear();
    let rules = super::tests::rules(&Directory { services: vec![idle], containers: Vec::new() });
    assert_eq!(rules.service_ports.len(), 1);
    assert!(rules.service_ports[0].backends.is_empty());
    assert!(rules.vips[0].backends.is_empty(), "the VIP stays, refusing");
}

#[test]
fn host_mode_serves_only_this_nodes_tasks_on_their_first_usable_network() {
    let mut web = web();
    web.ports = vec![port(9090, PublishMode::Host)];
    let rules = rules(&Directory { services: vec![web.clone()], containers: Vec::new() });
    assert_eq!(rules.service_ports.len(), 1);
    assert_eq!(rules.service_ports[0].backends, ips(&["100.64.1.4"]), "t4 is the only local task");

    // A task whose first network is internal is reached on the next one.
    web.tasks = vec![task("t6", vec![address(CLOSED, "100.64.9.6"), address(FRONT, "100.64.1.6")])];
    assert_eq!(super::tests::rules(&Directory { services: vec![web.clone()], containers: Vec::new() }).service_ports[0].backends, ips(&["100.64.1.6"]));

    // No local task: the port is not bound here.
    web.tasks = vec![task("t3", vec![address(FRONT, "100.64.1.3")])];
    assert!(super::tests::rules(&Directory { services: vec![web], containers: Vec::new() }).service_ports.is_empty());
}

#[test]
fn a_port_a_local_container_publishes_is_left_to_it() {
    let networks = networks();
    let peers = peers();
    let local = vec![PublishedPort {
        protocol: PortProtocol::Tcp,
        host_ip: None,
        host_port: 8080,
        container_ip: "100.127.255.2".parse().unwrap(),
        container_port: 80,
        bridge: "shoal0".into(),
    }];
    let view = NodeView { networks: &networks, peers: &peers, local_published: &local };
    assert!(service_rules(&view, &Directory { services: vec![web()], containers: Vec::new() }).service_ports.is_empty());
}

#[test]
fn dnsrr_services_have_no_vip_and_no_vip_route() {
    let mut web = web();
    web.mode = EndpointMode::Dnsrr;
    let directory = Directory { services: vec![web], containers: Vec::new() };
    assert!(rules(&directory).vips.is_empty());
    assert!(vip_routes(&networks(), &directory).is_empty());
}

#[test]
fn vip_routes_cover_every_vip_off_ingress_with_the_nodes_source() {
    let mut idle = web();
    idle.name = "idle".into();
    idle.vips = vec![address(FRONT, "100.64.1.9")];
    idle.tasks.clear();
    let directory = Directory { services: vec![web(), idle], containers: Vec::new() };
    let source = Some(ips(&["100.64.1.250"])[0]);
    assert_eq!(
        vip_routes(&networks(), &directory),
        vec![HostRoute { address: ips(&["100.64.1.2"])[0], source }, HostRoute { address: ips(&["100.64.1.9"])[0], source }]
    );
}

#[test]
fn backends_that_leave_take_their_conntrack_entries_with_them() {
    let directory = Directory { services: vec![web()], containers: Vec::new() };
    let before = rules(&directory);
    let mut scaled = web();
    scaled.tasks.truncate(1); // t5 stays
    let after = rules(&Directory { services: vec![scaled], containers: Vec::new() });
    let model = |r: &ServiceRules| FirewallModel { vips: r.vips.clone(), service_ports: r.service_ports.clone(), ..FirewallModel::default() };
    let stale = stale_entries(&model(&before), &model(&after));
    let vip = Some(ips(&["100.64.1.2"])[0]);
    assert_eq!(
        stale,
        vec![
            EntryFilter { original_destination: vip, reply_source: Some(ips(&["100.64.1.3"])[0]), ..EntryFilter::default() },
            EntryFilter { original_destination: vip, reply_source: Some(ips(&["100.64.1.4"])[0]), ..EntryFilter::default() },
            EntryFilter { protocol: Some(PROTO_TCP), original_destination_port: Some(8080), reply_source: Some(ips(&["100.64.0.3"])[0]), ..EntryFilter::default() },
            EntryFilter { protocol: Some(PROTO_TCP), original_destination_port: Some(8080), reply_source: Some(ips(&["100.64.0.4"])[0]), ..EntryFilter::default() },
        ]
    );
    assert!(stale_entries(&model(&after), &model(&after)).is_empty(), "no change, nothing to delete");
    // A service that goes takes all of its entries.
    assert_eq!(stale_entries(&model(&before), &FirewallModel::default()).len(), 6);
}

#[test]
fn the_rules_are_a_valid_firewall_model() {
    let r = rules(&Directory { services: vec![web()], containers: Vec::new() });
    let model = FirewallModel {
        networks: networks()
            .values()
            .map(|n| crate::firewall::NetworkRules { bridge: bridge_name(&n.id), subnet: n.subnet, internal: n.internal, overlay: true })
            .collect(),
        overlay_device: Some("wgs-x".into()),
        vips: r.vips,
        service_ports: r.service_ports,
        mesh_source: r.mesh_source,
        ..FirewallModel::default()
    };
    model.validate().unwrap();
}
