//! Links and addresses of the dev-cluster underlay, through rtnetlink:
//! a bridge in the root namespace and one veth pair per host.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};

use anyhow::{anyhow, Context};
use futures::TryStreamExt;
use rtnetlink::packet_route::link::{InfoData, InfoVeth, LinkAttribute, LinkMessage};
use rtnetlink::sys::{protocols::NETLINK_ROUTE, Socket, TokioSocket};
use rtnetlink::{Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth};

use super::netns;
use super::plan::PREFIX_LEN;

/// Name of the host end of every veth, inside the host's namespace.
pub const HOST_IFACE: &str = "eth0";

/// An rtnetlink connection bound to one network namespace.
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// Connection to the namespace this process runs in (the root one).
    pub fn here() -> anyhow::Result<Self> {
        let (connection, handle, _) =
            rtnetlink::new_connection().context("could not open a netlink socket")?;
        tokio::spawn(connection);
        Ok(Netlink { handle })
    }

    /// Connection to namespace `name`. A netlink socket belongs to the
    /// namespace it was created in, so it is created on a thread inside it
    /// and then driven from here.
    pub fn in_netns(name: &str) -> anyhow::Result<Self> {
        let socket = netns::run_in(name, || {
            Socket::new(NETLINK_ROUTE).context("could not open a netlink socket")
        })?;
        socket
            .set_non_blocking(true)
            .context("could not make the netlink socket non-blocking")?;
        // SAFETY: the fd comes straight from into_raw_fd, so it is owned once.
        let socket = unsafe { TokioSocket::from_raw_fd(socket.into_raw_fd()) };
        let (connection, handle, _) = rtnetlink::from_socket(socket);
        tokio::spawn(connection);
        Ok(Netlink { handle })
    }

    /// Index of link `name`, `None` when there is no such link.
    pub async fn index_of(&self, name: &str) -> anyhow::Result<Option<u32>> {
        let found = self
            .handle
            .link()
            .get()
            .match_name(name)
            .execute()
            .try_next()
            .await;
        match found {
            Ok(Some(link)) => Ok(Some(link.header.index)),
            Ok(None) => Ok(None),
            Err(e) if is_no_such_device(&e) => Ok(None),
            Err(e) => Err(anyhow!("could not look up link {name}: {e}")),
        }
    }

    async fn require_index(&self, name: &str) -> anyhow::Result<u32> {
        self.index_of(name)
            .await?
            .ok_or_else(|| anyhow!("link {name} does not exist"))
    }

    /// Names of every link in this namespace.
    pub async fn link_names(&self) -> anyhow::Result<Vec<String>> {
        let links: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| anyhow!("could not list links: {e}"))?;
        Ok(links
            .iter()
            .filter_map(|link| {
                link.attributes.iter().find_map(|attr| match attr {
                    LinkAttribute::IfName(name) => Some(name.clone()),
                    _ => None,
                })
            })
            .collect())
    }

    /// Creates bridge `name` (up) carrying `address`/24.
    pub async fn create_bridge(&self, name: &str, address: Ipv4Addr) -> anyhow::Result<()> {
        // Where br_netfilter is loaded (Docker loads it), bridged frames would
        // traverse iptables and Docker's FORWARD DROP policy; host-to-host
        // traffic must not depend on the machine's firewall.
        let bridge = LinkBridge::new(name)
            .nf_call_iptables(false)
            .nf_call_ip6tables(false)
            .nf_call_arptables(false)
            .build();
        self.handle
            .link()
            .add(bridge)
            .execute()
            .await
            .map_err(|e| anyhow!("could not create bridge {name}: {e}"))?;
        let index = self.require_index(name).await?;
        self.add_address(index, name, address).await
    }

    /// Creates veth `veth` on `bridge` whose peer appears as `eth0` directly
    /// inside `ns` (no temporary name in the root namespace to collide on).
    pub async fn create_host_veth(
        &self,
        veth: &str,
        bridge: &str,
        ns: &File,
    ) -> anyhow::Result<()> {
        let bridge_index = self.require_index(bridge).await?;
        let peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name(HOST_IFACE)
            .setns_by_fd(ns.as_raw_fd())
            .build();
        let pair = LinkVeth::new(veth, HOST_IFACE)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .controller(bridge_index)
            .up()
            .build();
        self.handle
            .link()
            .add(pair)
            .execute()
            .await
            .map_err(|e| anyhow!("could not create veth {veth} on bridge {bridge}: {e}"))
    }

    /// Inside a host namespace: loopback up, `eth0` up with `address`/24.
    pub async fn configure_host(&self, address: Ipv4Addr) -> anyhow::Result<()> {
        self.set_up("lo", true).await?;
        let index = self.require_index(HOST_IFACE).await?;
        self.add_address(index, HOST_IFACE, address).await?;
        self.set_up(HOST_IFACE, true).await
    }

    pub async fn set_up(&self, name: &str, up: bool) -> anyhow::Result<()> {
        let index = self.require_index(name).await?;
        let link = LinkUnspec::new_with_index(index);
        let link = if up { link.up() } else { link.down() };
        self.handle
            .link()
            .set(link.build())
            .execute()
            .await
            .map_err(|e| {
                anyhow!(
                    "could not set link {name} {}: {e}",
                    if up { "up" } else { "down" }
                )
            })
    }

    /// Deletes link `name`; a missing link is fine.
    pub async fn delete(&self, name: &str) -> anyhow::Result<()> {
        let Some(index) = self.index_of(name).await? else {
            return Ok(());
        };
        match self.handle.link().del(index).execute().await {
            Ok(()) => Ok(()),
            // Deleting one end of a veth removes the other; a racing delete is fine.
            Err(e) if is_no_such_device(&e) => Ok(()),
            Err(e) => Err(anyhow!("could not delete link {name}: {e}")),
        }
    }

    async fn add_address(&self, index: u32, name: &str, address: Ipv4Addr) -> anyhow::Result<()> {
        self.handle
            .address()
            .add(index, IpAddr::V4(address), PREFIX_LEN)
            .execute()
            .await
            .map_err(|e| anyhow!("could not add address {address}/{PREFIX_LEN} to {name}: {e}"))
    }
}

fn is_no_such_device(error: &rtnetlink::Error) -> bool {
    match error {
        rtnetlink::Error::NetlinkError(message) => {
            message.code.map(|code| code.get()) == Some(-(nix::libc::ENODEV))
        }
        _ => false,
    }
}
