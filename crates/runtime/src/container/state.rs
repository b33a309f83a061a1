//! The files in a container's state directory and how they are written:
//! atomically (temp + rename), so a crash never leaves half a record.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// What the daemon decided: [`super::model::ContainerRecord`].
pub const RECORD_FILE: &str = "container.json";
/// Written by the shim once the process runs: [`super::model::Started`].
pub const STARTED_FILE: &str = "started.json";
/// Written by the shim when it ends: [`super::model::ExitInfo`].
pub const EXIT_FILE: &str = "exit.json";

pub fn write_json<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(value).map_err(std::io::Error::other)?)?;
    std::fs::rename(&tmp, path)
}

pub fn read_json<T: DeserializeOwned>(path: &Path) -> Option<T> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string()
}

/// Field 22 of /proc/PID/stat: when the process started, in clock ticks
/// since boot. With the pid it names one process for good.
pub fn process_start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; count from after it.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// What the daemon tells the shim, written at create: [`ShimConfig`].
pub const SHIM_CONFIG_FILE: &str = "shim.json";
/// The shim's own stderr, for failures it could not report otherwise.
pub const SHIM_LOG_FILE: &str = "shim.log";

/// The shim's instructions; the OCI bundle (config.json) sits next to it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ShimConfig {
    pub id: String,
    /// The container's cgroup, `/<parent>/<id>`.
    pub cgroup_path: String,
    pub log_rotation: super::logs::LogRotation,
    /// The container's process gets a pseudo-terminal (`-t`).
    #[serde(default)]
    pub tty: bool,
    /// Its stdin stays open for attached clients (`-i`).
    #[serde(default)]
    pub open_stdin: bool,
}
