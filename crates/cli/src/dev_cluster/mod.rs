//! `shoal dev-cluster`: a whole cluster on one machine, each host a network
//! namespace on a bridge (in a "switch" namespace of the cluster's own) with
//! its own daemon, data root and socket.
//!
//! Layout: the plan (names, addresses, paths) in `plan`, the subnet registry
//! in `registry`, the state file in `state`; `underlay` (namespaces and
//! links, through shoal-overlay-net), `process` and `daemon` build the
//! pieces; `create`, `teardown` and `swarm` put them together; `report`
//! prints.

mod cgroups;
mod create;
mod daemon;
mod mounts;
mod plan;
pub mod process;
mod registry;
mod report;
mod sim;
mod state;
mod swarm;
mod teardown;
mod underlay;

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;

use anyhow::{bail, Context};

use self::plan::Role;
use self::process::{Stop, Tracked};
use self::state::ClusterState;

#[derive(Debug, clap::Args)]
pub struct ClusterName {
    /// Name of the dev cluster (1-12 characters from a-z, 0-9, '-').
    #[arg(long, default_value = "dev")]
    pub name: String,
}

#[derive(Debug, clap::Subcommand)]
pub enum DevClusterCommand {
    /// Create a cluster of namespace hosts and form a swarm, replacing any
    /// previous cluster of the same name.
    Up {
        #[command(flatten)]
        cluster: ClusterName,
        /// Number of manager hosts (manager1..N), at least 1.
        #[arg(long, default_value_t = 3)]
        managers: u32,
        /// Number of worker hosts (worker1..M).
        #[arg(long, default_value_t = 2)]
        workers: u32,
        /// Only create namespaces and links; start no daemons.
        #[arg(long)]
        network_only: bool,
        /// Start the daemons but form no swarm: standalone nodes, as for
        /// `shoal compose` or `shoal run`.
        #[arg(long, conflicts_with = "network_only")]
        no_swarm: bool,
        /// Process that owns the cluster; once it is gone, the next `up`
        /// removes the cluster (used by the test harness).
        #[arg(long, hide = true)]
        owner_pid: Option<u32>,
    },
    /// Remove a cluster and everything it created (safe to repeat).
    Down {
        #[command(flatten)]
        cluster: ClusterName,
    },
    /// List a cluster's hosts.
    Ls {
        #[command(flatten)]
        cluster: ClusterName,
        /// Output format: table, json, or prometheus (file_sd targets of every host's metrics)
        #[arg(long, value_enum, default_value = "table")]
        format: report::LsFormat,
    },
    /// Run a command inside a host's network namespace, with SHOAL_HOST
    /// pointing at that host's daemon.
    Exec {
        host: String,
        #[command(flatten)]
        cluster: ClusterName,
        #[arg(last = true, required = true, value_name = "COMMAND")]
        command: Vec<OsString>,
    },
    /// Stop a host's daemon (SIGTERM; SIGKILL after 5 s).
    Stop {
        host: String,
        #[command(flatten)]
        cluster: ClusterName,
        /// SIGKILL right away, like a crash.
        #[arg(long)]
        kill: bool,
    },
    /// Start a stopped host's daemon again; it rejoins from its data root.
    Start {
        host: String,
        #[command(flatten)]
        cluster: ClusterName,
    },
    /// Cut a host off the network (its switch port leaves the bridge; its link stays up).
    Partition {
        host: String,
        #[command(flatten)]
        cluster: ClusterName,
    },
    /// Reconnect a partitioned host.
    Heal {
        host: String,
        #[command(flatten)]
        cluster: ClusterName,
    },
    /// Run the swarm's real managers against many simulated nodes and
    /// measure what joining, placing and losing nodes cost as it grows.
    Sim(sim::SimArgs),
    /// Draw how the simulator's figures grow with the cluster (SVG), from
    /// the runs `sim --record FILE` appended.
    SimPlot(sim::plot::SimPlotArgs),
    /// The simulated nodes of one simulator host (started by `sim`).
    #[command(name = "__sim-nodes", hide = true)]
    SimNodes(sim::nodes_process::SimNodesArgs),
    /// Add one more host to a running cluster and join it to the swarm.
    Add {
        #[command(flatten)]
        cluster: ClusterName,
        /// Role of the new host.
        #[arg(long, value_enum, default_value = "worker")]
        role: Role,
    },
}

pub async fn run(command: DevClusterCommand, shoal_exe: &Path) -> anyhow::Result<()> {
    // Flattened into one message ("what failed: why"), however the caller
    // prints errors.
    dispatch(command, shoal_exe)
        .await
        .map_err(|e| anyhow::anyhow!("{e:#}"))
}

async fn dispatch(command: DevClusterCommand, shoal_exe: &Path) -> anyhow::Result<()> {
    match command {
        DevClusterCommand::Up {
            cluster,
            managers,
            workers,
            network_only,
            no_swarm,
            owner_pid,
        } => {
            let options = create::UpOptions {
                name: cluster.name,
                managers,
                workers,
                network_only,
                no_swarm,
                owner_pid,
                init_args: Vec::new(),
            };
            let state = create::up(shoal_exe, &options).await?;
            report::print_up(&state);
        }
        DevClusterCommand::Down { cluster } => {
            if !teardown::down(&cluster.name).await? {
                eprintln!("no dev cluster named {:?}; nothing to remove", cluster.name);
            }
        }
        DevClusterCommand::Ls { cluster, format } => {
            report::print_hosts(&ClusterState::load(&cluster.name)?, format)?;
        }
        DevClusterCommand::Exec {
            host,
            cluster,
            command,
        } => {
            let code = exec(&cluster.name, &host, &command).await?;
            // The exit code is the command's; nothing is left to clean up here.
            std::process::exit(code);
        }
        DevClusterCommand::Stop {
            host,
            cluster,
            kill,
        } => {
            stop(
                &cluster.name,
                &host,
                if kill { Stop::Kill } else { Stop::Graceful },
            )
            .await?;
        }
        DevClusterCommand::Start { host, cluster } => {
            start(shoal_exe, &cluster.name, &host).await?
        }
        DevClusterCommand::Partition { host, cluster } => {
            set_connected(&cluster.name, &host, false).await?
        }
        DevClusterCommand::Heal { host, cluster } => {
            set_connected(&cluster.name, &host, true).await?
        }
        DevClusterCommand::Sim(args) => sim::run(shoal_exe, args).await?,
        DevClusterCommand::SimPlot(args) => sim::plot::run(&args)?,
        DevClusterCommand::SimNodes(args) => sim::nodes_process::run(args).await?,
        DevClusterCommand::Add { cluster, role } => {
            report::print_added(&create::add(shoal_exe, &cluster.name, role).await?);
        }
    }
    Ok(())
}

/// Runs `command` in `host`'s namespace with inherited stdio; returns its
/// exit code (128 + signal when it was killed, as shells report it).
async fn exec(name: &str, host: &str, command: &[OsString]) -> anyhow::Result<i32> {
    let state = ClusterState::load(name)?;
    let host = state.host(host)?;
    let Some((program, args)) = command.split_first() else {
        bail!("no command given to run on {}", host.name);
    };
    let mut child = process::command_in_netns(&host.netns, program)?;
    child.args(args).env("SHOAL_HOST", host.host_uri());
    let status = tokio::process::Command::from(child)
        .status()
        .await
        .with_context(|| {
            format!(
                "could not run {} on {}",
                program.to_string_lossy(),
                host.name
            )
        })?;
    Ok(status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1))
}

async fn stop(name: &str, host: &str, how: Stop) -> anyhow::Result<()> {
    let state = ClusterState::load(name)?;
    let host = state.host(host)?;
    ensure_has_daemons(&state)?;
    match daemon::tracked(host).filter(Tracked::is_alive) {
        Some(running) => process::stop_all(&[running], how, daemon::STOP_GRACE).await,
        None => {
            eprintln!("the daemon of {} is not running", host.name);
            Ok(())
        }
    }
}

async fn start(shoal_exe: &Path, name: &str, host: &str) -> anyhow::Result<()> {
    let mut state = ClusterState::load(name)?;
    ensure_has_daemons(&state)?;
    let entry = state.host(host)?;
    if entry.role == Role::Simulator {
        bail!("{} runs simulated nodes, which only `shoal dev-cluster sim` starts; it has no daemon to start", entry.name);
    }
    if daemon::is_running(entry) {
        eprintln!("the daemon of {} is already running", entry.name);
        return Ok(());
    }
    let pid = daemon::start(shoal_exe, entry).await?;
    state.host_mut(host)?.pid = Some(pid);
    state.save()
}

/// Partition (`false`) or heal (`true`): the host's switch port goes down or
/// up, so it loses or regains every peer at once while its processes run on.
async fn set_connected(name: &str, host: &str, connected: bool) -> anyhow::Result<()> {
    let state = ClusterState::load(name)?;
    let host = state.host(host)?;
    underlay::set_connected(&state, host, connected).await
}

fn ensure_has_daemons(state: &ClusterState) -> anyhow::Result<()> {
    if state.network_only {
        bail!(
            "dev cluster {:?} was created with --network-only, so its hosts run no daemon",
            state.name
        );
    }
    Ok(())
}
