//! What can go wrong with the node's WireGuard key and device.

use std::path::PathBuf;

/// One sentence each, naming the bad value and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum WireguardError {
    #[error("the WireGuard key file {path} is unreadable ({source}); check its permissions, or remove it to make a new key")]
    KeyRead { path: PathBuf, source: std::io::Error },
    #[error("the WireGuard key file {path} does not hold a base64 WireGuard private key; remove it to make a new key")]
    KeyInvalid { path: PathBuf },
    #[error("cannot write the WireGuard key file {path} ({source}); check that its directory is writable")]
    KeyWrite { path: PathBuf, source: std::io::Error },
    #[error("{value:?} is not a WireGuard public key; use the 44-character base64 form `wg pubkey` prints")]
    InvalidPublicKey { value: String },
    #[error("{name:?} is not a valid WireGuard interface name; use 1 to 15 letters, digits, '-', '_' or '.'")]
    InvalidName { name: String },
    #[error("peer {public_key} is listed more than once; give each peer once")]
    DuplicatePeer { public_key: String },
    #[error("cannot start the WireGuard device {name}: {reason}")]
    Start { name: String, reason: String },
    #[error("the WireGuard device {name} runs in another network namespace (pid {pid}); give each host its own interface name")]
    OtherNamespace { name: String, pid: u32 },
    #[error("interface {name} exists but no WireGuard device answers for it; remove it with `ip link del {name}` or choose another name")]
    NameTaken { name: String },
    #[error("the WireGuard device {name} did not answer on {socket} ({source}); remove it and ensure it again")]
    Control { name: String, socket: PathBuf, source: std::io::Error },
    #[error("the WireGuard device {name} refused the configuration ({source})")]
    Configure { name: String, source: std::io::Error },
    #[error("cannot stop the WireGuard device {name} (pid {pid}): {reason}")]
    Stop { name: String, pid: u32, reason: String },
}

impl WireguardError {
    /// Whether the device's control socket is there but nobody listens on
    /// it any more: the device process has ended.
    pub(crate) fn device_gone(&self) -> bool {
        matches!(self, WireguardError::Control { source, .. } if source.kind() == std::io::ErrorKind::ConnectionRefused)
    }
}

pub type Result<T, E = WireguardError> = std::result::Result<T, E>;
