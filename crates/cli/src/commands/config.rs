//! `shoal config ...`: small named blobs kept in the replicated store,
//! which tasks get as files (`service create --config`).

use std::path::PathBuf;

use serde::Serialize;
use shoal_proto::pb;

use crate::client::ConnectArgs;
use crate::commands::flags;
use crate::commands::secret::read_value;
use crate::output::ago_rfc3339;
use crate::error::CliResult;
use crate::output::{print_json, print_table, Format};

#[derive(Debug, clap::Subcommand)]
#[command(defer = true)]
pub enum ConfigCommand {
    /// Create a config from a file ("-" reads standard input)
    Create {
        #[arg(short, long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        name: String,
        file: PathBuf,
    },
    /// List configs
    Ls {
        #[arg(short, long)]
        quiet: bool,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Show configs in detail (JSON)
    Inspect {
        #[arg(required = true)]
        configs: Vec<String>,
    },
    /// Remove configs (refused while a service uses them)
    Rm {
        #[arg(required = true)]
        configs: Vec<String>,
    },
}

#[derive(Serialize)]
struct ConfigJson<'a> {
    id: &'a str,
    name: &'a str,
    labels: &'a std::collections::HashMap<String, String>,
    data: String,
    version: u64,
    created_at: &'a str,
    updated_at: &'a str,
    services: &'a [String],
}

fn to_json(config: &pb::Config) -> ConfigJson<'_> {
    ConfigJson {
        id: &config.id,
        name: &config.name,
        labels: &config.labels,
        data: String::from_utf8_lossy(&config.data).into_owned(),
        version: config.version,
        created_at: &config.created_at,
        updated_at: &config.updated_at,
        services: &config.services,
    }
}

pub async fn run(command: ConfigCommand, connect: &ConnectArgs) -> CliResult {
    // The value and labels are checked before dialling.
    let create = match &command {
        ConfigCommand::Create { labels, file, .. } => Some((flags::parse_labels("--label", labels)?, read_value("config", file)?)),
        _ => None,
    };
    let mut control = pb::control_client::ControlClient::new(connect.connect().await?);
    match command {
        ConfigCommand::Create { name, .. } => {
            let (labels, data) = create.unwrap_or_default();
            let config = control.create_config(pb::CreateConfigRequest { name, data, labels }).await?.into_inner();
            println!("{}", config.id);
        }
        ConfigCommand::Ls { quiet, format } => {
            let configs = control.list_configs(pb::Empty {}).await?.into_inner().configs;
            if quiet {
                configs.iter().for_each(|c| println!("{}", c.id));
            } else if format == Format::Json {
                print_json(&configs.iter().map(to_json).collect::<Vec<_>>())?;
            } else {
                let rows = configs
                    .iter()
                    .map(|c| vec![c.id.clone(), c.name.clone(), ago_rfc3339(&c.created_at), ago_rfc3339(&c.updated_at), c.services.join(", ")])
                    .collect();
                print_table(&["ID", "NAME", "CREATED", "UPDATED", "SERVICES"], rows);
            }
        }
        ConfigCommand::Inspect { configs } => {
            let mut found = Vec::new();
            for config in configs {
                found.push(control.inspect_config(pb::ConfigRef { config }).await?.into_inner());
            }
            print_json(&found.iter().map(to_json).collect::<Vec<_>>())?;
        }
        ConfigCommand::Rm { configs } => {
            for config in configs {
                control.remove_config(pb::ConfigRef { config: config.clone() }).await?;
                println!("{config}");
            }
        }
    }
    Ok(())
}
