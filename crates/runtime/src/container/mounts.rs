//! The container's filesystem view, set up by its first process inside
//! its new mount namespace (see [`super::init`]): the OCI spec's mounts
//! under the root filesystem, a minimal /dev, then (after pivot_root)
//! Docker's masked and read-only paths.
//!
//! Mount targets come from the image, which may hold symlinks pointing
//! anywhere; each target is opened with openat2(RESOLVE_IN_ROOT), so a
//! symlink resolves as if the root filesystem were `/`, and the mount
//! goes onto that file descriptor (/proc/self/fd/N), never onto a path
//! the image could redirect.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

use nix::mount::{mount, MsFlags};
use oci_spec::runtime::Mount;

use super::cgroups::Layout;

/// What a mount target should be when it has to be created.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Directory,
    File,
}

/// Flags and filesystem data of a mount's OCI options.
#[derive(Debug, PartialEq, Eq)]
struct MountOptions {
    flags: MsFlags,
    /// Propagation to set after mounting (rprivate, rslave, ...).
    propagation: MsFlags,
    /// Options the filesystem itself takes (`size=`, `mode=`, ...).
    data: Vec<String>,
}

fn parse_options(options: &[String]) -> MountOptions {
    let mut parsed = MountOptions {
        flags: MsFlags::empty(),
        propagation: MsFlags::empty(),
        data: Vec::new(),
    };
    for option in options {
        let (set, clear, propagation) = match option.as_str() {
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty(), MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY, MsFlags::empty()),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty(), MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID, MsFlags::empty()),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty(), MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV, MsFlags::empty()),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty(), MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC, MsFlags::empty()),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty(), MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty(), MsFlags::empty()),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty(), MsFlags::empty()),
            "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME, MsFlags::empty()),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty(), MsFlags::empty()),
            "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty(), MsFlags::empty()),
            "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME, MsFlags::empty()),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty(), MsFlags::empty()),
            "nostrictatime" => (MsFlags::empty(), MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "bind" => (MsFlags::MS_BIND, MsFlags::empty(), MsFlags::empty()),
            "rbind" => (
                MsFlags::MS_BIND | MsFlags::MS_REC,
                MsFlags::empty(),
                MsFlags::empty(),
            ),
            "private" => (MsFlags::empty(), MsFlags::empty(), MsFlags::MS_PRIVATE),
            "rprivate" => (
                MsFlags::empty(),
                MsFlags::empty(),
                MsFlags::MS_PRIVATE | MsFlags::MS_REC,
            ),
            "slave" => (MsFlags::empty(), MsFlags::empty(), MsFlags::MS_SLAVE),
            "rslave" => (
                MsFlags::empty(),
                MsFlags::empty(),
                MsFlags::MS_SLAVE | MsFlags::MS_REC,
            ),
            "shared" => (MsFlags::empty(), MsFlags::empty(), MsFlags::MS_SHARED),
            "rshared" => (
                MsFlags::empty(),
                MsFlags::empty(),
                MsFlags::MS_SHARED | MsFlags::MS_REC,
            ),
            "unbindable" => (MsFlags::empty(), MsFlags::empty(), MsFlags::MS_UNBINDABLE),
            "runbindable" => (
                MsFlags::empty(),
                MsFlags::empty(),
                MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
            ),
            other => {
                parsed.data.push(other.to_string());
                continue;
            }
        };
        parsed.flags = (parsed.flags | set) & !clear;
        parsed.propagation |= propagation;
    }
    parsed
}

/// The container's root filesystem (not yet `/`), opened once: every
/// target below it is resolved from this descriptor.
pub struct Root(OwnedFd);

impl Root {
    pub fn open(rootfs: &Path) -> Result<Root, String> {
        open_dir(rootfs).map(Root).map_err(|e| format!("cannot open the root filesystem {}: {e}", rootfs.display()))
    }
}

/// Mounts the spec's mounts under the root filesystem, in order.
pub fn mount_all(root: &Root, mounts: &[Mount], layout: &Layout) -> Result<(), String> {
    let root = &root.0;
    for m in mounts {
        let destination = m.destination();
        mount_one(root, m, layout)
            .map_err(|e| format!("cannot mount {}: {e}", destination.display()))?;
    }
    Ok(())
}

fn mount_one(root: &OwnedFd, m: &Mount, layout: &Layout) -> io::Result<()> {
    let options = parse_options(m.options().as_deref().unwrap_or_default());
    let kind = m.typ().as_deref().unwrap_or("bind");
    let source = m.source().clone().unwrap_or_else(|| PathBuf::from(kind));
    let is_bind = options.flags.contains(MsFlags::MS_BIND) || kind == "bind";
    let target_kind = if is_bind && !source.is_dir() {
        Kind::File
    } else {
        Kind::Directory
    };
    let destination = m.destination();
    let target = open_in_root(root, destination, target_kind)?;
    if kind == "cgroup" {
        return mount_cgroups(root, destination, &target, &options, layout);
    }
    if is_bind {
        let flags = MsFlags::MS_BIND | (options.flags & MsFlags::MS_REC);
        mount(
            Some(&source),
            &fd_path(&target),
            None::<&str>,
            flags,
            None::<&str>,
        )
        .map_err(|e| io::Error::other(format!("binding {} there: {e}", source.display())))?;
    } else {
        let data = options.data.join(",");
        mount(
            Some(&source),
            &fd_path(&target),
            Some(kind),
            options.flags,
            (!data.is_empty()).then_some(data.as_str()),
        )?;
    }
    // The fd still names the directory under the new mount; changing the
    // mount itself needs a fresh lookup, which lands on top of it.
    let extra = options.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC);
    if (is_bind && !extra.is_empty()) || !options.propagation.is_empty() {
        let mounted_fd = open_in_root(root, destination, target_kind)?;
        let mounted = fd_path(&mounted_fd);
        if is_bind && !extra.is_empty() {
            // A bind mount takes its flags only from a second, remounting call.
            mount(
                None::<&str>,
                &mounted,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | extra,
                None::<&str>,
            )?;
        }
        if !options.propagation.is_empty() {
            mount(
                None::<&str>,
                &mounted,
                None::<&str>,
                options.propagation,
                None::<&str>,
            )
            .map_err(|e| io::Error::other(format!("setting its propagation: {e}")))?;
        }
    }
    Ok(())
}

/// /sys/fs/cgroup inside the container, as Docker gives it: on v2 the
/// cgroup2 tree; on v1 a tmpfs with each controller hierarchy. The
/// container sits in its own cgroup namespace, so each shows the
/// container's cgroup as its root.
fn mount_cgroups(
    root: &OwnedFd,
    destination: &Path,
    target: &OwnedFd,
    options: &MountOptions,
    layout: &Layout,
) -> io::Result<()> {
    let flags = options.flags | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    match layout {
        Layout::Unified => mount(
            Some("cgroup"),
            &fd_path(target),
            Some("cgroup2"),
            flags,
            None::<&str>,
        )?,
        Layout::V1(hierarchies) => {
            let tmpfs_flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
            mount(
                Some("tmpfs"),
                &fd_path(target),
                Some("tmpfs"),
                tmpfs_flags,
                Some("mode=755"),
            )?;
            let tmpfs = open_in_root(root, destination, Kind::Directory)?;
            for hierarchy in hierarchies {
                let dir = fd_path(&tmpfs).join(&hierarchy.controllers);
                std::fs::create_dir(&dir)?;
                mount(
                    Some("cgroup"),
                    &dir,
                    Some("cgroup"),
                    flags,
                    Some(hierarchy.controllers.as_str()),
                )?;
            }
            if flags.contains(MsFlags::MS_RDONLY) {
                let remount = MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | tmpfs_flags;
                mount(
                    None::<&str>,
                    &fd_path(&tmpfs),
                    None::<&str>,
                    remount,
                    Some("mode=755"),
                )?;
            }
        }
    }
    Ok(())
}

/// The device nodes every container gets: (name, major, minor).
const DEVICES: [(&str, u64, u64); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// Fills the container's fresh /dev tmpfs: the default devices and the
/// usual links. Runs before pivot_root; works on a directory fd of the
/// mounted tmpfs, so an image's /dev symlink cannot redirect it.
pub fn populate_dev(root: &Root) -> Result<(), String> {
    // A fresh lookup lands on top of the tmpfs just mounted there.
    let dev = open_in_root(&root.0, Path::new("/dev"), Kind::Directory)
        .and_then(|fd| std::fs::File::open(fd_path(&fd)))
        .map_err(|e| format!("cannot open the container's /dev: {e}"))?;
    let dev_fd = Some(dev.as_raw_fd());
    for (name, major, minor) in DEVICES {
        let mode = nix::sys::stat::Mode::from_bits_truncate(0o666);
        let made = nix::sys::stat::mknodat(
            dev_fd,
            name,
            nix::sys::stat::SFlag::S_IFCHR,
            mode,
            nix::sys::stat::makedev(major, minor),
        );
        if made.is_err() {
            // No CAP_MKNOD here (e.g. a user namespace): share the host's node.
            let name_c = CString::new(name).map_err(|_| format!("bad device name {name}"))?;
            // SAFETY: openat on a directory fd we own, with a plain name.
            let fd = unsafe {
                libc::openat(dev.as_raw_fd(), name_c.as_ptr(), libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC, 0o666)
            };
            if fd < 0 {
                return Err(format!("cannot create /dev/{name}: {}", io::Error::last_os_error()));
            }
            // SAFETY: just opened, ours to close.
            let file = unsafe { OwnedFd::from_raw_fd(fd) };
            mount(Some(&Path::new("/dev").join(name)), &fd_path(&file), None::<&str>, MsFlags::MS_BIND, None::<&str>)
                .map_err(|e| format!("cannot provide /dev/{name}: {e}"))?;
        }
        // mknod applies the umask; devices are for everyone.
        let _ = nix::sys::stat::fchmodat(dev_fd, name, mode, nix::sys::stat::FchmodatFlags::FollowSymlink);
    }
    for (link, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
        ("core", "/proc/kcore"),
    ] {
        match nix::unistd::symlinkat(to, dev_fd, link) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => return Err(format!("cannot create /dev/{link}: {e}")),
        }
    }
    Ok(())
}

/// Hides Docker's masked paths (after pivot_root): /dev/null over files,
/// an empty read-only tmpfs over directories. Missing ones are fine.
pub fn mask(paths: &[String]) -> Result<(), String> {
    for path in paths {
        let result = match std::fs::metadata(path) {
            Ok(meta) if meta.is_dir() => mount(
                Some("tmpfs"),
                path.as_str(),
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                None::<&str>,
            ),
            Ok(_) => mount(
                Some("/dev/null"),
                path.as_str(),
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            ),
            Err(_) => continue,
        };
        result.map_err(|e| format!("cannot mask {path}: {e}"))?;
    }
    Ok(())
}

/// Makes paths read-only (after pivot_root). Missing ones are fine.
pub fn make_read_only(paths: &[String]) -> Result<(), String> {
    for path in paths {
        match mount(
            Some(path.as_str()),
            path.as_str(),
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        ) {
            Ok(()) => {}
            Err(nix::errno::Errno::ENOENT) => continue,
            Err(e) => return Err(format!("cannot make {path} read-only: {e}")),
        }
        let flags = MsFlags::MS_BIND
            | MsFlags::MS_REMOUNT
            | MsFlags::MS_RDONLY
            | MsFlags::MS_REC
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV
            | MsFlags::MS_NOEXEC;
        mount(
            Some(path.as_str()),
            path.as_str(),
            None::<&str>,
            flags,
            None::<&str>,
        )
        .map_err(|e| format!("cannot make {path} read-only: {e}"))?;
    }
    Ok(())
}

/// Creates `dir` (absolute, inside the container) under `rootfs` if it is
/// missing, resolving symlinks inside the root: docker makes a missing
/// working directory.
pub fn ensure_dir(root: &Root, dir: &Path) -> Result<(), String> {
    open_in_root(&root.0, dir, Kind::Directory)
        .map(drop)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))
}

fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: a plain open of a NUL-terminated path; the fd is ours.
    let fd = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `/proc/self/fd/N`: mounting onto it mounts onto the file `fd` names.
fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Opens `path` below `root` as if `root` were `/` (O_PATH), creating the
/// missing parts: directories, and the last part as `last`. A dangling
/// symlink on the way is followed inside the root and what it names is
/// created there, as runc does.
fn open_in_root(root: &OwnedFd, path: &Path, last: Kind) -> io::Result<OwnedFd> {
    let mut parts = components(path);
    let mut depth = 1;
    // Bounds symlink expansions and create-then-retry rounds alike.
    for _ in 0..256 {
        if parts.is_empty() {
            return resolve(root.as_raw_fd(), &parts);
        }
        match resolve(root.as_raw_fd(), &parts[..depth]) {
            Ok(fd) if depth == parts.len() => return Ok(fd),
            Ok(_) => {
                depth += 1;
                continue;
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
        // Everything before `parts[depth - 1]` exists; that part does not
        // resolve: it is missing, or a symlink to something missing.
        let parent = resolve(root.as_raw_fd(), &parts[..depth - 1])?;
        let name = CString::new(parts[depth - 1].as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        if let Some(target) = read_link_at(&parent, &name)? {
            let target = PathBuf::from(std::ffi::OsString::from_vec(target));
            let mut expanded = if target.is_absolute() { Vec::new() } else { parts[..depth - 1].to_vec() };
            expanded.extend(components(&target));
            expanded.extend_from_slice(&parts[depth..]);
            parts = expanded;
            depth = 1;
            continue;
        }
        let made = if depth == parts.len() && last == Kind::File {
            // SAFETY: openat with a directory (O_PATH) fd we own and a plain name.
            let fd = unsafe {
                libc::openat(
                    parent.as_raw_fd(),
                    name.as_ptr(),
                    libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                    0o644,
                )
            };
            if fd >= 0 {
                // SAFETY: just opened, ours to close.
                drop(unsafe { OwnedFd::from_raw_fd(fd) });
            }
            fd
        } else {
            // SAFETY: mkdirat with a directory (O_PATH) fd we own and a plain name.
            unsafe { libc::mkdirat(parent.as_raw_fd(), name.as_ptr(), 0o755) }
        };
        if made < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(e);
            }
        }
    }
    Err(io::Error::from_raw_os_error(libc::ELOOP))
}

/// A path's parts as openat2 takes them (`..` kept: it stops at the root).
fn components(path: &Path) -> Vec<std::ffi::OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(name) => Some(name.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect()
}

/// The target of the symlink `name` in `dir`; None if it is not a symlink
/// or does not exist.
fn read_link_at(dir: &OwnedFd, name: &CString) -> io::Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: readlinkat writes at most buf.len() bytes into buf.
    let n = unsafe { libc::readlinkat(dir.as_raw_fd(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EINVAL) | Some(libc::ENOENT) => Ok(None),
            _ => Err(e),
        };
    }
    buf.truncate(n as usize);
    Ok(Some(buf))
}

/// openat2(root, parts, O_PATH, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS).
fn resolve(root: RawFd, parts: &[std::ffi::OsString]) -> io::Result<OwnedFd> {
    let mut joined = Vec::new();
    for part in parts {
        if !joined.is_empty() {
            joined.push(b'/');
        }
        joined.extend_from_slice(part.as_bytes());
    }
    if joined.is_empty() {
        joined.push(b'.');
    }
    let path = CString::new(joined).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: open_how is plain data; zeroed is a valid starting value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_PATH | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: openat2 reads `how` (of the size given) and the path.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root,
            path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_split_into_flags_propagation_and_data() {
        let options: Vec<String> = [
            "nosuid",
            "noexec",
            "rbind",
            "rprivate",
            "ro",
            "size=65536k",
            "mode=1777",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let parsed = parse_options(&options);
        assert_eq!(
            parsed.flags,
            MsFlags::MS_NOSUID
                | MsFlags::MS_NOEXEC
                | MsFlags::MS_BIND
                | MsFlags::MS_REC
                | MsFlags::MS_RDONLY
        );
        assert_eq!(parsed.propagation, MsFlags::MS_PRIVATE | MsFlags::MS_REC);
        assert_eq!(
            parsed.data,
            vec!["size=65536k".to_string(), "mode=1777".to_string()]
        );
        assert!(!parse_options(&["ro".into(), "rw".into()])
            .flags
            .contains(MsFlags::MS_RDONLY));
    }

    #[test]
    fn targets_resolve_inside_the_root_even_through_symlinks() {
        let root_dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        // An image symlink pointing at a host directory by absolute path
        // (dangling inside the root), and one climbing out with "..".
        std::os::unix::fs::symlink(outside.path(), root_dir.path().join("escape")).unwrap();
        std::os::unix::fs::symlink("../../../..", root_dir.path().join("up")).unwrap();
        let root = open_dir(root_dir.path()).unwrap();
        open_in_root(&root, Path::new("/escape/made"), Kind::Directory).unwrap();
        open_in_root(&root, Path::new("/a/b/file"), Kind::File).unwrap();
        open_in_root(&root, Path::new("/up/climbed"), Kind::Directory).unwrap();
        assert!(std::fs::read_dir(outside.path()).unwrap().next().is_none(), "created outside the root");
        // Each symlink resolved inside the root: the host path re-rooted,
        // and ".." stopping at the root.
        let rerooted = root_dir.path().join(outside.path().strip_prefix("/").unwrap());
        assert!(rerooted.join("made").is_dir());
        assert!(root_dir.path().join("climbed").is_dir());
        assert!(root_dir.path().join("a/b/file").is_file());
    }
}
