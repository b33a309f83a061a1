//! `compose down / ps / logs / stop / start / restart`: the project's
//! containers, networks and volumes found by their labels, so these work
//! after the file changed, or with `-p NAME` and no file at all.

use std::io::Write;

use shoal_proto::pb;
use tokio::sync::mpsc;

use super::node::{progress, short_name, stop_request, NodeApi, ProjectContainer};
use super::project::{LocalProject, PROJECT_LABEL};
use crate::error::{CliError, CliResult};
use crate::output::print_table;

/// Which project, and the services its file has (`None`: no file read).
pub struct Scope {
    pub project: String,
    pub known_services: Option<Vec<String>>,
}

impl Scope {
    /// The project's containers of `services` (all when empty), refusing a
    /// service name the file does not have.
    async fn containers(&self, node: &mut NodeApi, services: &[String]) -> CliResult<Vec<ProjectContainer>> {
        if let Some(known) = &self.known_services {
            if let Some(unknown) = services.iter().find(|s| !known.contains(s)) {
                return Err(CliError::msg(format!("service {unknown:?} is not in the compose file; name one of its services")));
            }
        }
        let mut found = node.containers(&self.project).await?;
        found.retain(|c| services.is_empty() || services.contains(&c.service));
        Ok(found)
    }

    fn is_orphan(&self, container: &ProjectContainer) -> bool {
        self.known_services.as_ref().is_some_and(|known| !known.contains(&container.service))
    }
}

pub async fn down(node: &mut NodeApi, scope: &Scope, volumes: bool, remove_orphans: bool, timeout: Option<u32>) -> CliResult {
    let containers = scope.containers(node, &[]).await?;
    // Orphans (services the files no longer have) go only when asked.
    let (going, kept): (Vec<_>, Vec<_>) = containers.into_iter().partition(|c| remove_orphans || !scope.is_orphan(c));
    let kept_orphans: Vec<String> = kept.into_iter().map(|c| c.name).collect();
    let running: Vec<&ProjectContainer> = going.iter().filter(|c| c.running()).collect();
    node.stop_all(&running, timeout).await?;
    for container in &going {
        node.remove(&container.name).await?;
        progress("Container", &container.name, "Removed");
    }
    // Networks go once nothing is attached; one an orphan still uses stays.
    for (name, network) in node.networks_by_name().await? {
        let ours = network.spec.as_ref().and_then(|s| s.labels.get(PROJECT_LABEL)).map(String::as_str) == Some(scope.project.as_str());
        if !ours {
            continue;
        }
        match node.networks.remove_network(pb::NetworkRef { network: name.clone() }).await {
            Ok(_) => progress("Network", &name, "Removed"),
            Err(status) if !kept_orphans.is_empty() => eprintln!("warning: network {name} stays: {}", status.message()),
            Err(status) => return Err(status.into()),
        }
    }
    if volumes {
        for volume in node.volumes().await? {
            if volume.labels.get(PROJECT_LABEL).map(String::as_str) == Some(scope.project.as_str()) {
                node.runtime.remove_volume(pb::VolumeRef { name: volume.name.clone() }).await?;
                progress("Volume", &volume.name, "Removed");
            }
        }
    }
    if !kept_orphans.is_empty() {
        eprintln!(
            "warning: found containers of services the files no longer have ({}); remove them with `shoal compose down --remove-orphans`",
            kept_orphans.join(", ")
        );
    }
    Ok(())
}

pub async fn ps(node: &mut NodeApi, scope: &Scope, all: bool, quiet: bool, services: &[String]) -> CliResult {
    let mut containers = scope.containers(node, services).await?;
    containers.retain(|c| all || c.running());
    if quiet {
        containers.iter().for_each(|c| println!("{}", c.summary.id));
        return Ok(());
    }
    let mut rows = Vec::new();
    for c in &containers {
        let details = node.inspect(&c.name).await?;
        let ports: Vec<String> = details["network_settings"]["ports"]
            .as_array()
            .map(|ports| ports.iter().filter_map(|p| p.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        rows.push(vec![
            c.name.clone(),
            c.summary.image.clone(),
            format!("{:?}", c.summary.command),
            c.service.clone(),
            c.summary.status.clone(),
            ports.join(", "),
        ]);
    }
    print_table(&["NAME", "IMAGE", "COMMAND", "SERVICE", "STATUS", "PORTS"], rows);
    Ok(())
}

pub async fn stop(node: &mut NodeApi, scope: &Scope, timeout: Option<u32>, services: &[String]) -> CliResult {
    let containers = scope.containers(node, services).await?;
    let running: Vec<&ProjectContainer> = containers.iter().filter(|c| c.running()).collect();
    node.stop_all(&running, timeout).await
}

pub async fn start(node: &mut NodeApi, scope: &Scope, services: &[String]) -> CliResult {
    for container in scope.containers(node, services).await?.iter().filter(|c| !c.running()) {
        node.runtime.start_container(pb::ContainerRef { name: container.name.clone() }).await?;
        progress("Container", &container.name, "Started");
    }
    Ok(())
}

pub async fn restart(node: &mut NodeApi, scope: &Scope, timeout: Option<u32>, services: &[String]) -> CliResult {
    for container in scope.containers(node, services).await? {
        node.runtime.restart_container(stop_request(&container.name, timeout)).await?;
        progress("Container", &container.name, "Restarted");
    }
    Ok(())
}

/// One container's line, for the merged output.
struct Line {
    container: String,
    line: pb::LogLine,
}

/// Streams each container's output into one channel; it closes when every
/// stream has ended.
fn stream_logs(node: &NodeApi, containers: &[ProjectContainer], follow: bool, tail: Option<u64>) -> mpsc::Receiver<CliResult<Line>> {
    let (lines, merged) = mpsc::channel(256);
    for container in containers {
        let mut runtime = node.runtime.clone();
        let lines = lines.clone();
        let name = container.name.clone();
        tokio::spawn(async move {
            let request = pb::ContainerLogsRequest { name: name.clone(), follow, tail, since_unix_nanos: None, until_unix_nanos: None };
            let mut stream = match runtime.container_logs(request).await {
                Ok(stream) => stream.into_inner(),
                Err(status) => {
                    let _ = lines.send(Err(status.into())).await;
                    return;
                }
            };
            loop {
                match stream.message().await {
                    Ok(Some(line)) => {
                        if lines.send(Ok(Line { container: name.clone(), line })).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(status) => {
                        let _ = lines.send(Err(status.into())).await;
                        return;
                    }
                }
            }
        });
    }
    merged
}

/// Writes `line` after its container's padded short name, as compose does.
fn print_prefixed(project: &str, width: usize, timestamps: bool, line: &Line) -> CliResult {
    let name = short_name(project, &line.container);
    let mut prefix = format!("{name:<width$} | ");
    if timestamps {
        let time = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(line.line.time_unix_nanos.max(0) as u64);
        prefix.push_str(&format!("{} ", humantime::format_rfc3339_nanos(time)));
    }
    let mut text = line.line.data.clone();
    if !text.ends_with(b"\n") {
        text.push(b'\n');
    }
    let mut out = std::io::stdout().lock();
    for piece in text.split_inclusive(|b| *b == b'\n') {
        out.write_all(prefix.as_bytes())?;
        out.write_all(piece)?;
    }
    out.flush()?;
    Ok(())
}

pub async fn logs(node: &mut NodeApi, scope: &Scope, follow: bool, tail: Option<u64>, timestamps: bool, services: &[String]) -> CliResult {
    let containers = scope.containers(node, services).await?;
    let width = containers.iter().map(|c| short_name(&scope.project, &c.name).len()).max().unwrap_or(0);
    let mut merged = stream_logs(node, &containers, follow, tail);
    if follow {
        while let Some(line) = merged.recv().await {
            print_prefixed(&scope.project, width, timestamps, &line?)?;
        }
        return Ok(());
    }
    // Everything written so far, in the order it was written.
    let mut all = Vec::new();
    while let Some(line) = merged.recv().await {
        all.push(line?);
    }
    all.sort_by_key(|l| l.line.time_unix_nanos);
    for line in &all {
        print_prefixed(&scope.project, width, timestamps, line)?;
    }
    Ok(())
}

/// `up` without `-d`: the containers' output until they all exit, or until
/// Ctrl-C, which stops them (a second Ctrl-C leaves at once).
pub async fn follow_until_interrupted(node: &mut NodeApi, project: &LocalProject) -> CliResult {
    let containers = node.containers(&project.name).await?;
    let width = containers.iter().map(|c| short_name(&project.name, &c.name).len()).max().unwrap_or(0);
    let mut merged = stream_logs(node, &containers, true, None);
    println!("Attaching to {}", containers.iter().map(|c| short_name(&project.name, &c.name)).collect::<Vec<_>>().join(", "));
    loop {
        tokio::select! {
            line = merged.recv() => match line {
                Some(line) => print_prefixed(&project.name, width, false, &line?)?,
                None => return Ok(()),
            },
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    eprintln!("Gracefully stopping... (press Ctrl+C again to force)");
    let running: Vec<&ProjectContainer> = containers.iter().collect();
    let stopping = node.stop_all(&running, None);
    tokio::select! {
        done = stopping => done,
        _ = tokio::signal::ctrl_c() => Err(CliError::msg("stopping was interrupted; `shoal compose stop` stops the rest")),
    }
}
