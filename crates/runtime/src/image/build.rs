//! Images made on this host rather than pulled: [`ImageStore::import`] of
//! a root filesystem tarball (`docker import`) and [`ImageStore::commit`]
//! of a container's changes over its image (`docker commit`). Both store
//! an uncompressed layer (its diff id is its own digest) and a
//! configuration, and register the image under the name given.

use std::fs;
use std::io;
use std::path::Path;

use oci_spec::image::ImageConfiguration;

use super::digest::ImageId;
use super::error::{ImageError, Result};
use super::index::{layer_rel_path, ImageRecord};
use super::model::{Image, ImageConfig};
use super::reference::Reference;
use super::store::{ImageStore, LayerSpec};

/// What a commit changes in the base image's configuration; `None` keeps
/// the base's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigPatch {
    pub cmd: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub env: Option<Vec<String>>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    /// Added to the base's labels.
    pub labels: Vec<(String, String)>,
    /// `PORT/PROTO`, added to the base's.
    pub exposed_ports: Vec<String>,
}

/// A commit: the layer of changes, what it is made over, and its record.
#[derive(Debug, Clone)]
pub struct CommitRequest {
    /// The image the container runs (name or id).
    pub base: String,
    /// The uncompressed layer of the container's changes.
    pub layer: std::path::PathBuf,
    pub reference: Option<Reference>,
    pub patch: ConfigPatch,
    pub author: Option<String>,
    pub message: Option<String>,
    /// The history entry's `created_by` (the container's command).
    pub created_by: String,
    pub container_id: String,
}

impl ImageStore {
    /// Makes a one-layer image from a root filesystem tarball, as `docker
    /// import` does: for hosts without a registry. `cmd` becomes the
    /// image's default command.
    pub async fn import(&self, rootfs_tar: &Path, reference: &Reference, cmd: Vec<String>) -> Result<Image> {
        let work = self.temp_dir("import-")?;
        let (layer, layer_pin) = self.import_blob(rootfs_tar, None).await?;
        // An uncompressed layer's diff id is its own digest.
        let diff_id = layer.clone();
        let _layer_pins = self.pin(vec![layer_rel_path(&diff_id)]);
        let config = serde_json::json!({
            "architecture": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
            "os": "linux",
            "created": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            "config": {
                "Cmd": cmd,
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            },
            "rootfs": { "type": "layers", "diff_ids": [diff_id.to_string()] },
            "history": [{ "created_by": "shoal image import" }],
        });
        let config_file = work.path().join("config.json");
        let config_bytes = serde_json::to_vec(&config).map_err(|e| ImageError::io("cannot write the image configuration", io::Error::other(e)))?;
        fs::write(&config_file, &config_bytes).map_err(|e| ImageError::io("cannot write the image configuration", e))?;
        let (config_digest, config_pin) = self.import_blob(&config_file, None).await?;
        let parsed: ImageConfiguration = serde_json::from_slice(&config_bytes)
            .map_err(|e| ImageError::io("cannot read back the image configuration", io::Error::other(e)))?;
        let size = fs::metadata(rootfs_tar).map(|m| m.len()).unwrap_or(0);
        let spec = LayerSpec { blob: layer.clone(), size, diff_id: diff_id.clone() };
        self.ensure_layer(None, &spec, &super::progress::ignore_progress).await?;
        let record = ImageRecord {
            id: ImageId(config_digest),
            repo_tags: Vec::new(),
            repo_digests: Vec::new(),
            manifest_blobs: Vec::new(),
            layer_blobs: vec![layer],
            diff_ids: vec![diff_id],
            config: ImageConfig::from_oci(&parsed, &config_bytes),
            created: parsed.created().clone(),
            os: parsed.os().to_string(),
            architecture: parsed.architecture().to_string(),
        };
        let tags = reference.tagged_name().into_iter().collect();
        let image = self.register(record, tags).await;
        drop((layer_pin, config_pin, work));
        image
    }

    /// Makes an image of `request.base` with one more layer on top.
    pub async fn commit(&self, request: CommitRequest) -> Result<Image> {
        let (base, _) = self.record_of(&request.base).await?;
        let mut config: serde_json::Value = serde_json::from_slice(&self.read_blob(base.id.digest()).await?)
            .map_err(|e| ImageError::io("cannot read the base image's configuration", io::Error::other(e)))?;
        let work = self.temp_dir("commit-")?;
        let (layer, layer_pin) = self.import_blob(&request.layer, None).await?;
        let diff_id = layer.clone();
        let _layer_pins = self.pin(vec![layer_rel_path(&diff_id)]);
        let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        patch_config(&mut config, &request, &diff_id.to_string(), &now);
        let config_file = work.path().join("config.json");
        let config_bytes =
            serde_json::to_vec(&config).map_err(|e| ImageError::io("cannot write the image configuration", io::Error::other(e)))?;
        fs::write(&config_file, &config_bytes).map_err(|e| ImageError::io("cannot write the image configuration", e))?;
        let (config_digest, config_pin) = self.import_blob(&config_file, None).await?;
        let parsed: ImageConfiguration = serde_json::from_slice(&config_bytes)
            .map_err(|e| ImageError::io("cannot read back the image configuration", io::Error::other(e)))?;
        let size = fs::metadata(&request.layer).map(|m| m.len()).unwrap_or(0);
        let spec = LayerSpec { blob: layer.clone(), size, diff_id: diff_id.clone() };
        self.ensure_layer(None, &spec, &super::progress::ignore_progress).await?;
        let mut layer_blobs = base.layer_blobs.clone();
        layer_blobs.push(layer);
        let mut diff_ids = base.diff_ids.clone();
        diff_ids.push(diff_id);
        let record = ImageRecord {
            id: ImageId(config_digest),
            repo_tags: Vec::new(),
            repo_digests: Vec::new(),
            manifest_blobs: Vec::new(),
            layer_blobs,
            diff_ids,
            config: ImageConfig::from_oci(&parsed, &config_bytes),
            created: parsed.created().clone(),
            os: parsed.os().to_string(),
            architecture: parsed.architecture().to_string(),
        };
        let tags = request.reference.as_ref().and_then(Reference::tagged_name).into_iter().collect();
        let image = self.register(record, tags).await;
        drop((layer_pin, config_pin, work));
        image
    }
}

/// The base's configuration with the commit's changes, its layer and its
/// history entry; every field the patch leaves alone stays as it was.
fn patch_config(config: &mut serde_json::Value, request: &CommitRequest, diff_id: &str, now: &str) {
    use serde_json::{json, Value};
    let object = |v: &mut Value| {
        if !v.is_object() {
            *v = json!({});
        }
    };
    object(config);
    config["created"] = json!(now);
    config["container"] = json!(request.container_id);
    if let Some(author) = &request.author {
        config["author"] = json!(author);
    }
    object(&mut config["config"]);
    let inner = &mut config["config"];
    let patch = &request.patch;
    if let Some(cmd) = &patch.cmd {
        inner["Cmd"] = json!(cmd);
    }
    if let Some(entrypoint) = &patch.entrypoint {
        inner["Entrypoint"] = if entrypoint.is_empty() { Value::Null } else { json!(entrypoint) };
    }
    if let Some(env) = &patch.env {
        inner["Env"] = json!(env);
    }
    if let Some(dir) = &patch.working_dir {
        inner["WorkingDir"] = json!(dir);
    }
    if let Some(user) = &patch.user {
        inner["User"] = json!(user);
    }
    if !patch.labels.is_empty() {
        object(&mut inner["Labels"]);
        for (key, value) in &patch.labels {
            inner["Labels"][key] = json!(value);
        }
    }
    if !patch.exposed_ports.is_empty() {
        object(&mut inner["ExposedPorts"]);
        for port in &patch.exposed_ports {
            inner["ExposedPorts"][port] = json!({});
        }
    }
    object(&mut config["rootfs"]);
    config["rootfs"]["type"] = json!("layers");
    match config["rootfs"]["diff_ids"].as_array_mut() {
        Some(ids) => ids.push(json!(diff_id)),
        None => config["rootfs"]["diff_ids"] = json!([diff_id]),
    }
    let mut entry = json!({ "created": now, "created_by": request.created_by });
    if let Some(message) = &request.message {
        entry["comment"] = json!(message);
    }
    if let Some(author) = &request.author {
        entry["author"] = json!(author);
    }
    match config["history"].as_array_mut() {
        Some(history) => history.push(entry),
        None => config["history"] = json!([entry]),
    }
}
