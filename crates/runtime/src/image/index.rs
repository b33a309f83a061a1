//! The persisted image index: which images exist, their names and the
//! blobs and layers they hold on to. Written atomically (temp file, fsync,
//! rename) so a crash leaves either the old or the new index.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::digest::{Digest, ImageId};
use super::error::{ImageError, Result};
use super::model::{Image, ImageConfig};

const FILE_NAME: &str = "images.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageRecord {
    pub id: ImageId,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    /// Manifests (and indexes) kept as blobs; empty for `docker save` loads.
    pub manifest_blobs: Vec<Digest>,
    pub layer_blobs: Vec<Digest>,
    pub diff_ids: Vec<Digest>,
    pub config: ImageConfig,
    pub created: Option<String>,
    pub os: String,
    pub architecture: String,
}

impl ImageRecord {
    /// Store-relative paths of everything this image keeps alive.
    pub fn owned_paths(&self) -> impl Iterator<Item = String> + '_ {
        let blobs = self
            .manifest_blobs
            .iter()
            .chain(&self.layer_blobs)
            .chain(std::iter::once(self.id.digest()));
        blobs
            .map(blob_rel_path)
            .chain(self.diff_ids.iter().map(layer_rel_path))
    }
}

pub fn blob_rel_path(digest: &Digest) -> String {
    format!("blobs/sha256/{}", digest.hex())
}

pub fn layer_rel_path(diff_id: &Digest) -> String {
    format!("layers/sha256/{}", diff_id.hex())
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Index {
    pub images: BTreeMap<ImageId, ImageRecord>,
    /// Uncompressed size of each unpacked layer, by diff id.
    pub layer_sizes: BTreeMap<Digest, u64>,
}

impl Index {
    pub async fn load(root: &Path) -> Result<Self> {
        let path = root.join(FILE_NAME);
        match tokio::fs::read(&path).await {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                ImageError::io(
                    format!("the image index {} is damaged", path.display()),
                    e.into(),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(ImageError::io(
                format!("cannot read the image index {}", path.display()),
                e,
            )),
        }
    }

    pub async fn save(&self, root: &Path) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(self)
            .map_err(|e| ImageError::io("cannot encode the image index", e.into()))?;
        let root = root.to_path_buf();
        tokio::task::spawn_blocking(move || write_atomically(&root, &bytes))
            .await
            .map_err(|e| ImageError::io("cannot save the image index", std::io::Error::other(e)))?
    }

    pub fn image(&self, root: &Path, record: &ImageRecord) -> Image {
        Image {
            id: record.id.clone(),
            repo_tags: record.repo_tags.clone(),
            repo_digests: record.repo_digests.clone(),
            config: record.config.clone(),
            layers: record
                .diff_ids
                .iter()
                .map(|d| root.join(layer_rel_path(d)))
                .collect(),
            diff_ids: record.diff_ids.clone(),
            size: record
                .diff_ids
                .iter()
                .filter_map(|d| self.layer_sizes.get(d))
                .sum(),
            created: record.created.clone(),
            os: record.os.clone(),
            architecture: record.architecture.clone(),
        }
    }

    /// Store-relative paths of every blob and layer some image still uses.
    pub fn referenced_paths(&self) -> BTreeSet<String> {
        self.images
            .values()
            .flat_map(ImageRecord::owned_paths)
            .collect()
    }

    /// Removes `tag` from whichever image carries it (a re-pull moves a tag).
    pub fn untag_everywhere(&mut self, tag: &str) {
        for record in self.images.values_mut() {
            record.repo_tags.retain(|t| t != tag);
        }
    }
}

fn write_atomically(root: &Path, bytes: &[u8]) -> Result<()> {
    let path: PathBuf = root.join(FILE_NAME);
    let context = || format!("cannot save the image index {}", path.display());
    let mut temp =
        tempfile::NamedTempFile::new_in(root).map_err(|e| ImageError::io(context(), e))?;
    temp.write_all(bytes)
        .map_err(|e| ImageError::io(context(), e))?;
    temp.as_file()
        .sync_all()
        .map_err(|e| ImageError::io(context(), e))?;
    temp.persist(&path)
        .map_err(|e| ImageError::io(context(), e.error))?;
    // The rename is durable only once the directory entry is.
    std::fs::File::open(root)
        .and_then(|dir| dir.sync_all())
        .map_err(|e| ImageError::io(context(), e))
}
