//! Rolling update benchmark, against Docker Swarm in the same run (release
//! build: `cargo bench -p shoal-cli --bench rolling_update`; needs root,
//! docker.io, docker-registry, skopeo and busybox-static):
//!
//! - 10 replicas, `--update-parallelism 2 --update-delay 0s`, no health
//!   check: time from `service update --image` (detached) until all 10
//!   tasks run the new image. Ours on a single-node cluster, Swarm on a
//!   single node, the same two images (busybox as `busybox:1` and
//!   `busybox:2`) already on the node. Target: ours <= 0.3x Swarm's time.
//! - The same with a health check probing every second: each batch waits
//!   for its tasks' first probe, so 5 batches cannot take less than 5 s;
//!   ours against that lower bound (and Swarm's, for reference).
//!
//! Each figure is the median of a few rounds. Not a test: never run in CI.

#[path = "../../../tests/cluster/support/mod.rs"]
mod support;
#[path = "support/docker_swarm.rs"]
mod docker_swarm;
#[path = "support/timing.rs"]
mod timing;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use docker_swarm::DockerSwarm;
use timing::{median, poll};
use shoal_runtime::testing::{TestImages, TestRegistry};
use support::{wait_until, Cluster};

const ROUNDS: usize = 3;
const REPLICAS: usize = 10;
const SLEEPER: &[&str] = &["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"];
const UPDATE: &[&str] = &["--update-parallelism", "2", "--update-delay", "0s"];
const HEALTH: &[&str] = &["--health-cmd", "true", "--health-interval", "1s"];
/// 10 replicas, 2 at a time: 5 batches, each waiting for a first probe 1 s in.
const HEALTH_LOWER_BOUND: Duration = Duration::from_secs(5);

fn main() {
    let images = TestImages::shared().expect("building the test images");

    let (ours_plain, ours_health) = {
        let cluster = Cluster::up("brol", 1, 0);
        let bridge = Ipv4Addr::new(198, 18, cluster.subnet_index(), 254);
        let port = TcpListener::bind((bridge, 0)).and_then(|l| l.local_addr()).expect("a free port").port();
        let registry = TestRegistry::start_at(SocketAddr::from((bridge, port))).expect("starting docker-registry");
        let push = |tag: &str| registry.push(&images.layout, TestImages::BUSYBOX, "busybox", tag).expect("pushing busybox").reference;
        let (old, new) = (push("1"), push("2"));
        for image in [&old, &new] {
            cluster.shoal("manager1", &["image", "pull", "-q", image]).ok();
        }
        let plain = median((0..ROUNDS).map(|i| ours(&cluster, &format!("plain{i}"), &old, &new, &[])));
        let health = median((0..ROUNDS).map(|i| ours(&cluster, &format!("health{i}"), &old, &new, HEALTH)));
        drop(registry);
        (plain, health)
    };

    let swarm = DockerSwarm::start(images);
    let (swarm_plain, swarm_health) = match &swarm {
        Ok(swarm) => {
            swarm.docker(&["tag", "busybox:1", "busybox:2"]).ok();
            (
                Some(median((0..ROUNDS).map(|i| swarm.rolling_update(&format!("plain{i}"), &[])))),
                Some(median((0..1).map(|i| swarm.rolling_update(&format!("health{i}"), HEALTH)))),
            )
        }
        Err(e) => {
            eprintln!("Docker Swarm yardstick unavailable: {e}");
            (None, None)
        }
    };
    drop(swarm);

    let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1000.0);
    let opt = |d: Option<Duration>| d.map(ms).unwrap_or_else(|| "n/a".into());
    let ratio = |ours: Duration, theirs: Option<Duration>| {
        theirs.map(|t| format!("{:.2}", ours.as_secs_f64() / t.as_secs_f64())).unwrap_or_else(|| "n/a".into())
    };
    println!();
    println!("{:<60} {:>10} {:>14} {:>8}", "rolling update, 10 replicas, parallelism 2 (same run)", "ours", "Docker Swarm", "ratio");
    println!(
        "{:<60} {:>10} {:>14} {:>8}",
        "no health check, until all 10 on the new image (<=0.3x)",
        ms(ours_plain),
        opt(swarm_plain),
        ratio(ours_plain, swarm_plain)
    );
    println!(
        "{:<60} {:>10} {:>14} {:>8}",
        "health check every 1s, until all 10 on the new image",
        ms(ours_health),
        opt(swarm_health),
        ratio(ours_health, swarm_health)
    );
    println!(
        "{:<60} {:>10} {:>14} {:>8}",
        "  lower bound set by the health interval (5 batches x 1 s)",
        ms(HEALTH_LOWER_BOUND),
        "",
        format!("{:.2}", ours_health.as_secs_f64() / HEALTH_LOWER_BOUND.as_secs_f64())
    );
}


/// Creates the service on `old`, waits for it, then times `service update
/// --detach --image new` until every wanted task runs the new image.
fn ours(cluster: &Cluster, name: &str, old: &str, new: &str, extra: &[&str]) -> Duration {
    let replicas = REPLICAS.to_string();
    let mut args = vec!["service", "create", "--name", name, "--replicas", &replicas];
    args.extend_from_slice(UPDATE);
    args.extend_from_slice(extra);
    args.push(old);
    args.extend_from_slice(SLEEPER);
    cluster.shoal("manager1", &args).ok();
    let new_tag = new.split('@').next().unwrap_or(new).to_string();
    let started = Instant::now();
    cluster.shoal("manager1", &["service", "update", "--detach", "--image", new, name]).ok();
    poll(Duration::from_secs(120), "our update to reach every task", || {
        let out = cluster.shoal("manager1", &["service", "ps", name, "--format", "json"]);
        let Ok(rows) = serde_json::from_str::<Vec<serde_json::Value>>(&out.stdout) else { return false };
        let wanted: Vec<&serde_json::Value> = rows.iter().filter(|r| r["desired_state"] == "running").collect();
        wanted.len() == REPLICAS
            && wanted.iter().all(|r| {
                r["current_state"].as_str().is_some_and(|s| s.starts_with("running"))
                    && r["image"].as_str().is_some_and(|i| i.starts_with(&new_tag))
            })
    });
    let took = started.elapsed();
    cluster.shoal("manager1", &["service", "rm", name]).ok();
    wait_until(Duration::from_secs(60), "the service's containers to go", || {
        cluster.shoal("manager1", &["container", "ls", "-a", "-q"]).lines().is_empty().then_some(())
    });
    took
}

impl DockerSwarm {
    /// The same as [`ours`], on Swarm.
    fn rolling_update(&self, name: &str, extra: &[&str]) -> Duration {
        let replicas = REPLICAS.to_string();
        let mut args = vec!["service", "create", "--quiet", "--name", name, "--replicas", &replicas];
        args.extend_from_slice(UPDATE);
        args.extend_from_slice(extra);
        args.push("busybox:1");
        args.extend_from_slice(SLEEPER);
        self.docker(&args).ok();
        let started = Instant::now();
        self.docker(&["service", "update", "--detach", "--quiet", "--image", "busybox:2", name]).ok();
        poll(Duration::from_secs(300), "Swarm's update to reach every task", || {
            let out = self.docker(&["service", "ps", name, "--filter", "desired-state=running", "--format", "{{.Image}} {{.CurrentState}}"]);
            let lines = out.lines();
            lines.len() == REPLICAS && lines.iter().all(|l| l.starts_with("busybox:2 Running"))
        });
        let took = started.elapsed();
        self.docker(&["service", "rm", name]).ok();
        wait_until(Duration::from_secs(120), "Swarm's containers to go", || self.docker(&["ps", "-aq"]).lines().is_empty().then_some(()));
        took
    }
}
