//! `service create` and `service update` flags, turned into a service spec.
//!
//! Both commands parse their flags into one [`SpecChange`] before dialling,
//! so a typo is reported without a daemon; `create` applies it to a fresh
//! spec, `update` to the one the manager returns (read-modify-write).

use shoal_proto::pb;

use super::endpoint_flags::{EndpointChange, EndpointCreateFlags, EndpointUpdateFlags};
use super::file_flags::{FileChange, FileCreateFlags, FileUpdateFlags};
use super::rollout_flags::{RolloutChange, RolloutFlags};
use crate::commands::flags;
use crate::commands::health_flags::{health_from_flags, merge_health, HealthFlags};
use crate::error::{CliError, CliResult};

/// Reservations and limits, shared by `create` and `update`. In `update`,
/// `0` removes a reservation or limit.
#[derive(Debug, Default, clap::Args)]
pub struct ResourceFlags {
    /// Reserve CPUs, e.g. 0.5
    #[arg(long, value_name = "CPUS", allow_hyphen_values = true)]
    reserve_cpu: Option<String>,
    /// Reserve memory, e.g. 64m
    #[arg(long, value_name = "BYTES", allow_hyphen_values = true)]
    reserve_memory: Option<String>,
    /// Limit CPUs, e.g. 0.5
    #[arg(long, value_name = "CPUS", allow_hyphen_values = true)]
    limit_cpu: Option<String>,
    /// Limit memory, e.g. 256m
    #[arg(long, value_name = "BYTES", allow_hyphen_values = true)]
    limit_memory: Option<String>,
    /// Limit the number of processes (0: no limit)
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    limit_pids: Option<String>,
}

/// The restart policy, shared by `create` and `update`.
#[derive(Debug, Default, clap::Args)]
pub struct RestartFlags {
    /// Restart when: none, on-failure or any (default any)
    #[arg(long, value_name = "none|on-failure|any")]
    restart_condition: Option<String>,
    /// Delay between restarts, e.g. 5s
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    restart_delay: Option<String>,
    /// Maximum restarts before giving up (0: unlimited)
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    restart_max_attempts: Option<String>,
    /// Window in which restarts are counted, e.g. 1m
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    restart_window: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// Service name (default: a random one)
    #[arg(long)]
    name: Option<String>,
    /// Number of tasks (replicated mode; default 1)
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    replicas: Option<String>,
    /// replicated (default) or global: one task on every eligible node
    #[arg(long, value_name = "replicated|global")]
    mode: Option<String>,
    /// Environment variable (KEY=VALUE, or KEY to copy it from here)
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Service label
    #[arg(short, long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// Placement constraint, e.g. node.labels.zone==eu
    #[arg(long = "constraint", value_name = "EXPR")]
    constraints: Vec<String>,
    /// Placement preference, e.g. spread=node.labels.zone
    #[arg(long = "placement-pref", value_name = "spread=node.labels.KEY")]
    placement_prefs: Vec<String>,
    /// Maximum tasks of this service per node (0: no limit)
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    replicas_max_per_node: Option<String>,
    #[command(flatten)]
    resources: ResourceFlags,
    #[command(flatten)]
    restart: RestartFlags,
    #[command(flatten)]
    endpoint: EndpointCreateFlags,
    #[command(flatten)]
    files: FileCreateFlags,
    #[command(flatten)]
    rollout: RolloutFlags,
    #[command(flatten)]
    health: HealthFlags,
    #[command(flatten)]
    process: crate::commands::process_flags::ProcessFlags,
    /// Give each task a terminal
    #[arg(short, long)]
    tty: bool,
    /// type=bind|volume|tmpfs,source=...,target=...[,readonly][,tmpfs-size=..][,tmpfs-mode=..]
    #[arg(long = "mount", value_name = "SPEC")]
    mounts: Vec<String>,
    /// Attach the tasks to a network: NAME or name=NAME,alias=ALIAS (repeatable; the first gives the default route)
    #[arg(long = "network", value_name = "NETWORK")]
    networks: Vec<String>,
    /// Time to wait after the stop signal before killing, e.g. 10s
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    stop_grace_period: Option<String>,
    /// Signal that stops the container (default: the image's, or SIGTERM)
    #[arg(long, value_name = "SIGNAL")]
    stop_signal: Option<String>,
    /// Container hostname
    #[arg(long)]
    hostname: Option<String>,
    /// Working directory inside the container
    #[arg(short, long = "workdir", value_name = "DIR")]
    workdir: Option<String>,
    /// USER[:GROUP] or UID[:GID]
    #[arg(short, long)]
    user: Option<String>,
    /// Replace the image's entrypoint
    #[arg(long, value_name = "CMD")]
    entrypoint: Option<String>,
    /// Mount the container's root filesystem read-only
    #[arg(long)]
    read_only: bool,
    /// Send this client's registry login (from `shoal login`) to the swarm, to pull the image with
    #[arg(long)]
    with_registry_auth: bool,
    /// Return at once instead of waiting for the service to converge
    #[arg(short, long)]
    pub detach: bool,
    /// Print only the service id, no progress
    #[arg(short, long)]
    pub quiet: bool,
    image: String,
    /// Command and arguments (replace the image's CMD)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct UpdateArgs {
    /// New image
    #[arg(long)]
    image: Option<String>,
    /// New command arguments, as one shell-quoted string
    #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
    args: Option<String>,
    /// Add or change an environment variable
    #[arg(long = "env-add", value_name = "KEY=VALUE")]
    env_add: Vec<String>,
    /// Remove an environment variable
    #[arg(long = "env-rm", value_name = "KEY")]
    env_rm: Vec<String>,
    /// Add or change a service label
    #[arg(long = "label-add", value_name = "KEY=VALUE")]
    label_add: Vec<String>,
    /// Remove a service label
    #[arg(long = "label-rm", value_name = "KEY")]
    label_rm: Vec<String>,
    /// Number of tasks (replicated services)
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    replicas: Option<String>,
    /// Add a placement constraint
    #[arg(long = "constraint-add", value_name = "EXPR")]
    constraint_add: Vec<String>,
    /// Remove a placement constraint
    #[arg(long = "constraint-rm", value_name = "EXPR")]
    constraint_rm: Vec<String>,
    /// Add a placement preference
    #[arg(long = "placement-pref-add", value_name = "spread=node.labels.KEY")]
    placement_pref_add: Vec<String>,
    /// Remove a placement preference
    #[arg(long = "placement-pref-rm", value_name = "spread=node.labels.KEY")]
    placement_pref_rm: Vec<String>,
    /// Maximum tasks of this service per node (0: no limit)
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    replicas_max_per_node: Option<String>,
    #[command(flatten)]
    resources: ResourceFlags,
    #[command(flatten)]
    restart: RestartFlags,
    #[command(flatten)]
    endpoint: EndpointUpdateFlags,
    #[command(flatten)]
    files: FileUpdateFlags,
    #[command(flatten)]
    rollout: RolloutFlags,
    #[command(flatten)]
    health: HealthFlags,
    #[command(flatten)]
    process: crate::commands::process_flags::ProcessUpdateFlags,
    /// Replace every task even if nothing changed
    #[arg(long)]
    force: bool,
    /// Go back to the previous spec (as `service rollback`)
    #[arg(long)]
    pub rollback: bool,
    /// Add or replace a mount (by target)
    #[arg(long = "mount-add", value_name = "SPEC")]
    mount_add: Vec<String>,
    /// Remove the mount at this target path
    #[arg(long = "mount-rm", value_name = "TARGET")]
    mount_rm: Vec<String>,
    /// Attach the tasks to a network: NAME or name=NAME,alias=ALIAS
    #[arg(long = "network-add", value_name = "NETWORK")]
    network_add: Vec<String>,
    /// Detach the tasks from a network (name or id)
    #[arg(long = "network-rm", value_name = "NETWORK")]
    network_rm: Vec<String>,
    /// Time to wait after the stop signal before killing, e.g. 10s
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    stop_grace_period: Option<String>,
    /// Signal that stops the container
    #[arg(long, value_name = "SIGNAL")]
    stop_signal: Option<String>,
    /// Container hostname
    #[arg(long)]
    hostname: Option<String>,
    /// Working directory inside the container
    #[arg(short, long = "workdir", value_name = "DIR")]
    workdir: Option<String>,
    /// USER[:GROUP] or UID[:GID]
    #[arg(short, long)]
    user: Option<String>,
    /// Replace the image's entrypoint ("" restores the image's)
    #[arg(long, value_name = "CMD")]
    entrypoint: Option<String>,
    /// Mount the root filesystem read-only (--read-only=false to undo)
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    read_only: Option<String>,
    /// Send this client's registry login (from `shoal login`) to the swarm, to pull the image with
    #[arg(long)]
    with_registry_auth: bool,
    /// Return at once instead of waiting for the service to converge
    #[arg(short, long)]
    pub detach: bool,
    /// Print only the service name, no progress
    #[arg(short, long)]
    pub quiet: bool,
    /// Service id, id prefix or name
    pub service: String,
}

/// What `create` or `update` changes in a spec, parsed and checked.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SpecChange {
    pub image: Option<String>,
    /// Send the login kept for the (new) image's registry.
    pub with_registry_auth: bool,
    pub args: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub env_rm: Vec<String>,
    pub env_add: Vec<String>,
    pub label_rm: Vec<String>,
    pub label_add: Vec<(String, String)>,
    pub replicas: Option<u64>,
    pub constraint_rm: Vec<String>,
    pub constraint_add: Vec<String>,
    pub spread_rm: Vec<String>,
    pub spread_add: Vec<String>,
    pub max_replicas_per_node: Option<u64>,
    pub reserve_nano_cpus: Option<u64>,
    pub reserve_memory: Option<u64>,
    pub limit_nano_cpus: Option<u64>,
    pub limit_memory: Option<u64>,
    pub pids_limit: Option<u64>,
    pub restart_condition: Option<String>,
    pub restart_delay_ms: Option<u64>,
    pub restart_max_attempts: Option<u64>,
    pub restart_window_ms: Option<u64>,
    pub mount_rm: Vec<String>,
    pub mount_add: Vec<pb::Mount>,
    pub network_rm: Vec<String>,
    pub network_add: Vec<pb::NetworkAttachmentConfig>,
    pub endpoint: EndpointChange,
    pub files: FileChange,
    pub stop_grace_ms: Option<u64>,
    pub stop_signal: Option<String>,
    pub hostname: Option<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub read_only: Option<bool>,
    pub rollout: RolloutChange,
    /// `--health-*` / `--no-healthcheck`, merged into the service's check.
    pub healthcheck: Option<pb::HealthCheck>,
    /// `--force`: replace every task.
    pub force: bool,
    /// `--cap-add`, `--sysctl-add`, `--init`, `--tty` and the rest.
    pub process: crate::commands::process_flags::ProcessChange,
}

impl ResourceFlags {
    fn parse_into(&self, change: &mut SpecChange) -> CliResult {
        // `0` clears a setting (docker's way of removing one in `update`).
        let cpus = |flag: &str, value: &Option<String>| -> CliResult<Option<u64>> {
            value.as_deref().map(|v| if v.trim() == "0" { Ok(0) } else { flags::parse_cpus(flag, v) }).transpose()
        };
        let bytes = |flag: &str, value: &Option<String>| -> CliResult<Option<u64>> {
            value.as_deref().map(|v| if v.trim() == "0" { Ok(0) } else { flags::parse_bytes(flag, v) }).transpose()
        };
        change.reserve_nano_cpus = cpus("--reserve-cpu", &self.reserve_cpu)?;
        change.reserve_memory = bytes("--reserve-memory", &self.reserve_memory)?;
        change.limit_nano_cpus = cpus("--limit-cpu", &self.limit_cpu)?;
        change.limit_memory = bytes("--limit-memory", &self.limit_memory)?;
        change.pids_limit = self.limit_pids.as_deref().map(|v| flags::parse_count("--limit-pids", v)).transpose()?;
        if let (Some(reserve), Some(limit)) = (change.reserve_memory, change.limit_memory) {
            if limit > 0 && reserve > limit {
                return Err(CliError::msg(format!(
                    "--reserve-memory {:?} is larger than --limit-memory {:?}; lower the reservation or raise the limit",
                    self.reserve_memory.as_deref().unwrap_or_default(),
                    self.limit_memory.as_deref().unwrap_or_default()
                )));
            }
        }
        Ok(())
    }
}

impl RestartFlags {
    fn parse_into(&self, change: &mut SpecChange) -> CliResult {
        if let Some(condition) = &self.restart_condition {
            if !["none", "on-failure", "any"].contains(&condition.as_str()) {
                return Err(CliError::msg(format!(
                    "--restart-condition {condition:?} is invalid; use none, on-failure or any"
                )));
            }
            change.restart_condition = Some(condition.clone());
        }
        change.restart_delay_ms = duration_ms("--restart-delay", &self.restart_delay)?;
        change.restart_max_attempts =
            self.restart_max_attempts.as_deref().map(|v| flags::parse_count("--restart-max-attempts", v)).transpose()?;
        change.restart_window_ms = duration_ms("--restart-window", &self.restart_window)?;
        Ok(())
    }
}

pub(super) fn duration_ms(flag: &str, value: &Option<String>) -> CliResult<Option<u64>> {
    value
        .as_deref()
        .map(|v| {
            let d = flags::parse_duration(flag, v)?;
            if d.subsec_nanos() % 1_000_000 != 0 {
                return Err(CliError::msg(format!("{flag} {v:?} is finer than a millisecond; round it to whole milliseconds")));
            }
            Ok(d.as_millis() as u64)
        })
        .transpose()
}

/// `spread=node.labels.zone` -> `node.labels.zone`.
pub fn parse_placement_pref(flag: &str, value: &str) -> CliResult<String> {
    let key = value.trim().strip_prefix("spread=").unwrap_or_default();
    let label = key.strip_prefix("node.labels.").or_else(|| key.strip_prefix("engine.labels."));
    match label {
        Some(label) if !label.is_empty() => Ok(key.to_string()),
        _ => Err(CliError::msg(format!("{flag} {value:?} is invalid; use spread=node.labels.KEY"))),
    }
}

/// The cheap part of constraint syntax; the manager checks the rest.
pub fn check_constraint(flag: &str, value: &str) -> CliResult<String> {
    let ok = ["==", "!="].iter().any(|op| {
        value.split_once(op).is_some_and(|(key, val)| !key.trim().is_empty() && !val.trim().is_empty())
    });
    if ok {
        Ok(value.trim().to_string())
    } else {
        Err(CliError::msg(format!(
            "{flag} {value:?} is invalid; use KEY==VALUE or KEY!=VALUE, e.g. node.labels.zone==eu"
        )))
    }
}

fn parse_labels_list(flag: &str, values: &[String]) -> CliResult<Vec<(String, String)>> {
    flags::parse_labels(flag, values)?;
    // In the order given, so a later value for a key wins.
    Ok(values
        .iter()
        .map(|v| {
            let (key, value) = v.split_once('=').unwrap_or((v.as_str(), ""));
            (key.to_string(), value.to_string())
        })
        .collect())
}

fn mode_of(value: Option<&str>) -> CliResult<&'static str> {
    match value {
        None | Some("replicated") => Ok("replicated"),
        Some("global") => Ok("global"),
        Some(other) => Err(CliError::msg(format!("--mode {other:?} is invalid; use replicated or global"))),
    }
}

impl CreateArgs {
    /// The spec to create, with every flag checked.
    pub fn spec(&self) -> CliResult<pb::ServiceSpec> {
        let mode = mode_of(self.mode.as_deref())?;
        let replicas = self.replicas.as_deref().map(|v| flags::parse_count("--replicas", v)).transpose()?;
        let max_per_node =
            self.replicas_max_per_node.as_deref().map(|v| flags::parse_count("--replicas-max-per-node", v)).transpose()?;
        if mode == "global" {
            if replicas.is_some() {
                return Err(CliError::msg("--replicas cannot be used with --mode global; drop one of them"));
            }
            if max_per_node.is_some() {
                return Err(CliError::msg("--replicas-max-per-node cannot be used with --mode global; drop one of them"));
            }
        }
        if self.image.trim().is_empty() {
            return Err(CliError::msg("the image name is empty; name one, e.g. `shoal service create busybox`"));
        }
        let mut change = SpecChange {
            replicas: (mode == "replicated").then(|| replicas.unwrap_or(1)),
            max_replicas_per_node: max_per_node,
            env_add: flags::parse_env(&self.env)?,
            label_add: parse_labels_list("--label", &self.labels)?,
            constraint_add: self.constraints.iter().map(|c| check_constraint("--constraint", c)).collect::<CliResult<_>>()?,
            spread_add: self
                .placement_prefs
                .iter()
                .map(|p| parse_placement_pref("--placement-pref", p))
                .collect::<CliResult<_>>()?,
            mount_add: self.mounts.iter().map(|m| flags::parse_mount(m)).collect::<CliResult<_>>()?,
            network_add: self.networks.iter().map(|n| flags::parse_network("--network", n)).collect::<CliResult<_>>()?,
            stop_grace_ms: duration_ms("--stop-grace-period", &self.stop_grace_period)?,
            stop_signal: self.stop_signal.clone(),
            hostname: self.hostname.clone(),
            workdir: self.workdir.clone(),
            user: self.user.clone(),
            entrypoint: self.entrypoint.as_deref().map(|e| flags::shell_split("--entrypoint", e)).transpose()?,
            read_only: self.read_only.then_some(true),
            with_registry_auth: self.with_registry_auth,
            ..Default::default()
        };
        self.resources.parse_into(&mut change)?;
        self.restart.parse_into(&mut change)?;
        change.endpoint = self.endpoint.change()?;
        change.files = self.files.change()?;
        change.rollout = self.rollout.change()?;
        change.healthcheck = health_from_flags(&self.health)?;
        let mut spec = pb::ServiceSpec {
            name: self.name.clone().unwrap_or_else(random_name),
            mode: mode.into(),
            task: Some(pb::TaskSpec {
                image: self.image.trim().to_string(),
                args: self.args.clone(),
                options: Some(self.process.to_pb()?),
                tty: self.tty,
                ..Default::default()
            }),
            // Docker's defaults, which restart flags then adjust.
            restart: Some(pb::RestartPolicy { condition: "any".into(), delay_ms: 5000, max_attempts: 0, window_ms: 0 }),
            placement: Some(pb::Placement::default()),
            ..Default::default()
        };
        change.apply(&mut spec)?;
        Ok(spec)
    }
}

impl UpdateArgs {
    /// The change to make, with every flag checked.
    pub fn change(&self) -> CliResult<SpecChange> {
        if let Some(image) = &self.image {
            if image.trim().is_empty() {
                return Err(CliError::msg("--image is empty; name an image, e.g. --image busybox:1.36"));
            }
        }
        let read_only = match self.read_only.as_deref() {
            None => None,
            Some("true" | "1") => Some(true),
            Some("false" | "0") => Some(false),
            Some(other) => return Err(CliError::msg(format!("--read-only {other:?} is invalid; use --read-only or --read-only=false"))),
        };
        for key in self.env_rm.iter().chain(&self.label_rm) {
            if key.is_empty() || key.contains('=') {
                return Err(CliError::msg(format!("{key:?} is not a variable or label name; give only the KEY to remove")));
            }
        }
        let mut change = SpecChange {
            image: self.image.as_ref().map(|i| i.trim().to_string()),
            args: self.args.as_deref().map(|a| flags::shell_split("--args", a)).transpose()?,
            entrypoint: self.entrypoint.as_deref().map(|e| flags::shell_split("--entrypoint", e)).transpose()?,
            env_rm: self.env_rm.clone(),
            env_add: flags::parse_env(&self.env_add)?,
            label_rm: self.label_rm.clone(),
            label_add: parse_labels_list("--label-add", &self.label_add)?,
            replicas: self.replicas.as_deref().map(|v| flags::parse_count("--replicas", v)).transpose()?,
            constraint_rm: self.constraint_rm.clone(),
            constraint_add: self.constraint_add.iter().map(|c| check_constraint("--constraint-add", c)).collect::<CliResult<_>>()?,
            spread_rm: self
                .placement_pref_rm
                .iter()
                .map(|p| parse_placement_pref("--placement-pref-rm", p))
                .collect::<CliResult<_>>()?,
            spread_add: self
                .placement_pref_add
                .iter()
                .map(|p| parse_placement_pref("--placement-pref-add", p))
                .collect::<CliResult<_>>()?,
            max_replicas_per_node: self
                .replicas_max_per_node
                .as_deref()
                .map(|v| flags::parse_count("--replicas-max-per-node", v))
                .transpose()?,
            mount_rm: self.mount_rm.clone(),
            mount_add: self.mount_add.iter().map(|m| flags::parse_mount(m)).collect::<CliResult<_>>()?,
            network_rm: self.network_rm.clone(),
            network_add: self.network_add.iter().map(|n| flags::parse_network("--network-add", n)).collect::<CliResult<_>>()?,
            stop_grace_ms: duration_ms("--stop-grace-period", &self.stop_grace_period)?,
            stop_signal: self.stop_signal.clone(),
            hostname: self.hostname.clone(),
            workdir: self.workdir.clone(),
            user: self.user.clone(),
            read_only,
            with_registry_auth: self.with_registry_auth,
            ..Default::default()
        };
        self.resources.parse_into(&mut change)?;
        self.restart.parse_into(&mut change)?;
        change.endpoint = self.endpoint.change()?;
        change.files = self.files.change()?;
        change.rollout = self.rollout.change()?;
        change.healthcheck = health_from_flags(&self.health)?;
        change.process = self.process.change()?;
        change.force = self.force;
        Ok(change)
    }
}

/// `a == b` and `a==b` are the same constraint.
fn same_constraint(a: &str, b: &str) -> bool {
    let squash = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>();
    squash(a) == squash(b)
}

fn env_key(entry: &str) -> &str {
    entry.split_once('=').map_or(entry, |(k, _)| k)
}

impl SpecChange {
    /// Applies the change to `spec`; fails where the spec does not allow it
    /// (a replica count for a global service).
    pub fn apply(&self, spec: &mut pb::ServiceSpec) -> CliResult {
        if spec.mode == "global" && (self.replicas.is_some() || self.max_replicas_per_node.is_some()) {
            let what = if self.replicas.is_some() { "replica count" } else { "--replicas-max-per-node" };
            return Err(CliError::msg(format!(
                "service {} is global (one task per eligible node) and takes no {what}; only replicated services can be scaled",
                spec.name
            )));
        }
        if let Some(replicas) = self.replicas {
            spec.replicas = replicas;
        }
        for key in &self.label_rm {
            spec.labels.remove(key);
        }
        for (key, value) in &self.label_add {
            spec.labels.insert(key.clone(), value.clone());
        }

        let task = spec.task.get_or_insert_with(Default::default);
        if let Some(image) = &self.image {
            task.image = image.clone();
        }
        if self.with_registry_auth {
            // No login for that registry: the swarm pulls anonymously.
            task.registry_auth = crate::credentials::for_image(&task.image);
        }
        if let Some(args) = &self.args {
            task.args = args.clone();
        }
        if let Some(entrypoint) = &self.entrypoint {
            task.entrypoint = entrypoint.clone();
        }
        task.env.retain(|e| !self.env_rm.iter().any(|k| k == env_key(e)));
        for entry in &self.env_add {
            task.env.retain(|e| env_key(e) != env_key(entry));
            task.env.push(entry.clone());
        }
        task.mounts.retain(|m| !self.mount_rm.iter().any(|t| t.trim_end_matches('/') == m.target.trim_end_matches('/')));
        for mount in &self.mount_add {
            task.mounts.retain(|m| m.target != mount.target);
            task.mounts.push(mount.clone());
        }
        // A network is named by id or name; inspect output carries both.
        let names = |n: &pb::NetworkAttachmentConfig, wanted: &str| n.target == wanted || (!n.name.is_empty() && n.name == wanted);
        task.networks.retain(|n| !self.network_rm.iter().any(|rm| names(n, rm)));
        for network in &self.network_add {
            task.networks.retain(|n| !names(n, &network.target));
            task.networks.push(network.clone());
        }
        if let Some(ms) = self.stop_grace_ms {
            task.stop_grace_ms = ms;
        }
        for (field, value) in [
            (&mut task.stop_signal, &self.stop_signal),
            (&mut task.hostname, &self.hostname),
            (&mut task.workdir, &self.workdir),
            (&mut task.user, &self.user),
        ] {
            if let Some(value) = value {
                *field = value.clone();
            }
        }
        if let Some(read_only) = self.read_only {
            task.read_only = read_only;
        }
        if self.force {
            task.force_update += 1;
        }
        if let Some(check) = &self.healthcheck {
            task.healthcheck = Some(merge_health(task.healthcheck.as_ref(), check));
        }
        self.process.apply(task);
        self.files.apply(task)?;
        let resources = task.resources.get_or_insert_with(Default::default);
        for (field, value) in [
            (&mut resources.reserve_nano_cpus, self.reserve_nano_cpus),
            (&mut resources.reserve_memory, self.reserve_memory),
            (&mut resources.limit_nano_cpus, self.limit_nano_cpus),
            (&mut resources.limit_memory, self.limit_memory),
            (&mut resources.pids_limit, self.pids_limit),
        ] {
            if let Some(value) = value {
                *field = value;
            }
        }

        let restart = spec.restart.get_or_insert_with(|| pb::RestartPolicy {
            condition: "any".into(),
            delay_ms: 5000,
            max_attempts: 0,
            window_ms: 0,
        });
        if let Some(condition) = &self.restart_condition {
            restart.condition = condition.clone();
        }
        for (field, value) in [
            (&mut restart.delay_ms, self.restart_delay_ms),
            (&mut restart.max_attempts, self.restart_max_attempts),
            (&mut restart.window_ms, self.restart_window_ms),
        ] {
            if let Some(value) = value {
                *field = value;
            }
        }

        let placement = spec.placement.get_or_insert_with(Default::default);
        placement.constraints.retain(|c| !self.constraint_rm.iter().any(|rm| same_constraint(c, rm)));
        for constraint in &self.constraint_add {
            if !placement.constraints.iter().any(|c| same_constraint(c, constraint)) {
                placement.constraints.push(constraint.clone());
            }
        }
        placement.spread.retain(|s| !self.spread_rm.contains(s));
        for key in &self.spread_add {
            if !placement.spread.contains(key) {
                placement.spread.push(key.clone());
            }
        }
        if let Some(max) = self.max_replicas_per_node {
            placement.max_replicas_per_node = max;
        }
        self.endpoint.apply(spec);
        self.rollout.apply(spec);
        Ok(())
    }

    /// Only a replica count: the kind of change `scale` makes.
    pub fn scale(replicas: u64) -> Self {
        SpecChange { replicas: Some(replicas), ..Default::default() }
    }
}

/// `SERVICE=REPLICAS`, as `service scale` takes it.
pub fn parse_scale(value: &str) -> CliResult<(String, u64)> {
    match value.split_once('=') {
        Some((service, replicas)) if !service.trim().is_empty() => {
            let replicas = replicas.trim().parse::<u64>().ok().filter(|_| !replicas.trim().starts_with('+')).ok_or_else(|| {
                CliError::msg(format!("replica count {replicas:?} for {service} is invalid; use a whole number of 0 or more"))
            })?;
            Ok((service.trim().to_string(), replicas))
        }
        _ => Err(CliError::msg(format!("{value:?} is invalid; use SERVICE=REPLICAS, e.g. web=3"))),
    }
}

pub use super::random_name::random_name;
#[cfg(test)]
use super::random_name::{ADJECTIVES, NOUNS};

#[cfg(test)]
#[path = "spec_tests.rs"]
mod tests;
