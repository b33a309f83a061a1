//! Root: published ports, DNAT and the userland relay together, as the
//! daemon runs them. The echo server in the container answers with the
//! client address it sees: the real client's (DNAT), the node's bridge
//! address (relay, or masquerade on hairpin), or the node's own address
//! (DNAT of the node's own traffic).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::lab::Lab;
use super::traffic::{tcp_peer, udp_peer, PeerEcho, ProxyInNamespace};
use crate::firewall::{
    Firewall, FirewallError, FirewallModel, NetworkRules, PortProtocol, PublishedPort,
};

const NODE: Ipv4Addr = Ipv4Addr::new(198, 18, 6, 1);
const NODE_OTHER: Ipv4Addr = Ipv4Addr::new(198, 18, 6, 5);
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(198, 18, 6, 2);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(100, 70, 1, 1);

fn network(bridge: &str, subnet: &str, internal: bool) -> NetworkRules {
    NetworkRules {
        bridge: bridge.into(),
        subnet: subnet.parse().unwrap(),
        internal,
        overlay: false,
    }
}

fn port(protocol: PortProtocol, host_ip: Option<Ipv4Addr>, host_port: u16) -> PublishedPort {
    PublishedPort {
        protocol,
        host_ip,
        host_port,
        container_ip: Ipv4Addr::new(100, 70, 1, 2),
        container_port: 80,
        bridge: "b1".into(),
    }
}

fn ip_of(peer: Option<SocketAddr>) -> Option<IpAddr> {
    peer.map(|p| p.ip())
}

#[test]
fn published_ports_reach_the_container_from_everywhere_they_should() {
    let lab = Lab::new("publish");
    let node = lab.netns("node");
    let outside = lab.netns("outside");
    lab.link(
        &node,
        Some(&format!("{NODE}/24")),
        &outside,
        Some(&format!("{OUTSIDE}/24")),
        "up0",
    );
    lab.exec_ok(
        &node,
        &[
            "ip",
            "addr",
            "add",
            &format!("{NODE_OTHER}/24"),
            "dev",
            "up0",
        ],
    );
    lab.bridge(&node, "b1", &format!("{GATEWAY}/24"));
    lab.bridge(&node, "b2", "100.70.2.1/24");
    lab.bridge(&node, "b3", "100.70.3.1/24");
    let server = lab.container(&node, "b1", "server", "100.70.1.2/24", "100.70.1.1");
    let neighbour = lab.container(&node, "b1", "neighbour", "100.70.1.3/24", "100.70.1.1");
    let other = lab.container(&node, "b2", "other", "100.70.2.2/24", "100.70.2.1");
    let internal = lab.container(&node, "b3", "internal", "100.70.3.2/24", "100.70.3.1");
    // The server reaching its own published port comes back out of the
    // port it went in by: the bridge port needs hairpin mode (as Docker
    // sets it when it relies on NAT for hairpin).
    lab.exec_ok(
        &node,
        &[
            "ip",
            "link",
            "set",
            &server.veth,
            "type",
            "bridge_slave",
            "hairpin",
            "on",
        ],
    );
    let _echo = PeerEcho::start(&server.ns.path(), SocketAddr::from((server.addr, 80)));

    let published = vec![
        port(PortProtocol::Tcp, None, 8080),
        port(PortProtocol::Udp, None, 8080),
        port(PortProtocol::Tcp, Some(NODE), 8081),
    ];
    let mut relays = Vec::new();
    for p in &published {
        relays.push(ProxyInNamespace::start(&node.path(), p.clone()).unwrap());
    }
    let on_node = |port: u16| SocketAddr::from((NODE, port));

    // Control, relay only: external traffic reaches the relay, which
    // connects from the bridge address.
    assert_eq!(
        ip_of(tcp_peer(&outside.path(), on_node(8080))),
        Some(GATEWAY.into())
    );

    let firewall = Firewall::in_namespace(node.path());
    firewall
        .apply(&FirewallModel {
            networks: vec![
                network("b1", "100.70.1.0/24", false),
                network("b2", "100.70.2.0/24", false),
                network("b3", "100.70.3.0/24", true),
            ],
            overlay_device: None,
            published,
            ..FirewallModel::default()
        })
        .unwrap();

    // From outside: DNAT in prerouting, before the relay's socket.
    assert_eq!(
        ip_of(tcp_peer(&outside.path(), on_node(8080))),
        Some(OUTSIDE.into()),
        "TCP via DNAT"
    );
    assert_eq!(
        ip_of(udp_peer(&outside.path(), on_node(8080))),
        Some(OUTSIDE.into()),
        "UDP via DNAT"
    );
    assert_eq!(
        ip_of(tcp_peer(&outside.path(), on_node(8081))),
        Some(OUTSIDE.into())
    );
    assert_eq!(
        tcp_peer(&outside.path(), SocketAddr::from((NODE_OTHER, 8081))),
        None,
        "8081 is published on {NODE} only"
    );
    assert_eq!(
        ip_of(tcp_peer(
            &outside.path(),
            SocketAddr::from((NODE_OTHER, 8080))
        )),
        Some(OUTSIDE.into())
    );

    // From the node itself: DNAT in output for its non-loopback addresses
    // (the source stays the node's address), the relay for loopback.
    assert_eq!(
        ip_of(tcp_peer(&node.path(), on_node(8080))),
        Some(NODE.into()),
        "output DNAT"
    );
    let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 8080));
    assert_eq!(
        ip_of(tcp_peer(&node.path(), loopback)),
        Some(GATEWAY.into()),
        "TCP relay on loopback"
    );
    assert_eq!(
        ip_of(udp_peer(&node.path(), loopback)),
        Some(GATEWAY.into()),
        "UDP relay on loopback"
    );

    // Hairpin: the server itself and its neighbour on the bridge, through
    // the node's address (masqueraded, so replies return via the node).
    assert_eq!(
        ip_of(tcp_peer(&server.ns.path(), on_node(8080))),
        Some(GATEWAY.into()),
        "self hairpin"
    );
    assert_eq!(
        ip_of(tcp_peer(&neighbour.ns.path(), on_node(8080))),
        Some(GATEWAY.into()),
        "same bridge"
    );
    // Another network reaches the published port; an internal one does not.
    assert_eq!(
        ip_of(tcp_peer(&other.ns.path(), on_node(8080))),
        Some(other.addr.into())
    );
    assert_eq!(
        tcp_peer(&internal.ns.path(), on_node(8080)),
        None,
        "internal network reached a published port"
    );
    assert!(lab.counter(&node, "inet", "shoal", "from-b3", "other networks") > 0);
    // Unpublished ports of the container stay closed from outside.
    assert!(!lab.pings(&outside, server.addr));

    // A second relay on a port in use is refused with a clear sentence.
    let error =
        ProxyInNamespace::start(&node.path(), port(PortProtocol::Tcp, None, 8080)).unwrap_err();
    assert!(
        matches!(error, FirewallError::PortInUse { .. }),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "host port 0.0.0.0:8080/tcp is already in use on this node; choose another host port or stop what is using it"
    );

    // Stopping the relay frees the port.
    relays.clear();
    assert_eq!(tcp_peer(&node.path(), loopback), None);
    let again = ProxyInNamespace::start(&node.path(), port(PortProtocol::Tcp, None, 8080)).unwrap();
    assert_eq!(
        ip_of(tcp_peer(&node.path(), loopback)),
        Some(GATEWAY.into())
    );
    drop(again);
}
