//! What the store knows about an image, as handed to callers.

use std::collections::BTreeMap;
use std::path::PathBuf;

use oci_spec::image::ImageConfiguration;
use serde::{Deserialize, Serialize};

use super::digest::{Digest, ImageId};

/// An image in the local store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// The digest of the image's configuration, as in docker.
    pub id: ImageId,
    /// Normalised `registry/repository:tag` names pointing at this image.
    pub repo_tags: Vec<String>,
    /// `registry/repository@sha256:<manifest digest>` for each place it was pulled from.
    pub repo_digests: Vec<String>,
    pub config: ImageConfig,
    /// The unpacked layer directories, lowest first, for use as overlayfs
    /// lowerdirs (see [`Image::overlay_lowerdir`]).
    pub layers: Vec<PathBuf>,
    /// The uncompressed digests of the layers, lowest first.
    pub diff_ids: Vec<Digest>,
    /// Bytes of the uncompressed layers.
    pub size: u64,
    /// When the image was built (RFC 3339, from its configuration).
    pub created: Option<String>,
    pub os: String,
    pub architecture: String,
}

impl Image {
    /// The `lowerdir=` value for overlayfs, which lists the topmost layer first.
    pub fn overlay_lowerdir(&self) -> String {
        self.layers
            .iter()
            .rev()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    }
}

/// The parts of an image's configuration that shape a container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// `PORT/PROTO`, e.g. `80/tcp`.
    pub exposed_ports: Vec<String>,
    pub volumes: Vec<String>,
    pub stop_signal: Option<String>,
}

impl ImageConfig {
    pub fn from_oci(config: &ImageConfiguration) -> Self {
        let Some(c) = config.config() else {
            return Self::default();
        };
        let non_empty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
        Self {
            entrypoint: c.entrypoint().clone().unwrap_or_default(),
            cmd: c.cmd().clone().unwrap_or_default(),
            env: c.env().clone().unwrap_or_default(),
            working_dir: non_empty(c.working_dir()),
            user: non_empty(c.user()),
            labels: c.labels().clone().unwrap_or_default().into_iter().collect(),
            exposed_ports: c.exposed_ports().clone().unwrap_or_default(),
            volumes: c.volumes().clone().unwrap_or_default(),
            stop_signal: non_empty(c.stop_signal()),
        }
    }
}
