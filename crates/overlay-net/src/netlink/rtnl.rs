//! [`Netlink`] over the kernel's rtnetlink (the rtnetlink crate), one
//! connection per namespace.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use nix::libc;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{
    InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoVeth, LinkAttribute, LinkFlags,
    LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol,
    RouteScope as KernelScope, RouteType,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::sys::{protocols::NETLINK_ROUTE, Socket, TokioSocket};
use rtnetlink::{
    AddressMessageBuilder, Handle, LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec,
    LinkVeth,
    RouteMessageBuilder,
};

use super::{
    validate_ifname, validate_mtu, Ipv4Route, Link, LinkKind, Netlink, RouteScope, Sysctl, VethPair,
};
use crate::error::{NetError, Result};
use crate::netns::{self, NetnsDir};

/// An rtnetlink connection bound to one network namespace. Needs a tokio
/// runtime: the connection is driven by a task spawned on it, which ends
/// when the last clone of this value is dropped.
#[derive(Clone)]
pub struct Rtnl {
    handle: Handle,
    /// The namespace, held open: sysctls are read by a thread that enters
    /// it, and holding it keeps "the namespace of this connection" one
    /// namespace even if its name is deleted meanwhile.
    ns: Arc<File>,
    /// For messages: "current" or the path the namespace was opened by.
    netns_name: String,
}

impl Rtnl {
    /// A connection to the namespace the calling thread is in.
    pub fn current() -> Result<Self> {
        let self_ns = Path::new("/proc/thread-self/ns/net");
        let ns = netns::open_path(self_ns)?;
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(|source| NetError::Netlink {
                action: "open a netlink socket".to_string(),
                netns: "current".to_string(),
                source,
            })?;
        tokio::spawn(connection);
        Ok(Rtnl {
            handle,
            ns: Arc::new(ns),
            netns_name: "current".to_string(),
        })
    }

    /// A connection to the namespace at `path` (a bind mount under a
    /// [`NetnsDir`], or /proc/<pid>/ns/net).
    pub fn in_netns(path: &Path) -> Result<Self> {
        let netns_name = path.display().to_string();
        // A netlink socket belongs to the namespace it was created in, so it
        // is created on a thread inside it and then driven from here.
        let ns = netns::open_path(path)?;
        let socket = netns::run_in_ns(&ns, path, || Socket::new(NETLINK_ROUTE))?;
        let netlink_error = |action: &str, source: io::Error| NetError::Netlink {
            action: action.to_string(),
            netns: netns_name.clone(),
            source,
        };
        let socket = socket.map_err(|e| netlink_error("open a netlink socket", e))?;
        socket
            .set_non_blocking(true)
            .map_err(|e| netlink_error("make the netlink socket non-blocking", e))?;
        // SAFETY: the fd comes straight from into_raw_fd, so it is owned once.
        let socket = unsafe { TokioSocket::from_raw_fd(socket.into_raw_fd()) };
        let (connection, handle, _) = rtnetlink::from_socket(socket);
        tokio::spawn(connection);
        Ok(Rtnl {
            handle,
            ns: Arc::new(ns),
            netns_name,
        })
    }

    fn failed(&self, action: impl Into<String>, error: rtnetlink::Error) -> NetError {
        NetError::Netlink {
            action: action.into(),
            netns: self.netns_name.clone(),
            source: os_error(error),
        }
    }

    async fn link_message(&self, name: &str) -> Result<Option<LinkMessage>> {
        validate_ifname(name)?;
        let found = self
            .handle
            .link()
            .get()
            .match_name(name)
            .execute()
            .try_next()
            .await;
        match found {
            Ok(found) => Ok(found),
            Err(e) if errno_of(&e) == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(self.failed(format!("look up link {name}"), e)),
        }
    }

    async fn index(&self, name: &str) -> Result<u32> {
        Ok(self.require_link(name).await?.index)
    }

    async fn change_link(&self, action: String, message: LinkMessage) -> Result<()> {
        self.handle
            .link()
            .set(message)
            .execute()
            .await
            .map_err(|e| self.failed(action, e))
    }

    /// Runs blocking `work` on a thread inside this connection's namespace.
    async fn in_own_netns<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let ns = Arc::clone(&self.ns);
        let path = PathBuf::from(&self.netns_name);
        tokio::task::spawn_blocking(move || netns::run_in_ns(&ns, &path, work))
            .await
            .unwrap_or_else(|_| {
                Err(NetError::ThreadPanicked {
                    path: PathBuf::from(&self.netns_name),
                })
            })
    }

    async fn route_message(&self, route: &Ipv4Route) -> Result<RouteMessage> {
        let index = self.index(&route.device).await?;
        let mut builder = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(route.destination.network(), route.destination.prefix_len())
            .output_interface(index)
            .protocol(RouteProtocol::Static)
            .scope(match route.scope {
                RouteScope::Universe => KernelScope::Universe,
                RouteScope::Link => KernelScope::Link,
                RouteScope::Host => KernelScope::Host,
            });
        if let Some(gateway) = route.gateway {
            builder = builder.gateway(gateway);
        }
        if let Some(source) = route.source {
            builder = builder.pref_source(source);
        }
        Ok(builder.build())
    }

    async fn write_route(&self, route: &Ipv4Route, replace: bool) -> Result<()> {
        let message = self.route_message(route).await?;
        let request = self.handle.route().add(message);
        let request = if replace { request.replace() } else { request };
        request.execute().await.map_err(|e| {
            self.failed(
                format!("{} route {route}", if replace { "replace" } else { "add" }),
                e,
            )
        })
    }
}

impl Netlink for Rtnl {
    fn netns_name(&self) -> String {
        self.netns_name.clone()
    }

    async fn connect(&self, netns: &Path) -> Result<Self> {
        Rtnl::in_netns(netns)
    }

    async fn create_netns(&self, dir: &NetnsDir, name: &str) -> Result<PathBuf> {
        let (dir, name) = (dir.clone(), name.to_string());
        blocking(move || dir.create(&name)).await
    }

    async fn delete_netns(&self, dir: &NetnsDir, name: &str) -> Result<()> {
        let (dir, name) = (dir.clone(), name.to_string());
        blocking(move || dir.delete(&name)).await
    }

    async fn list_netns(&self, dir: &NetnsDir) -> Result<Vec<String>> {
        let dir = dir.clone();
        blocking(move || dir.list()).await
    }

    async fn links(&self) -> Result<Vec<Link>> {
        let messages: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| self.failed("list links", e))?;
        Ok(messages.iter().filter_map(parse_link).collect())
    }

    async fn link(&self, name: &str) -> Result<Option<Link>> {
        Ok(self.link_message(name).await?.as_ref().and_then(parse_link))
    }

    async fn create_bridge(&self, name: &str, mtu: Option<u32>) -> Result<()> {
        validate_ifname(name)?;
        // Where br_netfilter is loaded (Docker loads it), bridged frames may
        // traverse iptables; off for this bridge, though the namespace-wide
        // net.bridge.bridge-nf-call-* sysctls still win when they are on.
        let mut bridge = LinkBridge::new(name)
            .nf_call_iptables(false)
            .nf_call_ip6tables(false)
            .nf_call_arptables(false)
            .up();
        if let Some(mtu) = mtu {
            validate_mtu(mtu)?;
            bridge = bridge.mtu(mtu);
        }
        self.handle
            .link()
            .add(bridge.build())
            .execute()
            .await
            .map_err(|e| self.failed(format!("create bridge {name}"), e))
    }

    async fn create_veth(&self, pair: &VethPair<'_>) -> Result<()> {
        validate_ifname(pair.name)?;
        validate_ifname(pair.peer_name)?;
        if let Some(mtu) = pair.mtu {
            validate_mtu(mtu)?;
        }
        let master = match pair.master {
            Some(master) => Some(self.index(master).await?),
            None => None,
        };
        // Kept open until the request is done: the kernel reads the fd then.
        let peer_ns = pair.peer_netns.map(netns::open_path).transpose()?;
        let mut peer = LinkMessageBuilder::<LinkUnspec>::new().name(pair.peer_name);
        if let Some(ns) = &peer_ns {
            peer = peer.setns_by_fd(ns.as_raw_fd());
        }
        if let Some(mtu) = pair.mtu {
            peer = peer.mtu(mtu);
        }
        let mut veth = LinkVeth::new(pair.name, pair.peer_name)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())))
            .up();
        if let Some(mtu) = pair.mtu {
            veth = veth.mtu(mtu);
        }
        if let Some(master) = master {
            veth = veth.controller(master);
        }
        let result = self.handle.link().add(veth.build()).execute().await;
        drop(peer_ns);
        result.map_err(|e| {
            self.failed(
                format!("create veth {} with peer {}", pair.name, pair.peer_name),
                e,
            )
        })
    }

    async fn set_master(&self, name: &str, master: Option<&str>) -> Result<()> {
        let index = self.index(name).await?;
        let message = match master {
            Some(master) => LinkUnspec::new_with_index(index).controller(self.index(master).await?),
            None => LinkUnspec::new_with_index(index).nocontroller(),
        };
        let action = match master {
            Some(master) => format!("attach {name} to bridge {master}"),
            None => format!("detach {name} from its bridge"),
        };
        self.change_link(action, message.build()).await
    }

    async fn set_up(&self, name: &str, up: bool) -> Result<()> {
        let index = self.index(name).await?;
        let link = LinkUnspec::new_with_index(index);
        let link = if up { link.up() } else { link.down() };
        let action = format!("set link {name} {}", if up { "up" } else { "down" });
        self.change_link(action, link.build()).await
    }

    async fn set_mtu(&self, name: &str, mtu: u32) -> Result<()> {
        validate_mtu(mtu)?;
        let index = self.index(name).await?;
        let message = LinkUnspec::new_with_index(index).mtu(mtu).build();
        self.change_link(format!("set the MTU of {name} to {mtu}"), message)
            .await
    }

    async fn set_mac(&self, name: &str, mac: [u8; 6]) -> Result<()> {
        let index = self.index(name).await?;
        let message = LinkUnspec::new_with_index(index).address(mac.to_vec()).build();
        self.change_link(format!("set the address of {name}"), message).await
    }

    async fn set_alias(&self, name: &str, alias: &str) -> Result<()> {
        let index = self.index(name).await?;
        let message = LinkUnspec::new_with_index(index).alias(alias).build();
        self.change_link(format!("set the alias of {name}"), message)
            .await
    }

    async fn hairpin(&self, name: &str) -> Result<bool> {
        let message = self.link_message(name).await?.ok_or_else(|| NetError::LinkNotFound {
            name: name.to_string(),
            netns: self.netns_name.clone(),
        })?;
        // The kernel reports a bridge port's settings as port data in
        // IFLA_LINKINFO.
        Ok(message.attributes.iter().any(|attribute| match attribute {
            LinkAttribute::LinkInfo(infos) => infos.iter().any(|info| {
                matches!(info, LinkInfo::PortData(InfoPortData::BridgePort(port))
                    if port.contains(&InfoBridgePort::HairpinMode(true)))
            }),
            _ => false,
        }))
    }

    async fn set_hairpin(&self, name: &str, on: bool) -> Result<()> {
        let index = self.index(name).await?;
        // Port settings need RTM_NEWLINK; RTM_SETLINK ignores them.
        self.handle
            .link()
            .set_port(LinkBridgePort::new(index).hairpin(on).build())
            .execute()
            .await
            .map_err(|e| self.failed(format!("set hairpin mode of bridge port {name}"), e))
    }

    async fn rename(&self, name: &str, new_name: &str) -> Result<()> {
        validate_ifname(new_name)?;
        let index = self.index(name).await?;
        let message = LinkUnspec::new_with_index(index).name(new_name).build();
        self.change_link(format!("rename {name} to {new_name}"), message)
            .await
    }

    async fn move_to_netns(&self, name: &str, netns: &Path) -> Result<()> {
        let index = self.index(name).await?;
        let ns = netns::open_path(netns)?;
        let message = LinkUnspec::new_with_index(index)
            .setns_by_fd(ns.as_raw_fd())
            .build();
        let result = self
            .change_link(format!("move {name} to {}", netns.display()), message)
            .await;
        drop(ns);
        result
    }

    async fn delete_link(&self, name: &str) -> Result<()> {
        let Some(link) = self.link(name).await? else {
            return Ok(());
        };
        match self.handle.link().del(link.index).execute().await {
            Ok(()) => Ok(()),
            // Deleting one end of a veth removes the other; a racing delete is fine.
            Err(e) if errno_of(&e) == Some(libc::ENODEV) => Ok(()),
            Err(e) => Err(self.failed(format!("delete link {name}"), e)),
        }
    }

    async fn addresses(&self, device: &str) -> Result<Vec<Ipv4Net>> {
        let index = self.index(device).await?;
        let messages: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(|e| self.failed(format!("list the addresses of {device}"), e))?;
        Ok(messages
            .iter()
            .filter(|m| m.header.family == AddressFamily::Inet)
            .filter_map(|m| {
                let local = m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
                    _ => None,
                });
                let address = m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
                    _ => None,
                });
                Ipv4Net::new(local.or(address)?, m.header.prefix_len).ok()
            })
            .collect())
    }

    async fn add_address(&self, device: &str, address: Ipv4Net) -> Result<()> {
        let index = self.index(device).await?;
        self.handle
            .address()
            .add(index, IpAddr::V4(address.addr()), address.prefix_len())
            .execute()
            .await
            .map_err(|e| self.failed(format!("add address {address} to {device}"), e))
    }

    async fn delete_address(&self, device: &str, address: Ipv4Net) -> Result<()> {
        let index = self.index(device).await?;
        let message = AddressMessageBuilder::<Ipv4Addr>::new()
            .index(index)
            .address(address.addr(), address.prefix_len())
            .build();
        match self.handle.address().del(message).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno_of(&e) == Some(libc::EADDRNOTAVAIL) => Ok(()),
            Err(e) => Err(self.failed(format!("delete address {address} from {device}"), e)),
        }
    }

    async fn routes(&self) -> Result<Vec<Ipv4Route>> {
        let names: HashMap<u32, String> = self
            .links()
            .await?
            .into_iter()
            .map(|link| (link.index, link.name))
            .collect();
        let query = RouteMessageBuilder::<Ipv4Addr>::new().build();
        let messages: Vec<RouteMessage> = self
            .handle
            .route()
            .get(query)
            .execute()
            .try_collect()
            .await
            .map_err(|e| self.failed("list routes", e))?;
        Ok(messages
            .iter()
            .filter_map(|m| parse_route(m, &names))
            .collect())
    }

    async fn add_route(&self, route: &Ipv4Route) -> Result<()> {
        self.write_route(route, false).await
    }

    async fn replace_route(&self, route: &Ipv4Route) -> Result<()> {
        self.write_route(route, true).await
    }

    async fn delete_route(&self, route: &Ipv4Route) -> Result<()> {
        let Some(link) = self.link(&route.device).await? else {
            // Routes die with their device.
            return Ok(());
        };
        let mut message = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(route.destination.network(), route.destination.prefix_len())
            .output_interface(link.index)
            .build();
        // As `ip route del`: match any scope and protocol, only destination
        // and device must agree.
        message.header.scope = KernelScope::NoWhere;
        message.header.protocol = RouteProtocol::Unspec;
        message.header.kind = RouteType::Unspec;
        match self.handle.route().del(message).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno_of(&e) == Some(libc::ESRCH) => Ok(()),
            Err(e) => Err(self.failed(format!("delete route {route}"), e)),
        }
    }

    async fn read_sysctl(&self, key: &Sysctl) -> Result<String> {
        let path = key.proc_path();
        let read = self.in_own_netns(move || fs::read_to_string(path)).await?;
        read.map(|value| value.trim_end().to_string())
            .map_err(|source| NetError::Sysctl {
                action: "read",
                key: key.to_string(),
                netns: self.netns_name.clone(),
                source,
            })
    }

    async fn write_sysctl(&self, key: &Sysctl, value: &str) -> Result<()> {
        let path = key.proc_path();
        let value = value.to_string();
        // /proc/sys/net resolves against the network namespace of the thread
        // that opens the file, hence the thread inside the namespace.
        let written = self.in_own_netns(move || fs::write(path, value)).await?;
        written.map_err(|source| NetError::Sysctl {
            action: "write",
            key: key.to_string(),
            netns: self.netns_name.clone(),
            source,
        })
    }
}

/// Namespace files are created and removed with blocking mount calls.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|_| {
        Err(NetError::ThreadPanicked {
            path: PathBuf::from("(namespace directory)"),
        })
    })
}

fn parse_link(message: &LinkMessage) -> Option<Link> {
    let mut link = Link {
        index: message.header.index,
        name: String::new(),
        kind: None,
        mtu: 0,
        up: message.header.flags.contains(LinkFlags::Up),
        master: None,
        peer_index: None,
        alias: None,
        mac: None,
    };
    for attribute in &message.attributes {
        match attribute {
            LinkAttribute::IfName(name) => link.name = name.clone(),
            LinkAttribute::Mtu(mtu) => link.mtu = *mtu,
            LinkAttribute::Controller(index) if *index != 0 => link.master = Some(*index),
            LinkAttribute::Link(index) if *index != 0 => link.peer_index = Some(*index),
            LinkAttribute::IfAlias(alias) if !alias.is_empty() => link.alias = Some(alias.clone()),
            LinkAttribute::Address(bytes) => link.mac = <[u8; 6]>::try_from(bytes.as_slice()).ok(),
            LinkAttribute::LinkInfo(infos) => {
                link.kind = infos.iter().find_map(|info| match info {
                    LinkInfo::Kind(InfoKind::Bridge) => Some(LinkKind::Bridge),
                    LinkInfo::Kind(InfoKind::Veth) => Some(LinkKind::Veth),
                    LinkInfo::Kind(other) => Some(LinkKind::Other(other.to_string())),
                    _ => None,
                })
            }
            _ => {}
        }
    }
    if link.kind != Some(LinkKind::Veth) {
        // IFLA_LINK means "lower device" for other kinds, not a peer.
        link.peer_index = None;
    }
    (!link.name.is_empty()).then_some(link)
}

fn parse_route(message: &RouteMessage, names: &HashMap<u32, String>) -> Option<Ipv4Route> {
    let header = &message.header;
    if header.address_family != AddressFamily::Inet || header.kind != RouteType::Unicast {
        return None;
    }
    let mut table = u32::from(header.table);
    let (mut destination, mut gateway, mut source, mut device) =
        (Ipv4Addr::UNSPECIFIED, None, None, None);
    for attribute in &message.attributes {
        match attribute {
            RouteAttribute::Table(id) => table = *id,
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => destination = *ip,
            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => gateway = Some(*ip),
            RouteAttribute::PrefSource(RouteAddress::Inet(ip)) => source = Some(*ip),
            RouteAttribute::Oif(index) => device = names.get(index).cloned(),
            _ => {}
        }
    }
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
        return None;
    }
    Some(Ipv4Route {
        destination: Ipv4Net::new(destination, header.destination_prefix_length)
            .ok()?
            .trunc(),
        gateway,
        device: device?,
        source,
        scope: match header.scope {
            KernelScope::Link => RouteScope::Link,
            KernelScope::Host => RouteScope::Host,
            _ => RouteScope::Universe,
        },
        kernel: header.protocol == RouteProtocol::Kernel,
    })
}

fn errno_of(error: &rtnetlink::Error) -> Option<i32> {
    match error {
        rtnetlink::Error::NetlinkError(message) => message.code.map(|code| -code.get()),
        _ => None,
    }
}

/// The kernel's answer as an OS error ("File exists (os error 17)"), which
/// reads better than the netlink message dump and keeps the errno.
fn os_error(error: rtnetlink::Error) -> io::Error {
    match errno_of(&error) {
        Some(errno) => io::Error::from_raw_os_error(errno),
        None => io::Error::other(error.to_string()),
    }
}
