//! Service load balancing on a real dev cluster (1 manager + 2 workers,
//! each a network-namespace host), with the plain paths as the yardstick
//! in the same run (`cargo bench -p shoal-cli --bench service_lb`; needs
//! root, wrk, nft, nsenter, docker-registry and busybox-static):
//!
//! 1. VIP: wrk (HTTP to busybox httpd) from a task on manager1 through
//!    web's VIP, balanced over its tasks on worker1 and worker2, against
//!    wrk straight to one task's address. Target: >= 0.9x.
//! 2. Routing mesh: wrk from the root namespace to worker2:8080, a node
//!    with no task of the service (DNAT + SNAT there, then the encrypted
//!    overlay to the task on worker1), against wrk from worker2 itself
//!    straight to the task's ingress address over the same overlay.
//! 3. VIP convergence: from a task leaving running to the VIP no longer
//!    routing to it on every node (each node's `vip-*` chain watched with
//!    `nft monitor`): a task killed with SIGKILL (from the kill), and a
//!    scale down (from the `service scale` call). Target: < 100 ms.
//!
//! Everything it makes lives in the dev cluster, removed at the end, on a
//! panic and on SIGINT/SIGTERM/SIGHUP. Not a test: never run in CI.

#[path = "../../../tests/cluster/support/mod.rs"]
mod support;
#[path = "overlay/interrupt.rs"]
mod interrupt;
#[path = "service_lb/dns_watch.rs"]
mod dns_watch;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use shoal_runtime::testing::{TestImages, TestRegistry};
use support::{run, swarm_helpers, Cluster, Output};

const TAG: &str = "blb";
const HOSTS: [&str; 3] = ["manager1", "worker1", "worker2"];
const WRK_SECONDS: &str = "8s";
const WRK_CONNECTIONS: &str = "16";
const CONVERGENCE_RUNS: usize = 5;
const VIP_RATIO_TARGET: f64 = 0.9;
const CONVERGENCE_TARGET_MS: f64 = 100.0;
const SERVER: &[&str] = &["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www"];
const SLEEPER: &[&str] = &["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"];

fn main() {
    let missing: Vec<&str> = ["wrk", "nft", "nsenter"].into_iter().filter(|p| !on_path(p)).collect();
    if !nix::unistd::geteuid().is_root() || !missing.is_empty() {
        eprintln!("service_lb bench: skipped (needs root and {missing:?} on PATH)");
        return;
    }
    interrupt::run_measured(TAG, measure, Report::print);
}

struct Report {
    vip: f64,
    direct: f64,
    mesh: f64,
    mesh_direct: f64,
    /// Per run: (the last node's time, each node's) in ms.
    killed: Vec<(f64, Vec<f64>)>,
    scaled: Vec<(f64, Vec<f64>)>,
    /// Per run: the last node's DNS dropping the task, in ms.
    killed_dns: Vec<f64>,
    scaled_dns: Vec<f64>,
    /// How long each node's firewall apply took during the convergence
    /// runs (from the daemons' logs): the data plane's share.
    apply_ms: Vec<f64>,
}

impl Report {
    fn print(&self, load_before: &str, load_after: &str) {
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
        println!();
        println!("service load balancing (loadavg before {load_before}, after {load_after})");
        println!("{:<62} {:>12}", "path", "requests/s");
        println!("{:<62} {:>12.0}", "ours: task -> VIP (2 tasks on 2 other nodes)", self.vip);
        println!("{:<62} {:>12.0}", "yardstick: task -> one task's address (other node)", self.direct);
        println!("  VIP / direct: {:.2}x (target >= {VIP_RATIO_TARGET}x)", ratio(self.vip, self.direct));
        println!("{:<62} {:>12.0}", "ours: outside -> worker2:8080 (no task there; mesh)", self.mesh);
        println!("{:<62} {:>12.0}", "yardstick: worker2 -> the task's ingress address", self.mesh_direct);
        println!("  mesh / direct: {:.2}x", ratio(self.mesh, self.mesh_direct));
        for (what, runs) in [("task killed (SIGKILL)", &self.killed), ("scale down (service scale)", &self.scaled)] {
            let mut last: Vec<f64> = runs.iter().map(|r| r.0).collect();
            last.sort_by(f64::total_cmp);
            println!(
                "VIP convergence, {what}, last of 3 nodes, {} runs: median {:.0} ms, max {:.0} ms (target < {CONVERGENCE_TARGET_MS} ms); runs {:?}",
                runs.len(),
                last.get(last.len() / 2).copied().unwrap_or(f64::NAN),
                last.last().copied().unwrap_or(f64::NAN),
                runs.iter().map(|r| r.1.iter().map(|ms| ms.round()).collect::<Vec<_>>()).collect::<Vec<_>>()
            );
        }
        for (what, runs) in [("task killed (SIGKILL)", &self.killed_dns), ("scale down (service scale)", &self.scaled_dns)] {
            let mut last = runs.clone();
            last.sort_by(f64::total_cmp);
            println!(
                "DNS convergence (tasks.conv), {what}, last of 3 nodes, {} runs: median {:.0} ms, max {:.0} ms (target < {CONVERGENCE_TARGET_MS} ms); runs {:?}",
                runs.len(),
                last.get(last.len() / 2).copied().unwrap_or(f64::NAN),
                last.last().copied().unwrap_or(f64::NAN),
                runs.iter().map(|ms| ms.round()).collect::<Vec<_>>()
            );
        }
        let mut apply = self.apply_ms.clone();
        apply.sort_by(f64::total_cmp);
        println!(
            "  of which the nodes' firewall applies ({} of them): median {:.0} ms, p90 {:.0} ms",
            apply.len(),
            apply.get(apply.len() / 2).copied().unwrap_or(f64::NAN),
            apply.get(apply.len() * 9 / 10).copied().unwrap_or(f64::NAN)
        );
        println!("(Swarm: at least a 2 s gossip delay, moby#31142; its IPVS keeps stale entries, moby#33790)");
    }
}

fn measure() -> Report {
    let images = TestImages::shared().expect("building the test images");
    let guard = interrupt::ClusterGuard(Some(Cluster::up(TAG, 1, 2)));
    let cluster = guard.get();
    let bridge = Ipv4Addr::new(198, 18, cluster.subnet_index(), 254);
    let port = TcpListener::bind((bridge, 0)).and_then(|l| l.local_addr()).expect("a free port on the bridge").port();
    let registry = TestRegistry::start_at(SocketAddr::from((bridge, port))).expect("starting docker-registry");
    let image = registry.push(&images.layout, TestImages::BUSYBOX, "busybox", "1").expect("pushing busybox").reference;
    swarm_helpers::wait_all_ready(cluster, "manager1", HOSTS.len());
    let b = Bench { cluster, image: &image };

    // 1. VIP vs one task straight.
    b.shoal(&["network", "create", "-d", "overlay", "front"]);
    b.service("client", &["--network", "front", "--constraint", "node.hostname==manager1"], SLEEPER);
    b.service("web", &["--replicas", "2", "--replicas-max-per-node", "1", "--network", "front", "--constraint", "node.role==worker"], SERVER);
    let client = b.tasks("client", 1).remove(0);
    let web = b.tasks("web", 2);
    let vip = b.vip("front", "web");
    let client_ns = b.sandbox(&client);
    let vip_url = format!("http://{vip}/");
    let direct_url = format!("http://{}/", web[0].address_on("front"));
    wrk(&client_ns, &direct_url, "2s");
    let direct = wrk(&client_ns, &direct_url, WRK_SECONDS);
    let vip_rate = wrk(&client_ns, &vip_url, WRK_SECONDS);
    eprintln!("VIP {vip_rate:.0} req/s, direct {direct:.0} req/s");

    // 2. Routing mesh on a node without the task vs that node's own path.
    b.service("pub", &["-p", "8080:80", "--constraint", "node.hostname==worker1"], SERVER);
    let published = b.tasks("pub", 1).remove(0);
    let mesh_url = format!("http://{}:8080/", cluster.addr("worker2"));
    poll(Duration::from_secs(10), "worker2:8080 to answer", || run("curl", &["-sf", "-m", "1", &mesh_url], Duration::from_secs(3)).success().then_some(()));
    let worker2_ns = format!("/run/netns/{}", cluster.host("worker2").netns);
    let ingress_url = format!("http://{}/", published.address_on("ingress"));
    let mesh = wrk("", &mesh_url, WRK_SECONDS);
    let mesh_direct = wrk(&worker2_ns, &ingress_url, WRK_SECONDS);
    eprintln!("mesh {mesh:.0} req/s, direct from worker2 {mesh_direct:.0} req/s");

    // 3. Convergence on every node. DNS is asked from the client's and
    // web's sandboxes: one on each node, and none of them goes away.
    b.service("conv", &["--replicas", "3", "--replicas-max-per-node", "1", "--network", "front"], SLEEPER);
    let vantage: Vec<PathBuf> = std::iter::once(&client).chain(web.iter()).map(|t| PathBuf::from(b.sandbox(t))).collect();
    let (mut killed, mut killed_dns) = (Vec::new(), Vec::new());
    let (mut scaled, mut scaled_dns) = (Vec::new(), Vec::new());
    let convergence_started = std::time::SystemTime::now();
    for run_index in 0..CONVERGENCE_RUNS {
        let tasks = b.tasks("conv", 3);
        let vip = b.vip("front", "conv");
        let victim = &tasks[run_index % tasks.len()];
        let backend = victim.address_on("front");
        let pid = b.pid(victim);
        let all: Vec<Ipv4Addr> = tasks.iter().map(|t| t.address_on("front")).collect();
        let (result, dns) = converge(cluster, vip, &[backend], &vantage, &all, || {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).expect("killing the task");
        });
        eprintln!("kill run {run_index}: VIP {result:?}, DNS {dns:.0} ms");
        killed.push(result);
        killed_dns.push(dns);
        b.tasks("conv", 3);
    }
    for run_index in 0..CONVERGENCE_RUNS {
        let tasks = b.tasks("conv", 3);
        let vip = b.vip("front", "conv");
        let backends: Vec<Ipv4Addr> = tasks.iter().map(|t| t.address_on("front")).collect();
        // Which of the three goes is the orchestrator's choice: wait for
        // any backend to leave on every node.
        let (result, dns) = converge(cluster, vip, &backends, &vantage, &backends, || {
            b.shoal(&["service", "scale", "--detach", "conv=2"]);
        });
        eprintln!("scale run {run_index}: VIP {result:?}, DNS {dns:.0} ms");
        scaled.push(result);
        scaled_dns.push(dns);
        b.shoal(&["service", "scale", "--detach", "conv=3"]);
    }
    let apply_ms = firewall_apply_ms(cluster, convergence_started);
    drop(registry);
    Report { vip: vip_rate, direct, mesh, mesh_direct, killed, scaled, killed_dns, scaled_dns, apply_ms }
}

/// Runs `act` and times, on every node, the VIP no longer routing to one
/// of `backends` ([`vip_converge`]: the last node's ms and each node's) and
/// `tasks.conv` from the `dns` sandboxes no longer giving one of `tasks`
/// (the last sandbox's ms).
fn converge(cluster: &Cluster, vip: Ipv4Addr, backends: &[Ipv4Addr], dns: &[PathBuf], tasks: &[Ipv4Addr], act: impl FnOnce()) -> ((f64, Vec<f64>), f64) {
    const NAME: &str = "tasks.conv";
    for sandbox in dns {
        dns_watch::wait_for_all(sandbox, NAME, tasks, Duration::from_secs(10));
    }
    let started = Arc::new(OnceLock::new());
    let watches: Vec<_> = dns
        .iter()
        .map(|sandbox| dns_watch::until_one_leaves(sandbox.clone(), NAME.to_string(), tasks.to_vec(), started.clone(), Duration::from_secs(20)))
        .collect();
    let vip = vip_converge(cluster, vip, backends, &started, act);
    let dns_last = watches
        .into_iter()
        .map(|w| w.join().expect("a DNS watch").expect("a node's DNS never dropped the task").as_secs_f64() * 1e3)
        .fold(0.0, f64::max);
    (vip, dns_last)
}

/// Runs `act`, then times each node until its chain for `vip` lost any
/// one of `backends` (ms since `act`, whose start goes into `started`),
/// and the last node.
///
/// Each node is watched with `nft monitor rules` in its namespace, started
/// before `act`: the time is when the node's kernel reported a rule of the
/// VIP's chain without the backend. Polling `nft list` instead kept both
/// cores busy with nft processes and slowed the very daemons it timed.
fn vip_converge(cluster: &Cluster, vip: Ipv4Addr, backends: &[Ipv4Addr], started: &Arc<OnceLock<Instant>>, act: impl FnOnce()) -> (f64, Vec<f64>) {
    use std::io::BufRead;
    use std::process::{Command, Stdio};

    let chain = format!("vip-{}", vip.to_string().replace('.', "-"));
    let namespaces: Vec<String> = HOSTS.iter().map(|h| format!("--net=/run/netns/{}", cluster.host(h).netns)).collect();
    // Every address in the chain (its backends, and the VIP in the comment).
    let addresses = |text: &str| -> std::collections::BTreeSet<Ipv4Addr> {
        text.split(|c: char| !(c.is_ascii_digit() || c == '.')).filter_map(|word| word.parse().ok()).collect()
    };
    for ns in &namespaces {
        let rules = addresses(&run("nsenter", &[ns, "nft", "list", "chain", "ip", "shoal-nat", &chain], Duration::from_secs(5)).stdout);
        assert!(backends.iter().all(|b| rules.contains(b)), "{chain} lacks a backend before the run: {rules:?}");
    }
    let mut monitors: Vec<std::process::Child> = namespaces
        .iter()
        .map(|ns| {
            Command::new("nsenter")
                .args([ns.as_str(), "nft", "monitor", "rules"])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("nft monitor")
        })
        .collect();
    // nft monitor gives no sign that it listens; it does well within this.
    std::thread::sleep(Duration::from_millis(200));
    let started = *started.get_or_init(Instant::now);
    let (sender, receiver) = std::sync::mpsc::channel();
    for (node, monitor) in monitors.iter_mut().enumerate() {
        let stdout = monitor.stdout.take().expect("piped");
        let (sender, chain) = (sender.clone(), chain.clone());
        let backends = backends.to_vec();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                let rule_of_chain = line.starts_with("add rule ip shoal-nat ") && line.contains(&format!(" {chain} ")) && line.contains("dnat");
                if rule_of_chain && backends.iter().any(|b| !addresses(&line).contains(b)) {
                    let _ = sender.send((node, started.elapsed()));
                    return;
                }
            }
        });
    }
    drop(sender);
    act();
    let mut times = vec![f64::NAN; namespaces.len()];
    let deadline = Instant::now() + Duration::from_secs(20);
    for _ in 0..namespaces.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        match receiver.recv_timeout(left) {
            Ok((node, took)) => times[node] = took.as_secs_f64() * 1e3,
            Err(_) => break,
        }
    }
    for monitor in &mut monitors {
        let _ = monitor.kill();
        let _ = monitor.wait();
    }
    assert!(times.iter().all(|t| t.is_finite()), "a node never dropped the backend from {chain}: {times:?}");
    let last = times.iter().copied().fold(0.0, f64::max);
    (last, times)
}

/// `elapsed_ms` of every "firewall applied" line the daemons logged since
/// `since` (their logs' RFC 3339 timestamps compare as text).
fn firewall_apply_ms(cluster: &Cluster, since: std::time::SystemTime) -> Vec<f64> {
    let since = humantime::format_rfc3339_micros(since).to_string();
    let strip = |line: &str| -> String {
        let mut out = String::new();
        let mut escape = false;
        for c in line.chars() {
            match (escape, c) {
                (_, '\u{1b}') => escape = true,
                (true, 'm') => escape = false,
                (true, _) => {}
                (false, c) => out.push(c),
            }
        }
        out
    };
    HOSTS
        .iter()
        .flat_map(|h| std::fs::read_to_string(cluster.host(h).log).unwrap_or_default().lines().map(strip).collect::<Vec<_>>())
        .filter(|l| l.contains("firewall applied") && l.get(..since.len()).is_some_and(|t| t >= since.as_str()))
        .filter_map(|l| l.split("elapsed_ms=").nth(1)?.split_whitespace().next()?.parse().ok())
        .collect()
}

struct Bench<'a> {
    cluster: &'a Cluster,
    image: &'a str,
}

#[derive(Debug, Clone, serde::Deserialize)]
struct TaskJson {
    id: String,
    node: String,
    desired_state: String,
    current_state: String,
    networks: Vec<AddressJson>,
}

#[derive(Debug, Clone, serde::Deserialize)]
struct AddressJson {
    network: String,
    address: String,
}

impl TaskJson {
    fn address_on(&self, network: &str) -> Ipv4Addr {
        let cidr = &self.networks.iter().find(|n| n.network == network).unwrap_or_else(|| panic!("{} is not on {network}", self.id)).address;
        cidr.split('/').next().and_then(|a| a.parse().ok()).unwrap_or_else(|| panic!("bad address {cidr}"))
    }
}

impl Bench<'_> {
    fn shoal(&self, args: &[&str]) -> Output {
        interrupt::check();
        let out = self.cluster.shoal("manager1", args).ok();
        interrupt::check();
        out
    }

    fn service(&self, name: &str, flags: &[&str], command: &[&str]) {
        let mut args = vec!["service", "create", "--detach", "--name", name];
        args.extend_from_slice(flags);
        args.push(self.image);
        args.extend_from_slice(command);
        self.shoal(&args);
    }

    /// Waits for exactly `n` wanted tasks of `service`, all running.
    fn tasks(&self, service: &str, n: usize) -> Vec<TaskJson> {
        poll(Duration::from_secs(60), &format!("{n} running tasks of {service}"), || {
            let out = self.cluster.shoal("manager1", &["service", "ps", service, "--format", "json"]);
            let tasks: Vec<TaskJson> = if out.success() { out.stdout_json() } else { Vec::new() };
            let wanted: Vec<TaskJson> = tasks.into_iter().filter(|t| t.desired_state == "running").collect();
            (wanted.len() == n && wanted.iter().all(|t| t.current_state.starts_with("running"))).then_some(wanted)
        })
    }

    fn vip(&self, network: &str, service: &str) -> Ipv4Addr {
        let inspect: serde_json::Value = self.shoal(&["network", "inspect", network]).stdout_json();
        inspect[0]["attachments"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["kind"] == "vip" && a["name"] == service)
            .and_then(|a| a["address"].as_str()?.split('/').next()?.parse().ok())
            .unwrap_or_else(|| panic!("{service} has no VIP on {network}"))
    }

    /// The task's sandbox namespace on its node.
    fn sandbox(&self, task: &TaskJson) -> String {
        let host = self.cluster.host(&task.node);
        let data_root: PathBuf = host.socket.parent().expect("the socket's directory").join("data");
        data_root.join("network").join("netns").join(format!("task-{}", task.id)).display().to_string()
    }

    fn pid(&self, task: &TaskJson) -> i32 {
        let containers: Vec<serde_json::Value> = self.cluster.shoal(&task.node, &["container", "ls", "--format", "json"]).ok().stdout_json();
        let id = containers.iter().find(|c| c["labels"]["shoal.task.id"] == task.id.as_str()).and_then(|c| c["id"].as_str()).expect("the task's container").to_string();
        let inspect: serde_json::Value = self.cluster.shoal(&task.node, &["container", "inspect", &id]).ok().stdout_json();
        inspect[0]["state"]["pid"].as_i64().expect("the container's pid") as i32
    }
}

/// wrk's requests/s to `url`, run inside namespace `netns` ("" for here).
fn wrk(netns: &str, url: &str, duration: &str) -> f64 {
    interrupt::check();
    let args = ["-t2", "-c", WRK_CONNECTIONS, "-d", duration, url];
    let out = if netns.is_empty() {
        run("wrk", &args, Duration::from_secs(60))
    } else {
        let net = format!("--net={netns}");
        let mut full = vec![net.as_str(), "wrk"];
        full.extend_from_slice(&args);
        run("nsenter", &full, Duration::from_secs(60))
    };
    interrupt::check();
    let rate = out.stdout.lines().find_map(|l| l.strip_prefix("Requests/sec:")).and_then(|v| v.trim().parse().ok());
    let errors = out.stdout.lines().find(|l| l.contains("Socket errors") || l.contains("Non-2xx"));
    if let Some(errors) = errors {
        eprintln!("wrk {url}: {errors}");
    }
    rate.unwrap_or_else(|| panic!("wrk to {url} printed no rate: {}{}", out.stdout, out.stderr))
}

/// Every 5 ms: the times measured here are tens of milliseconds.
#[track_caller]
fn poll<T>(timeout: Duration, what: &str, check: impl FnMut() -> Option<T>) -> T {
    interrupt::poll_every(Duration::from_millis(5), timeout, what, check)
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}
