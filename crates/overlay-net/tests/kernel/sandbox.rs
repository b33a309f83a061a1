//! A node namespace with a network bridge and two sandboxes on it, for real:
//! the sandboxes reach each other and the gateway, attaching again (also
//! from a "restarted daemon") duplicates nothing, and detach and destroy
//! leave no veth behind.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use shoal_overlay_net::bridge::{ensure_bridge, remove_bridge, BridgeConfig};
use shoal_overlay_net::netlink::{Netlink, Rtnl};
use shoal_overlay_net::routes::{host_routes_on, sync_host_routes, HostRoute};
use shoal_overlay_net::sandbox::{EndpointConfig, Sandboxes};

use crate::support::{in_netns, ping, Scratch};

const NETWORK: &str = "kernelnet0123456789";
const GATEWAY: Ipv4Addr = Ipv4Addr::new(100, 64, 90, 1);

fn net(s: &str) -> Ipv4Net {
    s.parse().expect("test network")
}

fn bridge() -> BridgeConfig {
    BridgeConfig {
        name: "shl-kernelnet01".to_string(),
        mtu: 1420,
        gateway: net("100.64.90.1/24"),
        node_address: Some(Ipv4Addr::new(100, 64, 90, 2)),
    }
}

fn endpoint(address: &str) -> EndpointConfig {
    EndpointConfig {
        network_id: NETWORK.to_string(),
        bridge: bridge().name,
        address: net(address),
        mtu: 1420,
        default_gateway: Some(GATEWAY),
    }
}

/// Host ends of endpoints in the node namespace (`vs` + 13 hex).
fn host_veths(scratch: &Scratch) -> Vec<String> {
    scratch
        .ip_node(&["-o", "link", "show", "type", "veth"])
        .lines()
        .filter_map(|line| line.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name).to_string())
        .filter(|name| name.starts_with("vs"))
        .collect()
}

#[tokio::test]
async fn two_sandboxes_on_a_bridge_reach_each_other_and_leave_nothing() {
    let scratch = Scratch::new("sandbox");
    let node = Rtnl::in_netns(&scratch.node_path).expect("connect");
    assert!(ensure_bridge(&node, &bridge()).await.expect("bridge"));
    assert!(
        !ensure_bridge(&node, &bridge()).await.expect("bridge again"),
        "an unchanged bridge was changed"
    );
    let sandboxes = Sandboxes::new(node.clone(), scratch.dir.clone());

    let one = sandboxes.create("task-one").await.expect("create one");
    let two = sandboxes.create("task-two").await.expect("create two");
    let first = sandboxes
        .attach("task-one", &endpoint("100.64.90.11/24"))
        .await
        .expect("attach one");
    sandboxes
        .attach("task-two", &endpoint("100.64.90.12/24"))
        .await
        .expect("attach two");
    assert_eq!(first.interface, "eth0");

    ping(&one, "100.64.90.12").expect("sandbox one reaches sandbox two");
    ping(&two, "100.64.90.11").expect("sandbox two reaches sandbox one");
    ping(&one, "100.64.90.1").expect("sandbox one reaches the gateway");
    ping(&two, "100.64.90.2").expect("sandbox two reaches the node's own address");
    let inside = in_netns(&one, "ip", &["-o", "addr", "show", "dev", "eth0"]).expect("ip addr");
    assert!(inside.contains("100.64.90.11/24"), "{inside}");
    assert!(
        inside.contains("mtu 1420")
            || in_netns(&one, "ip", &["link", "show", "eth0"])
                .expect("ip link")
                .contains("mtu 1420")
    );

    // A restarted daemon: new connection, same kernel state. It finds both
    // sandboxes and attaching again makes no second veth or route.
    let restarted = Sandboxes::new(
        Rtnl::in_netns(&scratch.node_path).expect("reconnect"),
        scratch.dir.clone(),
    );
    let listed = restarted.list().await.expect("list");
    assert_eq!(
        listed
            .iter()
            .map(|s| (s.id.as_str(), s.endpoints.len()))
            .collect::<Vec<_>>(),
        vec![("task-one", 1), ("task-two", 1)]
    );
    assert_eq!(listed[0].endpoints[0], first);
    restarted.create("task-one").await.expect("create again");
    let again = restarted
        .attach("task-one", &endpoint("100.64.90.11/24"))
        .await
        .expect("attach again");
    assert_eq!(again, first);
    assert_eq!(host_veths(&scratch).len(), 2, "{:?}", host_veths(&scratch));
    let defaults = in_netns(&one, "ip", &["route", "show", "default"]).expect("ip route");
    assert_eq!(defaults.lines().count(), 1, "{defaults}");
    ping(&one, "100.64.90.12").expect("still reachable after re-attaching");

    restarted.detach("task-two", NETWORK).await.expect("detach");
    assert!(
        ping(&one, "100.64.90.12").is_err(),
        "a detached sandbox still answers"
    );
    assert_eq!(host_veths(&scratch), vec![first.host_veth.clone()]);

    restarted.destroy("task-one").await.expect("destroy one");
    restarted.destroy("task-two").await.expect("destroy two");
    restarted.destroy("task-two").await.expect("destroy again");
    assert!(
        host_veths(&scratch).is_empty(),
        "veths left: {:?}",
        host_veths(&scratch)
    );
    let all = scratch.ip_node(&["-o", "link", "show", "type", "veth"]);
    assert!(all.trim().is_empty(), "veths left in the node: {all}");
    assert!(
        scratch.dir.list().expect("list").is_empty(),
        "sandbox namespaces left"
    );
    remove_bridge(&node, &bridge().name)
        .await
        .expect("remove bridge");
    assert!(node.link(&bridge().name).await.expect("lookup").is_none());
}

#[tokio::test]
async fn host_routes_follow_the_desired_set_on_the_kernel() {
    let scratch = Scratch::new("hostroutes");
    let node = Rtnl::in_netns(&scratch.node_path).expect("connect");
    ensure_bridge(&node, &bridge()).await.expect("bridge");
    // Stands in for the WireGuard device: any up device takes the routes.
    node.create_bridge("wgstub", None).await.expect("device");
    let source = Some(Ipv4Addr::new(100, 64, 90, 2));
    let remote = |last| HostRoute {
        address: Ipv4Addr::new(100, 64, 90, last),
        source,
    };

    sync_host_routes(&node, "wgstub", &[remote(30), remote(31)])
        .await
        .expect("sync");
    let shown = scratch.ip_node(&["route", "show", "dev", "wgstub"]);
    assert!(
        shown.contains("100.64.90.30 proto static scope link src 100.64.90.2"),
        "{shown}"
    );
    assert!(sync_host_routes(&node, "wgstub", &[remote(30), remote(31)])
        .await
        .expect("sync")
        .is_empty());

    sync_host_routes(&node, "wgstub", &[remote(31), remote(32)])
        .await
        .expect("sync");
    let mut now: Vec<Ipv4Addr> = host_routes_on(&node, "wgstub")
        .await
        .expect("routes")
        .iter()
        .map(|r| r.destination.addr())
        .collect();
    now.sort();
    assert_eq!(
        now,
        vec![
            Ipv4Addr::new(100, 64, 90, 31),
            Ipv4Addr::new(100, 64, 90, 32)
        ]
    );

    // A remote address inside the bridge's subnet wins over the connected
    // /24: the /32 is more specific, which is what sends it to WireGuard.
    let via = scratch.ip_node(&["route", "get", "100.64.90.32"]);
    assert!(via.contains("dev wgstub"), "{via}");
    sync_host_routes(&node, "wgstub", &[])
        .await
        .expect("sync to none");
    assert!(scratch
        .ip_node(&["route", "show", "dev", "wgstub"])
        .trim()
        .is_empty());
}
