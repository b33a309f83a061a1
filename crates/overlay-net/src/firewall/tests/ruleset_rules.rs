//! The generated ruleset, rule by rule, without a kernel.

use super::render::{chain_rules, chains};
use crate::firewall::{
    ruleset, FirewallError, FirewallModel, NetworkRules, PortProtocol, PublishedPort,
};

fn network(bridge: &str, subnet: &str, internal: bool, overlay: bool) -> NetworkRules {
    NetworkRules {
        bridge: bridge.into(),
        subnet: subnet.parse().unwrap(),
        internal,
        overlay,
    }
}

fn published(
    protocol: PortProtocol,
    host_ip: Option<&str>,
    host_port: u16,
    container: &str,
    container_port: u16,
    bridge: &str,
) -> PublishedPort {
    PublishedPort {
        protocol,
        host_ip: host_ip.map(|ip| ip.parse().unwrap()),
        host_port,
        container_ip: container.parse().unwrap(),
        container_port,
        bridge: bridge.into(),
    }
}

/// A local network, an internal local one, an overlay, an internal overlay.
fn node() -> FirewallModel {
    FirewallModel {
        networks: vec![
            network("shl-a", "100.64.1.0/24", false, false),
            // Not truncated on purpose: rules use the network address.
            network("shl-b", "100.64.2.1/24", true, false),
            network("shl-o", "100.64.3.0/24", false, true),
            network("shl-p", "100.64.4.0/24", true, true),
        ],
        overlay_device: Some("wgs-x".into()),
        published: vec![
            published(PortProtocol::Tcp, None, 8080, "100.64.1.2", 80, "shl-a"),
            published(
                PortProtocol::Udp,
                Some("127.0.0.1"),
                5353,
                "100.64.1.2",
                53,
                "shl-a",
            ),
            published(
                PortProtocol::Tcp,
                Some("198.18.0.1"),
                8443,
                "100.64.3.5",
                443,
                "shl-o",
            ),
        ],
        ..FirewallModel::default()
    }
}

const OURS: &str = "{ shl-a, shl-b, shl-o, shl-p, wgs-x }";
const SUBNETS: &str = "{ 100.64.1.0/24, 100.64.2.0/24, 100.64.3.0/24, 100.64.4.0/24 }";

#[test]
fn the_transaction_replaces_both_tables_first() {
    let value = serde_json::to_value(ruleset(&node()).unwrap()).unwrap();
    let commands: Vec<String> = value["nftables"].as_array().unwrap()[..5]
        .iter()
        .map(|c| {
            let (verb, body) = c.as_object().unwrap().iter().next().unwrap();
            let (kind, object) = body.as_object().unwrap().iter().next().unwrap();
            format!(
                "{verb} {kind} {} {}",
                object["family"].as_str().unwrap(),
                object["name"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        commands,
        [
            "add table inet shoal",
            "delete table inet shoal",
            "add table ip shoal-nat",
            "delete table ip shoal-nat",
            "add table inet shoal",
        ]
    );
}

#[test]
fn base_chains_hook_forward_and_nat_and_accept_by_default() {
    let all = chains(&ruleset(&node()).unwrap());
    let base: Vec<&String> = all.iter().filter(|c| c.split(' ').count() > 3).collect();
    assert_eq!(
        base,
        [
            "inet shoal forward forward 0 accept",
            "ip shoal-nat prerouting prerouting -100 accept",
            "ip shoal-nat output output -100 accept",
            "ip shoal-nat postrouting postrouting 100 accept",
        ]
    );
}

#[test]
fn forward_dispatches_by_input_interface_and_guards_ours() {
    let rules = chain_rules(&ruleset(&node()).unwrap(), "shoal", "forward");
    assert_eq!(
        rules,
        [
            "ct state established,related accept".to_string(),
            "iifname vmap { shl-a: jump from-shl-a, shl-b: jump from-shl-b, shl-o: jump from-shl-o, \
             shl-p: jump from-shl-p, wgs-x: jump from-wgs-x }"
                .to_string(),
            format!("oifname {OURS} ct status dnat accept"),
            format!("oifname {OURS} counter drop"),
        ]
    );
}

#[test]
fn a_local_network_reaches_itself_published_ports_and_the_outside() {
    let rules = chain_rules(&ruleset(&node()).unwrap(), "shoal", "from-shl-a");
    assert_eq!(
        rules,
        [
            "oifname shl-a counter accept".to_string(),
            "ct status dnat counter accept".to_string(),
            format!("oifname != {OURS} ip daddr != {SUBNETS} counter accept"),
            "counter drop".to_string(),
        ]
    );
}

#[test]
fn an_internal_network_reaches_only_itself() {
    let rules = chain_rules(&ruleset(&node()).unwrap(), "shoal", "from-shl-b");
    assert_eq!(rules, ["oifname shl-b counter accept", "counter drop"]);
}

#[test]
fn an_overlay_network_reaches_its_own_subnet_across_the_overlay_device() {
    let ruleset = ruleset(&node()).unwrap();
    assert_eq!(
        chain_rules(&ruleset, "shoal", "from-shl-o"),
        [
            "oifname shl-o counter accept".to_string(),
            "oifname wgs-x ip saddr 100.64.3.0/24 ip daddr 100.64.3.0/24 counter accept"
                .to_string(),
            "ct status dnat counter accept".to_string(),
            format!("oifname != {OURS} ip daddr != {SUBNETS} counter accept"),
            "counter drop".to_string(),
        ]
    );
    assert_eq!(
        chain_rules(&ruleset, "shoal", "from-shl-p"),
        [
            "oifname shl-p counter accept",
            "oifname wgs-x ip saddr 100.64.4.0/24 ip daddr 100.64.4.0/24 counter accept",
            "counter drop",
        ]
    );
}

#[test]
fn the_overlay_device_delivers_only_within_each_overlay_subnet() {
    let rules = chain_rules(&ruleset(&node()).unwrap(), "shoal", "from-wgs-x");
    assert_eq!(
        rules,
        [
            "oifname shl-o ip saddr 100.64.3.0/24 ip daddr 100.64.3.0/24 counter accept",
            "oifname shl-p ip saddr 100.64.4.0/24 ip daddr 100.64.4.0/24 counter accept",
            "oifname { shl-a, shl-b, shl-o, shl-p } ct status dnat counter accept",
            "counter drop",
        ]
    );
}

#[test]
fn published_ports_are_dnated_for_local_destinations_except_loopback() {
    let ruleset = ruleset(&node()).unwrap();
    assert_eq!(
        chain_rules(&ruleset, "shoal-nat", "prerouting"),
        ["fib daddr type local jump published-ports"]
    );
    assert_eq!(
        chain_rules(&ruleset, "shoal-nat", "output"),
        ["ip daddr != 127.0.0.0/8 fib daddr type local jump published-ports"]
    );
    // The loopback-only UDP port has no DNAT rule: the relay serves it.
    assert_eq!(
        chain_rules(&ruleset, "shoal-nat", "published-ports"),
        [
            "tcp dport 8080 dnat to 100.64.1.2:80",
            "ip daddr 198.18.0.1 tcp dport 8443 dnat to 100.64.3.5:443",
        ]
    );
}

#[test]
fn every_network_is_masqueraded_on_hairpin_and_non_internal_ones_out() {
    let rules = chain_rules(&ruleset(&node()).unwrap(), "shoal-nat", "postrouting");
    let expected: Vec<String> = [("shl-a", "100.64.1.0/24", false), ("shl-b", "100.64.2.0/24", true), ("shl-o", "100.64.3.0/24", false), ("shl-p", "100.64.4.0/24", true)]
        .iter()
        .flat_map(|(bridge, subnet, internal)| {
            let hairpin = format!("ct status dnat oifname {bridge} ip saddr {subnet} ip daddr {subnet} masquerade");
            let outside = format!("ip saddr {subnet} oifname != {OURS} ip daddr != {SUBNETS} masquerade");
            if *internal { vec![hairpin] } else { vec![hairpin, outside] }
        })
        .collect();
    assert_eq!(rules, expected);
}

#[test]
fn an_empty_model_still_builds_valid_tables() {
    let ruleset = ruleset(&FirewallModel::default()).unwrap();
    assert_eq!(
        chain_rules(&ruleset, "shoal", "forward"),
        ["ct state established,related accept"]
    );
    assert!(chain_rules(&ruleset, "shoal-nat", "postrouting").is_empty());
    assert!(chain_rules(&ruleset, "shoal-nat", "published-ports").is_empty());
}

#[test]
fn a_single_interface_is_matched_by_name_not_by_set() {
    let model = FirewallModel {
        networks: vec![network("shoal0", "100.64.9.0/24", false, false)],
        ..FirewallModel::default()
    };
    let rules = chain_rules(&ruleset(&model).unwrap(), "shoal", "forward");
    assert_eq!(rules[3], "oifname shoal0 counter drop");
}

#[test]
fn an_invalid_model_gives_no_ruleset() {
    let mut model = node();
    model.overlay_device = None;
    assert!(matches!(
        ruleset(&model),
        Err(FirewallError::MissingOverlayDevice { .. })
    ));
}
