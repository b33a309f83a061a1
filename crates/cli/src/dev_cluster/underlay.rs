//! The dev cluster's underlay, built with shoal-overlay-net's netlink layer:
//!
//! ```text
//!   namespace `up` runs in        switch namespace               host namespaces
//!   sh<i>up 198.18.<i>.254/24 ── uplink ┐
//!                                       ├ bridge sh<i>br
//!                      eth0 198.18.<i>.N ── sh<i>h<N> ┘   (one per host)
//! ```
//!
//! The bridge lives in a namespace of its own (see
//! [`plan::switch_netns_name`] for why); deleting that namespace deletes the
//! bridge and every veth, and with them the hosts' eth0 and the uplink.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use anyhow::Context;
use ipnet::Ipv4Net;
use nix::libc;
use shoal_overlay_net::netlink::{Netlink, Rtnl, Sysctl, VethPair};
use shoal_overlay_net::netns::NetnsDir;

use super::plan::{self, HOST_IFACE, PREFIX_LEN, SWITCH_UPLINK};
use super::state::{ClusterState, HostState};

/// Where host and switch namespaces live: iproute2's directory, so
/// `ip netns exec` and `ip -n` work on them.
pub fn netns_dir() -> NetnsDir {
    NetnsDir::iproute2()
}

pub fn netns_path(name: &str) -> PathBuf {
    netns_dir().path(name)
}

fn with_prefix(address: Ipv4Addr) -> anyhow::Result<Ipv4Net> {
    Ipv4Net::new(address, PREFIX_LEN).context("the dev-cluster prefix length is invalid")
}

/// The switch namespace, its bridge, and the uplink from here to it.
pub async fn create_switch(state: &ClusterState) -> anyhow::Result<()> {
    let here = Rtnl::current()?;
    let switch_ns = plan::switch_netns_name(&state.name);
    let switch_path = here.create_netns(&netns_dir(), &switch_ns).await?;
    let switch = here.connect(&switch_path).await?;
    switch.set_up("lo", true).await?;
    // Bridged traffic then skips netfilter in the switch altogether; where
    // br_netfilter is not loaded the setting does not exist, and there is
    // nothing to skip.
    match switch
        .write_sysctl(&Sysctl::bridge_nf_call_iptables(), "0")
        .await
    {
        Err(e) if e.errno() != Some(libc::ENOENT) => return Err(e.into()),
        _ => {}
    }
    switch.create_bridge(&state.bridge, None).await?;

    let uplink = plan::uplink_name(state.index);
    here.create_veth(&VethPair {
        name: &uplink,
        peer_name: SWITCH_UPLINK,
        peer_netns: Some(&switch_path),
        master: None,
        mtu: None,
    })
    .await?;
    switch
        .set_master(SWITCH_UPLINK, Some(&state.bridge))
        .await?;
    switch.set_up(SWITCH_UPLINK, true).await?;
    here.add_address(&uplink, with_prefix(state.bridge_address)?)
        .await?;
    Ok(())
}

/// The namespace of `host`, its veth to the switch, and its address.
pub async fn create_host(state: &ClusterState, host: &HostState) -> anyhow::Result<()> {
    let here = Rtnl::current()?;
    let host_path = here.create_netns(&netns_dir(), &host.netns).await?;
    let switch = here
        .connect(&netns_path(&plan::switch_netns_name(&state.name)))
        .await?;
    // The peer appears as eth0 directly inside the host: no temporary name
    // anywhere to collide on.
    switch
        .create_veth(&VethPair {
            name: &host.veth,
            peer_name: HOST_IFACE,
            peer_netns: Some(&host_path),
            master: Some(&state.bridge),
            mtu: None,
        })
        .await?;
    let inside = here.connect(&host_path).await?;
    inside.set_up("lo", true).await?;
    inside
        .add_address(HOST_IFACE, with_prefix(host.address)?)
        .await?;
    inside.set_up(HOST_IFACE, true).await?;
    Ok(())
}

/// Partition (`false`) or heal (`true`) a host: its switch port leaves or
/// rejoins the switch's bridge, so it loses or regains every peer at once
/// while its processes run on. The link itself stays up, as when a switch
/// or router between the host and its peers fails: the host sees no carrier
/// loss (which would flush its ARP cache and make it resolve its peers
/// afresh after healing), only silence.
pub async fn set_connected(
    state: &ClusterState,
    host: &HostState,
    connected: bool,
) -> anyhow::Result<()> {
    let switch = Rtnl::in_netns(&netns_path(&plan::switch_netns_name(&state.name)))?;
    let master = connected.then_some(state.bridge.as_str());
    switch.set_master(&host.veth, master).await?;
    switch.set_up(&host.veth, true).await?;
    Ok(())
}

/// Deletes, in the namespace `up` ran in, the uplinks of subnets `indices`
/// (and bridges and veths of clusters made before the switch namespace).
/// The uplink would die with the switch namespace anyway, but only once the
/// kernel gets round to freeing it; deleting it now frees its name for the
/// next cluster on the subnet.
pub async fn delete_links(indices: &[u8]) -> anyhow::Result<()> {
    if indices.is_empty() {
        return Ok(());
    }
    let here = Rtnl::current()?;
    for link in here.links().await? {
        if indices
            .iter()
            .any(|&index| plan::is_cluster_link(index, &link.name))
        {
            here.delete_link(&link.name).await?;
        }
    }
    Ok(())
}
