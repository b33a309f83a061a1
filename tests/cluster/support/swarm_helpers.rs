//! Small readers over the CLI's JSON, shared by the control-plane tests.

use std::time::Duration;

use serde::Deserialize;

use super::{wait_until, Cluster};

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct NodeRow {
    pub id: String,
    pub hostname: String,
    pub role: String,
    pub status: String,
    pub availability: String,
    pub manager_status: Option<String>,
    pub addr: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Info {
    pub swarm: String,
    pub is_leader: bool,
}

pub fn node_ls(cluster: &Cluster, host: &str) -> Option<Vec<NodeRow>> {
    let out = cluster.shoal(host, &["node", "ls", "--format", "json"]);
    out.success().then(|| out.stdout_json())
}

pub fn info(cluster: &Cluster, host: &str) -> Option<Info> {
    let out = cluster.shoal(host, &["info", "--format", "json"]);
    out.success().then(|| out.stdout_json())
}

/// The manager host that currently leads, among `managers`.
pub fn leader(cluster: &Cluster, managers: &[&str]) -> String {
    wait_until(Duration::from_secs(10), "a leader to be elected", || {
        managers.iter().find(|m| info(cluster, m).is_some_and(|i| i.is_leader)).map(|m| m.to_string())
    })
}

/// Waits until `host` reports every node `ready` and the expected count.
pub fn wait_all_ready(cluster: &Cluster, host: &str, count: usize) -> Vec<NodeRow> {
    wait_until(Duration::from_secs(20), "every node to be ready", || {
        node_ls(cluster, host).filter(|nodes| nodes.len() == count && nodes.iter().all(|n| n.status == "ready"))
    })
}

/// `config create NAME FILE` through `host`; the file holds the name.
pub fn create_config(cluster: &Cluster, host: &str, name: &str) -> crate::support::Output {
    let path = std::env::temp_dir().join(format!("shoal-test-{}-{name}", std::process::id()));
    std::fs::write(&path, name).expect("writing a temp file");
    let path_str = path.display().to_string();
    let out = cluster.shoal(host, &["config", "create", name, &path_str]);
    let _ = std::fs::remove_file(&path);
    out
}

pub fn config_names(cluster: &Cluster, host: &str) -> Option<Vec<String>> {
    let out = cluster.shoal(host, &["config", "ls", "--format", "json"]);
    let configs: Vec<serde_json::Value> = out.success().then(|| out.stdout_json())?;
    Some(configs.iter().filter_map(|c| c["name"].as_str().map(String::from)).collect())
}

/// Waits until some node named `hostname` is ready, as `host` sees it.
pub fn wait_host_ready(cluster: &Cluster, host: &str, hostname: &str) {
    wait_until(Duration::from_secs(20), &format!("{hostname} to be ready"), || {
        node_ls(cluster, host)?.into_iter().find(|n| n.hostname == hostname && n.status == "ready")
    });
}
