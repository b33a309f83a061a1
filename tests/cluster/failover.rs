//! Managers fail and the swarm keeps its state and keeps accepting writes.

use std::time::{Duration, Instant};

use crate::support::{wait_until, Cluster};
use crate::swarm_helpers::{config_names, create_config, leader, node_ls, wait_all_ready};

const MANAGERS: [&str; 3] = ["manager1", "manager2", "manager3"];

/// kill -9 of the leader, then config creates (named `PREFIX-N`) through
/// a survivor until one succeeds: the old leader, that survivor, and the
/// time from the kill to that write.
fn kill_leader_and_time_first_write(cluster: &Cluster, prefix: &str) -> (String, String, Duration) {
    let old = leader(cluster, &MANAGERS);
    let survivor = MANAGERS.iter().find(|m| **m != old).unwrap().to_string();
    cluster.stop(&old, true);
    let killed_at = Instant::now();
    let mut attempt = 0;
    let elapsed = wait_until(Duration::from_secs(10), "a write after the leader died", || {
        attempt += 1;
        create_config(cluster, &survivor, &format!("{prefix}-{attempt}")).success().then(|| killed_at.elapsed())
    });
    (old, survivor, elapsed)
}

#[test]
fn killing_the_leader_elects_a_new_one_and_writes_resume_within_two_seconds() {
    let cluster = Cluster::up("kill", 3, 0);
    wait_all_ready(&cluster, "manager1", 3);
    let (old, survivor, elapsed) = kill_leader_and_time_first_write(&cluster, "after-kill");
    eprintln!("leader failover: first successful write {elapsed:?} after kill -9");
    assert!(elapsed < Duration::from_secs(2), "writes resumed only after {elapsed:?}");

    let old_id = wait_until(Duration::from_secs(10), "the old leader to show unreachable", || {
        node_ls(&cluster, &survivor)?
            .into_iter()
            .find(|n| n.hostname == old && n.manager_status.as_deref() == Some("unreachable") && n.status == "down")
            .map(|n| n.id)
    });

    // Restarted, the old leader rejoins and catches up on what it missed.
    cluster.start(&old);
    wait_until(Duration::from_secs(15), "the old leader to catch up", || {
        config_names(&cluster, &old).filter(|names| names.iter().any(|n| n.starts_with("after-kill-")))
    });
    wait_until(Duration::from_secs(15), "the old leader to be reachable again", || {
        node_ls(&cluster, &survivor)?
            .into_iter()
            .find(|n| n.id == old_id && n.status == "ready" && n.manager_status.as_deref() != Some("unreachable"))
    });
}

/// The bench holds every failover under 1 s (`control_plane`); CI machines
/// are noisier, so the test's bound is 2 s, for the slowest of 20.
const FAILOVER_BOUND: Duration = Duration::from_secs(2);
const KILLS: usize = 20;

#[test]
fn twenty_leader_kills_under_load_each_fail_over_within_two_seconds() {
    let cluster = Cluster::up("kill20", 3, 0);
    wait_all_ready(&cluster, "manager1", 3);
    // Writers through every manager all along; a write through the dead one
    // simply fails.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (stop, sockets): (_, Vec<_>) = (stop.clone(), MANAGERS.iter().map(|m| cluster.host(m).socket).collect());
        std::thread::spawn(move || {
            let mut written = 0u64;
            for n in 0u64.. {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let socket = &sockets[n as usize % sockets.len()];
                let path = std::env::temp_dir().join(format!("shoal-kill20-{}", std::process::id()));
                let _ = std::fs::write(&path, b"x");
                let host = format!("unix://{}", socket.display());
                let args = ["-H", host.as_str(), "config", "create", &format!("load-{n}"), path.to_str().unwrap_or_default()];
                if crate::support::run(crate::support::SHOAL, &args, Duration::from_secs(10)).success() {
                    written += 1;
                }
            }
            written
        })
    };
    let mut failovers = Vec::new();
    for round in 0..KILLS {
        let (old, _, elapsed) = kill_leader_and_time_first_write(&cluster, &format!("kill{round}"));
        eprintln!("round {round}: killed {old}, first write after {} ms", elapsed.as_millis());
        failovers.push(elapsed);
        cluster.start(&old);
        // Back in Raft before the next kill, so a majority always remains.
        wait_until(Duration::from_secs(15), "the restarted manager to take part again", || {
            create_config(&cluster, &old, &format!("back{round}")).success().then_some(())
        });
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = load.join().expect("the load thread");
    let slowest = failovers.iter().max().copied().unwrap_or_default();
    let mut sorted = failovers.clone();
    sorted.sort();
    eprintln!("{KILLS} failovers under load ({written} load writes): median {:?}, max {slowest:?}", sorted[KILLS / 2]);
    assert!(written > 0, "the load wrote nothing");
    assert!(slowest < FAILOVER_BOUND, "the slowest of {KILLS} failovers took {slowest:?}: {failovers:?}");
}

#[test]
fn a_partitioned_leader_cannot_write_and_the_majority_carries_on() {
    let cluster = Cluster::up("part", 3, 0);
    wait_all_ready(&cluster, "manager1", 3);
    let old = leader(&cluster, &MANAGERS);
    let majority: Vec<&str> = MANAGERS.iter().copied().filter(|m| *m != old).collect();

    cluster.partition(&old);
    let minority = create_config(&cluster, &old, "from-minority");
    assert!(!minority.success(), "the minority side accepted a write");
    assert!(
        minority.stderr.contains("majority") || minority.stderr.contains("quorum"),
        "unclear refusal: {}",
        minority.stderr
    );

    wait_until(Duration::from_secs(10), "the majority to accept a write", || {
        create_config(&cluster, majority[0], "from-majority").success().then_some(())
    });
    let new_leader = leader(&cluster, &majority);
    assert_ne!(new_leader, old);

    cluster.heal(&old);
    wait_until(Duration::from_secs(20), "the healed manager to converge", || {
        config_names(&cluster, &old).filter(|names| names.iter().any(|n| n == "from-majority") && !names.iter().any(|n| n == "from-minority"))
    });
    wait_until(Duration::from_secs(15), "all managers reachable again", || {
        node_ls(&cluster, majority[0]).filter(|nodes| {
            nodes.iter().all(|n| n.status == "ready" && n.manager_status.as_deref() != Some("unreachable"))
        })
    });
}

#[test]
fn acknowledged_writes_survive_kill_9_of_every_manager() {
    let cluster = Cluster::up("durab", 3, 0);
    wait_all_ready(&cluster, "manager1", 3);

    // Write until every manager has been killed; record what was acknowledged.
    let acknowledged = std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let mut acknowledged = Vec::new();
            let started = Instant::now();
            let mut i = 0;
            while started.elapsed() < Duration::from_secs(3) {
                i += 1;
                let name = format!("w{i}");
                if create_config(&cluster, "manager1", &name).success() {
                    acknowledged.push(name);
                }
            }
            acknowledged
        });
        std::thread::sleep(Duration::from_millis(1500));
        for host in MANAGERS {
            cluster.stop(host, true);
        }
        writer.join().expect("writer thread")
    });
    assert!(!acknowledged.is_empty(), "no write was acknowledged before the kills");

    for host in MANAGERS {
        cluster.start(host);
    }
    let names = wait_until(Duration::from_secs(20), "the restarted managers to serve reads", || {
        config_names(&cluster, "manager2")
    });
    let lost: Vec<&String> = acknowledged.iter().filter(|a| !names.contains(a)).collect();
    assert!(lost.is_empty(), "acknowledged writes lost after restart: {lost:?}");
}

#[test]
fn force_new_cluster_recovers_a_swarm_that_lost_quorum_from_the_survivor() {
    let cluster = Cluster::up("fnc", 3, 1);
    wait_all_ready(&cluster, "manager1", 4);
    create_config(&cluster, "manager1", "before-the-loss").ok();
    wait_until(Duration::from_secs(10), "the write to reach manager3", || {
        config_names(&cluster, "manager3").filter(|names| names.iter().any(|n| n == "before-the-loss"))
    });

    // Two of three managers gone for good: no majority, no writes.
    cluster.stop("manager1", true);
    cluster.stop("manager2", true);
    let stuck = create_config(&cluster, "manager3", "without-quorum");
    assert!(!stuck.success(), "a write succeeded without a majority");

    let out = cluster.shoal("manager3", &["swarm", "init", "--force-new-cluster"]).ok();
    assert!(out.stdout.contains("Swarm initialized"), "{}", out.stdout);
    // The survivor's state is kept, it leads alone, and writes work again.
    let names = config_names(&cluster, "manager3").expect("config ls on the recovered manager");
    assert!(names.iter().any(|n| n == "before-the-loss"), "{names:?}");
    assert!(!names.iter().any(|n| n == "without-quorum"), "{names:?}");
    create_config(&cluster, "manager3", "after-recovery").ok();
    // The lost managers are dropped; the worker finds the survivor and is ready.
    let nodes = wait_until(Duration::from_secs(20), "manager3 and the worker, both ready", || {
        node_ls(&cluster, "manager3").filter(|nodes| nodes.len() == 2 && nodes.iter().all(|n| n.status == "ready"))
    });
    let hostnames: Vec<&str> = nodes.iter().map(|n| n.hostname.as_str()).collect();
    assert!(hostnames.contains(&"manager3") && hostnames.contains(&"worker1"), "{nodes:?}");
    let me = nodes.iter().find(|n| n.hostname == "manager3").unwrap();
    assert_eq!(me.manager_status.as_deref(), Some("leader"), "{nodes:?}");
}
