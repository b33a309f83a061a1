//! `shoal compose`: a compose file as plain containers on one node, as
//! `docker compose` runs it: bridge networks with DNS by service name and
//! alias, named volumes, containers `PROJECT-SERVICE-N`. The same file
//! goes to a swarm with `shoal stack deploy`.
//!
//! On a node that is in a swarm, `compose up` refuses unless `--local` is
//! given: there the user most likely meant the swarm, and containers made
//! beside its services would be invisible to it (no scheduling, no
//! routing mesh, no restart on another node), so running them silently
//! would be the surprising choice.

mod node;
mod plan;
pub mod project;
mod up;
mod verbs;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use crate::client::ConnectArgs;
use crate::compose;
use crate::error::{CliError, CliResult};

pub use node::NodeApi;

/// The names docker compose looks for when no `-f` is given, in order.
const DEFAULT_FILES: [&str; 4] = ["compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml"];

#[derive(Debug, clap::Args)]
pub struct ComposeArgs {
    /// Compose file; repeat to merge several in order (default: compose.yaml or docker-compose.yml here)
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Project name (default: COMPOSE_PROJECT_NAME, the file's name:, or the file's directory)
    #[arg(short = 'p', long = "project-name", value_name = "NAME")]
    project_name: Option<String>,
    /// Variables for the files (default: .env beside the first file)
    #[arg(long, value_name = "FILE")]
    env_file: Option<PathBuf>,
    #[command(subcommand)]
    command: ComposeCommand,
}

#[derive(Debug, clap::Subcommand)]
#[command(defer = true)]
enum ComposeCommand {
    /// Create and start the project's containers, networks and volumes
    Up {
        /// Return once started; without it, follow their output until Ctrl-C stops them
        #[arg(short, long)]
        detach: bool,
        /// Run as plain containers even though this node is in a swarm
        #[arg(long)]
        local: bool,
        /// Recreate containers even if their configuration is unchanged
        #[arg(long)]
        force_recreate: bool,
        /// Remove containers of services the files no longer have
        #[arg(long)]
        remove_orphans: bool,
        /// Only these services (and what they depend on)
        services: Vec<String>,
    },
    /// Stop and remove the project's containers and networks
    Down {
        /// Remove the named volumes declared in the files too
        #[arg(short, long)]
        volumes: bool,
        /// Remove containers of services the files no longer have
        #[arg(long)]
        remove_orphans: bool,
        /// Seconds to wait for each container to stop before killing it
        #[arg(short, long, value_name = "SECONDS")]
        timeout: Option<u32>,
    },
    /// List the project's containers
    Ps {
        /// Show stopped containers too
        #[arg(short, long)]
        all: bool,
        /// Only the names
        #[arg(short, long)]
        quiet: bool,
        services: Vec<String>,
    },
    /// Show the output of the project's containers
    Logs {
        #[arg(short, long)]
        follow: bool,
        /// Number of lines from the end of each container's output
        #[arg(short = 'n', long)]
        tail: Option<u64>,
        /// Prefix each line with its time
        #[arg(short, long)]
        timestamps: bool,
        services: Vec<String>,
    },
    /// Stop the project's containers (they keep their files)
    Stop {
        #[arg(short, long, value_name = "SECONDS")]
        timeout: Option<u32>,
        services: Vec<String>,
    },
    /// Start the project's stopped containers
    Start { services: Vec<String> },
    /// Stop then start the project's containers
    Restart {
        #[arg(short, long, value_name = "SECONDS")]
        timeout: Option<u32>,
        services: Vec<String>,
    },
    /// Print the merged compose files with variables substituted
    Config,
}

pub async fn run(args: ComposeArgs, connect: &ConnectArgs) -> CliResult {
    let environment: HashMap<String, String> = std::env::vars().collect();
    match args.command {
        ComposeCommand::Config => {
            let loaded = load(&args.files, args.env_file.as_ref(), &environment)?;
            print!("{}", crate::commands::stack::merged_text(&loaded.project)?);
            Ok(())
        }
        ComposeCommand::Up { detach, local, force_recreate, remove_orphans, ref services } => {
            let loaded = load(&args.files, args.env_file.as_ref(), &environment)?;
            let name = project_name(args.project_name.as_deref(), &environment, &loaded)?;
            let environment: BTreeMap<String, String> = environment.into_iter().collect();
            let mut project = project::convert(&name, &loaded.project.file, &environment).map_err(CliError::msg)?;
            for warning in &project.warnings {
                eprintln!("warning: {warning}");
            }
            select_services(&mut project, services)?;
            let mut node = NodeApi::connect(connect).await?;
            node.refuse_swarm_unless(local).await?;
            let options = up::UpOptions { force_recreate, remove_orphans };
            up::up(&mut node, &project, &options).await?;
            if !detach {
                verbs::follow_until_interrupted(&mut node, &project).await?;
            }
            Ok(())
        }
        command => {
            // The other verbs find the project's objects by their labels,
            // so they work after the file changed, or with -p and no file.
            let loaded = match load(&args.files, args.env_file.as_ref(), &environment) {
                Ok(loaded) => Some(loaded),
                Err(_) if args.project_name.is_some() && args.files.is_empty() => None,
                Err(e) => return Err(e),
            };
            let name = match &loaded {
                Some(loaded) => project_name(args.project_name.as_deref(), &environment, loaded)?,
                None => args.project_name.clone().unwrap_or_default(),
            };
            project::check_project_name(&name).map_err(CliError::msg)?;
            let known: Option<Vec<String>> = loaded.as_ref().map(|l| l.project.file.services.keys().cloned().collect());
            let mut node = NodeApi::connect(connect).await?;
            let scope = verbs::Scope { project: name, known_services: known };
            match command {
                ComposeCommand::Down { volumes, remove_orphans, timeout } => verbs::down(&mut node, &scope, volumes, remove_orphans, timeout).await,
                ComposeCommand::Ps { all, quiet, services } => verbs::ps(&mut node, &scope, all, quiet, &services).await,
                ComposeCommand::Logs { follow, tail, timestamps, services } => verbs::logs(&mut node, &scope, follow, tail, timestamps, &services).await,
                ComposeCommand::Stop { timeout, services } => verbs::stop(&mut node, &scope, timeout, &services).await,
                ComposeCommand::Start { services } => verbs::start(&mut node, &scope, &services).await,
                ComposeCommand::Restart { timeout, services } => verbs::restart(&mut node, &scope, timeout, &services).await,
                ComposeCommand::Up { .. } | ComposeCommand::Config => unreachable!("handled above"),
            }
        }
    }
}

/// The loaded files and the directory of the first.
struct Loaded {
    project: compose::Project,
    dir: PathBuf,
}

fn load(files: &[PathBuf], env_file: Option<&PathBuf>, environment: &HashMap<String, String>) -> CliResult<Loaded> {
    let files = if files.is_empty() { vec![default_file(Path::new("."))?] } else { files.to_vec() };
    let dir = files[0]
        .canonicalize()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."));
    let project = compose::load(&compose::LoadOptions { files, env_file: env_file.cloned(), environment: environment.clone() })
        .map_err(CliError::msg)?;
    for warning in &project.warnings {
        eprintln!("warning: {warning}");
    }
    Ok(Loaded { project, dir })
}

/// The first of docker compose's default file names in `dir`.
fn default_file(dir: &Path) -> CliResult<PathBuf> {
    DEFAULT_FILES.iter().map(|name| dir.join(name)).find(|path| path.is_file()).ok_or_else(|| {
        CliError::msg(format!("no compose file here ({}); name one with -f FILE", DEFAULT_FILES.join(", ")))
    })
}

/// `-p`, else COMPOSE_PROJECT_NAME, else the file's `name:`, else the
/// first file's directory, as docker compose chooses.
fn project_name(given: Option<&str>, environment: &HashMap<String, String>, loaded: &Loaded) -> CliResult<String> {
    let name = given
        .map(str::to_string)
        .or_else(|| environment.get("COMPOSE_PROJECT_NAME").filter(|n| !n.is_empty()).cloned())
        .or_else(|| loaded.project.file.name.clone())
        .unwrap_or_else(|| project::project_name_from_dir(&loaded.dir));
    if name.is_empty() {
        return Err(CliError::msg(format!(
            "the directory {} gives no project name; name the project with -p NAME",
            loaded.dir.display()
        )));
    }
    project::check_project_name(&name).map_err(CliError::msg)?;
    Ok(name)
}

/// `up SERVICE...`: those services and everything they depend on.
fn select_services(project: &mut project::LocalProject, wanted: &[String]) -> CliResult {
    if wanted.is_empty() {
        return Ok(());
    }
    let mut keep: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    let mut queue: Vec<String> = wanted.to_vec();
    while let Some(key) = queue.pop() {
        let Some(service) = project.services.iter().find(|s| s.key == key) else {
            return Err(CliError::msg(format!("service {key:?} is not in the compose file; name one of its services")));
        };
        if keep.insert(key.clone()) {
            queue.extend(service.depends_on.iter().map(|(d, _)| d.clone()));
        }
    }
    project.services.retain(|s| keep.contains(&s.key));
    Ok(())
}
