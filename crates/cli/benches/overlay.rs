//! Overlay network benchmark on a real dev cluster (1 manager + 1 worker,
//! each a network-namespace host), real service containers, and the plain
//! paths between the same two hosts as the yardstick, all in one run
//! (`cargo bench -p shoal-cli --bench overlay`; needs root, iperf3, ping,
//! nsenter, docker-registry and busybox-static):
//!
//! 1. iperf3 TCP (10 s; 1 stream and -P 2) between two tasks of one service
//!    on different hosts over the encrypted overlay, against host to host
//!    over the underlay (eth0) and over a kernel VXLAN without encryption
//!    that the bench sets up between the hosts. Target: encrypted >= 1
//!    Gbit/s and >= 0.3x plain.
//! 2. ping round trips (200 at 10 ms) task to task vs host to host.
//! 3. CPU seconds of both nodes' WireGuard device processes per GB moved.
//! 4. `service create --network` on a fresh network until a SYN from one
//!    task's namespace is answered by the task on the other node (median
//!    of 5; the tasks are found by their sandboxes appearing on the hosts).
//! 5. Node RSS (daemon + device) before any overlay network (device up
//!    since the join, no peers) and with the mesh carrying the service.
//!    Target: at most 10 MiB more.
//!
//! Everything it makes lives in the dev cluster, which is removed at the
//! end, on a panic, and on SIGINT/SIGTERM/SIGHUP (a second signal skips
//! the orderly unwinding). Not a test: never run in CI.

#[path = "../../../tests/cluster/support/mod.rs"]
mod support;
#[path = "overlay/interrupt.rs"]
mod interrupt;
#[path = "overlay/report.rs"]
mod report;

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shoal_runtime::testing::{TestImages, TestRegistry};
use support::{run, swarm_helpers, Cluster, Output};

const TAG: &str = "bovl";
const HOSTS: [&str; 2] = ["manager1", "worker1"];
const IPERF_SECONDS: u32 = 10;
const IPERF_PORT: u16 = 5201;
const PINGS: usize = 200;
const FIRST_PACKET_RUNS: usize = 5;
/// Any port: a closed one answers a SYN with a RST, which proves the path
/// both ways without waiting for a server in the task to start.
const PROBE_PORT: u16 = 9;
const VXLAN_LINK: &str = "vxbench";
const VXLAN_ID: &str = "4242";
const GBIT_TARGET: f64 = 1.0;
const RATIO_TARGET: f64 = 0.3;
const RSS_TARGET_MIB: f64 = 10.0;
/// Stops at once on SIGTERM (as PID 1, plain `sleep` would ignore it).
const SLEEPER: &[&str] = &["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"];

fn main() {
    let missing: Vec<&str> = ["iperf3", "ping", "nsenter", "ip"].into_iter().filter(|p| !on_path(p)).collect();
    if !nix::unistd::geteuid().is_root() || !missing.is_empty() {
        eprintln!("overlay bench: skipped (needs root and {missing:?} on PATH)");
        return;
    }
    interrupt::run_measured(TAG, measure, Report::print);
}

/// Every figure, gathered before the cluster goes so the table is the last
/// thing printed.
struct Report {
    cluster: String,
    mtu: u32,
    throughput: Vec<Throughput>,
    rtt: [(String, Latency); 3],
    first_packet: Vec<FirstPacket>,
    rss_before: Vec<NodeRss>,
    rss_with_mesh: Vec<NodeRss>,
}

struct Throughput {
    streams: u32,
    overlay: Transfer,
    underlay: Transfer,
    vxlan: Transfer,
    /// CPU seconds of each node's device during the overlay run.
    device_cpu: [f64; 2],
}

fn measure() -> Report {
    let images = TestImages::shared().expect("building the test images");
    let cluster = interrupt::ClusterGuard(Some(Cluster::up(TAG, 1, 1)));
    let cluster = cluster.get();
    let bridge = Ipv4Addr::new(198, 18, cluster.subnet_index(), 254);
    let port = TcpListener::bind((bridge, 0)).and_then(|l| l.local_addr()).expect("a free port on the bridge").port();
    let registry = TestRegistry::start_at(SocketAddr::from((bridge, port))).expect("starting docker-registry");
    let image = registry.push(&images.layout, TestImages::BUSYBOX, "busybox", "1").expect("pushing busybox").reference;
    for host in HOSTS {
        shoal(cluster, host, &["image", "pull", "-q", &image]).ok();
    }
    swarm_helpers::wait_all_ready(cluster, "manager1", HOSTS.len());
    let nodes: Vec<Node> = HOSTS.iter().map(|h| Node::find(cluster, h)).collect();
    let bench = Bench { cluster, image: &image };

    // Before any overlay network: the devices run since the join, peerless.
    std::thread::sleep(Duration::from_secs(3));
    let rss_before: Vec<NodeRss> = nodes.iter().map(|n| n.rss(cluster)).collect();

    // Cold paths first: each run's network (and so the peers) is new.
    let first_packet: Vec<FirstPacket> = (0..FIRST_PACKET_RUNS).map(|run| bench.first_packet(run, &nodes)).collect();

    let mut service = Deployed::network(&bench, "ipf");
    service.create_service(&bench, "ipf");
    let tasks = bench.wait_tasks("ipf", "ipf");
    let [a, b] = [&tasks[0], &tasks[1]];
    let mtu = a.mtu();
    let vxlan_link = Vxlan::up(&nodes, mtu);
    let (hosts_a, hosts_b) = (Place::host(&nodes[0]), Place::host(&nodes[1]));
    let (vxlan_a, vxlan_b) = (vxlan_link.place(&nodes, 0), vxlan_link.place(&nodes, 1));
    for (from, to) in [(a, b), (&hosts_a, &hosts_b), (&vxlan_a, &vxlan_b)] {
        from.warm_up(to);
    }
    let mut throughput = Vec::new();
    for streams in [1, 2] {
        let cpu_before = nodes.iter().map(Node::device_cpu).collect::<Vec<_>>();
        let overlay = iperf(a, b, streams);
        let cpu_after = nodes.iter().map(Node::device_cpu).collect::<Vec<_>>();
        let device_cpu = [cpu_after[0] - cpu_before[0], cpu_after[1] - cpu_before[1]];
        let underlay = iperf(&hosts_a, &hosts_b, streams);
        let vxlan = iperf(&vxlan_a, &vxlan_b, streams);
        eprintln!(
            "-P {streams}: overlay {:.2}, underlay {:.2}, vxlan {:.2} Gbit/s",
            overlay.gbits(),
            underlay.gbits(),
            vxlan.gbits()
        );
        throughput.push(Throughput { streams, overlay, underlay, vxlan, device_cpu });
    }
    let rtt = [
        ("overlay, task to task (WireGuard)".to_string(), a.ping(b)),
        ("underlay, host to host (eth0)".to_string(), hosts_a.ping(&hosts_b)),
        ("kernel VXLAN, host to host".to_string(), vxlan_a.ping(&vxlan_b)),
    ];
    let rss_with_mesh: Vec<NodeRss> = nodes.iter().map(|n| n.rss(cluster)).collect();

    drop(vxlan_link);
    drop(service);
    drop(registry);
    Report { cluster: cluster.name().to_string(), mtu, throughput, rtt, first_packet, rss_before, rss_with_mesh }
}

struct Bench<'a> {
    cluster: &'a Cluster,
    image: &'a str,
}

impl Bench<'_> {
    /// From `service create` (2 tasks, one per node, on a new network)
    /// until the task on manager1 gets an answer from the one on worker1.
    /// The tasks are found by their sandbox namespaces appearing on the
    /// hosts (a look at a directory every 10 ms), not through the API, so
    /// the figure is the data path's and not the polling's.
    fn first_packet(&self, run: usize, nodes: &[Node]) -> FirstPacket {
        let name = format!("fp{run}");
        let mut deployed = Deployed::network(self, &name);
        // Whether the nodes were already peers (a previous run's network
        // may not be gone from the mesh yet) tells a cold run from a warm one.
        let peers_before = nodes[0].peers(self.cluster);
        let old: Vec<Vec<String>> = nodes.iter().map(Node::task_sandboxes).collect();
        let started = Instant::now();
        deployed.create_service(self, &name);
        let mut ends: [Option<(String, Place)>; 2] = [None, None];
        // When both ends were known and how many SYNs it took from there.
        let (mut found, mut probes) = (Duration::ZERO, 0);
        let what = format!("task sandboxes under {} and {} to exchange a packet", nodes[0].sandboxes.display(), nodes[1].sandboxes.display());
        poll(Duration::from_secs(60), &what, || {
            for (side, node) in nodes.iter().enumerate() {
                if ends[side].is_none() {
                    let new = node.task_sandboxes().into_iter().find(|s| !old[side].contains(s));
                    ends[side] = new.and_then(|task| Some((task.clone(), node.sandbox(&task)?)));
                    found = started.elapsed();
                }
            }
            let [Some((_, from)), Some((_, to))] = &ends else { return None };
            probes += 1;
            from.answers(SocketAddr::from((to.address, PROBE_PORT))).then_some(())
        });
        let took = started.elapsed();
        eprintln!(
            "first packet, run {run}: {} ms (both sandboxes addressed at {} ms, {probes} SYNs; {peers_before} peers before)",
            took.as_millis(),
            found.as_millis()
        );
        // What answered were this service's two tasks.
        let tasks: Vec<String> = self.tasks(&name, &name).into_iter().map(|t| t.id).collect();
        for (task, _) in ends.iter().flatten() {
            assert!(tasks.contains(task), "sandbox task-{task} is none of {name}'s tasks {tasks:?}");
        }
        drop(deployed);
        FirstPacket { took, found, probes, peers_before }
    }

    /// Waits until the service's two tasks run, one on each node.
    fn wait_tasks(&self, service: &str, network: &str) -> Vec<Place> {
        poll(Duration::from_secs(60), "two running tasks on two nodes", || {
            let tasks = self.tasks(service, network);
            let running: Vec<&TaskInfo> = tasks.iter().filter(|t| t.running).collect();
            let on = |host: &str| running.iter().find(|t| t.node == host).and_then(|t| self.place_of(t));
            Some(vec![on(HOSTS[0])?, on(HOSTS[1])?])
        })
    }

    fn tasks(&self, service: &str, network: &str) -> Vec<TaskInfo> {
        let out = self.shoal(&["service", "ps", service, "--format", "json"]);
        let rows: Vec<serde_json::Value> = if out.success() { out.stdout_json() } else { Vec::new() };
        rows.iter().filter_map(|row| TaskInfo::parse(row, network)).collect()
    }

    /// The task's container namespace, once its node runs it.
    fn place_of(&self, task: &TaskInfo) -> Option<Place> {
        let out = shoal(self.cluster, &task.node, &["container", "ls", "--format", "json"]);
        let containers: Vec<serde_json::Value> = out.success().then(|| out.stdout_json())?;
        let id = containers.iter().find(|c| c["labels"]["shoal.task.id"] == task.id.as_str())?["id"].as_str()?.to_string();
        let out = shoal(self.cluster, &task.node, &["container", "inspect", &id]);
        let inspect: serde_json::Value = out.success().then(|| out.stdout_json())?;
        let pid = inspect[0]["state"]["pid"].as_i64().filter(|p| *p > 0)?;
        Some(Place { netns: format!("/proc/{pid}/ns/net"), address: task.address })
    }

    fn shoal(&self, args: &[&str]) -> Output {
        shoal(self.cluster, "manager1", args)
    }
}

struct TaskInfo {
    id: String,
    node: String,
    address: Ipv4Addr,
    running: bool,
}

impl TaskInfo {
    /// A task that wants to run and has its address on `network`.
    fn parse(row: &serde_json::Value, network: &str) -> Option<TaskInfo> {
        (row["desired_state"] == "running").then_some(())?;
        let node = row["node"].as_str().filter(|n| !n.is_empty())?.to_string();
        let attachment = row["networks"].as_array()?.iter().find(|n| n["network"] == network)?;
        let address = attachment["address"].as_str()?.split('/').next()?.parse().ok()?;
        let running = row["current_state"].as_str().is_some_and(|s| s.starts_with("running"));
        Some(TaskInfo { id: row["id"].as_str()?.to_string(), node, address, running })
    }
}

/// An overlay network and (once created) a service of two tasks on it,
/// one per node; both removed when dropped.
struct Deployed<'a> {
    cluster: &'a Cluster,
    network: String,
    service: Option<String>,
}

impl<'a> Deployed<'a> {
    fn network(bench: &Bench<'a>, network: &str) -> Deployed<'a> {
        bench.shoal(&["network", "create", "-d", "overlay", network]).ok();
        Deployed { cluster: bench.cluster, network: network.into(), service: None }
    }

    fn create_service(&mut self, bench: &Bench<'a>, service: &str) {
        self.service = Some(service.into());
        let mut args = vec!["service", "create", "--detach", "--name", service, "--replicas", "2"];
        args.extend(["--replicas-max-per-node", "1", "--network", &self.network, bench.image]);
        args.extend_from_slice(SLEEPER);
        bench.shoal(&args).ok();
    }
}

impl Drop for Deployed<'_> {
    fn drop(&mut self) {
        // The cluster's removal takes everything with it; on an interrupt
        // that comes sooner.
        if interrupt::requested() {
            return;
        }
        let manager = |args: &[&str]| self.cluster.shoal("manager1", args);
        if let Some(service) = &self.service {
            let _ = manager(&["service", "rm", service]);
        }
        let gone = poll_quietly(Duration::from_secs(60), || {
            let left = HOSTS.iter().any(|h| {
                let out = self.cluster.shoal(h, &["container", "ls", "-a", "-q"]);
                !out.success() || !out.lines().is_empty()
            });
            (!left).then_some(())
        });
        let removed = poll_quietly(Duration::from_secs(30), || {
            let removed = manager(&["network", "rm", &self.network]).success();
            (removed || !manager(&["network", "inspect", &self.network]).success()).then_some(())
        });
        if gone.is_none() || removed.is_none() {
            eprintln!("the tasks or network {} were not removed; the cluster's removal takes them", self.network);
        }
    }
}

/// A dev-cluster host: its daemon and its WireGuard device process.
struct Node {
    host: String,
    netns: String,
    address: Ipv4Addr,
    daemon_pid: u32,
    device: String,
    device_pid: u32,
    /// Where the daemon keeps its sandboxes' namespaces (`task-<id>`).
    sandboxes: PathBuf,
}

impl Node {
    fn find(cluster: &Cluster, host: &str) -> Node {
        let info: serde_json::Value = shoal(cluster, host, &["info", "--format", "json"]).ok().stdout_json();
        let node_id = info["node_id"].as_str().filter(|id| id.len() >= 11).unwrap_or_else(|| panic!("{host} has no node id: {info}"));
        let device = format!("wgs-{}", &node_id[..11]);
        let device_pid = device_process(&device).unwrap_or_else(|| panic!("no `shoal __wireguard {device}` process for {host}"));
        let host_state = cluster.host(host);
        let daemon_pid = host_state.pid.unwrap_or_else(|| panic!("{host}'s daemon has no pid"));
        let data_root = host_state.socket.parent().map(|dir| dir.join("data")).unwrap_or_default();
        // Made with the first sandbox.
        let sandboxes = data_root.join("network").join("netns");
        Node { host: host.into(), netns: host_state.netns, address: host_state.address, daemon_pid, device, device_pid, sandboxes }
    }

    /// Task ids of the task sandboxes on this node.
    fn task_sandboxes(&self) -> Vec<String> {
        let entries = std::fs::read_dir(&self.sandboxes).into_iter().flatten().flatten();
        entries.filter_map(|e| e.file_name().to_str()?.strip_prefix("task-").map(str::to_string)).collect()
    }

    /// A task's sandbox, once its eth0 has an address.
    fn sandbox(&self, task: &str) -> Option<Place> {
        let netns = self.sandboxes.join(format!("task-{task}")).display().to_string();
        let out = run("nsenter", &[&format!("--net={netns}"), "ip", "-o", "-4", "addr", "show", "dev", "eth0"], Duration::from_secs(5));
        let words: Vec<&str> = out.stdout.split_whitespace().collect();
        let cidr = words.windows(2).find(|w| w[0] == "inet")?[1];
        Some(Place { netns, address: cidr.split('/').next()?.parse().ok()? })
    }

    fn device_cpu(&self) -> f64 {
        cpu_seconds(self.device_pid)
    }

    fn peers(&self, cluster: &Cluster) -> usize {
        cluster.exec(&self.host, &["wg", "show", &self.device, "peers"]).ok().lines().len()
    }

    fn rss(&self, cluster: &Cluster) -> NodeRss {
        let peers = self.peers(cluster);
        NodeRss { host: self.host.clone(), daemon_kib: rss_kib(self.daemon_pid), device_kib: rss_kib(self.device_pid), peers }
    }
}

struct FirstPacket {
    took: Duration,
    /// When both sandboxes had an address (the probing began).
    found: Duration,
    probes: u32,
    peers_before: usize,
}

struct NodeRss {
    host: String,
    daemon_kib: u64,
    device_kib: u64,
    peers: usize,
}

impl NodeRss {
    fn total_mib(&self) -> f64 {
        (self.daemon_kib + self.device_kib) as f64 / 1024.0
    }
}

/// Somewhere to run iperf3 and ping from: a network namespace and the
/// address it is reached at.
struct Place {
    netns: String,
    address: Ipv4Addr,
}

impl Place {
    fn host(node: &Node) -> Place {
        Place { netns: format!("/run/netns/{}", node.netns), address: node.address }
    }

    fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut command = Command::new("nsenter");
        command.arg(format!("--net={}", self.netns)).arg(program).args(args);
        command
    }

    fn run(&self, program: &str, args: &[&str], timeout: Duration) -> Output {
        interrupt::check();
        let mut full = vec![format!("--net={}", self.netns), program.to_string()];
        full.extend(args.iter().map(|a| a.to_string()));
        let out = run("nsenter", &full.iter().map(String::as_str).collect::<Vec<_>>(), timeout);
        // An interrupt kills the command: that is no failure to report.
        interrupt::check();
        out
    }

    /// The MTU of the task's eth0.
    fn mtu(&self) -> u32 {
        let out = self.run("ip", &["-o", "link", "show", "eth0"], Duration::from_secs(5)).ok();
        let words: Vec<&str> = out.stdout.split_whitespace().collect();
        words.windows(2).find(|w| w[0] == "mtu").and_then(|w| w[1].parse().ok()).unwrap_or_else(|| panic!("no MTU in {}", out.stdout))
    }

    fn warm_up(&self, to: &Place) {
        let target = to.address.to_string();
        poll(Duration::from_secs(20), &format!("{} to answer ping", to.address), || {
            self.run("ping", &["-n", "-c", "1", "-W", "1", &target], Duration::from_secs(5)).success().then_some(())
        });
    }

    /// Whether a SYN to `target` from here is answered (accepted or reset).
    fn answers(&self, target: SocketAddr) -> bool {
        let netns = self.netns.clone();
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&netns).ok()?;
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).ok()?;
            match TcpStream::connect_timeout(&target, Duration::from_millis(50)) {
                Ok(_) => Some(()),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Some(()),
                Err(_) => None,
            }
        })
        .join()
        .ok()
        .flatten()
        .is_some()
    }

    fn ping(&self, to: &Place) -> Latency {
        let (count, target) = (PINGS.to_string(), to.address.to_string());
        let out = self.run("ping", &["-n", "-c", &count, "-i", "0.01", "-W", "1", &target], Duration::from_secs(60));
        let mut rtts: Vec<f64> = out
            .stdout
            .lines()
            .filter_map(|l| l.split("time=").nth(1)?.split_whitespace().next()?.parse().ok())
            .collect();
        assert!(!rtts.is_empty(), "no ping from {} to {target} came back: {}{}", self.netns, out.stdout, out.stderr);
        rtts.sort_by(f64::total_cmp);
        // Nearest rank.
        let rank = |q: f64| rtts[((q * rtts.len() as f64).ceil() as usize).clamp(1, rtts.len()) - 1];
        Latency { median_ms: rank(0.5), p99_ms: rank(0.99), replies: rtts.len() }
    }
}

struct Latency {
    median_ms: f64,
    p99_ms: f64,
    replies: usize,
}

/// A kernel VXLAN between the two hosts' eth0, unencrypted, with the
/// overlay's MTU: the plain overlay the WireGuard one is measured against.
/// It lives in the hosts' namespaces, so the cluster's removal takes it
/// too; dropping removes it at once.
struct Vxlan<'a> {
    nodes: &'a [Node],
}

impl<'a> Vxlan<'a> {
    fn up(nodes: &'a [Node], mtu: u32) -> Vxlan<'a> {
        let vxlan = Vxlan { nodes };
        let mtu = mtu.to_string();
        for (side, node) in nodes.iter().enumerate() {
            let (local, remote) = (node.address.to_string(), nodes[1 - side].address.to_string());
            let place = Place::host(node);
            let address = format!("{}/24", Self::address(side));
            for args in [
                &["link", "add", VXLAN_LINK, "type", "vxlan", "id", VXLAN_ID, "local", &local, "remote", &remote, "dstport", "4789", "dev", "eth0"][..],
                &["link", "set", VXLAN_LINK, "mtu", &mtu, "up"],
                &["addr", "add", &address, "dev", VXLAN_LINK],
            ] {
                place.run("ip", args, Duration::from_secs(5)).ok();
            }
        }
        vxlan
    }

    fn address(side: usize) -> Ipv4Addr {
        Ipv4Addr::new(100, 64, 250, side as u8 + 1)
    }

    fn place(&self, nodes: &[Node], side: usize) -> Place {
        Place { netns: format!("/run/netns/{}", nodes[side].netns), address: Self::address(side) }
    }
}

impl Drop for Vxlan<'_> {
    fn drop(&mut self) {
        for node in self.nodes {
            let netns = format!("--net=/run/netns/{}", node.netns);
            let _ = run("nsenter", &[&netns, "ip", "link", "del", VXLAN_LINK], Duration::from_secs(5));
        }
    }
}

struct Transfer {
    bits_per_second: f64,
    bytes: u64,
    retransmits: u64,
}

impl Transfer {
    fn gbits(&self) -> f64 {
        self.bits_per_second / 1e9
    }
}

/// iperf3 TCP from `from` to a one-off server at `to`.
fn iperf(from: &Place, to: &Place, streams: u32) -> Transfer {
    let server_address = to.address.to_string();
    let port = IPERF_PORT.to_string();
    let server = ChildGuard::spawn(to.command("iperf3", &["-s", "-1", "-B", &server_address, "-p", &port]));
    poll(Duration::from_secs(10), "the iperf3 server to listen", || listening(server.pid(), IPERF_PORT).then_some(()));
    let (seconds, parallel) = (IPERF_SECONDS.to_string(), streams.to_string());
    let out = from.run(
        "iperf3",
        &["-c", &server_address, "-p", &port, "-t", &seconds, "-P", &parallel, "-J"],
        Duration::from_secs(u64::from(IPERF_SECONDS) + 30),
    );
    let report: serde_json::Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("iperf3 to {server_address} printed no JSON ({e}): {}{}", out.stdout, out.stderr));
    let end = &report["end"];
    let bits_per_second = end["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or_else(|| panic!("iperf3 to {server_address} failed: {}", report["error"]));
    drop(server);
    Transfer {
        bits_per_second,
        bytes: end["sum_received"]["bytes"].as_u64().unwrap_or(0),
        retransmits: end["sum_sent"]["retransmits"].as_u64().unwrap_or(0),
    }
}

/// Whether process `pid`'s network namespace has a TCP listener on `port`.
fn listening(pid: u32, port: u16) -> bool {
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap_or_default();
    let local = format!(":{port:04X}");
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.get(1).is_some_and(|a| a.ends_with(&local)) && fields.get(3) == Some(&"0A")
    })
}

/// A process of ours, killed when dropped if it is still running.
struct ChildGuard(Child);

impl ChildGuard {
    fn spawn(mut command: Command) -> ChildGuard {
        interrupt::check();
        let child = command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn();
        ChildGuard(child.unwrap_or_else(|e| panic!("starting {command:?}: {e}")))
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if !matches!(self.0.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn shoal(cluster: &Cluster, host: &str, args: &[&str]) -> Output {
    interrupt::check();
    let out = cluster.shoal(host, args);
    interrupt::check();
    out
}

/// Every 10 ms: the times measured here are a few hundred milliseconds.
#[track_caller]
fn poll<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let found = poll_quietly(timeout, || {
        interrupt::check();
        check()
    });
    found.unwrap_or_else(|| {
        interrupt::check();
        panic!("timed out after {timeout:?} waiting for {what}")
    })
}

/// Never unwinds, so guards may use it: an interrupt ends it with `None`.
fn poll_quietly<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    while !interrupt::requested() {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// The pid of `shoal __wireguard DEVICE ...`.
fn device_process(device: &str) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        args.windows(2).any(|w| w[0] == b"__wireguard" && w[1] == device.as_bytes()).then_some(pid)
    })
}

/// User + system CPU seconds of process `pid`, all its threads.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    // After the name: state is field 3, utime 14 and stime 15 (1-based).
    let ticks = |index: usize| fields.get(index - 3).and_then(|v| v.parse::<f64>().ok()).unwrap_or(f64::NAN);
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as f64;
    (ticks(14) + ticks(15)) / hz
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("process {pid} is gone (no VmRSS)"))
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}
