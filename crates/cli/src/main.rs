//! `shoal`: one binary for the daemon and every client command, like k3s.

mod client;
mod context;
mod credentials;
mod commands;
mod compose;
mod daemon;
mod dev_cluster;
mod error;
mod output;
mod shortcuts;
mod template;
mod wire;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use client::ConnectArgs;
use error::CliError;

#[derive(Parser)]
#[command(name = "shoal", version, about = "Shoal: a swarm-mode cluster manager", after_help = shortcuts::help())]
struct Cli {
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
// Each subcommand's arguments are built only when it is the one typed (as
// are those of the nested command enums, each marked the same way): building
// every command's arguments cost every client process ~1.7 ms (`shoal
// --version`: 4.5 ms, now 2.8 ms), a tenth of a `shoal run --rm`. Not the
// `dev-cluster` and `context` commands: their own `host` and `tls*`
// arguments shadow the global ones, which clap allows only when they exist
// before the global ones are passed down (see the test below).
#[command(defer = true)]
enum Command {
    /// Run a node: the local API, the agent, and a manager when the node is one
    Daemon {
        /// Where the node keeps its state
        #[arg(long, default_value = "/var/lib/shoal")]
        data_root: PathBuf,
        /// Where the node keeps what must stay off disk, e.g. tasks' secrets on tmpfs (default: the socket's directory, /run/shoal)
        #[arg(long, value_name = "DIR")]
        exec_root: Option<PathBuf>,
        /// Name of this node in the swarm (default: the host name)
        #[arg(long)]
        node_name: Option<String>,
        /// Registry reached over plain HTTP (HOST:PORT); repeatable
        #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
        insecure_registries: Vec<String>,
        /// Cgroup (in every hierarchy) that containers are created under
        #[arg(long, default_value = "shoal")]
        cgroup_parent: String,
        /// Engine label for placement constraints (KEY=VALUE); repeatable
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        /// Where this node's bridge networks get their subnets: CIDR (a /24 each) or base=CIDR,size=N
        #[arg(long, value_name = "CIDR", default_value = "100.64.0.0/10")]
        default_address_pool: String,
        /// The default bridge network's device; `none` makes no default network (containers get --network none)
        #[arg(long, value_name = "shoal0|none", default_value = "shoal0")]
        bridge: String,
        /// Serve Prometheus metrics at http://IP:PORT/metrics (off by default)
        #[arg(long, value_name = "IP:PORT")]
        metrics_addr: Option<String>,
        /// Least severe log lines written
        #[arg(long, value_name = "LEVEL", default_value = "info", value_parser = ["error", "warn", "info", "debug", "trace"])]
        log_level: String,
        /// text for people, json (one object per line) for log collectors
        #[arg(long, value_name = "FORMAT", default_value = "text", value_parser = ["text", "json"])]
        log_format: String,
        /// How many swarm events a manager keeps for `shoal events --since` (0: no swarm events)
        #[arg(long, value_name = "N", default_value_t = shoal_manager::events::DEFAULT_CAPACITY)]
        event_history: usize,
    },
    /// Manage the swarm
    #[command(subcommand)]
    Swarm(commands::swarm::SwarmCommand),
    /// Manage contexts: named ways to reach a swarm from a remote CLI
    #[command(subcommand)]
    Context(commands::context::ContextCommand),
    /// Manage nodes
    #[command(subcommand)]
    Node(commands::node::NodeCommand),
    /// Manage services
    #[command(subcommand)]
    Service(Box<commands::service::ServiceCommand>),
    /// Run a compose file as plain containers on this node (no swarm), as docker compose
    Compose(commands::compose::ComposeArgs),
    /// Manage stacks (applications from compose files)
    #[command(subcommand)]
    Stack(commands::stack::StackCommand),
    /// Manage configs
    #[command(subcommand)]
    Config(commands::config::ConfigCommand),
    /// Manage secrets
    #[command(subcommand)]
    Secret(commands::secret::SecretCommand),
    /// Manage networks
    #[command(subcommand)]
    Network(commands::network::NetworkCommand),
    /// Manage this node's images
    #[command(subcommand)]
    Image(commands::image::ImageCommand),
    /// Manage this node's containers
    #[command(subcommand)]
    Container(commands::container::ContainerCommand),
    /// Manage this node's volumes
    #[command(subcommand)]
    Volume(commands::volume::VolumeCommand),
    /// Create and start a container (short for `container run`)
    Run(commands::container::RunArgs),
    /// Run a command in a running container (short for `container exec`)
    Exec(commands::exec::ExecArgs),
    /// Attach this terminal to a running container's process (short for `container attach`)
    Attach(commands::attach::AttachArgs),
    /// Copy files between a container and this host (short for `container cp`)
    Cp(commands::cp::CpArgs),
    /// Log in to a registry (credentials kept as docker keeps them)
    Login(commands::login::LoginArgs),
    /// Forget the login to a registry
    Logout(commands::login::LogoutArgs),
    /// Make an image from a container's changes (short for `container commit`)
    Commit(commands::commit::CommitArgs),
    /// Show what this node knows about itself and its swarm
    Info(commands::swarm::InfoArgs),
    /// Stream what happens: the swarm's events and, on a node, its containers', images' and volumes'
    Events(commands::events::EventsArgs),
    /// The node's disk use and its cleanup
    #[command(subcommand)]
    System(commands::system::SystemCommand),
    /// A local multi-node cluster on network namespaces
    #[command(subcommand)]
    DevCluster(dev_cluster::DevClusterCommand),
    /// Print shell completions
    Completion {
        shell: clap_complete::Shell,
    },
}

fn main() -> ExitCode {
    // A container's shim: started by the daemon, synchronous and small, so
    // it must not parse a CLI or start an async runtime first.
    let mut args = std::env::args();
    match args.nth(1).as_deref() {
        Some("__shim") => return shoal_runtime::shim::main(args.collect()),
        // The node's userspace WireGuard device, outliving the daemon as shims do.
        Some("__wireguard") => return shoal_overlay_net::wireguard::device_main(args.collect()),
        _ => {}
    }
    let cli = Cli::parse_from(shortcuts::expand(std::env::args_os().collect()));
    if matches!(cli.command, Command::Daemon { .. }) {
        accept_stop_signals();
    } else {
        die_quietly_on_closed_pipe();
    }
    if matches!(cli.command, Command::DevCluster(dev_cluster::DevClusterCommand::SimNodes(_))) {
        // A few connections per simulated node: thousands need more
        // descriptors than the usual soft limit of 1,024.
        let _ = dev_cluster::process::raise_open_files_limit(0, 1 << 20);
    }
    // A client command is one connection and a few calls: one thread is
    // enough and starts faster; the daemon and dev clusters need more.
    let builder = match cli.command {
        Command::Daemon { .. } | Command::DevCluster(_) => tokio::runtime::Builder::new_multi_thread(),
        _ => tokio::runtime::Builder::new_current_thread(),
    };
    let mut builder = builder;
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The daemon stops cleanly on SIGINT, SIGTERM and SIGHUP even when it was
/// started with them blocked (a blocked mask survives exec: a harness or a
/// service manager may leave one). Unblocked before the runtime's threads
/// start, so they all inherit it.
fn accept_stop_signals() {
    use nix::sys::signal::{SigSet, SigmaskHow, Signal};
    let mut stop = SigSet::empty();
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        stop.add(signal);
    }
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&stop), None);
}

/// A client whose output goes to a pipe that closed (`shoal service ps |
/// head`) ends as other Unix tools do, silently with SIGPIPE's status,
/// instead of a panic. Only stdout's pipe: SIGPIPE itself stays ignored, so
/// a connection the other side closed is an error, not a silent death.
fn die_quietly_on_closed_pipe() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default_hook(info);
    }));
}

/// `HOST:PORT`, or a bare `HOST` for every port on it.
fn validate_registry(value: &str) -> Result<(), CliError> {
    let valid = match value.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0),
        None => !value.is_empty() && !value.contains('/'),
    };
    if valid {
        Ok(())
    } else {
        Err(CliError::msg(format!("insecure registry {value:?} is invalid; use HOST or HOST:PORT (e.g. 198.18.0.1:5000)")))
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Daemon {
            data_root,
            exec_root,
            node_name,
            insecure_registries,
            cgroup_parent,
            labels,
            default_address_pool,
            bridge,
            metrics_addr,
            log_level,
            log_format,
            event_history,
        } => {
            init_logging(&log_level, log_format == "json");
            let metrics_addr = metrics_addr.as_deref().map(daemon::parse_metrics_address).transpose().map_err(CliError::msg)?;
            for registry in &insecure_registries {
                validate_registry(registry)?;
            }
            let engine_labels = labels
                .iter()
                .map(|label| shoal_agent::parse_engine_label(label).map_err(CliError::msg))
                .collect::<Result<std::collections::BTreeMap<_, _>, _>>()?;
            let socket = cli.connect.local_socket()?;
            let valid_parent = !cgroup_parent.is_empty()
                && cgroup_parent.split('/').all(|part| !part.is_empty() && part != "." && part != "..");
            if !valid_parent {
                return Err(CliError::msg(format!(
                    "cgroup parent {cgroup_parent:?} is invalid; use a relative cgroup path such as shoal or shoal/node1"
                ))
                .into());
            }
            let address_pool = default_address_pool
                .parse::<shoal_overlay_net::local::AddressPool>()
                .map_err(|e| CliError::msg(format!("--default-address-pool: {e}")))?;
            let default_bridge = match bridge.as_str() {
                "shoal0" => true,
                "none" => false,
                other => {
                    return Err(CliError::msg(format!("--bridge {other:?} is not supported; use shoal0 (the default) or none")).into())
                }
            };
            let exec_root = exec_root.unwrap_or_else(|| socket.parent().map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/run/shoal")));
            if exec_root.starts_with(&data_root) {
                return Err(CliError::msg(format!(
                    "exec root {} is inside the data root {}; give a directory on tmpfs such as /run/shoal with --exec-root",
                    exec_root.display(),
                    data_root.display()
                ))
                .into());
            }
            daemon::run(daemon::DaemonOptions {
                data_root,
                exec_root,
                socket,
                node_name,
                insecure_registries,
                cgroup_parent,
                engine_labels,
                address_pool,
                default_bridge,
                metrics_addr,
                event_history,
            })
            .await
        }
        Command::Swarm(command) => Ok(commands::swarm::run(command, &cli.connect).await?),
        Command::Context(command) => Ok(commands::context::run(command)?),
        Command::Node(command) => Ok(commands::node::run(command, &cli.connect).await?),
        Command::Service(command) => Ok(commands::service::run(*command, &cli.connect).await?),
        Command::Stack(command) => Ok(commands::stack::run(command, &cli.connect).await?),
        Command::Compose(args) => Ok(commands::compose::run(args, &cli.connect).await?),
        Command::Events(args) => Ok(commands::events::run(args, &cli.connect).await?),
        Command::System(command) => Ok(commands::system::run(command, &cli.connect).await?),
        Command::Config(command) => Ok(commands::config::run(command, &cli.connect).await?),
        Command::Secret(command) => Ok(commands::secret::run(command, &cli.connect).await?),
        Command::Network(command) => Ok(commands::network::run(command, &cli.connect).await?),
        Command::Image(command) => Ok(commands::image::run(command, &cli.connect).await?),
        Command::Container(command) => Ok(commands::container::run(command, &cli.connect).await?),
        Command::Run(args) => Ok(commands::container::run(commands::container::ContainerCommand::Run(args), &cli.connect).await?),
        Command::Volume(command) => Ok(commands::volume::run(command, &cli.connect).await?),
        Command::Exec(args) => Ok(commands::exec::run(args, &cli.connect).await?),
        Command::Cp(args) => Ok(commands::cp::run(args, &cli.connect).await?),
        Command::Attach(args) => Ok(commands::attach::run(args, &cli.connect).await?),
        Command::Login(args) => Ok(commands::login::login(args, &cli.connect).await?),
        Command::Logout(args) => Ok(commands::login::logout(args)?),
        Command::Commit(args) => Ok(commands::commit::run(args, &cli.connect).await?),
        Command::Info(args) => Ok(commands::swarm::info(args, &cli.connect).await?),
        Command::DevCluster(command) => {
            let exe = std::env::current_exe()?;
            dev_cluster::run(command, &exe).await
        }
        Command::Completion { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "shoal", &mut std::io::stdout());
            Ok(())
        }
    }
}

/// `--log-level` over Shoal's own lines (RUST_LOG, when set, wins: it can
/// name modules); the libraries beneath stay at warn unless asked for.
fn init_logging(level: &str, json: bool) {
    let quiet = ["openraft", "sled", "h2", "tower", "hickory_server", "hickory_proto"];
    let default = std::iter::once(level.to_string())
        .chain(quiet.iter().map(|library| {
            let library_level = match level {
                "debug" | "trace" | "error" => level,
                _ => "warn",
            };
            format!("{library}={library_level}")
        }))
        .collect::<Vec<_>>()
        .join(",");
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_target(false);
    if json {
        logs.json().flatten_event(true).init();
    } else {
        logs.init();
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// Every command path, as a user would type it.
    fn paths(command: &clap::Command, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
        for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
            let mut path = prefix.clone();
            path.push(sub.get_name().to_string());
            out.push(path.clone());
            paths(sub, path, out);
        }
    }

    /// A deferred command is built only when typed, so clap's own checks
    /// (which panic in debug builds, e.g. on an argument clashing with a
    /// global one) run then: parse `--help` of every command to run them all.
    #[test]
    fn every_command_builds_when_typed() {
        let mut all = Vec::new();
        paths(&Cli::command(), Vec::new(), &mut all);
        assert!(all.len() > 100, "only {} commands found", all.len());
        for path in all {
            let args = std::iter::once("shoal".to_string()).chain(path.iter().cloned()).chain(["--help".to_string()]);
            let error = Cli::command().try_get_matches_from(args).expect_err("--help ends parsing");
            assert_eq!(error.kind(), clap::error::ErrorKind::DisplayHelp, "shoal {} --help: {error}", path.join(" "));
        }
    }
}
