use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use nix::libc;

use super::FakeNetlink;
use crate::netlink::{Ipv4Route, Netlink, Sysctl, VethPair};
use crate::netns::NetnsDir;

fn net(s: &str) -> Ipv4Net {
    s.parse().expect("test network")
}

#[tokio::test]
async fn veth_ends_live_and_die_together_across_namespaces() {
    let node = FakeNetlink::new();
    let dir = NetnsDir::new("/fake/sandboxes");
    let sandbox_path = node.create_netns(&dir, "sb1").await.expect("create netns");
    node.create_bridge("br0", Some(1400)).await.expect("bridge");
    node.create_veth(&VethPair {
        name: "vs1",
        peer_name: "eth0",
        peer_netns: Some(&sandbox_path),
        master: Some("br0"),
        mtu: Some(1400),
    })
    .await
    .expect("veth");

    let sandbox = node.connect(&sandbox_path).await.expect("connect");
    let host_end = node.require_link("vs1").await.expect("host end");
    let inner = sandbox.require_link("eth0").await.expect("peer");
    assert_eq!(host_end.peer_index, Some(inner.index));
    assert_eq!(inner.peer_index, Some(host_end.index));
    assert!(host_end.up && !inner.up);
    assert_eq!(
        host_end.master,
        Some(node.require_link("br0").await.expect("br0").index)
    );
    assert!(
        node.link("eth0").await.expect("lookup").is_none(),
        "the peer must not be in the node namespace"
    );

    node.delete_netns(&dir, "sb1").await.expect("delete netns");
    assert!(
        node.link("vs1").await.expect("lookup").is_none(),
        "the host end outlived its peer's namespace"
    );
}

#[tokio::test]
async fn routes_need_an_up_device_and_a_reachable_gateway() {
    let node = FakeNetlink::new();
    node.create_bridge("br0", None).await.expect("bridge");
    let default = Ipv4Route::default_via(Ipv4Addr::new(10, 0, 0, 1), "br0");
    let err = node
        .add_route(&default)
        .await
        .expect_err("unreachable gateway");
    assert_eq!(err.errno(), Some(libc::ENETUNREACH));

    node.add_address("br0", net("10.0.0.2/24"))
        .await
        .expect("address");
    node.add_route(&default).await.expect("route");
    let again = node.add_route(&default).await.expect_err("duplicate");
    assert_eq!(again.errno(), Some(libc::EEXIST));
    node.replace_route(&default)
        .await
        .expect("replace is idempotent");

    let routes = node.routes().await.expect("routes");
    assert!(routes
        .iter()
        .any(|r| r.kernel && r.destination == net("10.0.0.0/24")));
    assert_eq!(routes.iter().filter(|r| r.is_default()).count(), 1);

    node.set_up("br0", false).await.expect("down");
    assert!(
        node.routes().await.expect("routes").is_empty(),
        "a down device keeps no routes"
    );
}

#[tokio::test]
async fn interface_sysctls_belong_to_existing_links() {
    let node = FakeNetlink::new();
    let proxy = Sysctl::ipv4_conf("br0", "proxy_arp").expect("key");
    assert!(node.write_sysctl(&proxy, "1").await.is_err());
    node.create_bridge("br0", None).await.expect("bridge");
    assert_eq!(node.read_sysctl(&proxy).await.expect("read"), "0");
    node.write_sysctl(&proxy, "1").await.expect("write");
    assert_eq!(node.read_sysctl(&proxy).await.expect("read"), "1");
    assert_eq!(
        node.read_sysctl(&Sysctl::ip_forward()).await.expect("read"),
        "0"
    );
    assert!(node
        .read_sysctl(&Sysctl::bridge_nf_call_iptables())
        .await
        .is_err());
}

#[tokio::test]
async fn renaming_needs_a_down_link_and_moving_drops_addresses() {
    let node = FakeNetlink::new();
    let dir = NetnsDir::new("/fake/ns");
    let other = node.create_netns(&dir, "other").await.expect("netns");
    node.create_veth(&VethPair {
        name: "a",
        peer_name: "b",
        peer_netns: None,
        master: None,
        mtu: None,
    })
    .await
    .expect("veth");
    node.add_address("b", net("10.1.0.1/24"))
        .await
        .expect("address");
    node.set_up("a", true).await.expect("up");
    assert_eq!(
        node.rename("a", "c").await.expect_err("up").errno(),
        Some(libc::EBUSY)
    );

    node.move_to_netns("b", &other).await.expect("move");
    let there = node.connect(&other).await.expect("connect");
    assert!(there.addresses("b").await.expect("addresses").is_empty());
    let b = there.require_link("b").await.expect("moved link");
    assert_eq!(
        node.require_link("a").await.expect("a").peer_index,
        Some(b.index)
    );
    there.rename("b", "eth0").await.expect("rename while down");
    node.delete_link("a").await.expect("delete");
    assert!(there.link("eth0").await.expect("lookup").is_none());
}
