//! The distribution-protocol client for one pull.
//!
//! Why `oci-client`: it is the maintained Rust implementation of the OCI
//! distribution spec (the one krustlet/wasmCloud/sigstore use) and already
//! handles the parts that are easy to get subtly wrong: the `/v2/` probe,
//! WWW-Authenticate bearer challenges (realm/service/scope), token caching,
//! basic-auth fallback, redirects to blob storage. What it leaves to us it
//! leaves cleanly: raw manifest bytes (so we pick the platform and name the
//! ones on offer), and blob bodies as streams (so we hash while writing to a
//! temp file and keep nothing unverified). Per-host plain HTTP is a
//! per-client setting, so each pull builds its own client for its registry,
//! which also keeps one caller's credentials from leaking into another's.
//! TLS is reqwest's rustls without a bundled provider; we install *ring*,
//! the provider the rest of the workspace uses.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::manifest::OciDescriptor;
use oci_client::RegistryOperation;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;

use super::digest::Digest;
use super::error::{ImageError, Result};
use super::reference::Reference;

/// Credentials for one registry; most pulls need none.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum RegistryAuth {
    #[default]
    Anonymous,
    Basic {
        username: String,
        password: String,
    },
    /// An already issued bearer token (e.g. an identity token).
    Bearer(String),
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Anonymous => f.write_str("Anonymous"),
            Self::Basic { username, .. } => write!(f, "Basic({username}, ****)"),
            Self::Bearer(_) => f.write_str("Bearer(****)"),
        }
    }
}

impl RegistryAuth {
    fn to_oci(&self) -> oci_client::secrets::RegistryAuth {
        use oci_client::secrets::RegistryAuth as Oci;
        match self {
            Self::Anonymous => Oci::Anonymous,
            Self::Basic { username, password } => Oci::Basic(username.clone(), password.clone()),
            Self::Bearer(token) => Oci::Bearer(token.clone()),
        }
    }
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether `registry` (`host[:port]`) is spoken to over plain HTTP: loopback
/// always (as docker does), others only when listed as insecure.
pub fn uses_plain_http(registry: &str, insecure: &[String]) -> bool {
    let host = match registry.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => registry.rsplit_once(':').map_or(registry, |(h, _)| h),
    };
    let loopback = host == "localhost"
        || host.parse::<IpAddr>().is_ok_and(|ip| match ip {
            IpAddr::V4(v4) => v4.is_loopback() || v4 == Ipv4Addr::LOCALHOST,
            IpAddr::V6(v6) => v6.is_loopback(),
        });
    loopback
        || insecure
            .iter()
            .any(|entry| entry == registry || entry == host)
}

/// A client bound to one registry and one set of credentials.
pub struct RegistryClient {
    client: oci_client::Client,
    auth: oci_client::secrets::RegistryAuth,
}

impl RegistryClient {
    pub fn new(registry: &str, auth: &RegistryAuth, insecure: &[String]) -> Self {
        // reqwest is built without a crypto provider; a second install is a no-op error.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let protocol = if uses_plain_http(registry, insecure) {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        };
        let config = ClientConfig {
            protocol,
            connect_timeout: Some(CONNECT_TIMEOUT),
            read_timeout: Some(READ_TIMEOUT),
            platform_resolver: None,
            user_agent: concat!("shoal/", env!("CARGO_PKG_VERSION")),
            ..ClientConfig::default()
        };
        Self {
            client: oci_client::Client::new(config),
            auth: auth.to_oci(),
        }
    }

    /// Runs the `/v2/` probe and, when the registry challenges, the token exchange.
    pub async fn authenticate(&self, reference: &Reference) -> Result<()> {
        self.authenticate_for(reference, RegistryOperation::Pull).await
    }

    async fn authenticate_for(&self, reference: &Reference, operation: RegistryOperation) -> Result<()> {
        self.client
            .auth(&to_oci_ref(reference), &self.auth, operation)
            .await
            .map(drop)
            .map_err(|e| classify(e, reference))
    }

    /// Fetches a manifest or index and checks it against the digest it was
    /// asked by, if any. Returns the bytes and their digest.
    pub async fn fetch_manifest(&self, reference: &Reference) -> Result<(Vec<u8>, Digest)> {
        let accepted = super::manifest::ACCEPTED_MANIFEST_TYPES;
        let (bytes, _) = self
            .client
            .pull_manifest_raw(&to_oci_ref(reference), &self.auth, accepted)
            .await
            .map_err(|e| classify(e, reference))?;
        let actual = Digest::of_bytes(&bytes);
        if let Some(expected) = reference.digest() {
            if &actual != expected {
                return Err(ImageError::DigestMismatch {
                    what: format!("the manifest of {reference}"),
                    expected: expected.clone(),
                    actual,
                });
            }
        }
        Ok((bytes.to_vec(), actual))
    }

    /// A small blob (an image configuration) in memory, verified against
    /// `digest`; refused above `limit` bytes so a registry cannot make the
    /// caller hold more than it expects.
    pub async fn fetch_small_blob(&self, reference: &Reference, digest: &Digest, limit: u64) -> Result<Vec<u8>> {
        let descriptor = OciDescriptor { digest: digest.to_string(), ..Default::default() };
        let mut stream = self
            .client
            .pull_blob_stream(&to_oci_ref(reference), &descriptor)
            .await
            .map_err(|e| classify(e, reference))?;
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| ImageError::Registry {
                registry: reference.registry().to_owned(),
                image: reference.familiar(),
                reason: format!("reading blob {digest} failed ({e})"),
            })?;
            bytes.extend_from_slice(&chunk);
            if bytes.len() as u64 > limit {
                return Err(ImageError::Registry {
                    registry: reference.registry().to_owned(),
                    image: reference.familiar(),
                    reason: format!("blob {digest} is larger than the {limit} bytes an image configuration may take"),
                });
            }
        }
        let actual = Digest::of_bytes(&bytes);
        if &actual != digest {
            return Err(ImageError::DigestMismatch { what: format!("blob {digest} of {reference}"), expected: digest.clone(), actual });
        }
        Ok(bytes)
    }

    /// Streams a blob into `dest` (a fresh temp file) while hashing it, and
    /// fails unless it matches `digest`. The caller renames `dest` into the
    /// store only on success. `on_bytes` gets the running byte count.
    pub async fn fetch_blob(
        &self,
        reference: &Reference,
        digest: &Digest,
        size: u64,
        dest: &Path,
        on_bytes: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<()> {
        let descriptor = OciDescriptor {
            digest: digest.to_string(),
            size: size as i64,
            ..Default::default()
        };
        let mut stream = self
            .client
            .pull_blob_stream(&to_oci_ref(reference), &descriptor)
            .await
            .map_err(|e| classify(e, reference))?;
        let write_err = |e| ImageError::io(format!("cannot write {}", dest.display()), e);
        let mut file = tokio::fs::File::create(dest).await.map_err(write_err)?;
        let mut hasher = Sha256::new();
        let mut received = 0u64;
        let mut failure = None;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(bytes) => {
                    hasher.update(&bytes);
                    received += bytes.len() as u64;
                    // The manifest fixes the size; a registry sending more
                    // must not be able to fill the disk.
                    if size > 0 && received > size {
                        return Err(ImageError::Registry {
                            registry: reference.registry().to_owned(),
                            image: reference.familiar(),
                            reason: format!(
                                "blob {digest} is larger than the {size} bytes its manifest says"
                            ),
                        });
                    }
                    file.write_all(&bytes).await.map_err(write_err)?;
                    on_bytes(received);
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        let actual = Digest::from_hasher(hasher);
        // oci-client's own verifying stream fails at the end on a mismatch;
        // report that (and a short body) as what it is.
        let verified_elsewhere = failure.as_ref().is_some_and(|e| {
            e.get_ref()
                .is_some_and(|inner| inner.is::<oci_client::errors::DigestError>())
        });
        if let Some(e) = failure.filter(|_| !verified_elsewhere) {
            return Err(ImageError::Registry {
                registry: reference.registry().to_owned(),
                image: reference.familiar(),
                reason: format!("the download of blob {digest} broke off ({e})"),
            });
        }
        if &actual != digest {
            return Err(ImageError::DigestMismatch {
                what: format!("blob {} of {}", digest.short(), reference.familiar()),
                expected: digest.clone(),
                actual,
            });
        }
        file.flush().await.map_err(write_err)?;
        file.sync_all().await.map_err(write_err)?;
        Ok(())
    }
}

/// Pushing: the registry side of [`super::ImageStore::push`].
impl RegistryClient {
    /// Logs in for pushing to `reference`'s repository: the `/v2/` probe
    /// and, when the registry challenges, the token exchange for push.
    pub async fn authenticate_push(&self, reference: &Reference) -> Result<()> {
        self.authenticate_for(reference, RegistryOperation::Push).await
    }

    /// Whether the repository already holds the blob (pushing it again is
    /// skipped, as docker says `Layer already exists`).
    pub async fn has_blob(&self, reference: &Reference, digest: &Digest) -> Result<bool> {
        self.client.blob_exists(&to_oci_ref(reference), &digest.to_string()).await.map_err(|e| classify(e, reference))
    }

    /// Uploads the file at `path` as the blob `digest`, streamed in chunks;
    /// `on_bytes` gets the running byte count.
    pub async fn push_blob(
        &self,
        reference: &Reference,
        digest: &Digest,
        path: &Path,
        on_bytes: std::sync::Arc<dyn Fn(u64) + Send + Sync>,
    ) -> Result<()> {
        let file = tokio::fs::File::open(path).await.map_err(|e| ImageError::io(format!("cannot read {}", path.display()), e))?;
        let size = file.metadata().await.map(|m| m.len()).ok();
        let chunks = futures::stream::unfold((file, 0u64), move |(mut file, sent)| {
            let on_bytes = on_bytes.clone();
            async move {
                use tokio::io::AsyncReadExt;
                let mut buffer = vec![0u8; PUSH_CHUNK];
                match file.read(&mut buffer).await {
                    Ok(0) => None,
                    Ok(n) => {
                        buffer.truncate(n);
                        on_bytes(sent + n as u64);
                        Some((Ok(bytes::Bytes::from(buffer)), (file, sent + n as u64)))
                    }
                    Err(e) => Some((Err(OciDistributionError::IoError(e)), (file, sent))),
                }
            }
        });
        self.client
            .push_blob_stream(&to_oci_ref(reference), chunks, &digest.to_string(), size)
            .await
            .map(drop)
            .map_err(|e| classify(e, reference))
    }

    /// Puts the manifest `bytes` (of `media_type`) under the reference's tag.
    pub async fn push_manifest(&self, reference: &Reference, bytes: Vec<u8>, media_type: &str) -> Result<()> {
        let content_type = reqwest_header(media_type)?;
        self.client.push_manifest_raw(&to_oci_ref(reference), bytes, content_type).await.map(drop).map_err(|e| classify(e, reference))
    }
}

/// Checks `auth` against `registry` (`shoal login`): its `/v2/` probe
/// with the credentials must pass, and where it sends clients to a token
/// service, that service must issue a token for them.
pub async fn verify_login(registry: &str, auth: &RegistryAuth, insecure: &[String]) -> Result<()> {
    let RegistryAuth::Basic { username, password } = auth else {
        return Err(ImageError::LoginRefused { registry: registry.to_string(), reason: "a login needs a username and a password".into() });
    };
    let host = if registry == "docker.io" { "registry-1.docker.io" } else { registry };
    let scheme = if uses_plain_http(host, insecure) { "http" } else { "https" };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(READ_TIMEOUT)
        .build()
        .map_err(|e| ImageError::RegistryUnreachable { registry: registry.to_string(), reason: e.to_string() })?;
    let answer = client
        .get(format!("{scheme}://{host}/v2/"))
        .basic_auth(username, Some(password))
        .send()
        .await
        .map_err(|e| ImageError::RegistryUnreachable { registry: registry.to_string(), reason: innermost(&e) })?;
    if answer.status().is_success() {
        return Ok(());
    }
    let bearer = answer
        .headers()
        .get(http::header::WWW_AUTHENTICATE)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|h| h.trim_start().to_ascii_lowercase().starts_with("bearer"));
    if answer.status() != http::StatusCode::UNAUTHORIZED || !bearer {
        return Err(ImageError::LoginRefused { registry: registry.to_string(), reason: format!("it answered {}", answer.status()) });
    }
    // A token service: it vouches for the credentials by issuing a token.
    let probe = Reference::parse(&format!("{registry}/library/shoal-login"))?;
    RegistryClient::new(registry, auth, insecure).authenticate(&probe).await.map_err(|e| match e {
        ImageError::AuthRefused { reason, .. } => ImageError::LoginRefused { registry: registry.to_string(), reason },
        other => other,
    })
}

/// Blob uploads go in chunks of this size.
const PUSH_CHUNK: usize = 1 << 20;

fn reqwest_header(value: &str) -> Result<http::HeaderValue> {
    http::HeaderValue::from_str(value)
        .map_err(|_| ImageError::io("cannot name the manifest's media type", std::io::Error::other(value.to_string())))
}

fn to_oci_ref(reference: &Reference) -> oci_client::Reference {
    let registry = reference.registry().to_owned();
    let repository = reference.repository().to_owned();
    match reference.digest() {
        Some(digest) => {
            oci_client::Reference::with_digest(registry, repository, digest.to_string())
        }
        None => oci_client::Reference::with_tag(
            registry,
            repository,
            reference
                .tag()
                .unwrap_or(super::reference::DEFAULT_TAG)
                .to_owned(),
        ),
    }
}

/// Turns the library's errors into our one-sentence kinds.
fn classify(error: OciDistributionError, reference: &Reference) -> ImageError {
    let registry = reference.registry().to_owned();
    let image = reference.familiar();
    match error {
        OciDistributionError::RequestError(e) if e.is_connect() || e.is_timeout() => {
            ImageError::RegistryUnreachable {
                registry,
                reason: innermost(&e),
            }
        }
        OciDistributionError::RequestError(e)
            if matches!(e.status(), Some(http::StatusCode::UNAUTHORIZED | http::StatusCode::FORBIDDEN)) =>
        {
            ImageError::AuthRefused {
                registry,
                image,
                reason: format!("it answered {}", e.status().map(|s| s.to_string()).unwrap_or_default()),
            }
        }
        OciDistributionError::AuthenticationFailure(reason) => ImageError::AuthRefused {
            registry,
            image,
            reason: one_line(&reason, "the token service said no"),
        },
        OciDistributionError::UnauthorizedError { .. } => ImageError::AuthRefused {
            registry,
            image,
            reason: "it answered 401 Unauthorized".into(),
        },
        OciDistributionError::ImageManifestNotFoundError(_) => {
            ImageError::NotFound { image, registry }
        }
        OciDistributionError::RegistryError { envelope, .. } => {
            use oci_client::errors::OciErrorCode as Code;
            let said = |wanted: &[Code]| envelope.errors.iter().any(|e| wanted.contains(&e.code));
            if said(&[
                Code::ManifestUnknown,
                Code::NameUnknown,
                Code::BlobUnknown,
                Code::NotFound,
            ]) {
                ImageError::NotFound { image, registry }
            } else if said(&[Code::Unauthorized, Code::Denied]) {
                let reason = envelope
                    .errors
                    .first()
                    .map(|e| e.message.clone())
                    .unwrap_or_default();
                ImageError::AuthRefused {
                    registry,
                    image,
                    reason: one_line(&reason, "access denied"),
                }
            } else {
                let reason = envelope
                    .errors
                    .iter()
                    .map(|e| format!("{:?}: {}", e.code, e.message))
                    .collect::<Vec<_>>()
                    .join("; ");
                ImageError::Registry {
                    registry,
                    image,
                    reason,
                }
            }
        }
        OciDistributionError::ServerError { code: 404, .. } => {
            ImageError::NotFound { image, registry }
        }
        OciDistributionError::ServerError { code, message, .. } => ImageError::Registry {
            registry,
            image,
            reason: format!("HTTP {code} {}", one_line(&message, "")),
        },
        OciDistributionError::RequestError(e) => ImageError::Registry {
            registry,
            image,
            reason: innermost(&e),
        },
        other => ImageError::Registry {
            registry,
            image,
            reason: one_line(&other.to_string(), "unknown error"),
        },
    }
}

/// reqwest wraps the cause ("Connection refused") several levels deep.
fn innermost(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(next) = current.source() {
        current = next;
    }
    one_line(&current.to_string(), "unknown error")
}

fn one_line(text: &str, fallback: &str) -> String {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or(fallback);
    let mut line = line.trim_end_matches('.').to_owned();
    if line.len() > 200 {
        line.truncate(line.char_indices().nth(200).map_or(line.len(), |(i, _)| i));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_for_loopback_and_listed_hosts() {
        let insecure = vec!["registry.local:5000".to_owned(), "10.0.0.9".to_owned()];
        assert!(uses_plain_http("127.0.0.1:5000", &[]));
        assert!(uses_plain_http("127.3.2.1", &[]));
        assert!(uses_plain_http("localhost:5000", &[]));
        assert!(uses_plain_http("[::1]:5000", &[]));
        assert!(uses_plain_http("registry.local:5000", &insecure));
        assert!(uses_plain_http("10.0.0.9:443", &insecure));
        assert!(!uses_plain_http("registry.local:5001", &insecure));
        assert!(!uses_plain_http("docker.io", &insecure));
        assert!(!uses_plain_http("198.18.0.1:5000", &[]));
    }
}
