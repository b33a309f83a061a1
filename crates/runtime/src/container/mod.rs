//! Containers: OCI spec from image + request, overlayfs root, a shim per
//! container (see [`crate::shim`]) running it through youki's
//! libcontainer, logs, and re-attaching after a daemon restart.

mod error;
pub mod logs;
mod manager;
pub mod model;
mod rootfs;
mod spec;
pub mod state;

pub use error::ContainerError;
pub use manager::{parse_signal, ContainerManager, ContainerSummary, ImageInput, ManagerConfig};
pub use model::{ContainerDetails, ContainerRecord, CreateRequest, ExitInfo, Limits, MountSpec, Status};
