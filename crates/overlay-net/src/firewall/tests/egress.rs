//! Root: the way out. Non-internal networks reach the outside masqueraded
//! behind the node; internal networks reach nothing beyond their subnet but
//! the node itself. The "outside" namespace has a route back to the
//! container subnets, so without our rules plain routing would work: a
//! block here is ours.

use std::net::{Ipv4Addr, SocketAddr};

use super::lab::{Lab, Ns};
use super::traffic::{tcp_peer, udp_peer, PeerEcho};
use crate::firewall::{Firewall, FirewallModel, NetworkRules};

const ECHO_PORT: u16 = 7000;

struct Uplinked {
    lab: Lab,
    node: Ns,
    outside: Ns,
    node_addr: Ipv4Addr,
    outside_addr: Ipv4Addr,
}

/// A node with bridge `b1` (gateway .1 of `subnet`) and an uplink to an
/// outside namespace on 198.18.`underlay`.0/24.
fn uplinked(tag: &str, underlay: u8) -> Uplinked {
    let lab = Lab::new(tag);
    let node = lab.netns("node");
    let outside = lab.netns("outside");
    let node_addr = Ipv4Addr::new(198, 18, underlay, 1);
    let outside_addr = Ipv4Addr::new(198, 18, underlay, 2);
    lab.link(
        &node,
        Some(&format!("{node_addr}/24")),
        &outside,
        Some(&format!("{outside_addr}/24")),
        "up0",
    );
    lab.exec_ok(
        &outside,
        &[
            "ip",
            "route",
            "add",
            "100.64.0.0/10",
            "via",
            &node_addr.to_string(),
        ],
    );
    Uplinked {
        lab,
        node,
        outside,
        node_addr,
        outside_addr,
    }
}

fn network(bridge: &str, subnet: &str, internal: bool) -> NetworkRules {
    NetworkRules {
        bridge: bridge.into(),
        subnet: subnet.parse().unwrap(),
        internal,
        overlay: false,
    }
}

#[test]
fn a_network_reaches_the_outside_masqueraded_and_forwarding_is_switched_on() {
    let net = uplinked("egress", 4);
    let (lab, node, outside) = (&net.lab, &net.node, &net.outside);
    lab.bridge(node, "b1", "100.68.1.1/24");
    let c1 = lab.container(node, "b1", "c1", "100.68.1.2/24", "100.68.1.1");
    let _echo = PeerEcho::start(
        &outside.path(),
        SocketAddr::from((net.outside_addr, ECHO_PORT)),
    );
    let _echo_c1 = PeerEcho::start(&c1.ns.path(), SocketAddr::from((c1.addr, ECHO_PORT)));
    lab.exec_ok(node, &["sysctl", "-qw", "net.ipv4.ip_forward=0"]);
    assert!(
        !lab.pings(&c1.ns, net.outside_addr),
        "control: no forwarding, no way out"
    );

    Firewall::in_namespace(node.path())
        .apply(&FirewallModel {
            networks: vec![network("b1", "100.68.1.0/24", false)],
            ..FirewallModel::default()
        })
        .unwrap();
    assert_eq!(lab.sysctl(node, "net/ipv4/ip_forward"), "1");
    assert!(lab.pings(&c1.ns, net.outside_addr));
    let echo = SocketAddr::from((net.outside_addr, ECHO_PORT));
    assert_eq!(
        tcp_peer(&c1.ns.path(), echo).map(|p| p.ip()),
        Some(net.node_addr.into()),
        "TCP masqueraded"
    );
    assert_eq!(
        udp_peer(&c1.ns.path(), echo).map(|p| p.ip()),
        Some(net.node_addr.into()),
        "UDP masqueraded"
    );

    // Nothing from outside enters a network unless it is published, even
    // with a route to it.
    assert!(lab.pings(outside, net.node_addr));
    assert!(!lab.pings(outside, c1.addr));
    assert_eq!(
        tcp_peer(&outside.path(), SocketAddr::from((c1.addr, ECHO_PORT))),
        None
    );
}

#[test]
fn an_internal_network_reaches_only_itself_and_the_node() {
    let net = uplinked("internal", 5);
    let (lab, node, outside) = (&net.lab, &net.node, &net.outside);
    lab.bridge(node, "b1", "100.69.1.1/24");
    lab.bridge(node, "b2", "100.69.2.1/24");
    let c1 = lab.container(node, "b1", "c1", "100.69.1.2/24", "100.69.1.1");
    let peer = lab.container(node, "b1", "peer", "100.69.1.3/24", "100.69.1.1");
    let c2 = lab.container(node, "b2", "c2", "100.69.2.2/24", "100.69.2.1");
    let echo = SocketAddr::from((net.outside_addr, ECHO_PORT));
    let _echo = PeerEcho::start(&outside.path(), echo);
    let _echo_peer = PeerEcho::start(&peer.ns.path(), SocketAddr::from((peer.addr, ECHO_PORT)));
    lab.exec_ok(node, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    assert!(
        lab.pings(&c1.ns, net.outside_addr),
        "control: routed out without rules"
    );
    assert!(tcp_peer(&c1.ns.path(), echo).is_some());
    assert!(lab.pings(&c1.ns, c2.addr));

    Firewall::in_namespace(node.path())
        .apply(&FirewallModel {
            networks: vec![
                network("b1", "100.69.1.0/24", true),
                network("b2", "100.69.2.0/24", false),
            ],
            ..FirewallModel::default()
        })
        .unwrap();
    assert!(
        !lab.pings(&c1.ns, net.outside_addr),
        "internal network reached the outside"
    );
    assert_eq!(tcp_peer(&c1.ns.path(), echo), None);
    assert_eq!(udp_peer(&c1.ns.path(), echo), None);
    assert!(
        !lab.pings(&c1.ns, c2.addr),
        "internal network reached another network"
    );
    assert!(lab.counter(node, "inet", "shoal", "from-b1", "other networks") > 0);
    // Its own subnet and the node itself stay reachable.
    assert!(lab.pings(&c1.ns, peer.addr));
    assert!(tcp_peer(&c1.ns.path(), SocketAddr::from((peer.addr, ECHO_PORT))).is_some());
    for node_addr in ["100.69.1.1", "100.69.2.1"] {
        assert!(
            lab.pings(&c1.ns, node_addr.parse().unwrap()),
            "node address {node_addr}"
        );
    }
    assert!(lab.pings(&c1.ns, net.node_addr));
    // The non-internal network next to it still gets out.
    assert_eq!(
        tcp_peer(&c2.ns.path(), echo).map(|p| p.ip()),
        Some(net.node_addr.into())
    );
}
