//! Where a copied file or directory lands: docker's rules for `cp`, as a
//! pure function of what is copied and what is at the destination. The
//! same rules serve both directions: the daemon applies them inside a
//! container's root, the CLI on the host.
//!
//! | source    | destination                | result                                   |
//! |-----------|----------------------------|------------------------------------------|
//! | file      | missing, ends with `/`     | error: the directory must exist          |
//! | file      | missing                    | a file made at the destination           |
//! | file      | a file                     | overwritten                              |
//! | file      | a directory                | copied into it under its own name        |
//! | directory | missing                    | made, with the source's contents         |
//! | directory | a file                     | error: a directory cannot go onto a file |
//! | directory | a directory                | copied into it under its own name        |
//! | `dir/.`   | a directory                | its contents copied into it              |
//!
//! A missing destination's parent directory must exist.

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What a copy's source is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SourceKind {
    File,
    Directory,
    /// Copied as the link itself, not what it points to (unless `-L`).
    Symlink,
}

/// A copy's source, as the archive that carries it is laid out: one top
/// entry named `name`, a directory's entries below it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopySource {
    pub kind: SourceKind,
    pub name: String,
    /// The source was given as `DIR/.`: its contents, not itself.
    pub contents_only: bool,
}

/// What is at the destination path now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    Missing,
    File,
    Directory,
}

/// Where to unpack the archive: into `directory` (which exists), its top
/// entry treated as `top` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub directory: PathBuf,
    pub top: Top,
}

/// What becomes of the archive's top entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Top {
    /// Lands under this name.
    Rename(String),
    /// Left out: its entries land directly in the directory (`DIR/.`).
    Strip,
    /// Every entry lands as named (a tar stream given as `-`).
    Keep,
}

/// Why a copy cannot go where it was asked to; `where_` names the side
/// (e.g. `container web`, `this host`) in the sentence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error("the directory {path} does not exist in {place}; create it first or copy to an existing directory")]
    NoSuchDirectory { path: String, place: String },
    #[error("cannot copy a directory onto the file {path} in {place}; give a directory or a new name")]
    DirectoryOntoFile { path: String, place: String },
    #[error("{path} in {place} is not a directory, but the path ends with /; drop the slash to write a file")]
    NotADirectory { path: String, place: String },
    #[error("an archive must be unpacked into a directory, and {path} in {place} is not one; give an existing directory")]
    ArchiveNeedsDirectory { path: String, place: String },
}

/// Where `source` goes when copied to `destination` (absolute in its
/// root), which is `state` now and, if missing, whose parent is
/// `parent_is_directory`. `None` as source: a tar stream from `-`, whose
/// entries land as named in the destination directory.
pub fn place(
    source: Option<&CopySource>,
    destination: &str,
    state: Destination,
    parent_is_directory: bool,
    place: &str,
) -> Result<Placement, PlacementError> {
    let path = Path::new(destination);
    let ends_with_slash = destination.ends_with('/') || destination.ends_with("/.");
    let place = place.to_string();
    let shown = destination.to_string();
    let Some(source) = source else {
        return match state {
            Destination::Directory => Ok(Placement { directory: path.to_path_buf(), top: Top::Keep }),
            Destination::Missing => Err(PlacementError::NoSuchDirectory { path: shown, place }),
            Destination::File => Err(PlacementError::ArchiveNeedsDirectory { path: shown, place }),
        };
    };
    let is_directory = source.kind == SourceKind::Directory;
    match state {
        Destination::Directory if is_directory && source.contents_only => Ok(Placement { directory: path.to_path_buf(), top: Top::Strip }),
        Destination::Directory => Ok(Placement { directory: path.to_path_buf(), top: Top::Rename(source.name.clone()) }),
        Destination::File if is_directory => Err(PlacementError::DirectoryOntoFile { path: shown, place }),
        Destination::File if ends_with_slash => Err(PlacementError::NotADirectory { path: shown, place }),
        Destination::File => Ok(beside(path)),
        Destination::Missing if ends_with_slash && !is_directory => Err(PlacementError::NoSuchDirectory { path: shown, place }),
        Destination::Missing if !parent_is_directory => Err(PlacementError::NoSuchDirectory {
            path: parent(path).to_string_lossy().into_owned(),
            place,
        }),
        Destination::Missing => Ok(beside(path)),
    }
}

/// The source, renamed to the path's last component, in its parent.
fn beside(path: &Path) -> Placement {
    let top = match path.file_name() {
        Some(name) => Top::Rename(name.to_string_lossy().into_owned()),
        None => Top::Strip,
    };
    Placement { directory: parent(path).to_path_buf(), top }
}

/// The directory a path's last component is in (`/` for `/x`).
pub fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("/"),
    }
}

/// A path given for inside a container, made absolute (docker reads them
/// from the container's root) with `.`/`..` left for the jail to resolve.
pub fn absolute_in_container(path: &str) -> String {
    if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    }
}

/// The name a source's top archive entry gets (its last component; the
/// root is `rootfs`), and whether only its contents are meant (`DIR/.`,
/// or the root itself).
pub fn source_name(path: &str) -> (String, bool) {
    let mut names = Path::new(path).components().filter_map(|c| match c {
        Component::Normal(name) => Some(name.to_string_lossy().into_owned()),
        _ => None,
    });
    let last = names.next_back();
    let contents_only = path.ends_with("/.") || path == "." || last.is_none();
    (last.unwrap_or_else(|| "rootfs".to_string()), contents_only)
}

/// An archive entry's path rebased for `top`. `None` for an entry that
/// lands nowhere (the stripped top itself, or `.`); an error for a path
/// that climbs out (`..`) or is absolute.
pub fn rebase(entry: &Path, top: &Top) -> Result<Option<PathBuf>, String> {
    let mut parts = Vec::new();
    for component in entry.components() {
        match component {
            Component::Normal(part) => parts.push(part.to_os_string()),
            Component::CurDir => {}
            _ => return Err(format!("the archive entry {} leaves the destination; refusing the archive", entry.display())),
        }
    }
    match top {
        Top::Rename(name) => match parts.first_mut() {
            Some(first) => *first = name.into(),
            None => return Ok(None),
        },
        Top::Strip if !parts.is_empty() => {
            parts.remove(0);
        }
        Top::Strip | Top::Keep => {}
    }
    if parts.is_empty() {
        return Ok(None);
    }
    Ok(Some(parts.iter().collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str) -> CopySource {
        CopySource { kind: SourceKind::File, name: name.into(), contents_only: false }
    }

    fn dir(name: &str, contents_only: bool) -> CopySource {
        CopySource { kind: SourceKind::Directory, name: name.into(), contents_only }
    }

    fn renamed(directory: &str, top: &str) -> Placement {
        Placement { directory: directory.into(), top: Top::Rename(top.into()) }
    }

    #[test]
    fn a_file_follows_dockers_rules() {
        let f = file("a.txt");
        assert_eq!(place(Some(&f), "/tmp/new.txt", Destination::Missing, true, "c"), Ok(renamed("/tmp", "new.txt")));
        assert!(matches!(place(Some(&f), "/tmp/new/", Destination::Missing, true, "c"), Err(PlacementError::NoSuchDirectory { .. })));
        assert!(matches!(place(Some(&f), "/nope/x", Destination::Missing, false, "c"), Err(PlacementError::NoSuchDirectory { path, .. }) if path == "/nope"));
        assert_eq!(place(Some(&f), "/tmp/old.txt", Destination::File, true, "c"), Ok(renamed("/tmp", "old.txt")));
        assert!(matches!(place(Some(&f), "/tmp/old.txt/", Destination::File, true, "c"), Err(PlacementError::NotADirectory { .. })));
        assert_eq!(place(Some(&f), "/tmp", Destination::Directory, true, "c"), Ok(renamed("/tmp", "a.txt")));
    }

    #[test]
    fn a_directory_follows_dockers_rules() {
        assert_eq!(place(Some(&dir("src", false)), "/tmp/new", Destination::Missing, true, "c"), Ok(renamed("/tmp", "new")));
        assert_eq!(place(Some(&dir("src", false)), "/tmp", Destination::Directory, true, "c"), Ok(renamed("/tmp", "src")));
        assert_eq!(
            place(Some(&dir("src", true)), "/tmp", Destination::Directory, true, "c"),
            Ok(Placement { directory: "/tmp".into(), top: Top::Strip })
        );
        // `src/.` to a missing destination makes it, as `src` would.
        assert_eq!(place(Some(&dir("src", true)), "/tmp/new", Destination::Missing, true, "c"), Ok(renamed("/tmp", "new")));
        assert!(matches!(place(Some(&dir("src", false)), "/etc/hosts", Destination::File, true, "c"), Err(PlacementError::DirectoryOntoFile { .. })));
    }

    #[test]
    fn an_archive_goes_into_a_directory_only() {
        assert_eq!(place(None, "/tmp", Destination::Directory, true, "c"), Ok(Placement { directory: "/tmp".into(), top: Top::Keep }));
        assert!(place(None, "/tmp/x", Destination::Missing, true, "c").is_err());
        assert!(place(None, "/etc/hosts", Destination::File, true, "c").is_err());
    }

    #[test]
    fn source_names() {
        assert_eq!(source_name("/etc/hosts"), ("hosts".into(), false));
        assert_eq!(source_name("/etc/"), ("etc".into(), false));
        assert_eq!(source_name("/etc/."), ("etc".into(), true));
        assert_eq!(source_name("/"), ("rootfs".into(), true));
        assert_eq!(source_name("src"), ("src".into(), false));
    }

    #[test]
    fn rebasing_renames_or_strips_the_top_and_refuses_climbing_out() {
        let to = |name: &str| Top::Rename(name.into());
        assert_eq!(rebase(Path::new("src/a/b"), &to("dst")), Ok(Some("dst/a/b".into())));
        assert_eq!(rebase(Path::new("src"), &to("dst")), Ok(Some("dst".into())));
        assert_eq!(rebase(Path::new("src/a"), &Top::Strip), Ok(Some("a".into())));
        assert_eq!(rebase(Path::new("src"), &Top::Strip), Ok(None));
        assert_eq!(rebase(Path::new("./a"), &Top::Keep), Ok(Some("a".into())));
        assert_eq!(rebase(Path::new("."), &Top::Keep), Ok(None));
        assert!(rebase(Path::new("../etc/passwd"), &Top::Keep).is_err());
        assert!(rebase(Path::new("/etc/passwd"), &Top::Keep).is_err());
        assert!(rebase(Path::new("a/../../x"), &to("t")).is_err());
    }
}
