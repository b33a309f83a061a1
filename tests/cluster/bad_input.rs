//! Mistakes get one clear sentence, a non-zero exit, and change nothing.

use std::time::{Duration, Instant};

use crate::support::{Cluster, Output};
use crate::swarm_helpers::{info, wait_all_ready, wait_host_ready};

#[track_caller]
fn refused(out: &Output, needle: &str) {
    assert!(!out.success(), "`{}` succeeded", out.command);
    assert!(out.stderr.contains(needle), "`{}`: expected {needle:?} in:\n{}", out.command, out.stderr);
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    assert_eq!(out.stderr.trim().lines().count(), 1, "not one sentence:\n{}", out.stderr);
}

#[test]
fn bad_swarm_commands_are_refused_and_write_nothing() {
    let cluster = Cluster::up("badin", 1, 1);
    wait_all_ready(&cluster, "manager1", 2);
    cluster.shoal("worker1", &["swarm", "leave"]).ok();
    let inactive = |host: &str| info(&cluster, host).map(|i| i.swarm).as_deref() == Some("inactive");

    refused(&cluster.shoal("worker1", &["swarm", "init", "--advertise-addr", "not-an-ip"]), "advertise address \"not-an-ip\" is invalid");
    assert!(inactive("worker1"));
    let worker_ip = cluster.addr("worker1").to_string();
    let too_long = ["swarm", "init", "--advertise-addr", &worker_ip, "--orphan-grace-period", "2h"];
    refused(&cluster.shoal("worker1", &too_long), "orphan grace period 7200000ms");
    let history = ["swarm", "init", "--advertise-addr", &worker_ip, "--task-history-limit", "0"];
    refused(&cluster.shoal("worker1", &history), "task history limit 0");
    assert!(inactive("worker1"));

    let manager = format!("{}:4242", cluster.addr("manager1"));
    refused(&cluster.shoal("worker1", &["swarm", "join", "--token", "SHLTKN-1-nonsense", &manager]), "join token");
    assert!(inactive("worker1"));

    let nowhere = format!("198.18.{}.250:4242", cluster.subnet_index());
    let token = cluster.shoal("manager1", &["swarm", "join-token", "-q", "worker"]).ok().stdout.trim().to_string();
    let started = Instant::now();
    let unreachable = cluster.shoal("worker1", &["swarm", "join", "--token", &token, &nowhere]);
    refused(&unreachable, "manager 198.18.");
    assert!(started.elapsed() < Duration::from_secs(15), "join hung for {:?}", started.elapsed());
    assert!(inactive("worker1"));

    refused(&cluster.shoal("manager1", &["swarm", "init", "--advertise-addr", "198.18.0.9"]), "already part of a swarm");

    let advertise = cluster.addr("worker1").to_string();
    cluster.shoal("worker1", &["swarm", "join", "--token", &token, "--advertise-addr", &advertise, &manager]).ok();
    refused(
        &cluster.shoal("worker1", &["swarm", "join", "--token", &token, "--advertise-addr", &advertise, &manager]),
        "already part of a swarm",
    );

    refused(&cluster.shoal("manager1", &["node", "demote", "manager1"]), "last manager");
    refused(&cluster.shoal("manager1", &["swarm", "leave"]), "this node is a manager");
    refused(&cluster.shoal("manager1", &["node", "update", "--label-add", "=x", "worker1"]), "label");
    refused(&cluster.shoal("manager1", &["node", "inspect", "no-such-node"]), "not found");
    wait_host_ready(&cluster, "manager1", "worker1");
}
