//! `Rtnl` and `NetnsDir` against the kernel: what the fake promises, the
//! kernel does.

use std::fs;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use nix::libc;
use shoal_overlay_net::error::NetError;
use shoal_overlay_net::netlink::{
    Ipv4Route, LinkKind, Netlink, RouteScope, Rtnl, Sysctl, VethPair,
};
use shoal_overlay_net::netns;

use crate::support::{in_netns, Scratch};

fn net(s: &str) -> Ipv4Net {
    s.parse().expect("test network")
}

#[test]
fn namespaces_are_created_listed_entered_and_deleted() {
    let scratch = Scratch::new("ns");
    let path = scratch.netns("inner");
    assert_eq!(scratch.dir.list().expect("list"), vec!["inner".to_string()]);
    assert!(matches!(
        scratch.dir.create("inner"),
        Err(NetError::NetnsExists { .. })
    ));

    // A thread inside sees the namespace's inode as its own.
    let inode = scratch.dir.inode("inner").expect("inode");
    let seen = scratch
        .dir
        .run_in("inner", || fs::read_link("/proc/thread-self/ns/net"))
        .expect("run_in")
        .expect("readlink");
    assert_eq!(seen.to_string_lossy(), format!("net:[{inode}]"));
    let outside = fs::read_link("/proc/thread-self/ns/net").expect("readlink");
    assert_ne!(outside, seen, "run_in moved the calling thread");
    assert_eq!(
        in_netns(&path, "readlink", &["/proc/self/ns/net"])
            .expect("nsenter")
            .trim(),
        format!("net:[{inode}]")
    );

    scratch.dir.delete("inner").expect("delete");
    scratch.dir.delete("inner").expect("delete again");
    assert!(scratch.dir.list().expect("list").is_empty());
    assert!(matches!(
        netns::open_path(&path),
        Err(NetError::NetnsNotFound { .. })
    ));
}

/// /proc/sys/net follows the network namespace of the thread that opens
/// the file: a write through a connection to the node namespace changes the
/// node, not the namespace the test runs in.
#[tokio::test]
async fn sysctls_are_read_and_written_in_the_connections_namespace() {
    let scratch = Scratch::new("sysctl");
    let node = Rtnl::in_netns(&scratch.node_path).expect("connect");
    let root_before = fs::read_to_string("/proc/sys/net/ipv4/ip_forward").expect("root value");

    // A new namespace starts from the kernel default or, with
    // net.core.devconf_inherit_init_net, from the host's value: set a known
    // starting point rather than assume one.
    node.write_sysctl(&Sysctl::ip_forward(), "0")
        .await
        .expect("write");
    assert_eq!(
        node.read_sysctl(&Sysctl::ip_forward()).await.expect("read"),
        "0"
    );
    node.write_sysctl(&Sysctl::ip_forward(), "1")
        .await
        .expect("write");
    assert_eq!(
        node.read_sysctl(&Sysctl::ip_forward()).await.expect("read"),
        "1"
    );
    assert_eq!(
        in_netns(
            &scratch.node_path,
            "cat",
            &["/proc/sys/net/ipv4/ip_forward"]
        )
        .expect("nsenter")
        .trim(),
        "1"
    );
    assert_eq!(
        fs::read_to_string("/proc/sys/net/ipv4/ip_forward").expect("root value"),
        root_before,
        "the write leaked into the test's own namespace"
    );

    node.create_bridge("br-sysctl", None).await.expect("bridge");
    let proxy = Sysctl::ipv4_conf("br-sysctl", "proxy_arp").expect("key");
    node.write_sysctl(&proxy, "1").await.expect("proxy_arp");
    assert_eq!(node.read_sysctl(&proxy).await.expect("read"), "1");
    let missing = Sysctl::ipv4_conf("nosuchlink", "proxy_arp").expect("key");
    let err = node
        .read_sysctl(&missing)
        .await
        .expect_err("no such interface");
    assert_eq!(err.errno(), Some(libc::ENOENT), "{err}");
    assert!(
        err.to_string()
            .contains("net.ipv4.conf.nosuchlink.proxy_arp"),
        "{err}"
    );
}

#[tokio::test]
async fn bridges_and_veths_across_namespaces() {
    let scratch = Scratch::new("links");
    let peer_path = scratch.netns("peer");
    let node = Rtnl::in_netns(&scratch.node_path).expect("connect");
    let peer = node.connect(&peer_path).await.expect("connect to the peer");

    node.create_bridge("br-links", Some(1400))
        .await
        .expect("bridge");
    let bridge = node.require_link("br-links").await.expect("bridge exists");
    assert_eq!(
        (bridge.kind.clone(), bridge.mtu, bridge.up),
        (Some(LinkKind::Bridge), 1400, true)
    );
    let details = scratch.ip_node(&["-d", "link", "show", "br-links"]);
    assert!(details.contains("nf_call_iptables 0"), "{details}");
    let again = node
        .create_bridge("br-links", None)
        .await
        .expect_err("exists");
    assert_eq!(again.errno(), Some(libc::EEXIST));

    node.create_veth(&VethPair {
        name: "vlinks0",
        peer_name: "eth0",
        peer_netns: Some(&peer_path),
        master: Some("br-links"),
        mtu: Some(1400),
    })
    .await
    .expect("veth");
    let host = node.require_link("vlinks0").await.expect("host end");
    let inner = peer.require_link("eth0").await.expect("inner end");
    assert_eq!(host.kind, Some(LinkKind::Veth));
    assert_eq!(
        (host.master, host.up, host.mtu),
        (Some(bridge.index), true, 1400)
    );
    assert_eq!((inner.up, inner.mtu, inner.master), (false, 1400, None));
    assert_eq!(host.peer_index, Some(inner.index));
    assert_eq!(inner.peer_index, Some(host.index));
    assert!(node.link("eth0").await.expect("lookup").is_none());

    peer.set_alias("eth0", "shoal-network:abc")
        .await
        .expect("alias");
    peer.set_mtu("eth0", 1300).await.expect("mtu");
    let inner = peer.require_link("eth0").await.expect("inner end");
    assert_eq!(
        (inner.alias.as_deref(), inner.mtu),
        (Some("shoal-network:abc"), 1300)
    );
    node.set_master("vlinks0", None).await.expect("nomaster");
    assert_eq!(
        node.require_link("vlinks0").await.expect("host").master,
        None
    );
    node.set_master("vlinks0", Some("br-links"))
        .await
        .expect("master");
    node.set_up("vlinks0", false).await.expect("down");
    node.rename("vlinks0", "vlinks1").await.expect("rename");
    assert!(!node.require_link("vlinks1").await.expect("renamed").up);

    // Moving the host end over: the pair then lives in one namespace.
    node.move_to_netns("vlinks1", &peer_path)
        .await
        .expect("move");
    assert!(node.link("vlinks1").await.expect("lookup").is_none());
    let moved = peer.require_link("vlinks1").await.expect("moved");
    assert_eq!(
        moved.peer_index,
        Some(peer.require_link("eth0").await.expect("eth0").index)
    );

    peer.delete_link("vlinks1").await.expect("delete");
    assert!(
        peer.link("eth0").await.expect("lookup").is_none(),
        "deleting one end keeps the other"
    );
    peer.delete_link("vlinks1")
        .await
        .expect("deleting a missing link is fine");
    let err = node.require_link("nosuchlink").await.expect_err("missing");
    assert!(
        err.to_string().contains("link nosuchlink does not exist"),
        "{err}"
    );
}

#[tokio::test]
async fn addresses_and_routes() {
    let scratch = Scratch::new("routes");
    let node = Rtnl::in_netns(&scratch.node_path).expect("connect");
    node.create_bridge("br-routes", None).await.expect("bridge");
    // A bridge without ports has no carrier; a veth peer on it gives it one,
    // so its routes are usable, not "linkdown".
    node.create_veth(&VethPair {
        name: "vroutes0",
        peer_name: "vroutes1",
        peer_netns: None,
        master: Some("br-routes"),
        mtu: None,
    })
    .await
    .expect("veth");
    node.set_up("vroutes1", true).await.expect("up");

    node.add_address("br-routes", net("100.64.77.1/24"))
        .await
        .expect("gateway");
    node.add_address("br-routes", net("100.64.77.2/32"))
        .await
        .expect("node address");
    let err = node
        .add_address("br-routes", net("100.64.77.1/24"))
        .await
        .expect_err("twice");
    assert_eq!(err.errno(), Some(libc::EEXIST));
    let mut addresses = node.addresses("br-routes").await.expect("addresses");
    addresses.sort();
    assert_eq!(
        addresses,
        vec![net("100.64.77.1/24"), net("100.64.77.2/32")]
    );

    let host = Ipv4Route::on_link(net("100.64.78.9/32"), "vroutes1")
        .with_source(Ipv4Addr::new(100, 64, 77, 2));
    node.add_route(&host).await.expect("host route");
    let default = Ipv4Route::default_via(Ipv4Addr::new(100, 64, 77, 254), "br-routes");
    node.add_route(&default).await.expect("default route");
    assert_eq!(
        node.add_route(&default).await.expect_err("twice").errno(),
        Some(libc::EEXIST)
    );
    let moved_default = Ipv4Route::default_via(Ipv4Addr::new(100, 64, 77, 253), "br-routes");
    node.replace_route(&moved_default).await.expect("replace");

    let routes = node.routes().await.expect("routes");
    assert!(routes.contains(&host), "{routes:?}");
    assert!(routes.contains(&moved_default), "{routes:?}");
    assert_eq!(
        routes.iter().filter(|r| r.is_default()).count(),
        1,
        "{routes:?}"
    );
    let connected = routes
        .iter()
        .find(|r| r.destination == net("100.64.77.0/24"))
        .expect("the kernel's route for the bridge's subnet");
    assert!(
        connected.kernel && connected.scope == RouteScope::Link,
        "{connected:?}"
    );
    let shown = scratch.ip_node(&["route", "show", "100.64.78.9/32"]);
    assert!(
        shown.contains("dev vroutes1") && shown.contains("src 100.64.77.2"),
        "{shown}"
    );

    node.delete_route(&host).await.expect("delete");
    node.delete_route(&host)
        .await
        .expect("delete a missing route");
    node.delete_route(&moved_default)
        .await
        .expect("delete default");
    let routes = node.routes().await.expect("routes");
    assert!(!routes.iter().any(|r| !r.kernel), "{routes:?}");

    node.delete_address("br-routes", net("100.64.77.2/32"))
        .await
        .expect("delete address");
    node.delete_address("br-routes", net("100.64.77.2/32"))
        .await
        .expect("delete a missing address");
    assert_eq!(
        node.addresses("br-routes").await.expect("addresses"),
        vec![net("100.64.77.1/24")]
    );
}
