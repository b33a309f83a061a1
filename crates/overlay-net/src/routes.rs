//! /32 routes to remote tasks, `dev <device>` (the WireGuard device) on the
//! node: the kernel is made to match the desired set, touching only /32
//! routes of that device, so a restarted daemon converges without leaving
//! a stale route or adding a duplicate.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::error::Result;
use crate::netlink::{validate_ifname, Ipv4Route, Netlink, RouteScope};

/// A route to one remote address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostRoute {
    pub address: Ipv4Addr,
    /// Source the node uses towards it (its own address on that network).
    pub source: Option<Ipv4Addr>,
}

impl HostRoute {
    fn to_route(self, device: &str) -> Ipv4Route {
        let route = Ipv4Route::on_link(host_net(self.address), device);
        match self.source {
            Some(source) => route.with_source(source),
            None => route,
        }
    }
}

/// What [`sync_host_routes`] changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouteChanges {
    pub added: usize,
    /// Present but with another source, or not on-link: rewritten.
    pub replaced: usize,
    pub removed: usize,
}

impl RouteChanges {
    pub fn is_empty(&self) -> bool {
        *self == RouteChanges::default()
    }
}

/// Makes the /32 routes on `device` exactly `desired`. Routes of other
/// devices and routes that are not /32 are left alone; a /32 to the same
/// address on another device makes the add fail rather than be taken over.
pub async fn sync_host_routes<N: Netlink>(
    netlink: &N,
    device: &str,
    desired: &[HostRoute],
) -> Result<RouteChanges> {
    validate_ifname(device)?;
    let wanted: BTreeMap<Ipv4Addr, HostRoute> = desired.iter().map(|r| (r.address, *r)).collect();
    let present = host_routes_on(netlink, device).await?;
    let mut changes = RouteChanges::default();

    for route in &present {
        if !wanted.contains_key(&route.destination.addr()) {
            netlink.delete_route(route).await?;
            changes.removed += 1;
        }
    }
    for (address, host_route) in &wanted {
        let route = host_route.to_route(device);
        match present.iter().find(|r| r.destination.addr() == *address) {
            Some(current)
                if current.source == route.source && current.scope == RouteScope::Link => {}
            Some(_) => {
                netlink.replace_route(&route).await?;
                changes.replaced += 1;
            }
            None => {
                netlink.add_route(&route).await?;
                changes.added += 1;
            }
        }
    }
    if !changes.is_empty() {
        tracing::debug!(device, ?changes, "host routes synced");
    }
    Ok(changes)
}

/// Adds (or rewrites) the route to one remote address.
pub async fn add_host_route<N: Netlink>(netlink: &N, device: &str, route: HostRoute) -> Result<()> {
    validate_ifname(device)?;
    let wanted = route.to_route(device);
    let present = host_routes_on(netlink, device).await?;
    match present.iter().find(|r| r.destination == wanted.destination) {
        Some(current) if current.source == wanted.source && current.scope == RouteScope::Link => {
            Ok(())
        }
        Some(_) => netlink.replace_route(&wanted).await,
        None => netlink.add_route(&wanted).await,
    }
}

/// Removes the route to `address` on `device`; missing is fine.
pub async fn remove_host_route<N: Netlink>(
    netlink: &N,
    device: &str,
    address: Ipv4Addr,
) -> Result<()> {
    validate_ifname(device)?;
    netlink
        .delete_route(&Ipv4Route::on_link(host_net(address), device))
        .await
}

/// The /32 routes we manage on `device` (not the kernel's own).
pub async fn host_routes_on<N: Netlink>(netlink: &N, device: &str) -> Result<Vec<Ipv4Route>> {
    Ok(netlink
        .routes()
        .await?
        .into_iter()
        .filter(|r| {
            r.device == device
                && r.destination.prefix_len() == 32
                && !r.kernel
                && r.gateway.is_none()
        })
        .collect())
}

fn host_net(address: Ipv4Addr) -> Ipv4Net {
    Ipv4Net::from(address)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::FakeNetlink;

    fn remote(last: u8) -> HostRoute {
        HostRoute {
            address: Ipv4Addr::new(100, 64, 3, last),
            source: Some(Ipv4Addr::new(100, 64, 3, 2)),
        }
    }

    async fn node() -> FakeNetlink {
        let node = FakeNetlink::new();
        // A stand-in for the WireGuard device and a bridge with the node's
        // own address (the routes' source).
        node.create_bridge("wg0", None).await.expect("wg0");
        node.create_bridge("br0", None).await.expect("br0");
        node.add_address("br0", "100.64.3.1/24".parse().expect("net"))
            .await
            .expect("gateway");
        node.add_address("br0", "100.64.3.2/32".parse().expect("net"))
            .await
            .expect("node address");
        node
    }

    #[tokio::test]
    async fn sync_converges_and_then_changes_nothing() {
        let node = node().await;
        let desired = [remote(10), remote(11), remote(12)];
        let changes = sync_host_routes(&node, "wg0", &desired)
            .await
            .expect("sync");
        assert_eq!(changes.added, 3);
        let before = node.mutations();
        assert!(sync_host_routes(&node, "wg0", &desired)
            .await
            .expect("sync")
            .is_empty());
        assert_eq!(node.mutations(), before);

        // 10 goes away, 13 arrives, 11 changes its source.
        let desired = [
            HostRoute {
                source: None,
                ..remote(11)
            },
            remote(12),
            remote(13),
        ];
        let changes = sync_host_routes(&node, "wg0", &desired)
            .await
            .expect("sync");
        assert_eq!(
            changes,
            RouteChanges {
                added: 1,
                replaced: 1,
                removed: 1
            }
        );
        let mut routes: Vec<(Ipv4Addr, Option<Ipv4Addr>)> = host_routes_on(&node, "wg0")
            .await
            .expect("routes")
            .iter()
            .map(|r| (r.destination.addr(), r.source))
            .collect();
        routes.sort();
        assert_eq!(
            routes,
            vec![
                (Ipv4Addr::new(100, 64, 3, 11), None),
                (Ipv4Addr::new(100, 64, 3, 12), remote(12).source),
                (Ipv4Addr::new(100, 64, 3, 13), remote(13).source),
            ]
        );
    }

    #[tokio::test]
    async fn other_devices_and_prefixes_are_left_alone() {
        let node = node().await;
        let elsewhere = Ipv4Route::on_link("100.64.9.9/32".parse().expect("net"), "br0");
        node.add_route(&elsewhere).await.expect("route on br0");
        let wider = Ipv4Route::on_link("100.64.8.0/24".parse().expect("net"), "wg0");
        node.add_route(&wider).await.expect("/24 on wg0");

        sync_host_routes(&node, "wg0", &[remote(10)])
            .await
            .expect("sync");
        sync_host_routes(&node, "wg0", &[])
            .await
            .expect("sync to empty");
        let routes = node.routes().await.expect("routes");
        assert!(
            routes.contains(&elsewhere) && routes.contains(&wider),
            "{routes:?}"
        );
        assert!(host_routes_on(&node, "wg0")
            .await
            .expect("routes")
            .is_empty());
    }

    #[tokio::test]
    async fn single_routes_are_idempotent() {
        let node = node().await;
        add_host_route(&node, "wg0", remote(20)).await.expect("add");
        let before = node.mutations();
        add_host_route(&node, "wg0", remote(20))
            .await
            .expect("add again");
        assert_eq!(node.mutations(), before);
        remove_host_route(&node, "wg0", remote(20).address)
            .await
            .expect("remove");
        remove_host_route(&node, "wg0", remote(20).address)
            .await
            .expect("remove again");
        assert!(host_routes_on(&node, "wg0")
            .await
            .expect("routes")
            .is_empty());
    }
}
