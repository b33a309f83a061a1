//! The typed compose project: every key Shoal honours, read from the
//! merged and interpolated YAML. Keys it does not honour never get here:
//! `ignored.rs` takes them out with a warning first, and anything else
//! unknown is refused (`deny_unknown_fields`).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_yaml_ng::Value;

pub use super::syntax::{Bytes, Count, DurationMs, FileMode, Flag, KeyValues, NanoCpus, OneOrMany, Words};
use super::syntax::{long_form, scalar_text, value_kind};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComposeFile {
    /// Accepted and ignored, as docker compose v2 does (2.x and 3.x alike).
    #[serde(default, rename = "version")]
    _version: Option<serde::de::IgnoredAny>,
    /// The project's name; a stack takes its name from the command line,
    /// as `docker stack deploy` does, so only `compose` reads it.
    #[serde(default)]
    #[allow(dead_code)]
    pub name: Option<String>,
    #[serde(default)]
    pub services: BTreeMap<String, Service>,
    #[serde(default)]
    pub networks: BTreeMap<String, Option<Network>>,
    #[serde(default)]
    pub volumes: BTreeMap<String, Option<Volume>>,
    #[serde(default)]
    pub secrets: BTreeMap<String, FileObject>,
    #[serde(default)]
    pub configs: BTreeMap<String, FileObject>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub image: Option<String>,
    pub command: Option<Words>,
    pub entrypoint: Option<Words>,
    #[serde(default)]
    pub environment: KeyValues,
    #[serde(default)]
    pub env_file: Option<EnvFiles>,
    #[serde(default)]
    pub labels: KeyValues,
    pub hostname: Option<String>,
    pub user: Option<String>,
    pub working_dir: Option<String>,
    pub read_only: Option<Flag>,
    pub stop_grace_period: Option<DurationMs>,
    pub stop_signal: Option<String>,
    #[serde(default)]
    pub tmpfs: OneOrMany,
    pub init: Option<Flag>,
    pub tty: Option<Flag>,
    pub stdin_open: Option<Flag>,
    #[serde(default)]
    pub extra_hosts: KeyValues,
    #[serde(default)]
    pub dns: OneOrMany,
    #[serde(default)]
    pub dns_search: OneOrMany,
    #[serde(default)]
    pub dns_opt: OneOrMany,
    #[serde(default)]
    pub cap_add: Vec<String>,
    #[serde(default)]
    pub cap_drop: Vec<String>,
    #[serde(default)]
    pub sysctls: KeyValues,
    #[serde(default)]
    pub ulimits: BTreeMap<String, Ulimit>,
    pub healthcheck: Option<Healthcheck>,
    #[serde(default)]
    pub ports: Vec<PortEntry>,
    #[serde(default)]
    pub networks: ServiceNetworks,
    #[serde(default)]
    pub volumes: Vec<ServiceVolume>,
    #[serde(default)]
    pub secrets: Vec<FileReference>,
    #[serde(default)]
    pub configs: Vec<FileReference>,
    #[serde(default)]
    pub depends_on: DependsOn,
    /// `docker compose` on one node; a stack uses deploy.restart_policy.
    pub restart: Option<String>,
    #[serde(default)]
    pub deploy: Deploy,
}

/// `env_file: .env` or a list; long entries may be optional.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(try_from = "Value")]
pub struct EnvFiles(pub Vec<EnvFile>);

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvFile {
    pub path: String,
    #[serde(default = "yes")]
    pub required: bool,
}

fn yes() -> bool {
    true
}

impl TryFrom<Value> for EnvFiles {
    type Error = String;
    fn try_from(value: Value) -> Result<Self, String> {
        let one = |item: Value| match item {
            Value::Mapping(_) => long_form::<EnvFile>(item),
            other => scalar_text(&other)
                .map(|path| EnvFile { path, required: true })
                .ok_or_else(|| format!("expected a file name, found {}", value_kind(&other))),
        };
        match value {
            Value::Sequence(items) => items.into_iter().map(one).collect::<Result<_, _>>().map(EnvFiles),
            other => Ok(EnvFiles(vec![one(other)?])),
        }
    }
}

/// `nofile: 1024` or `nofile: {soft: 1024, hard: 2048}`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(try_from = "Value")]
pub struct Ulimit {
    pub soft: u64,
    pub hard: u64,
}

impl TryFrom<Value> for Ulimit {
    type Error = String;
    fn try_from(value: Value) -> Result<Self, String> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Long {
            soft: Count,
            hard: Count,
        }
        match value {
            Value::Mapping(_) => {
                let long: Long = long_form(value)?;
                Ok(Ulimit { soft: long.soft.0, hard: long.hard.0 })
            }
            other => {
                let Count(limit) = Count::try_from(other)?;
                Ok(Ulimit { soft: limit, hard: limit })
            }
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Healthcheck {
    pub test: Option<HealthTest>,
    pub interval: Option<DurationMs>,
    pub timeout: Option<DurationMs>,
    pub retries: Option<Count>,
    pub start_period: Option<DurationMs>,
    pub start_interval: Option<DurationMs>,
    #[serde(default)]
    pub disable: bool,
}

/// Docker's test forms: a string (run by the shell), or a list starting
/// with CMD, CMD-SHELL or NONE.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "Value")]
pub struct HealthTest(pub Vec<String>);

impl TryFrom<Value> for HealthTest {
    type Error = String;
    fn try_from(value: Value) -> Result<Self, String> {
        match value {
            Value::String(command) => Ok(HealthTest(vec!["CMD-SHELL".into(), command])),
            Value::Sequence(_) => {
                let Words(words) = Words::try_from(value)?;
                match words.first().map(String::as_str) {
                    Some("CMD" | "CMD-SHELL" | "NONE") => Ok(HealthTest(words)),
                    _ => Err("a test list must start with CMD, CMD-SHELL or NONE".into()),
                }
            }
            other => Err(format!("expected a command string or a list, found {}", value_kind(&other))),
        }
    }
}

/// One `ports:` entry. The short syntax may give ranges, so one entry can
/// stand for several ports.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "Value")]
pub struct PortEntry(pub Vec<Port>);

#[derive(Debug, Clone, PartialEq)]
pub struct Port {
    pub target: u16,
    /// None: not published on a chosen port (a stack's ingress picks one).
    pub published: Option<u16>,
    pub protocol: Protocol,
    pub mode: PublishMode,
    /// Bind on this host address only (`compose up`; a swarm publishes on all).
    pub host_ip: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PublishMode {
    Ingress,
    Host,
}

impl TryFrom<Value> for PortEntry {
    type Error = String;
    fn try_from(value: Value) -> Result<Self, String> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Long {
            target: Count,
            published: Option<Value>,
            protocol: Option<Protocol>,
            mode: Option<PublishMode>,
            host_ip: Option<String>,
            #[allow(dead_code)]
            name: Option<String>,
            #[allow(dead_code)]
            app_protocol: Option<String>,
        }
        if let Value::Mapping(_) = value {
            let long: Long = long_form(value)?;
            let target = port_number(&long.target.0.to_string())?;
            let published = match long.published {
                None | Some(Value::Null) => None,
                Some(published) => {
                    let text = scalar_text(&published).ok_or("published must be a port number")?;
                    Some(port_number(&text)?)
                }
            };
            return Ok(PortEntry(vec![Port {
                target,
                published,
                protocol: long.protocol.unwrap_or(Protocol::Tcp),
                mode: long.mode.unwrap_or(PublishMode::Ingress),
                host_ip: long.host_ip,
            }]));
        }
        let text = scalar_text(&value).ok_or_else(|| format!("expected a port such as \"8080:80\" or a mapping, found {}", value_kind(&value)))?;
        parse_short_ports(&text).map(PortEntry)
    }
}

fn port_number(text: &str) -> Result<u16, String> {
    text.parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("{text:?} is not a port from 1 to 65535"))
}

fn port_range(text: &str) -> Result<(u16, u16), String> {
    match text.split_once('-') {
        Some((low, high)) => {
            let (low, high) = (port_number(low)?, port_number(high)?);
            if low > high {
                return Err(format!("the range {text} runs backwards; write the lower port first"));
            }
            Ok((low, high))
        }
        None => port_number(text).map(|p| (p, p)),
    }
}

/// `[HOST_IP:][PUBLISHED[-END]:]TARGET[-END][/PROTOCOL]`, as docker reads it.
pub fn parse_short_ports(text: &str) -> Result<Vec<Port>, String> {
    let (spec, protocol) = match text.rsplit_once('/') {
        Some((spec, "tcp")) => (spec, Protocol::Tcp),
        Some((spec, "udp")) => (spec, Protocol::Udp),
        Some((_, other)) => return Err(format!("the protocol {other:?} in {text:?} is unknown; use tcp or udp")),
        None => (text, Protocol::Tcp),
    };
    // An IPv6 host address is bracketed: [::1]:8080:80.
    let (host_ip, rest) = if let Some(bracketed) = spec.strip_prefix('[') {
        let (ip, rest) = bracketed.split_once("]:").ok_or_else(|| format!("{text:?} has an unclosed [ in its host address"))?;
        (Some(ip.to_string()), rest)
    } else {
        let parts: Vec<&str> = spec.split(':').collect();
        match parts.as_slice() {
            [ip, _, _] => (Some(ip.to_string()), spec.split_once(':').map(|(_, rest)| rest).unwrap_or(spec)),
            _ => (None, spec),
        }
    };
    let (published, target) = match rest.rsplit_once(':') {
        Some((published, target)) if !published.is_empty() => (Some(port_range(published)?), port_range(target)?),
        Some((_, target)) => (None, port_range(target)?),
        None => (None, port_range(rest)?),
    };
    let target_count = target.1 - target.0;
    if let Some(published) = published {
        if published.1 - published.0 != target_count {
            return Err(format!(
                "the port range {text:?} maps {} published port(s) onto {} target port(s); give ranges of the same length",
                published.1 - published.0 + 1,
                target_count + 1
            ));
        }
    }
    Ok((0..=target_count)
        .map(|offset| Port {
            target: target.0 + offset,
            published: published.map(|p| p.0 + offset),
            protocol,
            mode: PublishMode::Ingress,
            host_ip: host_ip.clone(),
        })
        .collect())
}

/// `networks: [front, back]` or a map with per-network options.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(try_from = "Value")]
pub struct ServiceNetworks(pub BTreeMap<String, ServiceNetwork>);

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceNetwork {
    #[serde(default)]
    pub aliases: Vec<String>,
    pub ipv4_address: Option<String>,
    pub ipv6_address: Option<String>,
    pub priority: Option<i64>,
}

impl TryFrom<Value> for ServiceNetworks {
    type Error = String;
    fn try_from(value: Value) -> Result<Self, String> {
        let mut networks = BTreeMap::new();
        match value {
            Value::Null => {}
            Value::Sequence(items) => {
                for item in items {
                    let name = scalar_text(&item).ok_or_else(|| format!("a network is {}, not a name", value_kind(&item)))?;
                    networks.insert(name, ServiceNetwork::default());
                }
            }
            Value::Mapping(entries) => {
                for (name, options) in entries {
                    let name = scalar_text(&name).ok_or("a network name is not a string")?;
                    let options = match options {
                        Value::Null => ServiceNetwork::default(),
                        options => long_form(options).map_err(|e| format!("{name}: {e}"))?,
                    };
                    networks.insert(name, options);
                }
            }
            other => return Err(format!("expected a list of networks or a mapping, found {}", value_kind(&other))),
        }
        Ok(ServiceNetworks(networks))
    }
}

/// One `volumes:` entry of a service.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "Value")]
pub struct ServiceVolume {
    pub kind: VolumeKind,
    /// A volume's name, a host path (relative to the file's directory once
    /// loaded), or None for an anonymous volume or a tmpfs.
    pub source: Option<String>,
    pub target: String,
    pub read_only: bool,
    pub tmpfs_size: Option<u64>,
    pub tmpfs_mode: Option<u32>,
    pub nocopy: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VolumeKind {
    Volume,
    Bind,
    Tmpfs,
}

impl TryFrom<Value> for ServiceVolume {
    type Error = String;
    fn try_from(value: Value) -> Result<Self, String> {
        #[derive(Deserialize, Default)]
        #[serde(deny_unknown_fields)]
        struct BindOptions {
            #[allow(dead_code)]
            propagation: Option<String>,
            #[allow(dead_code)]
            create_host_path: Option<bool>,
            #[allow(dead_code)]
            selinux: Option<String>,
        }
        #[derive(Deserialize, Default)]
        #[serde(deny_unknown_fields)]
        struct VolumeOptions {
            #[serde(default)]
            nocopy: bool,
            #[allow(dead_code)]
            subpath: Option<String>,
        }
        #[derive(Deserialize, Default)]
        #[serde(deny_unknown_fields)]
        struct TmpfsOptions {
            size: Option<Bytes>,
            mode: Option<FileMode>,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Long {
            #[serde(rename = "type")]
            kind: VolumeKind,
            source: Option<String>,
            target: String,
            #[serde(default)]
            read_only: bool,
            #[allow(dead_code)]
            bind: Option<BindOptions>,
            volume: Option<VolumeOptions>,
            tmpfs: Option<TmpfsOptions>,
            #[allow(dead_code)]
            consistency: Option<String>,
        }
        if let Value::Mapping(_) = value {
            let long: Long = long_form(value)?;
            let tmpfs = long.tmpfs.unwrap_or_default();
            if long.kind == VolumeKind::Bind && long.source.is_none() {
                return Err(format!("the bind mount at {} has no source; give the host path", long.target));
            }
            return Ok(ServiceVolume {
                kind: long.kind,
                source: long.source.filter(|s| !s.is_empty()),
                target: long.target,
                read_only: long.read_only,
                tmpfs_size: tmpfs.size.map(|b| b.0),
                tmpfs_mode: tmpfs.mode.map(|m| m.0),
                nocopy: long.volume.unwrap_or_default().nocopy,
            });
        }
        let text = scalar_text(&value).ok_or_else(|| format!("expected SOURCE:TARGET[:MODE] or a mapping, found {}", value_kind(&value)))?;
        parse_short_volume(&text)
    }
}

/// `TARGET`, `SOURCE:TARGET` or `SOURCE:TARGET:MODE`; a source starting
/// with `.`, `/` or `~` is a host path, anything else a volume's name.
pub fn parse_short_volume(text: &str) -> Result<ServiceVolume, String> {
    let parts: Vec<&str> = text.split(':').collect();
    let (source, target, mode) = match parts.as_slice() {
        [target] => (None, *target, ""),
        [source, target] => (Some(*source), *target, ""),
        [source, target, mode] => (Some(*source), *target, *mode),
        _ => return Err(format!("{text:?} is not SOURCE:TARGET[:MODE]")),
    };
    if !target.starts_with('/') {
        return Err(format!("the target {target:?} in {text:?} must be an absolute path in the container"));
    }
    let mut read_only = false;
    let mut nocopy = false;
    for option in mode.split(',').filter(|o| !o.is_empty()) {
        match option {
            "ro" => read_only = true,
            "rw" => read_only = false,
            "nocopy" => nocopy = true,
            // SELinux relabelling and propagation have no effect here.
            "z" | "Z" | "shared" | "rshared" | "slave" | "rslave" | "private" | "rprivate" | "cached" | "delegated" | "consistent" => {}
            other => return Err(format!("the mode {other:?} in {text:?} is unknown; use ro or rw")),
        }
    }
    let kind = match source {
        Some(s) if s.starts_with('.') || s.starts_with('/') || s.starts_with('~') => VolumeKind::Bind,
        _ => VolumeKind::Volume,
    };
    Ok(ServiceVolume {
        kind,
        source: source.map(str::to_string),
        target: target.to_string(),
        read_only,
        tmpfs_size: None,
        tmpfs_mode: None,
        nocopy,
    })
}

/// A service's `secrets:` or `configs:` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "Value")]
pub struct FileReference {
    pub source: String,
    pub target: Option<String>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub mode: Option<u32>,
}

impl TryFrom<Value> for FileReference {
    type Error = String;
    fn try_from(value: Value) -> Result<Self, String> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Long {
            source: String,
            target: Option<String>,
            uid: Option<Count>,
            gid: Option<Count>,
            mode: Option<FileMode>,
        }
        if let Value::Mapping(_) = value {
            let long: Long = long_form(value)?;
            let id = |c: Option<Count>, what: &str| -> Result<Option<u32>, String> {
                c.map(|Count(n)| u32::try_from(n).map_err(|_| format!("{what} {n} is too large"))).transpose()
            };
            return Ok(FileReference {
                source: long.source,
                target: long.target,
                uid: id(long.uid, "uid")?,
                gid: id(long.gid, "gid")?,
                mode: long.mode.map(|m| m.0),
            });
        }
        let source = scalar_text(&value).ok_or_else(|| format!("expected a name or a mapping, found {}", value_kind(&value)))?;
        Ok(FileReference { source, target: None, uid: None, gid: None, mode: None })
    }
}

/// `depends_on: [db]` or `depends_on: {db: {condition: service_healthy}}`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(try_from = "Value")]
pub struct DependsOn(pub BTreeMap<String, Condition>);

/// When a dependency counts as ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    #[default]
    ServiceStarted,
    ServiceHealthy,
    ServiceCompletedSuccessfully,
}

impl TryFrom<Value> for DependsOn {
    type Error = String;
    fn try_from(value: Value) -> Result<Self, String> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Long {
            #[serde(default)]
            condition: Condition,
            #[allow(dead_code)]
            restart: Option<bool>,
            #[allow(dead_code)]
            required: Option<bool>,
        }
        let mut map = BTreeMap::new();
        match value {
            Value::Null => {}
            Value::Sequence(items) => {
                for item in items {
                    let name = scalar_text(&item).ok_or("a dependency is not a service name")?;
                    map.insert(name, Condition::ServiceStarted);
                }
            }
            Value::Mapping(entries) => {
                for (name, long) in entries {
                    let name = scalar_text(&name).ok_or("a dependency is not a service name")?;
                    let long: Long = long_form(long).map_err(|e| format!("{name}: {e}"))?;
                    map.insert(name, long.condition);
                }
            }
            other => return Err(format!("expected a list of services or a mapping, found {}", value_kind(&other))),
        }
        Ok(DependsOn(map))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deploy {
    pub mode: Option<DeployMode>,
    pub replicas: Option<Count>,
    #[serde(default)]
    pub labels: KeyValues,
    #[serde(default)]
    pub placement: Placement,
    #[serde(default)]
    pub resources: Resources,
    pub restart_policy: Option<RestartPolicy>,
    pub update_config: Option<UpdateConfig>,
    pub rollback_config: Option<UpdateConfig>,
    pub endpoint_mode: Option<EndpointMode>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeployMode {
    Replicated,
    Global,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointMode {
    Vip,
    Dnsrr,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Placement {
    #[serde(default)]
    pub constraints: Vec<String>,
    #[serde(default)]
    pub preferences: Vec<Preference>,
    pub max_replicas_per_node: Option<Count>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preference {
    pub spread: String,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    #[serde(default)]
    pub limits: ResourceValues,
    #[serde(default)]
    pub reservations: ResourceValues,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceValues {
    pub cpus: Option<NanoCpus>,
    pub memory: Option<Bytes>,
    pub pids: Option<Count>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartPolicy {
    pub condition: Option<RestartCondition>,
    pub delay: Option<DurationMs>,
    pub max_attempts: Option<Count>,
    pub window: Option<DurationMs>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartCondition {
    None,
    OnFailure,
    Any,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateConfig {
    pub parallelism: Option<Count>,
    pub delay: Option<DurationMs>,
    pub failure_action: Option<FailureAction>,
    pub monitor: Option<DurationMs>,
    pub max_failure_ratio: Option<f64>,
    pub order: Option<UpdateOrder>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureAction {
    Pause,
    Continue,
    Rollback,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateOrder {
    StopFirst,
    StartFirst,
}

/// A top-level `networks:` entry.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    pub driver: Option<String>,
    #[serde(default)]
    pub driver_opts: KeyValues,
    pub attachable: Option<Flag>,
    pub internal: Option<Flag>,
    pub ipam: Option<Ipam>,
    #[serde(default)]
    pub labels: KeyValues,
    #[serde(default)]
    pub external: External,
    /// The real name (no stack prefix).
    pub name: Option<String>,
    pub enable_ipv6: Option<Flag>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ipam {
    pub driver: Option<String>,
    #[serde(default)]
    pub config: Vec<IpamPool>,
    #[serde(default)]
    pub options: KeyValues,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpamPool {
    pub subnet: Option<String>,
    pub gateway: Option<String>,
    pub ip_range: Option<String>,
    #[serde(default)]
    pub aux_addresses: KeyValues,
}

/// `external: true` or the older `external: {name: real}`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(try_from = "Value")]
pub struct External {
    pub external: bool,
    pub name: Option<String>,
}

impl TryFrom<Value> for External {
    type Error = String;
    fn try_from(value: Value) -> Result<Self, String> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Long {
            name: Option<String>,
        }
        match value {
            Value::Null => Ok(External::default()),
            Value::Mapping(_) => Ok(External { external: true, name: long_form::<Long>(value)?.name }),
            other => Ok(External { external: Flag::try_from(other)?.0, name: None }),
        }
    }
}

/// A top-level `volumes:` entry.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Volume {
    pub driver: Option<String>,
    #[serde(default)]
    pub driver_opts: KeyValues,
    #[serde(default)]
    pub external: External,
    #[serde(default)]
    pub labels: KeyValues,
    pub name: Option<String>,
}

/// A top-level `secrets:` or `configs:` entry: from a file (relative to
/// the compose file), an environment variable, inline content (configs),
/// or external (already in the swarm).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileObject {
    pub file: Option<String>,
    pub environment: Option<String>,
    pub content: Option<String>,
    #[serde(default)]
    pub external: External,
    pub name: Option<String>,
    #[serde(default)]
    pub labels: KeyValues,
}
