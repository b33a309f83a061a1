//! Embedded DNS benchmark, against Docker's in the same run (release build:
//! `cargo bench -p shoal-overlay-net --bench dns`; needs root, dnsperf and,
//! for the yardstick, docker.io and busybox-static):
//!
//! - ours: the node's DNS service as the daemon runs it (a 2-worker tokio
//!   runtime in a node namespace) serving a sandbox namespace, with a
//!   directory of 3 services of 2 running tasks each;
//! - Docker's: the embedded DNS of a single-node Docker Swarm (a private
//!   dockerd), in a task container of the same 3 services on an overlay
//!   network, entered with nsenter.
//!
//! Both: `dnsperf` inside the container's network namespace, against
//! 127.0.0.11, asking `SERVICE` and `tasks.SERVICE` (A) round-robin, with
//! dnsperf's defaults (one client, 100 queries outstanding), for
//! [`SECONDS`]; then a shorter verbose run for the latency distribution
//! (p50, p99). Target: ours at least 2x Docker's queries/s. Not a test:
//! never run in CI.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shoal_overlay_net::directory::{Directory, EndpointMode, NetworkAddress, ServiceEntry, TaskEntry};
use shoal_overlay_net::dns::{DnsService, DnsSettings, NetworkInfo};
use shoal_overlay_net::netns::{self, NetnsDir};

const SECONDS: u32 = 10;
const LATENCY_SECONDS: u32 = 3;
const SERVICES: usize = 3;
const TASKS: usize = 2;

/// What one dnsperf run measured.
#[derive(Debug, Clone, Copy)]
struct Figures {
    qps: f64,
    lost_percent: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn main() {
    assert!(nix::unistd::geteuid().is_root(), "the DNS benchmark needs root");
    let work = tempfile::Builder::new().prefix("shoal-bench-dns-").tempdir().expect("a temporary directory");
    let queries = work.path().join("queries.txt");
    let lines: String = (0..SERVICES).map(|i| format!("web{i} A\ntasks.web{i} A\n")).collect();
    std::fs::write(&queries, lines).expect("writing the query file");

    let ours = ours(work.path(), &queries);
    let docker = if std::env::var_os("SHOAL_BENCH_SKIP_DOCKER").is_some() {
        Err("skipped (SHOAL_BENCH_SKIP_DOCKER is set)".to_string())
    } else {
        DockerSwarm::start(work.path()).and_then(|swarm| swarm.measure(&queries))
    };

    println!();
    println!("embedded DNS, dnsperf from inside a container namespace against 127.0.0.11 ({SECONDS} s, service names):");
    print_row("ours (shoal)", &ours);
    match &docker {
        Ok(docker) => {
            print_row("Docker Swarm 20.10", docker);
            println!("ours / Docker: {:.2}x queries/s (target: at least 2x)", ours.qps / docker.qps);
        }
        Err(error) => println!("Docker Swarm yardstick unavailable: {error}"),
    }
}

fn print_row(what: &str, figures: &Figures) {
    println!(
        "  {what:<20} {:>10.0} queries/s   lost {:.2}%   latency p50 {:.3} ms, p99 {:.3} ms",
        figures.qps, figures.lost_percent, figures.p50_ms, figures.p99_ms
    );
}

/// Our DNS service in a node namespace, a sandbox namespace asking it.
fn ours(work: &Path, queries: &Path) -> Figures {
    let dir = NetnsDir::new(work.join("netns"));
    let _cleanup = Namespaces(dir.clone());
    for name in ["node", "sandbox"] {
        let path = dir.create(name).expect("a namespace");
        run_checked("nsenter", &[&format!("--net={}", path.display()), "ip", "link", "set", "lo", "up"]);
    }
    let sandbox = dir.path("sandbox");
    let state = work.join("state");
    let sandbox_for_server = sandbox.clone();
    // The runtime's threads start in the node namespace, as the daemon's do.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let node = dir.path("node");
    let server = std::thread::spawn(move || {
        netns::run_in(&node, move || {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime");
            runtime.block_on(async move {
                std::fs::create_dir_all(&state).expect("a state directory");
                std::fs::write(state.join("resolv.conf"), "").expect("an empty host resolv.conf");
                let service = DnsService::new(state.join("dns"), state.join("resolv.conf"));
                service.set_networks(vec![NetworkInfo { id: "front".into(), subnet: "100.64.9.0/24".parse().unwrap(), internal: false }]);
                service.set_directory(&directory());
                service.configure("sandbox", &DnsSettings::default()).await.expect("configure");
                service.serve("sandbox", &sandbox_for_server, vec!["front".into()]).await.expect("serve");
                ready_tx.send(()).expect("the bench waits");
                let _ = stop_rx.await;
                service.stop("sandbox").await.expect("stop");
            });
        })
        .expect("entering the node namespace");
    });
    ready_rx.recv().expect("the server to start");
    let figures = measure(&sandbox, queries);
    let _ = stop_tx.send(());
    server.join().expect("the server thread");
    figures
}

fn directory() -> Directory {
    let address = |last: u8| NetworkAddress { network_id: "front".into(), address: Ipv4Addr::new(100, 64, 9, last) };
    Directory {
        services: (0..SERVICES)
            .map(|s| ServiceEntry {
                id: format!("s{s}"),
                name: format!("web{s}"),
                mode: EndpointMode::Vip,
                vips: vec![address(2 + s as u8)],
                aliases: Vec::new(),
                ports: Vec::new(),
                tasks: (0..TASKS)
                    .map(|t| TaskEntry {
                        id: format!("t{s}x{t}"),
                        name: format!("web{s}.{}.t{s}x{t}", t + 1),
                        node_id: "n1".into(),
                        addresses: vec![address(10 + (s * TASKS + t) as u8)],
                    })
                    .collect(),
            })
            .collect(),
        containers: Vec::new(),
    }
}

/// A throughput run, then a verbose run for latencies, in `netns`.
fn measure(netns: &Path, queries: &Path) -> Figures {
    let net = format!("--net={}", netns.display());
    let data = queries.display().to_string();
    let seconds = SECONDS.to_string();
    let throughput = run_checked("nsenter", &[&net, "dnsperf", "-s", "127.0.0.11", "-d", &data, "-l", &seconds]);
    let qps = stat(&throughput, "Queries per second:").unwrap_or(0.0);
    let lost_percent = throughput
        .lines()
        .find(|l| l.trim_start().starts_with("Queries lost:"))
        .and_then(|l| l.split('(').nth(1))
        .and_then(|l| l.trim_end_matches([')', '%']).parse().ok())
        .unwrap_or(100.0);
    let latency_seconds = LATENCY_SECONDS.to_string();
    let verbose = run_checked("nsenter", &[&net, "dnsperf", "-s", "127.0.0.11", "-d", &data, "-l", &latency_seconds, "-v"]);
    // Verbose lines: `> NOERROR web0 A 0.000123` (latency in seconds, last).
    let mut latencies: Vec<f64> =
        verbose.lines().filter(|l| l.starts_with("> ")).filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok()).collect();
    latencies.sort_by(|a, b| a.total_cmp(b));
    let percentile = |p: f64| latencies.get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1))).copied().unwrap_or(0.0) * 1000.0;
    Figures { qps, lost_percent, p50_ms: percentile(0.50), p99_ms: percentile(0.99) }
}

fn stat(output: &str, label: &str) -> Option<f64> {
    output.lines().find_map(|l| l.trim_start().strip_prefix(label)).and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn run_checked(program: &str, args: &[&str]) -> String {
    let output = Command::new(program).args(args).stderr(Stdio::inherit()).output().unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert!(output.status.success(), "{program} {} failed", args.join(" "));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Removes the benchmark's namespaces, also when it panics.
struct Namespaces(NetnsDir);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in ["sandbox", "node"] {
            let _ = self.0.delete(name);
        }
    }
}

/// A private dockerd in swarm mode (its own data root and socket, no
/// iptables or bridge changes to this machine) running the same services
/// on an overlay network.
struct DockerSwarm {
    root: PathBuf,
    daemon: Child,
}

impl DockerSwarm {
    fn start(work: &Path) -> Result<DockerSwarm, String> {
        let dockerd = which("dockerd").ok_or("dockerd is not installed (apt-get install docker.io)")?;
        let busybox = Path::new("/bin/busybox");
        if !busybox.exists() {
            return Err("/bin/busybox is missing (apt-get install busybox-static)".into());
        }
        let root = work.join("docker");
        std::fs::create_dir_all(root.join("image/bin")).map_err(|e| e.to_string())?;
        let daemon = Command::new(dockerd)
            .args(["--data-root", &root.join("data").display().to_string()])
            .args(["--exec-root", &root.join("exec").display().to_string()])
            .args(["--pidfile", &root.join("docker.pid").display().to_string()])
            .args(["-H", &format!("unix://{}", root.join("docker.sock").display())])
            .args(["--iptables=false", "--ip-masq=false", "--bridge=none"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(root.join("dockerd.log")).map_err(|e| e.to_string())?)
            .spawn()
            .map_err(|e| format!("starting dockerd: {e}"))?;
        let swarm = DockerSwarm { root, daemon };
        poll(Duration::from_secs(60), || swarm.docker(&["info"]).is_ok()).map_err(|_| "dockerd did not answer in 60 s".to_string())?;
        swarm.docker(&["swarm", "init", "--advertise-addr", "127.0.0.1"])?;
        // A one-binary image: busybox-static's busybox as sh and sleep.
        let image = swarm.root.join("image");
        std::fs::copy(busybox, image.join("bin/busybox")).map_err(|e| e.to_string())?;
        for applet in ["sh", "sleep"] {
            std::os::unix::fs::symlink("busybox", image.join("bin").join(applet)).map_err(|e| e.to_string())?;
        }
        let tar = swarm.root.join("image.tar");
        run_checked("tar", &["-C", &image.display().to_string(), "-cf", &tar.display().to_string(), "."]);
        swarm.docker(&["import", &tar.display().to_string(), "shoal-dns-bench:1"])?;
        swarm.docker(&["network", "create", "-d", "overlay", "--subnet", "100.127.0.0/24", "dnsbench"])?;
        for s in 0..SERVICES {
            let name = format!("web{s}");
            let replicas = TASKS.to_string();
            swarm.docker(&["service", "create", "-d", "--name", &name, "--network", "dnsbench", "--replicas", &replicas, "shoal-dns-bench:1", "sleep", "1000000"])?;
        }
        Ok(swarm)
    }

    fn docker(&self, args: &[&str]) -> Result<String, String> {
        let host = format!("unix://{}", self.root.join("docker.sock").display());
        let output = Command::new("docker").arg("-H").arg(&host).args(args).output().map_err(|e| format!("running docker: {e}"))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(format!("docker {} failed: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim()))
        }
    }

    /// dnsperf in the namespace of one of web0's task containers, once all
    /// tasks run.
    fn measure(&self, queries: &Path) -> Result<Figures, String> {
        let wanted = SERVICES * TASKS;
        poll(Duration::from_secs(120), || self.docker(&["ps", "-q"]).is_ok_and(|out| out.lines().count() == wanted))
            .map_err(|_| format!("Swarm's {wanted} tasks did not all run in 120 s"))?;
        let container = self.docker(&["ps", "-q", "--filter", "name=web0."])?;
        let container = container.lines().next().ok_or("no task of web0")?;
        let pid = self.docker(&["inspect", "-f", "{{.State.Pid}}", container])?;
        let netns = PathBuf::from(format!("/proc/{}/ns/net", pid.trim()));
        // The service names must answer before the clock starts.
        poll(Duration::from_secs(30), || {
            Command::new("nsenter")
                .arg(format!("--net={}", netns.display()))
                .args(["dig", "@127.0.0.11", "+short", "tasks.web2"])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).lines().count() == TASKS)
        })
        .map_err(|_| "Docker's DNS did not answer tasks.web2".to_string())?;
        Ok(measure(&netns, queries))
    }
}

impl Drop for DockerSwarm {
    fn drop(&mut self) {
        for s in 0..SERVICES {
            let _ = self.docker(&["service", "rm", &format!("web{s}")]);
        }
        let _ = poll(Duration::from_secs(60), || self.docker(&["ps", "-aq"]).is_ok_and(|out| out.trim().is_empty()));
        let _ = self.docker(&["network", "rm", "dnsbench"]);
        let _ = self.docker(&["swarm", "leave", "--force"]);
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        // dockerd bind-mounts its roots and the containers' namespaces;
        // unmount them before the temporary directory goes.
        for dir in ["exec", "data"] {
            let _ = Command::new("umount").arg("-R").arg(self.root.join(dir)).stderr(Stdio::null()).status();
        }
    }
}

fn poll(timeout: Duration, mut done: impl FnMut() -> bool) -> Result<(), ()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if done() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Err(())
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|dir| Path::new(dir).join(program)).find(|p| p.is_file())
}
