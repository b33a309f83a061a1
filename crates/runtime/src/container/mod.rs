//! Containers: OCI spec from image + request, overlayfs root, a shim per
//! container (see [`crate::shim`]) starting it ([`init`]: namespaces,
//! cgroup, mounts, capabilities, seccomp), logs, and re-attaching after a
//! daemon restart.

pub mod attach;
pub(crate) mod cgroups;
pub mod copy;
mod error;
pub(crate) mod exec;
pub mod health;
mod exec_session;
pub(crate) mod init;
mod log_watch;
pub mod logs;
mod manager;
pub mod model;
mod mounts;
mod pipes;
pub mod process_options;
mod reaper;
pub(crate) mod record;
mod rootfs;
mod seccomp;
mod spec;
pub mod stats;
pub mod top;
pub mod state;

pub use attach::Attachment;
pub use cgroups::layout_name as cgroup_layout;
pub use error::ContainerError;
pub use health::{Health, HealthProbe, HealthStatus};
pub use exec_session::{is_end_of_terminal, ExecExit, ExecIo, ExecOptions, ExecProcess, Terminal, Window};
pub use logs::{LogEntries, LogEntry, LogOptions, LogRotation, LogStream};
pub use manager::{parse_signal, ContainerManager, ContainerSummary, ManagerConfig, Rebind};
pub use model::{
    ContainerDetails, ContainerRecord, ContainerState, CreateRequest, ExitInfo, HealthConfig, ImageInput, Limits, LimitsView, MountSpec,
    ProcessOptions, Status, Ulimit,
};
