//! Named network namespaces, laid out as `ip netns add` lays them out: a
//! bind mount of the namespace on `<dir>/<name>`. With the iproute2
//! directory (/run/netns) `ip netns exec` and `ip -n` work on them; the
//! node daemon keeps its task sandboxes in a directory of its own.

use std::fs::{self, File};
use std::io::{self, ErrorKind};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

use crate::error::{NetError, Result};

/// Where iproute2 keeps named namespaces.
pub const IPROUTE2_NETNS_DIR: &str = "/run/netns";

/// Longest namespace name we accept: it becomes a file name and, for
/// sandboxes, part of log lines; 64 covers container ids.
const MAX_NAME_LEN: usize = 64;

/// A directory holding named network namespaces.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NetnsDir {
    dir: PathBuf,
    /// Make the directory a shared mount point before the first namespace
    /// goes in, as iproute2 does, so namespaces added later also appear in
    /// mount namespaces that `ip netns exec` creates. Only the iproute2
    /// directory needs it; a private directory stays a plain directory, so
    /// removing it never leaves a mount behind.
    shared_mount: bool,
}

impl NetnsDir {
    /// Namespaces under `dir` (created on first use).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        NetnsDir {
            dir: dir.into(),
            shared_mount: false,
        }
    }

    /// iproute2's /run/netns, shared with `ip netns`.
    pub fn iproute2() -> Self {
        NetnsDir {
            dir: PathBuf::from(IPROUTE2_NETNS_DIR),
            shared_mount: true,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The bind-mount file of namespace `name` (no check that it exists).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Creates namespace `name`; it must not exist yet. Returns its path.
    pub fn create(&self, name: &str) -> Result<PathBuf> {
        validate_name(name)?;
        self.prepare_dir()?;
        let target = self.path(name);
        // The bind-mount target; mode 0 like iproute2, create_new so two
        // creators of one name cannot both succeed.
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o000)
            .open(&target)
        {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                return Err(NetError::NetnsExists { path: target })
            }
            Err(source) => {
                return Err(NetError::Netns {
                    action: "create",
                    path: target,
                    source,
                })
            }
        }
        // unshare(CLONE_NEWNET) moves only the calling thread, so a throwaway
        // thread creates the namespace and pins it with the bind mount; this
        // process stays where it was.
        let pinned = std::thread::scope(|scope| {
            scope
                .spawn(|| -> nix::Result<()> {
                    unshare(CloneFlags::CLONE_NEWNET)?;
                    let own = format!("/proc/self/task/{}/ns/net", nix::unistd::gettid());
                    mount(
                        Some(own.as_str()),
                        &target,
                        None::<&str>,
                        MsFlags::MS_BIND,
                        None::<&str>,
                    )
                })
                .join()
        });
        let result = match pinned {
            Ok(Ok(())) => return Ok(target),
            Ok(Err(errno)) => Err(NetError::Netns {
                action: "create",
                path: target.clone(),
                source: io::Error::from(errno),
            }),
            Err(_) => Err(NetError::ThreadPanicked {
                path: target.clone(),
            }),
        };
        let _ = fs::remove_file(&target);
        result
    }

    /// Removes namespace `name`; a missing one is fine. The namespace itself
    /// lives on while processes, mounts or open files still hold it.
    pub fn delete(&self, name: &str) -> Result<()> {
        validate_name(name)?;
        let target = self.path(name);
        match umount2(&target, MntFlags::MNT_DETACH) {
            // EINVAL: not a mount point (half-created); ENOENT: already gone.
            Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
            Err(errno) => {
                return Err(NetError::Netns {
                    action: "unmount",
                    path: target,
                    source: io::Error::from(errno),
                })
            }
        }
        match fs::remove_file(&target) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(source) => Err(NetError::Netns {
                action: "remove",
                path: target,
                source,
            }),
        }
    }

    /// Names of the namespaces in this directory (none if it does not exist).
    pub fn list(&self) -> Result<Vec<String>> {
        let listing = match fs::read_dir(&self.dir) {
            Ok(listing) => listing,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(NetError::Io {
                    action: "read",
                    path: self.dir.clone(),
                    source,
                })
            }
        };
        let mut names = Vec::new();
        for entry in listing {
            let entry = entry.map_err(|source| NetError::Io {
                action: "read",
                path: self.dir.clone(),
                source,
            })?;
            if let Some(name) = entry.file_name().to_str() {
                if validate_name(name).is_ok() {
                    names.push(name.to_string());
                }
            }
        }
        names.sort();
        Ok(names)
    }

    pub fn exists(&self, name: &str) -> bool {
        validate_name(name).is_ok() && self.path(name).exists()
    }

    /// A handle on the namespace, for setns() and for moving links into it.
    pub fn open(&self, name: &str) -> Result<File> {
        validate_name(name)?;
        open_path(&self.path(name))
    }

    /// The namespace's inode, the number in `/proc/<pid>/ns/net -> net:[N]`.
    pub fn inode(&self, name: &str) -> Result<u64> {
        inode_of_path(&self.path(name))
    }

    /// Runs `work` on a fresh thread inside namespace `name`.
    pub fn run_in<T, F>(&self, name: &str, work: F) -> Result<T>
    where
        T: Send,
        F: FnOnce() -> T + Send,
    {
        validate_name(name)?;
        run_in(&self.path(name), work)
    }

    fn prepare_dir(&self) -> Result<()> {
        let dir = &self.dir;
        fs::create_dir_all(dir).map_err(|source| NetError::Io {
            action: "create",
            path: dir.clone(),
            source,
        })?;
        if self.shared_mount {
            make_shared_mount(dir)?;
        }
        Ok(())
    }
}

/// Opens a namespace by the path of its bind mount (or a /proc/.../ns/net).
pub fn open_path(path: &Path) -> Result<File> {
    File::open(path).map_err(|source| match source.kind() {
        ErrorKind::NotFound => NetError::NetnsNotFound {
            path: path.to_path_buf(),
        },
        _ => NetError::Netns {
            action: "open",
            path: path.to_path_buf(),
            source,
        },
    })
}

pub fn inode_of_path(path: &Path) -> Result<u64> {
    let ns = open_path(path)?;
    ns.metadata()
        .map(|m| m.ino())
        .map_err(|source| NetError::Netns {
            action: "stat",
            path: path.to_path_buf(),
            source,
        })
}

/// Moves the calling thread into the namespace; only for threads dedicated
/// to it, or a forked child before exec (setns is async-signal-safe).
pub fn enter(ns: &File) -> nix::Result<()> {
    setns(ns, CloneFlags::CLONE_NEWNET)
}

/// Runs `work` on a fresh thread inside the namespace at `path` and waits
/// for it. The thread dies with `work`, so no pooled thread is ever left in
/// a foreign namespace. Sockets and /proc/sys/net files opened by `work`
/// belong to that namespace.
pub fn run_in<T, F>(path: &Path, work: F) -> Result<T>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    let ns = open_path(path)?;
    run_in_ns(&ns, path, work)
}

/// [`run_in`] for a namespace that is already open; `path` only names it
/// in errors.
pub fn run_in_ns<T, F>(ns: &File, path: &Path, work: F) -> Result<T>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    let joined = std::thread::scope(|scope| {
        scope
            .spawn(move || {
                enter(ns).map_err(|errno| NetError::Netns {
                    action: "enter",
                    path: path.to_path_buf(),
                    source: io::Error::from(errno),
                })?;
                Ok(work())
            })
            .join()
    });
    joined.unwrap_or_else(|_| {
        Err(NetError::ThreadPanicked {
            path: path.to_path_buf(),
        })
    })
}

/// Namespace names are file names in a shared directory: no separators, no
/// dot files, nothing a shell or `ip netns` would trip over.
pub fn validate_name(name: &str) -> Result<()> {
    let valid = (1..=MAX_NAME_LEN).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if valid {
        Ok(())
    } else {
        Err(NetError::InvalidName {
            what: "network namespace name",
            name: name.to_string(),
            rule:
                "use 1 to 64 characters from A-Z, a-z, 0-9, '-', '_' and '.', not starting with '.'",
        })
    }
}

/// Make `dir` a shared mount point, as `ip netns add` does with /run/netns,
/// so that namespaces added later propagate into mount namespaces created by
/// `ip netns exec` or container runtimes.
fn make_shared_mount(dir: &Path) -> Result<()> {
    let make_shared = || {
        mount(
            None::<&str>,
            dir,
            None::<&str>,
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
    };
    let failed = |action: &'static str, errno: Errno| NetError::Io {
        action,
        path: dir.to_path_buf(),
        source: io::Error::from(errno),
    };
    match make_shared() {
        Ok(()) => Ok(()),
        // Not a mount point yet: bind it onto itself first.
        Err(Errno::EINVAL) => {
            mount(
                Some(dir),
                dir,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(|e| failed("bind-mount onto itself", e))?;
            make_shared().map_err(|e| failed("make a shared mount of", e))
        }
        Err(e) => Err(failed("make a shared mount of", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_are_not_plain_file_names_are_refused() {
        for good in ["shoal-dev-manager1", "abc", "a.b_c-D", &"x".repeat(64)] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        for bad in ["", ".hidden", "a/b", "..", "a b", &"x".repeat(65), "a\n"] {
            let err = validate_name(bad).expect_err(bad);
            assert!(err.to_string().contains("is invalid"), "{err}");
        }
    }

    #[test]
    fn listing_a_missing_directory_is_empty() {
        let dir = NetnsDir::new("/nonexistent/shoal-netns-test");
        assert_eq!(dir.list().expect("list"), Vec::<String>::new());
        assert!(!dir.exists("x"));
        assert!(matches!(dir.open("x"), Err(NetError::NetnsNotFound { .. })));
    }
}
