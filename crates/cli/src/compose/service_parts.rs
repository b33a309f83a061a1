//! The parts of a compose file that every target takes alike: a swarm
//! service's task (`stack deploy`) and a plain container (`compose up`)
//! get the same mounts, health check, process options, DNS and environment
//! from the same keys, and top-level objects the same names. What differs
//! between them (drivers, replicas, ports, placement) stays with each
//! target.

use shoal_proto::pb;

use super::model::{self, Service, VolumeKind};

/// `volumes:` and `tmpfs:`; `named_volume` gives a named volume's full
/// name (`PROJECT_volume`).
pub fn mounts(service: &Service, named_volume: &dyn Fn(&str) -> String) -> Vec<pb::Mount> {
    let mut mounts: Vec<pb::Mount> = service
        .volumes
        .iter()
        .map(|volume| {
            let (kind, source) = match volume.kind {
                VolumeKind::Bind => ("bind", volume.source.clone().unwrap_or_default()),
                VolumeKind::Tmpfs => ("tmpfs", String::new()),
                // No source: an anonymous volume.
                VolumeKind::Volume => ("volume", volume.source.as_deref().map(named_volume).unwrap_or_default()),
            };
            pb::Mount {
                r#type: kind.into(),
                source,
                target: volume.target.clone(),
                readonly: volume.read_only,
                tmpfs_size: volume.tmpfs_size.unwrap_or(0),
                tmpfs_mode: volume.tmpfs_mode.unwrap_or(0),
            }
        })
        .collect();
    for target in &service.tmpfs.0 {
        mounts.push(pb::Mount { r#type: "tmpfs".into(), target: target.clone(), ..Default::default() });
    }
    mounts
}

/// `healthcheck:` (`disable: true` is docker's `NONE`); `None` keeps the
/// image's HEALTHCHECK.
pub fn healthcheck(service: &Service) -> Option<pb::HealthCheck> {
    service.healthcheck.as_ref().map(|h| pb::HealthCheck {
        test: if h.disable { vec!["NONE".into()] } else { h.test.as_ref().map(|t| t.0.clone()).unwrap_or_default() },
        interval_ms: h.interval.map_or(0, |d| d.0),
        timeout_ms: h.timeout.map_or(0, |d| d.0),
        retries: h.retries.map_or(0, |r| u32::try_from(r.0).unwrap_or(u32::MAX)),
        start_period_ms: h.start_period.map_or(0, |d| d.0),
        start_interval_ms: h.start_interval.map_or(0, |d| d.0),
    })
}

/// `cap_add`, `cap_drop`, `sysctls`, `ulimits`, `init`, `extra_hosts`.
pub fn process_options(service: &Service) -> pb::ProcessOptions {
    let extra_hosts = service
        .extra_hosts
        .pairs()
        .map(|(entry, value)| {
            // A list gives "host:ip" (or "host=ip", split already); a map gives host: ip.
            let (host, address) = if value.is_empty() { entry.split_once(':').unwrap_or((entry, "")) } else { (entry, value) };
            pb::HostEntry { name: host.to_string(), address: address.to_string() }
        })
        .collect();
    pb::ProcessOptions {
        cap_add: service.cap_add.clone(),
        cap_drop: service.cap_drop.clone(),
        sysctls: service.sysctls.pairs().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ulimits: service.ulimits.iter().map(|(name, u)| pb::Ulimit { name: name.clone(), soft: u.soft, hard: u.hard }).collect(),
        init: service.init.is_some_and(|f| f.0),
        extra_hosts,
    }
}

/// `dns`, `dns_search`, `dns_opt`.
pub fn dns(service: &Service) -> pb::DnsConfig {
    pb::DnsConfig { nameservers: service.dns.0.clone(), search: service.dns_search.0.clone(), options: service.dns_opt.0.clone() }
}

/// `environment` (with `env_file:` already folded in) as `KEY=VALUE`.
pub fn environment(service: &Service) -> Vec<String> {
    service.environment.pairs().map(|(k, v)| format!("{k}={v}")).collect()
}

/// The service's networks in attachment order (highest `priority` first),
/// each with the aliases the container answers to there: the service's
/// own name, as in docker, and the file's. `network_name` maps a file key
/// to the network's full name; `warn` hears about keys not honoured.
pub fn attachments(
    key: &str,
    service: &Service,
    network_name: &dyn Fn(&str) -> String,
    warn: &mut dyn FnMut(String),
) -> Vec<pb::NetworkAttachmentConfig> {
    if service.networks.0.is_empty() {
        return vec![pb::NetworkAttachmentConfig { target: network_name("default"), aliases: vec![key.to_string()], name: String::new() }];
    }
    let mut ordered: Vec<(&String, &model::ServiceNetwork)> = service.networks.0.iter().collect();
    ordered.sort_by_key(|(_, n)| std::cmp::Reverse(n.priority.unwrap_or(0)));
    ordered
        .into_iter()
        .map(|(network, options)| {
            if options.ipv4_address.is_some() || options.ipv6_address.is_some() {
                warn(format!("services.{key}.networks.{network}.ipv4_address is ignored: addresses are assigned from the network's pool"));
            }
            let mut aliases = vec![key.to_string()];
            aliases.extend(options.aliases.iter().cloned());
            pb::NetworkAttachmentConfig { target: network_name(network), aliases, name: String::new() }
        })
        .collect()
}

/// The file's networks, plus `default` when a service names none (the
/// only network a file may use undeclared).
pub fn networks(file: &model::ComposeFile) -> Vec<(String, model::Network)> {
    let mut networks: Vec<(String, model::Network)> = file.networks.iter().map(|(k, v)| (k.clone(), v.clone().unwrap_or_default())).collect();
    let needs_default = file.services.values().any(|s| s.networks.0.is_empty() || s.networks.0.contains_key("default"));
    if needs_default && !file.networks.contains_key("default") {
        networks.push(("default".into(), model::Network::default()));
    }
    networks
}

/// A top-level object's full name: an external one's own (`external.name`,
/// `name`, or the key), else `name` or `PROJECT_key`.
pub fn object_name(project: &str, key: &str, external: &model::External, name: &Option<String>) -> String {
    if external.external {
        external.name.clone().or(name.clone()).unwrap_or_else(|| key.to_string())
    } else {
        name.clone().unwrap_or_else(|| format!("{project}_{key}"))
    }
}
