use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::*;
use crate::netlink::Ipv4Route;

fn net(value: &str) -> Ipv4Net {
    value.parse().expect("test CIDR")
}

/// A dev-cluster host's routes: its underlay and the default route.
fn host_routes() -> Vec<Ipv4Route> {
    vec![
        Ipv4Route::default_via(Ipv4Addr::new(198, 18, 3, 254), "eth0"),
        Ipv4Route::on_link(net("198.18.3.0/24"), "eth0"),
    ]
}

fn request(name: &str) -> NetworkRequest {
    NetworkRequest {
        name: name.to_string(),
        ..Default::default()
    }
}

fn with_default() -> LocalState {
    let mut state = LocalState::default();
    let network = state
        .plan_default_network(&AddressPool::default(), &host_routes())
        .expect("default network");
    state.networks.push(network);
    state
}

fn add(state: &mut LocalState, request: &NetworkRequest) -> NetworkRecord {
    let network = state
        .plan_network(request, &AddressPool::default(), &host_routes())
        .expect("plan");
    state.networks.push(network.clone());
    network
}

#[test]
fn the_default_network_takes_the_top_of_the_pool_on_shoal0() {
    let state = with_default();
    let network = &state.networks[0];
    assert_eq!(
        (network.name.as_str(), network.bridge.as_str()),
        ("bridge", "shoal0")
    );
    assert_eq!(
        (network.subnet, network.gateway, network.mtu),
        (
            net("100.127.255.0/24"),
            Ipv4Addr::new(100, 127, 255, 1),
            1500
        )
    );
    assert_eq!(network.id.len(), 64);
    assert!(network.id.bytes().all(|b| b.is_ascii_hexdigit()));
}

#[test]
fn a_pool_route_pushes_the_default_network_below_it() {
    // The host already routes the top /23 of the pool somewhere.
    let mut routes = host_routes();
    routes.push(Ipv4Route::on_link(net("100.127.254.0/23"), "eth1"));
    let network = LocalState::default()
        .plan_default_network(&AddressPool::default(), &routes)
        .expect("default network");
    assert_eq!(network.subnet, net("100.127.253.0/24"));
}

#[test]
fn user_networks_get_the_next_free_subnets_and_their_own_bridges() {
    let mut state = with_default();
    let first = add(&mut state, &request("front"));
    let second = add(&mut state, &request("back"));
    assert_eq!(first.subnet, net("100.127.254.0/24"));
    assert_eq!(second.subnet, net("100.127.253.0/24"));
    assert_eq!(first.bridge, format!("shl-{}", &first.id[..11]));
    assert_ne!(first.bridge, second.bridge);
    // A removed network's subnet is free again.
    state.networks.retain(|n| n.name != "front");
    assert_eq!(
        add(&mut state, &request("again")).subnet,
        net("100.127.254.0/24")
    );
}

#[test]
fn explicit_subnets_are_checked_against_networks_and_routes() {
    let mut state = with_default();
    let mut explicit = request("mine");
    explicit.subnet = Some("100.80.0.0/24".into());
    explicit.gateway = Some("100.80.0.254".into());
    explicit.internal = true;
    explicit.labels = BTreeMap::from([("team".to_string(), "a".to_string())]);
    let network = add(&mut state, &explicit);
    assert_eq!(
        (network.gateway, network.internal),
        (Ipv4Addr::new(100, 80, 0, 254), true)
    );

    let plan = |state: &LocalState, name: &str, subnet: Option<&str>, gateway: Option<&str>| {
        let request = NetworkRequest {
            name: name.into(),
            subnet: subnet.map(Into::into),
            gateway: gateway.map(Into::into),
            ..Default::default()
        };
        state
            .plan_network(&request, &AddressPool::default(), &host_routes())
            .expect_err("refused")
            .to_string()
    };
    let overlap = plan(&state, "other", Some("100.80.0.128/25"), None);
    assert!(
        overlap.contains("100.80.0.128/25") && overlap.contains("network mine"),
        "{overlap}"
    );
    let overlap = plan(&state, "other", Some("100.127.0.0/16"), None);
    assert!(overlap.contains("network bridge"), "{overlap}");
    let route = plan(&state, "other", Some("198.18.3.0/25"), None);
    assert!(
        route.contains("198.18.3.0/25") && route.contains("198.18.3.0/24 dev eth0"),
        "{route}"
    );
    let invalid = plan(&state, "other", Some("100.80.1.0/33"), None);
    assert!(invalid.contains("\"100.80.1.0/33\""), "{invalid}");
    let outside = plan(&state, "other", Some("100.81.0.0/24"), Some("100.82.0.1"));
    assert!(
        outside.contains("100.82.0.1") && outside.contains("100.81.0.0/24"),
        "{outside}"
    );
    let lonely = plan(&state, "other", None, Some("100.81.0.1"));
    assert!(lonely.contains("--subnet"), "{lonely}");
    let duplicate = plan(&state, "mine", Some("100.81.0.0/24"), None);
    assert!(
        duplicate.contains("\"mine\"") && duplicate.contains("already exists"),
        "{duplicate}"
    );
    for reserved in ["bridge", "none", "host"] {
        assert!(
            plan(&state, reserved, None, None).contains("reserved"),
            "{reserved}"
        );
    }
    for bad in ["", "-x", "a b", "a/b", &"n".repeat(65)] {
        assert!(
            plan(&state, bad, None, None).contains("is invalid"),
            "{bad:?}"
        );
    }
}

#[test]
fn options_set_the_mtu_and_nothing_else() {
    let state = with_default();
    let with_options = |options: &[(&str, &str)]| {
        let request = NetworkRequest {
            name: "n".into(),
            options: options
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        };
        state.plan_network(&request, &AddressPool::default(), &host_routes())
    };
    assert_eq!(with_options(&[("mtu", "9000")]).expect("mtu").mtu, 9000);
    assert_eq!(
        with_options(&[("com.docker.network.driver.mtu", "1400")])
            .expect("docker's spelling")
            .mtu,
        1400
    );
    for bad in ["1279", "65536", "big"] {
        let err = with_options(&[("mtu", bad)])
            .expect_err("bad mtu")
            .to_string();
        assert!(
            err.contains(&format!("{bad:?}")) && err.contains("1280"),
            "{err}"
        );
    }
    let err = with_options(&[("encrypted", "")])
        .expect_err("not for bridges")
        .to_string();
    assert!(err.contains("\"encrypted\""), "{err}");
}

#[test]
fn an_exhausted_pool_is_one_clear_sentence() {
    let pool: AddressPool = "base=100.100.0.0/23,size=24".parse().expect("pool");
    let mut state = LocalState::default();
    for name in ["a", "b"] {
        let network = state
            .plan_network(&request(name), &pool, &host_routes())
            .expect("fits");
        state.networks.push(network);
    }
    let err = state
        .plan_network(&request("c"), &pool, &host_routes())
        .expect_err("full")
        .to_string();
    assert!(
        err.contains("100.100.0.0/23") && err.contains("--default-address-pool"),
        "{err}"
    );
}

#[test]
fn networks_are_found_by_id_name_and_unique_prefix() {
    let mut state = with_default();
    let front = add(&mut state, &request("front"));
    assert_eq!(state.find(&front.id).map(|n| &n.name), Some(&front.name));
    assert_eq!(state.find("front").map(|n| &n.id), Some(&front.id));
    assert_eq!(state.find(&front.id[..12]).map(|n| &n.id), Some(&front.id));
    assert!(state.find("").is_none() && state.find("nothing").is_none());
}

#[test]
fn endpoints_take_the_lowest_free_address_and_give_it_back() {
    let mut state = with_default();
    let give = |state: &mut LocalState, sandbox: &str| {
        let address = state.networks[0].free_address().expect("free");
        state.sandboxes.push(SandboxRecord {
            swarm: Vec::new(),
            id: sandbox.into(),
            container_id: format!("c-{sandbox}"),
            container_name: sandbox.into(),
        });
        state.networks[0].endpoints.push(EndpointRecord {
            sandbox_id: sandbox.into(),
            address,
            aliases: vec![],
            published: vec![],
            position: 0,
        });
        address
    };
    assert_eq!(give(&mut state, "ctr-a"), Ipv4Addr::new(100, 127, 255, 2));
    assert_eq!(give(&mut state, "ctr-b"), Ipv4Addr::new(100, 127, 255, 3));
    assert_eq!(state.container_names(0), vec!["ctr-a", "ctr-b"]);
    assert!(state.remove_sandbox("ctr-a"));
    assert!(!state.remove_sandbox("ctr-a"));
    assert!(state.sandbox_of("c-ctr-a").is_none());
    assert_eq!(give(&mut state, "ctr-c"), Ipv4Addr::new(100, 127, 255, 2));
}

#[test]
fn a_small_subnet_runs_out_with_the_network_named() {
    let mut state = LocalState::default();
    let tiny = NetworkRequest {
        name: "tiny".into(),
        subnet: Some("100.80.0.0/30".into()),
        ..Default::default()
    };
    let network = state
        .plan_network(&tiny, &AddressPool::default(), &[])
        .expect("plan");
    state.networks.push(network);
    let address = state.networks[0].free_address().expect("one address");
    state.networks[0].endpoints.push(EndpointRecord {
        sandbox_id: "s".into(),
        address,
        aliases: vec![],
        published: vec![],
        position: 0,
    });
    let err = state.networks[0]
        .free_address()
        .expect_err("full")
        .to_string();
    assert!(
        err.contains("tiny") && err.contains("100.80.0.0/30"),
        "{err}"
    );
}

#[test]
fn published_ports_reach_the_data_plane_on_their_network_bridge() {
    let mut state = with_default();
    let user = add(&mut state, &request("user"));
    state.sandboxes.push(SandboxRecord {
        swarm: Vec::new(),
        id: "ctr-x".into(),
        container_id: "x".into(),
        container_name: "web".into(),
    });
    let mapping = PortMapping {
        protocol: Protocol::Tcp,
        host_ip: None,
        host_port: 18080,
        container_port: 80,
    };
    state.networks[1].endpoints.push(EndpointRecord {
        sandbox_id: "ctr-x".into(),
        address: Ipv4Addr::new(100, 127, 254, 2),
        aliases: vec!["www".into()],
        published: vec![mapping.clone()],
        position: 0,
    });
    state.networks[0].endpoints.push(EndpointRecord {
        sandbox_id: "ctr-x".into(),
        address: Ipv4Addr::new(100, 127, 255, 2),
        aliases: vec![],
        published: vec![],
        position: 1,
    });
    let local = state.dataplane();
    assert_eq!(local.networks.len(), 2);
    assert_eq!(
        local.published,
        vec![mapping.published(Ipv4Addr::new(100, 127, 254, 2), &user.bridge)]
    );
    assert_eq!(
        local.published[0].to_string(),
        "0.0.0.0:18080->100.127.254.2:80/tcp"
    );
    // The container's order is its endpoints' positions.
    let order: Vec<usize> = state
        .sandbox_endpoints("ctr-x")
        .into_iter()
        .map(|(i, _)| i)
        .collect();
    assert_eq!(order, vec![1, 0]);
    assert_eq!(mapping.host_side(), "18080/tcp");
}

#[test]
fn the_state_survives_a_save_and_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(STATE_FILE);
    assert_eq!(
        LocalState::load(&path).expect("missing is empty"),
        LocalState::default()
    );
    let mut state = with_default();
    add(&mut state, &request("front"));
    state.sandboxes.push(SandboxRecord {
        swarm: Vec::new(),
        id: "ctr-a".into(),
        container_id: "abc".into(),
        container_name: "web".into(),
    });
    state.save(&path).expect("save");
    let loaded = LocalState::load(&path).expect("load");
    assert_eq!(loaded.networks, state.networks);
    assert_eq!(loaded.sandboxes, state.sandboxes);
    assert_eq!(loaded.version, 1);
    // No temporary file is left next to it.
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .expect("list")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(files, vec![std::ffi::OsString::from(STATE_FILE)]);

    std::fs::write(&path, b"{not json").expect("corrupt");
    let err = LocalState::load(&path).expect_err("corrupt").to_string();
    assert!(
        err.contains(STATE_FILE) && err.contains("move it away"),
        "{err}"
    );
}
