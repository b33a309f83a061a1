//! The tar streams `cp` moves: [`pack`] writes a file, link or directory
//! tree as one archive with one top entry; [`unpack`] lands an archive as
//! a [`Placement`] says, refusing entries that climb out of the
//! destination or write through a link that leads out of it. The daemon
//! runs both inside a container's root (see [`super::jail`]); the CLI runs
//! them on the host.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use super::rules::{rebase, Destination, Placement, SourceKind};

/// What `path` is; with `follow`, a link is what it points to.
pub fn source_kind(path: &Path, follow: bool) -> io::Result<SourceKind> {
    let metadata = if follow { fs::metadata(path)? } else { fs::symlink_metadata(path)? };
    Ok(if metadata.is_dir() {
        SourceKind::Directory
    } else if metadata.file_type().is_symlink() {
        SourceKind::Symlink
    } else {
        SourceKind::File
    })
}

/// What is at `path` (a link to a directory is a directory, as the
/// destination of cp), and whether its parent is a directory.
pub fn destination(path: &Path) -> (Destination, bool) {
    let state = match fs::metadata(path) {
        Ok(m) if m.is_dir() => Destination::Directory,
        Ok(_) => Destination::File,
        Err(_) => Destination::Missing,
    };
    let parent_is_directory = fs::metadata(super::rules::parent(path)).is_ok_and(|m| m.is_dir());
    (state, parent_is_directory)
}

/// Writes `path` (of `kind`) to `out` as an archive whose top entry is
/// `name`; links inside are stored as links, never followed. The bytes
/// written.
pub fn pack(path: &Path, kind: SourceKind, name: &str, out: impl Write) -> io::Result<u64> {
    let mut counted = Counted { inner: out, bytes: 0 };
    {
        let mut builder = tar::Builder::new(&mut counted);
        builder.follow_symlinks(false);
        match kind {
            SourceKind::Directory => builder.append_dir_all(name, path)?,
            SourceKind::File | SourceKind::Symlink => builder.append_path_with_name(path, name)?,
        }
        builder.finish()?;
    }
    counted.flush()?;
    Ok(counted.bytes)
}

/// Unpacks `input` as `placement` says; with `keep_owners` entries keep
/// their uid and gid, else they belong to whoever unpacks. The bytes read.
pub fn unpack(input: impl Read, placement: &Placement, keep_owners: bool) -> Result<u64, String> {
    let mut counted = Counted { inner: input, bytes: 0 };
    let root = fs::canonicalize(&placement.directory)
        .map_err(|e| format!("cannot open the destination {}: {e}", placement.directory.display()))?;
    {
        let mut archive = tar::Archive::new(&mut counted);
        archive.set_preserve_permissions(true);
        archive.set_preserve_ownerships(keep_owners);
        archive.set_preserve_mtime(true);
        archive.set_overwrite(true);
        let entries = archive.entries().map_err(|e| format!("the archive is unreadable: {e}"))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| format!("the archive is unreadable: {e}"))?;
            let name = entry.path().map_err(|e| format!("the archive has an unreadable entry name: {e}"))?.into_owned();
            let Some(relative) = rebase(&name, &placement.top)? else { continue };
            let target = root.join(&relative);
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
                inside(&root, parent, &name)?;
            }
            if entry.header().entry_type().is_hard_link() {
                let link = entry.link_name().ok().flatten().ok_or_else(|| format!("the hard link {} names no target", name.display()))?;
                let Some(source) = rebase(&link, &placement.top)? else {
                    return Err(format!("the hard link {} points at the archive's top; refusing the archive", name.display()));
                };
                let source = root.join(source);
                inside(&root, source.parent().unwrap_or(&root), &name)?;
                let _ = fs::remove_file(&target);
                fs::hard_link(&source, &target).map_err(|e| format!("cannot link {} to {}: {e}", target.display(), source.display()))?;
                continue;
            }
            entry.unpack(&target).map_err(|e| unpack_error(&target, e))?;
        }
    }
    Ok(counted.bytes)
}

/// Refuses `directory` (which exists) unless it is inside `root` once
/// every link on the way is followed: an earlier entry or the destination
/// may have put a link there that leads elsewhere.
fn inside(root: &Path, directory: &Path, entry: &Path) -> Result<(), String> {
    let real = fs::canonicalize(directory).map_err(|e| format!("cannot resolve {}: {e}", directory.display()))?;
    if real.starts_with(root) {
        Ok(())
    } else {
        Err(format!("the archive entry {} would be written through a link out of the destination; refusing the archive", entry.display()))
    }
}

fn unpack_error(target: &Path, e: io::Error) -> String {
    // tar's messages wrap the OS error in a sentence of their own.
    let os = std::iter::successors(Some(&e as &dyn std::error::Error), |e| e.source())
        .filter_map(|e| e.downcast_ref::<io::Error>())
        .find_map(io::Error::raw_os_error);
    match os {
        Some(libc::EROFS) => format!("cannot write {}: the file system is read-only", target.display()),
        Some(libc::ENOSPC) => format!("cannot write {}: no space left on the device", target.display()),
        _ => format!("cannot write {}: {e}", target.display()),
    }
}

/// Counts the bytes that go through.
struct Counted<T> {
    inner: T,
    bytes: u64,
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
}

/// `path` with a trailing `/.` or `/` kept out (what to stat and pack).
pub fn without_trailing(path: &str) -> PathBuf {
    let trimmed = path.trim_end_matches("/.").trim_end_matches('/');
    if trimmed.is_empty() {
        PathBuf::from("/")
    } else {
        PathBuf::from(trimmed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::copy::rules::{place, CopySource, Top};

    fn tree(root: &Path) {
        fs::create_dir_all(root.join("src/sub")).unwrap();
        fs::write(root.join("src/a.txt"), "a").unwrap();
        fs::write(root.join("src/sub/b.txt"), "b").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("src/link")).unwrap();
    }

    fn roundtrip(from: &Path, name: &str, kind: SourceKind, contents_only: bool, to: &str) -> Result<(), String> {
        let mut archive = Vec::new();
        pack(from, kind, name, &mut archive).unwrap();
        let source = CopySource { kind, name: name.into(), contents_only };
        let (state, parent_ok) = destination(Path::new(to));
        let placement = place(Some(&source), to, state, parent_ok, "the test").map_err(|e| e.to_string())?;
        unpack(archive.as_slice(), &placement, false).map(|_| ())
    }

    #[test]
    fn a_directory_goes_in_under_its_name_or_as_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        tree(root);
        fs::create_dir(root.join("existing")).unwrap();
        let existing = root.join("existing");
        roundtrip(&root.join("src"), "src", SourceKind::Directory, false, existing.to_str().unwrap()).unwrap();
        assert_eq!(fs::read_to_string(existing.join("src/sub/b.txt")).unwrap(), "b");
        // Links are copied as links.
        assert_eq!(fs::read_link(existing.join("src/link")).unwrap(), Path::new("/etc/passwd"));
        let new = root.join("new");
        roundtrip(&root.join("src"), "src", SourceKind::Directory, false, new.to_str().unwrap()).unwrap();
        assert_eq!(fs::read_to_string(new.join("a.txt")).unwrap(), "a");
        let contents = root.join("contents");
        fs::create_dir(&contents).unwrap();
        roundtrip(&root.join("src"), "src", SourceKind::Directory, true, contents.to_str().unwrap()).unwrap();
        assert_eq!(fs::read_to_string(contents.join("sub/b.txt")).unwrap(), "b");
        assert!(!contents.join("src").exists());
    }

    #[test]
    fn a_file_is_written_as_named_or_into_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        tree(root);
        let renamed = root.join("renamed.txt");
        roundtrip(&root.join("src/a.txt"), "a.txt", SourceKind::File, false, renamed.to_str().unwrap()).unwrap();
        assert_eq!(fs::read_to_string(&renamed).unwrap(), "a");
        let missing_parent = root.join("nope/x.txt");
        let error = roundtrip(&root.join("src/a.txt"), "a.txt", SourceKind::File, false, missing_parent.to_str().unwrap()).unwrap_err();
        assert!(error.contains("does not exist"), "{error}");
        assert!(!root.join("nope").exists(), "nothing half-made");
    }

    #[test]
    fn an_entry_cannot_write_through_a_link_out_of_the_destination() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let destination = dir.path().join("dest");
        fs::create_dir(&destination).unwrap();
        // The archive first makes `escape` a link to elsewhere, then
        // writes `escape/owned` through it.
        let mut archive = tar::Builder::new(Vec::new());
        let mut link = tar::Header::new_gnu();
        link.set_entry_type(tar::EntryType::Symlink);
        link.set_size(0);
        archive.append_link(&mut link, "escape", outside.path()).unwrap();
        let mut file = tar::Header::new_gnu();
        file.set_size(2);
        file.set_mode(0o644);
        archive.append_data(&mut file, "escape/owned", &b"hi"[..]).unwrap();
        let bytes = archive.into_inner().unwrap();
        let placement = Placement { directory: destination.clone(), top: Top::Keep };
        let error = unpack(bytes.as_slice(), &placement, false).unwrap_err();
        assert!(error.contains("through a link"), "{error}");
        assert!(!outside.path().join("owned").exists());
    }
}
