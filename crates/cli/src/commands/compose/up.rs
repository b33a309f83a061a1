//! `compose up`: the project's networks and volumes made if missing, then
//! each service in dependency order, once what it depends on is ready
//! (started, healthy, or completed successfully), converged by `plan`.

use std::time::{Duration, Instant};

use shoal_proto::pb;

use super::node::{progress, NodeApi, ProjectContainer};
use super::plan::{self, Existing, Step};
use super::project::{InjectedFile, LocalProject, LocalService};
use crate::compose::model::Condition;
use crate::error::{CliError, CliResult};

/// How long `up` waits for one dependency to be ready.
const DEPENDENCY_TIMEOUT: Duration = Duration::from_secs(300);
/// How often a dependency's state is read while waiting (the daemon has no
/// event stream for standalone containers).
const DEPENDENCY_POLL: Duration = Duration::from_millis(100);

pub struct UpOptions {
    pub force_recreate: bool,
    pub remove_orphans: bool,
}

pub async fn up(node: &mut NodeApi, project: &LocalProject, options: &UpOptions) -> CliResult {
    create_networks(node, project).await?;
    create_volumes(node, project).await?;

    let existing = node.containers(&project.name).await?;
    let orphans: Vec<&ProjectContainer> = existing.iter().filter(|c| !project.services.iter().any(|s| s.key == c.service)).collect();
    if options.remove_orphans {
        for orphan in &orphans {
            node.remove(&orphan.name).await?;
            progress("Container", &orphan.name, "Removed");
        }
    } else if !orphans.is_empty() {
        let names: Vec<&str> = orphans.iter().map(|c| c.name.as_str()).collect();
        eprintln!(
            "warning: found containers of services the files no longer have ({}); remove them with `shoal compose up --remove-orphans`",
            names.join(", ")
        );
    }

    for service in &project.services {
        for (dependency, condition) in &service.depends_on {
            let Some(dependency) = project.services.iter().find(|s| &s.key == dependency) else { continue };
            wait_ready(node, project, dependency, *condition).await?;
        }
        let current: Vec<Existing> = existing
            .iter()
            .filter(|c| c.service == service.key)
            .map(|c| Existing { name: c.name.clone(), number: c.number, config_hash: c.config_hash.clone(), running: c.running() })
            .collect();
        for step in plan::service_steps(service, &current, options.force_recreate) {
            apply(node, project, service, step).await?;
        }
    }
    Ok(())
}

async fn create_networks(node: &mut NodeApi, project: &LocalProject) -> CliResult {
    let present = node.networks_by_name().await?;
    for name in &project.external_networks {
        if !present.contains_key(name) {
            return Err(CliError::msg(format!(
                "network {name} is declared external but does not exist on this node; create it with `shoal network create {name}`"
            )));
        }
    }
    for spec in &project.networks {
        if present.contains_key(&spec.name) {
            continue;
        }
        node.networks.create_network(pb::CreateNetworkRequest { spec: Some(spec.clone()) }).await?;
        progress("Network", &spec.name, "Created");
    }
    Ok(())
}

async fn create_volumes(node: &mut NodeApi, project: &LocalProject) -> CliResult {
    let present: Vec<String> = node.volumes().await?.into_iter().map(|v| v.name).collect();
    for volume in &project.volumes {
        if present.contains(&volume.name) {
            continue;
        }
        if volume.external {
            return Err(CliError::msg(format!(
                "volume {} is declared external but does not exist on this node; create it with `shoal volume create {}`",
                volume.name, volume.name
            )));
        }
        let request = pb::CreateVolumeRequest { name: volume.name.clone(), labels: volume.labels.clone().into_iter().collect() };
        node.runtime.create_volume(request).await?;
        progress("Volume", &volume.name, "Created");
    }
    Ok(())
}

async fn apply(node: &mut NodeApi, project: &LocalProject, service: &LocalService, step: Step) -> CliResult {
    match step {
        Step::Keep { name, start: false } => progress("Container", &name, "Running"),
        Step::Keep { name, start: true } => {
            node.runtime.start_container(pb::ContainerRef { name: name.clone() }).await?;
            progress("Container", &name, "Started");
        }
        Step::Remove { name } => {
            node.remove(&name).await?;
            progress("Container", &name, "Removed");
        }
        Step::Recreate { name, number } => {
            progress("Container", &name, "Recreate");
            node.stop(&name, None).await?;
            node.remove(&name).await?;
            progress("Container", &name, "Recreated");
            create_and_start(node, project, service, number).await?;
        }
        Step::Create { number } => create_and_start(node, project, service, number).await?,
    }
    Ok(())
}

async fn create_and_start(node: &mut NodeApi, project: &LocalProject, service: &LocalService, number: u64) -> CliResult {
    let request = service.container(&project.name, number);
    let name = request.name.clone();
    crate::commands::container::create(&mut node.runtime, request).await?;
    progress("Container", &name, "Created");
    if !service.files.is_empty() {
        inject_files(node, &name, &service.files).await?;
    }
    node.runtime.start_container(pb::ContainerRef { name: name.clone() }).await?;
    progress("Container", &name, "Started");
    Ok(())
}

/// Copies content secrets and configs into a created container, owned and
/// moded as the file says, as docker compose does for `content:`.
async fn inject_files(node: &mut NodeApi, container: &str, files: &[InjectedFile]) -> CliResult {
    let mut archive = tar::Builder::new(Vec::new());
    for file in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(file.data.len() as u64);
        header.set_mode(file.mode);
        header.set_uid(file.uid.into());
        header.set_gid(file.gid.into());
        header.set_mtime(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()));
        archive.append_data(&mut header, file.path.trim_start_matches('/'), file.data.as_slice())?;
    }
    let tar = archive.into_inner()?;
    let start = pb::CopyToStart { container: container.to_string(), path: "/".into(), source: None, keep_owners: true };
    let messages = [
        pb::CopyToInput { input: Some(pb::copy_to_input::Input::Start(start)) },
        pb::CopyToInput { input: Some(pb::copy_to_input::Input::Data(tar)) },
    ];
    node.runtime.copy_to_container(tokio_stream::iter(messages)).await?;
    Ok(())
}

/// Waits until every container of `dependency` meets `condition`; a
/// container that cannot meet it any more ends the wait with a sentence.
async fn wait_ready(node: &mut NodeApi, project: &LocalProject, dependency: &LocalService, condition: Condition) -> CliResult {
    let deadline = Instant::now() + DEPENDENCY_TIMEOUT;
    for number in 1..=dependency.replicas {
        let name = super::project::container_name(&project.name, &dependency.key, number);
        loop {
            let details = node.inspect(&name).await?;
            let state = &details["state"];
            let status = state["status"].as_str().unwrap_or_default();
            let exit_code = state["exit_code"].as_i64();
            let ready = match condition {
                Condition::ServiceStarted => status == "running" || status == "exited",
                Condition::ServiceHealthy => {
                    if state["health"].is_null() {
                        return Err(CliError::msg(format!(
                            "{name} has no health check, so depends_on condition service_healthy cannot hold; give service {} a healthcheck",
                            dependency.key
                        )));
                    }
                    match state["health"]["status"].as_str() {
                        Some("healthy") => true,
                        Some("unhealthy") => {
                            return Err(CliError::msg(format!("dependency failed to start: container {name} is unhealthy; see `shoal compose logs {}`", dependency.key)))
                        }
                        _ if status == "exited" => {
                            return Err(CliError::msg(format!("dependency failed to start: container {name} exited before it was healthy; see `shoal compose logs {}`", dependency.key)))
                        }
                        _ => false,
                    }
                }
                Condition::ServiceCompletedSuccessfully => match (status, exit_code) {
                    ("exited", Some(0)) => true,
                    ("exited", Some(code)) => {
                        return Err(CliError::msg(format!(
                            "service {} did not complete successfully: container {name} exited with {code}; see `shoal compose logs {}`",
                            dependency.key, dependency.key
                        )))
                    }
                    _ => false,
                },
            };
            if ready {
                break;
            }
            if Instant::now() >= deadline {
                return Err(CliError::msg(format!(
                    "container {name} did not meet {} within {} s; see `shoal compose logs {}`",
                    super::project::condition_name(condition),
                    DEPENDENCY_TIMEOUT.as_secs(),
                    dependency.key
                )));
            }
            tokio::time::sleep(DEPENDENCY_POLL).await;
        }
        if condition != Condition::ServiceStarted {
            progress("Container", &name, match condition {
                Condition::ServiceHealthy => "Healthy",
                _ => "Exited",
            });
        }
    }
    Ok(())
}
