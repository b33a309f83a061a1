//! A swarm forms, every manager agrees on it, and workers stay out of the
//! control API.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::{wait_until, Cluster};
use crate::swarm_helpers::{config_names, create_config, node_ls, wait_all_ready};

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
    // A manager's Raft data key appears with the role and goes with it
    // (deleting it crypto-erases whatever Raft data is left).
    let dek = raft_dek_file(&cluster, "worker1");
    assert!(dek.exists(), "{} missing on a manager", dek.display());
    cluster.shoal("manager1", &["node", "demote", "worker1"]).ok();
    wait_until(Duration::from_secs(20), "worker1 to be a worker again", || {
        node_ls(&cluster, "manager1").filter(|nodes| {
            nodes.iter().any(|n| n.hostname == "worker1" && n.role == "worker" && n.manager_status.is_none())
        })
    });
    let refused = cluster.shoal("worker1", &["node", "ls"]);
    assert!(!refused.success());
    wait_until(Duration::from_secs(10), "the demoted node to delete its Raft data key", || (!dek.exists()).then_some(()));
}

/// A host's daemon data root (`dev-cluster` keeps it beside the daemon log).
fn data_root(cluster: &Cluster, host: &str) -> PathBuf {
    cluster.host(host).log.with_file_name("data")
}

fn raft_dek_file(cluster: &Cluster, host: &str) -> PathBuf {
    data_root(cluster, host).join("swarm/certs/raft-dek")
}

/// Files under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display())) {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            found.extend(files_containing(&path, needle));
        } else if std::fs::read(&path).is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle)) {
            found.push(path);
        }
    }
    found
}

/// Every manager encrypts its Raft files with its own data key, kept beside
/// its TLS key: a distinctive config value is nowhere in them, yet every
/// manager has it back after all of them restart.
#[test]
fn managers_keep_their_raft_files_encrypted_at_rest() {
    const MANAGERS: [&str; 3] = ["manager1", "manager2", "manager3"];
    let cluster = Cluster::up("atrest", 3, 0);
    wait_all_ready(&cluster, "manager1", 3);
    // create_config stores the name as the value too.
    let needle = "atrest-zq7f3a-distinctive";
    create_config(&cluster, "manager1", needle).ok();
    for host in MANAGERS {
        wait_until(Duration::from_secs(10), "every manager to apply the config", || {
            config_names(&cluster, host).filter(|names| names.iter().any(|n| n == needle))
        });
    }
    // Stopped, so what they hold is on disk and no daemon writes meanwhile.
    for host in MANAGERS {
        cluster.stop(host, false);
    }
    let mut keys = Vec::new();
    for host in MANAGERS {
        let raft = data_root(&cluster, host).join("swarm/manager/raft");
        let db_len = std::fs::metadata(raft.join("db")).map(|m| m.len()).unwrap_or(0);
        assert!(db_len > 0, "{host} has no Raft database at {}", raft.display());
        assert_eq!(files_containing(&raft, needle.as_bytes()), Vec::<PathBuf>::new(), "{host} stores the value in plaintext");
        let dek = raft_dek_file(&cluster, host);
        let mode = std::fs::metadata(&dek).unwrap_or_else(|e| panic!("{}: {e}", dek.display())).permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{} is not private", dek.display());
        keys.push(std::fs::read(&dek).expect("reading the key file"));
    }
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 3, "managers share a data key");

    for host in MANAGERS {
        cluster.start(host);
    }
    for host in MANAGERS {
        wait_until(Duration::from_secs(20), "the restarted managers to read the config back", || {
            config_names(&cluster, host).filter(|names| names.iter().any(|n| n == needle))
        });
    }
}
