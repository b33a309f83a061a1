//! Stack deploy benchmark, against Docker Swarm in the same run (release
//! build: `cargo bench -p shoal-cli --bench stack_deploy`; needs root,
//! docker.io, docker-registry, skopeo and busybox-static):
//!
//! A 10-service stack on 2 overlay networks, 2 replicas each (20 tasks),
//! from one compose file: time from `stack deploy` (detached) until all 20
//! tasks run. Ours on a single-node cluster, Swarm on a single node, the
//! image already on the node. Target: ours <= 0.3x Swarm's time. Each
//! figure is the median of a few rounds (the stack removed in between).
//! Not a test: never run in CI.

#[path = "../../../tests/cluster/support/mod.rs"]
mod support;
#[path = "support/docker_swarm.rs"]
mod docker_swarm;
#[path = "support/timing.rs"]
mod timing;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::time::{Duration, Instant};

use docker_swarm::DockerSwarm;
use timing::{median, poll};
use shoal_runtime::testing::{TestImages, TestRegistry};
use support::{wait_until, Cluster};

const ROUNDS: usize = 3;
const SERVICES: usize = 10;
const REPLICAS: usize = 2;

/// The compose file: services s0..s9, half on `front`, half on `back`, all
/// on both for the last two.
fn compose(image: &str) -> String {
    let mut text = String::from("services:\n");
    for i in 0..SERVICES {
        let networks = match i % 3 {
            0 => "[front]",
            1 => "[back]",
            _ => "[front, back]",
        };
        text.push_str(&format!(
            "  s{i}:\n    image: {image}\n    command: [\"sh\", \"-c\", \"trap 'exit 0' TERM; while true; do sleep 1; done\"]\n    networks: {networks}\n    deploy: {{replicas: {REPLICAS}}}\n"
        ));
    }
    text.push_str("networks:\n  front: {}\n  back: {}\n");
    text
}

fn main() {
    let images = TestImages::shared().expect("building the test images");
    let dir = tempfile::tempdir().expect("temp dir");

    let ours = {
        let cluster = Cluster::up("bstk", 1, 0);
        let bridge = Ipv4Addr::new(198, 18, cluster.subnet_index(), 254);
        let port = TcpListener::bind((bridge, 0)).and_then(|l| l.local_addr()).expect("a free port").port();
        let registry = TestRegistry::start_at(SocketAddr::from((bridge, port))).expect("starting docker-registry");
        let image = registry.push(&images.layout, TestImages::BUSYBOX, "busybox", "1").expect("pushing busybox").reference;
        cluster.shoal("manager1", &["image", "pull", "-q", &image]).ok();
        let file = dir.path().join("ours.yml");
        std::fs::write(&file, compose(&image)).unwrap();
        let took = median((0..ROUNDS).map(|i| ours_round(&cluster, &file, &format!("b{i}"))));
        drop(registry);
        took
    };

    let swarm = DockerSwarm::start(images);
    let theirs = match &swarm {
        Ok(swarm) => {
            let file = dir.path().join("swarm.yml");
            std::fs::write(&file, compose("busybox:1")).unwrap();
            Some(median((0..ROUNDS).map(|i| swarm.stack_round(&file, &format!("b{i}")))))
        }
        Err(e) => {
            eprintln!("Docker Swarm yardstick unavailable: {e}");
            None
        }
    };
    drop(swarm);

    let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1000.0);
    println!();
    println!("{:<62} {:>10} {:>14} {:>8}", "stack deploy, 10 services, 2 networks, 20 tasks (same run)", "ours", "Docker Swarm", "ratio");
    println!(
        "{:<62} {:>10} {:>14} {:>8}",
        "until all 20 tasks run (<=0.3x)",
        ms(ours),
        theirs.map(ms).unwrap_or_else(|| "n/a".into()),
        theirs.map(|t| format!("{:.2}", ours.as_secs_f64() / t.as_secs_f64())).unwrap_or_else(|| "n/a".into())
    );
}


fn ours_round(cluster: &Cluster, file: &Path, stack: &str) -> Duration {
    let file = file.display().to_string();
    let started = Instant::now();
    cluster.shoal("manager1", &["stack", "deploy", "-c", &file, stack]).ok();
    poll(Duration::from_secs(120), "our stack's 20 tasks to run", || {
        let out = cluster.shoal("manager1", &["stack", "ps", stack, "--format", "json", "-f", "desired-state=running"]);
        let Ok(rows) = serde_json::from_str::<Vec<serde_json::Value>>(&out.stdout) else { return false };
        rows.iter().filter(|r| r["current_state"].as_str().is_some_and(|s| s.starts_with("running"))).count() == SERVICES * REPLICAS
    });
    let took = started.elapsed();
    cluster.shoal("manager1", &["stack", "rm", stack]).ok();
    wait_until(Duration::from_secs(60), "the stack's containers to go", || {
        cluster.shoal("manager1", &["container", "ls", "-a", "-q"]).lines().is_empty().then_some(())
    });
    took
}

impl DockerSwarm {
    fn stack_round(&self, file: &Path, stack: &str) -> Duration {
        let file = file.display().to_string();
        let started = Instant::now();
        self.docker(&["stack", "deploy", "--detach=true", "-c", &file, stack]).ok();
        poll(Duration::from_secs(300), "Swarm's stack's 20 tasks to run", || {
            let out = self.docker(&["stack", "ps", stack, "--filter", "desired-state=running", "--format", "{{.CurrentState}}"]);
            out.lines().iter().filter(|l| l.starts_with("Running")).count() == SERVICES * REPLICAS
        });
        let took = started.elapsed();
        self.docker(&["stack", "rm", stack]).ok();
        wait_until(Duration::from_secs(120), "Swarm's containers to go", || self.docker(&["ps", "-aq"]).lines().is_empty().then_some(()));
        // The stack's networks go a little after its services.
        wait_until(Duration::from_secs(60), "Swarm's stack networks to go", || {
            (!self.docker(&["network", "ls", "--format", "{{.Name}}"]).stdout.contains(&format!("{stack}_"))).then_some(())
        });
        took
    }
}
