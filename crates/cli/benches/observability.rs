//! What observability costs (`cargo bench -p shoal-cli --bench
//! observability`): the same work on clusters alike but for it, in the
//! same run, rounds alternating so drift weighs on both.
//!
//! - committed writes/s of 64 clients on 3 managers, with metrics served
//!   and scraped every second from every manager and a `shoal events`
//!   follower on the leader, against managers that serve no metrics and
//!   keep no events (`SHOAL_BENCH_OBSERVABILITY_OFF`)
//! - `shoal run --rm IMAGE true` on a standalone node, scraped and
//!   followed likewise, against one with it off
//!
//! Target: at most 3% slower with it on. Not a test: it never runs in CI.

#[path = "../../../tests/cluster/support/mod.rs"]
mod support;

#[path = "control_plane/etcd.rs"]
#[allow(dead_code)]
mod etcd;
#[path = "control_plane/load.rs"]
#[allow(dead_code)]
mod load;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use load::{Load, Target};
use support::bridge_node::{import_busybox, IMAGE};
use support::{wait_until, Cluster, SHOAL};

const OFF_ENV: &str = "SHOAL_BENCH_OBSERVABILITY_OFF";
const CLIENTS: usize = 64;
const WRITE_ROUNDS: usize = 10;
const ROUND: Duration = Duration::from_secs(5);
const PAUSE_BEFORE_ROUND: Duration = Duration::from_secs(2);
const RUNS: usize = 30;
const METRICS_PORT: u16 = 9323;

/// Scrapes every host's /metrics once a second and follows `shoal events`
/// on the first, until dropped: observability as an operator runs it.
struct Watchers {
    stop: Arc<AtomicBool>,
    scraper: Option<std::thread::JoinHandle<u64>>,
    follower: Child,
}

impl Watchers {
    fn start(cluster: &Cluster, hosts: &[&str]) -> Watchers {
        let urls: Vec<String> = hosts.iter().map(|h| format!("http://{}:{METRICS_PORT}/metrics", cluster.addr(h))).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let scraping = stop.clone();
        let scraper = std::thread::spawn(move || {
            let mut scrapes = 0;
            while !scraping.load(Ordering::Relaxed) {
                for url in &urls {
                    let ok = Command::new("curl").args(["-sf", "-o", "/dev/null", "--max-time", "2", url]).status().is_ok_and(|s| s.success());
                    scrapes += u64::from(ok);
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            scrapes
        });
        let socket = format!("unix://{}", cluster.host(hosts[0]).socket.display());
        // An operator watching the services (the runtime bench: the node's containers).
        let follower = Command::new(SHOAL).args(["-H", &socket, "events", "-f", "type=service", "-f", "type=container"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("shoal events");
        Watchers { stop, scraper: Some(scraper), follower }
    }
}

impl Drop for Watchers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let scrapes = self.scraper.take().and_then(|s| s.join().ok()).unwrap_or(0);
        eprintln!("(the watched side was scraped {scrapes} times)");
        let _ = self.follower.kill();
        let _ = self.follower.wait();
    }
}

/// A cluster made with observability off when `off`.
fn cluster(tag: &str, managers: u32, off: bool, standalone: bool) -> Cluster {
    // The daemons inherit the variable through `dev-cluster up`; set while
    // no other thread of ours runs.
    if off {
        std::env::set_var(OFF_ENV, "1");
    }
    let cluster = if standalone { Cluster::up_standalone(tag, managers) } else { Cluster::up(tag, managers, 0) };
    std::env::remove_var(OFF_ENV);
    cluster
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

fn main() {
    let managers = ["manager1", "manager2", "manager3"];
    let (on, off) = (cluster("obson", 3, false, false), cluster("obsoff", 3, true, false));
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    for c in [&on, &off] {
        wait_until(Duration::from_secs(30), "the managers to take writes", || {
            c.shoal("manager1", &["config", "ls"]).success().then_some(())
        });
    }
    let targets = [(true, Target::Shoal(vec![on.host("manager1").socket])), (false, Target::Shoal(vec![off.host("manager1").socket]))];
    let (mut with, mut without) = (Load::default(), Load::default());
    {
        let _watchers = Watchers::start(&on, &managers);
        for round in 0..WRITE_ROUNDS {
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for i in order {
                let (watched, target) = &targets[i];
                std::thread::sleep(PAUSE_BEFORE_ROUND);
                let load = runtime.block_on(load::run(target, CLIENTS, ROUND, &format!("obs{round}")));
                eprintln!("round {round}: observability {}: {:.0} writes/s", if *watched { "on" } else { "off" }, load.per_sec());
                if *watched { with.add(load) } else { without.add(load) }
            }
        }
    }
    on.down();
    off.down();

    let (node_on, node_off) = (cluster("obsrn", 1, false, true), cluster("obsrf", 1, true, true));
    for node in [&node_on, &node_off] {
        import_busybox(node, "manager1", IMAGE);
    }
    let (mut runs_on, mut runs_off) = (Vec::new(), Vec::new());
    {
        let _watchers = Watchers::start(&node_on, &["manager1"]);
        for run in 0..RUNS {
            let order = if run % 2 == 0 { [true, false] } else { [false, true] };
            for watched in order {
                let node = if watched { &node_on } else { &node_off };
                let started = Instant::now();
                node.shoal("manager1", &["run", "--rm", IMAGE, "true"]).ok();
                let ms = started.elapsed().as_secs_f64() * 1e3;
                if watched { runs_on.push(ms) } else { runs_off.push(ms) }
            }
        }
    }
    node_on.down();
    node_off.down();

    let (w_on, w_off) = (with.per_sec(), without.per_sec());
    let (r_on, r_off) = (median(runs_on), median(runs_off));
    let write_cost = 100.0 * (1.0 - w_on / w_off);
    let run_cost = 100.0 * (r_on / r_off - 1.0);
    println!();
    println!("{:<52} {:>12} {:>12} {:>8} {:>10}", "Observability (same run)", "off", "on", "cost", "target");
    println!("{:<52} {:>12.0} {:>12.0} {:>7.1}% {:>10}", "committed writes/s, 64 clients, 3 managers", w_off, w_on, write_cost, "<= 3%");
    println!("{:<52} {:>10.1}ms {:>10.1}ms {:>7.1}% {:>10}", "`run --rm busybox true`, median of 30", r_off, r_on, run_cost, "<= 3%");
}
