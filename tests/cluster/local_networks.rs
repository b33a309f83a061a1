//! A node's own bridge networks (docker's bridge driver) through the real
//! CLI and daemon, on a one-node dev cluster: `run -d -p`, user bridge
//! networks, `network connect`, the way out through the node, and bad
//! input. The node is a network namespace, so its bridges, sandboxes and
//! nftables tables go with the cluster.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::mpsc;
use std::time::Duration;

use ipnet::Ipv4Net;

use crate::support::bridge_node::*;
use crate::support::{run, wait_until, Cluster, Output};

/// A failed command: non-zero exit and one sentence on stderr naming `named`.
#[track_caller]
fn assert_refused(out: &Output, named: &str) {
    assert!(
        out.status.is_some() && !out.success(),
        "should fail: {out:?}"
    );
    let message = out.stderr.trim();
    assert_eq!(message.lines().count(), 1, "one sentence: {message}");
    assert!(message.contains(named), "should name {named:?}: {message}");
}

/// A listener on this machine's end of the cluster's underlay: answers one
/// HTTP request with `marker` and reports the peer it saw.
fn outside_listener(
    cluster: &Cluster,
    marker: &'static str,
) -> (SocketAddr, mpsc::Receiver<Ipv4Addr>) {
    let bridge = Ipv4Addr::new(198, 18, cluster.subnet_index(), 254);
    let listener = TcpListener::bind((bridge, 0)).expect("a listener on the underlay bridge");
    let addr = listener.local_addr().expect("its address");
    let (peers, seen) = mpsc::channel();
    std::thread::spawn(move || {
        if let Ok((mut stream, peer)) = listener.accept() {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request);
            let _ = write!(
                stream,
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{marker}",
                marker.len()
            );
            if let std::net::IpAddr::V4(peer) = peer.ip() {
                let _ = peers.send(peer);
            }
        }
    });
    (addr, seen)
}

#[test]
fn published_ports_reach_the_container_and_go_with_it() {
    let node = Node::up("lnpub");
    let bridge = node.network("bridge");
    assert_eq!(
        (bridge.driver.as_str(), bridge.scope.as_str(), bridge.mtu),
        ("bridge", "local", 1500)
    );
    assert!(
        bridge.subnet.starts_with("100.127."),
        "the default network comes from the top of the pool: {}",
        bridge.subnet
    );

    node.serve("web", &["-p", "18080:80"], "first-web");
    let url = format!("http://{}:18080/", node.address);
    wait_until(SETTLE, "the published port on the node's address", || {
        (fetch(&url).as_deref() == Some("first-web")).then_some(())
    });
    assert_eq!(
        node.fetch_in_node("http://127.0.0.1:18080/").as_deref(),
        Some("first-web"),
        "loopback inside the node"
    );
    assert_eq!(
        node.fetch_in_node(&url).as_deref(),
        Some("first-web"),
        "the node's own address from the node"
    );
    let inspect: serde_json::Value = node
        .shoal(&["container", "inspect", "web"])
        .ok()
        .stdout_json();
    assert_eq!(
        inspect[0]["network_settings"]["ports"][0], "0.0.0.0:18080->80/tcp",
        "{inspect}"
    );
    // `container port`, all of them and one by its private port.
    assert_eq!(node.shoal(&["container", "port", "web"]).ok().stdout, "80/tcp -> 0.0.0.0:18080\n");
    assert_eq!(node.shoal(&["container", "port", "web", "80"]).ok().stdout, "0.0.0.0:18080\n");
    let unpublished = node.shoal(&["container", "port", "web", "81/udp"]);
    assert!(!unpublished.success() && unpublished.stderr.contains("81/udp"), "{}", unpublished.stderr);

    // The same port again: refused, and nothing of the second run is left.
    let sandboxes = node.sandboxes();
    assert_eq!(sandboxes.len(), 1, "{sandboxes:?}");
    let again = node.run(
        &["-d", "--name", "web2", "-p", "18080:80"],
        &["httpd", "-f", "-p", "80"],
    );
    assert_refused(&again, "18080");
    assert!(again.stderr.contains("already in use"), "{}", again.stderr);
    assert_eq!(node.container_names(), vec!["web"]);
    assert_eq!(node.sandboxes(), sandboxes);
    let attached: Vec<String> = node
        .network("bridge")
        .attachments
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert_eq!(attached, vec!["web"]);
    assert_eq!(
        fetch(&url).as_deref(),
        Some("first-web"),
        "the first container still has the port"
    );

    // A container reaches its own published port through the node's
    // address (DNAT'd straight back to it, masqueraded).
    let hairpin = format!(
        "mkdir -p /www && echo self-web > /www/index.html && httpd -p 80 -h /www && while true; do wget -q -O - http://{}:18083/ || echo failed; sleep 0.3; done",
        node.address
    );
    node.run(
        &["-d", "--name", "self", "-p", "18083:80"],
        &["sh", "-c", &hairpin],
    )
    .ok();
    wait_until(
        SETTLE,
        "the container reaching its own published port",
        || {
            node.shoal(&["container", "logs", "self"])
                .ok()
                .stdout
                .contains("self-web")
                .then_some(())
        },
    );
    let netns = format!("--net=/run/netns/{}", node.netns);
    // Bridge ports are in hairpin mode, for traffic DNAT'd on the bridge
    // itself (where br_netfilter is loaded).
    let ports = run(
        "nsenter",
        &[&netns, "bridge", "-d", "link", "show"],
        PROBE_TIMEOUT,
    );
    assert!(
        ports.stdout.contains("hairpin on") && !ports.stdout.contains("hairpin off"),
        "{}",
        ports.stdout
    );
    node.shoal(&["container", "rm", "-f", "self"]).ok();
    let delay = run(
        "nsenter",
        &[&netns, "cat", "/proc/sys/net/ipv4/neigh/shoal0/proxy_delay"],
        PROBE_TIMEOUT,
    );
    assert_eq!(delay.stdout.trim(), "0", "proxy ARP answers at once");

    // Removing the container frees the port at once: a new run takes it.
    node.shoal(&["container", "rm", "-f", "web"]).ok();
    assert!(node.sandboxes().is_empty(), "{:?}", node.sandboxes());
    assert!(!node.nat_rules().contains("18080"), "{}", node.nat_rules());
    node.serve("web3", &["-p", "18080:80"], "third-web");
    wait_until(SETTLE, "the port answering for the new container", || {
        (fetch(&url).as_deref() == Some("third-web")).then_some(())
    });
    node.shoal(&["container", "rm", "-f", "web3"]).ok();
    assert!(!node.nat_rules().contains("18080"), "{}", node.nat_rules());
    assert!(node.sandboxes().is_empty());
}

#[test]
fn the_default_bridge_reaches_the_outside_masqueraded() {
    let node = Node::up("lnout");
    let (outside, peers) = outside_listener(&node.cluster, "from-outside");
    let url = format!("http://{outside}/");
    // (busybox-static's wget crashes with -T here; the CLI timeout bounds it.)
    let fetched = node.run(&["--rm"], &["wget", "-q", "-O", "-", &url]).ok();
    assert_eq!(fetched.stdout.trim(), "from-outside");
    // The outside saw the node, not the container's private address.
    let peer = peers
        .recv_timeout(Duration::from_secs(5))
        .expect("the listener saw the connection");
    assert_eq!(peer, node.address);
    // An --rm container leaves nothing behind.
    wait_until(SETTLE, "the --rm container's sandbox to go", || {
        node.sandboxes().is_empty().then_some(())
    });
    assert!(node.network("bridge").attachments.is_empty());
}

#[test]
fn bridge_networks_are_isolated_and_connect_joins_a_running_container() {
    let node = Node::up("lniso");
    node.shoal(&["network", "create", "-d", "bridge", "front"])
        .ok();
    node.shoal(&[
        "network",
        "create",
        "-d",
        "bridge",
        "--label",
        "tier=back",
        "back",
    ])
    .ok();
    let (front, back) = (node.network("front"), node.network("back"));
    assert_eq!(
        (front.driver.as_str(), front.scope.as_str(), front.mtu),
        ("bridge", "local", 1500)
    );
    assert_ne!(front.subnet, back.subnet);
    assert!(front.gateway.ends_with(".1"), "{}", front.gateway);

    node.run(
        &["-d", "--name", "b1", "--network", "back"],
        &["sleep", "300"],
    )
    .ok();
    let back_subnet: Ipv4Net = back.subnet.parse().expect("back's subnet");
    let b1 = node.address_of("b1", "back");
    assert!(back_subnet.contains(&b1), "{b1} in {back_subnet}");
    let b1 = b1.to_string();
    // Same network: reached. Another network: not.
    node.run(
        &["--rm", "--network", "back"],
        &["ping", "-c", "1", "-W", "2", &b1],
    )
    .ok();
    let across = node.run(
        &["--rm", "--network", "front"],
        &["ping", "-c", "1", "-W", "1", &b1],
    );
    assert!(!across.success(), "front reached back: {across:?}");

    // a1 on front keeps trying b1; connecting it to back lets it through.
    let probe = format!("while true; do if ping -c 1 -W 1 {b1} >/dev/null 2>&1; then echo reached; else echo blocked; fi; sleep 0.2; done");
    node.run(
        &["-d", "--name", "a1", "--network", "front"],
        &["sh", "-c", &probe],
    )
    .ok();
    let last_probe = |node: &Node| {
        node.shoal(&["container", "logs", "--tail", "1", "a1"])
            .ok()
            .stdout
            .trim()
            .to_string()
    };
    wait_until(SETTLE, "a1 to be blocked", || {
        (last_probe(&node) == "blocked").then_some(())
    });
    node.shoal(&["network", "connect", "--alias", "api", "back", "a1"])
        .ok();
    wait_until(SETTLE, "a1 to reach b1 after connect", || {
        (last_probe(&node) == "reached").then_some(())
    });

    let back = node.network("back");
    let a1 = back
        .attachments
        .iter()
        .find(|a| a.name == "a1")
        .expect("a1 is attached to back");
    assert_eq!(
        (a1.kind.as_str(), a1.aliases.clone()),
        ("container", vec!["api".to_string()])
    );
    let a1_address: Ipv4Net = a1.address.parse().expect("ADDRESS/PREFIX");
    assert!(
        a1_address.prefix_len() == back_subnet.prefix_len()
            && back_subnet.contains(&a1_address.addr()),
        "{a1:?}"
    );
    assert_eq!(node.address_of("a1", "back"), a1_address.addr());
    node.address_of("a1", "front");

    // Removing a network in use names who uses it; nothing changes.
    let refused = node.shoal(&["network", "rm", "back"]);
    assert_refused(&refused, "b1");
    assert!(refused.stderr.contains("a1"), "{}", refused.stderr);
    assert_eq!(node.network("back").id, back.id);

    node.shoal(&["network", "disconnect", "back", "a1"]).ok();
    wait_until(SETTLE, "a1 to be blocked after disconnect", || {
        (last_probe(&node) == "blocked").then_some(())
    });
    assert!(node
        .network("back")
        .attachments
        .iter()
        .all(|a| a.name != "a1"));

    node.shoal(&["container", "rm", "-f", "a1", "b1"]).ok();
    node.shoal(&["network", "rm", "front", "back"]).ok();
    assert_eq!(node.network_names(), vec!["bridge"]);
    assert!(node.sandboxes().is_empty());
}

/// Each mistake is one sentence naming the bad value, a non-zero exit, and
/// no network, container or sandbox left half-made.
#[test]
fn bad_input_is_refused_with_one_sentence_and_nothing_written() {
    let node = Node::up("lnbad");
    node.shoal(&[
        "network",
        "create",
        "-d",
        "bridge",
        "--subnet",
        "100.90.0.0/24",
        "taken",
    ])
    .ok();
    node.run(
        &[
            "-d",
            "--name",
            "user",
            "--network",
            "taken",
            "-p",
            "18081:80",
        ],
        &["sleep", "300"],
    )
    .ok();
    let state = node.data.join("network/local.json");
    let written = std::fs::read(&state).expect("the local network state");
    let underlay = format!("198.18.{}.0/25", node.cluster.subnet_index());
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "network",
                "create",
                "-d",
                "bridge",
                "--subnet",
                "100.90.0.128/25",
                "other",
            ],
            "100.90.0.128/25",
        ),
        (
            vec![
                "network",
                "create",
                "-d",
                "bridge",
                "--subnet",
                "100.91.0.0/33",
                "other",
            ],
            "100.91.0.0/33",
        ),
        (
            vec![
                "network",
                "create",
                "-d",
                "bridge",
                "--subnet",
                "not-a-cidr",
                "other",
            ],
            "not-a-cidr",
        ),
        (
            vec![
                "network",
                "create",
                "-d",
                "bridge",
                "--subnet",
                "100.91.0.5/24",
                "other",
            ],
            "100.91.0.5/24",
        ),
        (
            vec![
                "network",
                "create",
                "-d",
                "bridge",
                "--subnet",
                "100.91.0.0/24",
                "--gateway",
                "100.92.0.1",
                "other",
            ],
            "100.92.0.1",
        ),
        (
            vec![
                "network", "create", "-d", "bridge", "--subnet", &underlay, "other",
            ],
            &underlay,
        ),
        (
            vec![
                "network", "create", "-d", "bridge", "-o", "mtu=1000", "other",
            ],
            "1000",
        ),
        (vec!["network", "create", "-d", "bridge", "taken"], "taken"),
        (vec!["network", "rm", "taken"], "user"),
        (vec!["network", "rm", "bridge"], "bridge"),
        (vec!["run", "--network", "nosuch", IMAGE, "true"], "nosuch"),
        (
            vec!["run", "-d", "-p", "18081:80", IMAGE, "sleep", "300"],
            "18081",
        ),
        (
            vec!["run", "--network", "none", "-p", "18082:80", IMAGE, "true"],
            "--network none",
        ),
        (vec!["network", "connect", "nosuch", "user"], "nosuch"),
        (vec!["network", "connect", "taken", "user"], "user"),
    ];
    for (args, named) in cases {
        let out = node.shoal(&args);
        assert_refused(&out, named);
        assert_eq!(
            std::fs::read(&state).expect("state"),
            written,
            "{args:?} changed the network state"
        );
    }
    assert_eq!(node.network_names(), vec!["bridge", "taken"]);
    assert_eq!(node.container_names(), vec!["user"]);
    assert_eq!(node.sandboxes().len(), 1);
    node.shoal(&["container", "rm", "-f", "user"]).ok();
    node.shoal(&["network", "rm", "taken"]).ok();
    assert!(node.sandboxes().is_empty());
}

/// kill -9 of the daemon: running containers keep their networks and
/// ports (the relay for loopback comes back), one that died meanwhile is
/// released at start, and an adopted container is still released when it
/// ends.
#[test]
fn a_restarted_daemon_adopts_running_containers_and_releases_dead_ones() {
    let node = Node::up("lnrst");
    node.serve("web", &["-p", "18084:80"], "kept-web");
    node.run(
        &["-d", "--name", "dies", "-p", "18085:80"],
        &["sleep", "300"],
    )
    .ok();
    let pid_of = |name: &str| -> i32 {
        let inspect: serde_json::Value = node
            .shoal(&["container", "inspect", name])
            .ok()
            .stdout_json();
        inspect[0]["state"]["pid"]
            .as_i64()
            .unwrap_or_else(|| panic!("{name} has no pid: {inspect}")) as i32
    };
    let dies = pid_of("dies");
    let loopback = "http://127.0.0.1:18084/";
    wait_until(SETTLE, "the published port before the restart", || {
        (node.fetch_in_node(loopback).as_deref() == Some("kept-web")).then_some(())
    });

    node.cluster.stop(HOST, true);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(dies),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("killing a container");
    node.cluster.start(HOST);

    wait_until(SETTLE, "the relay on loopback after the restart", || {
        (node.fetch_in_node(loopback).as_deref() == Some("kept-web")).then_some(())
    });
    assert_eq!(
        fetch(&format!("http://{}:18084/", node.address)).as_deref(),
        Some("kept-web")
    );
    let attached: Vec<String> = node
        .network("bridge")
        .attachments
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert_eq!(
        attached,
        vec!["web"],
        "the dead container's address is free again"
    );
    assert_eq!(node.sandboxes().len(), 1);
    assert!(!node.nat_rules().contains("18085"), "{}", node.nat_rules());
    // The port of the dead container is free again.
    node.run(
        &["-d", "--name", "reuse", "-p", "18085:80"],
        &["sleep", "300"],
    )
    .ok();

    // The adopted container is watched: when it dies, its networks go.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid_of("web")),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("killing web");
    wait_until(SETTLE, "web's networks to be released", || {
        node.network("bridge")
            .attachments
            .iter()
            .all(|a| a.name != "web")
            .then_some(())
    });
    assert!(!node.nat_rules().contains("18084"), "{}", node.nat_rules());
    node.shoal(&["container", "rm", "-f", "web", "dies", "reuse"])
        .ok();
    assert!(node.sandboxes().is_empty(), "{:?}", node.sandboxes());
}

#[test]
fn a_stopped_container_starts_again_with_its_files_log_and_published_port() {
    let node = Node::up("lnrst");
    // Each run counts itself in a file of the container's own layer and
    // serves the count on its published port.
    let script = "n=$(cat /runs 2>/dev/null); n=$((n+1)); echo $n > /runs; mkdir -p /www; echo $n > /www/index.html; exec httpd -f -p 80 -h /www";
    node.run(&["-d", "--name", "counter", "-p", "18090:80"], &["sh", "-c", script]).ok();
    let url = format!("http://{}:18090/", node.address);
    wait_until(SETTLE, "the first run", || (fetch(&url).as_deref() == Some("1")).then_some(()));
    node.shoal(&["container", "stop", "-t", "1", "counter"]).ok();
    assert_eq!(fetch(&url), None, "a stopped container answers nothing");
    assert!(node.sandboxes().is_empty(), "its sandbox went with it: {:?}", node.sandboxes());

    node.shoal(&["container", "start", "counter"]).ok();
    wait_until(SETTLE, "the second run on the same port", || (fetch(&url).as_deref() == Some("2")).then_some(()));
    node.shoal(&["container", "restart", "-t", "1", "counter"]).ok();
    wait_until(SETTLE, "the third run after restart", || (fetch(&url).as_deref() == Some("3")).then_some(()));
    // Starting a running container leaves it be, as docker does.
    node.shoal(&["container", "start", "counter"]).ok();
    assert_eq!(fetch(&url).as_deref(), Some("3"));

    // `start -a` of a stopped container shows this run's output; the log keeps both.
    node.run(&["--name", "once"], &["sh", "-c", "echo hello"]).ok();
    assert_eq!(node.shoal(&["container", "start", "-a", "once"]).ok().stdout, "hello\n");
    assert_eq!(node.shoal(&["container", "logs", "once"]).ok().stdout, "hello\nhello\n");

    node.shoal(&["container", "rm", "-f", "counter", "once"]).ok();
    assert!(node.sandboxes().is_empty(), "{:?}", node.sandboxes());
    let kept = std::fs::read_dir(node.data.join("network/run-requests")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(kept, 0, "removed containers' network requests are forgotten");
}
