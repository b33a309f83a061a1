//! Unpacks one layer tarball into its own directory, ready to serve as a
//! read-only overlayfs lowerdir.
//!
//! Entries are written by hand instead of with `tar::Entry::unpack_in`:
//! that one resolves parents with `canonicalize`, which follows symlinks on
//! the host, and it knows nothing of overlayfs whiteouts. Here every parent
//! is walked with `lstat`, a symlink on the way is refused, and `..` is
//! refused outright, so nothing in a layer can write outside its directory.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::sys::stat::{makedev, mknod, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use tar::{Archive, EntryType};

use super::digest::{Digest, HashingReader};

pub(super) const WHITEOUT_PREFIX: &str = ".wh.";
pub(super) const OPAQUE_MARKER: &str = ".wh..wh..opq";
pub(super) const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// Layers must not smuggle in overlayfs' own attributes (redirects, opaque
/// markers outside the whiteout convention).
const RESERVED_XATTR_PREFIX: &str = "trusted.overlay.";

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("entry \"{0}\" escapes the layer root")]
    Escape(String),
    #[error("entry \"{path}\" goes through the symbolic link \"{link}\"")]
    ThroughSymlink { path: String, link: String },
    #[error(
        "hard link \"{path}\" points to \"{target}\", which is not a file earlier in the layer"
    )]
    BadHardlink { path: String, target: String },
    #[error("entry \"{path}\" lies under \"{parent}\", which is not a directory")]
    NotADirectory { path: String, parent: String },
    #[error("the layer is not a valid tar archive: {0}")]
    Format(io::Error),
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> UnpackError {
    let context = context.into();
    move |source| UnpackError::Io { context, source }
}

fn nix_err(context: impl Into<String>) -> impl FnOnce(nix::Error) -> UnpackError {
    let context = context.into();
    move |errno| UnpackError::Io {
        context,
        source: errno.into(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// Tells the compression from the magic bytes: registries' media types are
/// not always right, and `docker save` layers carry none.
pub fn detect_compression(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// What unpacking learned about the layer's uncompressed tar stream.
#[derive(Debug, Clone)]
pub struct LayerSummary {
    pub diff_id: Digest,
    pub size: u64,
}

/// Unpacks the (possibly compressed) layer in `blob` into the existing
/// empty directory `dest`. Blocking; run it on a blocking thread.
pub fn unpack_layer(blob: &Path, dest: &Path) -> Result<LayerSummary, UnpackError> {
    let mut file = File::open(blob).map_err(io_err(format!("cannot open {}", blob.display())))?;
    let mut head = [0u8; 4];
    let mut filled = 0;
    while filled < head.len() {
        match file.read(&mut head[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err(format!("cannot read {}", blob.display()))(e)),
        }
    }
    file.rewind()
        .map_err(io_err(format!("cannot read {}", blob.display())))?;
    let reader: Box<dyn Read> = match detect_compression(&head[..filled]) {
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(file))),
        Compression::Zstd => Box::new(zstd::Decoder::new(file).map_err(UnpackError::Format)?),
        Compression::None => Box::new(BufReader::new(file)),
    };
    let mut archive = Archive::new(HashingReader::new(reader));
    unpack_entries(&mut archive, dest)?;
    let (diff_id, size) = archive.into_inner().finish().map_err(UnpackError::Format)?;
    Ok(LayerSummary { diff_id, size })
}

/// Writes every entry of `archive` under `root`.
pub fn unpack_entries<R: Read>(archive: &mut Archive<R>, root: &Path) -> Result<(), UnpackError> {
    // Directory times are set last: creating their children changes them.
    let mut dir_times = Vec::new();
    for entry in archive.entries().map_err(UnpackError::Format)? {
        let mut entry = entry.map_err(UnpackError::Format)?;
        let raw_path = entry.path().map_err(UnpackError::Format)?.into_owned();
        let shown = raw_path.display().to_string();
        let Some(rel) = sanitize(&raw_path)? else {
            continue;
        };
        let file_name = rel.file_name().unwrap_or_default().to_owned();
        let parent_rel = rel.parent().unwrap_or(Path::new(""));
        let parent = prepare_parent(root, parent_rel, &shown)?;

        if file_name.as_bytes().starts_with(WHITEOUT_PREFIX.as_bytes()) {
            write_whiteout(&parent, &file_name, &shown)?;
            continue;
        }

        let path = parent.join(&file_name);
        let header = entry.header().clone();
        let kind = header.entry_type();
        match kind {
            EntryType::Directory => match fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => {
                    remove_existing(&path)?;
                    create_dir(&path)?;
                }
                Err(_) => create_dir(&path)?,
            },
            EntryType::Regular | EntryType::Continuous => {
                remove_existing(&path)?;
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(nix::libc::O_NOFOLLOW)
                    .open(&path)
                    .map_err(io_err(format!("cannot create {shown}")))?;
                io::copy(&mut entry, &mut file).map_err(UnpackError::Format)?;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(UnpackError::Format)?
                    .ok_or_else(|| UnpackError::Format(invalid_data("symlink without a target")))?;
                remove_existing(&path)?;
                // The target is stored verbatim and never followed here; it is
                // resolved inside the container's root at run time.
                std::os::unix::fs::symlink(&target, &path)
                    .map_err(io_err(format!("cannot create symlink {shown}")))?;
            }
            EntryType::Link => {
                let target_raw = entry
                    .link_name()
                    .map_err(UnpackError::Format)?
                    .ok_or_else(|| UnpackError::Format(invalid_data("hard link without a target")))?
                    .into_owned();
                let bad = || UnpackError::BadHardlink {
                    path: shown.clone(),
                    target: target_raw.display().to_string(),
                };
                let target_rel = sanitize(&target_raw)?.ok_or_else(bad)?;
                check_no_symlink_parents(root, &target_rel, &shown)?;
                let target = root.join(&target_rel);
                match fs::symlink_metadata(&target) {
                    Ok(meta) if !meta.is_dir() => {}
                    _ => return Err(bad()),
                }
                remove_existing(&path)?;
                fs::hard_link(&target, &path)
                    .map_err(io_err(format!("cannot create hard link {shown}")))?;
                // A hard link shares the target's inode and metadata.
                continue;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                remove_existing(&path)?;
                let (kind_flag, dev) = match kind {
                    EntryType::Fifo => (SFlag::S_IFIFO, 0),
                    other => {
                        let major = header.device_major().ok().flatten().unwrap_or(0);
                        let minor = header.device_minor().ok().flatten().unwrap_or(0);
                        let flag = if other == EntryType::Char {
                            SFlag::S_IFCHR
                        } else {
                            SFlag::S_IFBLK
                        };
                        (flag, makedev(major.into(), minor.into()))
                    }
                };
                match mknod(&path, kind_flag, Mode::from_bits_truncate(0o600), dev) {
                    Ok(()) => {}
                    // Without CAP_MKNOD (e.g. in a user namespace) device
                    // nodes cannot exist; containers get /dev from the runtime.
                    Err(nix::Error::EPERM) if kind != EntryType::Fifo => {
                        tracing::warn!(entry = %shown, "skipping device node: not permitted");
                        continue;
                    }
                    Err(e) => return Err(nix_err(format!("cannot create {shown}"))(e)),
                }
            }
            // PAX global headers and other metadata-only records.
            other => {
                tracing::debug!(entry = %shown, kind = ?other, "skipping tar entry");
                continue;
            }
        }

        apply_metadata(&mut entry, &path, kind, &shown)?;
        let mtime = header.mtime().unwrap_or(0);
        if kind == EntryType::Directory {
            dir_times.push((path, mtime));
        } else {
            set_mtime(&path, mtime, &shown)?;
        }
    }
    for (path, mtime) in dir_times.iter().rev() {
        set_mtime(path, *mtime, &path.display().to_string())?;
    }
    Ok(())
}

/// Turns an entry name into a clean relative path; `None` for the root itself.
pub(super) fn sanitize(raw: &Path) -> Result<Option<PathBuf>, UnpackError> {
    let mut rel = PathBuf::new();
    for component in raw.components() {
        match component {
            Component::Normal(part) => rel.push(part),
            // Leading '/' and './' mean the layer root, as in docker.
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => return Err(UnpackError::Escape(raw.display().to_string())),
        }
    }
    Ok((!rel.as_os_str().is_empty()).then_some(rel))
}

/// Makes sure every directory above an entry exists inside `root` and is a
/// real directory, never a symlink. Returns the parent's full path.
fn prepare_parent(root: &Path, parent_rel: &Path, shown: &str) -> Result<PathBuf, UnpackError> {
    let mut current = root.to_path_buf();
    for part in parent_rel.components() {
        current.push(part);
        match fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(UnpackError::ThroughSymlink {
                    path: shown.to_owned(),
                    link: relative_display(root, &current),
                })
            }
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(UnpackError::NotADirectory {
                    path: shown.to_owned(),
                    parent: relative_display(root, &current),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&current)
                    .map_err(io_err(format!("cannot create the parent of {shown}")))?;
                fs::set_permissions(&current, fs::Permissions::from_mode(0o755)).map_err(
                    io_err(format!("cannot set the mode of the parent of {shown}")),
                )?;
            }
            Err(e) => return Err(io_err(format!("cannot inspect the parent of {shown}"))(e)),
        }
    }
    Ok(current)
}

fn check_no_symlink_parents(root: &Path, rel: &Path, shown: &str) -> Result<(), UnpackError> {
    let mut current = root.to_path_buf();
    if let Some(parent) = rel.parent() {
        for part in parent.components() {
            current.push(part);
            if fs::symlink_metadata(&current).is_ok_and(|m| m.file_type().is_symlink()) {
                return Err(UnpackError::ThroughSymlink {
                    path: shown.to_owned(),
                    link: relative_display(root, &current),
                });
            }
        }
    }
    Ok(())
}

fn relative_display(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Overlayfs whiteouts, as containerd and docker write them for lowerdirs:
/// `.wh.NAME` becomes a 0:0 character device NAME, `.wh..wh..opq` marks its
/// directory opaque.
fn write_whiteout(parent: &Path, file_name: &OsStr, shown: &str) -> Result<(), UnpackError> {
    if file_name == OPAQUE_MARKER {
        return xattr::set(parent, OPAQUE_XATTR, b"y").map_err(io_err(format!(
            "cannot mark the directory of {shown} opaque"
        )));
    }
    let hidden = &file_name.as_bytes()[WHITEOUT_PREFIX.len()..];
    if hidden.is_empty() || hidden == b"." || hidden == b".." {
        return Err(UnpackError::Escape(shown.to_owned()));
    }
    let path = parent.join(OsStr::from_bytes(hidden));
    remove_existing(&path)?;
    mknod(&path, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0))
        .map_err(nix_err(format!("cannot create the whiteout for {shown}")))
}

fn create_dir(path: &Path) -> Result<(), UnpackError> {
    fs::create_dir(path).map_err(io_err(format!(
        "cannot create directory {}",
        path.display()
    )))
}

fn remove_existing(path: &Path) -> Result<(), UnpackError> {
    let result = match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => Err(e),
    };
    result.map_err(io_err(format!("cannot replace {}", path.display())))
}

fn apply_metadata<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    path: &Path,
    kind: EntryType,
    shown: &str,
) -> Result<(), UnpackError> {
    let header = entry.header();
    let uid = header.uid().map_err(UnpackError::Format)?;
    let gid = header.gid().map_err(UnpackError::Format)?;
    let mode = header.mode().map_err(UnpackError::Format)?;
    let to_id = |v: u64| {
        u32::try_from(v).map_err(|_| UnpackError::Format(invalid_data("owner id out of range")))
    };
    std::os::unix::fs::lchown(path, Some(to_id(uid)?), Some(to_id(gid)?))
        .map_err(io_err(format!("cannot set the owner of {shown}")))?;
    // chown clears set-id bits, so the mode goes on afterwards; symlinks have none.
    if kind != EntryType::Symlink {
        fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o7777))
            .map_err(io_err(format!("cannot set the mode of {shown}")))?;
    }
    if let Some(extensions) = entry.pax_extensions().map_err(UnpackError::Format)? {
        for extension in extensions {
            let extension = extension.map_err(UnpackError::Format)?;
            let Some(name) = extension.key_bytes().strip_prefix(b"SCHILY.xattr.") else {
                continue;
            };
            if name.starts_with(RESERVED_XATTR_PREFIX.as_bytes()) {
                tracing::warn!(entry = %shown, "ignoring reserved overlayfs attribute in layer");
                continue;
            }
            if let Err(e) = xattr::set(path, OsStr::from_bytes(name), extension.value_bytes()) {
                // Some filesystems refuse some namespaces; the file is still usable.
                tracing::warn!(entry = %shown, error = %e, "cannot set extended attribute");
            }
        }
    }
    Ok(())
}

fn set_mtime(path: &Path, mtime: u64, shown: &str) -> Result<(), UnpackError> {
    let time = TimeSpec::new(i64::try_from(mtime).unwrap_or(i64::MAX), 0);
    utimensat(None, path, &time, &time, UtimensatFlags::NoFollowSymlink)
        .map_err(nix_err(format!("cannot set the time of {shown}")))
}

fn invalid_data(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    use tar::{Builder, Header};

    fn header(kind: EntryType, path: &str, mode: u32, size: u64) -> Header {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(1000);
        h.set_gid(1001);
        h.set_mtime(1_600_000_000);
        // `set_path` refuses `..`, which is exactly what the tests need to write.
        let name = &mut h.as_old_mut().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_cksum();
        h
    }

    #[derive(Default)]
    struct Layer(Vec<(Header, Vec<u8>)>);

    impl Layer {
        fn dir(mut self, path: &str) -> Self {
            self.0
                .push((header(EntryType::Directory, path, 0o755, 0), vec![]));
            self
        }
        fn file(mut self, path: &str, body: &str) -> Self {
            self.0.push((
                header(EntryType::Regular, path, 0o4755, body.len() as u64),
                body.into(),
            ));
            self
        }
        fn link(mut self, kind: EntryType, path: &str, target: &str) -> Self {
            let mut h = header(kind, path, 0o777, 0);
            h.as_old_mut().linkname[..target.len()].copy_from_slice(target.as_bytes());
            h.set_cksum();
            self.0.push((h, vec![]));
            self
        }
        fn tar(self) -> Vec<u8> {
            let mut b = Builder::new(Vec::new());
            for (h, body) in self.0 {
                b.append(&h, body.as_slice()).unwrap();
            }
            b.into_inner().unwrap()
        }
    }

    fn unpack(tar: Vec<u8>) -> (tempfile::TempDir, Result<(), UnpackError>) {
        let dir = tempfile::tempdir().unwrap();
        let result = unpack_entries(&mut Archive::new(tar.as_slice()), dir.path());
        (dir, result)
    }

    #[test]
    fn unpacks_files_dirs_links_with_metadata() {
        let (dir, result) = unpack(
            Layer::default()
                .dir("etc/")
                .file("etc/passwd", "root:x:0:0")
                .file("bin/busybox", "ELF")
                .link(EntryType::Symlink, "bin/sh", "/bin/busybox")
                .link(EntryType::Link, "bin/ls", "bin/busybox")
                .tar(),
        );
        result.unwrap();
        let root = dir.path();
        assert_eq!(
            fs::read_to_string(root.join("etc/passwd")).unwrap(),
            "root:x:0:0"
        );
        assert_eq!(
            fs::read_link(root.join("bin/sh")).unwrap(),
            Path::new("/bin/busybox")
        );
        let busybox = fs::metadata(root.join("bin/busybox")).unwrap();
        assert_eq!(
            busybox.ino(),
            fs::metadata(root.join("bin/ls")).unwrap().ino()
        );
        assert_eq!(busybox.mode() & 0o7777, 0o4755, "set-uid survives chown");
        assert_eq!((busybox.uid(), busybox.gid()), (1000, 1001));
        assert_eq!(busybox.mtime(), 1_600_000_000);
        assert_eq!(
            fs::metadata(root.join("etc")).unwrap().mtime(),
            1_600_000_000
        );
    }

    #[test]
    fn writes_overlay_whiteouts_and_opaque_dirs() {
        let (dir, result) = unpack(
            Layer::default()
                .dir("etc/")
                .file("etc/.wh.hostname", "")
                .dir("var/cache/")
                .file("var/cache/.wh..wh..opq", "")
                .tar(),
        );
        result.unwrap();
        let whiteout = fs::symlink_metadata(dir.path().join("etc/hostname")).unwrap();
        assert!(whiteout.file_type().is_char_device());
        assert_eq!(whiteout.rdev(), 0);
        assert!(!dir.path().join("etc/.wh.hostname").exists());
        let opaque = xattr::get(dir.path().join("var/cache"), OPAQUE_XATTR).unwrap();
        assert_eq!(opaque.as_deref(), Some(&b"y"[..]));
        assert!(!dir.path().join("var/cache/.wh..wh..opq").exists());
    }

    #[test]
    fn refuses_parent_dir_escape() {
        let outside = tempfile::tempdir().unwrap();
        let name = format!(
            "../{}/evil",
            outside.path().file_name().unwrap().to_str().unwrap()
        );
        let (_dir, result) = unpack(Layer::default().file(&name, "x").tar());
        assert!(matches!(result, Err(UnpackError::Escape(_))), "{result:?}");
        assert!(!outside.path().join("evil").exists());
    }

    #[test]
    fn refuses_writing_through_symlinks() {
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().to_str().unwrap().to_owned();
        let (_dir, result) = unpack(
            Layer::default()
                .link(EntryType::Symlink, "escape", &target)
                .file("escape/evil", "x")
                .tar(),
        );
        assert!(
            matches!(result, Err(UnpackError::ThroughSymlink { .. })),
            "{result:?}"
        );
        assert!(!outside.path().join("evil").exists());

        let (_dir, result) = unpack(
            Layer::default()
                .link(EntryType::Symlink, "up", "..")
                .file("up/evil", "x")
                .tar(),
        );
        assert!(
            matches!(result, Err(UnpackError::ThroughSymlink { .. })),
            "{result:?}"
        );
    }

    #[test]
    fn refuses_hardlinks_outside_the_layer() {
        let (_dir, result) = unpack(
            Layer::default()
                .link(EntryType::Link, "passwd", "../../etc/passwd")
                .tar(),
        );
        assert!(matches!(result, Err(UnpackError::Escape(_))), "{result:?}");

        let (_dir, result) = unpack(
            Layer::default()
                .link(EntryType::Link, "shadow", "/etc/shadow")
                .tar(),
        );
        assert!(
            matches!(result, Err(UnpackError::BadHardlink { .. })),
            "{result:?}"
        );

        let (_dir, result) = unpack(
            Layer::default()
                .link(EntryType::Symlink, "etc", "/etc")
                .link(EntryType::Link, "passwd", "etc/passwd")
                .tar(),
        );
        assert!(
            matches!(result, Err(UnpackError::ThroughSymlink { .. })),
            "{result:?}"
        );
    }

    #[test]
    fn detects_compression_and_hashes_the_uncompressed_stream() {
        let tar = Layer::default().file("hello", "world").tar();
        let expected = Digest::of_bytes(&tar);

        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&tar).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(tar.as_slice(), 3).unwrap();

        assert_eq!(detect_compression(&tar), Compression::None);
        assert_eq!(detect_compression(&gz), Compression::Gzip);
        assert_eq!(detect_compression(&zst), Compression::Zstd);
        assert_eq!(detect_compression(&[]), Compression::None);

        for blob in [tar.clone(), gz, zst] {
            let work = tempfile::tempdir().unwrap();
            let blob_path = work.path().join("blob");
            fs::write(&blob_path, &blob).unwrap();
            let dest = work.path().join("rootfs");
            fs::create_dir(&dest).unwrap();
            let summary = unpack_layer(&blob_path, &dest).unwrap();
            assert_eq!(summary.diff_id, expected);
            assert_eq!(summary.size, tar.len() as u64);
            assert_eq!(fs::read_to_string(dest.join("hello")).unwrap(), "world");
        }
    }
}
