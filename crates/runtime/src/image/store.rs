//! The content-addressed image store.
//!
//! Layout under the root the daemon gives (`<data-root>/image`):
//!
//! ```text
//! blobs/sha256/<hex>     manifests, configs and layer tarballs, verified
//! layers/sha256/<hex>/   each layer unpacked once, keyed by its diff id,
//!                        shared read-only by every container as a lowerdir
//! images.json            the index: images, their names, what they use
//! tmp/                   downloads and unpacks in progress (same
//!                        filesystem, so finishing is one rename)
//! ```
//!
//! Nothing enters `blobs/` or `layers/` before it has been checked against
//! its digest. Garbage collection and pulls coordinate through pins: a pull
//! pins every path it is about to use before looking at the disk, and the
//! collector skips pinned paths while holding the pin table, so it can never
//! delete something a pull has just decided to reuse.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use oci_spec::image::{ImageConfiguration, ImageManifest};
use serde::{Deserialize, Serialize};

use super::archive;
use super::digest::{is_sha256_hex, Digest, ImageId};
use super::error::{ImageError, Result};
use super::index::{blob_rel_path, layer_rel_path, ImageRecord, Index};
use super::manifest::{
    descriptor_digest, index_platforms, is_layer_media_type, parse_manifest, select_platform, ImagePlatform,
    Manifest,
};
use super::model::{Image, ImageConfig};
use super::progress::{LayerStatus, ProgressSink, PullProgress};
use super::reference::Reference;
use super::registry::{RegistryAuth, RegistryClient};
use super::transfers::{follow, Reporter, Transfers};
use super::unpack::unpack_layer;

/// What `remove` and `prune` did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removed {
    pub untagged: Vec<String>,
    pub deleted: Vec<ImageId>,
    pub reclaimed_bytes: u64,
}

/// An image reference pinned by [`ImageStore::pin_reference`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedImage {
    pub reference: String,
    pub platforms: Vec<ImagePlatform>,
}

/// Image configurations are a few KiB; this bounds what pinning reads.
const MAX_CONFIG_BYTES: u64 = 4 << 20;

/// Local images: pull, load, look up, remove, prune. Cheap to clone.
#[derive(Clone)]
pub struct ImageStore {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    insecure_registries: Vec<String>,
    index: tokio::sync::Mutex<Index>,
    pins: Arc<Mutex<HashMap<String, usize>>>,
    transfers: Transfers,
}

/// Where a layer's blob comes from when it is not on disk yet.
#[derive(Clone)]
pub(super) struct BlobSource {
    client: Arc<RegistryClient>,
    reference: Reference,
}

/// A layer to make present: its blob and what it must unpack to.
pub(super) struct LayerSpec {
    pub blob: Digest,
    pub size: u64,
    pub diff_id: Digest,
}

impl ImageStore {
    /// Opens (creating if needed) the store under `root`. `insecure_registries`
    /// are `HOST[:PORT]` names spoken to over plain HTTP; loopback always is.
    pub async fn open(root: impl Into<PathBuf>, insecure_registries: Vec<String>) -> Result<Self> {
        let root = root.into();
        let prepared = root.clone();
        tokio::task::spawn_blocking(move || prepare_root(&prepared))
            .await
            .map_err(|e| ImageError::io("cannot prepare the image store", io::Error::other(e)))??;
        let index = Index::load(&root).await?;
        Ok(Self {
            inner: Arc::new(Inner {
                root,
                insecure_registries,
                index: tokio::sync::Mutex::new(index),
                pins: Arc::default(),
                transfers: Transfers::default(),
            }),
        })
    }

    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    pub(super) fn insecure_registries(&self) -> &[String] {
        &self.inner.insecure_registries
    }

    /// The record of the image `name` names, and the tag it matched by
    /// (None when named by id or digest).
    pub(super) async fn record_of(&self, name: &str) -> Result<(ImageRecord, Option<String>)> {
        let index = self.inner.index.lock().await;
        let found = find(&index, name)?;
        Ok((index.images[&found.id].clone(), found.tag))
    }

    pub(super) fn inner_index(&self) -> &tokio::sync::Mutex<Index> {
        &self.inner.index
    }

    /// The reference pinned to the digest its registry serves now
    /// (`name:tag@sha256:...`, the index's digest for multi-platform
    /// images, as docker pins services; a reference with a digest keeps
    /// it), and the platforms it is built for. Downloads the manifest, and
    /// the configuration of a single-platform image.
    pub async fn pin_reference(&self, reference: &Reference, auth: &RegistryAuth) -> Result<PinnedImage> {
        let client = RegistryClient::new(reference.registry(), auth, &self.inner.insecure_registries);
        client.authenticate(reference).await?;
        let (bytes, digest) = client.fetch_manifest(reference).await?;
        let invalid = |reason: String| ImageError::InvalidManifest { image: reference.familiar(), reason };
        let platforms = match parse_manifest(&bytes).map_err(invalid)? {
            Manifest::Index(index) => index_platforms(&index),
            Manifest::Image(manifest) => {
                let config_digest = descriptor_digest(manifest.config()).map_err(invalid)?;
                let config = client.fetch_small_blob(reference, &config_digest, MAX_CONFIG_BYTES).await?;
                let config: ImageConfiguration = serde_json::from_slice(&config)
                    .map_err(|e| invalid(format!("its configuration is not valid ({e})")))?;
                vec![ImagePlatform { os: config.os().to_string(), architecture: config.architecture().to_string() }]
            }
        };
        let reference = match reference.digest() {
            Some(_) => reference.to_string(),
            None => format!("{reference}@{digest}"),
        };
        Ok(PinnedImage { reference, platforms })
    }

    /// Pulls `reference` (the linux/amd64 image when it names an index),
    /// reporting per-layer progress to `progress`.
    pub async fn pull(
        &self,
        reference: &Reference,
        auth: &RegistryAuth,
        progress: &dyn ProgressSink,
    ) -> Result<Image> {
        let result = self.pull_inner(reference, auth, progress).await;
        let outcome = if result.is_ok() { "ok" } else { "error" };
        if let Ok(image) = &result {
            crate::events::emit(crate::events::Subject::Image, "pull", &image.id.to_string(), &reference.familiar(), &[]);
        }
        crate::metrics::metrics().image_pulls.get_or_create(&crate::metrics::ResultLabel { result: outcome }).inc();
        if result.is_err() {
            // Leave nothing from a failed pull behind (other pulls' content is pinned).
            if let Err(e) = self.collect_garbage().await {
                tracing::warn!(error = %e, "cleaning up after a failed pull");
            }
        }
        result
    }

    async fn pull_inner(
        &self,
        reference: &Reference,
        auth: &RegistryAuth,
        progress: &dyn ProgressSink,
    ) -> Result<Image> {
        let client = Arc::new(RegistryClient::new(
            reference.registry(),
            auth,
            &self.inner.insecure_registries,
        ));
        client.authenticate(reference).await?;
        let invalid = |reason: String| ImageError::InvalidManifest {
            image: reference.familiar(),
            reason,
        };

        let (top_bytes, top_digest) = client.fetch_manifest(reference).await?;
        let mut manifests = vec![(top_digest.clone(), top_bytes.clone())];
        let manifest: ImageManifest = match parse_manifest(&top_bytes).map_err(invalid)? {
            Manifest::Image(manifest) => *manifest,
            Manifest::Index(index) => {
                let entry = select_platform(&index).map_err(|available| {
                    ImageError::NoMatchingPlatform {
                        image: reference.familiar(),
                        available,
                    }
                })?;
                let child = descriptor_digest(entry).map_err(invalid)?;
                let (bytes, digest) = client.fetch_manifest(&reference.at_digest(child)).await?;
                manifests.push((digest, bytes.clone()));
                match parse_manifest(&bytes).map_err(invalid)? {
                    Manifest::Image(manifest) => *manifest,
                    Manifest::Index(_) => {
                        return Err(invalid("an index nests another index".into()))
                    }
                }
            }
        };

        let config_digest = descriptor_digest(manifest.config()).map_err(invalid)?;
        let mut layer_blobs = Vec::new();
        for layer in manifest.layers() {
            let media_type = layer.media_type().to_string();
            if !is_layer_media_type(&media_type) {
                return Err(invalid(format!(
                    "layer media type {media_type} is not a filesystem layer"
                )));
            }
            layer_blobs.push((descriptor_digest(layer).map_err(invalid)?, layer.size()));
        }

        let mut pinned: Vec<String> = manifests.iter().map(|(d, _)| blob_rel_path(d)).collect();
        pinned.push(blob_rel_path(&config_digest));
        pinned.extend(layer_blobs.iter().map(|(d, _)| blob_rel_path(d)));
        let _pins = self.pin(pinned);

        for (digest, bytes) in &manifests {
            self.write_blob(digest, bytes).await?;
        }
        let source = BlobSource {
            client,
            reference: reference.clone(),
        };
        let config_size = manifest.config().size();
        self.ensure_blob(&source, &config_digest, config_size)
            .await?;
        let config_bytes = self.read_blob(&config_digest).await?;
        let config: ImageConfiguration = serde_json::from_slice(&config_bytes)
            .map_err(|e| invalid(format!("its configuration is not valid ({e})")))?;
        let diff_ids = diff_ids(&config).map_err(invalid)?;
        if diff_ids.len() != layer_blobs.len() {
            return Err(invalid(format!(
                "it lists {} layers but its configuration {} diff ids",
                layer_blobs.len(),
                diff_ids.len()
            )));
        }
        let _layer_pins = self.pin(diff_ids.iter().map(layer_rel_path).collect());

        let layers: Vec<LayerSpec> = layer_blobs
            .iter()
            .zip(&diff_ids)
            .map(|((blob, size), diff_id)| LayerSpec {
                blob: blob.clone(),
                size: *size,
                diff_id: diff_id.clone(),
            })
            .collect();
        let results = futures::future::join_all(
            layers
                .iter()
                .map(|l| self.ensure_layer(Some(&source), l, progress)),
        )
        .await;
        results.into_iter().collect::<Result<Vec<()>>>()?;

        let record = ImageRecord {
            id: ImageId(config_digest),
            repo_tags: Vec::new(),
            repo_digests: vec![reference.digested_name(&top_digest)],
            manifest_blobs: manifests.into_iter().map(|(d, _)| d).collect(),
            layer_blobs: layer_blobs.into_iter().map(|(d, _)| d).collect(),
            diff_ids,
            config: ImageConfig::from_oci(&config, &config_bytes),
            created: config.created().clone(),
            os: config.os().to_string(),
            architecture: config.architecture().to_string(),
        };
        // Pulling by digest names no tag, as in docker.
        let tag = if reference.digest().is_some() {
            None
        } else {
            reference.tagged_name()
        };
        self.register(record, tag.into_iter().collect()).await
    }

    /// Loads images from an OCI image-layout archive or a `docker save`
    /// tarball, verifying every blob and layer. Returns the loaded images.
    pub async fn load(&self, archive_path: &Path) -> Result<Vec<Image>> {
        let work = self.temp_dir("load-")?;
        let result = self.load_inner(archive_path, work.path()).await;
        let cleanup = work.path().to_path_buf();
        drop(tokio::task::spawn_blocking(move || drop(work)).await);
        if result.is_err() {
            if let Err(e) = self.collect_garbage().await {
                tracing::warn!(error = %e, path = %cleanup.display(), "cleaning up after a failed load");
            }
        }
        result
    }

    async fn load_inner(&self, archive_path: &Path, work: &Path) -> Result<Vec<Image>> {
        let (path, dir) = (archive_path.to_path_buf(), work.to_path_buf());
        let entries = tokio::task::spawn_blocking(move || archive::read_archive(&path, &dir))
            .await
            .map_err(|e| ImageError::io("cannot read the archive", io::Error::other(e)))??;
        let bad = |reason: String| ImageError::InvalidArchive {
            path: archive_path.to_path_buf(),
            reason,
        };

        let mut loaded = Vec::new();
        for entry in entries {
            let mut pins = Vec::new();
            let mut manifest_blobs = Vec::new();
            for (expected, file) in &entry.manifests {
                let (digest, pin) = self.import_blob(file, Some(expected)).await?;
                manifest_blobs.push(digest);
                pins.push(pin);
            }
            let (config_digest, pin) = self
                .import_blob(&entry.config, entry.config_digest.as_ref())
                .await?;
            pins.push(pin);
            let config_bytes = self.read_blob(&config_digest).await?;
            let config: ImageConfiguration =
                serde_json::from_slice(&config_bytes).map_err(|e| {
                    bad(format!(
                        "the configuration {config_digest} is not valid ({e})"
                    ))
                })?;
            let diff_ids = diff_ids(&config).map_err(&bad)?;
            if diff_ids.len() != entry.layers.len() {
                return Err(bad(format!(
                    "image {} lists {} layers but its configuration {} diff ids",
                    config_digest.short(),
                    entry.layers.len(),
                    diff_ids.len()
                )));
            }
            pins.push(self.pin(diff_ids.iter().map(layer_rel_path).collect()));
            let mut layers = Vec::new();
            for ((expected, file), diff_id) in entry.layers.iter().zip(&diff_ids) {
                let (blob, pin) = self.import_blob(file, expected.as_ref()).await?;
                pins.push(pin);
                let size = fs::metadata(file).map(|m| m.len()).unwrap_or(0);
                layers.push(LayerSpec {
                    blob,
                    size,
                    diff_id: diff_id.clone(),
                });
            }
            for layer in &layers {
                self.ensure_layer(None, layer, &super::progress::ignore_progress)
                    .await?;
            }
            let record = ImageRecord {
                id: ImageId(config_digest),
                repo_tags: Vec::new(),
                repo_digests: Vec::new(),
                manifest_blobs,
                layer_blobs: layers.into_iter().map(|l| l.blob).collect(),
                diff_ids,
                config: ImageConfig::from_oci(&config, &config_bytes),
                created: config.created().clone(),
                os: config.os().to_string(),
                architecture: config.architecture().to_string(),
            };
            loaded.push(self.register(record, entry.tags).await?);
            drop(pins);
        }
        Ok(loaded)
    }

    /// Finds an image by name (`busybox` = `docker.io/library/busybox:latest`),
    /// by `name@digest`, by id, or by a unique id prefix of at least 4 digits.
    pub async fn get(&self, name_or_id: &str) -> Option<Image> {
        self.resolve(name_or_id).await.ok()
    }

    /// Like [`get`](Self::get), but says why nothing matched.
    pub async fn resolve(&self, name_or_id: &str) -> Result<Image> {
        let index = self.inner.index.lock().await;
        let found = find(&index, name_or_id)?;
        Ok(index.image(&self.inner.root, &index.images[&found.id]))
    }

    pub async fn list(&self) -> Vec<Image> {
        let index = self.inner.index.lock().await;
        let mut images: Vec<Image> = index
            .images
            .values()
            .map(|r| index.image(&self.inner.root, r))
            .collect();
        images.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.id.cmp(&b.id)));
        images
    }

    /// Adds the tag `target` to the image `source` names (`docker tag`).
    pub async fn tag(&self, source: &str, target: &Reference) -> Result<Image> {
        let Some(tag) = target.tagged_name() else {
            return Err(ImageError::InvalidReference {
                reference: target.to_string(),
                reason: "a tag cannot contain a digest; give NAME:TAG".into(),
            });
        };
        let mut index = self.inner.index.lock().await;
        let id = find(&index, source)?.id;
        index.untag_everywhere(&tag);
        if let Some(record) = index.images.get_mut(&id) {
            record.repo_tags.push(tag);
        }
        index.save(&self.inner.root).await?;
        Ok(index.image(&self.inner.root, &index.images[&id]))
    }

    /// `docker rmi`: removing one of several tags only untags; removing the
    /// last name (or the id) deletes the image and whatever blobs and layers
    /// no other image uses. An image a container uses (as `in_use` says) is
    /// kept unless `force`, and even then only loses its names.
    pub async fn remove(
        &self,
        name_or_id: &str,
        force: bool,
        in_use: &(dyn Fn(&ImageId) -> bool + Sync),
    ) -> Result<Removed> {
        let mut index = self.inner.index.lock().await;
        let found = find(&index, name_or_id)?;
        let record = index
            .images
            .get_mut(&found.id)
            .ok_or_else(|| ImageError::NoSuchImage(name_or_id.into()))?;
        let mut removed = Removed::default();

        if let Some(tag) = &found.tag {
            if record.repo_tags.len() > 1 {
                record.repo_tags.retain(|t| t != tag);
                removed.untagged.push(tag.clone());
                index.save(&self.inner.root).await?;
                return Ok(removed);
            }
        } else if record.repo_tags.len() > 1 && !force {
            return Err(ImageError::MultipleTags {
                id: found.id,
                tags: record.repo_tags.join(", "),
            });
        }
        if in_use(&found.id) {
            if !force {
                return Err(ImageError::InUse {
                    image: name_or_id.to_owned(),
                });
            }
            removed.untagged.append(&mut record.repo_tags);
            index.save(&self.inner.root).await?;
            return Ok(removed);
        }

        let record = index
            .images
            .remove(&found.id)
            .ok_or_else(|| ImageError::NoSuchImage(name_or_id.into()))?;
        removed.untagged = record.repo_tags;
        removed.untagged.extend(record.repo_digests);
        crate::events::emit(crate::events::Subject::Image, "delete", &found.id.to_string(), name_or_id, &[]);
        removed.deleted.push(found.id);
        index.save(&self.inner.root).await?;
        removed.reclaimed_bytes = self.collect_garbage_locked(&mut index).await?;
        Ok(removed)
    }

    /// `docker image prune`: deletes images without names (every image no
    /// container uses, with `all`), then blobs and layers no image uses.
    pub async fn prune(&self, all: bool, in_use: &(dyn Fn(&ImageId) -> bool + Sync)) -> Result<Removed> {
        let mut index = self.inner.index.lock().await;
        let doomed: Vec<ImageId> = index
            .images
            .values()
            .filter(|r| (all || r.repo_tags.is_empty()) && !in_use(&r.id))
            .map(|r| r.id.clone())
            .collect();
        let mut removed = Removed::default();
        for id in doomed {
            if let Some(record) = index.images.remove(&id) {
                removed.untagged.extend(record.repo_tags);
                removed.untagged.extend(record.repo_digests);
                removed.deleted.push(id);
            }
        }
        index.save(&self.inner.root).await?;
        removed.reclaimed_bytes = self.collect_garbage_locked(&mut index).await?;
        Ok(removed)
    }

    pub(super) async fn register(&self, record: ImageRecord, tags: Vec<String>) -> Result<Image> {
        let mut index = self.inner.index.lock().await;
        for tag in &tags {
            index.untag_everywhere(tag);
        }
        let id = record.id.clone();
        let entry = index
            .images
            .entry(id.clone())
            .or_insert_with(|| ImageRecord {
                repo_tags: Vec::new(),
                repo_digests: Vec::new(),
                manifest_blobs: Vec::new(),
                layer_blobs: Vec::new(),
                ..record.clone()
            });
        merge(&mut entry.repo_tags, tags);
        merge(&mut entry.repo_digests, record.repo_digests);
        merge(&mut entry.manifest_blobs, record.manifest_blobs);
        merge(&mut entry.layer_blobs, record.layer_blobs);
        index.save(&self.inner.root).await?;
        Ok(index.image(&self.inner.root, &index.images[&id]))
    }

    /// Makes a layer present: its blob downloaded (when `source` is given)
    /// and verified, and unpacked into its own directory. Concurrent callers
    /// for the same blob share the work.
    pub(super) async fn ensure_layer(
        &self,
        source: Option<&BlobSource>,
        layer: &LayerSpec,
        progress: &dyn ProgressSink,
    ) -> Result<()> {
        let store = self.clone();
        let source = source.cloned();
        let (blob, size, diff_id) = (layer.blob.clone(), layer.size, layer.diff_id.clone());
        let receiver = self.inner.transfers.join_or_start(
            &format!("layer:{blob}"),
            move |reporter| async move {
                store
                    .make_layer_present(source.as_ref(), &blob, size, &diff_id, &reporter)
                    .await
            },
        );
        let id = layer.blob.short().to_owned();
        let send = |status| {
            progress(PullProgress {
                layer: id.clone(),
                status,
            })
        };
        let already_present = follow(receiver, &send).await?;
        send(if already_present {
            LayerStatus::AlreadyExists
        } else {
            LayerStatus::Done
        });
        Ok(())
    }

    async fn make_layer_present(
        &self,
        source: Option<&BlobSource>,
        blob: &Digest,
        size: u64,
        diff_id: &Digest,
        reporter: &Reporter,
    ) -> Result<bool> {
        let layer_dir = self.inner.root.join(layer_rel_path(diff_id));
        let blob_path = self.inner.root.join(blob_rel_path(blob));
        let layer_present = exists(&layer_dir).await;
        if layer_present && exists(&blob_path).await {
            return Ok(true);
        }
        if !exists(&blob_path).await {
            let source = source.ok_or_else(|| {
                ImageError::io(
                    format!("blob {blob} is missing from the store"),
                    io::ErrorKind::NotFound.into(),
                )
            })?;
            let on_bytes = |current| {
                reporter.report(LayerStatus::Downloading {
                    current,
                    total: size,
                })
            };
            self.download_blob(source, blob, size, &on_bytes).await?;
            reporter.report(LayerStatus::Verifying);
        }
        if !layer_present {
            reporter.report(LayerStatus::Extracting);
            let unpacked_size = self.unpack(blob, diff_id).await?;
            self.inner
                .index
                .lock()
                .await
                .layer_sizes
                .insert(diff_id.clone(), unpacked_size);
        }
        Ok(false)
    }

    async fn unpack(&self, blob: &Digest, diff_id: &Digest) -> Result<u64> {
        let blob_path = self.inner.root.join(blob_rel_path(blob));
        let layer_dir = self.inner.root.join(layer_rel_path(diff_id));
        let temp = self.temp_dir("layer-")?;
        let layer_name = blob.short().to_owned();
        let (blob_copy, diff_copy) = (blob.clone(), diff_id.clone());
        tokio::task::spawn_blocking(move || {
            let summary =
                unpack_layer(&blob_path, temp.path()).map_err(|source| ImageError::Unpack {
                    layer: layer_name,
                    source,
                })?;
            if summary.diff_id != diff_copy {
                return Err(ImageError::DigestMismatch {
                    what: format!("the uncompressed content of layer {}", blob_copy.short()),
                    expected: diff_copy,
                    actual: summary.diff_id,
                });
            }
            // The layer root becomes the container's `/`.
            fs::set_permissions(temp.path(), fs::Permissions::from_mode(0o755))
                .map_err(|e| ImageError::io("cannot finish unpacking a layer", e))?;
            let temp_path = temp.keep();
            if let Err(e) = fs::rename(&temp_path, &layer_dir) {
                let _ = fs::remove_dir_all(&temp_path);
                // Another unpack of the same content (a differently compressed blob) won.
                if !layer_dir.is_dir() {
                    return Err(ImageError::io(
                        format!("cannot store layer {}", layer_dir.display()),
                        e,
                    ));
                }
            }
            Ok(summary.size)
        })
        .await
        .map_err(|e| ImageError::io("cannot unpack a layer", io::Error::other(e)))?
    }

    /// Makes a small blob (config) present, sharing the download like layers.
    async fn ensure_blob(&self, source: &BlobSource, digest: &Digest, size: u64) -> Result<()> {
        let store = self.clone();
        let source = source.clone();
        let blob = digest.clone();
        let receiver =
            self.inner
                .transfers
                .join_or_start(&format!("blob:{digest}"), move |_| async move {
                    if exists(&store.inner.root.join(blob_rel_path(&blob))).await {
                        return Ok(true);
                    }
                    store
                        .download_blob(&source, &blob, size, &|_| {})
                        .await
                        .map(|()| false)
                });
        follow(receiver, |_| {}).await.map(drop)
    }

    async fn download_blob(
        &self,
        source: &BlobSource,
        digest: &Digest,
        size: u64,
        on_bytes: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<()> {
        let temp = self.temp_file("blob-")?;
        source
            .client
            .fetch_blob(&source.reference, digest, size, &temp, on_bytes)
            .await?;
        crate::metrics::metrics().image_pull_bytes.inc_by(size);
        self.persist_blob(temp, digest)
    }

    /// Copies a file into the store under its digest, checking it against
    /// `expected` when known. Returns the digest and a pin keeping it.
    pub(super) async fn import_blob(
        &self,
        file: &Path,
        expected: Option<&Digest>,
    ) -> Result<(Digest, PinGuard)> {
        let temp = self.temp_file("import-")?;
        let (source, dest) = (file.to_path_buf(), temp.to_path_buf());
        let (actual, _) = tokio::task::spawn_blocking(move || -> io::Result<_> {
            let mut out = fs::File::create(&dest)?;
            let result = super::digest::copy_hashing(fs::File::open(&source)?, &mut out)?;
            out.sync_all()?;
            Ok(result)
        })
        .await
        .map_err(|e| ImageError::io("cannot import a blob", io::Error::other(e)))?
        .map_err(|e| ImageError::io(format!("cannot import {}", file.display()), e))?;
        if let Some(expected) = expected {
            if &actual != expected {
                return Err(ImageError::DigestMismatch {
                    what: format!(
                        "archive member {}",
                        file.file_name().unwrap_or_default().to_string_lossy()
                    ),
                    expected: expected.clone(),
                    actual,
                });
            }
        }
        let pin = self.pin(vec![blob_rel_path(&actual)]);
        self.persist_blob(temp, &actual)?;
        Ok((actual, pin))
    }

    async fn write_blob(&self, digest: &Digest, bytes: &[u8]) -> Result<()> {
        if exists(&self.inner.root.join(blob_rel_path(digest))).await {
            return Ok(());
        }
        let temp = self.temp_file("blob-")?;
        tokio::fs::write(&temp, bytes)
            .await
            .map_err(|e| ImageError::io(format!("cannot write {}", temp.display()), e))?;
        self.persist_blob(temp, digest)
    }

    fn persist_blob(&self, temp: tempfile::TempPath, digest: &Digest) -> Result<()> {
        let dest = self.inner.root.join(blob_rel_path(digest));
        temp.persist(&dest)
            .map_err(|e| ImageError::io(format!("cannot store blob {}", dest.display()), e.error))
    }

    pub(super) async fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let path = self.inner.root.join(blob_rel_path(digest));
        tokio::fs::read(&path)
            .await
            .map_err(|e| ImageError::io(format!("cannot read {}", path.display()), e))
    }

    fn temp_file(&self, prefix: &str) -> Result<tempfile::TempPath> {
        tempfile::Builder::new()
            .prefix(prefix)
            .tempfile_in(self.inner.root.join("tmp"))
            .map(tempfile::NamedTempFile::into_temp_path)
            .map_err(|e| ImageError::io("cannot create a temporary file in the image store", e))
    }

    pub(super) fn temp_dir(&self, prefix: &str) -> Result<tempfile::TempDir> {
        tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(self.inner.root.join("tmp"))
            .map_err(|e| {
                ImageError::io("cannot create a temporary directory in the image store", e)
            })
    }

    pub(super) fn pin(&self, paths: Vec<String>) -> PinGuard {
        let mut pins = self
            .inner
            .pins
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for path in &paths {
            *pins.entry(path.clone()).or_default() += 1;
        }
        PinGuard {
            pins: self.inner.pins.clone(),
            paths,
        }
    }

    async fn collect_garbage(&self) -> Result<u64> {
        let mut index = self.inner.index.lock().await;
        self.collect_garbage_locked(&mut index).await
    }

    /// Deletes every blob and layer that no image references and no
    /// operation has pinned. Returns the bytes freed.
    async fn collect_garbage_locked(&self, index: &mut Index) -> Result<u64> {
        let referenced = index.referenced_paths();
        let live_layers: BTreeSet<Digest> = index
            .images
            .values()
            .flat_map(|r| r.diff_ids.clone())
            .collect();
        let root = self.inner.root.clone();
        let pins = self.inner.pins.clone();
        let trash = self.temp_dir("trash-")?;
        let freed = tokio::task::spawn_blocking(move || -> io::Result<u64> {
            {
                // Renames only, under the pin lock: fast, and atomic with respect to pins.
                let pins = pins.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                let mut n = 0;
                for kind in ["blobs/sha256", "layers/sha256"] {
                    for entry in fs::read_dir(root.join(kind))? {
                        let entry = entry?;
                        let rel = format!("{kind}/{}", entry.file_name().to_string_lossy());
                        if !referenced.contains(&rel) && !pins.contains_key(&rel) {
                            fs::rename(entry.path(), trash.path().join(n.to_string()))?;
                            n += 1;
                        }
                    }
                }
            }
            let freed = disk_usage(trash.path());
            trash.close()?;
            Ok(freed)
        })
        .await
        .map_err(|e| ImageError::io("cannot clean the image store", io::Error::other(e)))?
        .map_err(|e| ImageError::io("cannot clean the image store", e))?;
        let pinned = self
            .inner
            .pins
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        index.layer_sizes.retain(|diff_id, _| {
            live_layers.contains(diff_id) || pinned.contains_key(&layer_rel_path(diff_id))
        });
        Ok(freed)
    }
}

/// Appends the items of `from` that `into` lacks, keeping order.
fn merge<T: PartialEq>(into: &mut Vec<T>, from: Vec<T>) {
    for item in from {
        if !into.contains(&item) {
            into.push(item);
        }
    }
}

pub(super) struct PinGuard {
    pins: Arc<Mutex<HashMap<String, usize>>>,
    paths: Vec<String>,
}

impl Drop for PinGuard {
    fn drop(&mut self) {
        let mut pins = self
            .pins
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for path in &self.paths {
            if let Some(count) = pins.get_mut(path) {
                *count -= 1;
                if *count == 0 {
                    pins.remove(path);
                }
            }
        }
    }
}

pub(super) struct Found {
    pub(super) id: ImageId,
    /// The tag the name matched, when it matched by tag.
    pub(super) tag: Option<String>,
}

pub(super) fn find(index: &Index, name: &str) -> Result<Found> {
    let hex = name.strip_prefix("sha256:").unwrap_or(name);
    if is_sha256_hex(hex) {
        if let Some(id) = Digest::from_hex(hex).map(ImageId) {
            if index.images.contains_key(&id) {
                return Ok(Found { id, tag: None });
            }
        }
    }
    if let Ok(reference) = Reference::parse(name) {
        let hit = match reference.digest() {
            Some(digest) => {
                let wanted = reference.digested_name(digest);
                index
                    .images
                    .values()
                    .find(|r| r.repo_digests.contains(&wanted))
                    .map(|r| (r, None))
            }
            None => reference.tagged_name().and_then(|tag| {
                index
                    .images
                    .values()
                    .find(|r| r.repo_tags.contains(&tag))
                    .map(|r| (r, Some(tag)))
            }),
        };
        if let Some((record, tag)) = hit {
            return Ok(Found {
                id: record.id.clone(),
                tag,
            });
        }
    }
    if hex.len() >= 4
        && hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        let mut matches = index
            .images
            .keys()
            .filter(|id| id.digest().hex().starts_with(hex));
        if let Some(first) = matches.next() {
            if matches.next().is_some() {
                return Err(ImageError::AmbiguousId(name.to_owned()));
            }
            return Ok(Found {
                id: first.clone(),
                tag: None,
            });
        }
    }
    Err(ImageError::NoSuchImage(name.to_owned()))
}

fn diff_ids(config: &ImageConfiguration) -> std::result::Result<Vec<Digest>, String> {
    config
        .rootfs()
        .diff_ids()
        .iter()
        .map(|d| Digest::parse(d).ok_or_else(|| format!("diff id \"{d}\" is not a sha256 digest")))
        .collect()
}

fn prepare_root(root: &Path) -> Result<()> {
    for dir in ["blobs/sha256", "layers/sha256", "tmp"] {
        let path = root.join(dir);
        fs::create_dir_all(&path)
            .map_err(|e| ImageError::io(format!("cannot create {}", path.display()), e))?;
    }
    // Whatever a previous run left half-done is garbage now.
    let tmp = root.join("tmp");
    let entries = fs::read_dir(&tmp)
        .map_err(|e| ImageError::io(format!("cannot read {}", tmp.display()), e))?;
    for entry in entries.flatten() {
        let path = entry.path();
        let result = if path.is_dir() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        if let Err(e) = result {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove leftover temporary file");
        }
    }
    Ok(())
}

async fn exists(path: &Path) -> bool {
    tokio::fs::symlink_metadata(path).await.is_ok()
}

/// Bytes held by regular files under `path`, each inode counted once.
pub(super) fn disk_usage(path: &Path) -> u64 {
    let mut seen = HashSet::new();
    let mut total = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() && seen.insert((meta.dev(), meta.ino())) {
                total += meta.len();
            }
        }
    }
    total
}
