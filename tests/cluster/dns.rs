//! The embedded DNS on a real 3-manager, 2-worker cluster, asked by a real
//! resolver client: `dig` (dnsutils) run on the host inside a task's or
//! container's network namespace (`nsenter --net=/proc/PID/ns/net dig
//! @127.0.0.11 ...`). Service VIPs, `tasks.`, SRV, PTR, scoping per
//! network, dnsrr, answers that follow scaling on every node within 1 s,
//! a partitioned worker that is right again within 1 s of healing,
//! forwarding with failover to an upstream the test runs on a namespace
//! host, bridge networks' container names and aliases, and a daemon
//! restart.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};


use crate::support::swarm::{Swarm, TaskRow, HOSTS, SLEEPER};
use crate::support::{in_netns, run, wait_until, Output};

/// A network namespace to ask from: a task's or a container's.
#[derive(Debug, Clone)]
struct Asker {
    what: String,
    /// /proc/PID/ns/net of its process.
    netns: String,
    pid: i64,
}

/// What dig got.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Dug {
    status: String,
    /// The answer section's data, sorted.
    answers: Vec<String>,
}

impl Asker {
    /// The container `container` (id or name) on `host`.
    fn container(swarm: &Swarm, host: &str, container: &str) -> Asker {
        let inspect: serde_json::Value = swarm.cluster.shoal(host, &["container", "inspect", container]).ok().stdout_json();
        let pid = inspect[0]["state"]["pid"].as_i64().unwrap_or_else(|| panic!("container {container} on {host} has no pid: {inspect}"));
        Asker { what: format!("{container} on {host}"), netns: format!("/proc/{pid}/ns/net"), pid }
    }

    fn task(swarm: &Swarm, task: &TaskRow) -> Asker {
        let containers: Vec<serde_json::Value> = swarm.cluster.shoal(&task.node, &["container", "ls", "--format", "json"]).ok().stdout_json();
        let id = containers
            .iter()
            .find(|c| c["labels"]["shoal.task.id"] == task.id.as_str())
            .and_then(|c| c["id"].as_str())
            .unwrap_or_else(|| panic!("no container for {} on {}", task.name, task.node))
            .to_string();
        let mut asker = Asker::container(swarm, &task.node, &id);
        asker.what = format!("{} on {}", task.name, task.node);
        asker
    }

    fn dig(&self, args: &[&str]) -> Dug {
        let net = format!("--net={}", self.netns);
        let mut full = vec![net.as_str(), "dig", "@127.0.0.11", "+tries=1", "+time=5", "+noall", "+comments", "+answer"];
        full.extend_from_slice(args);
        let out: Output = run("nsenter", &full, Duration::from_secs(12));
        let status = out
            .stdout
            .split("status: ")
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .map(str::to_string)
            .unwrap_or_else(|| format!("no answer: {} {}", out.stdout.trim(), out.stderr.trim()));
        let mut answers: Vec<String> = out
            .stdout
            .lines()
            .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
            .filter_map(|l| {
                let fields: Vec<&str> = l.split_whitespace().collect();
                (fields.len() >= 5).then(|| fields[4..].join(" "))
            })
            .collect();
        answers.sort();
        Dug { status, answers }
    }

    fn addresses(&self, name: &str) -> Vec<String> {
        let dug = self.dig(&[name]);
        assert_eq!(dug.status, "NOERROR", "{} asking {name}: {dug:?}", self.what);
        dug.answers
    }

    /// The container's /etc/resolv.conf, as it sees it.
    fn resolv_conf(&self) -> String {
        std::fs::read_to_string(format!("/proc/{}/root/etc/resolv.conf", self.pid)).unwrap_or_else(|e| panic!("{}: {e}", self.what))
    }
}

/// As text, sorted as text: the order [`Asker::dig`] gives its answers in.
fn sorted(addresses: impl IntoIterator<Item = Ipv4Addr>) -> Vec<String> {
    let set: BTreeSet<String> = addresses.into_iter().map(|a| a.to_string()).collect();
    set.into_iter().collect()
}

/// The service's VIP on `network`, from `service inspect --pretty`.
fn vip(swarm: &Swarm, service: &str, network: &str) -> Option<Ipv4Addr> {
    let pretty = swarm.shoal(&["service", "inspect", "--pretty", service]).ok().stdout;
    let vips = pretty.split("VirtualIPs:").nth(1)?;
    vips.lines()
        .skip(1)
        .take_while(|l| l.starts_with(' '))
        .find(|l| l.split_whitespace().next().map(|k| k.trim_end_matches(':')) == Some(network))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|a| a.split('/').next()?.parse().ok())
}

#[test]
fn service_names_resolve_per_network_and_follow_changes_on_every_node() {
    let swarm = Swarm::up("dns");
    swarm.shoal(&["network", "create", "-d", "overlay", "--attachable", "front"]).ok();
    swarm.shoal(&["network", "create", "-d", "overlay", "back"]).ok();
    // web on the managers, the client on worker1: asked across nodes.
    swarm
        .create("web", &["--detach", "--replicas", "3", "--network", "front", "-p", "8080:80", "--constraint", "node.role==manager"], SLEEPER)
        .ok();
    swarm.create("rr", &["--detach", "--replicas", "2", "--endpoint-mode", "dnsrr", "--network", "front"], SLEEPER).ok();
    // db is on back only, with a task on worker1 so worker1 knows the name.
    swarm.create("db", &["--detach", "--network", "back", "--constraint", "node.hostname==worker1"], SLEEPER).ok();
    swarm.create("client", &["--detach", "--network", "front", "--constraint", "node.hostname==worker1"], SLEEPER).ok();
    // A prober on every node, for answers everywhere.
    swarm.create("probe", &["--detach", "--mode", "global", "--network", "front"], SLEEPER).ok();
    let web = swarm.wait_running("web", 3);
    let rr = swarm.wait_running("rr", 2);
    swarm.wait_running("db", 1);
    let client = Asker::task(&swarm, &swarm.wait_running("client", 1)[0]);
    let probes: Vec<Asker> = swarm.wait_running("probe", HOSTS.len()).iter().map(|t| Asker::task(&swarm, t)).collect();

    // The container's resolver is ours.
    let resolv_conf = client.resolv_conf();
    assert!(resolv_conf.lines().any(|l| l == "nameserver 127.0.0.11"), "{resolv_conf}");
    assert!(resolv_conf.lines().any(|l| l.starts_with("options") && l.contains("ndots:0")), "{resolv_conf}");

    // SERVICE: its VIP on the client's network; tasks.SERVICE: each task.
    let web_vip = vip(&swarm, "web", "front").expect("web has a VIP on front");
    assert_eq!(client.addresses("web"), [web_vip.to_string()]);
    let web_tasks = sorted(web.iter().map(|t| t.address_on("front")));
    assert_eq!(client.addresses("tasks.web"), web_tasks);
    // A task's name, and its address back to its name.
    let first = &web[0];
    let first_name = format!("{}.{}", first.name, first.id);
    assert_eq!(client.addresses(&first_name), [first.address_on("front").to_string()]);
    let ptr = client.dig(&["-x", &first.address_on("front").to_string()]);
    assert_eq!(ptr.answers, [format!("{first_name}.")], "{ptr:?}");
    // SRV for the published port's target: the VIP's name, or each task.
    let srv = client.dig(&["_80._tcp.web", "SRV"]);
    assert_eq!(srv.answers, ["0 0 80 web."], "{srv:?}");
    let srv_tasks = client.dig(&["_80._tcp.tasks.web", "SRV"]);
    assert_eq!(srv_tasks.answers.len(), 3, "{srv_tasks:?}");
    assert!(web.iter().all(|t| srv_tasks.answers.contains(&format!("0 0 80 {}.{}.", t.name, t.id))), "{srv_tasks:?}");
    // Over TCP too.
    assert_eq!(client.dig(&["+tcp", "tasks.web"]).answers, web_tasks);
    // A service on a network the client is not on does not exist for it.
    let db = client.dig(&["db"]);
    assert_eq!((db.status.as_str(), db.answers.len()), ("NXDOMAIN", 0), "{db:?}");
    assert_eq!(client.dig(&["tasks.db"]).status, "NXDOMAIN");

    // dnsrr: the name gives the tasks' addresses, and there is no VIP.
    assert_eq!(vip(&swarm, "rr", "front"), None, "a dnsrr service has no VIP");
    assert_eq!(client.addresses("rr"), sorted(rr.iter().map(|t| t.address_on("front"))));

    // Scale 3 -> 1: within 1 s every node answers with the one task left.
    for probe in &probes {
        assert_eq!(probe.addresses("tasks.web"), web_tasks, "{} before scaling", probe.what);
    }
    swarm.shoal(&["service", "scale", "--detach", "web=1"]).ok();
    let scaled = Instant::now();
    let mut converged = Vec::new();
    for probe in &probes {
        let took = wait_until(Duration::from_secs(10), &format!("{} to see one web task", probe.what), || {
            (probe.dig(&["tasks.web"]).answers.len() == 1).then(|| scaled.elapsed())
        });
        converged.push((probe.what.clone(), took));
    }
    eprintln!("tasks.web had one record on every node after: {converged:?}");
    assert!(converged.iter().all(|(_, took)| *took < Duration::from_secs(1)), "within 1 s on every node: {converged:?}");
    let left = swarm.wait_running("web", 1);
    assert_eq!(client.addresses("tasks.web"), [left[0].address_on("front").to_string()]);

    // A partitioned worker: changes made meanwhile reach its answers within
    // 1 s of healing. A standalone container on worker2 asks (the managers
    // leave it alone while the node is away).
    swarm.cluster.shoal("worker2", &["run", "-d", "--name", "away", "--network", "front", &swarm.image, "sleep", "100000"]).ok();
    let away = Asker::container(&swarm, "worker2", "away");
    wait_until(Duration::from_secs(5), "worker2's container to see web", || (away.addresses("tasks.web").len() == 1).then_some(()));
    swarm.cluster.partition("worker2");
    wait_until(Duration::from_secs(30), "worker2 to be down", || {
        let nodes: Vec<serde_json::Value> = swarm.shoal(&["node", "ls", "--format", "json"]).ok().stdout_json();
        nodes.iter().any(|n| n["hostname"] == "worker2" && n["status"] == "down").then_some(())
    });
    swarm.shoal(&["service", "scale", "--detach", "web=3"]).ok();
    let expected = sorted(swarm.wait_running("web", 3).iter().map(|t| t.address_on("front")));
    swarm.cluster.heal("worker2");
    let healed = Instant::now();
    let took = wait_until(Duration::from_secs(20), "worker2's answers to be right after healing", || {
        (away.dig(&["tasks.web"]).answers == expected).then(|| healed.elapsed())
    });
    eprintln!("worker2 answered right {took:?} after healing");
    assert!(took < Duration::from_secs(1), "worker2's answers were right only {took:?} after healing");
    swarm.cluster.shoal("worker2", &["container", "rm", "-f", "away"]).ok();
}

/// A tiny upstream DNS server on a namespace host: every A question gets
/// `answer`; it stops when dropped.
struct Upstream {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Upstream {
    fn start(netns: &str, address: Ipv4Addr, answer: Ipv4Addr) -> Upstream {
        let socket = in_netns(netns, move || UdpSocket::bind((address, 53))).expect("binding the upstream in the host's namespace");
        socket.set_read_timeout(Some(Duration::from_millis(100))).expect("a read timeout");
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buffer = [0u8; 1500];
            while !stopping.load(Ordering::SeqCst) {
                let Ok((n, from)) = socket.recv_from(&mut buffer) else { continue };
                if let Some(reply) = a_reply(&buffer[..n], answer) {
                    let _ = socket.send_to(&reply, from);
                }
            }
        });
        Upstream { stop, thread: Some(thread) }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The reply to a one-question query: the question, and one A record
/// pointing back at it (0xc00c) when it asks for A.
fn a_reply(query: &[u8], answer: Ipv4Addr) -> Option<Vec<u8>> {
    if query.len() < 12 || u16::from_be_bytes([query[4], query[5]]) != 1 {
        return None;
    }
    // The question: labels up to the root, then type and class.
    let mut end = 12;
    while *query.get(end)? != 0 {
        end += 1 + usize::from(query[end]);
    }
    let question_end = end + 5;
    let qtype = u16::from_be_bytes([*query.get(end + 1)?, *query.get(end + 2)?]);
    let mut reply = query.get(..question_end)?.to_vec();
    // A response (QR), RD as asked; recursion available, no error.
    reply[2] = 0x80 | (query[2] & 0x01);
    reply[3] = 0x80;
    let answers: u16 = if qtype == 1 { 1 } else { 0 };
    reply[6..8].copy_from_slice(&answers.to_be_bytes());
    reply[8..12].fill(0);
    if qtype == 1 {
        reply.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4]);
        reply.extend_from_slice(&answer.octets());
    }
    Some(reply)
}

#[test]
fn names_outside_the_swarm_go_upstream_and_bridge_networks_have_names() {
    let swarm = Swarm::up("dnsfwd");
    // The upstream listens on manager3's underlay address; the first
    // upstream given is an address of the underlay nobody has.
    let upstream_address = swarm.cluster.addr("manager3");
    let _upstream = Upstream::start(&swarm.cluster.host("manager3").netns, upstream_address, Ipv4Addr::new(198, 18, 0, 99));
    let dead = Ipv4Addr::new(198, 18, swarm.cluster.subnet_index(), 250).to_string();
    let live = upstream_address.to_string();
    swarm.shoal(&["network", "create", "-d", "overlay", "--attachable", "front"]).ok();
    swarm
        .create(
            "asker",
            &["--detach", "--network", "front", "--constraint", "node.hostname==worker1", "--dns", &dead, "--dns", &live, "--dns-search", "example.test"],
            SLEEPER,
        )
        .ok();
    let asker = Asker::task(&swarm, &swarm.wait_running("asker", 1)[0]);
    let resolv_conf = asker.resolv_conf();
    assert!(resolv_conf.lines().any(|l| l == "search example.test"), "{resolv_conf}");
    assert!(!resolv_conf.contains(&live), "the container asks us, not the upstream: {resolv_conf}");

    // The dead upstream costs one timeout, then the live one answers; the
    // next name goes to the live one first.
    let outside = asker.dig(&["outside.shoal-test."]);
    assert_eq!((outside.status.as_str(), outside.answers.clone()), ("NOERROR", vec!["198.18.0.99".to_string()]), "{outside:?}");
    let started = Instant::now();
    assert_eq!(asker.addresses("again.shoal-test."), ["198.18.0.99"]);
    assert!(started.elapsed() < Duration::from_millis(900), "the dead upstream is asked last now: {:?}", started.elapsed());

    // Bridge networks on worker1: containers find each other by name and
    // by network alias, on their network only.
    let on_worker1 = |args: &[&str]| swarm.cluster.shoal("worker1", args).ok();
    on_worker1(&["network", "create", "-d", "bridge", "lan"]);
    on_worker1(&["network", "create", "-d", "bridge", "other"]);
    on_worker1(&["run", "-d", "--name", "alpha", "--network", "lan", "--network-alias", "cache", &swarm.image, "sleep", "100000"]);
    on_worker1(&["run", "-d", "--name", "beta", "--network", "lan", &swarm.image, "sleep", "100000"]);
    on_worker1(&["run", "-d", "--name", "gamma", "--network", "other", &swarm.image, "sleep", "100000"]);
    let inspect: serde_json::Value = swarm.cluster.shoal("worker1", &["container", "inspect", "alpha"]).ok().stdout_json();
    let alpha = inspect[0]["network_settings"]["networks"]["lan"]["ip_address"].as_str().expect("alpha's address on lan").to_string();
    let beta = Asker::container(&swarm, "worker1", "beta");
    assert_eq!(beta.addresses("alpha"), [alpha.clone()]);
    assert_eq!(beta.addresses("cache"), [alpha.clone()]);
    let gamma = Asker::container(&swarm, "worker1", "gamma");
    assert_eq!(gamma.dig(&["alpha"]).status, "NXDOMAIN", "alpha is not on gamma's network");
    // A rename: the new name answers, the old one no longer does.
    on_worker1(&["container", "rename", "gamma", "delta"]);
    on_worker1(&["network", "connect", "lan", "delta"]);
    wait_until(Duration::from_secs(10), "the renamed container's new name", || (!beta.addresses("delta").is_empty()).then_some(()));
    let old_name = beta.dig(&["gamma"]);
    assert!(old_name.answers.is_empty() && old_name.status != "NOERROR", "the old name is gone: {old_name:?}");
    on_worker1(&["container", "rename", "delta", "gamma"]);

    // A daemon restart: adopted tasks and containers are served again.
    swarm.cluster.stop("worker1", true);
    swarm.cluster.start("worker1");
    let resumed = Instant::now();
    wait_until(Duration::from_secs(20), "beta to resolve again after the restart", || (beta.dig(&["alpha"]).answers == [alpha.clone()]).then_some(()));
    wait_until(Duration::from_secs(20), "the task to resolve again after the restart", || {
        (asker.dig(&["outside.shoal-test."]).answers == ["198.18.0.99"]).then_some(())
    });
    eprintln!("names resolved again {:?} after the daemon restart", resumed.elapsed());
    for container in ["alpha", "beta", "gamma"] {
        swarm.cluster.shoal("worker1", &["container", "rm", "-f", container]).ok();
    }
}
