//! Control-plane benchmark on real local clusters in network namespaces
//! (release build recommended: `cargo bench -p shoal-cli --bench
//! control_plane`; needs `apt-get install etcd-server etcd-client`).
//!
//! - Shoal's 3 managers against a 3-member etcd cluster, the yardstick,
//!   on namespace hosts made alike, data on the same filesystem, in the
//!   same run: committed durable writes/s and p50/p99 commit latency with
//!   1, 16 and 64 clients (target: at least 1.0x etcd's writes/s at 64
//!   clients, a p99 no worse than etcd's at 1 client)
//! - leader failover, 20 kill -9s each, kill to first acknowledged write:
//!   median and max against etcd's (target: every one under 1 s)
//! - encryption at rest: the same write load on a second Shoal cluster
//!   whose managers keep Raft data unencrypted (target: costs at most 15%,
//!   and at least 5,000 writes/s with it on)
//! - idle manager daemon RSS (target < 40 MiB)
//!
//! `SHOAL_BENCH_QUICK=1` runs only the comparison with etcd;
//! `SHOAL_BENCH_ROUNDS=N` gives it N alternating 5 s rounds per client count
//! instead of 2, with each round's ratio printed to show the spread.
//!
//! Not a test: it never runs in CI.

#[path = "../../../tests/cluster/support/mod.rs"]
mod support;

#[path = "control_plane/etcd.rs"]
mod etcd;
#[path = "control_plane/load.rs"]
mod load;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use etcd::{EtcdCluster, EtcdWriter};
use load::{Load, Target};
use shoal_proto::pb;
use support::{wait_until, Cluster};

/// Clients of the encryption-at-rest comparison.
const CLIENTS: usize = 64;
/// Client counts of the comparison with etcd.
const CONCURRENCY: [usize; 3] = [1, 16, 64];
/// Throughput is measured in rounds alternating between the stores
/// compared (A-B, B-A, ...), so drift in the machine's load and the
/// stores' growth weigh on both alike. Each round starts after a pause, so
/// background work the previous round left (snapshots, log purges,
/// compaction) does not land on the next one.
const WRITE_ROUNDS: usize = 6;
/// Rounds per client count against etcd: 2 x 5 s = 10 s each, unless
/// [`ROUNDS_ENV`] asks for more (the machine's own drift between rounds is
/// often larger than the difference measured; more rounds narrow it).
const ETCD_ROUNDS: usize = 2;
const ROUNDS_ENV: &str = "SHOAL_BENCH_ROUNDS";
const ROUND: Duration = Duration::from_secs(5);
const PAUSE_BEFORE_ROUND: Duration = Duration::from_secs(2);
const KILLS: usize = 20;

/// Makes the daemons started while it is set keep their Raft data
/// unencrypted. The daemon honours it only for this comparison; see
/// `crates/cli/src/daemon/node.rs`.
const UNENCRYPTED_RAFT_ENV: &str = "SHOAL_BENCH_UNENCRYPTED_RAFT";

/// Set, the bench measures only Shoal against etcd's writes/s and
/// latency (no encryption rounds, no failovers): a quick check while
/// working on the write path.
const QUICK_ENV: &str = "SHOAL_BENCH_QUICK";

fn main() {
    let quick = std::env::var_os(QUICK_ENV).is_some();
    // The daemons inherit the variable through `dev-cluster up`; it is
    // unset again before the encrypted cluster (and its restarts below)
    // start. Set while no other thread of ours runs.
    std::env::set_var(UNENCRYPTED_RAFT_ENV, "1");
    let plaintext = Cluster::up("benchp", 3, 0);
    std::env::remove_var(UNENCRYPTED_RAFT_ENV);
    // The encryption comparison's rounds grow a store by ~200,000 objects;
    // the comparison with etcd gets a cluster of its own, starting as empty
    // as etcd does, so both serve the same load from the same state.
    let encrypted = if quick { None } else { Some(Cluster::up("benchx", 3, 0)) };
    let cluster = Cluster::up("bench", 3, 0);
    let mut etcd = EtcdCluster::up("benche");
    let managers = ["manager1", "manager2", "manager3"];
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    wait_for_quorum(&plaintext, &runtime, "manager1");
    if let Some(encrypted) = &encrypted {
        wait_for_quorum(encrypted, &runtime, "manager1");
    }
    wait_for_quorum(&cluster, &runtime, "manager1");
    runtime.block_on(etcd.wait_for_writes(0, Duration::from_secs(30)));

    // Idle RSS first, before the write load grows the caches.
    std::thread::sleep(Duration::from_secs(5));
    let rss: Vec<u64> = managers.iter().filter_map(|m| cluster.host(m).pid.and_then(rss_kib)).collect();
    let max_rss = rss.iter().copied().max().unwrap_or(0);

    // Encryption at rest on and off, through manager1.
    let pids = |c: &Cluster| -> Vec<u32> { managers.iter().filter_map(|m| c.host(m).pid).collect() };
    let encrypted_cluster = encrypted.as_ref().unwrap_or(&cluster);
    let (plaintext_pids, encrypted_pids) = (pids(&plaintext), pids(encrypted_cluster));
    let (plaintext_target, encrypted_target) = (
        Target::Shoal(vec![plaintext.host("manager1").socket]),
        Target::Shoal(vec![encrypted_cluster.host("manager1").socket]),
    );
    let (mut plaintext_total, mut encrypted_total) = (Load::default(), Load::default());
    let (mut plaintext_cpu, mut encrypted_cpu) = (0.0, 0.0);
    for round in 0..if quick { 0 } else { WRITE_ROUNDS } {
        let order = if round % 2 == 0 { [false, true] } else { [true, false] };
        for encrypted in order {
            let (target, pids, total, cpu) = if encrypted {
                (&encrypted_target, &encrypted_pids, &mut encrypted_total, &mut encrypted_cpu)
            } else {
                (&plaintext_target, &plaintext_pids, &mut plaintext_total, &mut plaintext_cpu)
            };
            std::thread::sleep(PAUSE_BEFORE_ROUND);
            let cpu_before = cpu_seconds(pids);
            let load = runtime.block_on(load::run(target, CLIENTS, ROUND, &format!("enc{round}")));
            let spent = cpu_seconds(pids) - cpu_before;
            eprintln!(
                "round {round}: encryption {}: {:.0} writes/s, {:.1} manager CPU us/write",
                if encrypted { "on" } else { "off" },
                load.per_sec(),
                spent * 1e6 / load.writes as f64
            );
            *cpu += spent;
            total.add(load);
        }
    }
    // Out of the way of what follows.
    plaintext.down();
    if let Some(encrypted) = encrypted {
        encrypted.down();
    }
    let (writes_per_sec, plaintext_writes_per_sec) = (encrypted_total.per_sec(), plaintext_total.per_sec());
    let encryption_cost = 100.0 * (1.0 - writes_per_sec / plaintext_writes_per_sec);
    let cpu_us = |cpu: f64, load: &Load| cpu * 1e6 / load.writes as f64;
    let (encrypted_cpu_us, plaintext_cpu_us) = (cpu_us(encrypted_cpu, &encrypted_total), cpu_us(plaintext_cpu, &plaintext_total));

    // Shoal against etcd, clients spread over all three members, each
    // store's list starting at its leader: client 0 (the 1-client rounds)
    // writes to the leader of both, and with more clients both get the same
    // share of writes a follower must forward. Spread by member number
    // instead, whichever store's leader happened to be member 1 was spared
    // the forwarding hop at 1 client, and the other was not.
    let shoal_leader = leader(&cluster, &runtime, &managers);
    let mut sockets: Vec<_> = managers.iter().map(|m| cluster.host(m).socket).collect();
    sockets.rotate_left(managers.iter().position(|m| *m == shoal_leader).unwrap_or(0));
    let shoal_target = Target::Shoal(sockets);
    let mut endpoints = etcd.endpoints();
    endpoints.rotate_left(wait_until(Duration::from_secs(10), "an etcd leader", || etcd.leader()));
    let etcd_target = Target::Etcd(endpoints);
    let mut side_by_side = Vec::new();
    let (shoal_pids, etcd_pids) = (pids(&cluster), etcd.pids());
    let rounds = std::env::var(ROUNDS_ENV).ok().and_then(|n| n.parse().ok()).filter(|&n| n > 0).unwrap_or(ETCD_ROUNDS);
    for clients in CONCURRENCY {
        let (mut ours, mut theirs) = (Load::default(), Load::default());
        let (mut ours_cpu, mut theirs_cpu) = (0.0, 0.0);
        // writes/s of each round, Shoal's and etcd's, for the spread.
        let mut round_rates = Vec::new();
        for round in 0..rounds {
            let mut rates = [0.0; 2];
            let order = if round % 2 == 0 { [true, false] } else { [false, true] };
            for shoal in order {
                std::thread::sleep(PAUSE_BEFORE_ROUND);
                let (target, total, pids, cpu) = if shoal {
                    (&shoal_target, &mut ours, &shoal_pids, &mut ours_cpu)
                } else {
                    (&etcd_target, &mut theirs, &etcd_pids, &mut theirs_cpu)
                };
                let cpu_before = cpu_seconds(pids);
                let load = runtime.block_on(load::run(target, clients, ROUND, &format!("vs{clients}r{round}")));
                *cpu += cpu_seconds(pids) - cpu_before;
                eprintln!(
                    "{clients} clients, round {round}: {} {:.0} writes/s, p99 {:.2} ms",
                    if shoal { "shoal" } else { "etcd" },
                    load.per_sec(),
                    load.percentile_ms(99.0)
                );
                rates[usize::from(!shoal)] = load.per_sec();
                total.add(load);
            }
            round_rates.push(rates[0] / rates[1]);
        }
        let (ours_cpu_us, theirs_cpu_us) = (cpu_us(ours_cpu, &ours), cpu_us(theirs_cpu, &theirs));
        side_by_side.push((clients, ours, theirs, ours_cpu_us, theirs_cpu_us, round_rates));
    }

    let (shoal_failovers, etcd_failovers) = if quick {
        (Vec::new(), Vec::new())
    } else {
        (shoal_failovers(&cluster, &runtime, &managers), etcd_failovers(&mut etcd, &runtime))
    };
    if let Some(dir) = std::env::var_os("SHOAL_BENCH_LOGS") {
        keep_logs(&cluster, &managers, Path::new(&dir));
    }

    println!();
    println!("{:<46} {:>14} {:>14} {:>8} {:>22}", "Shoal vs etcd (3 members, local netns)", "Shoal", "etcd 3.4", "ratio", "target");
    for (clients, ours, theirs, ours_cpu_us, theirs_cpu_us, round_rates) in &side_by_side {
        let target = if *clients == 64 { ">= 1.0x etcd" } else { "" };
        println!(
            "{:<46} {:>14.0} {:>14.0} {:>7.2}x {:>22}",
            format!("writes/s, {clients} client(s), committed durable"),
            ours.per_sec(),
            theirs.per_sec(),
            ours.per_sec() / theirs.per_sec(),
            target
        );
        let each: Vec<String> = round_rates.iter().map(|r| format!("{r:.2}")).collect();
        println!("{:<46} {}", format!("  ratio of each round's pair ({} s each)", ROUND.as_secs()), each.join(" "));
        println!(
            "{:<46} {:>11.0} us {:>11.0} us {:>7.2}x",
            "  CPU per write (all 3 members)",
            ours_cpu_us,
            theirs_cpu_us,
            ours_cpu_us / theirs_cpu_us
        );
        for (label, percent) in [("p50", 50.0), ("p99", 99.0)] {
            let target = if *clients == 1 && label == "p99" { "<= etcd's" } else { "" };
            println!(
                "{:<46} {:>11.2} ms {:>11.2} ms {:>7.2}x {:>22}",
                format!("  commit latency {label}"),
                ours.percentile_ms(percent),
                theirs.percentile_ms(percent),
                ours.percentile_ms(percent) / theirs.percentile_ms(percent),
                target
            );
        }
    }
    let (ours_median, ours_max) = median_and_max(&shoal_failovers);
    let (theirs_median, theirs_max) = median_and_max(&etcd_failovers);
    println!(
        "{:<46} {:>11.0} ms {:>11.0} ms {:>7.2}x {:>22}",
        format!("leader failover, median of {KILLS} (kill -> write)"),
        ours_median,
        theirs_median,
        ours_median / theirs_median,
        ""
    );
    println!(
        "{:<46} {:>11.0} ms {:>11.0} ms {:>7.2}x {:>22}",
        format!("leader failover, max of {KILLS}"),
        ours_max,
        theirs_max,
        ours_max / theirs_max,
        "every one < 1000 ms"
    );
    println!("{:<46} {}", "  Shoal, each (ms)", join_ms(&shoal_failovers));
    println!("{:<46} {}", "  etcd, each (ms)", join_ms(&etcd_failovers));

    println!();
    println!("{:<46} {:>14} {:>16}", "encryption at rest (Shoal, 3 managers)", "ours", "target");
    println!("{:<46} {:>14.0} {:>16}", format!("store writes/s ({CLIENTS} clients, encrypted)"), writes_per_sec, ">= 5000");
    println!("{:<46} {:>14.0}", "  same, encryption at rest off (comparison)", plaintext_writes_per_sec);
    println!("{:<46} {:>14}", format!("  ({WRITE_ROUNDS} alternating rounds of {} s each)", ROUND.as_secs()), "");
    // CPU per write is what encryption adds; on a shared machine it moves
    // far less than writes/s with whatever else runs meanwhile.
    println!(
        "{:<46} {:>14}",
        "  manager CPU per write, encryption on / off",
        format!("{encrypted_cpu_us:.1} / {plaintext_cpu_us:.1} us")
    );
    println!("{:<46} {:>14} {:>16}", "  cost of encryption at rest", format!("{encryption_cost:.1} %"), "<= 15 %");
    println!("{:<46} {:>14} {:>16}", "idle manager daemon RSS (max of 3)", format!("{:.1} MiB", max_rss as f64 / 1024.0), "< 40 MiB");
}

/// kill -9 of the leader, then writes through a survivor until one is
/// acknowledged, [`KILLS`] times; each in milliseconds.
fn shoal_failovers(cluster: &Cluster, runtime: &tokio::runtime::Runtime, managers: &[&str]) -> Vec<f64> {
    let mut failovers = Vec::new();
    for round in 0..KILLS {
        let leader = leader(cluster, runtime, managers);
        let survivor = managers.iter().find(|m| **m != leader).expect("a survivor");
        let socket = cluster.host(survivor).socket;
        cluster.stop(&leader, true);
        let killed = Instant::now();
        let elapsed = runtime.block_on(load::first_acknowledged(killed, |n| {
            let socket = socket.clone();
            async move { create(&socket, &format!("failover-{round}-{n}")).await.is_ok() }
        }));
        eprintln!("shoal round {round}: killed {leader}, first write after {} ms", elapsed.as_millis());
        failovers.push(elapsed.as_secs_f64() * 1000.0);
        cluster.start(&leader);
        wait_for_quorum(cluster, runtime, &leader);
    }
    failovers
}

/// The same for etcd: kill -9 of its leader, writes through a survivor.
fn etcd_failovers(etcd: &mut EtcdCluster, runtime: &tokio::runtime::Runtime) -> Vec<f64> {
    let mut failovers = Vec::new();
    for round in 0..KILLS {
        let leader = wait_until(Duration::from_secs(10), "an etcd leader", || etcd.leader());
        let survivor = (leader + 1) % 3;
        let elapsed = runtime.block_on(async {
            let writer = EtcdWriter::connect(&etcd.endpoints()[survivor]).await.expect("connecting to etcd");
            etcd.kill(leader);
            let killed = Instant::now();
            load::first_acknowledged(killed, |n| {
                let mut writer = writer.clone();
                async move { writer.put(&format!("failover-{round}-{n}")).await }
            })
            .await
        });
        eprintln!("etcd round {round}: killed member {}, first write after {} ms", leader + 1, elapsed.as_millis());
        failovers.push(elapsed.as_secs_f64() * 1000.0);
        etcd.start(leader);
        runtime.block_on(etcd.wait_for_writes(leader, Duration::from_secs(30)));
    }
    failovers
}

fn median_and_max(values: &[f64]) -> (f64, f64) {
    if values.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    (sorted[sorted.len() / 2], sorted[sorted.len() - 1])
}

fn join_ms(values: &[f64]) -> String {
    values.iter().map(|v| format!("{v:.0}")).collect::<Vec<_>>().join(",")
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
/// User + system CPU seconds the processes have used so far, from
/// /proc/PID/stat (utime and stime, fields 14 and 15, in USER_HZ ticks,
/// which Linux fixes at 100 per second).
fn cpu_seconds(pids: &[u32]) -> f64 {
    let ticks: u64 = pids
        .iter()
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // The command name (field 2) may hold spaces; fields after it do not.
            let after_name = &stat[stat.rfind(')')? + 1..];
            let fields: Vec<&str> = after_name.split_whitespace().collect();
            Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
        })
        .sum();
    ticks as f64 / 100.0
}
