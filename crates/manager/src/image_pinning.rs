//! Pinning a service's image to a digest at create/update time, so every
//! node runs the same bytes even if the tag moves later.
//!
//! Asking a registry is the runtime's job (it knows the registries' TLS
//! and auth settings); the daemon hands its resolver to the manager.

use std::future::Future;
use std::pin::Pin;

pub type PinFuture<'a> = Pin<Box<dyn Future<Output = Result<String, String>> + Send + 'a>>;

pub trait ImagePinner: Send + Sync {
    /// `busybox` -> `docker.io/library/busybox:latest@sha256:...`; the
    /// error is one sentence from the registry side.
    fn pin<'a>(&'a self, reference: &'a str) -> PinFuture<'a>;
}
