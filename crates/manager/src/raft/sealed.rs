//! Sealing of the values a manager writes to disk for Raft.
//!
//! Every value in the Raft trees (log entries, vote and other metadata,
//! the state machine's base image and journal, snapshots) is sealed with
//! the manager's data encryption key (DEK) before it reaches sled; keys
//! (log indexes, object-kind chunk names, journal positions) stay
//! plaintext so sled can still order and range over them.
//!
//! The AEAD is XChaCha20-Poly1305 (RustCrypto's `chacha20poly1305`). Its
//! 192-bit nonces are drawn at random for every value: the chance of two
//! seals ever sharing a nonce stays negligible far beyond any write rate
//! this store reaches (2^-96 after 2^48 values), so there is no counter to
//! persist and nothing to go wrong after a crash or a restored backup, as
//! there would be with a 96-bit counter nonce (AES-GCM, ChaCha20-Poly1305).
//! It is also fast in pure software on machines without AES instructions.
//!
//! A sealed value is `version (1) | nonce (24) | ciphertext | tag (16)`.
//! The associated data binds it to the tree and key it was written under,
//! so a value moved to another key (an old log entry copied over a newer
//! index, a snapshot copied into the state machine) fails to open.
//! What sealing alone cannot detect is an older value put back under its
//! own key (a rollback of the whole disk); that needs a trusted counter
//! outside the disk and is out of scope.

use std::borrow::Cow;
use std::sync::Arc;

use chacha20poly1305::aead::rand_core::RngCore;
use chacha20poly1305::aead::{AeadInPlace, KeyInit, OsRng};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use zeroize::Zeroize;

/// Bytes in a data encryption key.
pub const DEK_LEN: usize = 32;

/// The first byte of every sealed value: the layout above.
const SEALED_FORMAT_V1: u8 = 1;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = 1 + NONCE_LEN;

/// Bytes a sealed value adds to its plaintext.
pub const SEAL_OVERHEAD: usize = HEADER_LEN + TAG_LEN;

/// Domain separation: these associated data mean nothing to any other use
/// of the same key.
const AD_DOMAIN: &[u8] = b"shoal raft at rest\0";

/// A manager's data encryption key. Wiped from memory when dropped.
pub struct Dek([u8; DEK_LEN]);

impl Dek {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Dek {
        let mut bytes = [0u8; DEK_LEN];
        OsRng.fill_bytes(&mut bytes);
        Dek(bytes)
    }

    pub fn from_bytes(bytes: [u8; DEK_LEN]) -> Dek {
        Dek(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; DEK_LEN] {
        &self.0
    }
}

impl Drop for Dek {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for Dek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Dek(..)")
    }
}

/// Why a sealed value could not be opened (or a value sealed).
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("the stored value under {tree}/{key} is {len} bytes, too short to be encrypted ({SEAL_OVERHEAD} bytes at least); the manager's Raft data is damaged: remove it and rejoin the swarm")]
    Truncated {
        tree: String,
        key: String,
        len: usize,
    },
    #[error("the stored value under {tree}/{key} has encryption format {found}, which this version of shoal does not know (it reads format {SEALED_FORMAT_V1}); run a newer shoal or remove the manager's Raft data and rejoin")]
    UnknownFormat {
        tree: String,
        key: String,
        found: u8,
    },
    #[error("the stored value under {tree}/{key} does not decrypt: it was encrypted with a different data key, altered on disk, or moved from another key; restore the manager's matching DEK file, or remove its Raft data and rejoin")]
    Unauthentic { tree: String, key: String },
    #[error("the value under {tree}/{key} ({len} bytes) is too large to encrypt")]
    TooLarge {
        tree: String,
        key: String,
        len: usize,
    },
}

/// Seals and opens values with one DEK, or (for the benchmark's
/// comparison run only) passes them through unchanged. Cloning is cheap.
#[derive(Clone)]
pub struct Sealer {
    /// `None`: plaintext, the layout managers wrote before encryption.
    cipher: Option<Arc<XChaCha20Poly1305>>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.cipher.is_some() {
            "Sealer(encrypting)"
        } else {
            "Sealer(plaintext)"
        })
    }
}

impl Sealer {
    pub fn new(dek: &Dek) -> Sealer {
        let cipher = XChaCha20Poly1305::new(dek.as_bytes().into());
        Sealer {
            cipher: Some(Arc::new(cipher)),
        }
    }

    /// Writes and reads values as they are: the unencrypted layout. Only
    /// for measuring what encryption costs (see
    /// [`super::at_rest::AtRest::PlaintextForBenchmark`]) and for reading a
    /// plaintext database while it is migrated.
    pub fn plaintext() -> Sealer {
        Sealer { cipher: None }
    }

    pub fn is_encrypting(&self) -> bool {
        self.cipher.is_some()
    }

    /// Seals `value` for storage under `key` of tree `tree`.
    pub fn seal(&self, tree: &str, key: &[u8], value: &[u8]) -> Result<Vec<u8>, SealError> {
        let Some(cipher) = &self.cipher else {
            return Ok(value.to_vec());
        };
        let mut nonce = XNonce::default();
        OsRng.fill_bytes(&mut nonce);
        let mut sealed = Vec::with_capacity(value.len() + SEAL_OVERHEAD);
        sealed.push(SEALED_FORMAT_V1);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(value);
        let tag = cipher
            .encrypt_in_place_detached(
                &nonce,
                &associated_data(tree, key),
                &mut sealed[HEADER_LEN..],
            )
            .map_err(|_| SealError::TooLarge {
                tree: tree.into(),
                key: printable(key),
                len: value.len(),
            })?;
        sealed.extend_from_slice(&tag);
        Ok(sealed)
    }

    /// Opens a value read from `key` of tree `tree`: its plaintext, or an
    /// error when it was not sealed with this key for this place.
    pub fn open<'a>(
        &self,
        tree: &str,
        key: &[u8],
        sealed: &'a [u8],
    ) -> Result<Cow<'a, [u8]>, SealError> {
        let Some(cipher) = &self.cipher else {
            return Ok(Cow::Borrowed(sealed));
        };
        if sealed.len() < SEAL_OVERHEAD {
            return Err(SealError::Truncated {
                tree: tree.into(),
                key: printable(key),
                len: sealed.len(),
            });
        }
        if sealed[0] != SEALED_FORMAT_V1 {
            return Err(SealError::UnknownFormat {
                tree: tree.into(),
                key: printable(key),
                found: sealed[0],
            });
        }
        let nonce = XNonce::from_slice(&sealed[1..HEADER_LEN]);
        let (ciphertext, tag) = sealed[HEADER_LEN..].split_at(sealed.len() - SEAL_OVERHEAD);
        let mut plaintext = ciphertext.to_vec();
        cipher
            .decrypt_in_place_detached(
                nonce,
                &associated_data(tree, key),
                &mut plaintext,
                Tag::from_slice(tag),
            )
            .map_err(|_| SealError::Unauthentic {
                tree: tree.into(),
                key: printable(key),
            })?;
        Ok(Cow::Owned(plaintext))
    }
}

/// Binds a value to where it is stored: the format version, the tree and
/// the key. Tree names hold no NUL, so the encoding is unambiguous.
fn associated_data(tree: &str, key: &[u8]) -> Vec<u8> {
    let mut ad = Vec::with_capacity(AD_DOMAIN.len() + 2 + tree.len() + key.len());
    ad.extend_from_slice(AD_DOMAIN);
    ad.push(SEALED_FORMAT_V1);
    ad.extend_from_slice(tree.as_bytes());
    ad.push(0);
    ad.extend_from_slice(key);
    ad
}

/// A key as people read it in an error: text when it is text, else hex.
fn printable(key: &[u8]) -> String {
    match std::str::from_utf8(key) {
        Ok(text) if text.chars().all(|c| c.is_ascii_graphic()) => text.to_string(),
        _ => hex::encode(key),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TREE: &str = "raft_log";
    const KEY: &[u8] = &7u64.to_be_bytes();

    #[test]
    fn a_sealed_value_opens_to_its_plaintext_and_hides_it() {
        let sealer = Sealer::new(&Dek::generate());
        let value = b"a distinctive config value".repeat(4);
        let sealed = sealer.seal(TREE, KEY, &value).unwrap();
        assert_eq!(sealed.len(), value.len() + SEAL_OVERHEAD);
        assert!(
            !sealed.windows(11).any(|w| w == b"distinctive"),
            "plaintext visible in the sealed value"
        );
        assert_eq!(
            sealer.open(TREE, KEY, &sealed).unwrap().as_ref(),
            value.as_slice()
        );
        // Fresh random nonce per seal: the same value never seals the same way.
        assert_ne!(sealer.seal(TREE, KEY, &value).unwrap(), sealed);
        // The empty value too.
        let empty = sealer.seal(TREE, KEY, b"").unwrap();
        assert!(sealer.open(TREE, KEY, &empty).unwrap().is_empty());
    }

    #[test]
    fn any_tampered_byte_is_detected() {
        let sealer = Sealer::new(&Dek::generate());
        let sealed = sealer.seal(TREE, KEY, b"vote: term 3").unwrap();
        // Nonce, ciphertext and tag (byte 0 is the format, checked apart).
        for i in 1..sealed.len() {
            let mut tampered = sealed.clone();
            tampered[i] ^= 0x01;
            assert!(
                matches!(
                    sealer.open(TREE, KEY, &tampered),
                    Err(SealError::Unauthentic { .. })
                ),
                "flipping byte {i} went unnoticed"
            );
        }
        let mut tampered = sealed.clone();
        tampered[0] = 9;
        assert!(matches!(
            sealer.open(TREE, KEY, &tampered),
            Err(SealError::UnknownFormat { found: 9, .. })
        ));
        assert!(matches!(
            sealer.open(TREE, KEY, &sealed[..SEAL_OVERHEAD - 1]),
            Err(SealError::Truncated { len, .. }) if len == SEAL_OVERHEAD - 1
        ));
    }

    #[test]
    fn a_different_key_is_refused_with_a_sentence_naming_the_value() {
        let sealed = Sealer::new(&Dek::generate())
            .seal("raft_meta", b"vote", b"term 3")
            .unwrap();
        let err = Sealer::new(&Dek::generate())
            .open("raft_meta", b"vote", &sealed)
            .unwrap_err();
        assert!(matches!(err, SealError::Unauthentic { .. }));
        let message = err.to_string();
        assert!(
            message.contains("raft_meta/vote") && message.contains("different data key"),
            "{message}"
        );
    }

    #[test]
    fn a_value_moved_to_another_key_or_tree_is_refused() {
        let sealer = Sealer::new(&Dek::generate());
        let sealed = sealer.seal(TREE, KEY, b"entry 7").unwrap();
        let other_index = 8u64.to_be_bytes();
        let err = sealer.open(TREE, &other_index, &sealed).unwrap_err();
        assert!(matches!(err, SealError::Unauthentic { .. }));
        // Binary keys are named in hex.
        assert!(
            err.to_string().contains("raft_log/0000000000000008"),
            "{err}"
        );
        assert!(matches!(
            sealer.open("sm", KEY, &sealed),
            Err(SealError::Unauthentic { .. })
        ));
        // Tree and key cannot trade bytes across the separator.
        let sealed = sealer.seal("sm", b"journal/1", b"x").unwrap();
        assert!(sealer.open("sm\0journal", b"/1", &sealed).is_err());
    }

    #[test]
    fn plaintext_mode_stores_values_as_they_are() {
        let sealer = Sealer::plaintext();
        assert!(!sealer.is_encrypting());
        assert_eq!(sealer.seal(TREE, KEY, b"raw").unwrap(), b"raw");
        assert!(matches!(
            sealer.open(TREE, KEY, b"raw").unwrap(),
            Cow::Borrowed(b"raw")
        ));
    }
}
