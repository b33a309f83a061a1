//! `shoal container ...`: containers on this node, as `docker container ...`.

use std::io::Write;

use shoal_proto::pb;
use tonic::transport::Channel;

use crate::client::ConnectArgs;
use crate::commands::{attach, container_ls, flags};
use crate::error::{CliError, CliResult};
use crate::output::{print_json, print_table, Format};

#[derive(Debug, clap::Subcommand)]
#[command(defer = true)]
pub enum ContainerCommand {
    /// Create and start a container (pulls the image if it is missing)
    Run(RunArgs),
    /// Create a container without starting it (pulls the image if it is missing)
    Create(RunArgs),
    /// Start created or stopped containers (a stopped one on the networks and ports it had)
    Start {
        /// Stream the container's output and end with its exit code (one container)
        #[arg(short, long)]
        attach: bool,
        /// Send this terminal's input to the container (with --attach)
        #[arg(short, long)]
        interactive: bool,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Run a command in a running container
    Exec(crate::commands::exec::ExecArgs),
    /// Copy files between a container and this host (CONTAINER:PATH on one side)
    Cp(crate::commands::cp::CpArgs),
    /// Attach this terminal to a running container's process (Ctrl-P Ctrl-Q detaches)
    Attach(crate::commands::attach::AttachArgs),
    /// Make an image from a container's changes
    Commit(crate::commands::commit::CommitArgs),
    /// List containers
    Ls {
        /// Show stopped containers too
        #[arg(short, long)]
        all: bool,
        /// name=SUBSTRING, id=PREFIX, status=created|running|paused|exited|dead, label=KEY[=VALUE]
        #[arg(short, long = "filter", value_name = "KEY=VALUE")]
        filters: Vec<String>,
        #[arg(short, long)]
        quiet: bool,
        /// table, json, or a template such as 'table {{.Names}}\t{{.Status}}'
        #[arg(long)]
        format: Option<String>,
    },
    /// Show a container's output
    Logs {
        #[arg(short, long)]
        follow: bool,
        /// Number of lines from the end
        #[arg(short = 'n', long)]
        tail: Option<String>,
        /// Prefix each line with its time
        #[arg(short, long)]
        timestamps: bool,
        /// Only lines since this time: RFC 3339, Unix seconds, or a duration ago (10m)
        #[arg(long)]
        since: Option<String>,
        /// Only lines before this time (same forms as --since)
        #[arg(long)]
        until: Option<String>,
        container: String,
    },
    /// Stop containers: the stop signal, then SIGKILL after the grace period
    Stop {
        /// Seconds to wait before killing (default 10)
        #[arg(short = 't', long = "time", value_name = "SECONDS")]
        time: Option<u32>,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Stop then start containers again (on the same networks and ports)
    Restart {
        /// Seconds to wait before killing (default 10)
        #[arg(short = 't', long = "time", value_name = "SECONDS")]
        time: Option<u32>,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Send a signal to containers (SIGKILL by default)
    Kill {
        #[arg(short, long, default_value = "KILL")]
        signal: String,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Remove containers
    Rm {
        /// Kill a running container first
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Show containers in detail (JSON)
    Inspect {
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Wait for containers to stop and print their exit codes
    Wait {
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Show the processes of a running container
    Top { container: String },
    /// Give a container another name
    Rename { container: String, new_name: String },
    /// Live CPU, memory, network, block I/O and pids of running containers
    Stats {
        /// One reading, then exit
        #[arg(long)]
        no_stream: bool,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
        /// All running containers when none is named
        containers: Vec<String>,
    },
    /// List a container's published ports, or the one for PRIVATE_PORT[/PROTO]
    Port {
        container: String,
        #[arg(value_name = "PRIVATE_PORT[/PROTO]")]
        private: Option<String>,
    },
    /// Remove every container that is not running
    Prune {
        /// Do not ask (there is no prompt; accepted for docker compatibility)
        #[arg(short, long)]
        force: bool,
    },
    /// Freeze every process of running containers
    Pause {
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Resume paused containers
    Unpause {
        #[arg(required = true)]
        containers: Vec<String>,
    },
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Run in the background and print the container id
    #[arg(short, long)]
    detach: bool,
    /// Keep stdin open and send this terminal's input to the container
    #[arg(short, long)]
    interactive: bool,
    /// Give the container a terminal
    #[arg(short, long)]
    tty: bool,
    /// Remove the container when it exits
    #[arg(long)]
    rm: bool,
    #[arg(long)]
    name: Option<String>,
    /// Environment variable (KEY=VALUE, or KEY to copy it from here)
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    #[arg(short, long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    #[arg(long)]
    hostname: Option<String>,
    /// type=bind|volume|tmpfs,source=...,target=...[,readonly][,tmpfs-size=..][,tmpfs-mode=..]
    #[arg(long = "mount", value_name = "SPEC")]
    mounts: Vec<String>,
    /// NAME:/path (named volume), /host:/path (bind) or /path, optionally :ro
    #[arg(short = 'v', long = "volume", value_name = "SOURCE:TARGET[:ro]")]
    volumes: Vec<String>,
    /// Mount the container's root filesystem read-only
    #[arg(long)]
    read_only: bool,
    /// Memory limit, e.g. 64m
    #[arg(short, long, allow_hyphen_values = true)]
    memory: Option<String>,
    /// CPU quota in CPUs, e.g. 0.5
    #[arg(long, allow_hyphen_values = true)]
    cpus: Option<String>,
    /// Maximum number of processes
    #[arg(long, allow_hyphen_values = true)]
    pids_limit: Option<i64>,
    /// USER[:GROUP] or UID[:GID]
    #[arg(short, long)]
    user: Option<String>,
    /// Working directory inside the container
    #[arg(short, long = "workdir")]
    workdir: Option<String>,
    /// Replace the image's entrypoint
    #[arg(long)]
    entrypoint: Option<String>,
    /// Network to attach to (default: the node's bridge; none: loopback only); repeatable
    #[arg(long = "network", visible_alias = "net", value_name = "NETWORK")]
    networks: Vec<String>,
    /// Another name the container answers to on its networks
    #[arg(long = "network-alias", visible_alias = "net-alias", value_name = "ALIAS")]
    network_aliases: Vec<String>,
    /// Publish a port: [HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp]
    #[arg(short, long = "publish", value_name = "PORTS")]
    publish: Vec<String>,
    /// DNS server the embedded DNS forwards other names to
    #[arg(long = "dns", value_name = "IP")]
    dns: Vec<String>,
    /// DNS search domain
    #[arg(long = "dns-search", value_name = "DOMAIN")]
    dns_search: Vec<String>,
    /// Option for the container's resolv.conf, e.g. timeout:2
    #[arg(long = "dns-option", value_name = "OPTION")]
    dns_option: Vec<String>,
    /// Signal that stops the container (default: the image's STOPSIGNAL, else SIGTERM)
    #[arg(long, value_name = "SIGNAL")]
    stop_signal: Option<String>,
    /// Seconds a stop waits before SIGKILL (default 10)
    #[arg(long, value_name = "SECONDS")]
    stop_timeout: Option<u32>,
    #[command(flatten)]
    health: crate::commands::health_flags::HealthFlags,
    #[command(flatten)]
    process: crate::commands::process_flags::ProcessFlags,
    image: String,
    /// Command and arguments (replace the image's CMD)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

impl RunArgs {
    fn request(self) -> CliResult<pb::RunContainerRequest> {
        if let Some(pids) = self.pids_limit {
            if pids == 0 || pids < -1 {
                return Err(CliError::msg(format!("--pids-limit {pids} is invalid; use a positive number, or -1 for no limit")));
            }
        }
        if let Some(name) = &self.name {
            let valid = !name.is_empty()
                && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
            if !valid {
                return Err(CliError::msg(format!(
                    "container name {name:?} is invalid; use letters, digits, '_', '.' and '-', starting with a letter or digit"
                )));
            }
        }
        Ok(pb::RunContainerRequest {
            image: self.image,
            name: self.name.unwrap_or_default(),
            command: self.command,
            entrypoint: self.entrypoint,
            env: flags::parse_env(&self.env)?,
            hostname: self.hostname.unwrap_or_default(),
            user: self.user.unwrap_or_default(),
            workdir: self.workdir.unwrap_or_default(),
            labels: flags::parse_labels("--label", &self.labels)?,
            read_only: self.read_only,
            mounts: self
                .mounts
                .iter()
                .map(|m| flags::parse_mount(m))
                .chain(self.volumes.iter().map(|v| flags::parse_volume(v)))
                .collect::<CliResult<_>>()?,
            memory_bytes: self.memory.as_deref().map(|m| flags::parse_bytes("--memory", m)).transpose()?.unwrap_or(0),
            nano_cpus: self.cpus.as_deref().map(|c| flags::parse_cpus("--cpus", c)).transpose()?.unwrap_or(0),
            pids_limit: self.pids_limit.unwrap_or(0),
            auto_remove: self.rm,
            detach: self.detach,
            create_only: false,
            tty: self.tty,
            open_stdin: self.interactive,
            healthcheck: crate::commands::health_flags::health_from_flags(&self.health)?,
            options: Some(self.process.to_pb()?),
            stop_signal: self.stop_signal.unwrap_or_default(),
            stop_timeout_secs: self.stop_timeout,
            networks: self
                .networks
                .iter()
                .map(|n| {
                    let mut attachment = flags::parse_network("--network", n)?;
                    attachment.aliases.extend(self.network_aliases.iter().cloned());
                    Ok(attachment)
                })
                .collect::<CliResult<_>>()?,
            published: self.publish.iter().map(|p| flags::parse_publish(p)).collect::<CliResult<_>>()?,
            dns: Some(pb::DnsConfig {
                nameservers: self
                    .dns
                    .iter()
                    .map(|d| match d.parse::<std::net::IpAddr>() {
                        Ok(_) => Ok(d.clone()),
                        Err(_) => Err(CliError::msg(format!("--dns {d:?} is not an IP address; give a DNS server's address"))),
                    })
                    .collect::<CliResult<_>>()?,
                search: self.dns_search.clone(),
                options: self.dns_option.clone(),
            }),
        })
    }
}

pub async fn run(command: ContainerCommand, connect: &ConnectArgs) -> CliResult {
    match command {
        ContainerCommand::Run(args) => {
            // Flags are checked before dialling so a typo is reported even with no daemon.
            let request = args.request()?;
            let mut runtime = pb::runtime_client::RuntimeClient::new(connect.connect().await?);
            if (request.tty || request.open_stdin) && !request.detach {
                // Made, then started attached, so not a byte of its output is missed.
                let stdin = request.open_stdin;
                let create = pb::RunContainerRequest { create_only: true, detach: true, ..request };
                let RunOutcome::Created(id) = run_container(&mut runtime, create).await? else {
                    return Err(CliError::msg("the daemon did not report the new container's id; see its log"));
                };
                let session = attach::Session { container: id, start: true, stdin, close_stdin_at_end: true };
                return attach::exit_with(attach::attached(&mut runtime, session).await?);
            }
            let detach = request.detach;
            match run_container(&mut runtime, request).await? {
                RunOutcome::Created(id) if detach => println!("{id}"),
                RunOutcome::Exited(code) if code != 0 => std::process::exit(code),
                _ => {}
            }
            Ok(())
        }
        ContainerCommand::Exec(args) => crate::commands::exec::run(args, connect).await,
        ContainerCommand::Cp(args) => crate::commands::cp::run(args, connect).await,
        ContainerCommand::Attach(args) => attach::run(args, connect).await,
        ContainerCommand::Commit(args) => crate::commands::commit::run(args, connect).await,
        ContainerCommand::Create(args) => {
            let mut request = args.request()?;
            // The run path prints the id and returns, as a detached run does.
            request.create_only = true;
            request.detach = true;
            let mut runtime = pb::runtime_client::RuntimeClient::new(connect.connect().await?);
            if let RunOutcome::Created(id) = run_container(&mut runtime, request).await? {
                println!("{id}");
            }
            Ok(())
        }
        ContainerCommand::Start { attach, interactive, containers } => {
            if (attach || interactive) && containers.len() > 1 {
                return Err(CliError::msg("start --attach takes one container; start the others without it"));
            }
            let mut runtime = pb::runtime_client::RuntimeClient::new(connect.connect().await?);
            if attach || interactive {
                // Attached from before its process runs: this run's output, all of it.
                let container = containers.into_iter().next().unwrap_or_default();
                let session = attach::Session { container, start: true, stdin: interactive, close_stdin_at_end: true };
                return attach::exit_with(attach::attached(&mut runtime, session).await?);
            }
            for name in containers {
                runtime.start_container(pb::ContainerRef { name: name.clone() }).await?;
                println!("{name}");
            }
            Ok(())
        }
        ContainerCommand::Ls { all, filters, quiet, format } => {
            container_ls::run(all, &filters, quiet, format.as_deref(), connect).await
        }
        ContainerCommand::Logs { follow, tail, timestamps, since, until, container } => {
            let since = since.as_deref().map(|t| flags::parse_time("--since", t)).transpose()?;
            let until = until.as_deref().map(|t| flags::parse_time("--until", t)).transpose()?;
            let tail = match tail.as_deref() {
                None | Some("all") => None,
                Some(n) => Some(n.parse::<u64>().map_err(|_| {
                    CliError::msg(format!("--tail {n:?} is invalid; use a number of lines or \"all\""))
                })?),
            };
            let mut runtime = pb::runtime_client::RuntimeClient::new(connect.connect().await?);
            let mut lines = runtime
                .container_logs(pb::ContainerLogsRequest { name: container, follow, tail, since_unix_nanos: since, until_unix_nanos: until })
                .await?
                .into_inner();
            while let Some(line) = lines.message().await? {
                print_log_line(&line, timestamps)?;
            }
            Ok(())
        }
        ContainerCommand::Restart { time, containers } => {
            let mut runtime = pb::runtime_client::RuntimeClient::new(connect.connect().await?);
            for name in containers {
                let request = pb::StopContainerRequest { name: name.clone(), timeout_secs: time.unwrap_or(0), has_timeout: time.is_some() };
                runtime.restart_container(request).await?;
                println!("{name}");
            }
            Ok(())
        }
        ContainerCommand::Stop { time, containers } => {
            let mut runtime = pb::runtime_client::RuntimeClient::new(connect.connect().await?);
            for name in containers {
                runtime
                    .stop_container(pb::StopContainerRequest {
                        name: name.clone(),
                        timeout_secs: time.unwrap_or(0),
                        has_timeout: time.is_some(),
                    })
                    .await?;
                println!("{name}");
            }
            Ok(())
        }
        ContainerCommand::Kill { signal, containers } => {
            let mut runtime = pb::runtime_client::RuntimeClient::new(connect.connect().await?);
            for name in containers {
                runtime.kill_container(pb::KillContainerRequest { name: name.clone(), signal: signal.clone() }).await?;
                println!("{name}");
            }
            Ok(())
        }
        ContainerCommand::Rm { force, containers } => {
            let mut runtime = pb::runtime_client::RuntimeClient::new(connect.connect().await?);
            for name in containers {
                runtime.remove_container(pb::RemoveContainerRequest { name: name.clone(), force }).await?;
                println!("{name}");
            }
            Ok(())
        }
        ContainerCommand::Inspect { containers } => {
            let mut runtime = pb::runtime_client::RuntimeClient::new(connect.connect().await?);
            let mut docs = Vec::new();
            for name in containers {
                let doc = runtime.inspect_container(pb::ContainerRef { name }).await?.into_inner();
                docs.push(serde_json::from_str::<serde_json::Value>(&doc.json)?);
            }
            print_json(&docs)
        }
        ContainerCommand::Top { container } => {
            let mut runtime = pb::runtime_client::RuntimeClient::new(connect.connect().await?);
            let top = runtime.top_container(pb::ContainerRef { name: container }).await?.into_inner();
            let titles: Vec<&str> = top.titles.iter().map(String::as_str).collect();
            print_table(&titles, top.processes.into_iter().map(|p| p.fields).collect());
            Ok(())
        }
        ContainerCommand::Rename { container, new_name } => {
            let mut runtime = pb::runtime_client::RuntimeClient::new(connect.connect().await?);
            runtime.rename_container(pb::RenameContainerRequest { name: container, new_name }).await?;
            Ok(())
        }
        ContainerCommand::Stats { no_stream, format, containers } => {
            let mut runtime = pb::runtime_client::RuntimeClient::new(connect.connect().await?);
            crate::commands::stats::run(&mut runtime, containers, no_stream, format).await
        }
        ContainerCommand::Port { container, private } => {
            let mut runtime = pb::runtime_client::RuntimeClient::new(connect.connect().await?);
            let doc = runtime.inspect_container(pb::ContainerRef { name: container.clone() }).await?.into_inner();
            let details: serde_json::Value = serde_json::from_str(&doc.json)?;
            let published = published_ports(&details);
            let wanted = private.as_deref().map(|p| if p.contains('/') { p.to_string() } else { format!("{p}/tcp") });
            let shown: Vec<&(String, String)> = published.iter().filter(|(inside, _)| wanted.as_ref().is_none_or(|w| w == inside)).collect();
            if let (Some(wanted), true) = (&wanted, shown.is_empty()) {
                return Err(CliError::msg(format!("no public port {wanted} is published for container {container}")));
            }
            for (inside, outside) in shown {
                if private.is_some() {
                    println!("{outside}");
                } else {
                    println!("{inside} -> {outside}");
                }
            }
            Ok(())
        }
        ContainerCommand::Prune { force: _ } => {
            let mut runtime = pb::runtime_client::RuntimeClient::new(connect.connect().await?);
            let pruned = runtime.prune_containers(pb::Empty {}).await?.into_inner();
            if !pruned.deleted.is_empty() {
                println!("Deleted Containers:");
                pruned.deleted.iter().for_each(|id| println!("{id}"));
                println!();
            }
            println!("Total reclaimed space: {}", crate::commands::image::human_size(pruned.reclaimed_bytes));
            Ok(())
        }
        ContainerCommand::Pause { containers } => {
            let mut runtime = pb::runtime_client::RuntimeClient::new(connect.connect().await?);
            for name in containers {
                runtime.pause_container(pb::ContainerRef { name: name.clone() }).await?;
                println!("{name}");
            }
            Ok(())
        }
        ContainerCommand::Unpause { containers } => {
            let mut runtime = pb::runtime_client::RuntimeClient::new(connect.connect().await?);
            for name in containers {
                runtime.unpause_container(pb::ContainerRef { name: name.clone() }).await?;
                println!("{name}");
            }
            Ok(())
        }
        ContainerCommand::Wait { containers } => {
            let mut runtime = pb::runtime_client::RuntimeClient::new(connect.connect().await?);
            for name in containers {
                let exit = runtime.wait_container(pb::ContainerRef { name }).await?.into_inner();
                println!("{}", exit.code);
            }
            Ok(())
        }
    }
}

/// (`80/tcp`, `0.0.0.0:8080`) pairs from inspect's `HOST_IP:PORT->PORT/PROTO` list.
fn published_ports(details: &serde_json::Value) -> Vec<(String, String)> {
    let Some(ports) = details["network_settings"]["ports"].as_array() else { return Vec::new() };
    ports
        .iter()
        .filter_map(|p| p.as_str())
        .filter_map(|p| p.split_once("->"))
        .map(|(outside, inside)| (inside.to_string(), outside.to_string()))
        .collect()
}

/// Makes (without starting) the container `request` describes, pulling
/// its image first if the node lacks it; the new container's id.
pub(crate) async fn create(runtime: &mut pb::runtime_client::RuntimeClient<Channel>, request: pb::RunContainerRequest) -> CliResult<String> {
    let request = pb::RunContainerRequest { create_only: true, detach: true, ..request };
    match run_container(runtime, request).await? {
        RunOutcome::Created(id) => Ok(id),
        RunOutcome::Exited(_) => Err(CliError::msg("the daemon ran the container instead of only creating it; upgrade the daemon")),
    }
}

/// What a RunContainer call came to.
enum RunOutcome {
    /// Detached or create-only: the container's id.
    Created(String),
    /// In the foreground: its exit code.
    Exited(i32),
}

async fn run_container(runtime: &mut pb::runtime_client::RuntimeClient<Channel>, request: pb::RunContainerRequest) -> CliResult<RunOutcome> {
    let detach = request.detach;
    // Asked straight away: a missing image is the rare case, and asking
    // first would cost every run a round trip.
    let mut events = match runtime.run_container(request.clone()).await {
        Ok(events) => events.into_inner(),
        Err(status) if status.code() == tonic::Code::NotFound && status.message().starts_with("no such image") => {
            eprintln!("Unable to find image '{}' locally", request.image);
            crate::commands::image::pull(runtime, &request.image, true).await?;
            runtime.run_container(request).await?.into_inner()
        }
        Err(status) => return Err(status.into()),
    };
    while let Some(event) = events.message().await? {
        match event.event {
            Some(pb::run_event::Event::Created(id)) if detach => return Ok(RunOutcome::Created(id)),
            Some(pb::run_event::Event::Created(_)) | None => {}
            Some(pb::run_event::Event::Output(line)) => print_log_line(&line, false)?,
            Some(pb::run_event::Event::Exit(exit)) => {
                if !exit.error.is_empty() {
                    return Err(CliError::msg(exit.error));
                }
                if exit.oom_killed {
                    eprintln!("The container was killed: it ran out of memory (exit code {}).", exit.code);
                }
                return Ok(RunOutcome::Exited(exit.code));
            }
        }
    }
    if detach {
        return Err(CliError::msg("the daemon did not report the new container's id; see its log"));
    }
    Err(CliError::msg("the daemon stopped relaying the container before it exited; check `shoal container ls -a`"))
}

fn print_log_line(line: &pb::LogLine, timestamps: bool) -> CliResult {
    let mut prefix = String::new();
    if timestamps {
        let time = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(line.time_unix_nanos.max(0) as u64);
        prefix = format!("{} ", humantime::format_rfc3339_nanos(time));
    }
    if line.stream == "stderr" {
        let mut err = std::io::stderr().lock();
        err.write_all(prefix.as_bytes())?;
        err.write_all(&line.data)?;
        err.flush()?;
    } else {
        let mut out = std::io::stdout().lock();
        out.write_all(prefix.as_bytes())?;
        out.write_all(&line.data)?;
        out.flush()?;
    }
    Ok(())
}

