//! Manifests and indexes (OCI and Docker schema 2), and choosing the
//! linux/amd64 image out of an index.

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};

use super::digest::Digest;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// What a registry may answer for a pull, in order of preference.
pub const ACCEPTED_MANIFEST_TYPES: &[&str] = &[
    OCI_INDEX,
    DOCKER_MANIFEST_LIST,
    OCI_MANIFEST,
    DOCKER_MANIFEST,
];

pub const WANTED_OS: &str = "linux";
pub const WANTED_ARCH: &str = "amd64";

#[derive(Debug)]
pub enum Manifest {
    Image(Box<ImageManifest>),
    Index(Box<ImageIndex>),
}

/// Parses either kind; the `mediaType` field is optional in OCI, so its
/// absence is decided by the shape (`manifests` vs `layers`).
pub fn parse_manifest(bytes: &[u8]) -> Result<Manifest, String> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("it is not JSON ({e})"))?;
    let media_type = value
        .get("mediaType")
        .and_then(|m| m.as_str())
        .unwrap_or_default();
    let schema = value
        .get("schemaVersion")
        .and_then(|v| v.as_i64())
        .unwrap_or_default();
    if schema == 1 {
        return Err(
            "Docker schema 1 manifests are not supported; push the image again with a current tool"
                .into(),
        );
    }
    let is_index = matches!(media_type, OCI_INDEX | DOCKER_MANIFEST_LIST)
        || (media_type.is_empty() && value.get("manifests").is_some());
    if is_index {
        serde_json::from_value(value)
            .map(|i| Manifest::Index(Box::new(i)))
            .map_err(|e| format!("bad index ({e})"))
    } else if matches!(media_type, OCI_MANIFEST | DOCKER_MANIFEST | "") {
        serde_json::from_value(value)
            .map(|m| Manifest::Image(Box::new(m)))
            .map_err(|e| format!("bad manifest ({e})"))
    } else {
        Err(format!("media type {media_type} is not an image manifest"))
    }
}

/// The linux/amd64 entry of an index, or the platforms it does offer.
pub fn select_platform(index: &ImageIndex) -> Result<&Descriptor, String> {
    let mut available = Vec::new();
    for entry in index.manifests() {
        match entry.platform() {
            Some(p) => {
                let (os, arch) = (p.os().to_string(), p.architecture().to_string());
                if os == WANTED_OS && arch == WANTED_ARCH {
                    return Ok(entry);
                }
                // Attestation manifests (buildkit) say unknown/unknown; not a platform.
                if os == "unknown" {
                    continue;
                }
                let mut name = format!("{os}/{arch}");
                if let Some(variant) = p.variant() {
                    name.push('/');
                    name.push_str(variant);
                }
                available.push(name);
            }
            None => available.push("unspecified".into()),
        }
    }
    available.sort();
    available.dedup();
    if available.is_empty() {
        available.push("none".into());
    }
    Err(available.join(", "))
}

/// An image's OS and CPU architecture (`linux`, `amd64`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImagePlatform {
    pub os: String,
    pub architecture: String,
}

/// The platforms an index offers, without attestation entries.
pub fn index_platforms(index: &ImageIndex) -> Vec<ImagePlatform> {
    let mut platforms: Vec<ImagePlatform> = index
        .manifests()
        .iter()
        .filter_map(|entry| entry.platform().as_ref())
        .filter(|p| p.os().to_string() != "unknown")
        .map(|p| ImagePlatform { os: p.os().to_string(), architecture: p.architecture().to_string() })
        .collect();
    platforms.dedup();
    platforms
}

pub fn descriptor_digest(descriptor: &Descriptor) -> Result<Digest, String> {
    let raw = descriptor.digest().to_string();
    Digest::parse(&raw).ok_or_else(|| format!("digest \"{raw}\" is not a sha256 digest"))
}

/// Whether a layer's media type is a (possibly compressed) filesystem tar.
pub fn is_layer_media_type(media_type: &str) -> bool {
    media_type.starts_with("application/vnd.oci.image.layer.")
        || media_type.starts_with("application/vnd.docker.image.rootfs.diff.tar")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(platforms: &[(&str, &str)]) -> ImageIndex {
        let manifests: Vec<_> = platforms
            .iter()
            .enumerate()
            .map(|(i, (os, arch))| {
                serde_json::json!({
                    "mediaType": OCI_MANIFEST,
                    "digest": format!("sha256:{}", format!("{i:x}").repeat(64).get(..64).unwrap()),
                    "size": 10,
                    "platform": {"os": os, "architecture": arch}
                })
            })
            .collect();
        let json =
            serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests});
        match parse_manifest(json.to_string().as_bytes()).unwrap() {
            Manifest::Index(i) => *i,
            Manifest::Image(_) => panic!("parsed as image"),
        }
    }

    #[test]
    fn picks_linux_amd64() {
        let idx = index(&[("linux", "arm64"), ("linux", "amd64")]);
        assert!(select_platform(&idx)
            .unwrap()
            .digest()
            .to_string()
            .ends_with("1111"));
    }

    #[test]
    fn lists_other_platforms() {
        let idx = index(&[
            ("linux", "arm64"),
            ("windows", "amd64"),
            ("unknown", "unknown"),
        ]);
        assert_eq!(
            select_platform(&idx).unwrap_err(),
            "linux/arm64, windows/amd64"
        );
    }

    #[test]
    fn refuses_schema1() {
        assert!(parse_manifest(br#"{"schemaVersion":1,"fsLayers":[]}"#)
            .unwrap_err()
            .contains("schema 1"));
    }
}
