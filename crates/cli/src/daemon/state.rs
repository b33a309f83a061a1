//! What a node remembers about its swarm across restarts, under
//! `<data-root>/swarm/`: `state.json`, its certificates, and (managers) the
//! Raft storage.
//!
//! With autolock a manager's `raft-dek` is sealed with the swarm's unlock
//! key and its `node-key.pem` with the DEK (see `shoal_manager::autolock`):
//! such a node is locked at start until `swarm unlock` gives the key.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use shoal_manager::autolock::{is_sealed_node_key, open_node_key, seal_node_key, UnlockKey};
use shoal_manager::raft::dek_file::{DekFile, DekFileError};
use shoal_proto::tls::Credentials;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SwarmState {
    pub node_id: String,
    pub cluster_id: String,
    /// "manager" or "worker": the role of the certificate the node holds.
    pub role: String,
    pub managers: Vec<String>,
    /// ip:port this node advertises for its manager endpoint.
    pub advertise: String,
    /// ip:port the manager endpoint listens on.
    pub listen: String,
    /// Unix milliseconds when the current certificate was issued; renewal
    /// is due at half its lifetime.
    pub cert_issued_at_ms: u64,
    /// UDP port of the node's WireGuard endpoint on its advertise address.
    #[serde(default = "default_data_path_port")]
    pub data_path_port: u16,
}

pub const DEFAULT_DATA_PATH_PORT: u16 = 51820;

fn default_data_path_port() -> u16 {
    DEFAULT_DATA_PATH_PORT
}

pub struct SwarmDir {
    root: PathBuf,
    /// The unlock key `raft-dek` is sealed with right now (autolock), as
    /// given to `swarm unlock` or learnt from the store; also serialises
    /// every rewrite of the key files.
    unlock_key: Arc<Mutex<Option<UnlockKey>>>,
}

/// Why `swarm unlock` could not open this node's files.
#[derive(Debug, thiserror::Error)]
pub enum UnlockError {
    #[error("this node is not locked: it is in no swarm, or its swarm does not use autolock, or it was unlocked already; there is nothing to unlock")]
    NotLocked,
    #[error("{0}")]
    Key(DekFileError),
    #[error("{0:#}")]
    Other(anyhow::Error),
}

impl SwarmDir {
    pub fn new(data_root: &Path) -> Self {
        SwarmDir { root: data_root.join("swarm"), unlock_key: Arc::default() }
    }

    /// The unlock key the DEK file is sealed with, if any (autolock).
    pub fn unlock_key(&self) -> Option<UnlockKey> {
        self.unlock_key.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn node_key_file(&self) -> PathBuf {
        self.certs().join("node-key.pem")
    }

    /// Whether this node is a manager whose key files autolock sealed:
    /// it may not start until `swarm unlock`.
    pub fn is_locked(&self) -> bool {
        self.root.join("state.json").exists() && DekFile::new(self.raft_dek_file()).is_locked().unwrap_or(false)
    }

    pub fn raft_dir(&self) -> PathBuf {
        self.root.join("manager")
    }

    /// The manager's Raft data encryption key, beside the node's TLS key:
    /// removing it crypto-erases the Raft data.
    pub fn raft_dek_file(&self) -> PathBuf {
        self.certs().join("raft-dek")
    }

    fn certs(&self) -> PathBuf {
        self.root.join("certs")
    }

    /// The swarm this node was in, or `None` when it is in none, or when
    /// it is locked (autolock; see [`SwarmDir::unlock`]).
    pub fn load(&self) -> anyhow::Result<Option<(SwarmState, Credentials)>> {
        if !self.root.join("state.json").exists() {
            return Ok(None);
        }
        if self.is_locked() {
            tracing::warn!("this manager is locked (autolock): it will not rejoin the swarm until `shoal swarm unlock` is given the unlock key");
            return Ok(None);
        }
        self.load_with(None).map(Some)
    }

    /// Opens a locked node's files with `key`: its state and usable
    /// credentials. Nothing is written; from here on this `SwarmDir` knows
    /// the key its DEK file is sealed with.
    pub fn unlock(&self, key: UnlockKey) -> Result<(SwarmState, Credentials), UnlockError> {
        if !self.is_locked() {
            return Err(UnlockError::NotLocked);
        }
        let loaded = self.load_with(Some(&key)).map_err(|e| match e.downcast::<DekFileError>() {
            Ok(key_error) => UnlockError::Key(key_error),
            Err(other) => UnlockError::Other(other),
        })?;
        *self.unlock_key.lock().unwrap_or_else(|p| p.into_inner()) = Some(key);
        Ok(loaded)
    }

    fn load_with(&self, key: Option<&UnlockKey>) -> anyhow::Result<(SwarmState, Credentials)> {
        let state_path = self.root.join("state.json");
        let state: SwarmState = serde_json::from_slice(&std::fs::read(&state_path)?)
            .map_err(|e| anyhow::anyhow!("{} is corrupt ({e}); remove the swarm directory and join again", state_path.display()))?;
        let certs = self.certs();
        let mut key_pem = std::fs::read_to_string(self.node_key_file())?;
        if is_sealed_node_key(&key_pem) {
            key_pem = self.open_node_key(&key_pem, key)?;
        }
        let credentials = Credentials {
            ca_pem: std::fs::read_to_string(certs.join("ca.pem"))?,
            cert_pem: std::fs::read_to_string(certs.join("node.pem"))?,
            key_pem,
        };
        Ok((state, credentials))
    }

    /// A sealed node key, opened with the DEK (itself opened with `key`
    /// when autolock sealed it).
    fn open_node_key(&self, sealed: &str, key: Option<&UnlockKey>) -> anyhow::Result<String> {
        let dek_file = DekFile::new(self.raft_dek_file());
        let dek = dek_file.load_with(key)?.with_context(|| {
            format!(
                "{} is sealed but the key file {} that opens it is missing; remove {} and join the swarm again",
                self.node_key_file().display(),
                dek_file.path().display(),
                self.root.display()
            )
        })?;
        let opened = open_node_key(&dek, sealed).map_err(|e| {
            anyhow::anyhow!("{} does not open with this manager's data key ({e}); remove {} and join the swarm again", self.node_key_file().display(), self.root.display())
        })?;
        Ok(opened.as_str().to_owned())
    }

    /// Brings the DEK file and the node key to the protection autolock
    /// asks for: `Some(key)` seals the node key with the DEK (first) and the
    /// DEK with `key` (second); `None` undoes it in the reverse order. Each
    /// step is one atomic rename, so a crash anywhere leaves files the next
    /// start reads. Returns whether anything was rewritten. Never logs keys.
    pub fn protect_keys(&self, key_pem: &str, desired: Option<&UnlockKey>) -> anyhow::Result<bool> {
        let mut current = self.unlock_key.lock().unwrap_or_else(|p| p.into_inner());
        let dek_file = DekFile::new(self.raft_dek_file());
        let dek_locked = dek_file.is_locked()?;
        let key_sealed = is_sealed_node_key(&std::fs::read_to_string(self.node_key_file()).unwrap_or_default());
        let settled = match desired {
            Some(key) => dek_locked && key_sealed && current.as_ref() == Some(key),
            None => !dek_locked && !key_sealed,
        };
        if settled {
            return Ok(false);
        }
        let dek = dek_file
            .load_with(current.as_ref())?
            .with_context(|| format!("autolock needs this manager's data key, but {} is missing", dek_file.path().display()))?;
        match desired {
            Some(key) => {
                if !key_sealed {
                    write_atomic(&self.node_key_file(), seal_node_key(&dek, key_pem).as_bytes(), 0o600)?;
                }
                dek_file.store_protected(&dek, Some(key))?;
                *current = Some(key.clone());
            }
            None => {
                dek_file.store_protected(&dek, None)?;
                *current = None;
                write_atomic(&self.node_key_file(), key_pem.as_bytes(), 0o600)?;
            }
        }
        Ok(true)
    }

    /// `state.json`, if readable; locked nodes show it in `shoal info`.
    pub fn read_state(&self) -> Option<SwarmState> {
        serde_json::from_slice(&std::fs::read(self.root.join("state.json")).ok()?).ok()
    }

    pub fn save_state(&self, state: &SwarmState) -> anyhow::Result<()> {
        write_atomic(&self.root.join("state.json"), &serde_json::to_vec_pretty(state)?, 0o600)
    }

    /// Writes the node's certificates and key; a key that autolock keeps
    /// sealed stays sealed (renewal of a locked-capable manager).
    pub fn save_credentials(&self, credentials: &Credentials) -> anyhow::Result<()> {
        let current = self.unlock_key.lock().unwrap_or_else(|p| p.into_inner());
        let certs = self.certs();
        let sealed = std::fs::read_to_string(self.node_key_file()).is_ok_and(|text| is_sealed_node_key(&text));
        let key_text = match sealed {
            true => {
                let dek = DekFile::new(self.raft_dek_file())
                    .load_with(current.as_ref())?
                    .context("the node key is sealed but the data key file is missing")?;
                seal_node_key(&dek, &credentials.key_pem)
            }
            false => credentials.key_pem.clone(),
        };
        write_atomic(&certs.join("ca.pem"), credentials.ca_pem.as_bytes(), 0o644)?;
        write_atomic(&certs.join("node.pem"), credentials.cert_pem.as_bytes(), 0o644)?;
        write_atomic(&self.node_key_file(), key_text.as_bytes(), 0o600)
    }

    /// Forgets the swarm: certificates, state and Raft data.
    pub fn remove(&self) -> anyhow::Result<()> {
        match std::fs::remove_dir_all(&self.root) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }
}

/// Write-then-rename, so a crash never leaves a half-written file behind.
fn write_atomic(path: &Path, data: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().ok_or_else(|| anyhow::anyhow!("{} has no parent directory", path.display()))?;
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp)?;
    file.write_all(data)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
