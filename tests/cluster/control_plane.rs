//! A swarm forms, every manager agrees on it, and workers stay out of the
//! control API.

use std::time::Duration;

use crate::support::{wait_until, Cluster};
use crate::swarm_helpers::{node_ls, wait_all_ready};

#[test]
fn three_managers_and_two_workers_form_and_agree_on_node_ls() {
    let cluster = Cluster::up("form", 3, 2);
    let reference = wait_all_ready(&cluster, "manager1", 5);

    let managers: Vec<_> = reference.iter().filter(|n| n.role == "manager").collect();
    assert_eq!(managers.len(), 3, "{reference:?}");
    assert_eq!(managers.iter().filter(|n| n.manager_status.as_deref() == Some("leader")).count(), 1);
    assert!(reference.iter().filter(|n| n.role == "worker").all(|n| n.manager_status.is_none()));

    // Every manager shows the same nodes with the same state once heartbeats settle.
    for host in ["manager2", "manager3"] {
        wait_until(Duration::from_secs(10), "managers to agree on node ls", || {
            node_ls(&cluster, host).filter(|nodes| *nodes == reference)
        });
    }

    // The human table marks the node the CLI talks to.
    let table = cluster.shoal("manager2", &["node", "ls"]).ok();
    assert!(table.stdout.starts_with("ID"), "{}", table.stdout);
    assert!(table.stdout.contains(" * "), "current node is not marked:\n{}", table.stdout);
    assert!(table.stdout.contains("Leader"), "{}", table.stdout);

    // Workers hold no cluster state and say so.
    let refused = cluster.shoal("worker1", &["node", "ls"]);
    assert!(!refused.success());
    assert!(refused.stderr.contains("not a swarm manager"), "{}", refused.stderr);

    let ids = cluster.shoal("manager3", &["node", "ls", "-q"]).ok();
    assert_eq!(ids.lines().len(), 5);
}

#[test]
fn node_update_labels_and_availability_and_a_removed_node_is_gone() {
    let cluster = Cluster::up("nodeup", 1, 2);
    wait_all_ready(&cluster, "manager1", 3);
    cluster
        .shoal("manager1", &["node", "update", "--availability", "drain", "--label-add", "zone=a", "worker1"])
        .ok();
    let inspected = cluster.shoal("manager1", &["node", "inspect", "worker1"]).ok();
    let nodes: serde_json::Value = inspected.stdout_json();
    assert_eq!(nodes[0]["availability"], "drain");
    assert_eq!(nodes[0]["labels"]["zone"], "a");

    let bad = cluster.shoal("manager1", &["node", "update", "--label-rm", "nope", "worker1"]);
    assert!(!bad.success() && bad.stderr.contains("no label \"nope\""), "{}", bad.stderr);

    // A live node needs --force; a removed node's certificate stops working.
    let live = cluster.shoal("manager1", &["node", "rm", "worker2"]);
    assert!(!live.success() && live.stderr.contains("is not down"), "{}", live.stderr);
    cluster.shoal("manager1", &["node", "rm", "--force", "worker2"]).ok();
    wait_until(Duration::from_secs(10), "worker2 to leave", || {
        node_ls(&cluster, "manager1").filter(|nodes| nodes.len() == 2)
    });
    wait_until(Duration::from_secs(10), "worker2 to forget the swarm", || {
        crate::swarm_helpers::info(&cluster, "worker2").filter(|i| i.swarm == "inactive")
    });
}

#[test]
fn promote_and_demote_change_raft_membership() {
    let cluster = Cluster::up("promo", 1, 2);
    wait_all_ready(&cluster, "manager1", 3);
    cluster.shoal("manager1", &["node", "promote", "worker1"]).ok();
    // The promoted node renews its certificate, joins Raft and serves the API.
    wait_until(Duration::from_secs(20), "worker1 to become a reachable manager", || {
        node_ls(&cluster, "worker1").filter(|nodes| {
            nodes.iter().any(|n| n.hostname == "worker1" && n.role == "manager" && n.manager_status.as_deref() == Some("reachable"))
        })
    });
    cluster.shoal("manager1", &["node", "demote", "worker1"]).ok();
    wait_until(Duration::from_secs(20), "worker1 to be a worker again", || {
        node_ls(&cluster, "manager1").filter(|nodes| {
            nodes.iter().any(|n| n.hostname == "worker1" && n.role == "worker" && n.manager_status.is_none())
        })
    });
    let refused = cluster.shoal("worker1", &["node", "ls"]);
    assert!(!refused.success());
}
