//! A loaded compose file as one node's plain containers, named and
//! labelled as `docker compose` names them: containers `PROJECT-SERVICE-N`,
//! bridge networks `PROJECT_network` (`PROJECT_default` for services that
//! name none), volumes `PROJECT_volume`, each labelled
//! `com.docker.compose.project=PROJECT`. Pure: the daemon is not asked
//! anything here, so every key's fate is tested without one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use prost::Message;
use sha2::{Digest, Sha256};
use shoal_proto::pb;

use crate::compose::model::{self, ComposeFile, Condition, Service};
use crate::compose::service_parts;

pub const PROJECT_LABEL: &str = "com.docker.compose.project";
pub const SERVICE_LABEL: &str = "com.docker.compose.service";
pub const NUMBER_LABEL: &str = "com.docker.compose.container-number";
pub const CONFIG_HASH_LABEL: &str = "com.docker.compose.config-hash";
pub const NETWORK_LABEL: &str = "com.docker.compose.network";
pub const VOLUME_LABEL: &str = "com.docker.compose.volume";

/// Where a compose secret lands unless its target is absolute.
const SECRETS_DIR: &str = "/run/secrets";

/// Everything `compose up` makes on the node.
#[derive(Debug, Default)]
pub struct LocalProject {
    pub name: String,
    /// Bridge networks to create (or find already made).
    pub networks: Vec<pb::NetworkSpec>,
    /// Networks the file marks external: they must exist.
    pub external_networks: Vec<String>,
    pub volumes: Vec<LocalVolume>,
    /// Dependencies before the services that wait for them.
    pub services: Vec<LocalService>,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LocalVolume {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Must exist already; never created or removed.
    pub external: bool,
}

#[derive(Debug, Clone)]
pub struct LocalService {
    pub key: String,
    pub replicas: u64,
    /// Container 1's request, unnamed; `container` names and numbers it.
    template: pb::RunContainerRequest,
    pub depends_on: Vec<(String, Condition)>,
    /// Secrets and configs given as content: copied into each container
    /// before it starts (a file's are bind-mounted, as docker does).
    pub files: Vec<InjectedFile>,
    /// Over the request and the files: a container whose label differs is
    /// recreated by `up`, one that matches is left alone.
    pub config_hash: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct InjectedFile {
    pub path: String,
    pub data: Vec<u8>,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

impl LocalService {
    /// The request for container `number` (1-based) of project `project`.
    /// A fixed host port can belong to one container only: the first.
    pub fn container(&self, project: &str, number: u64) -> pb::RunContainerRequest {
        let mut request = self.template.clone();
        request.name = container_name(project, &self.key, number);
        request.labels.insert(NUMBER_LABEL.into(), number.to_string());
        if number > 1 {
            request.published.clear();
        }
        request
    }
}

/// `PROJECT-SERVICE-N`, docker compose's container name.
pub fn container_name(project: &str, service: &str, number: u64) -> String {
    format!("{project}-{service}-{number}")
}

/// docker compose's project name rule: lowercase letters, digits, '-' and
/// '_', starting with a letter or digit.
pub fn check_project_name(name: &str) -> Result<(), String> {
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if valid {
        Ok(())
    } else {
        Err(format!("project name {name:?} is invalid; use lowercase letters, digits, '-' and '_', starting with a letter or digit"))
    }
}

/// The name a directory gives a project when none is set: lowercased, with
/// what a project name cannot hold dropped (as docker compose does).
pub fn project_name_from_dir(dir: &Path) -> String {
    let base = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    base.to_lowercase()
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '_')
        .skip_while(|c| !c.is_ascii_alphanumeric())
        .collect()
}

/// The containers, networks and volumes of `file` as project `project`;
/// `environment` gives secrets and configs with an `environment:` source.
pub fn convert(project: &str, file: &ComposeFile, environment: &BTreeMap<String, String>) -> Result<LocalProject, String> {
    check_project_name(project)?;
    let mut out = LocalProject { name: project.to_string(), ..Default::default() };
    let project_labels = |own: &model::KeyValues| -> BTreeMap<String, String> {
        let mut labels: BTreeMap<String, String> = own.pairs().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        labels.insert(PROJECT_LABEL.into(), project.into());
        labels
    };

    // Networks: the file's, plus `default` when a service names none.
    let mut network_names = BTreeMap::new();
    for (key, network) in service_parts::networks(file) {
        let name = service_parts::object_name(project, &key, &network.external, &network.name);
        network_names.insert(key.clone(), name.clone());
        if network.external.external {
            out.external_networks.push(name);
            continue;
        }
        match network.driver.as_deref() {
            None | Some("bridge") => {}
            Some("overlay") => {
                return Err(format!(
                    "networks.{key}.driver \"overlay\" needs a swarm; deploy the file with `shoal stack deploy`, or drop the driver for a bridge on this node"
                ))
            }
            Some(other) => return Err(format!("networks.{key}.driver {other:?} is unknown on one node; use bridge")),
        }
        for (set, what) in [(network.attachable.is_some_and(|f| f.0), "attachable"), (network.enable_ipv6.is_some_and(|f| f.0), "enable_ipv6")] {
            if set {
                out.warnings.push(format!("networks.{key}.{what} is ignored: bridge networks on one node are IPv4 and always attachable"));
            }
        }
        let pool = network.ipam.as_ref().and_then(|ipam| ipam.config.first()).cloned().unwrap_or_default();
        let mut labels = project_labels(&network.labels);
        labels.insert(NETWORK_LABEL.into(), key.clone());
        out.networks.push(pb::NetworkSpec {
            name: name.clone(),
            labels: labels.into_iter().collect(),
            driver: pb::NetworkDriver::Bridge.into(),
            subnet: pool.subnet.unwrap_or_default(),
            gateway: pool.gateway.unwrap_or_default(),
            attachable: true,
            internal: network.internal.is_some_and(|f| f.0),
            options: network.driver_opts.pairs().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ingress: false,
        });
    }

    // Named volumes, made on first use as docker compose does.
    let mut volume_names = BTreeMap::new();
    for (key, volume) in &file.volumes {
        let volume = volume.clone().unwrap_or_default();
        let external = volume.external.external;
        let name = service_parts::object_name(project, key, &volume.external, &volume.name);
        if volume.driver.as_deref().is_some_and(|d| d != "local") {
            out.warnings.push(format!("volumes.{key}.driver is ignored: volumes on this node use the local driver"));
        }
        let mut labels = project_labels(&volume.labels);
        labels.insert(VOLUME_LABEL.into(), key.clone());
        volume_names.insert(key.clone(), name.clone());
        out.volumes.push(LocalVolume { name, labels, external });
    }

    let mut services = BTreeMap::new();
    for (key, service) in &file.services {
        let converted = local_service(project, key, service, file, &network_names, &volume_names, environment, &mut out.warnings)?;
        services.insert(key.clone(), converted);
    }
    out.services = dependency_order(services)?;
    Ok(out)
}

/// The condition as the file spells it.
pub fn condition_name(condition: Condition) -> &'static str {
    match condition {
        Condition::ServiceStarted => "service_started",
        Condition::ServiceHealthy => "service_healthy",
        Condition::ServiceCompletedSuccessfully => "service_completed_successfully",
    }
}

#[allow(clippy::too_many_arguments)]
fn local_service(
    project: &str,
    key: &str,
    service: &Service,
    file: &ComposeFile,
    network_names: &BTreeMap<String, String>,
    volume_names: &BTreeMap<String, String>,
    environment: &BTreeMap<String, String>,
    warnings: &mut Vec<String>,
) -> Result<LocalService, String> {
    let at = |what: &str| format!("services.{key}.{what}");
    let deploy = &service.deploy;
    let global = deploy.mode == Some(model::DeployMode::Global);
    if global && deploy.replicas.is_some() {
        return Err(format!("{} cannot be used with deploy.mode global; drop one of them", at("deploy.replicas")));
    }
    // One node: a global service is one container.
    let replicas = if global { 1 } else { deploy.replicas.map_or(1, |r| r.0) };
    let swarm_only = [
        (!deploy.placement.constraints.is_empty() || !deploy.placement.preferences.is_empty() || deploy.placement.max_replicas_per_node.is_some(), "deploy.placement"),
        (deploy.update_config.is_some(), "deploy.update_config"),
        (deploy.rollback_config.is_some(), "deploy.rollback_config"),
        (deploy.endpoint_mode.is_some(), "deploy.endpoint_mode"),
        (!deploy.labels.0.is_empty(), "deploy.labels"),
        (deploy.resources.reservations != Default::default(), "deploy.resources.reservations"),
    ];
    for (_, what) in swarm_only.iter().filter(|(set, _)| *set) {
        warnings.push(format!("{} is ignored by compose on one node: it applies to swarm services (`shoal stack deploy`)", at(what)));
    }
    if service.restart.is_some() || deploy.restart_policy.is_some() {
        let key = if service.restart.is_some() { "restart" } else { "deploy.restart_policy" };
        warnings.push(format!("{} is not honoured for plain containers yet: a container that exits stays stopped until `shoal compose up` or `start`", at(key)));
    }

    let mut mounts = service_parts::mounts(service, &|volume| volume_names.get(volume).cloned().unwrap_or_else(|| format!("{project}_{volume}")));
    let mut files = Vec::new();
    for (kind, references, objects) in [("secrets", &service.secrets, &file.secrets), ("configs", &service.configs, &file.configs)] {
        for reference in references {
            let object = objects.get(&reference.source).cloned().unwrap_or_default();
            let target = match (kind, reference.target.as_deref()) {
                ("secrets", Some(t)) if t.starts_with('/') => t.to_string(),
                ("secrets", t) => format!("{SECRETS_DIR}/{}", t.unwrap_or(&reference.source)),
                (_, Some(t)) => t.to_string(),
                (_, None) => format!("/{}", reference.source),
            };
            let what = at(&format!("{kind}.{}", reference.source));
            if object.external.external {
                return Err(format!("{what} is external, which needs a swarm's {kind}; deploy with `shoal stack deploy`, or give the file a file: or content: source"));
            }
            if let Some(path) = &object.file {
                if reference.uid.is_some() || reference.gid.is_some() || reference.mode.is_some() {
                    warnings.push(format!("{what}: uid, gid and mode are ignored for a file source, which is bind-mounted as it is"));
                }
                mounts.push(pb::Mount { r#type: "bind".into(), source: path.clone(), target, readonly: true, ..Default::default() });
                continue;
            }
            let data = match (&object.environment, &object.content) {
                (Some(variable), _) => environment
                    .get(variable)
                    .ok_or_else(|| format!("{kind}.{}.environment names {variable}, which is not set; set it or use file", reference.source))?
                    .clone()
                    .into_bytes(),
                (None, Some(content)) => content.clone().into_bytes(),
                (None, None) => return Err(format!("{kind}.{} has no source; give it file:, environment: or content:", reference.source)),
            };
            files.push(InjectedFile {
                path: target,
                data,
                uid: reference.uid.unwrap_or(0),
                gid: reference.gid.unwrap_or(0),
                mode: reference.mode.unwrap_or(0o444),
            });
        }
    }

    let mut published = Vec::new();
    for port in service.ports.iter().flat_map(|entry| &entry.0) {
        let Some(host_port) = port.published else {
            warnings.push(format!(
                "{}: {} has no published port, so it is reachable on the project's networks only; give PUBLISHED:TARGET to publish it",
                at("ports"),
                port.target
            ));
            continue;
        };
        published.push(pb::PublishedPort {
            protocol: match port.protocol {
                model::Protocol::Tcp => pb::PortProtocol::Tcp,
                model::Protocol::Udp => pb::PortProtocol::Udp,
            }
            .into(),
            host_ip: port.host_ip.clone().unwrap_or_default(),
            host_port: host_port.into(),
            container_port: port.target.into(),
        });
    }
    if replicas > 1 && !published.is_empty() {
        warnings.push(format!(
            "{}: one node has each host port once, so container {} publishes them and the other {} replicas do not",
            at("ports"),
            container_name(project, key, 1),
            replicas - 1
        ));
    }

    // The runtime takes one program; the rest of a list entrypoint goes in
    // front of the command (the process's argv is the same).
    let entrypoint = service.entrypoint.as_ref().map(|w| w.0.clone()).unwrap_or_default();
    let command = service.command.as_ref().map(|w| w.0.clone()).unwrap_or_default();
    let (entrypoint, command) = match entrypoint.split_first() {
        Some((program, rest)) => (Some(program.clone()), rest.iter().chain(&command).cloned().collect()),
        None => (None, command),
    };
    let mut labels: BTreeMap<String, String> = service.labels.pairs().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    labels.insert(PROJECT_LABEL.into(), project.into());
    labels.insert(SERVICE_LABEL.into(), key.into());
    let limits = &deploy.resources.limits;
    let template = pb::RunContainerRequest {
        image: service.image.clone().unwrap_or_default(),
        name: String::new(),
        command,
        entrypoint,
        env: service_parts::environment(service),
        hostname: service.hostname.clone().unwrap_or_default(),
        user: service.user.clone().unwrap_or_default(),
        workdir: service.working_dir.clone().unwrap_or_default(),
        labels: labels.into_iter().collect(),
        read_only: service.read_only.is_some_and(|f| f.0),
        mounts,
        memory_bytes: limits.memory.map_or(0, |m| m.0),
        nano_cpus: limits.cpus.map_or(0, |c| c.0),
        pids_limit: limits.pids.map_or(0, |p| i64::try_from(p.0).unwrap_or(i64::MAX)),
        auto_remove: false,
        detach: true,
        networks: service_parts::attachments(
            key,
            service,
            &|network| network_names.get(network).cloned().unwrap_or_else(|| network.to_string()),
            &mut |warning| warnings.push(warning),
        ),
        published,
        dns: Some(service_parts::dns(service)),
        // Made first, given its files, then started once its dependencies are ready.
        create_only: true,
        tty: service.tty.is_some_and(|f| f.0),
        open_stdin: service.stdin_open.is_some_and(|f| f.0),
        healthcheck: service_parts::healthcheck(service),
        options: Some(service_parts::process_options(service)),
        stop_signal: service.stop_signal.clone().unwrap_or_default(),
        stop_timeout_secs: service.stop_grace_period.map(|d| u32::try_from(d.0.div_ceil(1000)).unwrap_or(u32::MAX)),
    };
    let config_hash = config_hash(&template, &files);
    let mut template = template;
    template.labels.insert(CONFIG_HASH_LABEL.into(), config_hash.clone());
    Ok(LocalService {
        key: key.to_string(),
        replicas,
        template,
        depends_on: service.depends_on.0.iter().map(|(name, condition)| (name.clone(), *condition)).collect(),
        files,
        config_hash,
    })
}

/// A digest of what makes a container: the request with its maps in key
/// order (prost keeps them in hash maps, whose order varies) and the files.
fn config_hash(request: &pb::RunContainerRequest, files: &[InjectedFile]) -> String {
    let mut request = request.clone();
    let labels: BTreeMap<String, String> = std::mem::take(&mut request.labels).into_iter().collect();
    let sysctls: BTreeMap<String, String> =
        request.options.as_mut().map(|o| std::mem::take(&mut o.sysctls).into_iter().collect()).unwrap_or_default();
    let mut digest = Sha256::new();
    digest.update(request.encode_to_vec());
    for (key, value) in labels.iter().chain(&sysctls) {
        digest.update((key.len() as u64).to_le_bytes());
        digest.update(key);
        digest.update((value.len() as u64).to_le_bytes());
        digest.update(value);
    }
    for file in files {
        digest.update(file.path.as_bytes());
        digest.update([0]);
        digest.update(&file.data);
        digest.update([file.uid, file.gid, file.mode].map(u32::to_le_bytes).concat());
    }
    digest.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Services with each one's dependencies before it; a cycle is refused.
fn dependency_order(mut services: BTreeMap<String, LocalService>) -> Result<Vec<LocalService>, String> {
    let mut ordered = Vec::new();
    let mut placed = BTreeSet::new();
    while !services.is_empty() {
        let ready: Vec<String> = services
            .iter()
            .filter(|(_, s)| s.depends_on.iter().all(|(d, _)| placed.contains(d) || !services.contains_key(d)))
            .map(|(k, _)| k.clone())
            .collect();
        if ready.is_empty() {
            let cycle: Vec<&str> = services.keys().map(String::as_str).collect();
            return Err(format!(
                "services {} depend on each other in a cycle; remove one of their depends_on entries",
                cycle.join(", ")
            ));
        }
        for key in ready {
            placed.insert(key.clone());
            ordered.extend(services.remove(&key));
        }
    }
    Ok(ordered)
}

#[cfg(test)]
#[path = "project_tests.rs"]
mod tests;
