//! The local container runtime: OCI images (pull, store, unpack) and
//! containers (namespaces, cgroups, overlay root filesystems, shims, logs).

pub mod commit;
pub mod container;
pub mod disk_usage;
pub mod events;
pub mod image;
pub mod launcher;
pub mod metrics;
pub mod shim;
pub mod volume;
#[cfg(feature = "test-support")]
pub mod testing;
