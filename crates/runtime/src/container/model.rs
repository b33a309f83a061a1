//! What a container is, as requested, stored and reported.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The image a container is made from, as the image store provides it.
#[derive(Debug, Clone)]
pub struct ImageInput {
    /// The image id (digest of its configuration).
    pub id: String,
    /// The image as the user named it.
    pub reference: String,
    /// Unpacked layer directories, lowest first; used read-only as
    /// overlayfs lowerdirs.
    pub layers: Vec<PathBuf>,
    /// Entrypoint, Cmd, Env, WorkingDir, User, Labels, StopSignal.
    pub config: oci_spec::image::Config,
    /// The image's HEALTHCHECK as written (zero durations: unset); the OCI
    /// config has no such field, so it travels apart.
    pub healthcheck: Option<HealthConfig>,
}

impl ImageInput {
    /// From an image in the local store.
    pub fn from_store(image: &crate::image::Image, reference: &str) -> Self {
        let c = &image.config;
        let mut config = oci_spec::image::Config::default();
        config
            .set_entrypoint(Some(c.entrypoint.clone()))
            .set_cmd(Some(c.cmd.clone()))
            .set_env(Some(c.env.clone()))
            .set_working_dir(c.working_dir.clone())
            .set_user(c.user.clone())
            .set_labels(Some(c.labels.clone().into_iter().collect()))
            .set_stop_signal(c.stop_signal.clone());
        ImageInput {
            id: image.id.to_string(),
            reference: reference.to_string(),
            layers: image.layers.clone(),
            config,
            healthcheck: c.healthcheck.clone(),
        }
    }
}

/// docker's HEALTHCHECK: what to run in the container to probe it and how
/// often. In a request or an image a zero duration or retry count means
/// "not given"; in a container's record every field is resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthConfig {
    /// `["CMD", program, args...]`, `["CMD-SHELL", command]` or `["NONE"]`
    /// (no check); empty in a request: the image's test.
    pub test: Vec<String>,
    #[serde(with = "nanoseconds")]
    pub interval: Duration,
    /// A probe running longer is killed and counts as a failure.
    #[serde(with = "nanoseconds")]
    pub timeout: Duration,
    /// Consecutive failures that make the container unhealthy.
    pub retries: u32,
    /// Failures this soon after the start do not count.
    #[serde(with = "nanoseconds")]
    pub start_period: Duration,
    /// How often to probe during the start period, until the first success.
    #[serde(with = "nanoseconds")]
    pub start_interval: Duration,
}

/// Durations as integer nanoseconds, docker's unit in image configs and
/// inspect output.
mod nanoseconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_nanos(u64::deserialize(deserializer)?))
    }
}

/// `docker run`'s options, already parsed and validated by the caller.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateRequest {
    /// Unique name; a random one when `None`.
    pub name: Option<String>,
    /// Replaces the image's CMD when not empty.
    pub command: Vec<String>,
    /// Replaces the image's ENTRYPOINT when set (an empty string clears it).
    pub entrypoint: Option<String>,
    /// `KEY=VALUE`, applied over the image's environment.
    pub env: Vec<String>,
    pub hostname: Option<String>,
    /// `user`, `uid`, `user:group` or `uid:gid`; the image's USER when `None`.
    pub user: Option<String>,
    pub workdir: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub read_only: bool,
    pub mounts: Vec<MountSpec>,
    pub limits: Limits,
    /// A prepared network namespace to join (e.g. `/run/netns/x`); a new
    /// one with only loopback otherwise.
    pub network_namespace: Option<PathBuf>,
    /// Remove the container when it exits (`--rm`).
    pub auto_remove: bool,
    /// A pseudo-terminal for its stdin, stdout and stderr (`-t`).
    pub tty: bool,
    /// Keep its stdin open for attaching clients to write to (`-i`).
    pub open_stdin: bool,
    /// `None`: the image's HEALTHCHECK, if any. `test: ["NONE"]` turns it
    /// off; an empty test keeps the image's with these durations on top.
    pub healthcheck: Option<HealthConfig>,
    #[serde(default)]
    pub options: ProcessOptions,
    /// `--stop-signal`: replaces the image's STOPSIGNAL.
    #[serde(default)]
    pub stop_signal: Option<String>,
    /// `--stop-timeout`: how long `stop` waits before SIGKILL when the
    /// caller gives no time (docker's 10 s otherwise).
    #[serde(default)]
    pub stop_timeout: Option<Duration>,
}

/// docker's process options beyond the basics: `--cap-add`/`--cap-drop`,
/// `--sysctl`, `--ulimit`, `--init`, `--add-host`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessOptions {
    /// Over docker's default set; `NET_ADMIN` or `CAP_NET_ADMIN`, or `ALL`.
    #[serde(default)]
    pub cap_add: Vec<String>,
    #[serde(default)]
    pub cap_drop: Vec<String>,
    /// Namespaced kernel parameters only (net.*, kernel.shm*, kernel.msg*,
    /// kernel.sem, fs.mqueue.*): the others would change the host.
    #[serde(default)]
    pub sysctls: BTreeMap<String, String>,
    #[serde(default)]
    pub ulimits: Vec<Ulimit>,
    /// A reaper as PID 1 that forwards signals and reaps zombies (tini's job).
    #[serde(default)]
    pub init: bool,
    /// `(name, address)`: lines of the container's /etc/hosts.
    #[serde(default)]
    pub extra_hosts: Vec<(String, String)>,
}

impl ProcessOptions {
    pub fn is_empty(&self) -> bool {
        *self == ProcessOptions::default()
    }
}

/// `--ulimit nofile=1024:2048`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ulimit {
    /// As docker names them: nofile, nproc, core, memlock, stack, ...
    pub name: String,
    pub soft: u64,
    pub hard: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub memory_bytes: Option<u64>,
    /// CPUs in billionths, docker's `NanoCpus` (`--cpus 0.5` = 500_000_000).
    pub nano_cpus: Option<u64>,
    pub pids: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MountSpec {
    Bind { source: PathBuf, target: String, readonly: bool },
    /// A named volume under `<data-root>/volumes/<name>/_data`, made on first use.
    Volume { name: String, target: String, readonly: bool },
    Tmpfs { target: String, size_bytes: Option<u64>, mode: Option<u32> },
}

impl MountSpec {
    pub fn target(&self) -> &str {
        match self {
            MountSpec::Bind { target, .. } | MountSpec::Volume { target, .. } | MountSpec::Tmpfs { target, .. } => target,
        }
    }
}

/// Everything the daemon keeps about a container, in its state directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub name: String,
    /// The image as the user named it.
    pub image: String,
    pub image_id: String,
    /// The process: entrypoint + command, after image defaults.
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub workdir: String,
    pub user: String,
    pub hostname: String,
    pub labels: BTreeMap<String, String>,
    pub read_only: bool,
    pub mounts: Vec<MountSpec>,
    pub limits: Limits,
    pub stop_signal: String,
    pub auto_remove: bool,
    /// RFC 3339.
    pub created: String,
    /// `-t`: its process runs on a pseudo-terminal.
    #[serde(default)]
    pub tty: bool,
    /// `-i`: its stdin stays open for attached clients.
    #[serde(default)]
    pub open_stdin: bool,
    /// The health check with the image's and docker's defaults resolved;
    /// `None`: the container has none.
    #[serde(default)]
    pub healthcheck: Option<HealthConfig>,
    /// Validated and normalised (capabilities as `CAP_X`).
    #[serde(default)]
    pub options: ProcessOptions,
    /// Seconds `stop` waits before SIGKILL when the caller gives no time.
    #[serde(default)]
    pub stop_timeout_secs: Option<u64>,
}

/// Written by the shim once the container's process runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Started {
    pub shim_pid: i32,
    /// The shim's start time in clock ticks since boot (/proc/PID/stat),
    /// so a reused pid is not mistaken for the shim.
    pub shim_start_ticks: u64,
    pub pid: i32,
    pub started_at: String,
}

/// Written by the shim when the container has exited (or failed to start).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    /// The exit status, or 128 + signal number.
    pub code: i32,
    pub oom_killed: bool,
    pub finished_at: String,
    /// Why the container could not run, when it never started.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Created,
    Running,
    Exited,
    Dead,
}

impl Status {
    pub fn as_str(&self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Exited => "exited",
            Status::Dead => "dead",
        }
    }
}

/// `container inspect`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerDetails {
    pub id: String,
    pub name: String,
    pub image: String,
    pub image_id: String,
    pub created: String,
    pub state: ContainerState,
    pub config: ContainerRecord,
    pub mounts: Vec<MountSpec>,
    pub limits: LimitsView,
    pub labels: BTreeMap<String, String>,
    pub log_path: PathBuf,
}

/// The limits as `inspect` shows them (`cpus` as given to `--cpus`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LimitsView {
    pub memory_bytes: Option<u64>,
    pub cpus: Option<f64>,
    pub pids: Option<i64>,
}

impl From<&Limits> for LimitsView {
    fn from(limits: &Limits) -> Self {
        LimitsView {
            memory_bytes: limits.memory_bytes,
            cpus: limits.nano_cpus.map(|n| n as f64 / 1e9),
            pids: limits.pids,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerState {
    pub status: Status,
    /// Running, but frozen by `container pause`.
    #[serde(default)]
    pub paused: bool,
    pub pid: Option<i32>,
    pub exit_code: Option<i32>,
    pub oom_killed: bool,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub error: Option<String>,
    /// docker's `State.Health`; absent when the container has no check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<super::health::Health>,
}
