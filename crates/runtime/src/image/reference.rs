//! Image references, normalised the way docker does
//! (`busybox` is `docker.io/library/busybox:latest`).

use std::fmt;
use std::str::FromStr;

use super::digest::Digest;
use super::error::ImageError;

pub const DEFAULT_REGISTRY: &str = "docker.io";
pub const DEFAULT_TAG: &str = "latest";
const OFFICIAL_NAMESPACE: &str = "library/";
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

const NAME_RULE: &str = "repository names must be lowercase and may contain only letters, \
     digits, single '.', '_' or '-' separators and '/' between components \
     (for example \"busybox\" or \"registry.local:5000/team/app:1\")";

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    pub fn parse(input: &str) -> Result<Self, ImageError> {
        let invalid = |reason: String| ImageError::InvalidReference {
            reference: input.to_owned(),
            reason,
        };
        if input.is_empty() {
            return Err(invalid(
                "the reference is empty; give a name such as \"busybox\"".to_owned(),
            ));
        }

        let (rest, digest) = match input.split_once('@') {
            Some((rest, digest)) => {
                let parsed = Digest::parse(digest).ok_or_else(|| {
                    invalid(format!(
                        "digest \"{digest}\" must be \"sha256:\" followed by 64 lowercase hex digits"
                    ))
                })?;
                (rest, Some(parsed))
            }
            None => (input, None),
        };

        // A ':' after the last '/' starts the tag; one before it belongs to a registry port.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(tag) = tag {
            if !is_valid_tag(tag) {
                return Err(invalid(format!(
                    "tag \"{tag}\" must be 1 to {MAX_TAG_LEN} letters, digits, '_', '.' or '-' \
                     and must not start with '.' or '-'"
                )));
            }
        }

        let (registry, path) = split_registry(name);
        if let Some(registry) = registry {
            if !is_valid_registry(registry) {
                return Err(invalid(format!(
                    "registry \"{registry}\" is not a valid host name, IP address or host:port"
                )));
            }
        }
        if path.is_empty() || !path.split('/').all(is_valid_path_component) {
            return Err(invalid(NAME_RULE.to_owned()));
        }
        if name.len() > MAX_NAME_LEN {
            return Err(invalid(format!(
                "repository names must be at most {MAX_NAME_LEN} characters long"
            )));
        }

        let registry = match registry {
            None | Some("index.docker.io") => DEFAULT_REGISTRY,
            Some(r) => r,
        };
        let repository = if registry == DEFAULT_REGISTRY && !path.contains('/') {
            format!("{OFFICIAL_NAMESPACE}{path}")
        } else {
            path.to_owned()
        };
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_owned()),
            (None, Some(_)) => None,
            (None, None) => Some(DEFAULT_TAG.to_owned()),
        };
        Ok(Self {
            registry: registry.to_owned(),
            repository,
            tag,
            digest,
        })
    }

    /// The registry host (and port), e.g. `docker.io` or `127.0.0.1:5000`.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path inside the registry, e.g. `library/busybox`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// `registry/repository`, the form used in repo tags and repo digests.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// `registry/repository:tag` when the reference has a tag.
    pub fn tagged_name(&self) -> Option<String> {
        self.tag.as_ref().map(|t| format!("{}:{t}", self.name()))
    }

    /// `registry/repository@digest`.
    pub fn digested_name(&self, digest: &Digest) -> String {
        format!("{}@{digest}", self.name())
    }

    /// The same repository at `digest` (and no tag): how a child manifest of
    /// an index is addressed.
    pub fn at_digest(&self, digest: Digest) -> Self {
        Self {
            digest: Some(digest),
            tag: None,
            ..self.clone()
        }
    }

    /// The short form docker prints: `busybox:latest`, `user/app:1`,
    /// `127.0.0.1:5000/busybox:1`.
    pub fn familiar(&self) -> String {
        let mut out = if self.registry == DEFAULT_REGISTRY {
            self.repository
                .strip_prefix(OFFICIAL_NAMESPACE)
                .unwrap_or(&self.repository)
                .to_owned()
        } else {
            self.name()
        };
        if let Some(tag) = &self.tag {
            out.push(':');
            out.push_str(tag);
        }
        if let Some(digest) = &self.digest {
            out.push('@');
            out.push_str(digest.as_str());
        }
        out
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = ImageError;
    fn from_str(s: &str) -> Result<Self, ImageError> {
        Self::parse(s)
    }
}

/// Docker's rule: the first component names a registry when it looks like a
/// host (has a '.' or a port, or is `localhost`); otherwise the name lives on
/// Docker Hub.
fn split_registry(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

fn is_valid_tag(tag: &str) -> bool {
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_TAG_LEN
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// `[a-z0-9]+` runs joined by exactly one of `.`, `_`, `__` or a run of `-`.
fn is_valid_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(&bytes[0]) || !alnum(&bytes[bytes.len() - 1]) {
        return false;
    }
    let mut separator = String::new();
    for &b in bytes {
        if alnum(&b) {
            let ok = matches!(separator.as_str(), "" | "." | "_" | "__")
                || separator.bytes().all(|s| s == b'-');
            if !ok {
                return false;
            }
            separator.clear();
        } else if matches!(b, b'.' | b'_' | b'-') {
            separator.push(b as char);
        } else {
            return false;
        }
    }
    true
}

fn is_valid_registry(registry: &str) -> bool {
    let (host, port) = if let Some(rest) = registry.strip_prefix('[') {
        // Bracketed IPv6 literal, optionally followed by :port.
        let Some((addr, after)) = rest.split_once(']') else {
            return false;
        };
        if addr.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        match after {
            "" => return true,
            _ => match after.strip_prefix(':') {
                Some(port) => ("", Some(port)),
                None => return false,
            },
        }
    } else {
        match registry.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (registry, None),
        }
    };
    if let Some(port) = port {
        if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    if registry.starts_with('[') {
        return true;
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Reference {
        Reference::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn reject(s: &str) -> String {
        match Reference::parse(s) {
            Ok(r) => panic!("{s} parsed as {r}"),
            Err(e) => e.to_string(),
        }
    }

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn normalises_docker_hub_names() {
        assert_eq!(
            parse("busybox").to_string(),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            parse("busybox:1.36").to_string(),
            "docker.io/library/busybox:1.36"
        );
        assert_eq!(parse("user/app").to_string(), "docker.io/user/app:latest");
        assert_eq!(
            parse("docker.io/busybox").to_string(),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            parse("index.docker.io/library/busybox:1").to_string(),
            "docker.io/library/busybox:1"
        );
        assert_eq!(parse("busybox").familiar(), "busybox:latest");
        assert_eq!(parse("user/app:2").familiar(), "user/app:2");
    }

    #[test]
    fn parses_registry_host_port_and_paths() {
        let r = parse("127.0.0.1:5000/busybox:1");
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.repository(), "busybox");
        assert_eq!(r.tag(), Some("1"));
        assert_eq!(r.familiar(), "127.0.0.1:5000/busybox:1");

        let r = parse("registry.local:5000/team/sub/app");
        assert_eq!(r.registry(), "registry.local:5000");
        assert_eq!(r.repository(), "team/sub/app");
        assert_eq!(r.tag(), Some("latest"));

        let r = parse("localhost/app:v1.2_3-rc");
        assert_eq!(r.registry(), "localhost");
        assert_eq!(r.tag(), Some("v1.2_3-rc"));

        let r = parse("[::1]:5000/app");
        assert_eq!(r.registry(), "[::1]:5000");
        assert_eq!(
            parse("quay.io/a__b/c-d--e/f.g").repository(),
            "a__b/c-d--e/f.g"
        );
    }

    #[test]
    fn parses_digests_with_and_without_tag() {
        let r = parse(&format!("busybox@{D}"));
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest().map(Digest::as_str), Some(D));
        assert_eq!(r.to_string(), format!("docker.io/library/busybox@{D}"));

        let r = parse(&format!("127.0.0.1:5000/app:1@{D}"));
        assert_eq!(r.tag(), Some("1"));
        assert!(r.digest().is_some());
        assert_eq!(r.name(), "127.0.0.1:5000/app");
    }

    #[test]
    fn rejects_invalid_references_with_a_reason() {
        let msg = reject("Busy Box");
        assert!(
            msg.starts_with(
                "invalid image reference \"Busy Box\": repository names must be lowercase"
            ),
            "{msg}"
        );
        assert!(reject("busybox:").contains("tag \"\""));
        assert!(reject("busybox:-x").contains("tag"));
        assert!(reject(&format!("busybox:{}", "a".repeat(129))).contains("tag"));
        assert!(reject("busybox@sha256:abc").contains("digest"));
        assert!(reject("busybox@md5:abc").contains("digest"));
        assert!(reject("").contains("empty"));
        assert!(reject("registry.local:port/app").contains("registry"));
        assert!(reject("-bad.host/app").contains("registry"));
        assert!(reject("a//b").contains("lowercase"));
        assert!(reject("app-").contains("lowercase"));
        assert!(reject("a..b").contains("lowercase"));
        assert!(reject("a_-b").contains("lowercase"));
        assert!(reject(&format!("x.io/{}", "a".repeat(260))).contains("255"));
    }
}
