//! `shoal stack`: applications from compose files on the swarm, as
//! `docker stack` does. The files are read by `crate::compose`, turned into
//! the stack's objects by `convert`, and deployed by the managers in one
//! transaction.

pub mod convert;
#[cfg(test)]
mod convert_tests;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use shoal_proto::pb;
use tonic::transport::Channel;

use crate::client::ConnectArgs;
use crate::commands::service::{print_services, tasks};
use crate::compose;
use crate::error::{CliError, CliResult};
use crate::output::{print_json, print_table, Format};

type Control = pb::control_client::ControlClient<Channel>;

/// How long `stack deploy --detach=false` waits for the services.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, clap::Subcommand)]
#[command(defer = true)]
pub enum StackCommand {
    /// Deploy a new stack or update an existing one from compose files
    #[command(alias = "up")]
    Deploy {
        #[command(flatten)]
        files: ComposeFiles,
        /// Remove the stack's services the files no longer have
        #[arg(long)]
        prune: bool,
        /// Query the registry for image digests: always, changed (when the file's image changed) or never
        #[arg(long, value_name = "WHEN", default_value = "changed", value_parser = ["always", "changed", "never"])]
        resolve_image: String,
        /// Send this client's registry login to the swarm, for the nodes to pull with
        #[arg(long)]
        with_registry_auth: bool,
        /// Return at once (default); --detach=false waits until every service has converged
        #[arg(short, long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
        detach: bool,
        name: String,
    },
    /// List stacks
    Ls {
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// List the services of a stack
    Services {
        name: String,
        #[arg(short, long)]
        quiet: bool,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// List the tasks of a stack
    Ps {
        name: String,
        #[command(flatten)]
        flags: tasks::PsFlags,
    },
    /// Remove stacks: their services, networks, secrets and configs (never volumes)
    #[command(alias = "down")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Print the merged compose files with variables substituted
    Config {
        #[command(flatten)]
        files: ComposeFiles,
    },
}

/// `-c FILE` (repeatable, later files override earlier ones) and `--env-file`.
#[derive(Debug, Clone, clap::Args)]
pub struct ComposeFiles {
    /// Compose file; repeat to merge several in order
    #[arg(short = 'c', long = "compose-file", value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
    /// Variables for the files (default: .env beside the first file)
    #[arg(long, value_name = "FILE")]
    pub env_file: Option<PathBuf>,
}

impl ComposeFiles {
    /// Loads the files, printing each warning to stderr.
    pub fn load(&self) -> CliResult<compose::Project> {
        let project = compose::load(&compose::LoadOptions {
            files: self.files.clone(),
            env_file: self.env_file.clone(),
            environment: std::env::vars().collect::<HashMap<_, _>>(),
        })
        .map_err(CliError::msg)?;
        for warning in &project.warnings {
            eprintln!("warning: {warning}");
        }
        Ok(project)
    }
}

pub async fn run(command: StackCommand, connect: &ConnectArgs) -> CliResult {
    match command {
        StackCommand::Config { files } => {
            let project = files.load()?;
            print!("{}", merged_text(&project)?);
            Ok(())
        }
        StackCommand::Deploy { files, prune, resolve_image, with_registry_auth, detach, name } => {
            convert::check_stack_name(&name).map_err(CliError::msg)?;
            let project = files.load()?;
            let environment: BTreeMap<String, String> = std::env::vars().collect();
            let objects = convert::convert(&name, &project.file, &environment, &|path| {
                std::fs::read(path).map_err(|e| format!("cannot read {}: {e}; check the path", path.display()))
            })
            .map_err(|e| CliError::msg(format!("{}: {e}", files.files[0].display())))?;
            for warning in &objects.warnings {
                eprintln!("warning: {warning}");
            }
            if resolve_image != "changed" {
                eprintln!("warning: --resolve-image {resolve_image} is treated as changed: images are pinned when a service is created or its image changes");
            }
            let mut services = objects.services;
            if with_registry_auth {
                for task in services.iter_mut().filter_map(|spec| spec.task.as_mut()) {
                    task.registry_auth = crate::credentials::for_image(&task.image);
                }
            }
            let file = |o: convert::FileObject| pb::StackFile {
                external: o.data.is_none(),
                name: o.name,
                data: o.data.unwrap_or_default(),
                labels: o.labels.into_iter().collect(),
            };
            let request = pb::DeployStackRequest {
                name: name.clone(),
                file_hash: hex::encode(Sha256::digest(merged_text(&project)?.as_bytes())),
                networks: objects.networks,
                external_networks: objects.external_networks,
                secrets: objects.secrets.into_iter().map(file).collect(),
                configs: objects.configs.into_iter().map(file).collect(),
                services,
                prune,
            };
            let mut control = Control::new(connect.connect().await?);
            let reply = control.deploy_stack(request).await?.into_inner();
            for warning in &reply.warnings {
                eprintln!("warning: {warning}");
            }
            for (verb, names) in [("Creating", &reply.created), ("Updating", &reply.updated), ("Removing", &reply.removed)] {
                for object in names {
                    println!("{verb} {object}");
                }
            }
            if reply.created.is_empty() && reply.updated.is_empty() && reply.removed.is_empty() {
                println!("Stack {name} is up to date (revision {})", reply.revision);
            }
            if !detach {
                wait_converged(&mut control, &name).await?;
            }
            Ok(())
        }
        StackCommand::Ls { format } => {
            let mut control = Control::new(connect.connect().await?);
            let stacks = control.list_stacks(pb::Empty {}).await?.into_inner().stacks;
            match format {
                Format::Json => print_json(&stacks.iter().map(|s| serde_json::json!({
                    "name": s.name, "services": s.services, "revision": s.revision, "file_hash": s.file_hash, "updated_at": s.updated_at,
                })).collect::<Vec<_>>()),
                Format::Table => {
                    let rows = stacks.iter().map(|s| vec![s.name.clone(), s.services.to_string(), s.revision.to_string(), s.updated_at.clone()]).collect();
                    print_table(&["NAME", "SERVICES", "REVISION", "DEPLOYED"], rows);
                    Ok(())
                }
            }
        }
        StackCommand::Services { name, quiet, format } => {
            let mut control = Control::new(connect.connect().await?);
            let services = stack_services(&mut control, &name).await?;
            print_services(&services, quiet, format)
        }
        StackCommand::Ps { name, flags } => {
            let filter = tasks::TaskFilter::parse(&flags.filters, true)?;
            let mut control = Control::new(connect.connect().await?);
            let mut found = Vec::new();
            for service in stack_services(&mut control, &name).await? {
                let request = filter.request(&service.id, filter.node.as_deref().unwrap_or_default());
                found.extend(control.list_tasks(request).await?.into_inner().tasks.into_iter().filter(|t| filter.keep(t)));
            }
            tasks::print_tasks(found, &flags)
        }
        StackCommand::Rm { names } => {
            let mut control = Control::new(connect.connect().await?);
            for name in names {
                let reply = control.remove_stack(pb::StackRef { name: name.clone() }).await?.into_inner();
                for object in reply.removed {
                    println!("Removing {object}");
                }
            }
            Ok(())
        }
    }
}

/// The merged, interpolated file as YAML (also what the file hash covers).
pub(crate) fn merged_text(project: &compose::Project) -> CliResult<String> {
    serde_yaml_ng::to_string(&project.merged).map_err(|e| CliError::msg(format!("cannot print the merged file: {e}")))
}

/// The services labelled as the stack's, or an error naming the stack.
async fn stack_services(control: &mut Control, name: &str) -> CliResult<Vec<pb::Service>> {
    let services: Vec<pb::Service> = control
        .list_services(pb::Empty {})
        .await?
        .into_inner()
        .services
        .into_iter()
        .filter(|s| s.spec.as_ref().and_then(|spec| spec.labels.get(convert::NAMESPACE_LABEL)).is_some_and(|n| n == name))
        .collect();
    if services.is_empty() {
        return Err(CliError::msg(format!("stack {name} has no services; `shoal stack ls` lists the stacks")));
    }
    Ok(services)
}

/// Waits until every service of the stack runs all its tasks (a service
/// whose tasks all completed counts as converged: a one-shot job).
async fn wait_converged(control: &mut Control, name: &str) -> CliResult {
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    loop {
        let services = stack_services(control, name).await?;
        let mut pending = Vec::new();
        for service in services.iter().filter(|s| s.running_tasks < s.desired_tasks) {
            // A one-shot job (a migration) that completed has converged.
            let request = pb::ListTasksRequest { service: service.id.clone(), ..Default::default() };
            let tasks = control.list_tasks(request).await?.into_inner().tasks;
            let completed = tasks.iter().any(|t| t.state == "complete") && !tasks.iter().any(|t| t.state == "running");
            if !completed {
                let name = service.spec.as_ref().map(|x| x.name.as_str()).unwrap_or_default();
                pending.push(format!("{name} {}/{}", service.running_tasks, service.desired_tasks));
            }
        }
        if pending.is_empty() {
            println!("Stack {name} converged");
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(CliError::msg(format!(
                "stack {name} did not converge within {}s: {}; see `shoal stack ps {name}`",
                CONVERGE_TIMEOUT.as_secs(),
                pending.join(", ")
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
