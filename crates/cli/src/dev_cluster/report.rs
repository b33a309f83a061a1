//! What `up`, `add` and `ls` print: docker-style tables, or JSON for scripts
//! and tests.

use serde::Serialize;
use tabled::settings::object::Columns;
use tabled::settings::{Padding, Style};
use tabled::{Table, Tabled};

use super::daemon;
use super::state::{ClusterState, HostState};

/// One host as `ls` shows it.
#[derive(Serialize, Tabled)]
struct HostRow {
    #[tabled(rename = "HOST")]
    name: String,
    #[tabled(rename = "ROLE")]
    role: String,
    #[tabled(rename = "ADDRESS")]
    address: String,
    #[tabled(rename = "SOCKET")]
    socket: String,
    #[tabled(rename = "PID", display = "display_pid")]
    pid: Option<u32>,
    #[tabled(rename = "RUNNING")]
    running: bool,
    #[tabled(skip)]
    netns: String,
    #[tabled(skip)]
    log: String,
}

fn display_pid(pid: &Option<u32>) -> String {
    pid.map(|p| p.to_string())
        .unwrap_or_else(|| "-".to_string())
}

fn row(host: &HostState) -> HostRow {
    HostRow {
        name: host.name.clone(),
        role: host.role.to_string(),
        address: host.address.to_string(),
        socket: host.socket.display().to_string(),
        pid: host.pid,
        running: daemon::is_running(host),
        netns: host.netns.clone(),
        log: host.log.display().to_string(),
    }
}

/// How `dev-cluster ls` prints.
#[derive(Debug, Clone, Copy, Default, clap::ValueEnum)]
pub enum LsFormat {
    #[default]
    Table,
    Json,
    /// Prometheus file_sd targets: every host's metrics endpoint
    /// (deploy/prometheus/dev-cluster.yml reads them).
    Prometheus,
}

pub fn print_hosts(state: &ClusterState, format: LsFormat) -> anyhow::Result<()> {
    let rows: Vec<HostRow> = state.hosts.iter().map(row).collect();
    match format {
        LsFormat::Table => println!("{}", render(rows)),
        LsFormat::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
        LsFormat::Prometheus => {
            // A simulator host runs no daemon, so serves no metrics.
            let groups: Vec<serde_json::Value> = state
                .hosts
                .iter()
                .filter(|host| host.role != super::plan::Role::Simulator)
                .map(|host| {
                    serde_json::json!({
                        "targets": [format!("{}:{}", host.address, daemon::METRICS_PORT)],
                        "labels": {"cluster": state.name, "host": host.name, "role": host.role.to_string()},
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&groups)?);
        }
    }
    Ok(())
}

/// After `up`: every host and how to reach it.
pub fn print_up(state: &ClusterState) {
    #[derive(Tabled)]
    struct Reach<'a> {
        #[tabled(rename = "HOST")]
        host: &'a str,
        #[tabled(rename = "ROLE")]
        role: String,
        #[tabled(rename = "ADDRESS")]
        address: String,
        #[tabled(rename = "SOCKET")]
        socket: String,
    }
    let rows = state.hosts.iter().map(|h| Reach {
        host: &h.name,
        role: h.role.to_string(),
        address: h.address.to_string(),
        socket: h.socket.display().to_string(),
    });
    println!("{}", render(rows));
    let Some(first) = state.hosts.first() else {
        return;
    };
    let name_flag = if state.name == "dev" {
        String::new()
    } else {
        format!(" --name {}", state.name)
    };
    println!();
    if state.network_only {
        println!("Hosts run no daemon (--network-only). Run commands inside one with:");
        println!(
            "  shoal dev-cluster exec {}{name_flag} -- ip addr",
            first.name
        );
    } else {
        // Standalone nodes have no node list; their containers are theirs.
        let command = if state.no_swarm { "container ls" } else { "node ls" };
        println!("Reach a host with either of:");
        println!(
            "  shoal dev-cluster exec {}{name_flag} -- shoal {command}",
            first.name
        );
        println!("  shoal -H {} {command}", first.host_uri());
    }
    println!("Remove the cluster with:");
    println!("  shoal dev-cluster down{name_flag}");
}

/// Docker's look: blank borders, no indent, no trailing spaces.
fn render<T: Tabled>(rows: impl IntoIterator<Item = T>) -> String {
    let mut table = Table::new(rows);
    table
        .with(Style::blank())
        .modify(Columns::first(), Padding::new(0, 1, 0, 0));
    table
        .to_string()
        .lines()
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("\n")
}

/// After `add`: the new host.
pub fn print_added(host: &HostState) {
    println!(
        "{} ({}) is up at {}: shoal -H {}",
        host.name,
        host.role,
        host.address,
        host.host_uri()
    );
}
