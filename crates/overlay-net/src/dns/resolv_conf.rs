//! resolv.conf both ways: the file a container gets (our resolver, its
//! search domains and options), and the node's own file, read for the
//! upstreams of containers without `--dns`.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::server::{RESOLVER_ADDRESS, RESOLVER_PORT};
use crate::error::{NetError, Result};

const DNS_PORT: u16 = 53;
/// What docker's `--dns-search .` means: no search domains at all.
const NO_SEARCH: &str = ".";

/// A container's `--dns`, `--dns-search` and `--dns-option`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsSettings {
    /// Upstreams for names outside the swarm; none: the node's own.
    #[serde(default)]
    pub nameservers: Vec<IpAddr>,
    #[serde(default)]
    pub search: Vec<String>,
    #[serde(default)]
    pub options: Vec<String>,
}

impl DnsSettings {
    /// Checks what a user gave (`--dns` addresses, search domains and
    /// options as single words); one sentence naming the bad value.
    pub fn parse(nameservers: &[String], search: &[String], options: &[String]) -> Result<DnsSettings> {
        let nameservers = nameservers
            .iter()
            .map(|server| {
                server.trim().parse::<IpAddr>().map_err(|_| NetError::InvalidValue {
                    what: "DNS server",
                    value: format!("{server:?}"),
                    rule: "give an IP address such as 198.18.0.53",
                })
            })
            .collect::<Result<Vec<_>>>()?;
        for domain in search {
            let valid = !domain.is_empty()
                && domain.len() <= 253
                && (domain == NO_SEARCH || domain.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_'));
            if !valid {
                return Err(NetError::InvalidValue {
                    what: "DNS search domain",
                    value: format!("{domain:?}"),
                    rule: "give a domain name such as example.com",
                });
            }
        }
        for option in options {
            if option.is_empty() || option.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) {
                return Err(NetError::InvalidValue {
                    what: "DNS option",
                    value: format!("{option:?}"),
                    rule: "give one resolv.conf option such as ndots:2 or timeout:3",
                });
            }
        }
        Ok(DnsSettings { nameservers, search: search.to_vec(), options: options.to_vec() })
    }

    /// The upstreams of `--dns`, or `None` for the node's.
    pub fn upstreams(&self) -> Option<Vec<SocketAddr>> {
        (!self.nameservers.is_empty()).then(|| self.nameservers.iter().map(|ip| SocketAddr::new(*ip, DNS_PORT)).collect())
    }
}

/// The container's /etc/resolv.conf: our resolver only, `ndots:0` (a
/// service name is tried as it is before any search domain, so `web`
/// never becomes `web.example.com` first) unless the user set ndots.
pub fn render(settings: &DnsSettings) -> String {
    let mut file = String::from("# Written by shoal: names resolve through the node's embedded DNS.\n");
    let search: Vec<&str> = settings.search.iter().map(String::as_str).filter(|d| *d != NO_SEARCH).collect();
    if !search.is_empty() {
        let _ = writeln!(file, "search {}", search.join(" "));
    }
    let _ = writeln!(file, "nameserver {RESOLVER_ADDRESS}");
    let mut options: Vec<&str> = Vec::new();
    if !settings.options.iter().any(|o| o.starts_with("ndots:")) {
        options.push("ndots:0");
    }
    options.extend(settings.options.iter().map(String::as_str));
    let _ = writeln!(file, "options {}", options.join(" "));
    debug_assert_eq!(RESOLVER_PORT, 53, "resolv.conf cannot name another port");
    file
}

/// The nameservers of the node's resolv.conf (`text`), as upstreams.
/// Loopback ones only when `loopback_reachable`: a resolver on 127.0.0.53
/// listens in the namespace that file was written for, which is the
/// daemon's only when the daemon runs in the machine's first namespace.
pub fn host_upstreams(text: &str, loopback_reachable: bool) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver")).then(|| words.next()).flatten()
        })
        // An IPv6 zone (`fe80::1%eth0`) names a link of the node, not of ours.
        .filter_map(|server| server.split('%').next()?.parse::<IpAddr>().ok())
        .filter(|ip| loopback_reachable || !ip.is_loopback())
        .map(|ip| SocketAddr::new(ip, DNS_PORT))
        .collect()
}

/// Whether this process runs in the network namespace of PID 1.
pub fn in_initial_netns() -> bool {
    let inode = |path: &str| crate::netns::inode_of_path(Path::new(path)).ok();
    match (inode("/proc/self/ns/net"), inode("/proc/1/ns/net")) {
        (Some(own), Some(first)) => own == first,
        _ => false,
    }
}
