//! Pinning a service's image to a digest at create/update time, so every
//! node runs the same bytes even if the tag moves later.
//!
//! Asking a registry is the runtime's job (it knows the registries' TLS
//! and auth settings); the daemon hands its resolver to the manager.

use std::future::Future;
use std::pin::Pin;

use crate::store::{Platform, RegistryLogin};

pub type PinFuture<'a> = Pin<Box<dyn Future<Output = Result<PinnedImage, String>> + Send + 'a>>;

/// What the registry said of an image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedImage {
    /// `docker.io/library/busybox:latest@sha256:...`
    pub reference: String,
    /// The platforms the image (or each image of its index) is built for.
    pub platforms: Vec<Platform>,
}

pub trait ImagePinner: Send + Sync {
    /// Pins `reference` to the digest its registry serves now (a reference
    /// with a digest keeps it) and learns its platforms; the error is one
    /// sentence from the registry side. `login`: the service's
    /// `--with-registry-auth` credentials, if any.
    fn pin<'a>(&'a self, reference: &'a str, login: Option<&'a RegistryLogin>) -> PinFuture<'a>;
}
