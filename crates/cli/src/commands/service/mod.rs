//! `shoal service ...`: docker's service verbs and flags.
//!
//! Services are referred to by id, unique id prefix or name; the manager
//! resolves references, so the CLI passes them on as given.

mod converge;
mod endpoint_flags;
mod file_flags;
mod logs;
mod random_name;
mod rollout_flags;
mod show;
mod spec;
pub mod tasks;

use std::io::IsTerminal;
use std::time::SystemTime;

use shoal_proto::pb;
use tonic::transport::Channel;

use crate::client::ConnectArgs;
use crate::error::{CliError, CliResult};
use crate::output::{print_json, print_table, Format};

use spec::SpecChange;

type Control = pb::control_client::ControlClient<Channel>;

#[derive(Debug, clap::Subcommand)]
#[command(defer = true)]
pub enum ServiceCommand {
    /// Create a service
    Create(spec::CreateArgs),
    /// List services
    Ls {
        /// Only display ids
        #[arg(short, long)]
        quiet: bool,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// List the tasks of one or more services
    Ps {
        /// Service id, id prefix or name
        #[arg(required = true)]
        services: Vec<String>,
        #[command(flatten)]
        flags: tasks::PsFlags,
    },
    /// Show services in detail (JSON unless --pretty)
    Inspect {
        /// Human-readable text instead of JSON
        #[arg(long)]
        pretty: bool,
        #[arg(required = true)]
        services: Vec<String>,
    },
    /// Change the number of tasks of replicated services
    Scale {
        /// Return at once instead of waiting for the services to converge
        #[arg(short, long)]
        detach: bool,
        /// SERVICE=REPLICAS
        #[arg(required = true, value_name = "SERVICE=REPLICAS")]
        scales: Vec<String>,
    },
    /// Change a service (read-modify-write of its spec)
    Update(spec::UpdateArgs),
    /// Go back to a service's previous spec
    Rollback {
        /// Return at once instead of waiting for the rollback to complete
        #[arg(short, long)]
        detach: bool,
        /// No progress output
        #[arg(short, long)]
        quiet: bool,
        /// Service id, id prefix or name
        service: String,
    },
    /// Remove services
    Rm {
        #[arg(required = true)]
        services: Vec<String>,
    },
    /// Show the output of a service's or a task's containers
    Logs(logs::LogsArgs),
}

pub async fn run(command: ServiceCommand, connect: &ConnectArgs) -> CliResult {
    // Flags are checked before dialling so a typo is reported even with no daemon.
    match command {
        ServiceCommand::Create(args) => {
            let spec = args.spec()?;
            let mut control = Control::new(connect.connect().await?);
            let reply = control.create_service(pb::CreateServiceRequest { spec: Some(spec) }).await?.into_inner();
            for warning in &reply.warnings {
                eprintln!("Warning: {warning}");
            }
            let service = reply
                .service
                .ok_or_else(|| CliError::msg("the manager did not return the new service; check `shoal service ls`"))?;
            println!("{}", service.id);
            if !args.detach {
                let target = converge::Target {
                    service_id: service.id.clone(),
                    service_name: service.spec.as_ref().map(|s| s.name.clone()).unwrap_or_default(),
                    mode: converge::Mode::of(&service.spec.clone().unwrap_or_default()),
                    since: None,
                    replaced: false,
                    rollout: None,
                };
                converge::wait(&mut control, &target, show_progress(args.quiet)).await?;
            }
            Ok(())
        }
        ServiceCommand::Ls { quiet, format } => {
            let mut control = Control::new(connect.connect().await?);
            let services = control.list_services(pb::Empty {}).await?.into_inner().services;
            print_services(&services, quiet, format)
        }
        ServiceCommand::Ps { services, flags } => {
            let filter = tasks::TaskFilter::parse(&flags.filters, true)?;
            let mut control = Control::new(connect.connect().await?);
            let mut found = Vec::new();
            for service in &services {
                let request = filter.request(service, filter.node.as_deref().unwrap_or_default());
                found.extend(control.list_tasks(request).await?.into_inner().tasks.into_iter().filter(|t| filter.keep(t)));
            }
            dedup_tasks(&mut found);
            tasks::print_tasks(found, &flags)
        }
        ServiceCommand::Inspect { pretty, services } => {
            let mut control = Control::new(connect.connect().await?);
            let mut found = Vec::new();
            for service in services {
                found.push(control.inspect_service(pb::ServiceRef { service }).await?.into_inner());
            }
            if pretty {
                let texts: Vec<String> = found.iter().map(show::pretty).collect();
                print!("{}", texts.join("\n"));
                Ok(())
            } else {
                print_json(&found.iter().map(show::inspect_json).collect::<Vec<_>>())
            }
        }
        ServiceCommand::Scale { detach, scales } => {
            let scales = scales.iter().map(|s| spec::parse_scale(s)).collect::<CliResult<Vec<_>>>()?;
            let mut control = Control::new(connect.connect().await?);
            let mut last_error = None;
            for (service, replicas) in scales {
                let result = async {
                    let (_, updated) = update_service(&mut control, &service, &SpecChange::scale(replicas)).await?;
                    println!("{service} scaled to {replicas}");
                    if !detach {
                        converge::wait(&mut control, &target_after_update(&updated, false), show_progress(false)).await?;
                    }
                    Ok::<(), CliError>(())
                }
                .await;
                if let Err(e) = result {
                    report_and_keep(&mut last_error, e);
                }
            }
            last_error.map_or(Ok(()), Err)
        }
        ServiceCommand::Update(args) if args.rollback => {
            if args.change()? != SpecChange::default() {
                return Err(CliError::msg("--rollback cannot be combined with other changes; roll back first, then update"));
            }
            rollback(connect, &args.service, args.detach, args.quiet).await
        }
        ServiceCommand::Rollback { detach, quiet, service } => rollback(connect, &service, detach, quiet).await,
        ServiceCommand::Update(args) => {
            let change = args.change()?;
            let mut control = Control::new(connect.connect().await?);
            let (before, after) = update_service(&mut control, &args.service, &change).await?;
            println!("{}", args.service);
            if !args.detach {
                let (old, new) = (before.spec.unwrap_or_default(), after.spec.clone().unwrap_or_default());
                // The orchestrator replaces tasks when what they run or where changes.
                let replaced = old.task != new.task || old.placement != new.placement;
                let mut target = target_after_update(&after, replaced);
                if after.spec_version > before.spec_version {
                    target.rollout = Some(converge::Rollout::Update);
                }
                converge::wait(&mut control, &target, show_progress(args.quiet)).await?;
            }
            Ok(())
        }
        ServiceCommand::Rm { services } => {
            let mut control = Control::new(connect.connect().await?);
            let mut last_error = None;
            for service in services {
                match control.remove_service(pb::ServiceRef { service: service.clone() }).await {
                    Ok(_) => println!("{service}"),
                    Err(status) => report_and_keep(&mut last_error, status.into()),
                }
            }
            last_error.map_or(Ok(()), Err)
        }
        ServiceCommand::Logs(args) => {
            let mut control = Control::new(connect.connect().await?);
            logs::run(&mut control, args).await
        }
    }
}

/// Several services in one command go on after a failure, as docker's do:
/// earlier errors are printed, the last one is returned (and exits non-zero).
fn report_and_keep(last: &mut Option<CliError>, error: CliError) {
    if let Some(previous) = last.replace(error) {
        eprintln!("Error: {previous}");
    }
}

/// Progress lines only on a terminal, and not with `-q`.
fn show_progress(quiet: bool) -> bool {
    !quiet && std::io::stdout().is_terminal()
}

fn target_after_update(service: &pb::Service, replaced: bool) -> converge::Target {
    let spec = service.spec.clone().unwrap_or_default();
    converge::Target {
        service_id: service.id.clone(),
        service_name: spec.name.clone(),
        mode: converge::Mode::of(&spec),
        since: parse_time(&service.updated_at),
        replaced,
        rollout: None,
    }
}

/// Read-modify-write: the spec as the manager has it, changed, written
/// back if nobody changed it meanwhile; one retry on a version conflict.
/// Returns the service before and after.
async fn update_service(control: &mut Control, reference: &str, change: &SpecChange) -> CliResult<(pb::Service, pb::Service)> {
    let mut retried = false;
    loop {
        let current = control.inspect_service(pb::ServiceRef { service: reference.to_string() }).await?.into_inner();
        let mut spec = current.spec.clone().unwrap_or_default();
        change.apply(&mut spec)?;
        let request = pb::UpdateServiceRequest { service: current.id.clone(), version: current.version, spec: Some(spec), rollback: false };
        match control.update_service(request).await {
            Ok(reply) => return Ok((current, reply.into_inner())),
            Err(status) if status.code() == tonic::Code::Aborted && !retried => retried = true,
            Err(status) => return Err(status.into()),
        }
    }
}

/// `service rollback` / `service update --rollback`.
async fn rollback(connect: &ConnectArgs, service: &str, detach: bool, quiet: bool) -> CliResult {
    let mut control = Control::new(connect.connect().await?);
    let request = pb::UpdateServiceRequest { service: service.to_string(), rollback: true, ..Default::default() };
    let after = control.update_service(request).await?.into_inner();
    println!("{service}");
    if !detach {
        let target = converge::Target { rollout: Some(converge::Rollout::Rollback), ..target_after_update(&after, true) };
        converge::wait(&mut control, &target, show_progress(quiet)).await?;
    }
    Ok(())
}

/// Several `ps` arguments may name the same service.
fn dedup_tasks(tasks: &mut Vec<pb::Task>) {
    let mut seen = std::collections::HashSet::new();
    tasks.retain(|t| seen.insert(t.id.clone()));
}

/// `node ps`: the tasks on the given nodes (node id, id prefix or hostname,
/// resolved by the manager), or on the node serving the request.
pub async fn node_ps(control: &mut Control, nodes: Vec<String>, flags: &tasks::PsFlags) -> CliResult {
    let filter = tasks::TaskFilter::parse(&flags.filters, false)?;
    let nodes = if nodes.is_empty() {
        let self_id = control.list_nodes(pb::ListNodesRequest {}).await?.into_inner().self_id;
        if self_id.is_empty() {
            return Err(CliError::msg("the daemon did not say which node it is; name the node, e.g. `shoal node ps NODE`"));
        }
        vec![self_id]
    } else {
        nodes
    };
    let mut found = Vec::new();
    for node in &nodes {
        found.extend(control.list_tasks(filter.request("", node)).await?.into_inner().tasks.into_iter().filter(|t| filter.keep(t)));
    }
    dedup_tasks(&mut found);
    tasks::print_tasks(found, flags)
}

/// The first 12 characters of an id, as docker shows them.
/// Services as `service ls` (and `stack services`) print them.
pub fn print_services(services: &[pb::Service], quiet: bool, format: Format) -> CliResult {
    if quiet {
        for s in services {
            println!("{}", s.id);
        }
        Ok(())
    } else if format == Format::Json {
        print_json(&services.iter().map(show::ls_json).collect::<Vec<_>>())
    } else {
        print_table(&show::LS_HEADER, services.iter().map(show::ls_row).collect());
        Ok(())
    }
}

pub fn short_id(id: &str) -> &str {
    match id.char_indices().nth(12) {
        Some((at, _)) => &id[..at],
        None => id,
    }
}

/// `busybox:1@sha256:...` -> `busybox:1`, as docker shows pinned images.
pub fn strip_digest(image: &str) -> &str {
    image.split_once('@').map_or(image, |(name, _)| name)
}

/// "running" -> "Running", as docker prints states.
pub fn title(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The manager's RFC 3339 times; `None` when empty or unreadable.
pub fn parse_time(text: &str) -> Option<SystemTime> {
    if text.is_empty() {
        return None;
    }
    humantime::parse_rfc3339_weak(text).ok()
}

/// Milliseconds as docker prints durations: `5s`, `1m30s`, `500ms`, `0s`.
pub fn format_duration_ms(ms: u64) -> String {
    if ms == 0 {
        return "0s".into();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (hours, rest) = (ms / 3_600_000, ms % 3_600_000);
    let (minutes, rest) = (rest / 60_000, rest % 60_000);
    let (seconds, millis) = (rest / 1000, rest % 1000);
    let mut out = String::new();
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if hours > 0 || minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    if millis > 0 {
        let frac = format!("{millis:03}");
        out.push_str(&format!("{seconds}.{}s", frac.trim_end_matches('0')));
    } else {
        out.push_str(&format!("{seconds}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_like_docker() {
        assert_eq!(format_duration_ms(0), "0s");
        assert_eq!(format_duration_ms(500), "500ms");
        assert_eq!(format_duration_ms(5000), "5s");
        assert_eq!(format_duration_ms(90_000), "1m30s");
        assert_eq!(format_duration_ms(1500), "1.5s");
        assert_eq!(format_duration_ms(3_600_000), "1h0m0s");
    }

    #[test]
    fn ids_images_and_times() {
        assert_eq!(short_id("abcdefghijklmnopqrstuvwxy"), "abcdefghijkl");
        assert_eq!(short_id("abc"), "abc");
        assert_eq!(strip_digest("busybox:1@sha256:00"), "busybox:1");
        assert_eq!(strip_digest("busybox"), "busybox");
        assert_eq!(title("running"), "Running");
        assert!(parse_time("2024-05-01T12:00:00.123Z").is_some());
        assert!(parse_time("").is_none());
    }

    #[test]
    fn the_clap_tree_is_valid() {
        use clap::CommandFactory;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(subcommand)]
            command: ServiceCommand,
        }
        Cli::command().debug_assert();
    }
}
