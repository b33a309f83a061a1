//! `shoal node ...`.

use std::collections::BTreeMap;

use serde::Serialize;
use shoal_proto::pb;

use crate::client::ConnectArgs;
use crate::error::{CliError, CliResult};
use crate::output::{print_json, print_table, Format};

#[derive(Debug, clap::Subcommand)]
#[command(defer = true)]
pub enum NodeCommand {
    /// List nodes
    Ls {
        /// Only display ids
        #[arg(short, long)]
        quiet: bool,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Show one or more nodes in detail (JSON)
    Inspect {
        #[arg(required = true)]
        nodes: Vec<String>,
    },
    /// Promote nodes to managers
    Promote {
        #[arg(required = true)]
        nodes: Vec<String>,
    },
    /// Demote managers to workers
    Demote {
        #[arg(required = true)]
        nodes: Vec<String>,
    },
    /// Remove nodes from the swarm
    Rm {
        /// Remove even if the node is not down
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        nodes: Vec<String>,
    },
    /// Change a node's availability or labels
    Update {
        #[arg(long, value_parser = ["active", "pause", "drain"])]
        availability: Option<String>,
        /// Add or change a label (KEY=VALUE)
        #[arg(long = "label-add", value_name = "KEY=VALUE")]
        label_add: Vec<String>,
        /// Remove a label
        #[arg(long = "label-rm", value_name = "KEY")]
        label_rm: Vec<String>,
        node: String,
    },
    /// List tasks on nodes (default: this node)
    Ps {
        /// Node id, id prefix or hostname
        nodes: Vec<String>,
        #[command(flatten)]
        flags: crate::commands::service::tasks::PsFlags,
    },
}

/// A node as `--format json` and `inspect` show it.
#[derive(Serialize)]
struct NodeJson<'a> {
    id: &'a str,
    hostname: &'a str,
    role: &'a str,
    status: &'a str,
    availability: &'a str,
    manager_status: Option<&'a str>,
    addr: &'a str,
    labels: BTreeMap<&'a str, &'a str>,
    version: u64,
    created_at: &'a str,
    updated_at: &'a str,
    desired_role: &'a str,
    cert_expiry: &'a str,
}

fn to_json(node: &pb::Node) -> NodeJson<'_> {
    NodeJson {
        id: &node.id,
        hostname: &node.hostname,
        role: &node.role,
        status: &node.status,
        availability: &node.availability,
        manager_status: (!node.manager_status.is_empty()).then_some(node.manager_status.as_str()),
        addr: &node.addr,
        labels: node.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect(),
        version: node.version,
        created_at: &node.created_at,
        updated_at: &node.updated_at,
        desired_role: &node.desired_role,
        cert_expiry: &node.cert_expiry,
    }
}

fn parse_label(value: &str) -> CliResult<(String, String)> {
    match value.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        None if !value.is_empty() => Ok((value.to_string(), String::new())),
        _ => Err(CliError::msg(format!("label {value:?} is invalid; use KEY=VALUE"))),
    }
}

pub async fn run(command: NodeCommand, connect: &ConnectArgs) -> CliResult {
    let mut control = pb::control_client::ControlClient::new(connect.connect().await?);
    match command {
        NodeCommand::Ls { quiet, format } => {
            let reply = control.list_nodes(pb::ListNodesRequest {}).await?.into_inner();
            if quiet {
                for node in &reply.nodes {
                    println!("{}", node.id);
                }
            } else if format == Format::Json {
                print_json(&reply.nodes.iter().map(to_json).collect::<Vec<_>>())?;
            } else {
                let rows = reply
                    .nodes
                    .iter()
                    .map(|n| {
                        let marker = if n.id == reply.self_id { " *" } else { "" };
                        vec![
                            format!("{}{marker}", n.id),
                            n.hostname.clone(),
                            title(&n.status),
                            title(&n.availability),
                            title(&n.manager_status),
                        ]
                    })
                    .collect();
                print_table(&["ID", "HOSTNAME", "STATUS", "AVAILABILITY", "MANAGER STATUS"], rows);
            }
        }
        NodeCommand::Inspect { nodes } => {
            let mut found = Vec::new();
            for node in nodes {
                found.push(control.inspect_node(pb::NodeRef { node }).await?.into_inner());
            }
            print_json(&found.iter().map(to_json).collect::<Vec<_>>())?;
        }
        NodeCommand::Promote { nodes } => {
            for node in nodes {
                let n = control.promote_node(pb::NodeRef { node }).await?.into_inner();
                println!("Node {} promoted to a manager in the swarm.", n.hostname);
            }
        }
        NodeCommand::Demote { nodes } => {
            for node in nodes {
                let n = control.demote_node(pb::NodeRef { node }).await?.into_inner();
                println!("Manager {} demoted in the swarm.", n.hostname);
            }
        }
        NodeCommand::Rm { force, nodes } => {
            for node in nodes {
                control.remove_node(pb::RemoveNodeRequest { node: node.clone(), force }).await?;
                println!("{node}");
            }
        }
        NodeCommand::Update { availability, label_add, label_rm, node } => {
            let label_add = label_add.iter().map(|l| parse_label(l)).collect::<CliResult<_>>()?;
            let n = control
                .update_node(pb::UpdateNodeRequest { node, availability: availability.unwrap_or_default(), label_add, label_rm })
                .await?
                .into_inner();
            println!("{}", n.id);
        }
        NodeCommand::Ps { nodes, flags } => crate::commands::service::node_ps(&mut control, nodes, &flags).await?,
    }
    Ok(())
}

/// "ready" -> "Ready", as docker prints states.
fn title(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}
