//! Certificates renew at half-life while the daemons keep running.

use std::time::Duration;

use crate::support::{wait_until, Cluster};
use crate::swarm_helpers::{wait_all_ready, wait_host_ready};

fn cert_expiry(cluster: &Cluster, node: &str) -> String {
    let out = cluster.shoal("manager1", &["node", "inspect", node]).ok();
    let nodes: serde_json::Value = out.stdout_json();
    nodes[0]["cert_expiry"].as_str().unwrap_or_default().to_string()
}

#[test]
fn node_certificates_renew_at_half_life_without_a_restart() {
    let cluster = Cluster::up("renew", 1, 1);
    wait_all_ready(&cluster, "manager1", 2);
    // Re-form the swarm with 20 s certificates so renewal happens in the test.
    cluster.shoal("worker1", &["swarm", "leave"]).ok();
    cluster.shoal("manager1", &["swarm", "leave", "--force"]).ok();
    let manager_ip = cluster.addr("manager1").to_string();
    cluster.shoal("manager1", &["swarm", "init", "--advertise-addr", &manager_ip, "--cert-expiry", "20s"]).ok();
    let token = cluster.shoal("manager1", &["swarm", "join-token", "-q", "worker"]).ok().stdout.trim().to_string();
    let worker_ip = cluster.addr("worker1").to_string();
    cluster
        .shoal("worker1", &["swarm", "join", "--token", &token, "--advertise-addr", &worker_ip, &format!("{manager_ip}:4242")])
        .ok();
    wait_host_ready(&cluster, "manager1", "worker1");

    let first = (cert_expiry(&cluster, "manager1"), cert_expiry(&cluster, "worker1"));
    wait_until(Duration::from_secs(25), "both certificates to renew", || {
        let now = (cert_expiry(&cluster, "manager1"), cert_expiry(&cluster, "worker1"));
        (now.0 != first.0 && now.1 != first.1).then_some(())
    });
    // Past the first certificates' expiry, everything still works.
    std::thread::sleep(Duration::from_secs(8));
    wait_host_ready(&cluster, "manager1", "worker1");
    let remote_ok = cluster.shoal("worker1", &["info", "--format", "json"]).ok();
    assert!(remote_ok.stdout.contains("\"active\""), "{}", remote_ok.stdout);
}
