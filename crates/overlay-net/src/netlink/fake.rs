//! An in-memory [`Netlink`]: namespaces, links, addresses, routes and
//! sysctls, with the kernel rules that code above it can trip over (names
//! unique per namespace, veth ends dying together, routes needing an up
//! device and a reachable gateway, links moved to another namespace losing
//! their addresses, renaming only while down). Connections made from one
//! fake share one world, as connections to one kernel do.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use ipnet::Ipv4Net;
use nix::libc;

use super::{validate_ifname, validate_mtu, Ipv4Route, Link, LinkKind, Netlink, Sysctl, VethPair};
use crate::error::{NetError, Result};
use crate::netns::{self, NetnsDir};

mod world;

use world::{
    delete_link_everywhere, namespace, split_conf_key, FakeLink, Namespace, StoredRoute, World,
};

/// The key of the namespace a fresh fake starts in.
const CURRENT: &str = "current";
const DEFAULT_MTU: u32 = 1500;
/// Where a fake link keeps its bridge port's hairpin mode (not a sysctl:
/// the name cannot clash with a net/ipv4/conf setting).
const HAIRPIN_KEY: &str = "bridge_port:hairpin";

/// A fake connection bound to one namespace of a shared in-memory world.
#[derive(Clone)]
pub struct FakeNetlink {
    world: Arc<Mutex<World>>,
    ns: PathBuf,
}

impl Default for FakeNetlink {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeNetlink {
    /// A fresh world with one namespace ("current", loopback up, as a host's
    /// root namespace), and a connection to it.
    pub fn new() -> Self {
        let mut world = World::default();
        world
            .namespaces
            .insert(PathBuf::from(CURRENT), Namespace::new(true));
        FakeNetlink {
            world: Arc::new(Mutex::new(world)),
            ns: PathBuf::from(CURRENT),
        }
    }

    /// How many changes all connections of this world have made; lets a
    /// test prove that a second, identical call changed nothing.
    pub fn mutations(&self) -> u64 {
        self.lock().mutations
    }

    /// Every change made so far, as "namespace: operation" lines.
    pub fn log(&self) -> Vec<String> {
        self.lock().log.clone()
    }

    /// Paths of every namespace in the world except the starting one.
    pub fn namespaces(&self) -> Vec<PathBuf> {
        self.lock()
            .namespaces
            .keys()
            .filter(|p| p.as_path() != Path::new(CURRENT))
            .cloned()
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, World> {
        // A panic while holding the lock is a test failure already; the
        // world is still readable for its report.
        self.world
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs a change against this connection's namespace and counts it.
    fn change<T>(
        &self,
        what: String,
        apply: impl FnOnce(&mut World, &Path) -> Result<T>,
    ) -> Result<T> {
        let mut world = self.lock();
        let result = apply(&mut world, &self.ns)?;
        world.mutations += 1;
        world.log.push(format!("{}: {what}", self.ns.display()));
        Ok(result)
    }

    fn read<T>(&self, look: impl FnOnce(&Namespace) -> Result<T>) -> Result<T> {
        let world = self.lock();
        let ns = world
            .namespaces
            .get(&self.ns)
            .ok_or_else(|| NetError::NetnsNotFound {
                path: self.ns.clone(),
            })?;
        look(ns)
    }

    fn os_error(&self, action: String, errno: i32) -> NetError {
        NetError::Netlink {
            action,
            netns: self.netns_name(),
            source: io::Error::from_raw_os_error(errno),
        }
    }

    fn not_found(&self, name: &str) -> NetError {
        NetError::LinkNotFound {
            name: name.to_string(),
            netns: self.netns_name(),
        }
    }
}

impl Netlink for FakeNetlink {
    fn netns_name(&self) -> String {
        self.ns.display().to_string()
    }

    async fn connect(&self, netns: &Path) -> Result<Self> {
        if !self.lock().namespaces.contains_key(netns) {
            return Err(NetError::NetnsNotFound {
                path: netns.to_path_buf(),
            });
        }
        Ok(FakeNetlink {
            world: Arc::clone(&self.world),
            ns: netns.to_path_buf(),
        })
    }

    async fn create_netns(&self, dir: &NetnsDir, name: &str) -> Result<PathBuf> {
        netns::validate_name(name)?;
        let path = dir.path(name);
        self.change(format!("create netns {}", path.display()), |world, _| {
            if world.namespaces.contains_key(&path) {
                return Err(NetError::NetnsExists { path: path.clone() });
            }
            world.namespaces.insert(path.clone(), Namespace::new(false));
            Ok(path.clone())
        })
    }

    async fn delete_netns(&self, dir: &NetnsDir, name: &str) -> Result<()> {
        netns::validate_name(name)?;
        let path = dir.path(name);
        if !self.lock().namespaces.contains_key(&path) {
            return Ok(());
        }
        self.change(format!("delete netns {}", path.display()), |world, _| {
            let indexes: Vec<u32> = world
                .namespaces
                .get(&path)
                .map(|n| n.links.keys().copied().collect())
                .unwrap_or_default();
            for index in indexes {
                delete_link_everywhere(world, &path, index);
            }
            world.namespaces.remove(&path);
            Ok(())
        })
    }

    async fn list_netns(&self, dir: &NetnsDir) -> Result<Vec<String>> {
        let world = self.lock();
        Ok(world
            .namespaces
            .keys()
            .filter(|p| p.parent() == Some(dir.dir()))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
            .collect())
    }

    async fn links(&self) -> Result<Vec<Link>> {
        self.read(|ns| Ok(ns.links.values().map(|l| l.link.clone()).collect()))
    }

    async fn link(&self, name: &str) -> Result<Option<Link>> {
        validate_ifname(name)?;
        self.read(|ns| {
            Ok(ns
                .links
                .values()
                .find(|l| l.link.name == name)
                .map(|l| l.link.clone()))
        })
    }

    async fn create_bridge(&self, name: &str, mtu: Option<u32>) -> Result<()> {
        validate_ifname(name)?;
        if let Some(mtu) = mtu {
            validate_mtu(mtu)?;
        }
        let action = format!("create bridge {name}");
        self.change(action.clone(), |world, path| {
            let ns = namespace(world, path)?;
            if ns.index_of(name).is_some() {
                return Err(self.os_error(action, libc::EEXIST));
            }
            let index = ns.allocate_index();
            ns.links.insert(
                index,
                FakeLink {
                    link: Link {
                        index,
                        name: name.to_string(),
                        kind: Some(LinkKind::Bridge),
                        mtu: mtu.unwrap_or(DEFAULT_MTU),
                        up: true,
                        master: None,
                        peer_index: None,
                        alias: None,
                        mac: None,
                    },
                    peer: None,
                    conf: BTreeMap::new(),
                },
            );
            Ok(())
        })
    }

    async fn create_veth(&self, pair: &VethPair<'_>) -> Result<()> {
        validate_ifname(pair.name)?;
        validate_ifname(pair.peer_name)?;
        if let Some(mtu) = pair.mtu {
            validate_mtu(mtu)?;
        }
        let action = format!("create veth {} with peer {}", pair.name, pair.peer_name);
        let peer_path = pair.peer_netns.unwrap_or(&self.ns).to_path_buf();
        self.change(action.clone(), |world, path| {
            if !world.namespaces.contains_key(&peer_path) {
                return Err(NetError::NetnsNotFound { path: peer_path });
            }
            let ns = namespace(world, path)?;
            if ns.index_of(pair.name).is_some() {
                return Err(self.os_error(action, libc::EEXIST));
            }
            let master = match pair.master {
                Some(master) => {
                    let index = ns.index_of(master).ok_or_else(|| self.not_found(master))?;
                    if ns.links[&index].link.kind != Some(LinkKind::Bridge) {
                        return Err(self.os_error(action, libc::EOPNOTSUPP));
                    }
                    Some(index)
                }
                None => None,
            };
            let peer_ns = namespace(world, &peer_path)?;
            if peer_ns.index_of(pair.peer_name).is_some()
                || pair.peer_name == pair.name && peer_path == path
            {
                return Err(self.os_error(action, libc::EEXIST));
            }
            let peer_index = peer_ns.allocate_index();
            let ns = namespace(world, path)?;
            let index = ns.allocate_index();
            let mtu = pair.mtu.unwrap_or(DEFAULT_MTU);
            let end = |index, name: &str, up, master, peer: (PathBuf, u32)| FakeLink {
                link: Link {
                    index,
                    name: name.to_string(),
                    kind: Some(LinkKind::Veth),
                    mtu,
                    up,
                    master,
                    peer_index: Some(peer.1),
                    alias: None,
                    mac: None,
                },
                peer: Some(peer),
                conf: BTreeMap::new(),
            };
            ns.links.insert(
                index,
                end(
                    index,
                    pair.name,
                    true,
                    master,
                    (peer_path.clone(), peer_index),
                ),
            );
            namespace(world, &peer_path)?.links.insert(
                peer_index,
                end(
                    peer_index,
                    pair.peer_name,
                    false,
                    None,
                    (path.to_path_buf(), index),
                ),
            );
            Ok(())
        })
    }

    async fn set_master(&self, name: &str, master: Option<&str>) -> Result<()> {
        let action = format!("set the master of {name} to {master:?}");
        self.change(action.clone(), |world, path| {
            let ns = namespace(world, path)?;
            let index = ns.index_of(name).ok_or_else(|| self.not_found(name))?;
            let master = match master {
                Some(master) => {
                    let bridge = ns.index_of(master).ok_or_else(|| self.not_found(master))?;
                    if ns.links[&bridge].link.kind != Some(LinkKind::Bridge) || bridge == index {
                        return Err(self.os_error(action, libc::EOPNOTSUPP));
                    }
                    Some(bridge)
                }
                None => None,
            };
            if let Some(link) = ns.links.get_mut(&index) {
                link.link.master = master;
            }
            Ok(())
        })
    }

    async fn set_up(&self, name: &str, up: bool) -> Result<()> {
        self.change(format!("set {name} up={up}"), |world, path| {
            let ns = namespace(world, path)?;
            let index = ns.index_of(name).ok_or_else(|| self.not_found(name))?;
            if let Some(link) = ns.links.get_mut(&index) {
                link.link.up = up;
            }
            if !up {
                // IPv4 flushes the routes of a device that goes down.
                ns.routes.retain(|r| r.device != index);
            }
            Ok(())
        })
    }

    async fn set_mtu(&self, name: &str, mtu: u32) -> Result<()> {
        validate_mtu(mtu)?;
        self.change(format!("set the MTU of {name} to {mtu}"), |world, path| {
            let ns = namespace(world, path)?;
            let index = ns.index_of(name).ok_or_else(|| self.not_found(name))?;
            if let Some(link) = ns.links.get_mut(&index) {
                link.link.mtu = mtu;
            }
            Ok(())
        })
    }

    async fn set_mac(&self, name: &str, mac: [u8; 6]) -> Result<()> {
        self.change(format!("set the address of {name}"), |world, path| {
            let ns = namespace(world, path)?;
            let index = ns.index_of(name).ok_or_else(|| self.not_found(name))?;
            if let Some(link) = ns.links.get_mut(&index) {
                link.link.mac = Some(mac);
            }
            Ok(())
        })
    }

    async fn hairpin(&self, name: &str) -> Result<bool> {
        self.read(|ns| {
            let index = ns.index_of(name).ok_or_else(|| self.not_found(name))?;
            Ok(ns.links[&index].conf.get(HAIRPIN_KEY).is_some_and(|v| v == "1"))
        })
    }

    async fn set_hairpin(&self, name: &str, on: bool) -> Result<()> {
        let action = format!("set hairpin mode of {name} to {on}");
        self.change(action.clone(), |world, path| {
            let ns = namespace(world, path)?;
            let index = ns.index_of(name).ok_or_else(|| self.not_found(name))?;
            let is_port = ns.links[&index].link.master.is_some_and(|m| {
                ns.links.get(&m).is_some_and(|b| b.link.kind == Some(LinkKind::Bridge))
            });
            if !is_port {
                return Err(self.os_error(action, libc::EOPNOTSUPP));
            }
            if let Some(link) = ns.links.get_mut(&index) {
                link.conf.insert(HAIRPIN_KEY.to_string(), if on { "1" } else { "0" }.to_string());
            }
            Ok(())
        })
    }

    async fn set_alias(&self, name: &str, alias: &str) -> Result<()> {
        self.change(
            format!("set the alias of {name} to {alias}"),
            |world, path| {
                let ns = namespace(world, path)?;
                let index = ns.index_of(name).ok_or_else(|| self.not_found(name))?;
                if let Some(link) = ns.links.get_mut(&index) {
                    link.link.alias = (!alias.is_empty()).then(|| alias.to_string());
                }
                Ok(())
            },
        )
    }

    async fn rename(&self, name: &str, new_name: &str) -> Result<()> {
        validate_ifname(new_name)?;
        let action = format!("rename {name} to {new_name}");
        self.change(action.clone(), |world, path| {
            let ns = namespace(world, path)?;
            let index = ns.index_of(name).ok_or_else(|| self.not_found(name))?;
            if ns.index_of(new_name).is_some() {
                return Err(self.os_error(action, libc::EEXIST));
            }
            let link = ns
                .links
                .get_mut(&index)
                .ok_or_else(|| self.not_found(name))?;
            // The kernel renames only links that are down.
            if link.link.up {
                return Err(self.os_error(action, libc::EBUSY));
            }
            link.link.name = new_name.to_string();
            Ok(())
        })
    }

    async fn move_to_netns(&self, name: &str, netns: &Path) -> Result<()> {
        let action = format!("move {name} to {}", netns.display());
        let target = netns.to_path_buf();
        self.change(action.clone(), |world, path| {
            if !world.namespaces.contains_key(&target) {
                return Err(NetError::NetnsNotFound { path: target });
            }
            let ns = namespace(world, path)?;
            let index = ns.index_of(name).ok_or_else(|| self.not_found(name))?;
            if target == path {
                return Ok(());
            }
            if namespace(world, &target)?.index_of(name).is_some() {
                return Err(self.os_error(action, libc::EEXIST));
            }
            let Some(mut moved) = namespace(world, path)?.remove_link(index) else {
                return Err(self.not_found(name));
            };
            let dest = namespace(world, &target)?;
            let new_index = dest.allocate_index();
            // A link that changes namespace arrives down, without addresses,
            // master or per-interface settings.
            moved.link.index = new_index;
            moved.link.up = false;
            moved.link.master = None;
            moved.conf.clear();
            let peer = moved.peer.clone();
            dest.links.insert(new_index, moved);
            if let Some((peer_ns, peer_index)) = peer {
                if let Some(peer) = world
                    .namespaces
                    .get_mut(&peer_ns)
                    .and_then(|n| n.links.get_mut(&peer_index))
                {
                    peer.peer = Some((target.clone(), new_index));
                    peer.link.peer_index = Some(new_index);
                }
            }
            Ok(())
        })
    }

    async fn delete_link(&self, name: &str) -> Result<()> {
        let Some(link) = self.link(name).await? else {
            return Ok(());
        };
        self.change(format!("delete link {name}"), |world, path| {
            delete_link_everywhere(world, path, link.index);
            Ok(())
        })
    }

    async fn addresses(&self, device: &str) -> Result<Vec<Ipv4Net>> {
        self.read(|ns| {
            let index = ns.index_of(device).ok_or_else(|| self.not_found(device))?;
            Ok(ns
                .addresses
                .iter()
                .filter(|(d, _)| *d == index)
                .map(|(_, a)| *a)
                .collect())
        })
    }

    async fn add_address(&self, device: &str, address: Ipv4Net) -> Result<()> {
        let action = format!("add address {address} to {device}");
        self.change(action.clone(), |world, path| {
            let ns = namespace(world, path)?;
            let index = ns.index_of(device).ok_or_else(|| self.not_found(device))?;
            if ns.addresses.contains(&(index, address)) {
                return Err(self.os_error(action, libc::EEXIST));
            }
            ns.addresses.push((index, address));
            Ok(())
        })
    }

    async fn delete_address(&self, device: &str, address: Ipv4Net) -> Result<()> {
        let present = self.addresses(device).await?.contains(&address);
        if !present {
            return Ok(());
        }
        self.change(
            format!("delete address {address} from {device}"),
            |world, path| {
                let ns = namespace(world, path)?;
                if let Some(index) = ns.index_of(device) {
                    ns.addresses.retain(|entry| *entry != (index, address));
                    // Routes through a gateway that was only reachable via this
                    // address go with it, as the kernel's fib_sync_down_addr.
                    let reachable: Vec<Ipv4Net> = ns
                        .addresses
                        .iter()
                        .filter(|(d, _)| *d == index)
                        .map(|(_, a)| a.trunc())
                        .collect();
                    ns.routes.retain(|r| {
                        r.device != index
                            || r.gateway
                                .is_none_or(|gw| reachable.iter().any(|n| n.contains(&gw)))
                    });
                }
                Ok(())
            },
        )
    }

    async fn routes(&self) -> Result<Vec<Ipv4Route>> {
        self.read(|ns| {
            let name = |index: u32| ns.links.get(&index).map(|l| l.link.name.clone());
            let kernel = ns.kernel_routes().into_iter().map(|r| (r, true));
            let ours = ns.routes.iter().cloned().map(|r| (r, false));
            Ok(kernel
                .chain(ours)
                .filter_map(|(r, kernel)| {
                    Some(Ipv4Route {
                        destination: r.destination,
                        gateway: r.gateway,
                        device: name(r.device)?,
                        source: r.source,
                        scope: r.scope,
                        kernel,
                    })
                })
                .collect())
        })
    }

    async fn add_route(&self, route: &Ipv4Route) -> Result<()> {
        self.write_route(route, false)
    }

    async fn replace_route(&self, route: &Ipv4Route) -> Result<()> {
        self.write_route(route, true)
    }

    async fn delete_route(&self, route: &Ipv4Route) -> Result<()> {
        let destination = route.destination.trunc();
        let present = self.read(|ns| {
            let index = ns.index_of(&route.device);
            Ok(index.is_some_and(|index| {
                ns.routes
                    .iter()
                    .any(|r| r.destination == destination && r.device == index)
            }))
        })?;
        if !present {
            return Ok(());
        }
        self.change(format!("delete route {route}"), |world, path| {
            let ns = namespace(world, path)?;
            if let Some(index) = ns.index_of(&route.device) {
                ns.routes
                    .retain(|r| !(r.destination == destination && r.device == index));
            }
            Ok(())
        })
    }

    async fn read_sysctl(&self, key: &Sysctl) -> Result<String> {
        let missing = || NetError::Sysctl {
            action: "read",
            key: key.to_string(),
            netns: self.netns_name(),
            source: io::Error::from_raw_os_error(libc::ENOENT),
        };
        self.read(|ns| match split_conf_key(key) {
            Some((interface, setting)) => {
                let index = ns.index_of(interface).ok_or_else(missing)?;
                Ok(ns.links[&index]
                    .conf
                    .get(setting)
                    .cloned()
                    .unwrap_or_else(|| "0".to_string()))
            }
            None => ns.sysctls.get(key.path()).cloned().ok_or_else(missing),
        })
    }

    async fn write_sysctl(&self, key: &Sysctl, value: &str) -> Result<()> {
        let missing = || NetError::Sysctl {
            action: "write",
            key: key.to_string(),
            netns: self.netns_name(),
            source: io::Error::from_raw_os_error(libc::ENOENT),
        };
        self.change(format!("set {key} = {value}"), |world, path| {
            let ns = namespace(world, path)?;
            match split_conf_key(key) {
                Some((interface, setting)) => {
                    let index = ns.index_of(interface).ok_or_else(missing)?;
                    if let Some(link) = ns.links.get_mut(&index) {
                        link.conf.insert(setting.to_string(), value.to_string());
                    }
                }
                None => {
                    ns.sysctls.insert(key.path().to_string(), value.to_string());
                }
            }
            Ok(())
        })
    }
}

impl FakeNetlink {
    /// Sets a sysctl that exists in this namespace without counting it as a
    /// change made by the code under test (e.g. what br_netfilter adds).
    pub fn preset_sysctl(&self, key: &Sysctl, value: &str) {
        let mut world = self.lock();
        if let Some(ns) = world.namespaces.get_mut(&self.ns) {
            ns.sysctls.insert(key.path().to_string(), value.to_string());
        }
    }

    fn write_route(&self, route: &Ipv4Route, replace: bool) -> Result<()> {
        let verb = if replace { "replace" } else { "add" };
        let action = format!("{verb} route {route}");
        let destination = route.destination.trunc();
        self.change(action.clone(), |world, path| {
            let ns = namespace(world, path)?;
            let index = ns
                .index_of(&route.device)
                .ok_or_else(|| self.not_found(&route.device))?;
            if !ns.links[&index].link.up {
                return Err(self.os_error(action, libc::ENETDOWN));
            }
            if let Some(gateway) = route.gateway {
                let on_link = ns.kernel_routes().iter().chain(ns.routes.iter()).any(|r| {
                    r.device == index && r.gateway.is_none() && r.destination.contains(&gateway)
                });
                if !on_link {
                    return Err(self.os_error(action, libc::ENETUNREACH));
                }
            }
            if let Some(source) = route.source {
                if !ns.addresses.iter().any(|(_, a)| a.addr() == source) {
                    return Err(self.os_error(action, libc::EINVAL));
                }
            }
            let exists = ns
                .kernel_routes()
                .iter()
                .chain(ns.routes.iter())
                .any(|r| r.destination == destination);
            if exists && !replace {
                return Err(self.os_error(action, libc::EEXIST));
            }
            // The kernel's key is the destination; replace swaps the route.
            ns.routes.retain(|r| r.destination != destination);
            ns.routes.push(StoredRoute {
                destination,
                gateway: route.gateway,
                device: index,
                source: route.source,
                scope: route.scope,
            });
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests;
