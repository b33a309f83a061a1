//! The test hosts themselves: `shoal dev-cluster` builds namespaces that
//! reach each other, and `down` leaves nothing behind.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use crate::support::{run, wait_until, Cluster, CLI_TIMEOUT, SHOAL};

#[test]
fn network_only_hosts_reach_each_other_until_partitioned() {
    let cluster = Cluster::up_network_only("dcnet", 1, 2);
    for (from, to) in [
        ("manager1", "worker1"),
        ("manager1", "worker2"),
        ("worker2", "worker1"),
    ] {
        assert!(cluster.can_connect(from, to), "{from} cannot reach {to}");
    }

    // exec runs inside the host's namespace and points SHOAL_HOST at it.
    let worker1 = cluster.host("worker1");
    let out = cluster
        .exec(
            "worker1",
            &["sh", "-c", "echo $SHOAL_HOST; readlink /proc/self/ns/net"],
        )
        .ok();
    let inode = fs::metadata(format!("/run/netns/{}", worker1.netns))
        .expect("worker1's netns exists")
        .ino();
    assert_eq!(
        out.lines(),
        [
            format!("unix://{}", worker1.socket.display()),
            format!("net:[{inode}]")
        ]
    );
    let failed = cluster.exec("worker1", &["sh", "-c", "exit 7"]);
    assert_eq!(
        failed.status.and_then(|s| s.code()),
        Some(7),
        "exec must exit with the command's code"
    );

    cluster.partition("worker1");
    assert!(
        !cluster.can_connect("manager1", "worker1"),
        "partitioned worker1 is still reachable"
    );
    assert!(
        cluster.can_connect("manager1", "worker2"),
        "partitioning worker1 cut off worker2"
    );
    cluster.heal("worker1");
    wait_until(
        Duration::from_secs(5),
        "worker1 to be reachable after heal",
        || cluster.can_connect("manager1", "worker1").then_some(()),
    );

    let added = cluster.add_worker();
    assert_eq!(
        (added.name.as_str(), added.address.octets()[3]),
        ("worker3", 4)
    );
    assert!(
        cluster.can_connect("worker3", "manager1"),
        "an added host cannot reach the others"
    );

    let (name, index) = (cluster.name().to_string(), cluster.subnet_index());
    cluster.down();
    assert_nothing_left(&name, index);
    run(
        SHOAL,
        &["dev-cluster", "down", "--name", &name],
        CLI_TIMEOUT,
    )
    .ok();
}

#[test]
fn up_runs_a_daemon_per_host_and_down_removes_everything() {
    let cluster = Cluster::up("dcup", 1, 2);
    let hosts = cluster.hosts();
    assert_eq!(hosts.len(), 3);
    for host in &hosts {
        assert!(host.running, "the daemon of {} is not running", host.name);
    }
    assert!(
        cluster.can_connect("manager1", "worker2"),
        "manager1 cannot reach worker2"
    );
    wait_until(Duration::from_secs(30), "3 nodes in `node ls`", || {
        let out = cluster.shoal("manager1", &["node", "ls", "-q"]);
        (out.success() && out.lines().len() == 3).then_some(())
    });

    let (name, index) = (cluster.name().to_string(), cluster.subnet_index());
    cluster.down();
    assert_nothing_left(&name, index);
    run(
        SHOAL,
        &["dev-cluster", "down", "--name", &name],
        CLI_TIMEOUT,
    )
    .ok();
}

/// No namespace, link, directory or subnet reservation of the cluster remains.
fn assert_nothing_left(name: &str, index: u8) {
    let netns_prefix = format!("shoal-{name}-");
    let namespaces = entries("/run/netns");
    assert!(
        !namespaces.iter().any(|ns| ns.starts_with(&netns_prefix)),
        "namespaces left: {namespaces:?}"
    );

    let veth_prefix = format!("sh{index}h");
    let is_ours = |link: &String| {
        *link == format!("sh{index}br")
            || link
                .strip_prefix(&veth_prefix)
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    let links = entries("/sys/class/net");
    assert!(!links.iter().any(is_ours), "links left: {links:?}");

    assert!(
        !fs::exists(format!("/run/shoal-dev/{name}")).unwrap_or(true),
        "/run/shoal-dev/{name} is left"
    );
    for reservation in entries("/run/shoal-dev/.index") {
        let owner =
            fs::read_to_string(format!("/run/shoal-dev/.index/{reservation}")).unwrap_or_default();
        assert_ne!(
            owner.trim(),
            name,
            "subnet reservation {reservation} is left"
        );
    }
}

fn entries(dir: &str) -> Vec<String> {
    match fs::read_dir(dir) {
        Ok(listing) => listing
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .collect(),
        Err(_) => Vec::new(),
    }
}
