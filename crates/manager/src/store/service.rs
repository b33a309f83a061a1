//! Services and their tasks.
//!
//! A [`Service`] is what the user asked for; a [`Task`] is one unit of it
//! (a slot of a replicated service, or one node of a global one) moving
//! through [`TaskState`]s: the orchestrators create tasks, the scheduler
//! assigns them, agents run them and report back. Each task carries a copy
//! of the service's [`TaskSpec`] so an agent needs nothing but its
//! assignment, and an update shows as a task whose spec differs from its
//! service's.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::endpoint::{DnsConfig, EndpointSpec};
use super::network::{NetworkAttachment, NetworkAttachmentSpec, Vip};
use super::objects::{Meta, Node, NodeDescription};
use super::rollout::{HealthCheck, UpdateConfig, UpdateStatus};

/// Shared with the agents, which report these states on the wire.
pub use shoal_proto::task_state::TaskState;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub mode: ServiceMode,
    pub task: TaskSpec,
    pub restart: RestartPolicy,
    pub placement: Placement,
    /// How the service is reached: endpoint mode and published ports.
    pub endpoint: EndpointSpec,
    /// How tasks move to a new spec, and back to the previous one.
    pub update: UpdateConfig,
    pub rollback: UpdateConfig,
    /// compose's depends_on: the first tasks wait until these are ready.
    pub depends_on: Vec<Dependency>,
}

/// A service the first tasks of another wait for (compose's depends_on).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dependency {
    /// The other service's name.
    pub service: String,
    pub condition: DependencyCondition,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum DependencyCondition {
    /// Its tasks run.
    #[default]
    Started,
    /// Its tasks run and pass their health checks (a task with a check
    /// is only reported running once healthy).
    Healthy,
    /// Its tasks have exited 0 and none runs: a one-shot job such as a
    /// migration.
    CompletedSuccessfully,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServiceMode {
    Replicated { replicas: u64 },
    Global,
}

impl ServiceMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceMode::Replicated { .. } => "replicated",
            ServiceMode::Global => "global",
        }
    }
}

/// What each task of a service runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// Pinned to a digest at create time (`name@sha256:...`), so every node
    /// runs the same bytes even if the tag moves.
    pub image: String,
    /// Replaces the image's entrypoint when set.
    pub entrypoint: Vec<String>,
    /// Replaces the image's cmd when set.
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub workdir: String,
    pub user: String,
    /// May hold `{{.Service.Name}}`, `{{.Task.Slot}}`, `{{.Node.Hostname}}`...
    pub hostname: String,
    pub mounts: Vec<Mount>,
    pub read_only: bool,
    /// Empty: the image's stop signal, else SIGTERM.
    pub stop_signal: String,
    pub stop_grace_ms: u64,
    pub resources: Resources,
    /// The networks each task joins, in order: the first gives the task
    /// its default route.
    pub networks: Vec<NetworkAttachmentSpec>,
    pub dns: DnsConfig,
    /// Files the container gets from secrets and from configs.
    pub secrets: Vec<FileReference>,
    pub configs: Vec<FileReference>,
    /// `--with-registry-auth`: the login nodes pull the image with.
    /// (Always written: the Raft log's encoding has no optional fields.)
    #[serde(default)]
    pub registry_auth: Option<RegistryLogin>,
    /// None: the image's HEALTHCHECK, if it has one.
    pub healthcheck: Option<HealthCheck>,
    /// Bumped by `service update --force`: every task then differs from
    /// the spec and is replaced, though nothing else changed.
    pub force_update: u64,
    /// Capabilities, sysctls, ulimits, init, extra hosts, terminal.
    pub options: super::task_options::TaskOptions,
}

/// A registry login handed to the swarm; its Debug form hides the password.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryLogin {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for RegistryLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RegistryLogin({}, ****)", self.username)
    }
}

/// A secret or config as a file in a task's container (`--secret
/// source=NAME,target=T,uid=U,gid=G,mode=0400`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileReference {
    /// The secret's or config's id: the task gets that very value, even
    /// if the name is later given to another.
    pub id: String,
    /// Its name when the spec was written, for people.
    pub name: String,
    /// As the user gave it (the name by default): a secret's relative
    /// target is under /run/secrets, a config's under /.
    pub target: String,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

/// Docker's default for secret and config files: readable by everyone in
/// the container, writable by none.
pub const DEFAULT_FILE_MODE: u32 = 0o444;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    pub kind: MountKind,
    /// Host path (bind) or volume name (volume); empty for tmpfs.
    pub source: String,
    pub target: String,
    pub read_only: bool,
    pub tmpfs_size: Option<u64>,
    pub tmpfs_mode: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountKind {
    Bind,
    Volume,
    Tmpfs,
}

impl MountKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MountKind::Bind => "bind",
            MountKind::Volume => "volume",
            MountKind::Tmpfs => "tmpfs",
        }
    }
}

/// Reservations are what the scheduler counts against a node's capacity;
/// limits are what the runtime enforces. Zero means none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    pub reserve_nano_cpus: u64,
    pub reserve_memory: u64,
    pub limit_nano_cpus: u64,
    pub limit_memory: u64,
    pub pids_limit: u64,
}

/// Sizes in messages to people: 2147483648 -> "2 GiB", 1536 -> "1.5 KiB".
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{} {}", decimal(value), UNITS[unit])
}

/// At most two decimals, without trailing zeros: 1.5, 0.25, 2.
pub fn decimal(value: f64) -> String {
    let text = format!("{value:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartPolicy {
    pub condition: RestartCondition,
    pub delay_ms: u64,
    /// 0: no limit.
    pub max_attempts: u64,
    /// Attempts are counted within this window (0: since the service began).
    pub window_ms: u64,
}

impl Default for RestartPolicy {
    /// Docker's defaults: restart on any exit, 5 s apart, without limit.
    fn default() -> Self {
        RestartPolicy { condition: RestartCondition::Any, delay_ms: 5000, max_attempts: 0, window_ms: 0 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestartCondition {
    None,
    OnFailure,
    Any,
}

impl RestartCondition {
    pub fn as_str(self) -> &'static str {
        match self {
            RestartCondition::None => "none",
            RestartCondition::OnFailure => "on-failure",
            RestartCondition::Any => "any",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "none" => Some(RestartCondition::None),
            "on-failure" => Some(RestartCondition::OnFailure),
            "any" => Some(RestartCondition::Any),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub constraints: Vec<Constraint>,
    /// Label keys to spread over, in order (`node.labels.zone`).
    pub spread: Vec<String>,
    /// 0: no limit.
    pub max_replicas_per_node: u64,
    /// What the image is built for, learnt when it was pinned; a task
    /// goes only to a node that runs one of these. Empty: unknown, any node.
    pub platforms: Vec<Platform>,
    /// The service publishes ports in host mode, which one node can bind
    /// for one task only: at most one task per node. Set by the managers
    /// from the endpoint, never by the user.
    pub host_ports: bool,
}

/// An OS and CPU architecture as images and nodes name them: linux/amd64.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
}

impl Platform {
    /// Whether `node` runs this platform; a node that has not said what it
    /// runs is given the benefit of the doubt.
    pub fn runs_on(&self, node: &Node) -> bool {
        let NodeDescription { os, arch, .. } = &node.description;
        (os.is_empty() || *os == self.os) && (arch.is_empty() || *arch == self.architecture)
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)
    }
}

/// `KEY==VALUE` or `KEY!=VALUE` over a node attribute.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Constraint {
    pub key: ConstraintKey,
    pub equal: bool,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ConstraintKey {
    NodeId,
    NodeHostname,
    NodeRole,
    NodeLabel(String),
    EngineLabel(String),
    PlatformOs,
    PlatformArch,
}

impl Constraint {
    /// Parses docker's syntax: `node.labels.zone==eu`, `node.role!=manager`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (key, equal, value) = if let Some((k, v)) = text.split_once("==") {
            (k, true, v)
        } else if let Some((k, v)) = text.split_once("!=") {
            (k, false, v)
        } else {
            return Err(format!("constraint {text:?} has no == or !=; write it as KEY==VALUE or KEY!=VALUE"));
        };
        let (key, value) = (key.trim(), value.trim());
        if value.is_empty() {
            return Err(format!("constraint {text:?} has no value; write it as KEY==VALUE or KEY!=VALUE"));
        }
        let key = match key {
            "node.id" => ConstraintKey::NodeId,
            "node.hostname" => ConstraintKey::NodeHostname,
            "node.role" => ConstraintKey::NodeRole,
            "node.platform.os" => ConstraintKey::PlatformOs,
            "node.platform.arch" => ConstraintKey::PlatformArch,
            _ => {
                let label = |prefix: &str| key.strip_prefix(prefix).filter(|l| !l.is_empty()).map(str::to_string);
                match (label("node.labels."), label("engine.labels.")) {
                    (Some(l), _) => ConstraintKey::NodeLabel(l),
                    (_, Some(l)) => ConstraintKey::EngineLabel(l),
                    _ => {
                        return Err(format!(
                            "constraint {text:?} uses the unknown key {key:?}; use node.id, node.hostname, node.role, node.platform.os, node.platform.arch, node.labels.KEY or engine.labels.KEY"
                        ))
                    }
                }
            }
        };
        if key == ConstraintKey::NodeRole && value != "manager" && value != "worker" {
            return Err(format!("constraint {text:?} compares node.role with {value:?}; use manager or worker"));
        }
        Ok(Constraint { key, equal, value: value.to_string() })
    }
}

impl Constraint {
    /// Whether `node` satisfies the constraint; `!=` holds where the label
    /// is missing, as in docker.
    pub fn matches(&self, node: &Node) -> bool {
        let actual = match &self.key {
            ConstraintKey::NodeId => Some(node.meta.id.as_str()),
            ConstraintKey::NodeHostname => Some(node.hostname.as_str()),
            ConstraintKey::NodeRole => Some(node.role.as_str()),
            ConstraintKey::NodeLabel(label) => node.labels.get(label).map(String::as_str),
            ConstraintKey::EngineLabel(label) => node.description.engine_labels.get(label).map(String::as_str),
            ConstraintKey::PlatformOs => Some(node.description.os.as_str()),
            ConstraintKey::PlatformArch => Some(node.description.arch.as_str()),
        };
        (actual == Some(self.value.as_str())) == self.equal
    }
}

impl std::fmt::Display for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let key = match &self.key {
            ConstraintKey::NodeId => "node.id".to_string(),
            ConstraintKey::NodeHostname => "node.hostname".to_string(),
            ConstraintKey::NodeRole => "node.role".to_string(),
            ConstraintKey::NodeLabel(l) => format!("node.labels.{l}"),
            ConstraintKey::EngineLabel(l) => format!("engine.labels.{l}"),
            ConstraintKey::PlatformOs => "node.platform.os".to_string(),
            ConstraintKey::PlatformArch => "node.platform.arch".to_string(),
        };
        write!(f, "{key}{}{}", if self.equal { "==" } else { "!=" }, self.value)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub meta: Meta,
    pub spec: ServiceSpec,
    /// Bumped whenever `spec` changes; tasks record the one they were made from.
    pub spec_version: u64,
    /// The service's virtual IP on each of its networks, handed out by the
    /// allocator.
    pub vips: Vec<Vip>,
    /// The spec before the last update: what a rollback goes back to.
    pub previous_spec: Option<Box<ServiceSpec>>,
    /// The rollout of `spec`, since it last changed; None before any update.
    pub update_status: Option<UpdateStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStatus {
    pub state: TaskState,
    /// Unix milliseconds of the last state change.
    pub timestamp_ms: u64,
    /// What is happening, for people ("starting container").
    pub message: String,
    /// Why the task failed or was rejected, or why it cannot be scheduled.
    pub error: String,
    pub exit_code: Option<i32>,
    pub container_id: String,
}

impl TaskStatus {
    pub fn new(state: TaskState, timestamp_ms: u64, message: impl Into<String>) -> Self {
        TaskStatus { state, timestamp_ms, message: message.into(), error: String::new(), exit_code: None, container_id: String::new() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub meta: Meta,
    pub service_id: String,
    pub service_name: String,
    /// 1-based replica number; 0 for global tasks.
    pub slot: u64,
    /// Empty until the scheduler assigns it; set at creation for global tasks.
    pub node_id: String,
    pub spec: TaskSpec,
    pub placement: Placement,
    /// The service's `spec_version` this task was made from.
    pub spec_version: u64,
    pub desired_state: TaskState,
    pub status: TaskStatus,
    /// How many tasks of this slot ran before this one (restart attempts).
    pub attempt: u64,
    /// A restart waits out the policy's delay: the task is not scheduled
    /// before this time (Unix milliseconds; 0: at once).
    pub not_before_ms: u64,
    /// The orchestrator will not replace this task when it ends (its
    /// restart policy is spent), so its slot stays empty until the
    /// service changes.
    pub final_attempt: bool,
    /// The task's address on each network of its spec, in the spec's
    /// order; filled by the allocator before the task leaves `New`.
    pub networks: Vec<NetworkAttachment>,
    /// When the task was first reported running (healthy, if it has a
    /// health check), Unix milliseconds; 0 before. Updates count a failure
    /// within their monitor period from here.
    pub started_ms: u64,
}

impl Task {
    /// `web.2` for slot 2, `web.<node id>` for a global task: docker's names.
    pub fn name(&self) -> String {
        if self.slot > 0 {
            format!("{}.{}", self.service_name, self.slot)
        } else {
            format!("{}.{}", self.service_name, self.node_id)
        }
    }

    /// Where the task's container should be running, or is being started.
    pub fn is_active(&self) -> bool {
        self.desired_state <= TaskState::Running && !self.status.state.is_terminal()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constraints_parse_docker_syntax() {
        let c = Constraint::parse("node.labels.zone==eu-1").unwrap();
        assert_eq!(c.key, ConstraintKey::NodeLabel("zone".into()));
        assert!(c.equal);
        assert_eq!(c.to_string(), "node.labels.zone==eu-1");
        let c = Constraint::parse(" node.role != manager ").unwrap();
        assert_eq!((c.key, c.equal), (ConstraintKey::NodeRole, false));
        assert_eq!(Constraint::parse("engine.labels.disk==ssd").unwrap().key, ConstraintKey::EngineLabel("disk".into()));
        for bad in ["node.labels.zone", "node.labels.==a", "node.colour==red", "node.role==boss", "node.id=="] {
            let error = Constraint::parse(bad).unwrap_err();
            assert!(error.contains(&format!("{bad:?}")), "{error}");
        }
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human_bytes(2 << 30), "2 GiB");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(decimal(0.25), "0.25");
    }

    #[test]
    fn task_states_only_move_forward() {
        assert!(TaskState::Pending < TaskState::Assigned);
        assert!(TaskState::Running < TaskState::Complete);
        assert!(!TaskState::Running.is_terminal());
        assert!(TaskState::Rejected.is_terminal());
        for state in TaskState::ALL {
            assert_eq!(TaskState::parse(state.as_str()), Some(state));
        }
    }
}
