use super::*;
use crate::bridge::{ensure_bridge, BridgeConfig};
use crate::netlink::{FakeNetlink, VethPair};

const NET_A: &str = "netaaaaaaaaaaaaaaaa";
const NET_B: &str = "netbbbbbbbbbbbbbbbb";

fn net(s: &str) -> Ipv4Net {
    s.parse().expect("test network")
}

async fn node_with_bridges() -> Sandboxes<FakeNetlink> {
    let node = FakeNetlink::new();
    for (bridge, gateway) in [("br-a", "100.64.1.1/24"), ("br-b", "100.64.2.1/24")] {
        ensure_bridge(
            &node,
            &BridgeConfig {
                name: bridge.to_string(),
                mtu: 1420,
                gateway: net(gateway),
                node_address: None,
            },
        )
        .await
        .expect("bridge");
    }
    Sandboxes::new(node, NetnsDir::new("/fake/sandboxes"))
}

fn on_a(address: &str) -> EndpointConfig {
    EndpointConfig {
        network_id: NET_A.to_string(),
        bridge: "br-a".to_string(),
        address: net(address),
        mtu: 1420,
        default_gateway: Some(Ipv4Addr::new(100, 64, 1, 1)),
    }
}

fn on_b(address: &str) -> EndpointConfig {
    EndpointConfig {
        network_id: NET_B.to_string(),
        bridge: "br-b".to_string(),
        address: net(address),
        mtu: 1420,
        default_gateway: None,
    }
}

#[test]
fn host_veth_names_are_stable_short_and_distinct() {
    let name = host_veth_name("task1", NET_A);
    assert_eq!(name.len(), 15);
    assert!(
        name.starts_with("vs")
            && name[2..]
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    assert_eq!(name, host_veth_name("task1", NET_A));
    assert_ne!(name, host_veth_name("task1", NET_B));
    // The separator keeps ("ab", "c") apart from ("a", "bc").
    assert_ne!(host_veth_name("ab", "c"), host_veth_name("a", "bc"));
}

#[tokio::test]
async fn attach_builds_both_ends_and_a_default_route_on_the_first_network() {
    let sandboxes = node_with_bridges().await;
    let path = sandboxes.create("task1").await.expect("create");
    let first = sandboxes
        .attach("task1", &on_a("100.64.1.5/24"))
        .await
        .expect("attach a");
    let second = sandboxes
        .attach("task1", &on_b("100.64.2.5/24"))
        .await
        .expect("attach b");
    assert_eq!(
        (first.interface.as_str(), second.interface.as_str()),
        ("eth0", "eth1")
    );

    let node = sandboxes.node();
    let host = node.require_link(&first.host_veth).await.expect("host end");
    let bridge = node.require_link("br-a").await.expect("bridge");
    assert_eq!(
        (host.master, host.mtu, host.up),
        (Some(bridge.index), 1420, true)
    );

    let inside = node.connect(&path).await.expect("connect");
    assert!(inside.require_link("lo").await.expect("lo").up);
    let eth0 = inside.require_link("eth0").await.expect("eth0");
    assert_eq!(
        (eth0.mtu, eth0.up, eth0.peer_index),
        (1420, true, Some(host.index))
    );
    assert_eq!(
        inside.addresses("eth0").await.expect("addresses"),
        vec![net("100.64.1.5/24")]
    );
    let defaults: Vec<Ipv4Route> = inside
        .routes()
        .await
        .expect("routes")
        .into_iter()
        .filter(Ipv4Route::is_default)
        .collect();
    assert_eq!(
        defaults,
        vec![Ipv4Route::default_via(Ipv4Addr::new(100, 64, 1, 1), "eth0")]
    );

    let listed = sandboxes.list().await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, "task1");
    assert_eq!(listed[0].endpoints, vec![first, second]);
}

#[tokio::test]
async fn attaching_again_after_a_restart_changes_nothing() {
    let sandboxes = node_with_bridges().await;
    sandboxes.create("task1").await.expect("create");
    sandboxes
        .attach("task1", &on_a("100.64.1.5/24"))
        .await
        .expect("attach");
    let before = sandboxes.node().mutations();

    // A restarted daemon: a new Sandboxes on the same kernel state.
    let restarted = Sandboxes::new(sandboxes.node().clone(), sandboxes.dir().clone());
    restarted.create("task1").await.expect("create again");
    let again = restarted
        .attach("task1", &on_a("100.64.1.5/24"))
        .await
        .expect("attach again");
    assert_eq!(again.interface, "eth0");
    assert_eq!(
        sandboxes.node().mutations(),
        before,
        "re-attaching changed: {:?}",
        &sandboxes.node().log()[before as usize..]
    );
}

#[tokio::test]
async fn attach_repairs_a_changed_address_gateway_and_mtu() {
    let sandboxes = node_with_bridges().await;
    let path = sandboxes.create("task1").await.expect("create");
    sandboxes
        .attach("task1", &on_a("100.64.1.5/24"))
        .await
        .expect("attach");
    let mut changed = on_a("100.64.1.6/24");
    changed.mtu = 1400;
    changed.default_gateway = Some(Ipv4Addr::new(100, 64, 1, 254));
    let endpoint = sandboxes
        .attach("task1", &changed)
        .await
        .expect("re-attach");

    let inside = sandboxes.node().connect(&path).await.expect("connect");
    assert_eq!(
        inside.addresses("eth0").await.expect("addresses"),
        vec![net("100.64.1.6/24")]
    );
    assert_eq!(inside.require_link("eth0").await.expect("eth0").mtu, 1400);
    assert_eq!(
        sandboxes
            .node()
            .require_link(&endpoint.host_veth)
            .await
            .expect("host")
            .mtu,
        1400
    );
    let endpoints = sandboxes.endpoints("task1").await.expect("endpoints");
    assert_eq!(
        endpoints[0].default_gateway,
        Some(Ipv4Addr::new(100, 64, 1, 254))
    );

    // Dropping the gateway removes the default route through this endpoint.
    changed.default_gateway = None;
    sandboxes
        .attach("task1", &changed)
        .await
        .expect("re-attach");
    assert_eq!(
        sandboxes.endpoints("task1").await.expect("endpoints")[0].default_gateway,
        None
    );
}

#[tokio::test]
async fn a_half_made_pair_is_replaced_not_duplicated() {
    let sandboxes = node_with_bridges().await;
    let path = sandboxes.create("task1").await.expect("create");
    // A daemon died right after creating the pair, before labelling it.
    let host_veth = host_veth_name("task1", NET_A);
    sandboxes
        .node()
        .create_veth(&VethPair {
            name: &host_veth,
            peer_name: "eth0",
            peer_netns: Some(&path),
            master: None,
            mtu: None,
        })
        .await
        .expect("half-made veth");

    let endpoint = sandboxes
        .attach("task1", &on_a("100.64.1.5/24"))
        .await
        .expect("attach");
    assert_eq!(endpoint.interface, "eth0");
    let inside = sandboxes.node().connect(&path).await.expect("connect");
    let veths: Vec<String> = inside
        .links()
        .await
        .expect("links")
        .into_iter()
        .filter(|l| l.kind == Some(LinkKind::Veth))
        .map(|l| l.name)
        .collect();
    assert_eq!(veths, vec!["eth0".to_string()]);
    let host_ends = sandboxes
        .node()
        .links()
        .await
        .expect("links")
        .into_iter()
        .filter(|l| l.name.starts_with("vs"))
        .count();
    assert_eq!(host_ends, 1);
}

#[tokio::test]
async fn detach_and_destroy_leave_nothing() {
    let sandboxes = node_with_bridges().await;
    sandboxes.create("task1").await.expect("create");
    let a = sandboxes
        .attach("task1", &on_a("100.64.1.5/24"))
        .await
        .expect("attach a");
    let b = sandboxes
        .attach("task1", &on_b("100.64.2.5/24"))
        .await
        .expect("attach b");

    sandboxes.detach("task1", NET_A).await.expect("detach");
    sandboxes
        .detach("task1", NET_A)
        .await
        .expect("detach again");
    let node = sandboxes.node();
    assert!(node.link(&a.host_veth).await.expect("lookup").is_none());
    let left = sandboxes.endpoints("task1").await.expect("endpoints");
    assert_eq!(
        left.iter()
            .map(|e| e.network_id.as_str())
            .collect::<Vec<_>>(),
        vec![NET_B]
    );

    // The next attachment takes the lowest free name again.
    let again = sandboxes
        .attach("task1", &on_a("100.64.1.5/24"))
        .await
        .expect("re-attach");
    assert_eq!(again.interface, "eth0");

    sandboxes.destroy("task1").await.expect("destroy");
    sandboxes.destroy("task1").await.expect("destroy again");
    assert!(node.link(&b.host_veth).await.expect("lookup").is_none());
    assert!(node.link(&again.host_veth).await.expect("lookup").is_none());
    assert!(node.namespaces().is_empty());
    assert!(sandboxes.list().await.expect("list").is_empty());
}

#[tokio::test]
async fn bad_input_is_refused_before_any_change() {
    let sandboxes = node_with_bridges().await;
    sandboxes.create("task1").await.expect("create");
    let before = sandboxes.node().mutations();
    let mut outside_gateway = on_a("100.64.1.5/24");
    outside_gateway.default_gateway = Some(Ipv4Addr::new(10, 0, 0, 1));
    let mut host_prefix = on_a("100.64.1.5/32");
    host_prefix.default_gateway = None;
    let mut spaced_id = on_a("100.64.1.5/24");
    spaced_id.network_id = "a b".to_string();
    for bad in [outside_gateway, host_prefix, spaced_id] {
        let err = sandboxes.attach("task1", &bad).await.expect_err("invalid");
        assert!(err.to_string().contains("is invalid"), "{err}");
    }
    let err = sandboxes.create("../etc").await.expect_err("bad id");
    assert!(
        err.to_string()
            .starts_with("sandbox id \"../etc\" is invalid"),
        "{err}"
    );
    let missing = sandboxes
        .attach("nope", &on_a("100.64.1.5/24"))
        .await
        .expect_err("no sandbox");
    assert!(
        matches!(missing, NetError::NetnsNotFound { .. }),
        "{missing}"
    );
    assert_eq!(sandboxes.node().mutations(), before);
}
