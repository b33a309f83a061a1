//! The fake's world: namespaces with their links, addresses, routes and
//! sysctls, and the kernel's bookkeeping rules on them.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;

use crate::error::{NetError, Result};
use crate::netlink::{Link, RouteScope, Sysctl};

#[derive(Default)]
pub(super) struct World {
    pub(super) namespaces: BTreeMap<PathBuf, Namespace>,
    pub(super) mutations: u64,
    pub(super) log: Vec<String>,
}

pub(super) struct Namespace {
    pub(super) links: BTreeMap<u32, FakeLink>,
    pub(super) addresses: Vec<(u32, Ipv4Net)>,
    pub(super) routes: Vec<StoredRoute>,
    /// Sysctls that are not per interface.
    pub(super) sysctls: BTreeMap<String, String>,
    pub(super) next_index: u32,
}

pub(super) struct FakeLink {
    pub(super) link: Link,
    /// The other end of a veth: its namespace and index there.
    pub(super) peer: Option<(PathBuf, u32)>,
    /// net/ipv4/conf/<this link>/* settings.
    pub(super) conf: BTreeMap<String, String>,
}

#[derive(Clone)]
pub(super) struct StoredRoute {
    pub(super) destination: Ipv4Net,
    pub(super) gateway: Option<Ipv4Addr>,
    pub(super) device: u32,
    pub(super) source: Option<Ipv4Addr>,
    pub(super) scope: RouteScope,
}

impl Namespace {
    pub(super) fn new(loopback_up: bool) -> Self {
        let mut ns = Namespace {
            links: BTreeMap::new(),
            addresses: Vec::new(),
            routes: Vec::new(),
            sysctls: BTreeMap::from([("net/ipv4/ip_forward".to_string(), "0".to_string())]),
            next_index: 1,
        };
        let lo = ns.allocate_index();
        ns.links.insert(
            lo,
            FakeLink {
                link: Link {
                    index: lo,
                    name: "lo".to_string(),
                    kind: None,
                    mtu: 65536,
                    up: loopback_up,
                    master: None,
                    peer_index: None,
                    alias: None,
                    mac: None,
                },
                peer: None,
                conf: BTreeMap::new(),
            },
        );
        ns
    }

    pub(super) fn allocate_index(&mut self) -> u32 {
        let index = self.next_index;
        self.next_index += 1;
        index
    }

    pub(super) fn index_of(&self, name: &str) -> Option<u32> {
        self.links
            .values()
            .find(|l| l.link.name == name)
            .map(|l| l.link.index)
    }

    /// Removes a link and everything hanging off it in this namespace; the
    /// caller deals with a veth peer elsewhere.
    pub(super) fn remove_link(&mut self, index: u32) -> Option<FakeLink> {
        let removed = self.links.remove(&index)?;
        self.addresses.retain(|(device, _)| *device != index);
        self.routes.retain(|r| r.device != index);
        for other in self.links.values_mut() {
            if other.link.master == Some(index) {
                other.link.master = None;
            }
        }
        Some(removed)
    }

    /// Connected routes the kernel derives from addresses on up links.
    pub(super) fn kernel_routes(&self) -> Vec<StoredRoute> {
        self.addresses
            .iter()
            .filter(|(device, address)| {
                address.prefix_len() < 32 && self.links.get(device).is_some_and(|l| l.link.up)
            })
            .map(|(device, address)| StoredRoute {
                destination: address.trunc(),
                gateway: None,
                device: *device,
                source: Some(address.addr()),
                scope: RouteScope::Link,
            })
            .collect()
    }
}

pub(super) fn namespace<'w>(world: &'w mut World, path: &Path) -> Result<&'w mut Namespace> {
    world
        .namespaces
        .get_mut(path)
        .ok_or_else(|| NetError::NetnsNotFound {
            path: path.to_path_buf(),
        })
}

/// Deletes a link; for a veth also its peer, wherever it is.
pub(super) fn delete_link_everywhere(world: &mut World, ns: &Path, index: u32) {
    let Some(removed) = world
        .namespaces
        .get_mut(ns)
        .and_then(|n| n.remove_link(index))
    else {
        return;
    };
    if let Some((peer_ns, peer_index)) = removed.peer {
        if let Some(n) = world.namespaces.get_mut(&peer_ns) {
            n.remove_link(peer_index);
        }
    }
}

pub(super) fn split_conf_key(key: &Sysctl) -> Option<(&str, &str)> {
    let rest = key.path().strip_prefix("net/ipv4/conf/")?;
    rest.split_once('/')
}
