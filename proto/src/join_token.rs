//! Join tokens: `SHLTKN-1-<ca sha256>-<secret>`.
//!
//! A token carries two things a joining node needs and cannot get safely any
//! other way: the digest of the swarm's root CA certificate, so the node can
//! pin the CA before trusting anything the manager says, and a secret the CA
//! checks before it issues a certificate. The secret decides the role
//! (worker or manager): each role has its own.

use std::fmt;

use rand::distributions::{Distribution, Slice};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// First field of every token; lets people (and log scrapers) recognise it.
pub const TOKEN_PREFIX: &str = "SHLTKN";
/// The only token format version this build understands.
pub const TOKEN_VERSION: &str = "1";
/// Characters in a token secret.
pub const SECRET_LEN: usize = 25;
/// Hex characters in a SHA-256 digest.
const DIGEST_HEX_LEN: usize = 64;
/// The secret alphabet: 36 symbols, so 25 of them are ~129 bits of entropy.
const SECRET_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// A malformed join token or CA certificate.
///
/// Messages never repeat the secret: errors end up in logs and terminals.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the join token is empty; pass the token printed by `shoal swarm join-token worker` (or manager)")]
    Empty,
    #[error("the join token has {parts} dash-separated fields instead of 4 (SHLTKN-1-<digest>-<secret>); copy the whole token printed by `shoal swarm join-token`")]
    WrongFieldCount { parts: usize },
    #[error("the join token starts with {prefix:?} instead of \"SHLTKN\"; copy the whole token printed by `shoal swarm join-token`")]
    WrongPrefix { prefix: String },
    #[error("join token version {version:?} is not supported (this shoal reads version 1); get a token from a manager running the same shoal version")]
    WrongVersion { version: String },
    #[error("the join token's CA digest {digest:?} is not 64 lowercase hex characters; copy the whole token printed by `shoal swarm join-token`")]
    BadDigest { digest: String },
    #[error("the join token's secret has {len} characters that are not all lowercase letters or digits (expected 25); copy the whole token printed by `shoal swarm join-token`")]
    BadSecret { len: usize },
    #[error("the CA certificate PEM could not be read ({reason}); pass a PEM file with one BEGIN CERTIFICATE block")]
    BadCaPem { reason: String },
}

/// Hex SHA-256 of a DER certificate: the CA fingerprint a token pins.
pub fn ca_digest(ca_der: &[u8]) -> String {
    hex::encode(Sha256::digest(ca_der))
}

/// [`ca_digest`] of the first certificate in a PEM document.
pub fn ca_digest_from_pem(ca_pem: &str) -> Result<String, TokenError> {
    let mut reader = ca_pem.as_bytes();
    let first = rustls_pemfile::certs(&mut reader).next();
    match first {
        Some(Ok(der)) => Ok(ca_digest(&der)),
        Some(Err(e)) => Err(TokenError::BadCaPem {
            reason: e.to_string(),
        }),
        None => Err(TokenError::BadCaPem {
            reason: "it holds no certificate".into(),
        }),
    }
}

/// A parsed join token. `Display` gives the token string back.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// Lowercase hex SHA-256 of the root CA certificate's DER.
    pub ca_digest: String,
    /// The role secret; compare it with [`secret_matches`] only.
    pub secret: String,
}

impl JoinToken {
    /// Parses a token, tolerating the surrounding whitespace a copy-paste adds.
    pub fn parse(token: &str) -> Result<Self, TokenError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(TokenError::Empty);
        }
        let fields: Vec<&str> = token.split('-').collect();
        // Check the prefix before the field count: a wrong prefix is the more
        // useful message when someone pastes some other kind of token.
        if fields[0] != TOKEN_PREFIX {
            return Err(TokenError::WrongPrefix {
                prefix: shorten(fields[0]),
            });
        }
        if fields.len() >= 2 && fields[1] != TOKEN_VERSION {
            return Err(TokenError::WrongVersion {
                version: shorten(fields[1]),
            });
        }
        let [_, _, digest, secret] = fields[..] else {
            return Err(TokenError::WrongFieldCount {
                parts: fields.len(),
            });
        };
        if digest.len() != DIGEST_HEX_LEN
            || !digest
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(TokenError::BadDigest {
                digest: shorten(digest),
            });
        }
        if secret.len() != SECRET_LEN || !secret.bytes().all(|b| SECRET_ALPHABET.contains(&b)) {
            return Err(TokenError::BadSecret {
                len: secret.chars().count(),
            });
        }
        Ok(JoinToken {
            ca_digest: digest.to_string(),
            secret: secret.to_string(),
        })
    }

    /// A fresh role secret from the operating system's CSPRNG.
    pub fn generate_secret() -> String {
        generate_secret()
    }
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{TOKEN_PREFIX}-{TOKEN_VERSION}-{}-{}",
            self.ca_digest, self.secret
        )
    }
}

// Debug hides the secret so a token logged with `{:?}` does not leak it.
impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken")
            .field("ca_digest", &self.ca_digest)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// A fresh role secret: 25 characters of `[a-z0-9]` from the OS CSPRNG.
pub fn generate_secret() -> String {
    // `Slice` samples uniformly (rejection sampling), so no symbol is favoured.
    let alphabet =
        Slice::new(SECRET_ALPHABET).unwrap_or_else(|_| unreachable!("the alphabet is not empty"));
    alphabet
        .sample_iter(rand::rngs::OsRng)
        .take(SECRET_LEN)
        .map(|&b| char::from(b))
        .collect()
}

/// Compares secrets in constant time so response timing does not reveal how
/// much of a guessed secret was right.
pub fn secret_matches(expected: &str, given: &str) -> bool {
    // An unset secret must never match an empty guess.
    !expected.is_empty() && bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
}

/// Keeps error messages readable when someone pastes something huge.
fn shorten(value: &str) -> String {
    const MAX: usize = 80;
    match value.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}...", &value[..cut]),
        None => value.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const SECRET: &str = "abcdefghijklmnopqrstuvw12";

    fn token(digest: &str, secret: &str) -> String {
        format!("SHLTKN-1-{digest}-{secret}")
    }

    #[test]
    fn round_trips() {
        let text = token(DIGEST, SECRET);
        let parsed = JoinToken::parse(&text).expect("valid token");
        assert_eq!(parsed.ca_digest, DIGEST);
        assert_eq!(parsed.secret, SECRET);
        assert_eq!(parsed.to_string(), text);
    }

    #[test]
    fn tolerates_surrounding_whitespace() {
        let parsed =
            JoinToken::parse(&format!("  {}\n", token(DIGEST, SECRET))).expect("valid token");
        assert_eq!(parsed.secret, SECRET);
    }

    #[test]
    fn generated_secrets_parse_and_differ() {
        let a = generate_secret();
        let b = JoinToken::generate_secret();
        assert_eq!(a.len(), SECRET_LEN);
        assert!(a.bytes().all(|c| SECRET_ALPHABET.contains(&c)));
        assert_ne!(a, b);
        assert!(JoinToken::parse(&token(DIGEST, &a)).is_ok());
    }

    #[test]
    fn rejects_every_malformed_shape() {
        let cases: Vec<(String, TokenError)> = vec![
            (String::new(), TokenError::Empty),
            ("   ".into(), TokenError::Empty),
            (
                format!("SWMTKN-1-{DIGEST}-{SECRET}"),
                TokenError::WrongPrefix {
                    prefix: "SWMTKN".into(),
                },
            ),
            (
                format!("shltkn-1-{DIGEST}-{SECRET}"),
                TokenError::WrongPrefix {
                    prefix: "shltkn".into(),
                },
            ),
            (
                format!("SHLTKN-2-{DIGEST}-{SECRET}"),
                TokenError::WrongVersion {
                    version: "2".into(),
                },
            ),
            ("SHLTKN".into(), TokenError::WrongFieldCount { parts: 1 }),
            (
                format!("SHLTKN-1-{DIGEST}"),
                TokenError::WrongFieldCount { parts: 3 },
            ),
            (
                format!("SHLTKN-1-{DIGEST}-{SECRET}-x"),
                TokenError::WrongFieldCount { parts: 5 },
            ),
            (
                token(&DIGEST[1..], SECRET),
                TokenError::BadDigest {
                    digest: DIGEST[1..].into(),
                },
            ),
            (
                token(&format!("{DIGEST}0"), SECRET),
                TokenError::BadDigest {
                    digest: format!("{DIGEST}0"),
                },
            ),
            (
                token(&DIGEST.to_uppercase(), SECRET),
                TokenError::BadDigest {
                    digest: DIGEST.to_uppercase(),
                },
            ),
            (
                token(&DIGEST.replace('a', "g"), SECRET),
                TokenError::BadDigest {
                    digest: DIGEST.replace('a', "g"),
                },
            ),
            (
                token(DIGEST, &SECRET[1..]),
                TokenError::BadSecret { len: 24 },
            ),
            (
                token(DIGEST, &format!("{SECRET}x")),
                TokenError::BadSecret { len: 26 },
            ),
            (
                token(DIGEST, &SECRET.to_uppercase()),
                TokenError::BadSecret { len: 25 },
            ),
            (
                token(DIGEST, &SECRET.replace('a', "_")),
                TokenError::BadSecret { len: 25 },
            ),
            (
                token(DIGEST, &SECRET.replace('a', "é")),
                TokenError::BadSecret { len: 25 },
            ),
            (token(DIGEST, ""), TokenError::BadSecret { len: 0 }),
        ];
        for (input, expected) in cases {
            assert_eq!(JoinToken::parse(&input), Err(expected), "input {input:?}");
        }
    }

    #[test]
    fn errors_do_not_echo_the_secret() {
        let bad = token(DIGEST, "SECRETSECRETSECRETSECRETS");
        let message = JoinToken::parse(&bad).unwrap_err().to_string();
        assert!(!message.contains("SECRET"), "{message}");
        let parsed = JoinToken::parse(&token(DIGEST, SECRET)).expect("valid token");
        assert!(!format!("{parsed:?}").contains(SECRET));
    }

    #[test]
    fn long_garbage_is_shortened_in_messages() {
        let garbage = "x".repeat(10_000);
        let message = JoinToken::parse(&garbage).unwrap_err().to_string();
        assert!(message.len() < 300, "{message}");
    }

    #[test]
    fn secrets_compare_exactly() {
        assert!(secret_matches(SECRET, SECRET));
        assert!(!secret_matches(SECRET, &SECRET[1..]));
        assert!(!secret_matches(SECRET, &SECRET.replace('a', "b")));
        assert!(!secret_matches("", ""));
    }

    #[test]
    fn digest_is_hex_sha256() {
        // sha256("") is a well-known constant.
        assert_eq!(
            ca_digest(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(matches!(
            ca_digest_from_pem("not a pem"),
            Err(TokenError::BadCaPem { .. })
        ));
    }
}
