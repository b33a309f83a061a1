//! The image side's errors. Each message is one sentence naming the bad
//! value, so the CLI can print it as is.

use std::path::PathBuf;
use std::sync::Arc;

use super::digest::{Digest, ImageId};
use super::unpack::UnpackError;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("invalid image reference \"{reference}\": {reason}")]
    InvalidReference { reference: String, reason: String },

    #[error("cannot reach registry {registry}: {reason}")]
    RegistryUnreachable { registry: String, reason: String },

    #[error("registry {registry} refused access to {image}: {reason}; check the credentials")]
    AuthRefused {
        registry: String,
        image: String,
        reason: String,
    },

    #[error("registry {registry} refused the login: {reason}; check the username and password")]
    LoginRefused { registry: String, reason: String },
    #[error("image {image} not found in registry {registry}")]
    NotFound { image: String, registry: String },

    #[error("image {image} has no linux/amd64 variant (it has: {available})")]
    NoMatchingPlatform { image: String, available: String },

    #[error("registry {registry} failed while serving {image}: {reason}")]
    Registry {
        registry: String,
        image: String,
        reason: String,
    },

    #[error("{what} does not match its digest {expected} (got {actual}), so it was discarded")]
    DigestMismatch {
        what: String,
        expected: Digest,
        actual: Digest,
    },

    #[error("image {image} has an unusable manifest: {reason}")]
    InvalidManifest { image: String, reason: String },

    #[error("cannot unpack layer {layer}: {source}")]
    Unpack { layer: String, source: UnpackError },

    #[error("no such image: {0}")]
    NoSuchImage(String),

    #[error("image id prefix \"{0}\" matches more than one image; give more digits")]
    AmbiguousId(String),

    #[error("image {image} is in use by a container; remove the container first or use --force")]
    InUse { image: String },

    #[error(
        "image {id} is tagged in several repositories ({tags}); remove it by name or use --force"
    )]
    MultipleTags { id: ImageId, tags: String },

    #[error("cannot load {path}: {reason}")]
    InvalidArchive { path: PathBuf, reason: String },

    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },

    /// The outcome of a download shared by several concurrent pulls.
    #[error(transparent)]
    Shared(Arc<ImageError>),
}

impl ImageError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    /// The error itself, looking through one shared by concurrent pulls.
    pub fn root(&self) -> &ImageError {
        match self {
            Self::Shared(inner) => inner.root(),
            other => other,
        }
    }
}

pub type Result<T, E = ImageError> = std::result::Result<T, E>;
