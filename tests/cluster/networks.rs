//! Overlay networks on a real 3-manager, 2-worker cluster: tasks on
//! different nodes talk over WireGuard, networks stay apart, the wire
//! carries only ciphertext, addresses are handed out once and given back,
//! and the mesh follows nodes that go and come. Traffic is sent from each
//! task's own network namespace with real clients (busybox ping, wget, nc;
//! tcpdump; wg).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::support::swarm::{Swarm, CONVERGE, HOSTS, MANAGERS, SLEEPER};
use crate::support::{run, wait_until, Output};
use crate::swarm_helpers::leader;

/// A busybox web server whose index names the task, so a reply proves
/// which task answered.
const SERVER: &[&str] = &["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www"];

#[derive(Debug, Clone, Deserialize)]
struct TaskJson {
    id: String,
    name: String,
    node: String,
    desired_state: String,
    current_state: String,
    error: String,
    networks: Vec<AddressJson>,
}

#[derive(Debug, Clone, Deserialize)]
struct AddressJson {
    network: String,
    address: String,
}

impl TaskJson {
    fn address_on(&self, network: &str) -> Ipv4Addr {
        let cidr = &self.networks.iter().find(|n| n.network == network).unwrap_or_else(|| panic!("{} is not on {network}: {self:?}", self.name)).address;
        cidr.split('/').next().and_then(|a| a.parse().ok()).unwrap_or_else(|| panic!("bad address {cidr}"))
    }
}

/// A running task and where to reach into its network namespace.
#[derive(Debug, Clone)]
struct Endpoint {
    task: TaskJson,
    /// /proc/PID/ns/net of the task's container process.
    netns: String,
}

fn tasks(swarm: &Swarm, service: &str) -> Vec<TaskJson> {
    swarm.shoal(&["service", "ps", service, "--format", "json"]).ok().stdout_json()
}

fn running(swarm: &Swarm, service: &str) -> Vec<TaskJson> {
    tasks(swarm, service).into_iter().filter(|t| t.desired_state == "running" && t.current_state.starts_with("running")).collect()
}

/// Whether exactly `n` tasks of `service` are wanted, all of them running.
fn all_wanted_running(swarm: &Swarm, service: &str, n: usize) -> bool {
    let all = tasks(swarm, service);
    let wanted: Vec<&TaskJson> = all.iter().filter(|t| t.desired_state == "running").collect();
    wanted.len() == n && wanted.iter().all(|t| t.current_state.starts_with("running"))
}

fn wait_running(swarm: &Swarm, service: &str, n: usize) -> Vec<TaskJson> {
    wait_until(CONVERGE, &format!("{n} running tasks of {service}"), || {
        let all = tasks(swarm, service);
        let wanted = all.iter().filter(|t| t.desired_state == "running").count();
        let running = running(swarm, service);
        (running.len() == n && wanted == n).then_some(running)
    })
}

/// The task's container process, from its node's daemon.
fn endpoint(swarm: &Swarm, task: &TaskJson) -> Endpoint {
    let containers: Vec<serde_json::Value> = swarm.cluster.shoal(&task.node, &["container", "ls", "--format", "json"]).ok().stdout_json();
    let id = containers
        .iter()
        .find(|c| c["labels"]["shoal.task.id"] == task.id.as_str())
        .and_then(|c| c["id"].as_str())
        .unwrap_or_else(|| panic!("no container for {} on {}: {containers:?}", task.name, task.node))
        .to_string();
    let inspect: serde_json::Value = swarm.cluster.shoal(&task.node, &["container", "inspect", &id]).ok().stdout_json();
    let pid = inspect[0]["state"]["pid"].as_i64().unwrap_or_else(|| panic!("container {id} has no pid: {inspect}"));
    Endpoint { task: task.clone(), netns: format!("/proc/{pid}/ns/net") }
}

impl Endpoint {
    /// Runs `command` inside the task's network namespace only (the host's
    /// binaries, the task's interfaces and routes).
    fn run(&self, command: &[&str], timeout: Duration) -> Output {
        let netns = format!("--net={}", self.netns);
        let mut args = vec![netns.as_str()];
        args.extend_from_slice(command);
        run("nsenter", &args, timeout)
    }

    fn pings(&self, address: Ipv4Addr) -> bool {
        let target = address.to_string();
        self.run(&["ping", "-c", "1", "-W", "2", &target], Duration::from_secs(5)).success()
    }

    /// Whether any of four pings 0.2 s apart gets a reply (within about
    /// 1.6 s): one lost packet on a loaded machine does not fail a check
    /// that has little time.
    fn pings_any(&self, address: Ipv4Addr) -> bool {
        let target = address.to_string();
        self.run(&["ping", "-c", "4", "-i", "0.2", "-W", "1", &target], Duration::from_secs(5)).success()
    }

    /// The page the server at `address` serves (HTTP status checked), if
    /// the TCP exchange works.
    fn fetch(&self, address: Ipv4Addr, path: &str) -> Option<String> {
        let url = format!("http://{address}/{path}");
        let out = self.run(&["curl", "-sf", "-m", "3", &url], Duration::from_secs(6));
        out.success().then_some(out.stdout)
    }

    /// Whether a TCP connection from the task reaches `address` in 2 s.
    fn connects(&self, address: SocketAddr) -> bool {
        let netns = self.netns.clone();
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&netns).ok()?;
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).ok()?;
            std::net::TcpStream::connect_timeout(&address, Duration::from_secs(2)).ok()
        })
        .join()
        .ok()
        .flatten()
        .is_some()
    }
}

fn endpoints(swarm: &Swarm, services: &[&str]) -> Vec<Endpoint> {
    services.iter().flat_map(|s| running(swarm, s)).map(|t| endpoint(swarm, &t)).collect()
}

/// `wg show <device> dump` on `host`: one line per peer after the device's.
fn wg_peers(swarm: &Swarm, host: &str) -> Vec<WgPeer> {
    let info: serde_json::Value = swarm.cluster.shoal(host, &["info", "--format", "json"]).ok().stdout_json();
    let node_id = info["node_id"].as_str().unwrap_or_else(|| panic!("info has no node id: {info}"));
    let device = format!("wgs-{}", &node_id[..11]);
    let out = swarm.cluster.exec(host, &["wg", "show", &device, "dump"]).ok();
    out.stdout
        .lines()
        .skip(1)
        .map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            WgPeer {
                endpoint: fields.get(2).unwrap_or(&"").to_string(),
                allowed_ips: fields.get(3).unwrap_or(&"").to_string(),
                latest_handshake: fields.get(4).and_then(|f| f.parse().ok()).unwrap_or(0),
            }
        })
        .collect()
}

#[derive(Debug)]
struct WgPeer {
    endpoint: String,
    allowed_ips: String,
    latest_handshake: u64,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[test]
fn tasks_on_an_overlay_reach_each_other_encrypted_and_nothing_else() {
    let swarm = Swarm::up("ovl");
    for args in [&["network", "create", "-d", "overlay", "front"][..], &["network", "create", "-d", "overlay", "other"], &[
        "network", "create", "-d", "overlay", "--internal", "closed",
    ]] {
        swarm.shoal(args).ok();
    }
    swarm.create("a", &["--replicas", "3", "--network", "front"], SERVER).ok();
    swarm.create("b", &["--replicas", "5", "--network", "front"], SERVER).ok();
    swarm.create("c", &["--replicas", "2", "--network", "other"], SERVER).ok();
    swarm.create("d", &["--replicas", "1", "--network", "closed"], SERVER).ok();
    let front = endpoints(&swarm, &["a", "b"]);
    assert_eq!(front.len(), 8);

    // Every task reaches every other, on its node and across nodes.
    let mut same_node_pairs = 0;
    for from in &front {
        for to in &front {
            let address = to.task.address_on("front");
            assert!(from.pings(address), "{} cannot ping {} ({address})", from.task.name, to.task.name);
            let page = from.fetch(address, "");
            assert!(page.is_some_and(|p| !p.trim().is_empty()), "{} gets no page from {}", from.task.name, to.task.name);
            if from.task.node == to.task.node && from.task.id != to.task.id {
                same_node_pairs += 1;
            }
        }
    }
    assert!(same_node_pairs > 0, "8 tasks on 5 nodes share a node somewhere");

    // Another network's tasks cannot reach them, in either direction.
    let other = endpoints(&swarm, &["c"]);
    for outsider in &other {
        for inside in &front {
            let address = inside.task.address_on("front");
            assert!(!outsider.pings(address), "{} on other pings {} on front", outsider.task.name, inside.task.name);
            assert!(outsider.fetch(address, "").is_none(), "{} on other fetches from {}", outsider.task.name, inside.task.name);
            assert!(!inside.pings(outsider.task.address_on("other")), "{} pings {}", inside.task.name, outsider.task.name);
        }
    }
    let nodes_of = |eps: &[Endpoint]| eps.iter().map(|e| e.task.node.clone()).collect::<BTreeSet<_>>();
    assert!(!nodes_of(&other).is_disjoint(&nodes_of(&front)), "isolation is checked on a shared node too");

    // The outside (a listener on the underlay bridge) is reached from a
    // normal network and not from an internal one.
    let bridge = Ipv4Addr::new(198, 18, swarm.cluster.subnet_index(), 254);
    let listener = TcpListener::bind((bridge, 0)).expect("a listener on the underlay bridge");
    let outside = listener.local_addr().expect("its address");
    assert!(front[0].connects(outside), "{} cannot reach {outside} outside", front[0].task.name);
    let closed = endpoints(&swarm, &["d"]);
    assert!(!closed[0].connects(outside), "the internal network's task reached {outside}");

    // The wire between nodes carries WireGuard only: capture on the
    // sender's underlay interface while a marker crosses to another node.
    let (from, to) = front
        .iter()
        .flat_map(|x| front.iter().map(move |y| (x, y)))
        .find(|(x, y)| x.task.node != y.task.node)
        .expect("two tasks on different nodes");
    let marker = format!("shoal-marker-{}", std::process::id());
    let capture = std::env::temp_dir().join(format!("shoal-capture-{}.pcap", std::process::id()));
    let capture_path = capture.display().to_string();
    let netns = swarm.cluster.host(&from.task.node).netns;
    let mut tcpdump = std::process::Command::new("nsenter")
        .args([&format!("--net=/run/netns/{netns}"), "tcpdump", "-i", "eth0", "-U", "-n", "-w", &capture_path, "not", "tcp", "port", "4242"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starting tcpdump");
    std::thread::sleep(Duration::from_millis(800));
    let url = format!("http://{}/{marker}", to.task.address_on("front"));
    let status = from.run(&["curl", "-s", "-m", "3", "-o", "/dev/null", "-w", "%{http_code}", &url], Duration::from_secs(6));
    assert_eq!(status.stdout, "404", "the request for the marker crossed to {} and was answered", to.task.name);
    std::thread::sleep(Duration::from_millis(300));
    let _ = tcpdump.kill();
    let _ = tcpdump.wait();
    let bytes = std::fs::read(&capture).expect("reading the capture");
    let listing = run("tcpdump", &["-r", &capture_path, "-n"], Duration::from_secs(10)).ok().stdout;
    let _ = std::fs::remove_file(&capture);
    assert!(listing.contains(".51820: UDP") || listing.contains(".51820 > "), "WireGuard UDP on the wire: {listing}");
    assert!(!bytes.windows(marker.len()).any(|w| w == marker.as_bytes()), "the marker crossed the wire in plaintext");

    // Every node has a peer for each other node (all serve `front`),
    // each with a recent handshake.
    for host in HOSTS {
        let peers = wg_peers(&swarm, host);
        assert_eq!(peers.len(), 4, "{host}: {peers:?}");
        assert!(peers.iter().all(|p| p.endpoint.ends_with(":51820") && !p.allowed_ips.is_empty()), "{host}: {peers:?}");
        let handshakes = peers.iter().filter(|p| now_secs().saturating_sub(p.latest_handshake) < 180).count();
        assert!(handshakes >= 1, "{host} shook hands with its peers: {peers:?}");
    }

    // The largest packet the network's MTU allows crosses nodes with DF set;
    // one byte more does not.
    let inspect: serde_json::Value = swarm.shoal(&["network", "inspect", "front"]).ok().stdout_json();
    let underlay_mtu = 1500;
    let mtu = match inspect[0]["mtu"].as_u64() {
        Some(0) | None => underlay_mtu - 60,
        Some(m) => m,
    };
    let target = to.task.address_on("front").to_string();
    let payload = (mtu - 28).to_string();
    let fits = from.run(&["ping", "-c", "1", "-W", "2", "-M", "do", "-s", &payload, &target], Duration::from_secs(5));
    assert!(fits.success(), "a {mtu}-byte packet with DF crosses: {}", fits.stderr);
    let too_big = (mtu - 27).to_string();
    let refused = from.run(&["ping", "-c", "1", "-W", "2", "-M", "do", "-s", &too_big, &target], Duration::from_secs(5));
    assert!(!refused.success(), "a packet above the MTU with DF must not pass");

    // network inspect lists each task with its node and address.
    let attachments = inspect[0]["attachments"].as_array().cloned().unwrap_or_default();
    for endpoint in &front {
        let address = format!("{}/24", endpoint.task.address_on("front"));
        assert!(
            attachments.iter().any(|a| a["kind"] == "task" && a["address"] == address.as_str() && a["node"] == endpoint.task.node.as_str()),
            "{} at {address} missing from {attachments:?}",
            endpoint.task.name
        );
    }
    assert_eq!(inspect[0]["nodes"].as_array().map(Vec::len), Some(5), "{inspect}");
}

#[test]
fn bad_network_input_is_one_sentence_and_writes_nothing() {
    let swarm = Swarm::up("badnet");
    swarm.shoal(&["network", "create", "-d", "overlay", "--subnet", "100.90.0.0/24", "taken"]).ok();
    swarm.create("user", &["--detach", "--network", "taken"], SLEEPER).ok();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["network", "create", "-d", "overlay", "--subnet", "100.90.0.128/25", "overlap"], "overlaps"),
        (vec!["network", "create", "-d", "overlay", "--subnet", "100.90.300.0/24", "badcidr"], "100.90.300.0/24"),
        (vec!["network", "create", "-d", "overlay", "--subnet", "100.91.0.0/24", "--gateway", "100.92.0.1", "badgw"], "100.92.0.1"),
        (vec!["network", "create", "-d", "overlay", "taken"], "taken"),
        (vec!["network", "create", "-d", "overlay", "-o", "mtu=1000", "tiny"], "1000"),
        (vec!["network", "rm", "taken"], "user"),
        (vec!["service", "create", "--detach", "--name", "lost", "--network", "nowhere", &swarm.image], "nowhere"),
        (vec!["run", "-d", "--network", "taken", &swarm.image, "true"], "not attachable"),
    ];
    // The run case pulls first; its progress is not part of the error.
    swarm.shoal(&["image", "pull", &swarm.image]).ok();
    for (args, named) in cases {
        let out = swarm.shoal(&args);
        assert!(!out.success(), "`{}` should fail", args.join(" "));
        let message = out.stderr.trim();
        assert!(message.contains(named), "`{}`: {message:?} should name {named:?}", args.join(" "));
        assert_eq!(message.lines().count(), 1, "one sentence: {message:?}");
    }
    // A pool that overlaps a route of the host is refused at init: a node
    // that left the swarm tries to start one whose pool covers its underlay.
    swarm.cluster.shoal("worker2", &["swarm", "leave"]).ok();
    let advertise = swarm.cluster.addr("worker2").to_string();
    let init = swarm.cluster.shoal("worker2", &["swarm", "init", "--advertise-addr", &advertise, "--default-addr-pool", "198.18.0.0/15"]);
    assert!(!init.success(), "init with an overlapping pool must fail");
    let message = init.stderr.trim();
    assert!(message.contains("198.18.0.0/15") && message.contains("overlaps"), "{message}");
    assert_eq!(message.lines().count(), 1, "one sentence: {message:?}");
    let info: serde_json::Value = swarm.cluster.shoal("worker2", &["info", "--format", "json"]).ok().stdout_json();
    assert_eq!(info["swarm"], "inactive", "nothing was written: {info}");

    let listed = swarm.shoal(&["network", "ls", "--format", "json"]).ok().stdout;
    for absent in ["overlap", "badcidr", "badgw", "tiny"] {
        assert!(!listed.contains(&format!("\"{absent}\"")), "{absent} was written: {listed}");
    }
    assert!(swarm.shoal(&["service", "ls"]).ok().stdout.lines().all(|l| !l.contains("lost")));
}

#[test]
fn addresses_are_handed_out_once_released_and_reused() {
    let swarm = Swarm::up("ipam");
    // A /29 holds five addresses, .2-.6 (.1 is the gateway): the
    // service's VIP takes one, four tasks the rest.
    swarm.shoal(&["network", "create", "-d", "overlay", "--subnet", "100.80.0.0/29", "small"]).ok();
    swarm.create("tiny", &["--detach", "--replicas", "10", "--network", "small"], SLEEPER).ok();
    let waiting = wait_until(CONVERGE, "4 running and 6 waiting tasks", || {
        let all = tasks(&swarm, "tiny");
        let new: Vec<TaskJson> = all.iter().filter(|t| t.current_state.starts_with("new")).cloned().collect();
        (running(&swarm, "tiny").len() == 4 && new.len() == 6).then_some(new)
    });
    assert!(waiting.iter().all(|t| t.error.contains("no free address on network small")), "{waiting:?}");
    let addresses = |tasks: &[TaskJson]| tasks.iter().map(|t| t.address_on("small")).collect::<BTreeSet<_>>();
    let first = addresses(&running(&swarm, "tiny"));
    assert_eq!(first.len(), 4);

    // Scaling down gives addresses back; scaling up takes them again.
    swarm.shoal(&["service", "scale", "--detach", "tiny=2"]).ok();
    wait_running(&swarm, "tiny", 2);
    swarm.shoal(&["service", "scale", "--detach", "tiny=4"]).ok();
    let again = addresses(&wait_running(&swarm, "tiny", 4));
    assert_eq!(again, first, "the same four addresses, reused");

    // Networks added to and removed from a service: its tasks are
    // replaced by ones on the new set (the replacements wait for the old
    // tasks' addresses on the full network).
    swarm.shoal(&["network", "create", "-d", "overlay", "big"]).ok();
    swarm.shoal(&["service", "update", "--detach", "--network-add", "big", "tiny"]).ok();
    let on_both = wait_until(CONVERGE, "tiny's tasks on small and big", || {
        let tasks = running(&swarm, "tiny");
        let wanted = tasks.len() == 4 && tasks.iter().all(|t| t.networks.len() == 2);
        let only_these = all_wanted_running(&swarm, "tiny", 4);
        (wanted && only_these).then_some(tasks)
    });
    assert!(on_both.iter().all(|t| t.networks[0].network == "small" && t.networks[1].network == "big"), "{on_both:?}");
    swarm.shoal(&["service", "update", "--detach", "--network-rm", "small", "tiny"]).ok();
    wait_until(CONVERGE, "tiny's tasks on big only", || {
        let tasks = running(&swarm, "tiny");
        (tasks.len() == 4 && tasks.iter().all(|t| t.networks.len() == 1 && t.networks[0].network == "big") && all_wanted_running(&swarm, "tiny", 4))
            .then_some(())
    });

    // A leader failover in the middle of a scale to 30 hands out 30
    // distinct addresses, and every task is reachable.
    swarm.create("many", &["--replicas", "2", "--network", "big"], SERVER).ok();
    let old_leader = leader(&swarm.cluster, &MANAGERS);
    let survivor = MANAGERS.iter().find(|m| **m != old_leader).copied().unwrap_or("manager1");
    swarm.cluster.shoal(survivor, &["service", "scale", "--detach", "many=30"]).ok();
    swarm.cluster.stop(&old_leader, true);
    let ps = |host: &str| -> Vec<TaskJson> {
        let out = swarm.cluster.shoal(host, &["service", "ps", "many", "--format", "json"]);
        if out.success() {
            out.stdout_json()
        } else {
            Vec::new()
        }
    };
    let many = wait_until(Duration::from_secs(120), "30 running tasks after the failover", || {
        let running: Vec<TaskJson> =
            ps(survivor).into_iter().filter(|t| t.desired_state == "running" && t.current_state.starts_with("running")).collect();
        (running.len() == 30).then_some(running)
    });
    let unique: BTreeSet<Ipv4Addr> = many.iter().map(|t| t.address_on("big")).collect();
    assert_eq!(unique.len(), 30, "30 tasks, 30 distinct addresses: {many:?}");
    // Reach every task from one on a live node (the old leader's daemon is
    // dead but its containers and WireGuard device still run).
    let probe = many.iter().find(|t| t.node == survivor).expect("a task on the surviving manager");
    let probe = Endpoint { netns: endpoint_on(&swarm, survivor, probe), task: probe.clone() };
    let unreachable: Vec<&str> = many.iter().filter(|t| !probe.pings(t.address_on("big"))).map(|t| t.name.as_str()).collect();
    assert!(unreachable.is_empty(), "unreachable from {}: {unreachable:?}", probe.task.name);
}

/// The netns of `task`'s container, asking the daemon of `host` (which must
/// be the task's node).
fn endpoint_on(swarm: &Swarm, host: &str, task: &TaskJson) -> String {
    let mut task = task.clone();
    task.node = host.to_string();
    endpoint(swarm, &task).netns
}

#[test]
fn the_mesh_follows_nodes_and_survives_a_daemon_restart() {
    let swarm = Swarm::up("mesh");
    swarm.shoal(&["network", "create", "-d", "overlay", "--attachable", "mesh"]).ok();
    swarm.create("web", &["--replicas", "5", "--replicas-max-per-node", "1", "--network", "mesh"], SERVER).ok();
    let all = wait_running(&swarm, "web", 5);
    assert_eq!(wg_peers(&swarm, "manager1").len(), 4);

    // A standalone container on an attachable overlay: it gets an address
    // from the managers, reaches tasks on other nodes and is reached, and
    // gives its address back when it goes.
    let remote = all.iter().find(|t| t.node != "manager1").expect("a task off manager1");
    let run = swarm.cluster.shoal("manager1", &["run", "-d", "--name", "probe", "--network", "mesh", &swarm.image, "httpd", "-f", "-p", "80"]).ok();
    let probe_id = run.stdout.trim().to_string();
    let inspect: serde_json::Value = swarm.cluster.shoal("manager1", &["container", "inspect", &probe_id]).ok().stdout_json();
    let pid = inspect[0]["state"]["pid"].as_i64().expect("the probe's pid");
    let probe = Endpoint { task: remote.clone(), netns: format!("/proc/{pid}/ns/net") };
    let remote_address = remote.address_on("mesh");
    wait_until(Duration::from_secs(5), "the probe to reach a task", || probe.pings(remote_address).then_some(()));
    let attachments: serde_json::Value = swarm.shoal(&["network", "inspect", "mesh"]).ok().stdout_json();
    let probe_address = attachments[0]["attachments"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["kind"] == "container" && a["name"] == "probe" && a["node"] == "manager1")
        .and_then(|a| a["address"].as_str())
        .and_then(|a| a.split('/').next())
        .and_then(|a| a.parse::<Ipv4Addr>().ok())
        .unwrap_or_else(|| panic!("the probe is not in network inspect: {attachments}"));
    let from_remote = endpoint(&swarm, remote);
    assert_eq!(from_remote.fetch(probe_address, "").map(|_| ()), None, "httpd has no index here");
    let status = from_remote.run(&["curl", "-s", "-m", "3", "-o", "/dev/null", "-w", "%{http_code}", &format!("http://{probe_address}/")], Duration::from_secs(6));
    assert_eq!(status.stdout, "404", "{} reaches the probe", remote.name);
    swarm.cluster.shoal("manager1", &["container", "rm", "-f", "probe"]).ok();
    wait_until(Duration::from_secs(10), "the probe's address to be given back", || {
        let inspect: serde_json::Value = swarm.shoal(&["network", "inspect", "mesh"]).ok().stdout_json();
        (!inspect.to_string().contains("\"probe\"")).then_some(())
    });

    // A node that goes down leaves its peers' lists; its task moves on.
    // (Its sessions with every other node are up first: the return from
    // the partition below is about sessions only one side remembers.)
    let on_worker2 = all.iter().find(|t| t.node == "worker2").map(|t| endpoint(&swarm, t)).expect("a web task on worker2");
    for other in all.iter().filter(|t| t.node != "worker2") {
        let what = format!("{} on worker2 to reach {} on {}", on_worker2.task.name, other.name, other.node);
        wait_until(Duration::from_secs(5), &what, || on_worker2.pings(other.address_on("mesh")).then_some(()));
    }
    let worker2_key = wg_peers(&swarm, "worker1").into_iter().map(|p| p.endpoint).collect::<BTreeSet<_>>();
    let worker2_endpoint = format!("{}:51820", swarm.cluster.addr("worker2"));
    assert!(worker2_key.contains(&worker2_endpoint));
    swarm.cluster.stop("worker2", true);
    swarm.cluster.partition("worker2");
    wait_until(Duration::from_secs(20), "worker2 to leave manager1's peers", || {
        (!wg_peers(&swarm, "manager1").iter().any(|p| p.endpoint == worker2_endpoint)).then_some(())
    });
    swarm.cluster.heal("worker2");
    swarm.cluster.start("worker2");

    // A node back from a partition talks at once. Its peers dropped it and
    // took it back with no session, while its own device kept the old
    // sessions: unless they greet it with a fresh handshake, what it sends
    // first is dropped as from an unknown session until WireGuard gives up
    // on it (15 s).
    let back = wait_running(&swarm, "web", 5);
    let on_worker2 = back.iter().find(|t| t.node == "worker2").map(|t| endpoint(&swarm, t)).expect("web's pending task placed on worker2");
    for other in back.iter().filter(|t| t.node != "worker2") {
        let what = format!("{} on worker2, back from a partition, to reach {} on {}", on_worker2.task.name, other.name, other.node);
        wait_until(Duration::from_secs(2), &what, || on_worker2.pings_any(other.address_on("mesh")).then_some(()));
    }
    swarm.shoal(&["service", "scale", "--detach", "web=4"]).ok();
    wait_running(&swarm, "web", 4);

    // A node that joins later gets the peers, and its task talks at once.
    let joined = swarm.cluster.add_worker();
    let on_joined = format!("node.hostname=={}", joined.name);
    swarm.create("late", &["--network", "mesh", "--constraint", &on_joined], SERVER).ok();
    let newcomer = endpoint(&swarm, &wait_running(&swarm, "late", 1)[0]);
    let tasks = wait_running(&swarm, "web", 4);
    let started = Instant::now();
    for other in &tasks {
        // The first packet to each peer waits for its WireGuard handshake.
        let what = format!("{} on {} to reach {}", newcomer.task.name, joined.name, other.name);
        wait_until(Duration::from_secs(5), &what, || newcomer.pings(other.address_on("mesh")).then_some(()));
    }
    eprintln!("the joined node's task reached 4 others in {:?}", started.elapsed());

    // kill -9 of a daemon: traffic between its task and others keeps
    // flowing (the WireGuard device outlives the daemon), and the
    // restarted daemon adopts everything without a duplicate.
    let victim = tasks.iter().find(|t| t.node.starts_with("worker")).unwrap_or(&tasks[0]).node.clone();
    let on_victim = tasks.iter().find(|t| t.node == victim).map(|t| endpoint(&swarm, t)).expect("a task on the victim");
    let peer = tasks.iter().find(|t| t.node != victim).expect("a task elsewhere").address_on("mesh");
    let inspect_before: serde_json::Value = swarm.shoal(&["network", "inspect", "mesh"]).ok().stdout_json();
    let links_before = swarm.cluster.exec(&victim, &["ip", "-o", "link"]).ok().stdout.lines().count();
    let routes_before = swarm.cluster.exec(&victim, &["ip", "route"]).ok().stdout;
    swarm.cluster.stop(&victim, true);
    // Well inside the 3 missed heartbeats after which the managers would
    // call the node down and move its task.
    wait_until(Duration::from_secs(2), &format!("traffic while {victim}'s daemon is down"), || on_victim.pings_any(peer).then_some(()));
    let restarted = Instant::now();
    swarm.cluster.start(&victim);
    let resumed = wait_until(Duration::from_secs(10), "traffic after the restart", || on_victim.pings(peer).then(|| restarted.elapsed()));
    eprintln!("after the restart, traffic flowed within {resumed:?}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(swarm.cluster.exec(&victim, &["ip", "-o", "link"]).ok().stdout.lines().count(), links_before, "no duplicate link");
    assert_eq!(swarm.cluster.exec(&victim, &["ip", "route"]).ok().stdout, routes_before, "routes unchanged");
    let peers = wg_peers(&swarm, &victim);
    let unique: BTreeSet<&str> = peers.iter().map(|p| p.endpoint.as_str()).collect();
    assert_eq!(unique.len(), peers.len(), "no duplicate peer: {peers:?}");
    let inspect_after: serde_json::Value = swarm.shoal(&["network", "inspect", "mesh"]).ok().stdout_json();
    let attachments = |v: &serde_json::Value| -> BTreeMap<String, String> {
        v[0]["attachments"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| (a["id"].as_str().unwrap_or("").to_string(), a["address"].as_str().unwrap_or("").to_string()))
            .collect()
    };
    assert_eq!(attachments(&inspect_after), attachments(&inspect_before), "network inspect unchanged");
    drop(all);
}
