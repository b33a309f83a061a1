//! The node's WireGuard key pair. The private key is made on the node and
//! never leaves it: it lives in one 0600 file (base64, as `wg genkey`
//! writes it, so `wg pubkey < FILE` works) and only the public key is
//! handed out.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;

use super::error::{Result, WireguardError};

/// A WireGuard public key; shown and parsed in base64, as `wg` prints it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    pub fn from_bytes(bytes: [u8; 32]) -> PublicKey {
        PublicKey(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_base64(&self) -> String {
        BASE64.encode(self.0)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl FromStr for PublicKey {
    type Err = WireguardError;

    fn from_str(value: &str) -> Result<PublicKey> {
        decode_key(value.trim())
            .map(PublicKey)
            .ok_or_else(|| WireguardError::InvalidPublicKey { value: value.to_string() })
    }
}

/// The node's key pair. Debug output never shows the private key.
#[derive(Clone)]
pub struct NodeKey {
    private: [u8; 32],
    public: PublicKey,
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeKey").field("public", &self.public).finish_non_exhaustive()
    }
}

impl NodeKey {
    /// Reads the private key at `path`, or makes a new one there (0600,
    /// written atomically so a crash never leaves half a key behind).
    pub fn load_or_generate(path: &Path) -> Result<NodeKey> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let private = decode_key(text.trim()).ok_or_else(|| WireguardError::KeyInvalid { path: path.to_path_buf() })?;
                tighten_permissions(path)?;
                Ok(NodeKey::from_private(private))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = NodeKey::from_private(wireguard_control::Key::generate_private().0);
                key.write_new(path)?;
                tracing::info!(path = %path.display(), public_key = %key.public, "made this node's WireGuard key");
                Ok(key)
            }
            Err(source) => Err(WireguardError::KeyRead { path: path.to_path_buf(), source }),
        }
    }

    /// A fresh key pair held only in memory: the scale simulator's nodes
    /// have keys the managers distribute, but no device to use them.
    pub fn ephemeral() -> NodeKey {
        NodeKey::from_private(wireguard_control::Key::generate_private().0)
    }

    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    /// The raw private key, for handing to the device over its control
    /// socket (which only root can reach).
    pub(crate) fn private_bytes(&self) -> [u8; 32] {
        self.private
    }

    fn from_private(private: [u8; 32]) -> NodeKey {
        let public = wireguard_control::Key(private).get_public().0;
        NodeKey { private, public: PublicKey(public) }
    }

    fn write_new(&self, path: &Path) -> Result<()> {
        let write_error = |source| WireguardError::KeyWrite { path: path.to_path_buf(), source };
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(write_error)?;
        }
        let temporary = path.with_extension(format!("tmp{}", std::process::id()));
        let result = (|| {
            let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&temporary)?;
            writeln!(file, "{}", BASE64.encode(self.private))?;
            file.sync_all()?;
            std::fs::rename(&temporary, path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&temporary);
        }
        result.map_err(write_error)
    }
}

/// A key file someone made readable to others is put back to 0600: the
/// key itself is still good, and refusing to start would not help.
fn tighten_permissions(path: &Path) -> Result<()> {
    let metadata = std::fs::metadata(path).map_err(|source| WireguardError::KeyRead { path: path.to_path_buf(), source })?;
    if metadata.permissions().mode() & 0o077 != 0 {
        tracing::warn!(path = %path.display(), "the WireGuard key file was readable by others; setting it to 0600");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|source| WireguardError::KeyWrite { path: path.to_path_buf(), source })?;
    }
    Ok(())
}

fn decode_key(text: &str) -> Option<[u8; 32]> {
    BASE64.decode(text).ok()?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_key_is_private_and_loads_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/wg.key");
        let made = NodeKey::load_or_generate(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let loaded = NodeKey::load_or_generate(&path).unwrap();
        assert_eq!(made.public_key(), loaded.public_key());
        assert_eq!(made.private_bytes(), loaded.private_bytes());
        assert!(!format!("{made:?}").contains(&BASE64.encode(made.private_bytes())));
    }

    #[test]
    fn the_public_key_is_what_wg_pubkey_prints() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wg.key");
        let key = NodeKey::load_or_generate(&path).unwrap();
        let output = std::process::Command::new("wg")
            .arg("pubkey")
            .stdin(std::fs::File::open(&path).unwrap())
            .output()
            .expect("wireguard-tools (wg) is installed");
        assert!(output.status.success());
        assert_eq!(String::from_utf8(output.stdout).unwrap().trim(), key.public_key().to_string());
        assert_eq!(key.public_key().to_string().parse::<PublicKey>().unwrap(), key.public_key());
    }

    #[test]
    fn a_loose_key_file_is_tightened_and_garbage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wg.key");
        std::fs::write(&path, format!("{}\n", BASE64.encode([7u8; 32]))).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        NodeKey::load_or_generate(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);

        std::fs::write(&path, "not a key\n").unwrap();
        let error = NodeKey::load_or_generate(&path).unwrap_err();
        assert!(matches!(error, WireguardError::KeyInvalid { .. }), "{error}");
        assert!("abc".parse::<PublicKey>().is_err());
    }
}
