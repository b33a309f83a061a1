//! Reading image archives for `load`: an OCI image layout in a tar
//! (`oci-archive`, `docker save` from docker 25 on) or the classic
//! `docker save` format (`manifest.json` with `RepoTags`).
//!
//! The archive is unpacked into a scratch directory first, regular files
//! only; its symlinks and hard links (older `docker save` links repeated
//! layers) are kept as a map and resolved inside the archive, never on disk.

use std::collections::HashMap;
use std::fs;
use std::io::{self, BufReader, Read, Seek};
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use super::digest::Digest;
use super::error::{ImageError, Result};
use super::manifest::{descriptor_digest, parse_manifest, select_platform, Manifest};
use super::reference::Reference;
use super::unpack::{detect_compression, sanitize, Compression};

const CONTAINERD_NAME: &str = "io.containerd.image.name";
const OCI_REF_NAME: &str = "org.opencontainers.image.ref.name";
const MAX_LINK_HOPS: usize = 16;

/// One image found in an archive, with the files to import.
pub struct ArchiveImage {
    /// Index and manifest blobs, with the digests they must have.
    pub manifests: Vec<(Digest, PathBuf)>,
    pub config: PathBuf,
    pub config_digest: Option<Digest>,
    /// Layer tarballs, lowest first, with their digests when the archive says.
    pub layers: Vec<(Option<Digest>, PathBuf)>,
    /// Normalised `registry/repository:tag` names.
    pub tags: Vec<String>,
}

/// Unpacks `archive` into `work` and lists the images in it. Blocking.
pub fn read_archive(archive: &Path, work: &Path) -> Result<Vec<ArchiveImage>> {
    let bad = |reason: String| ImageError::InvalidArchive {
        path: archive.to_path_buf(),
        reason,
    };
    let contents = extract(archive, work).map_err(|e| bad(e.to_string()))?;
    let images = if contents.exists("manifest.json") {
        docker_save_images(&contents)
    } else if contents.exists("index.json") {
        oci_layout_images(&contents)
    } else {
        Err(
            "it has neither a manifest.json (docker save) nor an index.json (OCI layout)"
                .to_owned(),
        )
    }
    .map_err(bad)?;
    if images.is_empty() {
        return Err(ImageError::InvalidArchive {
            path: archive.to_path_buf(),
            reason: "it contains no images".into(),
        });
    }
    Ok(images)
}

struct Contents {
    root: PathBuf,
    /// Archive path -> archive path it links to.
    links: HashMap<PathBuf, PathBuf>,
}

impl Contents {
    fn resolve(&self, name: &str) -> std::result::Result<PathBuf, String> {
        let mut rel = sanitize(Path::new(name))
            .ok()
            .flatten()
            .ok_or_else(|| format!("member name \"{name}\" is not a path inside the archive"))?;
        for _ in 0..MAX_LINK_HOPS {
            match self.links.get(&rel) {
                Some(target) => rel = target.clone(),
                None => {
                    let path = self.root.join(&rel);
                    return if path.is_file() {
                        Ok(path)
                    } else {
                        Err(format!("member \"{name}\" is missing"))
                    };
                }
            }
        }
        Err(format!("member \"{name}\" is a link loop"))
    }

    fn exists(&self, name: &str) -> bool {
        self.resolve(name).is_ok()
    }

    fn read(&self, name: &str) -> std::result::Result<Vec<u8>, String> {
        let path = self.resolve(name)?;
        fs::read(&path).map_err(|e| format!("cannot read member \"{name}\": {e}"))
    }
}

fn extract(archive: &Path, work: &Path) -> io::Result<Contents> {
    let mut file = fs::File::open(archive)?;
    let mut head = [0u8; 4];
    let n = file.read(&mut head)?;
    file.rewind()?;
    let reader: Box<dyn Read> = match detect_compression(&head[..n]) {
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(file))),
        Compression::Zstd => Box::new(zstd::Decoder::new(file)?),
        Compression::None => Box::new(BufReader::new(file)),
    };
    let mut tar = tar::Archive::new(reader);
    let mut links = HashMap::new();
    for entry in tar.entries()? {
        let mut entry = entry?;
        let raw = entry.path()?.into_owned();
        let invalid = |what: &str| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{what} \"{}\"", raw.display()),
            )
        };
        let Some(rel) = sanitize(&raw).map_err(|_| invalid("member escapes the archive:"))? else {
            continue;
        };
        match entry.header().entry_type() {
            tar::EntryType::Directory => fs::create_dir_all(work.join(&rel))?,
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let dest = work.join(&rel);
                if let Some(parent) = dest.parent() {
                    fs::create_dir_all(parent)?;
                }
                io::copy(&mut entry, &mut fs::File::create(&dest)?)?;
            }
            kind @ (tar::EntryType::Symlink | tar::EntryType::Link) => {
                let target = entry
                    .link_name()?
                    .ok_or_else(|| invalid("link without target:"))?;
                // Symlinks are relative to their directory, hard links to the archive root.
                let joined = if kind == tar::EntryType::Symlink {
                    rel.parent().unwrap_or(Path::new("")).join(target)
                } else {
                    target.into_owned()
                };
                let resolved = normalize(&joined)
                    .ok_or_else(|| invalid("link points outside the archive:"))?;
                links.insert(rel, resolved);
            }
            _ => {}
        }
    }
    Ok(Contents {
        root: work.to_path_buf(),
        links,
    })
}

/// Resolves `.` and `..` lexically; `None` when it climbs above the root.
fn normalize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::ParentDir if !out.pop() => return None,
            _ => {}
        }
    }
    Some(out)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerSaveEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn docker_save_images(contents: &Contents) -> std::result::Result<Vec<ArchiveImage>, String> {
    let entries: Vec<DockerSaveEntry> = serde_json::from_slice(&contents.read("manifest.json")?)
        .map_err(|e| format!("its manifest.json is not valid ({e})"))?;
    let mut images = Vec::new();
    for entry in entries {
        let mut tags = Vec::new();
        for tag in entry.repo_tags.unwrap_or_default() {
            let reference = Reference::parse(&tag).map_err(|e| e.to_string())?;
            tags.extend(reference.tagged_name());
        }
        let layers = entry
            .layers
            .iter()
            .map(|name| Ok((digest_from_member_name(name), contents.resolve(name)?)))
            .collect::<std::result::Result<_, String>>()?;
        images.push(ArchiveImage {
            manifests: Vec::new(),
            config_digest: digest_from_member_name(&entry.config),
            config: contents.resolve(&entry.config)?,
            layers,
            tags,
        });
    }
    Ok(images)
}

/// `blobs/sha256/<hex>` and `<hex>.json` name their content's digest.
fn digest_from_member_name(name: &str) -> Option<Digest> {
    let file = Path::new(name).file_name()?.to_str()?;
    let hex = file.strip_suffix(".json").unwrap_or(file);
    Digest::from_hex(hex).filter(|_| name.contains("sha256") || file.ends_with(".json"))
}

fn oci_layout_images(contents: &Contents) -> std::result::Result<Vec<ArchiveImage>, String> {
    let blob = |digest: &Digest| contents.resolve(&format!("blobs/sha256/{}", digest.hex()));
    let index = match parse_manifest(&contents.read("index.json")?) {
        Ok(Manifest::Index(index)) => index,
        Ok(Manifest::Image(_)) => return Err("its index.json is a manifest, not an index".into()),
        Err(e) => return Err(format!("its index.json is not valid: {e}")),
    };
    let mut images = Vec::new();
    for top in index.manifests() {
        let annotations = top.annotations().clone().unwrap_or_default();
        let mut manifests = Vec::new();
        let mut digest = descriptor_digest(top)?;
        let mut path = blob(&digest)?;
        let manifest = loop {
            manifests.push((digest.clone(), path.clone()));
            let bytes = fs::read(&path).map_err(|e| format!("cannot read blob {digest}: {e}"))?;
            match parse_manifest(&bytes).map_err(|e| format!("manifest {digest}: {e}"))? {
                Manifest::Image(manifest) => break manifest,
                Manifest::Index(nested) => {
                    if manifests.len() > 2 {
                        return Err("it nests indexes too deeply".into());
                    }
                    let entry = select_platform(&nested).map_err(|available| {
                        format!("it has no linux/amd64 image (it has: {available})")
                    })?;
                    digest = descriptor_digest(entry)?;
                    path = blob(&digest)?;
                }
            }
        };
        let config_digest = descriptor_digest(manifest.config())?;
        let layers = manifest
            .layers()
            .iter()
            .map(|layer| {
                let digest = descriptor_digest(layer)?;
                Ok((Some(digest.clone()), blob(&digest)?))
            })
            .collect::<std::result::Result<_, String>>()?;
        images.push(ArchiveImage {
            manifests,
            config: blob(&config_digest)?,
            config_digest: Some(config_digest),
            layers,
            tags: image_name(&annotations).into_iter().collect(),
        });
    }
    Ok(images)
}

/// The image's name from the layout's annotations. A bare `ref.name` such
/// as `latest` names no repository, so such an image loads without a name.
fn image_name(annotations: &HashMap<String, String>) -> Option<String> {
    let name = annotations.get(CONTAINERD_NAME).or_else(|| {
        annotations
            .get(OCI_REF_NAME)
            .filter(|n| n.contains([':', '/']))
    })?;
    Reference::parse(name).ok()?.tagged_name()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_annotations() {
        let mut a = HashMap::new();
        a.insert(OCI_REF_NAME.to_owned(), "1".to_owned());
        assert_eq!(image_name(&a), None);
        a.insert(OCI_REF_NAME.to_owned(), "busybox:1".to_owned());
        assert_eq!(
            image_name(&a).as_deref(),
            Some("docker.io/library/busybox:1")
        );
        a.insert(
            CONTAINERD_NAME.to_owned(),
            "127.0.0.1:5000/app:2".to_owned(),
        );
        assert_eq!(image_name(&a).as_deref(), Some("127.0.0.1:5000/app:2"));
    }

    #[test]
    fn normalizes_links_inside_the_archive() {
        assert_eq!(
            normalize(Path::new("a/../b/./c")),
            Some(PathBuf::from("b/c"))
        );
        assert_eq!(normalize(Path::new("a/../../etc")), None);
    }

    #[test]
    fn member_names_carry_digests() {
        let hex = "ab".repeat(32);
        assert!(digest_from_member_name(&format!("blobs/sha256/{hex}")).is_some());
        assert!(digest_from_member_name(&format!("{hex}.json")).is_some());
        assert!(digest_from_member_name(&format!("{hex}/layer.tar")).is_none());
    }
}
