//! Autolock: the swarm's key encryption key (KEK), which people hold and
//! disks do not.
//!
//! With autolock on, the cluster object carries the KEK (the store is
//! encrypted at rest, so on a running manager it is protected by that
//! manager's DEK). Each manager then keeps two files protected:
//!
//! - its DEK file (`raft-dek`, see [`crate::raft::dek_file`]) holds the
//!   DEK sealed with the KEK;
//! - its node TLS key (`node-key.pem`) is sealed with the DEK
//!   ([`seal_node_key`]).
//!
//! So a disk alone opens neither: the KEK opens the DEK, the DEK opens the
//! Raft data and the TLS key. Sealing the TLS key with the DEK rather than
//! with the KEK directly means a KEK rotation rewrites one file with one
//! atomic rename, so a crash can never leave the two files protected by
//! different KEKs; turning autolock on seals the TLS key first and the DEK
//! file second (off: the reverse), so every crash point leaves a state the
//! next start can read.
//!
//! The format of every wrapped value is `version (1) | nonce (24) |
//! ciphertext | tag (16)`, XChaCha20-Poly1305 (the same AEAD as the Raft
//! data, for the same reasons: random nonces, no counter to keep), with
//! associated data naming what the value is, so a DEK file's payload
//! cannot be passed off as a TLS key or the reverse.

use std::fmt;

use chacha20poly1305::aead::rand_core::RngCore;
use chacha20poly1305::aead::{AeadInPlace, KeyInit, OsRng};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::raft::sealed::Dek;

/// Bytes in a KEK.
pub const KEK_LEN: usize = 32;
/// `SHLKEY-1-<64 hex>`: the text form people keep.
pub const UNLOCK_KEY_PREFIX: &str = "SHLKEY-1-";

const WRAP_FORMAT_V1: u8 = 1;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// Bytes a wrapped value adds to its plaintext.
pub const WRAP_OVERHEAD: usize = 1 + NONCE_LEN + TAG_LEN;

const NODE_KEY_PEM_LABEL: &str = "SHOAL SEALED PRIVATE KEY";
const NODE_KEY_PURPOSE: &[u8] = b"shoal node tls key";

/// The swarm's key encryption key. Never printed by `Debug`; wiped from
/// memory when dropped.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnlockKey([u8; KEK_LEN]);

impl UnlockKey {
    pub fn generate() -> UnlockKey {
        let mut bytes = [0u8; KEK_LEN];
        OsRng.fill_bytes(&mut bytes);
        UnlockKey(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; KEK_LEN] {
        &self.0
    }

    /// `SHLKEY-1-...` as the user was shown it; surrounding whitespace is
    /// ignored (keys are pasted).
    pub fn parse(text: &str) -> Result<UnlockKey, WrapError> {
        let text = text.trim();
        let hex_part = text
            .strip_prefix(UNLOCK_KEY_PREFIX)
            .ok_or(WrapError::NotAnUnlockKey)?;
        let mut bytes = [0u8; KEK_LEN];
        hex::decode_to_slice(hex_part, &mut bytes).map_err(|_| WrapError::NotAnUnlockKey)?;
        Ok(UnlockKey(bytes))
    }

    /// The text form, `SHLKEY-1-<64 lowercase hex>`; only for showing it to
    /// the person who must keep it.
    pub fn to_text(&self) -> Zeroizing<String> {
        Zeroizing::new(format!("{UNLOCK_KEY_PREFIX}{}", hex::encode(self.0)))
    }
}

impl Drop for UnlockKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for UnlockKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UnlockKey(..)")
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WrapError {
    #[error("that is not a swarm unlock key; an unlock key looks like SHLKEY-1- followed by 64 hex characters, as `shoal swarm unlock-key` prints it")]
    NotAnUnlockKey,
    /// Wrong key, altered bytes, or a value wrapped for another purpose:
    /// the AEAD cannot tell these apart, and neither can we.
    #[error("the key does not open this value: it is the wrong key, or the value was altered")]
    WrongKeyOrTampered,
    #[error("the wrapped value is damaged (too short or of an unknown format)")]
    Malformed,
}

/// Seals `plaintext` with `key` for `purpose` (the associated data).
pub fn wrap(key: &[u8; KEK_LEN], purpose: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let cipher = XChaCha20Poly1305::new(key.into());
    let mut nonce = XNonce::default();
    OsRng.fill_bytes(&mut nonce);
    let mut out = Vec::with_capacity(plaintext.len() + WRAP_OVERHEAD);
    out.push(WRAP_FORMAT_V1);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let tag = cipher
        .encrypt_in_place_detached(&nonce, &associated_data(purpose), &mut out[1 + NONCE_LEN..])
        // Only fails past ~256 GiB of plaintext; ours are a few KiB.
        .expect("XChaCha20-Poly1305 seals any value under 256 GiB");
    out.extend_from_slice(&tag);
    out
}

/// Opens what [`wrap`] sealed with the same key and purpose.
pub fn unwrap(
    key: &[u8; KEK_LEN],
    purpose: &[u8],
    wrapped: &[u8],
) -> Result<Zeroizing<Vec<u8>>, WrapError> {
    if wrapped.len() < WRAP_OVERHEAD || wrapped[0] != WRAP_FORMAT_V1 {
        return Err(WrapError::Malformed);
    }
    let cipher = XChaCha20Poly1305::new(key.into());
    let nonce = XNonce::from_slice(&wrapped[1..1 + NONCE_LEN]);
    let (ciphertext, tag) = wrapped[1 + NONCE_LEN..].split_at(wrapped.len() - WRAP_OVERHEAD);
    let mut plaintext = Zeroizing::new(ciphertext.to_vec());
    cipher
        .decrypt_in_place_detached(
            nonce,
            &associated_data(purpose),
            &mut plaintext,
            Tag::from_slice(tag),
        )
        .map_err(|_| WrapError::WrongKeyOrTampered)?;
    Ok(plaintext)
}

fn associated_data(purpose: &[u8]) -> Vec<u8> {
    [b"shoal autolock\0".as_slice(), &[WRAP_FORMAT_V1], purpose].concat()
}

/// Whether a node key file holds a sealed key rather than a PEM key.
pub fn is_sealed_node_key(text: &str) -> bool {
    text.trim_start()
        .starts_with(&format!("-----BEGIN {NODE_KEY_PEM_LABEL}-----"))
}

/// The node's TLS private key (PEM) sealed with the manager's DEK, as a
/// PEM-like text block (hex body: the crate has no base64, and the file is
/// small): one look at the file says what it is.
pub fn seal_node_key(dek: &Dek, key_pem: &str) -> String {
    let wrapped = wrap(dek.as_bytes(), NODE_KEY_PURPOSE, key_pem.as_bytes());
    let body = hex::encode(wrapped);
    let mut text = format!("-----BEGIN {NODE_KEY_PEM_LABEL}-----\n");
    for line in body.as_bytes().chunks(64) {
        text.push_str(&String::from_utf8_lossy(line));
        text.push('\n');
    }
    text.push_str(&format!("-----END {NODE_KEY_PEM_LABEL}-----\n"));
    text
}

/// The PEM key inside a [`seal_node_key`] block.
pub fn open_node_key(dek: &Dek, sealed: &str) -> Result<Zeroizing<String>, WrapError> {
    let body: String = sealed
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("-----"))
        .collect();
    if !is_sealed_node_key(sealed) {
        return Err(WrapError::Malformed);
    }
    let wrapped = hex::decode(body).map_err(|_| WrapError::Malformed)?;
    let plaintext = unwrap(dek.as_bytes(), NODE_KEY_PURPOSE, &wrapped)?;
    let text = std::str::from_utf8(&plaintext).map_err(|_| WrapError::Malformed)?;
    Ok(Zeroizing::new(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEM: &str = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----\n";

    #[test]
    fn unlock_keys_round_trip_through_their_text_and_hide_from_debug() {
        let key = UnlockKey::generate();
        let text = key.to_text();
        assert!(
            text.starts_with("SHLKEY-1-") && text.len() == 9 + 64,
            "{}",
            *text
        );
        assert_eq!(UnlockKey::parse(&format!("  {}\n", *text)).unwrap(), key);
        assert_eq!(format!("{key:?}"), "UnlockKey(..)");
        assert_ne!(UnlockKey::generate(), key);
        for bad in [
            "",
            "SHLKEY-1-",
            "SHLKEY-2-00",
            &text[..text.len() - 1],
            &text.replace("SHLKEY", "SHLTKN"),
            &format!("{}zz", &text[..text.len() - 2]),
        ] {
            assert_eq!(
                UnlockKey::parse(bad),
                Err(WrapError::NotAnUnlockKey),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn wrapped_values_open_only_with_their_key_and_purpose_and_detect_tampering() {
        let (key, other) = (UnlockKey::generate(), UnlockKey::generate());
        let wrapped = wrap(key.as_bytes(), b"a", b"secret bytes");
        assert_eq!(wrapped.len(), 12 + WRAP_OVERHEAD);
        assert!(!wrapped.windows(12).any(|w| w == b"secret bytes"));
        assert_eq!(
            unwrap(key.as_bytes(), b"a", &wrapped).unwrap().as_slice(),
            b"secret bytes"
        );
        // Fresh nonce every time.
        assert_ne!(wrap(key.as_bytes(), b"a", b"secret bytes"), wrapped);

        assert_eq!(
            unwrap(other.as_bytes(), b"a", &wrapped).unwrap_err(),
            WrapError::WrongKeyOrTampered
        );
        assert_eq!(
            unwrap(key.as_bytes(), b"b", &wrapped).unwrap_err(),
            WrapError::WrongKeyOrTampered
        );
        for i in 1..wrapped.len() {
            let mut tampered = wrapped.clone();
            tampered[i] ^= 0x01;
            assert_eq!(
                unwrap(key.as_bytes(), b"a", &tampered).unwrap_err(),
                WrapError::WrongKeyOrTampered,
                "byte {i}"
            );
        }
        let mut unknown = wrapped.clone();
        unknown[0] = 2;
        assert_eq!(
            unwrap(key.as_bytes(), b"a", &unknown).unwrap_err(),
            WrapError::Malformed
        );
        assert_eq!(
            unwrap(key.as_bytes(), b"a", &wrapped[..WRAP_OVERHEAD - 1]).unwrap_err(),
            WrapError::Malformed
        );
    }

    #[test]
    fn a_sealed_node_key_hides_the_pem_and_opens_only_with_its_dek() {
        let dek = Dek::generate();
        let sealed = seal_node_key(&dek, PEM);
        assert!(is_sealed_node_key(&sealed) && !is_sealed_node_key(PEM));
        assert!(
            !sealed.contains("PRIVATE KEY-----\nMIG") && !sealed.contains("MIGHAgEA"),
            "{sealed}"
        );
        assert_eq!(open_node_key(&dek, &sealed).unwrap().as_str(), PEM);
        assert_eq!(
            open_node_key(&Dek::generate(), &sealed).unwrap_err(),
            WrapError::WrongKeyOrTampered
        );
        assert_eq!(open_node_key(&dek, PEM).unwrap_err(), WrapError::Malformed);

        // One changed hex digit in the body is caught.
        let lines: Vec<&str> = sealed.lines().collect();
        let body = lines[2];
        let flipped = if body.starts_with('a') {
            format!("b{}", &body[1..])
        } else {
            format!("a{}", &body[1..])
        };
        let tampered = sealed.replacen(body, &flipped, 1);
        assert_eq!(
            open_node_key(&dek, &tampered).unwrap_err(),
            WrapError::WrongKeyOrTampered
        );
    }
}
