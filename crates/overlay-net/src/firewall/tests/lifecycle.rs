//! Root: applying is idempotent and readable back, removal is complete, and
//! on a Docker-like host (iptables-nft `ip filter FORWARD` policy drop,
//! created with nft inside the test's own namespace) our traffic gets
//! through by tagged rules that removal takes out again.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Instant;

use super::lab::{Lab, Ns};
use super::traffic::{tcp_peer, PeerEcho};
use crate::firewall::{
    cleanup, Applied, ExceptionChain, Firewall, FirewallModel, NetworkRules, PortProtocol,
    PublishedPort,
};

const ECHO_PORT: u16 = 7000;

fn network(bridge: &str, subnet: &str) -> NetworkRules {
    NetworkRules {
        bridge: bridge.into(),
        subnet: subnet.parse().unwrap(),
        internal: false,
        overlay: false,
    }
}

fn tables(lab: &Lab, ns: &Ns) -> String {
    lab.exec_ok(ns, &["nft", "list", "tables"])
}

#[test]
fn apply_is_idempotent_parseable_and_removable() {
    let lab = Lab::new("lifecycle");
    let node = lab.netns("node");
    lab.bridge(&node, "shl-a", "100.71.1.1/24");
    let firewall = Firewall::in_namespace(node.path());
    let model = FirewallModel {
        networks: vec![
            network("shl-a", "100.71.1.0/24"),
            network("shl-b", "100.71.2.0/24"),
        ],
        overlay_device: Some("wgs-x".into()),
        published: vec![PublishedPort {
            protocol: PortProtocol::Udp,
            host_ip: None,
            host_port: 5300,
            container_ip: "100.71.1.2".parse().unwrap(),
            container_port: 53,
            bridge: "shl-a".into(),
        }],
        ..FirewallModel::default()
    };
    // A table of someone else's, which must survive everything we do.
    lab.exec_ok(&node, &["nft", "add", "table", "inet", "users-own"]);

    let started = Instant::now();
    firewall.apply(&model).unwrap();
    let first = started.elapsed();
    let listing = lab.exec_ok(&node, &["nft", "list", "ruleset"]);
    assert!(listing.contains("table inet shoal {") && listing.contains("table ip shoal-nat {"));
    let started = Instant::now();
    firewall.apply(&model).unwrap();
    let second = started.elapsed();
    eprintln!("apply took {first:?} (first) and {second:?} (again)");
    assert_eq!(
        lab.exec_ok(&node, &["nft", "list", "ruleset"]),
        listing,
        "a second apply changed the ruleset"
    );

    // The listing reads back as nft input (what `nft list ruleset > file`
    // backups rely on).
    let check = lab.exec(&node, &["sh", "-c", "nft list ruleset | nft -c -f -"]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    // An overlapping subnet is refused before nft runs: the old rules stay.
    let mut bad = model.clone();
    bad.networks[1].subnet = "100.71.1.128/25".parse().unwrap();
    assert!(firewall.apply(&bad).is_err());
    assert_eq!(lab.exec_ok(&node, &["nft", "list", "ruleset"]), listing);

    firewall.remove().unwrap();
    firewall.remove().unwrap();
    assert_eq!(tables(&lab, &node).trim(), "table inet users-own");
    firewall.apply(&model).unwrap();
    cleanup(Some(&node.path())).unwrap();
    assert_eq!(tables(&lab, &node).trim(), "table inet users-own");
}

/// A node with bridges b1, b2 (a container on each) and an outside.
struct DockerHost {
    // Declared first so it stops before the namespaces go.
    _echo: PeerEcho,
    lab: Lab,
    node: Ns,
    c1: Ns,
    c2_addr: Ipv4Addr,
}

const OUTSIDE: Ipv4Addr = Ipv4Addr::new(198, 18, 8, 2);

fn docker_host(tag: &str, subnet: u8) -> DockerHost {
    let lab = Lab::new(tag);
    let node = lab.netns("node");
    let outside = lab.netns("outside");
    lab.link(
        &node,
        Some("198.18.8.1/24"),
        &outside,
        Some(&format!("{OUTSIDE}/24")),
        "up0",
    );
    lab.bridge(&node, "b1", &format!("100.{subnet}.1.1/24"));
    lab.bridge(&node, "b2", &format!("100.{subnet}.2.1/24"));
    let c1 = lab.container(
        &node,
        "b1",
        "c1",
        &format!("100.{subnet}.1.2/24"),
        &format!("100.{subnet}.1.1"),
    );
    let c2 = lab.container(
        &node,
        "b2",
        "c2",
        &format!("100.{subnet}.2.2/24"),
        &format!("100.{subnet}.2.1"),
    );
    lab.exec_ok(&node, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    // What Docker leaves in the namespace: FORWARD policy drop.
    lab.exec_ok(&node, &["nft", "add", "table", "ip", "filter"]);
    lab.exec_ok(
        &node,
        &[
            "nft",
            "add chain ip filter FORWARD { type filter hook forward priority 0; policy drop; }",
        ],
    );
    lab.exec_ok(
        &outside,
        &["ip", "route", "add", "100.64.0.0/10", "via", "198.18.8.1"],
    );
    let echo = PeerEcho::start(&outside.path(), SocketAddr::from((OUTSIDE, ECHO_PORT)));
    DockerHost {
        _echo: echo,
        lab,
        node,
        c1: c1.ns,
        c2_addr: c2.addr,
    }
}

fn model(subnet: u8) -> FirewallModel {
    FirewallModel {
        networks: vec![
            network("b1", &format!("100.{subnet}.1.0/24")),
            network("b2", &format!("100.{subnet}.2.0/24")),
        ],
        ..FirewallModel::default()
    }
}

fn iptables_rules(lab: &Lab, ns: &Ns, chain: &str) -> Vec<String> {
    lab.exec_ok(ns, &["iptables", "-S", chain])
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn on_a_docker_host_our_bridges_get_tagged_accepts_in_docker_user() {
    let host = docker_host("docker", 72);
    let (lab, node) = (&host.lab, &host.node);
    lab.exec_ok(
        node,
        &["nft", "add", "chain", "ip", "filter", "DOCKER-USER"],
    );
    lab.exec_ok(
        node,
        &[
            "nft",
            "add",
            "rule",
            "ip",
            "filter",
            "FORWARD",
            "jump",
            "DOCKER-USER",
        ],
    );
    lab.exec_ok(
        node,
        &[
            "nft",
            "add rule ip filter DOCKER-USER iifname \"users0\" accept comment \"users-own\"",
        ],
    );
    assert!(
        !lab.pings(&host.c1, OUTSIDE),
        "control: the drop policy stops forwarding"
    );

    let firewall = Firewall::in_namespace(node.path());
    let applied = firewall.apply(&model(72)).unwrap();
    assert_eq!(
        applied,
        Applied {
            forward_exception: Some(ExceptionChain::DockerUser)
        }
    );
    assert!(lab.pings(&host.c1, OUTSIDE));
    assert!(tcp_peer(&host.c1.path(), SocketAddr::from((OUTSIDE, ECHO_PORT))).is_some());
    assert!(
        !lab.pings(&host.c1, host.c2_addr),
        "the accepts must not undo isolation"
    );

    // Readable by iptables-nft, at the top, in model order, the user's rule kept.
    let expected = vec![
        "-N DOCKER-USER".to_string(),
        "-A DOCKER-USER -i b1 -m comment --comment shoal -j ACCEPT".to_string(),
        "-A DOCKER-USER -o b1 -m comment --comment shoal -j ACCEPT".to_string(),
        "-A DOCKER-USER -i b2 -m comment --comment shoal -j ACCEPT".to_string(),
        "-A DOCKER-USER -o b2 -m comment --comment shoal -j ACCEPT".to_string(),
        "-A DOCKER-USER -i users0 -m comment --comment users-own -j ACCEPT".to_string(),
    ];
    assert_eq!(iptables_rules(lab, node, "DOCKER-USER"), expected);
    firewall.apply(&model(72)).unwrap();
    assert_eq!(
        iptables_rules(lab, node, "DOCKER-USER"),
        expected,
        "a second apply duplicated rules"
    );

    firewall.remove().unwrap();
    assert_eq!(
        iptables_rules(lab, node, "DOCKER-USER"),
        [
            "-N DOCKER-USER",
            "-A DOCKER-USER -i users0 -m comment --comment users-own -j ACCEPT"
        ]
    );
    assert_eq!(
        iptables_rules(lab, node, "FORWARD"),
        ["-P FORWARD DROP", "-A FORWARD -j DOCKER-USER"]
    );
    assert!(!tables(lab, node).contains("shoal"));
    assert!(!lab.pings(&host.c1, OUTSIDE));
}

#[test]
fn without_docker_user_the_accepts_go_to_the_top_of_forward() {
    let host = docker_host("fwdrop", 73);
    let (lab, node) = (&host.lab, &host.node);
    lab.exec_ok(
        node,
        &[
            "nft",
            "add rule ip filter FORWARD iifname \"users0\" accept",
        ],
    );
    let firewall = Firewall::in_namespace(node.path());
    let applied = firewall.apply(&model(73)).unwrap();
    assert_eq!(applied.forward_exception, Some(ExceptionChain::Forward));
    assert!(lab.pings(&host.c1, OUTSIDE));
    let rules = iptables_rules(lab, node, "FORWARD");
    assert_eq!(
        rules[1],
        "-A FORWARD -i b1 -m comment --comment shoal -j ACCEPT"
    );
    assert_eq!(rules.last().unwrap(), "-A FORWARD -i users0 -j ACCEPT");

    // Policy back to accept: the next apply takes our rules out again.
    lab.exec_ok(
        node,
        &[
            "nft",
            "add chain ip filter FORWARD { type filter hook forward priority 0; policy accept; }",
        ],
    );
    assert_eq!(firewall.apply(&model(73)).unwrap().forward_exception, None);
    assert_eq!(
        iptables_rules(lab, node, "FORWARD"),
        ["-P FORWARD ACCEPT", "-A FORWARD -i users0 -j ACCEPT"]
    );
    cleanup(Some(&node.path())).unwrap();
}

#[test]
fn a_missing_namespace_is_named_in_the_error() {
    let firewall = Firewall::in_namespace("/run/netns/shfw-no-such-namespace");
    let error = firewall
        .apply(&FirewallModel::default())
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("/run/netns/shfw-no-such-namespace"),
        "{error}"
    );
    assert!(firewall.remove().is_err());
}
