//! Services benchmark, against Docker Swarm in the same run (release build:
//! `cargo bench -p shoal-cli --bench services`; needs root, docker.io,
//! docker-registry, skopeo and busybox-static):
//!
//! - `service create --replicas 3` until 3/3 run: ours on a 3-manager local
//!   cluster, Swarm on a single node (docker.io), the same busybox image
//!   already present on every node. Target: ours <= 0.3x Swarm's time.
//! - 100 replicas on one node until all run. Target: ours under 3 s.
//!
//! Each figure is the median of a few rounds. Not a test: never run in CI.

#[path = "../../../tests/cluster/support/mod.rs"]
mod support;
#[path = "support/docker_swarm.rs"]
mod docker_swarm;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use docker_swarm::DockerSwarm;
use shoal_runtime::testing::{TestImages, TestRegistry};
use support::{wait_until, Cluster};

const ROUNDS: usize = 3;
const SLEEPER: &[&str] = &["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"];

fn main() {
    let images = TestImages::shared().expect("building the test images");

    let (ours_3, ours_100) = {
        let cluster = Cluster::up("bsvc", 3, 0);
        let bridge = Ipv4Addr::new(198, 18, cluster.subnet_index(), 254);
        let port = TcpListener::bind((bridge, 0)).and_then(|l| l.local_addr()).expect("a free port").port();
        let registry = TestRegistry::start_at(SocketAddr::from((bridge, port))).expect("starting docker-registry");
        let image = registry.push(&images.layout, TestImages::BUSYBOX, "busybox", "1").expect("pushing busybox").reference;
        for host in ["manager1", "manager2", "manager3"] {
            cluster.shoal(host, &["image", "pull", "-q", &image]).ok();
        }
        wait_ready(&cluster, 3);
        let three = median((0..ROUNDS).map(|i| ours(&cluster, &format!("three{i}"), &image, &["--replicas", "3"])));
        // 100 on one node: pinned to manager1 by hostname.
        let hundred = median((0..ROUNDS).map(|i| {
            ours(&cluster, &format!("hundred{i}"), &image, &["--replicas", "100", "--constraint", "node.hostname==manager1"])
        }));
        drop(registry);
        (three, hundred)
    };

    let swarm = DockerSwarm::start(images);
    let (swarm_3, swarm_100) = match &swarm {
        Ok(swarm) => (
            Some(median((0..ROUNDS).map(|i| swarm.create(&format!("three{i}"), 3)))),
            Some(median((0..1).map(|i| swarm.create(&format!("hundred{i}"), 100)))),
        ),
        Err(e) => {
            eprintln!("Docker Swarm yardstick unavailable: {e}");
            (None, None)
        }
    };
    drop(swarm);

    let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1000.0);
    let opt = |d: Option<Duration>| d.map(ms).unwrap_or_else(|| "n/a".into());
    println!();
    println!("{:<52} {:>12} {:>14} {:>12}", "services (this machine, same run)", "ours", "Docker Swarm", "ratio");
    let ratio = |ours: Duration, theirs: Option<Duration>| {
        theirs.map(|t| format!("{:.2}", ours.as_secs_f64() / t.as_secs_f64())).unwrap_or_else(|| "n/a".into())
    };
    println!(
        "{:<52} {:>12} {:>14} {:>12}",
        "create --replicas 3 until 3/3 running (target <=0.3x)",
        ms(ours_3),
        opt(swarm_3),
        ratio(ours_3, swarm_3)
    );
    println!(
        "{:<52} {:>12} {:>14} {:>12}",
        "100 replicas on one node until all running (< 3 s)",
        ms(ours_100),
        opt(swarm_100),
        ratio(ours_100, swarm_100)
    );
}

/// Like `wait_until`, but every 10 ms: what is timed here is a few hundred
/// milliseconds, and a coarse poll would blur both sides.
fn poll(timeout: Duration, what: &str, mut check: impl FnMut() -> Option<()>) {
    let deadline = Instant::now() + timeout;
    while check().is_none() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn median(samples: impl Iterator<Item = Duration>) -> Duration {
    let mut samples: Vec<Duration> = samples.collect();
    samples.sort();
    samples[samples.len() / 2]
}

fn wait_ready(cluster: &Cluster, nodes: usize) {
    wait_until(Duration::from_secs(60), "every node ready", || {
        let out = cluster.shoal("manager1", &["node", "ls", "--format", "json"]);
        let rows: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).ok()?;
        (rows.len() == nodes && rows.iter().all(|r| r["status"] == "ready")).then_some(())
    });
}

/// From `service create --detach` until `service ls` shows every replica
/// running (the CLI's own wait adds a stability hold), then removal.
fn ours(cluster: &Cluster, name: &str, image: &str, flags: &[&str]) -> Duration {
    let mut args = vec!["service", "create", "--detach", "--name", name];
    args.extend_from_slice(flags);
    args.push(image);
    args.extend_from_slice(SLEEPER);
    let started = Instant::now();
    cluster.shoal("manager1", &args).ok();
    poll(Duration::from_secs(120), "our replicas to run", || {
        let out = cluster.shoal("manager1", &["service", "ls", "--format", "json"]);
        let rows: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).ok()?;
        let row = rows.into_iter().find(|r| r["name"] == name)?;
        (row["running"] == row["replicas"]).then_some(())
    });
    let took = started.elapsed();
    cluster.shoal("manager1", &["service", "rm", name]).ok();
    wait_until(Duration::from_secs(60), "the service's containers to go", || {
        let out = cluster.shoal("manager1", &["container", "ls", "-a", "-q"]);
        out.lines().is_empty().then_some(())
    });
    took
}

/// The yardstick side of the create figures.
impl DockerSwarm {
    /// From `docker service create --detach` until `service ls` shows
    /// every replica running, measured exactly as ours.
    fn create(&self, name: &str, replicas: u32) -> Duration {
        let count = replicas.to_string();
        let mut args = vec!["service", "create", "--detach", "--quiet", "--name", name, "--replicas", &count, "busybox:1"];
        args.extend_from_slice(SLEEPER);
        let started = Instant::now();
        self.docker(&args).ok();
        let converged = format!("{replicas}/{replicas}");
        poll(Duration::from_secs(300), "Swarm's replicas to run", || {
            let out = self.docker(&["service", "ls", "--filter", &format!("name={name}"), "--format", "{{.Replicas}}"]);
            out.lines().first().is_some_and(|r| r.starts_with(&converged)).then_some(())
        });
        let took = started.elapsed();
        self.docker(&["service", "rm", name]).ok();
        wait_until(Duration::from_secs(120), "Swarm's containers to go", || {
            self.docker(&["ps", "-aq"]).lines().is_empty().then_some(())
        });
        took
    }
}

