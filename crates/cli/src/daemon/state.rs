//! What a node remembers about its swarm across restarts, under
//! `<data-root>/swarm/`: `state.json`, its certificates, and (managers) the
//! Raft storage.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
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
}

impl SwarmDir {
    pub fn new(data_root: &Path) -> Self {
        SwarmDir { root: data_root.join("swarm") }
    }

    pub fn raft_dir(&self) -> PathBuf {
        self.root.join("manager")
    }

    fn certs(&self) -> PathBuf {
        self.root.join("certs")
    }

    pub fn load(&self) -> anyhow::Result<Option<(SwarmState, Credentials)>> {
        let state_path = self.root.join("state.json");
        if !state_path.exists() {
            return Ok(None);
        }
        let state: SwarmState = serde_json::from_slice(&std::fs::read(&state_path)?)
            .map_err(|e| anyhow::anyhow!("{} is corrupt ({e}); remove the swarm directory and join again", state_path.display()))?;
        let certs = self.certs();
        let credentials = Credentials {
            ca_pem: std::fs::read_to_string(certs.join("ca.pem"))?,
            cert_pem: std::fs::read_to_string(certs.join("node.pem"))?,
            key_pem: std::fs::read_to_string(certs.join("node-key.pem"))?,
        };
        Ok(Some((state, credentials)))
    }

    pub fn save_state(&self, state: &SwarmState) -> anyhow::Result<()> {
        write_atomic(&self.root.join("state.json"), &serde_json::to_vec_pretty(state)?, 0o600)
    }

    pub fn save_credentials(&self, credentials: &Credentials) -> anyhow::Result<()> {
        let certs = self.certs();
        write_atomic(&certs.join("ca.pem"), credentials.ca_pem.as_bytes(), 0o644)?;
        write_atomic(&certs.join("node.pem"), credentials.cert_pem.as_bytes(), 0o644)?;
        write_atomic(&certs.join("node-key.pem"), credentials.key_pem.as_bytes(), 0o600)
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
