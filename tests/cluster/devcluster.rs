//! The test hosts themselves: `shoal dev-cluster` builds namespaces that
//! reach each other (also on a machine whose firewall drops forwarded
//! traffic, as Docker's does), and `down` leaves nothing behind.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use crate::support::{in_netns, run, unique_name, wait_until, Cluster, Output, CLI_TIMEOUT, SHOAL};

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

    // The uplink's address, where tests run their registry, is reachable
    // from every host.
    let index = cluster.subnet_index();
    assert!(
        can_reach_uplink(&cluster.host("worker3").netns, None, index),
        "worker3 cannot reach 198.18.{index}.254"
    );

    let name = cluster.name().to_string();
    cluster.down();
    assert_nothing_left(&name, index, None);
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
    assert_nothing_left(&name, index, None);
    run(
        SHOAL,
        &["dev-cluster", "down", "--name", &name],
        CLI_TIMEOUT,
    )
    .ok();
}

/// A machine where Docker runs, simulated in a throwaway namespace so the
/// root namespace's firewall stays untouched: br_netfilter's
/// bridge-nf-call-iptables is on there (the module is global and loaded;
/// the setting is per namespace) and iptables' FORWARD policy is DROP, as
/// Docker sets it. `shoal dev-cluster up` runs inside it, so that namespace
/// plays the machine's root namespace: the uplink lands there.
#[test]
fn hosts_reach_each_other_where_the_firewall_drops_forwarded_traffic() {
    let mut machine = DockerLikeMachine::new("dkhost");

    // The trap is real: two namespaces on a bridge in the machine's own
    // namespace, as dev clusters were built before, cannot reach each other
    // even with the bridge's own nf_call_iptables off.
    machine.bridge_two_namespaces_directly();
    assert!(
        machine.control_ping().is_err(),
        "the simulated Docker host forwards bridged traffic; the test would prove nothing"
    );

    let cluster = machine.up();
    let index = machine.subnet_index();
    for (from, to) in [
        ("manager1", "worker1"),
        ("worker1", "worker2"),
        ("worker2", "manager1"),
    ] {
        let target = format!("198.18.{index}.{}", host_number(to));
        let ping = machine.exec(from, &["ping", "-c", "1", "-W", "2", &target]);
        assert!(
            ping.success(),
            "{from} cannot ping {to} ({target}): {}{}",
            ping.stdout,
            ping.stderr
        );
    }
    let uplink = format!("198.18.{index}.254");
    let ping = machine.exec("worker2", &["ping", "-c", "1", "-W", "2", &uplink]);
    assert!(
        ping.success(),
        "worker2 cannot ping {uplink}: {}{}",
        ping.stdout,
        ping.stderr
    );
    assert!(
        can_reach_uplink(
            &format!("shoal-{cluster}-worker1"),
            Some(&machine.netns),
            index
        ),
        "worker1 cannot open a TCP connection to a listener on {uplink}"
    );

    machine.down();
    assert_nothing_left(&cluster, index, Some(&machine.netns));
}

/// 1-based position of a host in a `--managers 1 --workers 2` cluster.
fn host_number(host: &str) -> u8 {
    match host {
        "manager1" => 1,
        "worker1" => 2,
        "worker2" => 3,
        other => panic!("no host {other} in this cluster"),
    }
}

/// Whether a TCP connection from host namespace `host_netns` reaches a
/// listener on 198.18.<index>.254 in `uplink_netns` (`None`: this
/// process's namespace).
fn can_reach_uplink(host_netns: &str, uplink_netns: Option<&str>, index: u8) -> bool {
    let address = Ipv4Addr::new(198, 18, index, 254);
    let bind = move || TcpListener::bind((address, 0));
    let listener = match uplink_netns {
        Some(ns) => in_netns(ns, bind),
        None => bind(),
    }
    .unwrap_or_else(|e| panic!("could not listen on {address}: {e}"));
    let peer = listener.local_addr().expect("listener address");
    let peer = SocketAddr::from((address, peer.port()));
    in_netns(host_netns, move || {
        TcpStream::connect_timeout(&peer, Duration::from_secs(2))
    })
    .is_ok()
}

/// The throwaway "Docker host" namespace, its control namespaces and the
/// dev cluster made inside it; all removed on drop, also when a test fails.
struct DockerLikeMachine {
    netns: String,
    cluster: String,
    controls: Vec<String>,
    up: bool,
}

impl DockerLikeMachine {
    fn new(tag: &str) -> DockerLikeMachine {
        let cluster = unique_name(tag);
        let machine = DockerLikeMachine {
            netns: format!("shtest-{cluster}"),
            controls: vec![format!("shtest-{cluster}-a"), format!("shtest-{cluster}-b")],
            cluster,
            up: false,
        };
        remove_machines_of_dead_runs(tag);
        for ns in std::iter::once(&machine.netns).chain(&machine.controls) {
            let _ = run("ip", &["netns", "del", ns], CLI_TIMEOUT);
        }
        run("ip", &["netns", "add", &machine.netns], CLI_TIMEOUT).ok();
        machine.inside(&["ip", "link", "set", "lo", "up"]).ok();
        machine
            .inside(&["sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1"])
            .ok();
        let nf = machine
            .inside(&["cat", "/proc/sys/net/bridge/bridge-nf-call-iptables"])
            .ok();
        assert_eq!(
            nf.stdout.trim(),
            "1",
            "br_netfilter is not active in {}",
            machine.netns
        );
        machine.inside(&["iptables", "-P", "FORWARD", "DROP"]).ok();
        let policy = machine.inside(&["iptables", "-S", "FORWARD"]).ok();
        assert!(
            policy.stdout.contains("-P FORWARD DROP"),
            "{}",
            policy.stdout
        );
        machine
    }

    fn path(&self) -> String {
        format!("/run/netns/{}", self.netns)
    }

    /// `program args` inside the machine's namespace.
    fn inside(&self, command: &[&str]) -> Output {
        let net = format!("--net={}", self.path());
        let mut args = vec![net.as_str()];
        args.extend_from_slice(command);
        run("nsenter", &args, Duration::from_secs(120))
    }

    /// The dev cluster's old layout in miniature: a bridge in the machine's
    /// namespace (nf_call_iptables 0) with a veth to each control namespace.
    fn bridge_two_namespaces_directly(&self) {
        let ns = self.netns.as_str();
        run(
            "ip",
            &[
                "-n",
                ns,
                "link",
                "add",
                "ctlbr",
                "type",
                "bridge",
                "nf_call_iptables",
                "0",
            ],
            CLI_TIMEOUT,
        )
        .ok();
        run("ip", &["-n", ns, "link", "set", "ctlbr", "up"], CLI_TIMEOUT).ok();
        for (i, control) in self.controls.iter().enumerate() {
            run("ip", &["netns", "add", control], CLI_TIMEOUT).ok();
            let veth = format!("ctl{i}");
            run(
                "ip",
                &[
                    "-n", ns, "link", "add", &veth, "master", "ctlbr", "type", "veth", "peer",
                    "name", "eth0", "netns", control,
                ],
                CLI_TIMEOUT,
            )
            .ok();
            run("ip", &["-n", ns, "link", "set", &veth, "up"], CLI_TIMEOUT).ok();
            let address = format!("198.19.250.{}/24", i + 1);
            run(
                "ip",
                &["-n", control, "addr", "add", &address, "dev", "eth0"],
                CLI_TIMEOUT,
            )
            .ok();
            run(
                "ip",
                &["-n", control, "link", "set", "eth0", "up"],
                CLI_TIMEOUT,
            )
            .ok();
        }
    }

    fn control_ping(&self) -> Result<(), String> {
        let net = format!("--net=/run/netns/{}", self.controls[0]);
        let out = run(
            "nsenter",
            &[&net, "ping", "-c", "2", "-W", "1", "198.19.250.2"],
            CLI_TIMEOUT,
        );
        if out.success() {
            Ok(())
        } else {
            Err(out.stdout)
        }
    }

    /// `shoal dev-cluster up --network-only` from inside the machine's
    /// namespace; returns the cluster name.
    fn up(&mut self) -> String {
        // Set before `up` runs, so Drop removes a half-made cluster too.
        self.up = true;
        let owner = std::process::id().to_string();
        self.inside(&[
            SHOAL,
            "dev-cluster",
            "up",
            "--name",
            &self.cluster,
            "--managers",
            "1",
            "--workers",
            "2",
            "--network-only",
            "--owner-pid",
            &owner,
        ])
        .ok();
        self.cluster.clone()
    }

    fn subnet_index(&self) -> u8 {
        let out = run(
            SHOAL,
            &[
                "dev-cluster",
                "ls",
                "--name",
                &self.cluster,
                "--format",
                "json",
            ],
            CLI_TIMEOUT,
        )
        .ok();
        let hosts: Vec<crate::support::Host> = out.stdout_json();
        hosts[0].address.octets()[2]
    }

    fn exec(&self, host: &str, command: &[&str]) -> Output {
        let mut args = vec![
            "dev-cluster",
            "exec",
            host,
            "--name",
            self.cluster.as_str(),
            "--",
        ];
        args.extend_from_slice(command);
        run(SHOAL, &args, CLI_TIMEOUT)
    }

    /// `dev-cluster down` from inside the machine, where `up` ran.
    fn down(&mut self) {
        self.up = false;
        self.inside(&[SHOAL, "dev-cluster", "down", "--name", &self.cluster])
            .ok();
    }
}

/// A run killed before its Drop (nextest's timeout) leaves its machine
/// namespaces; the next run removes those whose test process is gone. (The
/// cluster inside is reaped by the next `dev-cluster up`.)
fn remove_machines_of_dead_runs(tag: &str) {
    let prefix = format!("shtest-{tag}-");
    for ns in entries("/run/netns") {
        let Some(rest) = ns.strip_prefix(&prefix) else {
            continue;
        };
        let pid_part = rest.split('-').next().unwrap_or_default();
        let Ok(pid) = i32::from_str_radix(pid_part, 36) else {
            continue;
        };
        let gone = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
            == Err(nix::errno::Errno::ESRCH);
        if gone {
            let _ = run("ip", &["netns", "del", &ns], CLI_TIMEOUT);
        }
    }
}

impl Drop for DockerLikeMachine {
    fn drop(&mut self) {
        if self.up {
            let down = self.inside(&[SHOAL, "dev-cluster", "down", "--name", &self.cluster]);
            if !down.success() {
                eprintln!(
                    "could not remove dev cluster {}: {}",
                    self.cluster, down.stderr
                );
            }
        }
        for ns in self.controls.iter().chain(std::iter::once(&self.netns)) {
            let _ = run("ip", &["netns", "del", ns], CLI_TIMEOUT);
        }
    }
}

/// No namespace (host or switch), link, directory or subnet reservation of
/// the cluster remains. Links are looked for in `uplink_netns` (where `up`
/// ran; `None`: this process's namespace).
fn assert_nothing_left(name: &str, index: u8, uplink_netns: Option<&str>) {
    let netns_prefix = format!("shoal-{name}-");
    let namespaces = entries("/run/netns");
    assert!(
        !namespaces.iter().any(|ns| ns.starts_with(&netns_prefix)),
        "namespaces left: {namespaces:?}"
    );

    let veth_prefix = format!("sh{index}h");
    let is_ours = |link: &String| {
        *link == format!("sh{index}br")
            || *link == format!("sh{index}up")
            || link
                .strip_prefix(&veth_prefix)
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    let links = match uplink_netns {
        None => entries("/sys/class/net"),
        Some(ns) => run("ip", &["-n", ns, "-o", "link", "show"], CLI_TIMEOUT)
            .ok()
            .stdout
            .lines()
            .filter_map(|line| line.split(": ").nth(1))
            .map(|name| name.split('@').next().unwrap_or(name).to_string())
            .collect(),
    };
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
