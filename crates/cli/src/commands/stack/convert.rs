//! A loaded compose project as the swarm objects of a stack, named and
//! labelled as `docker stack deploy` names them: `STACK_service`,
//! `STACK_network` (and `STACK_default` for services that name none),
//! `STACK_secret`, `STACK_config`, named volumes `STACK_volume`; every
//! object labelled `com.docker.stack.namespace=STACK`. Keys a swarm
//! cannot honour get a warning here (the loader already warned about
//! those no target honours).

use std::collections::BTreeMap;
use std::path::Path;

use shoal_proto::pb;

use crate::compose::model::{self, ComposeFile, Condition, Service};
use crate::compose::service_parts;

pub use shoal_proto::names::STACK_NAMESPACE_LABEL as NAMESPACE_LABEL;

/// Everything a stack deploy creates or updates.
#[derive(Debug, Default)]
pub struct StackObjects {
    pub networks: Vec<pb::NetworkSpec>,
    /// Networks the file marks external: they must exist already.
    pub external_networks: Vec<String>,
    pub secrets: Vec<FileObject>,
    pub configs: Vec<FileObject>,
    /// With compose's depends_on in `depends_on`: their first tasks wait.
    pub services: Vec<pb::ServiceSpec>,
    pub warnings: Vec<String>,
}

/// A secret's or config's full name, content and labels, or an external
/// one's name (no content: it must exist).
#[derive(Debug, Clone, PartialEq)]
pub struct FileObject {
    pub name: String,
    pub data: Option<Vec<u8>>,
    pub labels: BTreeMap<String, String>,
}

pub use shoal_proto::names::check_stack_name;

/// The objects of stack `stack` from `file`; `read_file` reads a secret's
/// or config's file (a parameter so tests need no files).
pub fn convert(
    stack: &str,
    file: &ComposeFile,
    environment: &BTreeMap<String, String>,
    read_file: &dyn Fn(&Path) -> Result<Vec<u8>, String>,
) -> Result<StackObjects, String> {
    check_stack_name(stack)?;
    let mut out = StackObjects::default();
    let labels = |own: &model::KeyValues| -> BTreeMap<String, String> {
        let mut labels: BTreeMap<String, String> = own.pairs().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        labels.insert(NAMESPACE_LABEL.into(), stack.into());
        labels
    };

    // Networks: the file's, plus `default` when a service names none.
    let mut network_names = BTreeMap::new();
    for (key, network) in service_parts::networks(file) {
        let name = service_parts::object_name(stack, &key, &network.external, &network.name);
        network_names.insert(key.clone(), name.clone());
        if network.external.external {
            out.external_networks.push(name);
            continue;
        }
        let driver = match network.driver.as_deref() {
            None | Some("overlay") => pb::NetworkDriver::Overlay,
            Some(other) => return Err(format!("networks.{key}.driver {other:?} cannot be used on a swarm; use overlay")),
        };
        if network.enable_ipv6.is_some_and(|f| f.0) {
            out.warnings.push(format!("networks.{key}.enable_ipv6 is ignored: Shoal's overlays are IPv4"));
        }
        let pool = network.ipam.as_ref().and_then(|ipam| ipam.config.first()).cloned().unwrap_or_default();
        if network.ipam.as_ref().is_some_and(|ipam| ipam.config.len() > 1) {
            out.warnings.push(format!("networks.{key}.ipam.config: only the first pool is used"));
        }
        out.networks.push(pb::NetworkSpec {
            name: name.clone(),
            labels: labels(&network.labels).into_iter().collect(),
            driver: driver.into(),
            subnet: pool.subnet.unwrap_or_default(),
            gateway: pool.gateway.unwrap_or_default(),
            attachable: network.attachable.is_some_and(|f| f.0),
            internal: network.internal.is_some_and(|f| f.0),
            options: network.driver_opts.pairs().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ingress: false,
        });
    }

    // Secrets and configs, with their content read now.
    for (kind, objects, out_list) in [("secrets", &file.secrets, &mut out.secrets), ("configs", &file.configs, &mut out.configs)] {
        for (key, object) in objects {
            let name = service_parts::object_name(stack, key, &object.external, &object.name);
            let data = if object.external.external {
                None
            } else if let Some(path) = &object.file {
                Some(read_file(Path::new(path)).map_err(|e| format!("{kind}.{key}.file: {e}"))?)
            } else if let Some(variable) = &object.environment {
                Some(
                    environment
                        .get(variable)
                        .ok_or_else(|| format!("{kind}.{key}.environment names {variable}, which is not set; set it or use file"))?
                        .clone()
                        .into_bytes(),
                )
            } else {
                object.content.clone().map(String::into_bytes)
            };
            out_list.push(FileObject { name, data, labels: labels(&object.labels) });
        }
    }
    let secret_names: BTreeMap<&String, &String> = file.secrets.keys().zip(out.secrets.iter().map(|s| &s.name)).collect();
    let config_names: BTreeMap<&String, &String> = file.configs.keys().zip(out.configs.iter().map(|c| &c.name)).collect();

    for (key, service) in &file.services {
        let spec = service_spec(stack, key, service, &network_names, &secret_names, &config_names, &labels, &mut out.warnings)?;
        out.services.push(spec);
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn service_spec(
    stack: &str,
    key: &str,
    service: &Service,
    network_names: &BTreeMap<String, String>,
    secret_names: &BTreeMap<&String, &String>,
    config_names: &BTreeMap<&String, &String>,
    labels: &dyn Fn(&model::KeyValues) -> BTreeMap<String, String>,
    warnings: &mut Vec<String>,
) -> Result<pb::ServiceSpec, String> {
    let at = |what: &str| format!("services.{key}.{what}");
    let deploy = &service.deploy;
    let global = deploy.mode == Some(model::DeployMode::Global);
    if global && deploy.replicas.is_some() {
        return Err(format!("{} cannot be used with deploy.mode global; drop one of them", at("deploy.replicas")));
    }
    if !service.labels.0.is_empty() {
        warnings.push(format!("{} are not given to the containers: Shoal has no container labels on tasks; use deploy.labels", at("labels")));
    }
    if service.restart.is_some() {
        warnings.push(format!("{} is ignored on a swarm: use deploy.restart_policy", at("restart")));
    }
    let mounts = service_parts::mounts(service, &|volume| format!("{stack}_{volume}"));
    let attachments = service_parts::attachments(
        key,
        service,
        &|network| network_names.get(network).cloned().unwrap_or_else(|| network.to_string()),
        &mut |warning| warnings.push(warning),
    );
    let reference = |r: &model::FileReference, names: &BTreeMap<&String, &String>| pb::FileReference {
        id: String::new(),
        name: names.get(&r.source).map(|n| n.to_string()).unwrap_or_else(|| r.source.clone()),
        target: r.target.clone().unwrap_or_else(|| r.source.clone()),
        uid: r.uid.unwrap_or(0),
        gid: r.gid.unwrap_or(0),
        mode: r.mode,
    };
    let mut ports = Vec::new();
    for port in service.ports.iter().flat_map(|entry| &entry.0) {
        if port.host_ip.is_some() {
            warnings.push(format!("{}: the host address of {} is ignored on a swarm, which publishes on every node", at("ports"), port.target));
        }
        if port.published.is_none() {
            warnings.push(format!(
                "{}: {} has no published port, so it is reachable on the stack's networks only; give PUBLISHED:TARGET to publish it",
                at("ports"),
                port.target
            ));
        }
        ports.push(pb::PortConfig {
            protocol: match port.protocol {
                model::Protocol::Tcp => pb::PortProtocol::Tcp,
                model::Protocol::Udp => pb::PortProtocol::Udp,
            }
            .into(),
            target_port: port.target.into(),
            published_port: port.published.map(u32::from).unwrap_or(0),
            publish_mode: match port.mode {
                model::PublishMode::Ingress => pb::PublishMode::Ingress,
                model::PublishMode::Host => pb::PublishMode::Host,
            }
            .into(),
        });
    }
    let limits = &deploy.resources.limits;
    let reservations = &deploy.resources.reservations;
    let restart = deploy.restart_policy.clone().unwrap_or_default();
    let mut service_labels = labels(&deploy.labels);
    service_labels.insert("com.docker.stack.image".into(), service.image.clone().unwrap_or_default());
    Ok(pb::ServiceSpec {
        name: format!("{stack}_{key}"),
        labels: service_labels.into_iter().collect(),
        mode: if global { "global" } else { "replicated" }.into(),
        replicas: if global { 0 } else { deploy.replicas.map_or(1, |r| r.0) },
        task: Some(pb::TaskSpec {
            image: service.image.clone().unwrap_or_default(),
            entrypoint: service.entrypoint.as_ref().map(|w| w.0.clone()).unwrap_or_default(),
            args: service.command.as_ref().map(|w| w.0.clone()).unwrap_or_default(),
            env: service_parts::environment(service),
            workdir: service.working_dir.clone().unwrap_or_default(),
            user: service.user.clone().unwrap_or_default(),
            hostname: service.hostname.clone().unwrap_or_default(),
            mounts,
            read_only: service.read_only.is_some_and(|f| f.0),
            stop_signal: service.stop_signal.clone().unwrap_or_default(),
            stop_grace_ms: service.stop_grace_period.map_or(0, |d| d.0),
            resources: Some(pb::Resources {
                reserve_nano_cpus: reservations.cpus.map_or(0, |c| c.0),
                reserve_memory: reservations.memory.map_or(0, |m| m.0),
                limit_nano_cpus: limits.cpus.map_or(0, |c| c.0),
                limit_memory: limits.memory.map_or(0, |m| m.0),
                pids_limit: limits.pids.map_or(0, |p| p.0),
            }),
            networks: attachments,
            dns: Some(service_parts::dns(service)),
            secrets: service.secrets.iter().map(|r| reference(r, secret_names)).collect(),
            configs: service
                .configs
                .iter()
                .map(|r| {
                    let mut config = reference(r, config_names);
                    // A config lands at /NAME unless the file says where.
                    if r.target.is_none() {
                        config.target = format!("/{}", r.source);
                    }
                    config
                })
                .collect(),
            registry_auth: None,
            healthcheck: service_parts::healthcheck(service),
            force_update: 0,
            options: Some(service_parts::process_options(service)),
            tty: service.tty.is_some_and(|f| f.0),
            open_stdin: service.stdin_open.is_some_and(|f| f.0),
        }),
        restart: Some(pb::RestartPolicy {
            condition: match restart.condition {
                None | Some(model::RestartCondition::Any) => "any",
                Some(model::RestartCondition::OnFailure) => "on-failure",
                Some(model::RestartCondition::None) => "none",
            }
            .into(),
            delay_ms: restart.delay.map_or(5000, |d| d.0),
            max_attempts: restart.max_attempts.map_or(0, |m| m.0),
            window_ms: restart.window.map_or(0, |w| w.0),
        }),
        placement: Some(pb::Placement {
            constraints: deploy.placement.constraints.clone(),
            spread: deploy.placement.preferences.iter().map(|p| p.spread.clone()).collect(),
            max_replicas_per_node: deploy.placement.max_replicas_per_node.map_or(0, |m| m.0),
            platforms: Vec::new(),
        }),
        endpoint: Some(pb::EndpointSpec {
            mode: match deploy.endpoint_mode {
                Some(model::EndpointMode::Dnsrr) => pb::EndpointMode::Dnsrr,
                _ => pb::EndpointMode::Vip,
            }
            .into(),
            ports,
        }),
        update_config: deploy.update_config.as_ref().map(update_config),
        rollback_config: deploy.rollback_config.as_ref().map(update_config),
        depends_on: service
            .depends_on
            .0
            .iter()
            .map(|(name, condition)| pb::ServiceDependency {
                service: format!("{stack}_{name}"),
                condition: match condition {
                    Condition::ServiceStarted => pb::DependencyCondition::Started,
                    Condition::ServiceHealthy => pb::DependencyCondition::Healthy,
                    Condition::ServiceCompletedSuccessfully => pb::DependencyCondition::CompletedSuccessfully,
                }
                .into(),
            })
            .collect(),
    })
}

fn update_config(config: &model::UpdateConfig) -> pb::UpdateConfig {
    pb::UpdateConfig {
        parallelism: config.parallelism.map(|p| p.0),
        delay_ms: config.delay.map(|d| d.0),
        failure_action: match config.failure_action {
            None => pb::FailureAction::Unspecified,
            Some(model::FailureAction::Pause) => pb::FailureAction::Pause,
            Some(model::FailureAction::Continue) => pb::FailureAction::Continue,
            Some(model::FailureAction::Rollback) => pb::FailureAction::Rollback,
        }
        .into(),
        monitor_ms: config.monitor.map(|d| d.0),
        max_failure_ratio: config.max_failure_ratio,
        order: match config.order {
            None => pb::UpdateOrder::Unspecified,
            Some(model::UpdateOrder::StopFirst) => pb::UpdateOrder::StopFirst,
            Some(model::UpdateOrder::StartFirst) => pb::UpdateOrder::StartFirst,
        }
        .into(),
        healthy_deadline_ms: None,
    }
}
