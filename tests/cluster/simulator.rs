//! The scale simulator at the size CI affords in a debug build: the real
//! managers against 150 simulated nodes holding 3,000 tasks (the issue's
//! 500 nodes and 10,000 tasks take 50 s in a release build, longer than
//! the suite allows in debug). Every task runs
//! on exactly one node, and the managers' record agrees with what the
//! nodes run, after placement, after a tenth of the nodes is lost at once,
//! and after the leader is killed.

use std::time::Duration;

use crate::support::{run, unique_name, SHOAL};

const NODES: usize = 150;
const TASKS_PER_NODE: usize = 20;

#[test]
fn every_task_runs_exactly_once_through_node_loss_and_failover() {
    let name = unique_name("sim");
    let nodes = NODES.to_string();
    let per_node = TASKS_PER_NODE.to_string();
    let args = ["dev-cluster", "sim", "--name", &name, "--nodes", &nodes, "--tasks-per-node", &per_node, "--format", "json"];
    // The simulator removes its cluster on every outcome; a killed run is
    // reaped by the next `up` of the name.
    let out = run(SHOAL, &args, Duration::from_secs(400)).ok();
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("the report is not JSON ({e}): {}", out.stdout));
    let tasks = (NODES * TASKS_PER_NODE) as u64;
    assert_eq!(report["tasks"], tasks);
    for phase in ["check_placement", "check_after_loss", "check_after_failover"] {
        let check = &report[phase];
        assert_eq!(check["managers_running"], tasks, "{phase}: {check}");
        assert_eq!(check["nodes_running"], tasks, "{phase}: {check}");
        assert_eq!(check["duplicates"], 0, "{phase}: {check}");
        assert_eq!(check["mismatched"], 0, "{phase}: {check}");
    }
    assert_eq!(report["lost_nodes"], (NODES / 10) as u64);
    // One task starting on a network that spans every node: each node hears
    // of it in a few small messages, never a resent list of every peer.
    let fan_out = &report["fan_out"];
    let messages = fan_out["messages"].as_f64().unwrap_or(f64::MAX);
    let bytes = fan_out["bytes"].as_f64().unwrap_or(f64::MAX);
    assert!(messages <= 5.0 * NODES as f64, "one task start sent {messages} messages to {NODES} nodes: {fan_out}");
    assert!(bytes / messages.max(1.0) < 1024.0, "one task start sent {bytes} bytes in {messages} messages: {fan_out}");
    // Heartbeats reach the leader, relayed or not, about once per node per second.
    let heartbeats = report["steady"]["heartbeats_per_second"].as_f64().unwrap_or(0.0);
    assert!(heartbeats > NODES as f64 * 0.5, "the leader recorded {heartbeats} heartbeats/s from {NODES} nodes");
    assert_eq!(report["pool"]["joined"], NODES as u64);
    eprintln!("{}", out.stdout);
}
