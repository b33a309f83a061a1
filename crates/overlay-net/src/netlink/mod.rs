//! The one netlink layer of Shoal: links, addresses, routes, per-namespace
//! sysctls and the namespaces themselves, behind the [`Netlink`] trait.
//!
//! A value of a [`Netlink`] type is a connection bound to ONE network
//! namespace (netlink sockets belong to the namespace they were created in);
//! [`Netlink::connect`] opens another one of the same kind in a different
//! namespace. [`Rtnl`] talks to the kernel over rtnetlink; [`FakeNetlink`]
//! keeps the same state in memory, so the code above (bridges, sandboxes,
//! routes) is unit-tested without root.
//!
//! Why a generic trait and not `dyn`: the methods are `async` and their
//! futures must be `Send` (the agent runs them on tokio tasks). Spelling them
//! `fn .. -> impl Future + Send` keeps static dispatch and needs no boxing
//! or extra crate; the price is that the trait is not object-safe, so users
//! are generic over `N: Netlink` (the daemon picks `Rtnl`, tests
//! `FakeNetlink`).
//!
//! Links are named by name at this interface (callers think in names; the
//! real implementation resolves indexes per call). A missing link is an
//! error everywhere except in [`Netlink::delete_link`], where it is the goal.

mod fake;
mod rtnl;

use std::fmt;
use std::future::Future;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;

use crate::error::{NetError, Result};
use crate::netns::NetnsDir;

pub use fake::FakeNetlink;
pub use rtnl::Rtnl;

/// The longest interface name the kernel takes (IFNAMSIZ - 1).
pub const MAX_IFNAME_LEN: usize = 15;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkKind {
    Bridge,
    Veth,
    /// Any other `IFLA_INFO_KIND` (wireguard, dummy, vxlan, ...).
    Other(String),
}

impl fmt::Display for LinkKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkKind::Bridge => f.write_str("bridge"),
            LinkKind::Veth => f.write_str("veth"),
            LinkKind::Other(kind) => f.write_str(kind),
        }
    }
}

/// A network interface as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// `None` for links without a kind (loopback, physical devices).
    pub kind: Option<LinkKind>,
    pub mtu: u32,
    /// Administratively up (IFF_UP).
    pub up: bool,
    /// Index of the bridge this link is a port of.
    pub master: Option<u32>,
    /// For a veth: the peer's index, in the peer's own namespace.
    pub peer_index: Option<u32>,
    /// Free text stored with the link (`ip link set .. alias ..`); sandboxes
    /// keep the network id of an endpoint there.
    pub alias: Option<String>,
    /// The link's hardware address, when it has one.
    pub mac: Option<[u8; 6]>,
}

/// A veth pair to create. `name` is created in the connection's namespace
/// and brought up; `peer_name` is created directly in `peer_netns` (no
/// temporary name here to collide on) and left down for its namespace to
/// configure.
#[derive(Clone, Debug)]
pub struct VethPair<'a> {
    pub name: &'a str,
    pub peer_name: &'a str,
    /// Path of the peer's namespace; `None` keeps the peer here.
    pub peer_netns: Option<&'a Path>,
    /// Bridge (in this namespace) that `name` becomes a port of.
    pub master: Option<&'a str>,
    /// MTU of both ends; `None` keeps the kernel default.
    pub mtu: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RouteScope {
    /// Reached through a gateway or beyond (`scope global`).
    Universe,
    /// Directly on the device's link (`scope link`).
    Link,
    /// This host (`scope host`).
    Host,
}

/// An IPv4 unicast route of the main table.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipv4Route {
    /// Destination network (host bits zero); 0.0.0.0/0 is the default route.
    pub destination: Ipv4Net,
    pub gateway: Option<Ipv4Addr>,
    /// Output device.
    pub device: String,
    /// Preferred source address for traffic this host originates.
    pub source: Option<Ipv4Addr>,
    pub scope: RouteScope,
    /// Made by the kernel for an address's subnet (`proto kernel`); listed
    /// for completeness, never created or removed through this interface.
    pub kernel: bool,
}

impl Ipv4Route {
    /// `destination dev device scope link`: the destination is on the link.
    pub fn on_link(destination: Ipv4Net, device: &str) -> Self {
        Ipv4Route {
            destination: destination.trunc(),
            gateway: None,
            device: device.to_string(),
            source: None,
            scope: RouteScope::Link,
            kernel: false,
        }
    }

    /// `destination via gateway dev device`.
    pub fn via(destination: Ipv4Net, gateway: Ipv4Addr, device: &str) -> Self {
        Ipv4Route {
            destination: destination.trunc(),
            gateway: Some(gateway),
            device: device.to_string(),
            source: None,
            scope: RouteScope::Universe,
            kernel: false,
        }
    }

    /// `default via gateway dev device`.
    pub fn default_via(gateway: Ipv4Addr, device: &str) -> Self {
        Self::via(Ipv4Net::default(), gateway, device)
    }

    pub fn with_source(mut self, source: Ipv4Addr) -> Self {
        self.source = Some(source);
        self
    }

    pub fn is_default(&self) -> bool {
        self.destination.prefix_len() == 0
    }

    /// Whether `other` is the same route as far as the kernel's route key
    /// goes (destination and device): replace_route turns one into the other.
    pub fn same_key(&self, other: &Ipv4Route) -> bool {
        self.destination == other.destination && self.device == other.device
    }
}

impl fmt::Display for Ipv4Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_default() {
            f.write_str("default")?;
        } else {
            write!(f, "{}", self.destination)?;
        }
        if let Some(gateway) = self.gateway {
            write!(f, " via {gateway}")?;
        }
        write!(f, " dev {}", self.device)?;
        if let Some(source) = self.source {
            write!(f, " src {source}")?;
        }
        Ok(())
    }
}

/// A per-namespace kernel setting below /proc/sys/net, as a relative path
/// with '/' separators (interface names may contain dots, so the dotted
/// `sysctl` spelling is ambiguous). Displayed in the dotted form.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sysctl(String);

impl Sysctl {
    /// A setting by its path below /proc/sys, e.g. `net/ipv4/ip_forward`.
    pub fn new(path: &str) -> Result<Self> {
        let valid = path.starts_with("net/")
            && path
                .split('/')
                .all(|part| !part.is_empty() && part != "." && part != "..")
            && path.bytes().all(|b| b.is_ascii_graphic());
        if valid {
            Ok(Sysctl(path.to_string()))
        } else {
            Err(NetError::InvalidSysctl {
                key: path.to_string(),
            })
        }
    }

    /// `net.ipv4.ip_forward`: routing between interfaces of the namespace.
    pub fn ip_forward() -> Self {
        Sysctl("net/ipv4/ip_forward".to_string())
    }

    /// `net.ipv4.conf.<interface>.<setting>`, e.g. proxy_arp.
    pub fn ipv4_conf(interface: &str, setting: &str) -> Result<Self> {
        validate_ifname(interface)?;
        Self::new(&format!("net/ipv4/conf/{interface}/{setting}"))
    }

    /// `net.bridge.bridge-nf-call-iptables`: whether bridged IPv4 passes
    /// through iptables (exists only where br_netfilter is loaded).
    pub fn bridge_nf_call_iptables() -> Self {
        Sysctl("net/bridge/bridge-nf-call-iptables".to_string())
    }

    /// The path below /proc/sys.
    pub fn path(&self) -> &str {
        &self.0
    }

    pub fn proc_path(&self) -> PathBuf {
        Path::new("/proc/sys").join(&self.0)
    }
}

impl fmt::Display for Sysctl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.replace('/', "."))
    }
}

/// Interface names: 1 to 15 bytes, no '/', whitespace or ':' (the kernel's
/// rule), and not "." or "..".
pub fn validate_ifname(name: &str) -> Result<()> {
    let valid = (1..=MAX_IFNAME_LEN).contains(&name.len())
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':');
    if valid {
        Ok(())
    } else {
        Err(NetError::InvalidName {
            what: "interface name",
            name: name.to_string(),
            rule: "use 1 to 15 printable characters without '/', ':' or spaces",
        })
    }
}

/// MTUs this crate sets: IPv4 needs at least 68; 65535 is the most a veth
/// or bridge takes.
pub fn validate_mtu(mtu: u32) -> Result<()> {
    if (68..=65535).contains(&mtu) {
        Ok(())
    } else {
        Err(NetError::InvalidValue {
            what: "MTU",
            value: mtu.to_string(),
            rule: "use a value from 68 to 65535",
        })
    }
}

/// Kernel networking of one network namespace, plus the namespaces
/// themselves. See the module docs for why it is shaped this way.
pub trait Netlink: Send + Sync + Sized {
    /// A human name of the namespace this connection is bound to, for
    /// messages ("current" or the namespace's path).
    fn netns_name(&self) -> String;

    /// A connection of the same kind bound to the namespace at `netns`.
    fn connect(&self, netns: &Path) -> impl Future<Output = Result<Self>> + Send;

    /// Creates namespace `name` in `dir` (see [`NetnsDir::create`]).
    fn create_netns(
        &self,
        dir: &NetnsDir,
        name: &str,
    ) -> impl Future<Output = Result<PathBuf>> + Send;

    /// Removes namespace `name` from `dir`; missing is fine.
    fn delete_netns(&self, dir: &NetnsDir, name: &str) -> impl Future<Output = Result<()>> + Send;

    fn list_netns(&self, dir: &NetnsDir) -> impl Future<Output = Result<Vec<String>>> + Send;

    fn links(&self) -> impl Future<Output = Result<Vec<Link>>> + Send;

    /// The link named `name`, `None` if there is none.
    fn link(&self, name: &str) -> impl Future<Output = Result<Option<Link>>> + Send;

    /// Creates bridge `name`, up, with netfilter calls (nf_call_iptables,
    /// ip6tables, arptables) off for the bridge itself.
    fn create_bridge(
        &self,
        name: &str,
        mtu: Option<u32>,
    ) -> impl Future<Output = Result<()>> + Send;

    fn create_veth(&self, pair: &VethPair<'_>) -> impl Future<Output = Result<()>> + Send;

    /// Makes `name` a port of bridge `master`, or of none.
    fn set_master(
        &self,
        name: &str,
        master: Option<&str>,
    ) -> impl Future<Output = Result<()>> + Send;

    fn set_up(&self, name: &str, up: bool) -> impl Future<Output = Result<()>> + Send;

    fn set_mtu(&self, name: &str, mtu: u32) -> impl Future<Output = Result<()>> + Send;

    /// Sets the hardware address; on a bridge this also stops the kernel
    /// from taking over a port's address as ports come and go.
    fn set_mac(&self, name: &str, mac: [u8; 6]) -> impl Future<Output = Result<()>> + Send;

    fn set_alias(&self, name: &str, alias: &str) -> impl Future<Output = Result<()>> + Send;

    /// Whether bridge port `name` sends frames back out the port they came
    /// in by (hairpin mode); false for a link that is no bridge port.
    fn hairpin(&self, name: &str) -> impl Future<Output = Result<bool>> + Send;

    /// Sets hairpin mode of bridge port `name` (it must be a port).
    fn set_hairpin(&self, name: &str, on: bool) -> impl Future<Output = Result<()>> + Send;

    fn rename(&self, name: &str, new_name: &str) -> impl Future<Output = Result<()>> + Send;

    /// Moves link `name` into the namespace at `netns` (same name there).
    fn move_to_netns(&self, name: &str, netns: &Path) -> impl Future<Output = Result<()>> + Send;

    /// Deletes link `name` (for a veth, both ends); a missing link is fine.
    fn delete_link(&self, name: &str) -> impl Future<Output = Result<()>> + Send;

    /// The IPv4 addresses of `device`, with their prefix lengths.
    fn addresses(&self, device: &str) -> impl Future<Output = Result<Vec<Ipv4Net>>> + Send;

    /// Adds `address` (address/prefix) to `device`; an existing one is an
    /// error ([`NetError::errno`] is `EEXIST`).
    fn add_address(
        &self,
        device: &str,
        address: Ipv4Net,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Removes `address` from `device`; a missing address is fine.
    fn delete_address(
        &self,
        device: &str,
        address: Ipv4Net,
    ) -> impl Future<Output = Result<()>> + Send;

    /// IPv4 unicast routes of the main table that have an output device.
    fn routes(&self) -> impl Future<Output = Result<Vec<Ipv4Route>>> + Send;

    /// Adds `route`; one with the same destination already there is an
    /// error ([`NetError::errno`] is `EEXIST`).
    fn add_route(&self, route: &Ipv4Route) -> impl Future<Output = Result<()>> + Send;

    /// Adds `route`, replacing a route to the same destination.
    fn replace_route(&self, route: &Ipv4Route) -> impl Future<Output = Result<()>> + Send;

    /// Removes the route to `route.destination` on `route.device`; a missing
    /// route is fine.
    fn delete_route(&self, route: &Ipv4Route) -> impl Future<Output = Result<()>> + Send;

    /// Reads a sysctl of this namespace (trailing newline removed).
    fn read_sysctl(&self, key: &Sysctl) -> impl Future<Output = Result<String>> + Send;

    fn write_sysctl(&self, key: &Sysctl, value: &str) -> impl Future<Output = Result<()>> + Send;

    /// The link named `name`, or [`NetError::LinkNotFound`].
    fn require_link(&self, name: &str) -> impl Future<Output = Result<Link>> + Send {
        async move {
            self.link(name)
                .await?
                .ok_or_else(|| NetError::LinkNotFound {
                    name: name.to_string(),
                    netns: self.netns_name(),
                })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctl_keys_stay_below_net() {
        assert_eq!(Sysctl::ip_forward().to_string(), "net.ipv4.ip_forward");
        let proxy = Sysctl::ipv4_conf("eth0.100", "proxy_arp").expect("valid");
        assert_eq!(
            proxy.proc_path(),
            PathBuf::from("/proc/sys/net/ipv4/conf/eth0.100/proxy_arp")
        );
        for bad in [
            "kernel/hostname",
            "net/../kernel/x",
            "net//x",
            "/net/x",
            "net/a b",
        ] {
            assert!(Sysctl::new(bad).is_err(), "{bad}");
        }
        assert!(Sysctl::ipv4_conf("../../x", "proxy_arp").is_err());
    }

    #[test]
    fn interface_names_follow_the_kernel_rule() {
        assert!(validate_ifname("shl-0123456789a").is_ok());
        for bad in ["", "sixteen-chars-xx", "a/b", "a b", "a:1", ".", ".."] {
            assert!(validate_ifname(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn routes_print_like_ip_route() {
        let route = Ipv4Route::default_via(Ipv4Addr::new(100, 64, 3, 1), "eth0");
        assert_eq!(route.to_string(), "default via 100.64.3.1 dev eth0");
        let host: Ipv4Net = "100.64.3.9/32".parse().expect("net");
        let route = Ipv4Route::on_link(host, "wgs-x").with_source(Ipv4Addr::new(100, 64, 3, 2));
        assert_eq!(route.to_string(), "100.64.3.9/32 dev wgs-x src 100.64.3.2");
    }
}
