//! Managers fail and the swarm keeps its state and keeps accepting writes.

use std::time::{Duration, Instant};

use crate::support::{wait_until, Cluster};
use crate::swarm_helpers::{config_names, create_config, leader, node_ls, wait_all_ready};

const MANAGERS: [&str; 3] = ["manager1", "manager2", "manager3"];

#[test]
fn killing_the_leader_elects_a_new_one_and_writes_resume_within_two_seconds() {
    let cluster = Cluster::up("kill", 3, 0);
    wait_all_ready(&cluster, "manager1", 3);
    let old = leader(&cluster, &MANAGERS);
    let survivor = MANAGERS.iter().find(|m| **m != old).unwrap().to_string();

    cluster.stop(&old, true);
    let killed_at = Instant::now();
    let mut attempt = 0;
    let elapsed = wait_until(Duration::from_secs(10), "a write after the leader died", || {
        attempt += 1;
        create_config(&cluster, &survivor, &format!("after-kill-{attempt}")).success().then(|| killed_at.elapsed())
    });
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
