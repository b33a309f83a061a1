//! `shoal volume ...`: this node's named volumes, as `docker volume ...`.

use std::collections::BTreeMap;

use serde::Serialize;
use shoal_proto::pb;

use crate::client::ConnectArgs;
use crate::commands::flags;
use crate::error::CliResult;
use crate::output::{print_json, print_table, Format};

#[derive(Debug, clap::Subcommand)]
#[command(defer = true)]
pub enum VolumeCommand {
    /// Create a volume (a random name if none is given)
    Create {
        /// Set a label (KEY=VALUE)
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        name: Option<String>,
    },
    /// List volumes
    Ls {
        /// Only names
        #[arg(short, long)]
        quiet: bool,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Show volumes in detail (JSON)
    Inspect {
        #[arg(required = true)]
        volumes: Vec<String>,
    },
    /// Remove volumes (refused while a container uses one)
    Rm {
        /// Accepted for docker compatibility; a volume in use is still kept
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        volumes: Vec<String>,
    },
    /// Remove every volume no container uses
    Prune {
        /// Do not ask (there is no prompt; accepted for docker compatibility)
        #[arg(short, long)]
        force: bool,
    },
}

/// docker's `volume inspect` field names.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct VolumeJson<'a> {
    created_at: &'a str,
    driver: &'a str,
    labels: BTreeMap<&'a str, &'a str>,
    mountpoint: &'a str,
    name: &'a str,
    scope: &'a str,
}

fn json(volume: &pb::Volume) -> VolumeJson<'_> {
    VolumeJson {
        created_at: &volume.created_at,
        driver: &volume.driver,
        labels: volume.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect(),
        mountpoint: &volume.mountpoint,
        name: &volume.name,
        scope: &volume.scope,
    }
}

pub async fn run(command: VolumeCommand, connect: &ConnectArgs) -> CliResult {
    // Flags are checked before dialling so a typo is reported even with no daemon.
    let labels = match &command {
        VolumeCommand::Create { labels, .. } => flags::parse_labels("--label", labels)?,
        _ => Default::default(),
    };
    let mut runtime = pb::runtime_client::RuntimeClient::new(connect.connect().await?);
    match command {
        VolumeCommand::Create { name, .. } => {
            let volume = runtime.create_volume(pb::CreateVolumeRequest { name: name.unwrap_or_default(), labels }).await?.into_inner();
            println!("{}", volume.name);
        }
        VolumeCommand::Ls { quiet, format } => {
            let volumes = runtime.list_volumes(pb::Empty {}).await?.into_inner().volumes;
            if quiet {
                volumes.iter().for_each(|v| println!("{}", v.name));
            } else if format == Format::Json {
                print_json(&volumes.iter().map(json).collect::<Vec<_>>())?;
            } else {
                print_table(&["DRIVER", "VOLUME NAME"], volumes.iter().map(|v| vec![v.driver.clone(), v.name.clone()]).collect());
            }
        }
        VolumeCommand::Inspect { volumes } => {
            let mut found = Vec::new();
            for name in volumes {
                found.push(runtime.inspect_volume(pb::VolumeRef { name }).await?.into_inner());
            }
            print_json(&found.iter().map(json).collect::<Vec<_>>())?;
        }
        VolumeCommand::Rm { force: _, volumes } => {
            for name in volumes {
                runtime.remove_volume(pb::VolumeRef { name: name.clone() }).await?;
                println!("{name}");
            }
        }
        VolumeCommand::Prune { force: _ } => {
            let pruned = runtime.prune_volumes(pb::Empty {}).await?.into_inner();
            if !pruned.deleted.is_empty() {
                println!("Deleted Volumes:");
                pruned.deleted.iter().for_each(|name| println!("{name}"));
                println!();
            }
            println!("Total reclaimed space: {}", crate::commands::image::human_size(pruned.reclaimed_bytes));
        }
    }
    Ok(())
}
