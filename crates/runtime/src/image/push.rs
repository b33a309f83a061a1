//! `image push`: a local image's blobs and an OCI manifest for them to a
//! registry, under the reference it is tagged with. Blobs the repository
//! already holds are not sent again; the registry learns the manifest
//! last, so a push that fails half-way names nothing.

use std::sync::Arc;

use super::digest::Digest;
use super::error::{ImageError, Result};
use super::index::blob_rel_path;
use super::reference::Reference;
use super::registry::{RegistryAuth, RegistryClient};
use super::store::ImageStore;
use super::unpack::{detect_compression, Compression};

const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";

/// What a push left in the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    pub reference: Reference,
    /// The manifest's digest: `name@digest` pulls exactly this image.
    pub digest: Digest,
    /// The manifest's size in bytes.
    pub size: u64,
}

/// One blob's fate: its short id and whether the registry had it already.
pub type LayerPushed = dyn Fn(&str, bool) + Send + Sync;

impl ImageStore {
    /// Pushes the image tagged `name` (NAME[:TAG], `latest` by default).
    pub async fn push(&self, name: &str, auth: &RegistryAuth, on_layer: &LayerPushed) -> Result<Pushed> {
        let reference = Reference::parse(name)?;
        if reference.digest().is_some() {
            return Err(ImageError::InvalidReference {
                reference: name.to_string(),
                reason: "a push names the tag to write, not a digest; give NAME[:TAG]".into(),
            });
        }
        let untagged = || ImageError::InvalidReference {
            reference: name.to_string(),
            reason: "no local image has this name; tag one first (`shoal image tag SOURCE NAME:TAG`)".into(),
        };
        let record = match self.record_of(name).await {
            Ok((record, Some(_))) => record,
            _ => return Err(untagged()),
        };
        let client = RegistryClient::new(reference.registry(), auth, self.insecure_registries());
        client.authenticate_push(&reference).await?;

        let config_digest = record.id.digest().clone();
        let mut layers = Vec::new();
        for blob in &record.layer_blobs {
            layers.push(serde_json::json!({
                "mediaType": layer_media_type(&self.root().join(blob_rel_path(blob)))?,
                "digest": blob.to_string(),
                "size": self.blob_size(blob)?,
            }));
        }
        let config_size = self.blob_size(&config_digest)?;
        // Layers first, the configuration last, then the manifest naming them.
        for blob in record.layer_blobs.iter().chain(std::iter::once(&config_digest)) {
            let existed = client.has_blob(&reference, blob).await?;
            if !existed {
                let path = self.root().join(blob_rel_path(blob));
                client.push_blob(&reference, blob, &path, Arc::new(|_| {})).await?;
            }
            if blob != &config_digest {
                on_layer(blob.short(), existed);
            }
        }
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": { "mediaType": CONFIG_TYPE, "digest": config_digest.to_string(), "size": config_size },
            "layers": layers,
        });
        let bytes = serde_json::to_vec(&manifest).map_err(|e| ImageError::io("cannot write the manifest", std::io::Error::other(e)))?;
        let digest = Digest::of_bytes(&bytes);
        let size = bytes.len() as u64;
        client.push_manifest(&reference, bytes, MANIFEST_TYPE).await?;
        // As docker does, the image now answers to its name@digest too.
        let mut index = self.inner_index().lock().await;
        if let Some(image) = index.images.get_mut(&record.id) {
            let pinned = reference.digested_name(&digest);
            if !image.repo_digests.contains(&pinned) {
                image.repo_digests.push(pinned);
            }
        }
        index.save(self.root()).await?;
        Ok(Pushed { reference, digest, size })
    }

    fn blob_size(&self, digest: &Digest) -> Result<u64> {
        let path = self.root().join(blob_rel_path(digest));
        std::fs::metadata(&path).map(|m| m.len()).map_err(|e| ImageError::io(format!("cannot read blob {}", path.display()), e))
    }
}

/// The OCI media type of the layer blob at `path`, by its first bytes.
fn layer_media_type(path: &std::path::Path) -> Result<&'static str> {
    use std::io::Read;
    let mut head = [0u8; 4];
    let read = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .map_err(|e| ImageError::io(format!("cannot read blob {}", path.display()), e))?;
    Ok(match detect_compression(&head[..read]) {
        Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
        Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        Compression::None => "application/vnd.oci.image.layer.v1.tar",
    })
}

impl ImageStore {
    /// Checks credentials against a registry (`shoal login`), with the
    /// store's rules for which registries speak plain HTTP.
    pub async fn verify_login(&self, registry: &str, auth: &RegistryAuth) -> Result<()> {
        super::registry::verify_login(registry, auth, self.insecure_registries()).await
    }
}
