//! The generated rules for swarm services (VIPs, routing mesh, host mode),
//! rule by rule, without a kernel.

use super::render::{chain_rules, chains};
use crate::firewall::{
    ruleset, FirewallModel, MeshSource, NetworkRules, PortProtocol, ServicePort, VirtualIp,
};

fn network(bridge: &str, subnet: &str, internal: bool) -> NetworkRules {
    NetworkRules {
        bridge: bridge.into(),
        subnet: subnet.parse().unwrap(),
        internal,
        overlay: true,
    }
}

fn vip(service: &str, address: &str, bridge: &str, backends: &[&str]) -> VirtualIp {
    VirtualIp {
        service: service.into(),
        address: address.parse().unwrap(),
        bridge: bridge.into(),
        backends: backends.iter().map(|b| b.parse().unwrap()).collect(),
    }
}

fn port(service: &str, published: u16, backends: &[&str]) -> ServicePort {
    ServicePort {
        service: service.into(),
        protocol: PortProtocol::Tcp,
        published,
        target: 80,
        backends: backends.iter().map(|b| b.parse().unwrap()).collect(),
    }
}

/// front (with web's VIP over 3 tasks and idle's VIP with none), an
/// internal network with one VIP, ingress with web's mesh port.
fn node() -> FirewallModel {
    FirewallModel {
        networks: vec![
            network("shl-front", "100.64.1.0/24", false),
            network("shl-closed", "100.64.9.0/24", true),
            network("shl-ingress", "100.64.0.0/24", false),
        ],
        overlay_device: Some("wgs-x".into()),
        vips: vec![
            vip("web", "100.64.1.2", "shl-front", &["100.64.1.3", "100.64.1.4", "100.64.1.5"]),
            vip("idle", "100.64.1.9", "shl-front", &[]),
            vip("db", "100.64.9.2", "shl-closed", &["100.64.9.3"]),
        ],
        service_ports: vec![
            port("web", 8080, &["100.64.0.3", "100.64.0.4"]),
            port("idle", 8081, &[]),
        ],
        mesh_source: Some(MeshSource {
            subnet: "100.64.0.0/24".parse().unwrap(),
            address: "100.64.0.250".parse().unwrap(),
        }),
        ..FirewallModel::default()
    }
}

const SUBNETS: &str = "{ 100.64.1.0/24, 100.64.9.0/24, 100.64.0.0/24 }";

#[test]
fn vips_are_balanced_only_for_their_own_networks_and_for_the_node() {
    let ruleset = ruleset(&node()).unwrap();
    let prerouting = chain_rules(&ruleset, "shoal-nat", "prerouting");
    assert_eq!(
        prerouting[..2],
        [
            "iifname shl-closed ip daddr vmap { 100.64.9.2: jump vip-100-64-9-2 }".to_string(),
            "iifname shl-front ip daddr vmap { 100.64.1.2: jump vip-100-64-1-2 }".to_string(),
        ],
        "the idle VIP has no entry: it falls through to the reject"
    );
    assert_eq!(
        chain_rules(&ruleset, "shoal-nat", "output")[0],
        "ip daddr vmap { 100.64.9.2: jump vip-100-64-9-2, 100.64.1.2: jump vip-100-64-1-2 }"
    );
    assert_eq!(
        chain_rules(&ruleset, "shoal-nat", "vip-100-64-1-2"),
        ["dnat to numgen inc mod 3 map { 0: 100.64.1.3, 1: 100.64.1.4, 2: 100.64.1.5 }"]
    );
    assert_eq!(chain_rules(&ruleset, "shoal-nat", "vip-100-64-9-2"), ["dnat to 100.64.9.3"]);
    assert!(!chains(&ruleset).iter().any(|c| c.contains("vip-100-64-1-9")));
}

#[test]
fn what_is_still_addressed_to_a_vip_is_refused_not_dropped() {
    let ruleset = ruleset(&node()).unwrap();
    let forward = chain_rules(&ruleset, "shoal", "forward");
    assert_eq!(forward[0], "ct state established,related accept");
    assert_eq!(forward[1], "ip daddr { 100.64.1.2, 100.64.1.9, 100.64.9.2 } counter reject");
    assert_eq!(
        chain_rules(&ruleset, "shoal", "output"),
        ["ip daddr { 100.64.1.2, 100.64.1.9, 100.64.9.2 } counter reject"]
    );
    assert!(chains(&ruleset).contains(&"inet shoal output output 0 accept".to_string()));
}

#[test]
fn published_service_ports_answer_on_every_node_address_but_loopback_and_containers() {
    let ruleset = ruleset(&node()).unwrap();
    let prerouting = chain_rules(&ruleset, "shoal-nat", "prerouting");
    assert_eq!(
        prerouting[2..],
        [
            format!("fib daddr type local ip daddr != {SUBNETS} jump service-ports"),
            "fib daddr type local jump published-ports".to_string(),
        ]
    );
    let output = chain_rules(&ruleset, "shoal-nat", "output");
    assert_eq!(
        output[1],
        format!("ip daddr != 127.0.0.0/8 ip daddr != {SUBNETS} fib daddr type local jump service-ports")
    );
    assert_eq!(
        chain_rules(&ruleset, "shoal-nat", "service-ports"),
        ["tcp dport 8080 dnat to numgen inc mod 2 map { 0: 100.64.0.3, 1: 100.64.0.4 }:80"],
        "a port with no task has no rule: the node refuses as for any closed port"
    );
}

#[test]
fn the_mesh_leaves_from_the_nodes_ingress_address_before_any_masquerade() {
    let rules = chain_rules(&ruleset(&node()).unwrap(), "shoal-nat", "postrouting");
    assert_eq!(rules[0], "ct status dnat ip daddr 100.64.0.0/24 snat to 100.64.0.250");
    assert!(rules[1..].iter().all(|r| r.ends_with("masquerade")), "{rules:?}");
}

#[test]
fn without_services_nothing_is_added() {
    let mut model = node();
    model.vips.clear();
    model.service_ports.clear();
    model.mesh_source = None;
    let ruleset = ruleset(&model).unwrap();
    assert!(!chains(&ruleset).iter().any(|c| c.contains("vip-") || c.contains("service-ports") || c.contains("shoal output")));
    assert_eq!(chain_rules(&ruleset, "shoal-nat", "prerouting"), ["fib daddr type local jump published-ports"]);
}
