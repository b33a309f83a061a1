//! Services and tasks between their wire form and the store's, with the
//! validation of everything a user can put in a service spec.

use shoal_proto::pb;

use super::control::rfc3339;
use crate::errors::ManagerError;
use super::endpoint_pb::{dns_from_pb, dns_to_pb, endpoint_from_pb, endpoint_to_pb};
use super::file_refs::{references_from_pb, references_to_pb, FileKind};
use super::networks::cidr;
use super::rollout_pb::{health_from_pb, health_to_pb, update_config_from_pb, update_config_to_pb, update_status_to_pb};
use crate::store::{
    decimal, human_bytes, Constraint, Mount, MountKind, Network, NetworkAttachmentSpec, Node, Placement, PublishMode, Resources,
    RegistryLogin, RestartCondition, RestartPolicy, Service, ServiceMode, ServiceSpec, StoreState, Task, TaskSpec, TaskState,
};
use crate::store::task_options::{TaskOptions, Ulimit};
use crate::store::{Dependency, DependencyCondition};

/// Docker's default stop grace period.
pub const DEFAULT_STOP_GRACE_MS: u64 = 10_000;

fn invalid(message: String) -> ManagerError {
    ManagerError::InvalidArgument(message)
}

pub fn spec_from_pb(spec: pb::ServiceSpec) -> Result<ServiceSpec, ManagerError> {
    validate_name(&spec.name)?;
    let mode = match spec.mode.as_str() {
        "" | "replicated" => ServiceMode::Replicated { replicas: spec.replicas },
        "global" if spec.replicas == 0 => ServiceMode::Global,
        "global" => {
            return Err(invalid(format!(
                "service {:?} is global but asks for {} replicas; drop --replicas or use --mode replicated",
                spec.name, spec.replicas
            )))
        }
        other => return Err(invalid(format!("service mode {other:?} is unknown; use replicated or global"))),
    };
    let task = task_spec_from_pb(spec.task.unwrap_or_default())?;
    let update = update_config_from_pb(spec.update_config, "update")?;
    let rollback = update_config_from_pb(spec.rollback_config, "rollback")?;
    let endpoint = endpoint_from_pb(&spec.name, spec.endpoint)?;
    let restart = match spec.restart {
        None => RestartPolicy::default(),
        Some(r) => RestartPolicy {
            condition: match r.condition.as_str() {
                "" => RestartCondition::Any,
                c => RestartCondition::parse(c).ok_or_else(|| {
                    invalid(format!("restart condition {c:?} is unknown; use none, on-failure or any"))
                })?,
            },
            delay_ms: r.delay_ms,
            max_attempts: r.max_attempts,
            window_ms: r.window_ms,
        },
    };
    let placement = spec.placement.unwrap_or_default();
    let constraints = placement.constraints.iter().map(|c| Constraint::parse(c).map_err(invalid)).collect::<Result<_, _>>()?;
    for key in &placement.spread {
        if key.strip_prefix("node.labels.").is_none_or(str::is_empty) && key.strip_prefix("engine.labels.").is_none_or(str::is_empty) {
            return Err(invalid(format!(
                "placement preference spread={key} is invalid; spread over node.labels.KEY or engine.labels.KEY"
            )));
        }
    }
    Ok(ServiceSpec {
        name: spec.name,
        labels: spec.labels.into_iter().collect(),
        mode,
        task,
        restart,
        placement: Placement {
            constraints,
            spread: placement.spread,
            max_replicas_per_node: placement.max_replicas_per_node,
            // Only the manager learns these, from the registry.
            platforms: Vec::new(),
            host_ports: endpoint.ports.iter().any(|p| p.published_port > 0 && p.publish_mode == PublishMode::Host),
        },
        endpoint,
        update,
        rollback,
        depends_on: spec
            .depends_on
            .into_iter()
            .map(|d| Dependency {
                service: d.service,
                condition: match pb::DependencyCondition::try_from(d.condition).unwrap_or_default() {
                    pb::DependencyCondition::Unspecified | pb::DependencyCondition::Started => DependencyCondition::Started,
                    pb::DependencyCondition::Healthy => DependencyCondition::Healthy,
                    pb::DependencyCondition::CompletedSuccessfully => DependencyCondition::CompletedSuccessfully,
                },
            })
            .collect(),
    })
}

fn validate_name(name: &str) -> Result<(), ManagerError> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if valid {
        Ok(())
    } else {
        Err(invalid(format!(
            "service name {name:?} is invalid; use 1 to 63 letters, digits, '-' or '_', starting with a letter or digit"
        )))
    }
}

fn task_spec_from_pb(task: pb::TaskSpec) -> Result<TaskSpec, ManagerError> {
    if task.image.trim().is_empty() {
        return Err(invalid("the service has no image; name one, e.g. `shoal service create busybox`".into()));
    }
    for env in &task.env {
        if env.split_once('=').is_none_or(|(k, _)| k.is_empty()) {
            return Err(invalid(format!("environment variable {env:?} is invalid; write it as KEY=VALUE")));
        }
    }
    let mounts = task.mounts.into_iter().map(mount_from_pb).collect::<Result<_, _>>()?;
    let networks = task.networks.into_iter().map(attachment_from_pb).collect::<Result<_, _>>()?;
    let dns = dns_from_pb(task.dns)?;
    let secrets = references_from_pb(FileKind::Secret, task.secrets)?;
    let configs = references_from_pb(FileKind::Config, task.configs)?;
    let healthcheck = health_from_pb(task.healthcheck)?;
    let r = task.resources.unwrap_or_default();
    if r.limit_memory > 0 && r.reserve_memory > r.limit_memory {
        return Err(invalid(format!(
            "memory reservation {} is larger than the memory limit {}; lower --reserve-memory or raise --limit-memory",
            human_bytes(r.reserve_memory),
            human_bytes(r.limit_memory)
        )));
    }
    Ok(TaskSpec {
        image: task.image.trim().to_string(),
        entrypoint: task.entrypoint,
        args: task.args,
        env: task.env,
        workdir: task.workdir,
        user: task.user,
        hostname: task.hostname,
        mounts,
        read_only: task.read_only,
        stop_signal: task.stop_signal,
        stop_grace_ms: if task.stop_grace_ms == 0 { DEFAULT_STOP_GRACE_MS } else { task.stop_grace_ms },
        resources: Resources {
            reserve_nano_cpus: r.reserve_nano_cpus,
            reserve_memory: r.reserve_memory,
            limit_nano_cpus: r.limit_nano_cpus,
            limit_memory: r.limit_memory,
            pids_limit: r.pids_limit,
        },
        networks,
        dns,
        secrets,
        configs,
        registry_auth: task
            .registry_auth
            .filter(|c| !c.username.is_empty())
            .map(|c| RegistryLogin { username: c.username, password: c.password }),
        healthcheck,
        force_update: task.force_update,
        options: task_options_from_pb(task.options.unwrap_or_default(), task.tty, task.open_stdin),
    })
}

fn task_options_from_pb(options: pb::ProcessOptions, tty: bool, open_stdin: bool) -> TaskOptions {
    TaskOptions {
        cap_add: options.cap_add,
        cap_drop: options.cap_drop,
        sysctls: options.sysctls.into_iter().collect(),
        ulimits: options.ulimits.into_iter().map(|u| Ulimit { name: u.name, soft: u.soft, hard: u.hard }).collect(),
        init: options.init,
        extra_hosts: options.extra_hosts.into_iter().map(|h| (h.name, h.address)).collect(),
        tty,
        open_stdin,
    }
}

fn task_options_to_pb(options: &TaskOptions) -> pb::ProcessOptions {
    pb::ProcessOptions {
        cap_add: options.cap_add.clone(),
        cap_drop: options.cap_drop.clone(),
        sysctls: options.sysctls.clone().into_iter().collect(),
        ulimits: options.ulimits.iter().map(|u| pb::Ulimit { name: u.name.clone(), soft: u.soft, hard: u.hard }).collect(),
        init: options.init,
        extra_hosts: options.extra_hosts.iter().map(|(name, address)| pb::HostEntry { name: name.clone(), address: address.clone() }).collect(),
    }
}

/// The network as the user named it (resolved to an id against the store
/// by the caller) and its aliases, which must be usable as DNS names.
fn attachment_from_pb(attachment: pb::NetworkAttachmentConfig) -> Result<NetworkAttachmentSpec, ManagerError> {
    let target = attachment.target.trim().to_string();
    if target.is_empty() {
        return Err(invalid("a network attachment names no network; use --network NAME".into()));
    }
    for alias in &attachment.aliases {
        let valid = !alias.is_empty()
            && alias.len() <= 253
            && alias.split('.').all(|label| {
                !label.is_empty() && label.len() <= 63 && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            });
        if !valid {
            return Err(invalid(format!(
                "network alias {alias:?} is invalid; use a DNS name of letters, digits, '-' and '_' separated by dots"
            )));
        }
    }
    Ok(NetworkAttachmentSpec { network_id: target, aliases: attachment.aliases })
}

fn mount_from_pb(mount: pb::Mount) -> Result<Mount, ManagerError> {
    let kind = match mount.r#type.as_str() {
        "bind" => MountKind::Bind,
        "volume" | "" => MountKind::Volume,
        "tmpfs" => MountKind::Tmpfs,
        other => return Err(invalid(format!("mount type {other:?} is unknown; use bind, volume or tmpfs"))),
    };
    if !mount.target.starts_with('/') {
        return Err(invalid(format!("mount target {:?} is not an absolute path; give the path inside the container", mount.target)));
    }
    if kind == MountKind::Bind && !mount.source.starts_with('/') {
        return Err(invalid(format!("bind mount source {:?} is not an absolute path; give a host path", mount.source)));
    }
    Ok(Mount {
        kind,
        source: mount.source,
        target: mount.target,
        read_only: mount.readonly,
        tmpfs_size: (mount.tmpfs_size > 0).then_some(mount.tmpfs_size),
        tmpfs_mode: (mount.tmpfs_mode > 0).then_some(mount.tmpfs_mode),
    })
}

/// Refuses reservations that no node could ever satisfy, so the user
/// learns at create time rather than from a task pending forever. Nodes
/// that have not reported their size yet do not count.
pub fn check_reservations(state: &StoreState, spec: &ServiceSpec) -> Result<(), ManagerError> {
    let r = spec.task.resources;
    let nodes: Vec<&Node> = state.list_typed::<Node>().filter(|n| n.description.memory_bytes > 0).collect();
    if nodes.is_empty() {
        return Ok(());
    }
    let most_memory = nodes.iter().map(|n| n.description.memory_bytes).max().unwrap_or(0);
    if r.reserve_memory > most_memory {
        return Err(invalid(format!(
            "memory reservation {} is larger than any node's memory (the largest has {}); lower --reserve-memory",
            human_bytes(r.reserve_memory),
            human_bytes(most_memory)
        )));
    }
    let most_cpus = nodes.iter().map(|n| n.description.nano_cpus).max().unwrap_or(0);
    if most_cpus > 0 && r.reserve_nano_cpus > most_cpus {
        return Err(invalid(format!(
            "CPU reservation {} is larger than any node's CPUs (the largest has {}); lower --reserve-cpu",
            decimal(r.reserve_nano_cpus as f64 / 1e9),
            decimal(most_cpus as f64 / 1e9)
        )));
    }
    Ok(())
}

pub fn spec_to_pb(spec: &ServiceSpec) -> pb::ServiceSpec {
    let (mode, replicas) = match spec.mode {
        ServiceMode::Replicated { replicas } => ("replicated", replicas),
        ServiceMode::Global => ("global", 0),
    };
    pb::ServiceSpec {
        name: spec.name.clone(),
        labels: spec.labels.clone().into_iter().collect(),
        mode: mode.into(),
        replicas,
        // What clients see of a service never carries its registry login.
        task: Some(pb::TaskSpec { registry_auth: None, ..task_spec_to_pb(&spec.task) }),
        restart: Some(pb::RestartPolicy {
            condition: spec.restart.condition.as_str().into(),
            delay_ms: spec.restart.delay_ms,
            max_attempts: spec.restart.max_attempts,
            window_ms: spec.restart.window_ms,
        }),
        placement: Some(pb::Placement {
            constraints: spec.placement.constraints.iter().map(|c| c.to_string()).collect(),
            spread: spec.placement.spread.clone(),
            max_replicas_per_node: spec.placement.max_replicas_per_node,
            platforms: spec
                .placement
                .platforms
                .iter()
                .map(|p| pb::Platform { os: p.os.clone(), architecture: p.architecture.clone() })
                .collect(),
        }),
        endpoint: Some(endpoint_to_pb(&spec.endpoint)),
        update_config: Some(update_config_to_pb(&spec.update)),
        rollback_config: Some(update_config_to_pb(&spec.rollback)),
        depends_on: spec
            .depends_on
            .iter()
            .map(|d| pb::ServiceDependency {
                service: d.service.clone(),
                condition: match d.condition {
                    DependencyCondition::Started => pb::DependencyCondition::Started,
                    DependencyCondition::Healthy => pb::DependencyCondition::Healthy,
                    DependencyCondition::CompletedSuccessfully => pb::DependencyCondition::CompletedSuccessfully,
                }
                .into(),
            })
            .collect(),
    }
}

pub fn task_spec_to_pb(task: &TaskSpec) -> pb::TaskSpec {
    let r = task.resources;
    pb::TaskSpec {
        image: task.image.clone(),
        entrypoint: task.entrypoint.clone(),
        args: task.args.clone(),
        env: task.env.clone(),
        workdir: task.workdir.clone(),
        user: task.user.clone(),
        hostname: task.hostname.clone(),
        mounts: task
            .mounts
            .iter()
            .map(|m| pb::Mount {
                r#type: m.kind.as_str().into(),
                source: m.source.clone(),
                target: m.target.clone(),
                readonly: m.read_only,
                tmpfs_size: m.tmpfs_size.unwrap_or(0),
                tmpfs_mode: m.tmpfs_mode.unwrap_or(0),
            })
            .collect(),
        read_only: task.read_only,
        stop_signal: task.stop_signal.clone(),
        stop_grace_ms: task.stop_grace_ms,
        resources: Some(pb::Resources {
            reserve_nano_cpus: r.reserve_nano_cpus,
            reserve_memory: r.reserve_memory,
            limit_nano_cpus: r.limit_nano_cpus,
            limit_memory: r.limit_memory,
            pids_limit: r.pids_limit,
        }),
        networks: task
            .networks
            .iter()
            .map(|n| pb::NetworkAttachmentConfig { target: n.network_id.clone(), aliases: n.aliases.clone(), name: String::new() })
            .collect(),
        dns: Some(dns_to_pb(&task.dns)),
        secrets: references_to_pb(&task.secrets),
        configs: references_to_pb(&task.configs),
        registry_auth: task
            .registry_auth
            .as_ref()
            .map(|c| pb::RegistryCredentials { username: c.username.clone(), password: c.password.clone() }),
        healthcheck: task.healthcheck.as_ref().map(health_to_pb),
        force_update: task.force_update,
        options: Some(task_options_to_pb(&task.options)),
        tty: task.options.tty,
        open_stdin: task.options.open_stdin,
    }
}

/// Fills in the names of the networks a spec names by id.
fn name_networks(state: &StoreState, spec: &mut pb::ServiceSpec) {
    for attachment in spec.task.iter_mut().flat_map(|t| t.networks.iter_mut()) {
        attachment.name = state.get_typed::<Network>(&attachment.target).map(|n| n.spec.name.clone()).unwrap_or_default();
    }
}

fn network_name<'a>(state: &'a StoreState, network_id: &str) -> (Option<&'a Network>, String) {
    let network = state.get_typed::<Network>(network_id);
    (network, network.map(|n| n.spec.name.clone()).unwrap_or_default())
}

pub fn service_to_pb(state: &StoreState, service: &Service) -> pb::Service {
    let tasks = state.tasks_of_service(&service.meta.id);
    let (mut running, mut global_desired) = (0, 0);
    for task in tasks {
        if task.desired_state == TaskState::Running {
            global_desired += 1;
            if task.status.state == TaskState::Running {
                running += 1;
            }
        }
    }
    let desired = match service.spec.mode {
        ServiceMode::Replicated { replicas } => replicas,
        ServiceMode::Global => global_desired,
    };
    let mut spec = spec_to_pb(&service.spec);
    name_networks(state, &mut spec);
    let vips = service
        .vips
        .iter()
        .map(|vip| {
            let (network, network_name) = network_name(state, &vip.network_id);
            pb::NetworkAddress { network_id: vip.network_id.clone(), network_name, address: cidr(network, vip.address), aliases: Vec::new() }
        })
        .collect();
    pb::Service {
        id: service.meta.id.clone(),
        version: service.meta.version,
        created_at: rfc3339(service.meta.created_at),
        updated_at: rfc3339(service.meta.updated_at),
        spec: Some(spec),
        running_tasks: running,
        desired_tasks: desired,
        vips,
        update_status: service.update_status.as_ref().map(update_status_to_pb),
        previous_spec: service.previous_spec.as_deref().map(|previous| {
            let mut spec = spec_to_pb(previous);
            name_networks(state, &mut spec);
            spec
        }),
        spec_version: service.spec_version,
    }
}

pub fn task_to_pb(state: &StoreState, task: &Task) -> pb::Task {
    let hostname = state.get_typed::<Node>(&task.node_id).map(|n| n.hostname.clone()).unwrap_or_default();
    pb::Task {
        id: task.meta.id.clone(),
        name: task.name(),
        service_id: task.service_id.clone(),
        service_name: task.service_name.clone(),
        slot: task.slot,
        node_id: task.node_id.clone(),
        node_hostname: hostname,
        desired_state: task.desired_state.as_str().into(),
        state: task.status.state.as_str().into(),
        state_changed_at: rfc3339(task.status.timestamp_ms),
        message: task.status.message.clone(),
        error: task.status.error.clone(),
        exit_code: task.status.exit_code,
        container_id: task.status.container_id.clone(),
        image: task.spec.image.clone(),
        version: task.meta.version,
        created_at: rfc3339(task.meta.created_at),
        networks: task_addresses(state, task),
        spec_version: task.spec_version,
    }
}

/// The task's address on each of its networks, in its spec's order.
pub fn task_addresses(state: &StoreState, task: &Task) -> Vec<pb::NetworkAddress> {
    task.networks
        .iter()
        .map(|attachment| {
            let (network, network_name) = network_name(state, &attachment.network_id);
            pb::NetworkAddress {
                network_id: attachment.network_id.clone(),
                network_name,
                address: cidr(network, attachment.address),
                aliases: attachment.aliases.clone(),
            }
        })
        .collect()
}

/// A service by id, unique id prefix or name.
pub fn resolve_service<'a>(state: &'a StoreState, reference: &str) -> Result<&'a Service, ManagerError> {
    if let Some(service) = state.get_typed::<Service>(reference) {
        return Ok(service);
    }
    if let Some(crate::store::Object::Service(service)) = state.find_by_name(crate::store::Kind::Service, reference) {
        return Ok(service);
    }
    let matches: Vec<&Service> = state.list_typed::<Service>().filter(|s| s.meta.id.starts_with(reference)).collect();
    match matches.as_slice() {
        [one] if !reference.is_empty() => Ok(one),
        [] | [_] => Err(ManagerError::NotFound(format!(
            "service {reference:?} does not exist; `shoal service ls` lists the services"
        ))),
        _ => Err(invalid(format!("service id prefix {reference:?} matches {} services; give more of the id", matches.len()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str) -> pb::ServiceSpec {
        pb::ServiceSpec {
            name: name.into(),
            replicas: 3,
            task: Some(pb::TaskSpec { image: "busybox".into(), ..Default::default() }),
            ..Default::default()
        }
    }

    #[test]
    fn a_minimal_spec_gets_docker_defaults() {
        let spec = spec_from_pb(spec("web")).unwrap();
        assert_eq!(spec.mode, ServiceMode::Replicated { replicas: 3 });
        assert_eq!(spec.restart, RestartPolicy::default());
        assert_eq!(spec.task.stop_grace_ms, DEFAULT_STOP_GRACE_MS);
        assert_eq!(spec_from_pb(spec_to_pb(&spec)).unwrap(), spec);
    }

    #[test]
    fn bad_specs_are_refused_with_the_value_named() {
        let mut global = spec("web");
        global.mode = "global".into();
        assert!(spec_from_pb(global).unwrap_err().to_string().contains("3 replicas"));
        let mut constraint = spec("web");
        constraint.placement = Some(pb::Placement { constraints: vec!["node.zone=a".into()], ..Default::default() });
        assert!(spec_from_pb(constraint).unwrap_err().to_string().contains("node.zone=a"));
        assert!(spec_from_pb(spec("bad name")).unwrap_err().to_string().contains("\"bad name\""));
        let mut no_image = spec("web");
        no_image.task = None;
        assert!(spec_from_pb(no_image).is_err());
    }
}
