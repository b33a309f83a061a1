//! A container's changes as an OCI layer: its overlayfs upper directory
//! written as a tar, with overlayfs's own deletion marks turned into the
//! OCI ones (the reverse of what [`super::unpack`] does): a 0:0 character
//! device NAME becomes an empty `.wh.NAME`, a directory marked opaque gets
//! a `.wh..wh..opq` inside.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use super::unpack::{OPAQUE_MARKER, OPAQUE_XATTR, WHITEOUT_PREFIX};

/// Writes the layer for `upper` to `out`.
pub fn write_layer(upper: &Path, out: impl Write) -> io::Result<()> {
    let mut builder = tar::Builder::new(out);
    builder.follow_symlinks(false);
    add_children(&mut builder, upper, Path::new(""))?;
    builder.into_inner()?.flush()
}

fn add_children<W: Write>(builder: &mut tar::Builder<W>, dir: &Path, relative: &Path) -> io::Result<()> {
    let mut names: Vec<_> = fs::read_dir(dir)?.collect::<io::Result<Vec<_>>>()?;
    // A stable order: the same changes make the same layer digest.
    names.sort_by_key(|entry| entry.file_name());
    for entry in names {
        let path = entry.path();
        let name = relative.join(entry.file_name());
        let metadata = fs::symlink_metadata(&path)?;
        if metadata.file_type().is_char_device() && metadata.rdev() == 0 {
            let mut whiteout = name.clone();
            whiteout.set_file_name(format!("{WHITEOUT_PREFIX}{}", entry.file_name().to_string_lossy()));
            empty_file(builder, &whiteout, &metadata)?;
            continue;
        }
        builder.append_path_with_name(&path, &name)?;
        if metadata.is_dir() {
            if xattr::get(&path, OPAQUE_XATTR).ok().flatten().is_some_and(|v| v == b"y") {
                empty_file(builder, &name.join(OPAQUE_MARKER), &metadata)?;
            }
            add_children(builder, &path, &name)?;
        }
    }
    Ok(())
}

fn empty_file<W: Write>(builder: &mut tar::Builder<W>, name: &Path, like: &fs::Metadata) -> io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(0);
    header.set_mode(0o644);
    header.set_mtime(like.mtime().max(0) as u64);
    builder.append_data(&mut header, name, io::empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deletions_become_oci_whiteouts() {
        let upper = tempfile::tempdir().unwrap();
        fs::create_dir_all(upper.path().join("etc")).unwrap();
        fs::write(upper.path().join("etc/new.conf"), "x").unwrap();
        // overlayfs marks a deleted file with a 0:0 character device.
        let removed = upper.path().join("etc/removed");
        nix::sys::stat::mknod(&removed, nix::sys::stat::SFlag::S_IFCHR, nix::sys::stat::Mode::empty(), 0).unwrap();
        fs::create_dir(upper.path().join("cache")).unwrap();
        xattr::set(upper.path().join("cache"), OPAQUE_XATTR, b"y").unwrap();
        let mut layer = Vec::new();
        write_layer(upper.path(), &mut layer).unwrap();
        let mut archive = tar::Archive::new(layer.as_slice());
        let mut names: Vec<String> =
            archive.entries().unwrap().map(|e| e.unwrap().path().unwrap().to_string_lossy().trim_end_matches('/').to_string()).collect();
        names.sort();
        assert_eq!(names, ["cache", "cache/.wh..wh..opq", "etc", "etc/.wh.removed", "etc/new.conf"]);
    }
}
