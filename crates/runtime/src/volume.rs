//! Named volumes (`shoal volume ...`, `-v NAME:/path`): a directory per
//! volume under `<data-root>/volumes/<name>/_data`, as docker's local
//! driver lays them out, with the labels and creation time beside it.
//! Which containers use a volume is the container manager's to say; this
//! store refuses to remove one that is used.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::container::ContainerError;

/// What `volume inspect` shows (docker's fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    pub name: String,
    pub driver: String,
    pub mountpoint: PathBuf,
    /// RFC 3339.
    pub created_at: String,
    pub labels: BTreeMap<String, String>,
    pub scope: String,
}

/// Kept beside the data; volumes made by `-v` alone have none.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Metadata {
    created_at: String,
    labels: BTreeMap<String, String>,
}

const METADATA_FILE: &str = "volume.json";
const DATA_DIR: &str = "_data";

#[derive(Debug, Clone)]
pub struct VolumeStore {
    root: PathBuf,
}

/// Checks a volume name as docker does: letters, digits, `_.-`, starting
/// with a letter or digit (so never a path).
pub fn validate_name(name: &str) -> Result<(), ContainerError> {
    let valid = !name.is_empty()
        && name.len() <= 255
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric());
    if valid {
        Ok(())
    } else {
        Err(ContainerError::InvalidMount(format!(
            "volume name {name:?} is invalid; use letters, digits, '_', '.' and '-', starting with a letter or digit"
        )))
    }
}

impl VolumeStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        VolumeStore { root: root.into() }
    }

    /// The host directory a volume's data lives in, made if missing (a
    /// `-v NAME:/path` creates the volume, as in docker).
    pub fn ensure(&self, name: &str) -> Result<PathBuf, ContainerError> {
        validate_name(name)?;
        let data = self.root.join(name).join(DATA_DIR);
        std::fs::create_dir_all(&data).map_err(|e| ContainerError::io(format!("creating volume {name}"), e))?;
        Ok(data)
    }

    /// `volume create`: a new volume, or the existing one of that name
    /// (docker's behaviour) if its labels agree. Without a name, a random
    /// one.
    pub fn create(&self, name: Option<&str>, labels: BTreeMap<String, String>) -> Result<Volume, ContainerError> {
        let name = match name.filter(|n| !n.is_empty()) {
            Some(name) => name.to_string(),
            None => anonymous_name(),
        };
        validate_name(&name)?;
        let dir = self.root.join(&name);
        if dir.exists() {
            let existing = self.inspect(&name)?;
            if !labels.is_empty() && existing.labels != labels {
                return Err(ContainerError::InvalidRequest(format!(
                    "volume {name} already exists with other labels; remove it first or choose another name"
                )));
            }
            return Ok(existing);
        }
        self.ensure(&name)?;
        let metadata = Metadata { created_at: crate::container::state::now_rfc3339(), labels };
        crate::container::state::write_json(&dir.join(METADATA_FILE), &metadata)
            .map_err(|e| ContainerError::io(format!("recording volume {name}"), e))?;
        crate::events::emit(crate::events::Subject::Volume, "create", &name, &name, &[]);
        self.inspect(&name)
    }

    pub fn inspect(&self, name: &str) -> Result<Volume, ContainerError> {
        validate_name(name).map_err(|_| ContainerError::NoSuchVolume(name.to_string()))?;
        let dir = self.root.join(name);
        if !dir.join(DATA_DIR).is_dir() {
            return Err(ContainerError::NoSuchVolume(name.to_string()));
        }
        let metadata = crate::container::state::read_json::<Metadata>(&dir.join(METADATA_FILE)).unwrap_or_else(|| Metadata {
            created_at: modified_rfc3339(&dir),
            labels: BTreeMap::new(),
        });
        Ok(Volume {
            name: name.to_string(),
            driver: "local".into(),
            mountpoint: dir.join(DATA_DIR),
            created_at: metadata.created_at,
            labels: metadata.labels,
            scope: "local".into(),
        })
    }

    pub fn list(&self) -> Vec<Volume> {
        let mut volumes: Vec<Volume> = std::fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| entry.file_name().to_str().map(str::to_string))
            .filter_map(|name| self.inspect(&name).ok())
            .collect();
        volumes.sort_by(|a, b| a.name.cmp(&b.name));
        volumes
    }

    /// `volume rm`: refused while `users` (container names) use it.
    pub fn remove(&self, name: &str, users: &[String]) -> Result<(), ContainerError> {
        let volume = self.inspect(name)?;
        if !users.is_empty() {
            return Err(ContainerError::InvalidRequest(format!(
                "volume {name} is in use by container {}; remove the container first",
                users.join(", ")
            )));
        }
        let dir = volume.mountpoint.parent().unwrap_or(&volume.mountpoint).to_path_buf();
        std::fs::remove_dir_all(&dir).map_err(|e| ContainerError::io(format!("removing volume {name}"), e))?;
        crate::events::emit(crate::events::Subject::Volume, "destroy", name, name, &[]);
        Ok(())
    }

    /// `volume prune`: removes every volume no container uses; the names
    /// removed and the bytes freed.
    pub fn prune(&self, users: &HashMap<String, Vec<String>>) -> (Vec<String>, u64) {
        let mut removed = Vec::new();
        let mut bytes = 0;
        for volume in self.list() {
            if users.get(&volume.name).is_some_and(|u| !u.is_empty()) {
                continue;
            }
            let size = disk_usage(&volume.mountpoint);
            if self.remove(&volume.name, &[]).is_ok() {
                removed.push(volume.name);
                bytes += size;
            }
        }
        (removed, bytes)
    }
}

/// A name for a volume made without one (`volume create`, `-v /path`).
pub fn anonymous_name() -> String {
    crate::container::record::random_id()
}

fn modified_rfc3339(path: &Path) -> String {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .map(|t| humantime::format_rfc3339_seconds(t).to_string())
        .unwrap_or_default()
}

/// Bytes under `dir`, not following symlinks.
pub fn disk_usage(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(m) if m.is_dir() => disk_usage(&entry.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_are_created_listed_refused_while_used_and_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let store = VolumeStore::new(dir.path());
        let labels = BTreeMap::from([("team".to_string(), "a".to_string())]);
        let data = store.create(Some("data"), labels.clone()).unwrap();
        assert_eq!((data.driver.as_str(), &data.labels), ("local", &labels));
        assert_eq!(store.create(Some("data"), BTreeMap::new()).unwrap(), data, "creating again returns it");
        let random = store.create(None, BTreeMap::new()).unwrap();
        assert_eq!(random.name.len(), 64);
        store.ensure("implicit").unwrap();
        let mut expected = vec![random.name.as_str(), "data", "implicit"];
        expected.sort();
        assert_eq!(store.list().iter().map(|v| v.name.as_str()).collect::<Vec<_>>(), expected, "listed by name");

        let users = HashMap::from([("data".to_string(), vec!["web".to_string()])]);
        let refused = store.remove("data", &users["data"]).unwrap_err().to_string();
        assert!(refused.contains("web"), "{refused}");
        std::fs::write(store.inspect("implicit").unwrap().mountpoint.join("f"), b"12345").unwrap();
        let (removed, bytes) = store.prune(&users);
        assert_eq!((removed.len(), bytes), (2, 5));
        assert_eq!(store.list().len(), 1, "only the used one is left");
        assert!(store.create(Some("a/b"), BTreeMap::new()).unwrap_err().to_string().contains("invalid"));
        assert!(matches!(store.inspect("nope"), Err(ContainerError::NoSuchVolume(_))));
    }
}
