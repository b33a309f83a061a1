//! `shoal system df` and `shoal system prune`: where this node's disk went
//! and giving back what nothing uses, as docker's.

use shoal_proto::pb;

use crate::client::ConnectArgs;
use crate::commands::image::human_size;
use crate::error::CliResult;
use crate::output::{print_json, print_table, Format};

#[derive(Debug, clap::Subcommand)]
#[command(defer = true)]
pub enum SystemCommand {
    /// Show the disk the node's images, containers, volumes and logs use
    Df {
        /// Each image, container, volume and log too
        #[arg(short, long)]
        verbose: bool,
        /// table, or json (every item, sizes in bytes)
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Remove stopped containers, unused local networks and images without a name
    Prune {
        /// Every image no container uses, not only those without a name
        #[arg(short, long)]
        all: bool,
        /// Volumes no container uses, too
        #[arg(long)]
        volumes: bool,
        /// Accepted for docker compatibility; prune never asks
        #[arg(short, long)]
        force: bool,
    },
}

fn title(kind: pb::DiskUsageKind) -> &'static str {
    match kind {
        pb::DiskUsageKind::Images => "Images",
        pb::DiskUsageKind::Containers => "Containers",
        pb::DiskUsageKind::Volumes => "Local Volumes",
        pb::DiskUsageKind::Logs => "Container Logs",
        pb::DiskUsageKind::Unspecified => "Other",
    }
}

/// docker's RECLAIMABLE column: `11.6MB (70%)`.
fn reclaimable(category: &pb::DiskUsageCategory) -> String {
    let size: u64 = category.items.iter().map(|i| i.size_bytes).sum();
    let free: u64 = category.items.iter().filter(|i| !i.active).map(|i| i.size_bytes).sum();
    let percent = (free * 100).checked_div(size).unwrap_or(0);
    format!("{} ({percent}%)", human_size(free))
}

/// docker's "Deleted Containers:" block, when there is anything in it.
fn print_deleted(what: &str, deleted: &[String], prefix: &str) {
    if deleted.is_empty() {
        return;
    }
    println!("Deleted {what}:");
    deleted.iter().for_each(|d| println!("{prefix}{d}"));
    println!();
}

pub async fn run(command: SystemCommand, connect: &ConnectArgs) -> CliResult {
    let channel = connect.connect().await?;
    let mut runtime = pb::runtime_client::RuntimeClient::new(channel.clone());
    match command {
        SystemCommand::Df { verbose, format } => {
            let usage = runtime.disk_usage(pb::Empty {}).await?.into_inner();
            if format == Format::Json {
                let categories: Vec<serde_json::Value> = usage
                    .categories
                    .iter()
                    .map(|c| {
                        let items: Vec<serde_json::Value> =
                            c.items.iter().map(|i| serde_json::json!({"name": i.name, "size": i.size_bytes, "active": i.active})).collect();
                        serde_json::json!({"type": title(c.kind()), "items": items})
                    })
                    .collect();
                return print_json(&categories);
            }
            let rows = usage
                .categories
                .iter()
                .map(|c| {
                    vec![
                        title(c.kind()).to_string(),
                        c.items.len().to_string(),
                        c.items.iter().filter(|i| i.active).count().to_string(),
                        human_size(c.items.iter().map(|i| i.size_bytes).sum()),
                        reclaimable(c),
                    ]
                })
                .collect();
            print_table(&["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"], rows);
            if verbose {
                for category in &usage.categories {
                    println!();
                    println!("{}:", title(category.kind()));
                    let rows = category
                        .items
                        .iter()
                        .map(|i| vec![i.name.clone(), human_size(i.size_bytes), if i.active { "yes" } else { "no" }.to_string()])
                        .collect();
                    print_table(&["NAME", "SIZE", "IN USE"], rows);
                }
            }
            Ok(())
        }
        SystemCommand::Prune { all, volumes, force: _ } => {
            let containers = runtime.prune_containers(pb::Empty {}).await?.into_inner();
            print_deleted("Containers", &containers.deleted, "");
            let mut reclaimed = containers.reclaimed_bytes;
            // The node's own bridge networks; the swarm's are the managers'.
            let mut networks = pb::local_networks_client::LocalNetworksClient::new(channel);
            print_deleted("Networks", &networks.prune_networks(pb::Empty {}).await?.into_inner().deleted, "");
            if volumes {
                let pruned = runtime.prune_volumes(pb::Empty {}).await?.into_inner();
                print_deleted("Volumes", &pruned.deleted, "");
                reclaimed += pruned.reclaimed_bytes;
            }
            let images = runtime.prune_images(pb::PruneImagesRequest { all }).await?.into_inner();
            print_deleted("Images", &images.deleted, "deleted: ");
            reclaimed += images.reclaimed_bytes;
            println!("Total reclaimed space: {}", human_size(reclaimed));
            Ok(())
        }
    }
}
