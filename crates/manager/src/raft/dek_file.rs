//! The file that keeps a manager's data encryption key (DEK), beside the
//! node's TLS key (`<data-root>/swarm/certs/`).
//!
//! Layout: `SHOALDEK` | format version (1 byte) | protection (1 byte) |
//! payload. Protection 0 means the payload is the 32-byte DEK itself:
//! whoever reads the disk can read the key, but deleting this one small
//! file crypto-erases the manager's Raft data. Protection 1 (autolock)
//! means the payload is the DEK sealed with the cluster's key encryption
//! key (KEK, [`crate::autolock::UnlockKey`]), which is never on disk: the
//! manager cannot open its Raft data until someone gives it the key. The
//! associated data of that seal is the file's header, so the protection
//! byte cannot be changed without the seal failing.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::sealed::{Dek, DEK_LEN};
use crate::autolock::{self, UnlockKey, WrapError};

const MAGIC: &[u8; 8] = b"SHOALDEK";
const FORMAT_V1: u8 = 1;
/// The DEK is stored as it is (no autolock).
const PROTECTION_NONE: u8 = 0;
/// The DEK is sealed with the swarm's unlock key (autolock).
const PROTECTION_KEK_SEALED: u8 = 1;
const HEADER_LEN: usize = MAGIC.len() + 2;

#[derive(Debug, thiserror::Error)]
pub enum DekFileError {
    #[error("cannot read the data encryption key file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the data encryption key file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a shoal data encryption key file (or is damaged); restore it from a backup, or remove the manager's Raft data and the file and rejoin the swarm")]
    Corrupt { path: PathBuf },
    #[error("{path} has key file format {found}, which this version of shoal does not know (it reads format {FORMAT_V1}); run a newer shoal")]
    UnknownFormat { path: PathBuf, found: u8 },
    #[error("the data encryption key in {path} is protected in a way this version of shoal cannot open (protection {found}); run a newer shoal")]
    UnknownProtection { path: PathBuf, found: u8 },
    #[error("the data encryption key in {path} is locked with the swarm's unlock key (autolock is on); run `shoal swarm unlock` and give the key")]
    Locked { path: PathBuf },
    #[error("the unlock key is wrong: it does not open the data encryption key in {path}; give the key `shoal swarm unlock-key` prints on another manager (or, if this manager was down during a rotation, the key from before it)")]
    WrongUnlockKey { path: PathBuf },
}

/// Where a manager's DEK lives, and how it is read and written.
#[derive(Debug, Clone)]
pub struct DekFile {
    path: PathBuf,
}

impl DekFile {
    pub fn new(path: impl Into<PathBuf>) -> DekFile {
        DekFile { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored key, or `None` when there is no key file yet. A key
    /// sealed with the unlock key is [`DekFileError::Locked`].
    pub fn load(&self) -> Result<Option<Dek>, DekFileError> {
        self.load_with(None)
    }

    /// The stored key, opened with `unlock_key` when it is sealed with one
    /// (a clear key needs none and ignores it).
    pub fn load_with(&self, unlock_key: Option<&UnlockKey>) -> Result<Option<Dek>, DekFileError> {
        match self.read()? {
            Some(bytes) => self.decode(&bytes, unlock_key).map(Some),
            None => Ok(None),
        }
    }

    /// Whether the file holds a key sealed with the unlock key.
    pub fn is_locked(&self) -> Result<bool, DekFileError> {
        Ok(self.read()?.is_some_and(|bytes| {
            bytes.len() > HEADER_LEN && bytes.starts_with(MAGIC) && bytes[MAGIC.len() + 1] == PROTECTION_KEK_SEALED
        }))
    }

    fn read(&self) -> Result<Option<Vec<u8>>, DekFileError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(DekFileError::Read {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// Makes a new random key and stores it durably (0600, written to a
    /// temporary file, fsynced, renamed, directory fsynced) before
    /// returning it: nothing may be encrypted with a key that a crash
    /// could still lose.
    pub fn create(&self) -> Result<Dek, DekFileError> {
        let dek = Dek::generate();
        self.store(&dek)?;
        Ok(dek)
    }

    fn store(&self, dek: &Dek) -> Result<(), DekFileError> {
        self.store_protected(dek, None)
    }

    /// Rewrites the file with `dek` sealed with `unlock_key`, or in clear
    /// when `None` (autolock on, rotated, or off). One atomic rename: a
    /// crash leaves the old file or the new one, both whole.
    pub fn store_protected(&self, dek: &Dek, unlock_key: Option<&UnlockKey>) -> Result<(), DekFileError> {
        let write = |source| DekFileError::Write {
            path: self.path.clone(),
            source,
        };
        let dir = self
            .path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(write)?;
        let mut contents = Vec::with_capacity(HEADER_LEN + DEK_LEN + autolock::WRAP_OVERHEAD);
        match unlock_key {
            None => {
                contents.extend_from_slice(&header(PROTECTION_NONE));
                contents.extend_from_slice(dek.as_bytes());
            }
            Some(key) => {
                let header = header(PROTECTION_KEK_SEALED);
                contents.extend_from_slice(&header);
                contents.extend_from_slice(&autolock::wrap(key.as_bytes(), &header, dek.as_bytes()));
            }
        }
        let tmp = self.path.with_extension("tmp");
        let result = (|| {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(&contents)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            std::fs::File::open(dir)?.sync_all()
        })();
        zeroize::Zeroize::zeroize(&mut contents);
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map_err(write)
    }

    fn decode(&self, bytes: &[u8], unlock_key: Option<&UnlockKey>) -> Result<Dek, DekFileError> {
        let path = || self.path.clone();
        if bytes.len() < HEADER_LEN || &bytes[..MAGIC.len()] != MAGIC {
            return Err(DekFileError::Corrupt { path: path() });
        }
        let (format, protection) = (bytes[MAGIC.len()], bytes[MAGIC.len() + 1]);
        if format != FORMAT_V1 {
            return Err(DekFileError::UnknownFormat {
                path: path(),
                found: format,
            });
        }
        let payload = &bytes[HEADER_LEN..];
        match protection {
            PROTECTION_NONE => {
                let key: [u8; DEK_LEN] = payload
                    .try_into()
                    .map_err(|_| DekFileError::Corrupt { path: path() })?;
                Ok(Dek::from_bytes(key))
            }
            PROTECTION_KEK_SEALED => {
                let key = unlock_key.ok_or_else(|| DekFileError::Locked { path: path() })?;
                let opened = autolock::unwrap(key.as_bytes(), &bytes[..HEADER_LEN], payload).map_err(|e| match e {
                    WrapError::WrongKeyOrTampered => DekFileError::WrongUnlockKey { path: path() },
                    _ => DekFileError::Corrupt { path: path() },
                })?;
                let key: [u8; DEK_LEN] = opened
                    .as_slice()
                    .try_into()
                    .map_err(|_| DekFileError::Corrupt { path: path() })?;
                Ok(Dek::from_bytes(key))
            }
            found => Err(DekFileError::UnknownProtection {
                path: path(),
                found,
            }),
        }
    }
}

/// Magic, format version and `protection`: also the associated data of a
/// sealed key, binding the protection byte to the seal.
fn header(protection: u8) -> [u8; HEADER_LEN] {
    let mut header = [0u8; HEADER_LEN];
    header[..MAGIC.len()].copy_from_slice(MAGIC);
    header[MAGIC.len()] = FORMAT_V1;
    header[MAGIC.len() + 1] = protection;
    header
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_created_key_is_private_durable_and_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let file = DekFile::new(dir.path().join("certs/raft-dek"));
        assert!(file.load().unwrap().is_none());
        let dek = file.create().unwrap();
        let mode = std::fs::metadata(file.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(file.load().unwrap().unwrap().as_bytes(), dek.as_bytes());
        assert!(!file.path().with_extension("tmp").exists());
        // Another key is another key.
        assert_ne!(
            DekFile::new(dir.path().join("other"))
                .create()
                .unwrap()
                .as_bytes(),
            dek.as_bytes()
        );
    }

    #[test]
    fn damaged_or_unknown_files_are_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = DekFile::new(dir.path().join("raft-dek"));
        file.create().unwrap();
        let good = std::fs::read(file.path()).unwrap();

        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"hello".to_vec(), "not a shoal data encryption key file"),
            (
                good[..good.len() - 1].to_vec(),
                "not a shoal data encryption key file",
            ),
            (
                [&good[..8], &[2u8, 0], &good[10..]].concat(),
                "key file format 2",
            ),
            (
                [&good[..8], &[1u8, 7], &good[10..]].concat(),
                "protection 7",
            ),
        ];
        for (contents, expected) in cases {
            std::fs::write(file.path(), &contents).unwrap();
            let err = file.load().unwrap_err().to_string();
            assert!(
                err.contains(expected) && err.contains(&file.path().display().to_string()),
                "{err}"
            );
        }
    }

    #[test]
    fn a_key_sealed_with_the_unlock_key_opens_only_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = DekFile::new(dir.path().join("raft-dek"));
        let dek = file.create().unwrap();
        assert!(!file.is_locked().unwrap());
        let (kek, other) = (UnlockKey::generate(), UnlockKey::generate());
        file.store_protected(&dek, Some(&kek)).unwrap();
        assert!(file.is_locked().unwrap());
        let sealed = std::fs::read(file.path()).unwrap();
        assert!(!sealed.windows(DEK_LEN).any(|w| w == dek.as_bytes()), "the DEK is on disk in clear");
        let mode = std::fs::metadata(file.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        let path = file.path().display().to_string();
        let err = file.load().unwrap_err().to_string();
        assert!(err.contains("locked") && err.contains("shoal swarm unlock") && err.contains(&path), "{err}");
        let err = file.load_with(Some(&other)).unwrap_err().to_string();
        assert!(err.contains("unlock key is wrong") && err.contains(&path), "{err}");
        assert_eq!(file.load_with(Some(&kek)).unwrap().unwrap().as_bytes(), dek.as_bytes());

        // Tampering anywhere (the protection byte included) is caught, never
        // read as another key.
        for i in MAGIC.len() + 1..sealed.len() {
            let mut tampered = sealed.clone();
            tampered[i] ^= 0x01;
            std::fs::write(file.path(), &tampered).unwrap();
            assert!(file.load_with(Some(&kek)).is_err(), "byte {i}");
        }

        // Autolock off: back in clear, loadable without a key.
        std::fs::write(file.path(), &sealed).unwrap();
        file.store_protected(&dek, None).unwrap();
        assert!(!file.is_locked().unwrap());
        assert_eq!(file.load().unwrap().unwrap().as_bytes(), dek.as_bytes());
    }
}
