//! Root: which containers reach which, with real traffic. Every "blocked"
//! check is preceded by the same check passing without our rules, so a
//! firewall that does nothing fails these tests.

use std::net::SocketAddr;

use super::lab::{Lab, Ns};
use super::traffic::{tcp_peer, PeerEcho};
use crate::firewall::{Firewall, FirewallModel, NetworkRules};

const ECHO_PORT: u16 = 7000;

fn network(bridge: &str, subnet: &str, overlay: bool) -> NetworkRules {
    NetworkRules {
        bridge: bridge.into(),
        subnet: subnet.parse().unwrap(),
        internal: false,
        overlay,
    }
}

fn tcp_reaches(from: &Ns, to: std::net::Ipv4Addr) -> bool {
    tcp_peer(&from.path(), SocketAddr::from((to, ECHO_PORT))).is_some()
}

#[test]
fn containers_on_one_bridge_reach_each_other_through_our_forward_rule() {
    let lab = Lab::new("same");
    let node = lab.netns("node");
    lab.bridge(&node, "b1", "100.65.1.1/24");
    let c1 = lab.container(&node, "b1", "c1", "100.65.1.2/24", "100.65.1.1");
    let c2 = lab.container(&node, "b1", "c2", "100.65.1.3/24", "100.65.1.1");
    // The premise: with br_netfilter on, bridged frames cross the forward
    // hook, so our chains decide about them too.
    assert_eq!(lab.sysctl(&node, "net/bridge/bridge-nf-call-iptables"), "1");
    let _echo = PeerEcho::start(&c2.ns.path(), SocketAddr::from((c2.addr, ECHO_PORT)));

    let firewall = Firewall::in_namespace(node.path());
    let model = FirewallModel {
        networks: vec![network("b1", "100.65.1.0/24", false)],
        ..FirewallModel::default()
    };
    firewall.apply(&model).unwrap();
    assert!(lab.pings(&c1.ns, c2.addr));
    assert_eq!(
        tcp_peer(&c1.ns.path(), SocketAddr::from((c2.addr, ECHO_PORT))).map(|p| p.ip()),
        Some(c1.addr.into()),
        "same network: no NAT"
    );
    let same_network =
        |lab: &Lab| lab.counter(&node, "inet", "shoal", "from-b1", "same network, this node");
    assert!(
        same_network(&lab) > 0,
        "bridged traffic went through from-b1"
    );

    // Without that accept rule the chain's final drop stops the same
    // traffic: the rule is what lets it through.
    let listing = lab.exec_ok(
        &node,
        &["nft", "-a", "list", "chain", "inet", "shoal", "from-b1"],
    );
    let handle = listing
        .lines()
        .find(|l| l.contains("same network, this node"))
        .and_then(|l| l.rsplit("# handle ").next())
        .unwrap()
        .trim()
        .to_string();
    lab.exec_ok(
        &node,
        &[
            "nft", "delete", "rule", "inet", "shoal", "from-b1", "handle", &handle,
        ],
    );
    assert!(
        !lab.pings(&c1.ns, c2.addr),
        "same-bridge traffic passed without the accept rule"
    );

    // Applying again restores it.
    firewall.apply(&model).unwrap();
    assert!(lab.pings(&c1.ns, c2.addr));
}

#[test]
fn different_networks_on_one_node_cannot_reach_each_other() {
    let lab = Lab::new("apart");
    let node = lab.netns("node");
    lab.bridge(&node, "b1", "100.66.1.1/24");
    lab.bridge(&node, "b2", "100.66.2.1/24");
    let c1 = lab.container(&node, "b1", "c1", "100.66.1.2/24", "100.66.1.1");
    let c2 = lab.container(&node, "b2", "c2", "100.66.2.2/24", "100.66.2.1");
    lab.exec_ok(&node, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    let _echo1 = PeerEcho::start(&c1.ns.path(), SocketAddr::from((c1.addr, ECHO_PORT)));
    let _echo2 = PeerEcho::start(&c2.ns.path(), SocketAddr::from((c2.addr, ECHO_PORT)));

    // Control: routed through the node, both directions work without us.
    assert!(lab.pings(&c1.ns, c2.addr) && lab.pings(&c2.ns, c1.addr));
    assert!(tcp_reaches(&c1.ns, c2.addr) && tcp_reaches(&c2.ns, c1.addr));

    let firewall = Firewall::in_namespace(node.path());
    firewall
        .apply(&FirewallModel {
            networks: vec![
                network("b1", "100.66.1.0/24", false),
                network("b2", "100.66.2.0/24", false),
            ],
            ..FirewallModel::default()
        })
        .unwrap();
    assert!(!lab.pings(&c1.ns, c2.addr), "b1 -> b2 ping passed");
    assert!(!lab.pings(&c2.ns, c1.addr), "b2 -> b1 ping passed");
    assert!(!tcp_reaches(&c1.ns, c2.addr), "b1 -> b2 TCP passed");
    assert!(!tcp_reaches(&c2.ns, c1.addr), "b2 -> b1 TCP passed");
    assert!(lab.counter(&node, "inet", "shoal", "from-b1", "other networks") > 0);
    assert!(lab.counter(&node, "inet", "shoal", "from-b2", "other networks") > 0);
    // The node itself stays reachable, also on the other network's address.
    assert!(lab.pings(&c1.ns, "100.66.2.1".parse().unwrap()));

    // Removed: routing between them works again.
    firewall.remove().unwrap();
    assert!(lab.pings(&c1.ns, c2.addr));
}

/// Two nodes joined by an "overlay device": a veth pair named `ovl` with
/// static neighbours, which like WireGuard is a point-to-point hop that
/// carries /32 routes to remote tasks. Each node serves overlay networks
/// A (100.67.1.0/24) and B (100.67.2.0/24) on bridges `ba` and `bb`, with
/// the same gateway on both nodes and proxy ARP for remote tasks.
struct TwoNodes {
    lab: Lab,
    n1: Ns,
    n2: Ns,
}

const N1_OVL_MAC: &str = "02:5f:00:00:00:01";
const N2_OVL_MAC: &str = "02:5f:00:00:00:02";

impl TwoNodes {
    fn new() -> TwoNodes {
        let lab = Lab::new("overlay");
        let n1 = lab.netns("n1");
        let n2 = lab.netns("n2");
        lab.link(&n1, None, &n2, None, "ovl");
        lab.exec_ok(&n1, &["ip", "link", "set", "ovl", "address", N1_OVL_MAC]);
        lab.exec_ok(&n2, &["ip", "link", "set", "ovl", "address", N2_OVL_MAC]);
        for node in [&n1, &n2] {
            for (bridge, gateway) in [("ba", "100.67.1.1/24"), ("bb", "100.67.2.1/24")] {
                lab.bridge(node, bridge, gateway);
                lab.exec_ok(
                    node,
                    &[
                        "sysctl",
                        "-qw",
                        &format!("net.ipv4.conf.{bridge}.proxy_arp=1"),
                    ],
                );
                // Proxy ARP answers broadcasts after up to proxy_delay
                // (0.8 s by default); the first ping would time out.
                lab.exec_ok(
                    node,
                    &[
                        "sysctl",
                        "-qw",
                        &format!("net.ipv4.neigh.{bridge}.proxy_delay=0"),
                    ],
                );
            }
            lab.exec_ok(node, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        }
        TwoNodes { lab, n1, n2 }
    }

    /// Routes `addr` on `node` to the other node over `ovl`.
    fn remote(&self, node: &Ns, addr: &str, peer_mac: &str) {
        self.lab.exec_ok(
            node,
            &["ip", "route", "add", &format!("{addr}/32"), "dev", "ovl"],
        );
        self.lab.exec_ok(
            node,
            &[
                "ip",
                "neigh",
                "add",
                addr,
                "lladdr",
                peer_mac,
                "dev",
                "ovl",
                "nud",
                "permanent",
            ],
        );
    }

    fn model() -> FirewallModel {
        FirewallModel {
            networks: vec![
                network("ba", "100.67.1.0/24", true),
                network("bb", "100.67.2.0/24", true),
            ],
            overlay_device: Some("ovl".into()),
            ..FirewallModel::default()
        }
    }
}

#[test]
fn overlay_networks_span_nodes_and_stay_apart() {
    let nodes = TwoNodes::new();
    let (lab, n1, n2) = (&nodes.lab, &nodes.n1, &nodes.n2);
    let a = lab.container(n1, "ba", "a", "100.67.1.2/24", "100.67.1.1");
    let c = lab.container(n1, "bb", "c", "100.67.2.2/24", "100.67.2.1");
    let b = lab.container(n2, "ba", "b", "100.67.1.3/24", "100.67.1.1");
    let d = lab.container(n2, "bb", "d", "100.67.2.3/24", "100.67.2.1");
    for (addr, node, peer_mac) in [
        ("100.67.1.3", n1, N2_OVL_MAC),
        ("100.67.2.3", n1, N2_OVL_MAC),
        ("100.67.1.2", n2, N1_OVL_MAC),
        ("100.67.2.2", n2, N1_OVL_MAC),
    ] {
        nodes.remote(node, addr, peer_mac);
    }
    let _echo_a = PeerEcho::start(&a.ns.path(), SocketAddr::from((a.addr, ECHO_PORT)));
    let _echo_b = PeerEcho::start(&b.ns.path(), SocketAddr::from((b.addr, ECHO_PORT)));
    let _echo_d = PeerEcho::start(&d.ns.path(), SocketAddr::from((d.addr, ECHO_PORT)));

    // Control: without rules the nodes route anything between the networks.
    assert!(lab.pings(&a.ns, b.addr) && lab.pings(&c.ns, d.addr));
    assert!(lab.pings(&a.ns, d.addr) && lab.pings(&d.ns, a.addr));

    // Rules on n1 only: n1 alone must stop traffic leaving towards the
    // other network and traffic arriving from it over the overlay device.
    let n1_firewall = Firewall::in_namespace(n1.path());
    n1_firewall.apply(&TwoNodes::model()).unwrap();
    assert!(lab.pings(&a.ns, b.addr) && lab.pings(&b.ns, a.addr));
    assert_eq!(
        tcp_peer(&a.ns.path(), SocketAddr::from((b.addr, ECHO_PORT))).map(|p| p.ip()),
        Some(a.addr.into())
    );
    assert!(
        !lab.pings(&a.ns, d.addr),
        "a (A) reached d (B) on the other node"
    );
    assert!(!tcp_reaches(&a.ns, d.addr));
    assert!(lab.counter(n1, "inet", "shoal", "from-ba", "other networks") > 0);
    assert!(
        !lab.pings(&d.ns, a.addr),
        "d (B) reached a (A) over the overlay device"
    );
    assert!(!tcp_reaches(&d.ns, a.addr));
    assert!(lab.counter(n1, "inet", "shoal", "from-ovl", "other networks") > 0);

    // Rules on both nodes.
    Firewall::in_namespace(n2.path())
        .apply(&TwoNodes::model())
        .unwrap();
    assert!(lab.pings(&a.ns, b.addr) && lab.pings(&b.ns, a.addr));
    assert!(lab.pings(&c.ns, d.addr) && lab.pings(&d.ns, c.addr));
    assert!(tcp_reaches(&c.ns, d.addr));
    assert!(!lab.pings(&b.ns, c.addr) && !lab.pings(&c.ns, b.addr));
    assert!(!tcp_reaches(&c.ns, b.addr));
}
