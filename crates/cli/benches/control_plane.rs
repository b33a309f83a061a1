//! Control-plane benchmark on a real local cluster (3 managers in network
//! namespaces, release build recommended: `cargo bench -p shoal-cli --bench
//! control_plane`). Prints ours against the targets from the design brief:
//!
//! - committed, durable store writes/s with concurrent clients (target 5,000)
//! - leader failover, kill -9 to first successful write, median of 5 (target < 2 s;
//!   Docker Swarm's default election takes ~10 s)
//! - idle manager daemon RSS (target < 40 MiB)
//!
//! Not a test: it never runs in CI.

#[path = "../../../tests/cluster/support/mod.rs"]
mod support;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_proto::pb;
use support::{wait_until, Cluster};

const CLIENTS: usize = 64;
const WRITE_SECONDS: u64 = 10;
const KILLS: usize = 5;

fn main() {
    let cluster = Cluster::up("bench", 3, 0);
    let managers = ["manager1", "manager2", "manager3"];
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    wait_for_quorum(&cluster, &runtime, "manager1");

    // Idle RSS first, before the write load grows the caches.
    std::thread::sleep(Duration::from_secs(5));
    let rss: Vec<u64> = managers.iter().filter_map(|m| cluster.host(m).pid.and_then(rss_kib)).collect();
    let max_rss = rss.iter().copied().max().unwrap_or(0);

    let writes_per_sec = runtime.block_on(write_throughput(&cluster.host("manager1").socket));

    let mut failovers = Vec::new();
    for round in 0..KILLS {
        let leader = leader(&cluster, &runtime, &managers);
        let survivor = managers.iter().find(|m| **m != leader).expect("a survivor");
        let socket = cluster.host(survivor).socket;
        cluster.stop(&leader, true);
        let killed = Instant::now();
        eprintln!("round {round}: killed {leader} at {:?}", std::time::SystemTime::now());
        let elapsed = runtime.block_on(async {
            let mut n = 0;
            loop {
                n += 1;
                if create(&socket, &format!("failover-{round}-{n}")).await.is_ok() {
                    return killed.elapsed();
                }
                assert!(killed.elapsed() < Duration::from_secs(30), "no write succeeded within 30 s of the kill");
            }
        });
        eprintln!("round {round}: first write after {} ms", elapsed.as_millis());
        failovers.push(elapsed);
        cluster.start(&leader);
        wait_for_quorum(&cluster, &runtime, &leader);
    }
    if let Some(dir) = std::env::var_os("SHOAL_BENCH_LOGS") {
        keep_logs(&cluster, &managers, Path::new(&dir));
    }
    failovers.sort();
    let median = failovers[failovers.len() / 2];

    println!();
    println!("{:<46} {:>14} {:>16}", "control plane (3 managers, local netns)", "ours", "target");
    println!("{:<46} {:>14.0} {:>16}", format!("store writes/s ({CLIENTS} clients, committed)"), writes_per_sec, ">= 5000");
    println!(
        "{:<46} {:>14} {:>16}",
        "leader failover, median of 5 (kill -> write)",
        format!("{:.0} ms", median.as_secs_f64() * 1000.0),
        "< 2000 ms"
    );
    println!("{:<46} {:>14}", "  all failovers", failovers.iter().map(|d| format!("{}", d.as_millis())).collect::<Vec<_>>().join(","));
    println!("{:<46} {:>14} {:>16}", "  yardstick: Docker Swarm default election", "", "~10000 ms");
    println!("{:<46} {:>14} {:>16}", "idle manager daemon RSS (max of 3)", format!("{:.1} MiB", max_rss as f64 / 1024.0), "< 40 MiB");
}

/// Copies each manager's daemon log into `dir` (set SHOAL_BENCH_LOGS, and
/// RUST_LOG for more detail), since the cluster's directory goes with it.
fn keep_logs(cluster: &Cluster, managers: &[&str], dir: &Path) {
    let _ = std::fs::create_dir_all(dir);
    for m in managers {
        let log = cluster.host(m).log;
        if let Err(e) = std::fs::copy(&log, dir.join(format!("{m}.log"))) {
            eprintln!("could not keep {}: {e}", log.display());
        }
    }
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

async fn client(socket: &Path) -> Result<pb::control_client::ControlClient<tonic::transport::Channel>, String> {
    let channel = shoal_proto::tls::connect_unix(socket).await.map_err(|e| e.to_string())?;
    Ok(pb::control_client::ControlClient::new(channel))
}

async fn create(socket: &Path, name: &str) -> Result<(), String> {
    let mut control = client(socket).await?;
    control
        .create_config(pb::CreateConfigRequest { name: name.into(), data: b"x".to_vec(), labels: Default::default() })
        .await
        .map(drop)
        .map_err(|s| s.message().to_string())
}

async fn write_throughput(socket: &Path) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(WRITE_SECONDS);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let done = done.clone();
        let mut control = client(socket).await.expect("connecting to manager1");
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while Instant::now() < deadline {
                i += 1;
                let request = pb::CreateConfigRequest { name: format!("c{c}-{i}"), data: b"x".to_vec(), labels: Default::default() };
                if control.create_config(request).await.is_ok() {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

fn leader(cluster: &Cluster, runtime: &tokio::runtime::Runtime, managers: &[&str]) -> String {
    wait_until(Duration::from_secs(10), "a leader", || {
        managers.iter().find_map(|m| {
            let socket = cluster.host(m).socket;
            let info = runtime.block_on(async {
                let channel = shoal_proto::tls::connect_unix(&socket).await.ok()?;
                pb::daemon_client::DaemonClient::new(channel).info(pb::Empty {}).await.ok()
            })?;
            info.into_inner().is_leader.then(|| m.to_string())
        })
    })
}

fn wait_for_quorum(cluster: &Cluster, runtime: &tokio::runtime::Runtime, host: &str) {
    static PROBES: AtomicU64 = AtomicU64::new(0);
    let socket = cluster.host(host).socket;
    wait_until(Duration::from_secs(30), "the managers to accept writes", || {
        let n = PROBES.fetch_add(1, Ordering::Relaxed);
        runtime.block_on(create(&socket, &format!("probe-{n}"))).ok()
    });
}
