//! The local container runtime (OCI images, namespaces, cgroups, shims). Built under issue 3; nothing here yet.

pub mod image;
#[cfg(feature = "test-support")]
pub mod testing;
