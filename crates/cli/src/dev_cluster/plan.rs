//! The naming and address plan of dev clusters.
//!
//! Every name, address and path derives from (cluster name, subnet index,
//! host number), so any subcommand — and `down` after a crash that lost the
//! state file — can recompute them.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use anyhow::ensure;
use serde::{Deserialize, Serialize};

/// Everything a dev cluster keeps on disk lives below this directory.
pub const RUN_ROOT: &str = "/run/shoal-dev";
/// One subnet index per cluster (198.18.<index>.0/24) and one host number per
/// host (198.18.<index>.<number>); .254 is the bridge, so both stop at 250.
pub const MAX_INDEX: u8 = 250;
pub const MAX_HOSTS: u32 = 250;
pub const PREFIX_LEN: u8 = 24;
/// Port the daemons listen on for swarm traffic (contract with `shoal daemon`).
pub const SWARM_PORT: u16 = 4242;
const MAX_NAME_LEN: usize = 12;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Manager,
    Worker,
    /// A host of the scale simulator's nodes (`dev-cluster sim`): one
    /// process of many simulated agents instead of a daemon.
    #[value(skip)]
    #[serde(rename = "sim")]
    Simulator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Manager => "manager",
            Role::Worker => "worker",
            Role::Simulator => "sim",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Cluster names end up in namespace names, paths and the subnet registry,
/// so they are kept short and free of separators other than '-'.
pub fn validate_cluster_name(name: &str) -> anyhow::Result<()> {
    let valid = (1..=MAX_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    ensure!(
        valid,
        "cluster name {name:?} is invalid: use 1 to {MAX_NAME_LEN} characters from a-z, 0-9 and '-'"
    );
    Ok(())
}

/// `manager1`, `worker3`: ordinals count per role, from 1.
pub fn host_name(role: Role, ordinal: u32) -> String {
    format!("{role}{ordinal}")
}

/// Inverse of [`host_name`]; `None` for anything `host_name` cannot produce.
pub fn parse_host_name(host: &str) -> Option<(Role, u32)> {
    let (role, digits) = if let Some(rest) = host.strip_prefix("manager") {
        (Role::Manager, rest)
    } else if let Some(rest) = host.strip_prefix("sim") {
        (Role::Simulator, rest)
    } else {
        (Role::Worker, host.strip_prefix("worker")?)
    };
    if digits.is_empty() || digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((role, digits.parse().ok()?))
}

pub fn netns_name(cluster: &str, host: &str) -> String {
    format!("shoal-{cluster}-{host}")
}

/// The namespace holding the cluster's underlay bridge (the "switch").
///
/// Not the machine's root namespace: where br_netfilter is loaded (Docker
/// loads it) bridged frames pass the iptables FORWARD chain of the bridge's
/// namespace, whose policy Docker sets to DROP, and the per-bridge
/// nf_call_iptables=0 cannot override the namespace-wide sysctl. The
/// switch's own netfilter is empty, so hosts reach each other whatever the
/// machine's firewall says. "switch" is no host name, so no cluster's
/// switch can be mistaken for a host namespace of another.
pub fn switch_netns_name(cluster: &str) -> String {
    format!("shoal-{cluster}-switch")
}

/// The host a namespace name belongs to, if it belongs to `cluster`.
///
/// Cluster names may contain '-', so `shoal-a-*` must not claim cluster
/// `a-b`'s `shoal-a-b-manager1`: the rest has to be exactly a host name.
pub fn host_of_netns<'a>(cluster: &str, netns: &'a str) -> Option<&'a str> {
    let host = netns
        .strip_prefix("shoal-")?
        .strip_prefix(cluster)?
        .strip_prefix('-')?;
    parse_host_name(host).map(|_| host)
}

/// The underlay bridge, inside the switch namespace. Interface names are
/// limited to 15 bytes, hence the terse `sh<i>br`.
pub fn bridge_name(index: u8) -> String {
    format!("sh{index}br")
}

/// Switch end of a host's veth pair (a bridge port); the other end is
/// [`HOST_IFACE`] inside the host.
pub fn veth_name(index: u8, number: u8) -> String {
    format!("sh{index}h{number}")
}

/// The host side of every host's veth.
pub const HOST_IFACE: &str = "eth0";

/// The end of the uplink veth in the namespace `up` runs in (the machine's
/// root namespace, normally): it carries [`bridge_address`], so processes
/// there (a test's registry) reach the hosts and the hosts reach them.
pub fn uplink_name(index: u8) -> String {
    format!("sh{index}up")
}

/// The uplink's other end, a port of the bridge in the switch namespace.
pub const SWITCH_UPLINK: &str = "uplink";

/// Whether `link`, in the namespace `up` runs in, belongs to subnet
/// `index`: its uplink, or the bridge and host veths that clusters made
/// before the switch namespace existed.
///
/// A plain prefix test would let index 1 claim index 12's links.
pub fn is_cluster_link(index: u8, link: &str) -> bool {
    if link == bridge_name(index) || link == uplink_name(index) {
        return true;
    }
    match link.strip_prefix(&format!("sh{index}h")) {
        Some(number) => !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()),
        None => false,
    }
}

pub fn host_address(index: u8, number: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, index, number)
}

pub fn bridge_address(index: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, index, 254)
}

pub fn cluster_dir(cluster: &str) -> PathBuf {
    PathBuf::from(RUN_ROOT).join(cluster)
}

pub fn state_file(cluster: &str) -> PathBuf {
    cluster_dir(cluster).join("cluster.json")
}

pub fn host_dir(cluster: &str, host: &str) -> PathBuf {
    cluster_dir(cluster).join(host)
}

/// Where the subnet registry lives. The leading dot keeps it out of the
/// cluster-name space: no valid cluster directory can shadow it.
pub fn registry_dir() -> PathBuf {
    PathBuf::from(RUN_ROOT).join(".index")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_round_trip() {
        assert_eq!(
            parse_host_name(&host_name(Role::Manager, 12)),
            Some((Role::Manager, 12))
        );
        assert_eq!(parse_host_name("worker3"), Some((Role::Worker, 3)));
        assert_eq!(parse_host_name("sim1"), Some((Role::Simulator, 1)));
        for bad in [
            "worker",
            "worker0",
            "worker01",
            "manager-1",
            "node1",
            "worker1x",
        ] {
            assert_eq!(parse_host_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn netns_of_a_dashed_cluster_is_not_claimed_by_its_prefix() {
        assert_eq!(host_of_netns("a-b", "shoal-a-b-manager1"), Some("manager1"));
        assert_eq!(host_of_netns("a", "shoal-a-b-manager1"), None);
        assert_eq!(host_of_netns("a", "shoal-a-worker2"), Some("worker2"));
        assert_eq!(host_of_netns("a", &switch_netns_name("a")), None);
        assert_eq!(host_of_netns("a", &switch_netns_name("a-b")), None);
    }

    #[test]
    fn links_of_one_index_do_not_match_another() {
        assert!(is_cluster_link(1, "sh1br"));
        assert!(is_cluster_link(1, "sh1h12"));
        assert!(is_cluster_link(1, "sh1up"));
        assert!(!is_cluster_link(1, "sh12up"));
        assert!(uplink_name(250).len() <= 15);
        assert!(!is_cluster_link(1, "sh12h3"));
        assert!(!is_cluster_link(1, "sh12br"));
        assert!(!is_cluster_link(1, "sh1h"));
        assert!(veth_name(250, 250).len() <= 15);
    }

    #[test]
    fn cluster_names_are_validated() {
        assert!(validate_cluster_name("dev").is_ok());
        assert!(validate_cluster_name("t-abc-12").is_ok());
        for bad in ["", "Dev", "a_b", "abcdefghijklm", "a/b"] {
            assert!(validate_cluster_name(bad).is_err(), "{bad}");
        }
    }
}
