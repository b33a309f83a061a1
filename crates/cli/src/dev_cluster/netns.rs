//! Named network namespaces, laid out exactly like `ip netns add` does
//! (a bind mount of the namespace on /run/netns/<name>), so `ip netns exec`
//! and `ip -n` work on dev-cluster hosts too.

use std::fs::{self, File};
use std::io::ErrorKind;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

const NETNS_DIR: &str = "/run/netns";

pub fn path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// Creates the namespace `name`; it must not exist yet.
pub fn create(name: &str) -> anyhow::Result<()> {
    prepare_netns_dir()?;
    let target = path(name);
    // The bind-mount target; mode 0 like iproute2, create_new so two creators
    // of one name cannot both succeed.
    match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o000)
        .open(&target)
    {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            bail!("network namespace {name} already exists")
        }
        Err(e) => return Err(e).with_context(|| format!("could not create {}", target.display())),
    }
    // unshare(CLONE_NEWNET) moves only the calling thread, so a throwaway
    // thread creates the namespace and pins it with the bind mount; this
    // process stays where it was.
    let mount_target = target.clone();
    let pinned = std::thread::spawn(move || -> nix::Result<()> {
        unshare(CloneFlags::CLONE_NEWNET)?;
        let own = format!("/proc/self/task/{}/ns/net", nix::unistd::gettid());
        mount(
            Some(own.as_str()),
            &mount_target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
    })
    .join()
    .map_err(|_| anyhow!("the thread creating network namespace {name} panicked"))
    .and_then(|r| r.with_context(|| format!("could not create network namespace {name}")));
    if pinned.is_err() {
        let _ = fs::remove_file(&target);
    }
    pinned
}

/// Removes the namespace `name`; a missing one is fine. The namespace itself
/// lives on while processes or mounts still hold it.
pub fn delete(name: &str) -> anyhow::Result<()> {
    let target = path(name);
    match umount2(&target, MntFlags::MNT_DETACH) {
        // EINVAL: not a mount point (half-created); ENOENT: already gone.
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(e).with_context(|| format!("could not unmount {}", target.display())),
    }
    match fs::remove_file(&target) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("could not remove {}", target.display())),
    }
}

/// Names of all named namespaces on the machine.
pub fn list() -> anyhow::Result<Vec<String>> {
    let listing = match fs::read_dir(NETNS_DIR) {
        Ok(listing) => listing,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("could not read {NETNS_DIR}")),
    };
    let mut names = Vec::new();
    for entry in listing {
        let entry = entry.with_context(|| format!("could not read {NETNS_DIR}"))?;
        if let Some(name) = entry.file_name().to_str() {
            names.push(name.to_string());
        }
    }
    Ok(names)
}

/// A handle on the namespace, for setns() and for moving links into it.
pub fn open(name: &str) -> anyhow::Result<File> {
    let target = path(name);
    File::open(&target).map_err(|e| match e.kind() {
        ErrorKind::NotFound => {
            anyhow!("network namespace {name} does not exist (is the dev cluster up?)")
        }
        _ => anyhow!("could not open network namespace {}: {e}", target.display()),
    })
}

/// The namespace's inode, the number in `/proc/<pid>/ns/net -> net:[N]`.
pub fn inode(name: &str) -> anyhow::Result<u64> {
    Ok(open(name)?
        .metadata()
        .with_context(|| format!("could not stat network namespace {name}"))?
        .ino())
}

/// Moves the calling thread into the namespace; only for threads that are
/// dedicated to it (or a forked child before exec).
pub fn enter(ns: &File) -> nix::Result<()> {
    setns(ns, CloneFlags::CLONE_NEWNET)
}

/// Runs `work` on a fresh thread inside namespace `name`; the thread dies with
/// it, so no pooled thread is ever left in a foreign namespace.
pub fn run_in<T, F>(name: &str, work: F) -> anyhow::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> anyhow::Result<T> + Send + 'static,
{
    let ns = open(name)?;
    let ns_name = name.to_string();
    std::thread::spawn(move || {
        enter(&ns).with_context(|| format!("could not enter network namespace {ns_name}"))?;
        work()
    })
    .join()
    .map_err(|_| anyhow!("a thread working in network namespace {name} panicked"))?
}

/// Make /run/netns a shared mount point, as `ip netns add` does, so that
/// namespaces added later propagate into mount namespaces created by
/// `ip netns exec` or container runtimes, and so we agree with iproute2.
fn prepare_netns_dir() -> anyhow::Result<()> {
    fs::create_dir_all(NETNS_DIR).with_context(|| format!("could not create {NETNS_DIR}"))?;
    let make_shared = || {
        mount(
            None::<&str>,
            NETNS_DIR,
            None::<&str>,
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
    };
    match make_shared() {
        Ok(()) => Ok(()),
        // Not a mount point yet: bind it onto itself first.
        Err(Errno::EINVAL) => {
            mount(
                Some(NETNS_DIR),
                NETNS_DIR,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .with_context(|| format!("could not bind-mount {NETNS_DIR} onto itself"))?;
            make_shared().with_context(|| format!("could not make {NETNS_DIR} a shared mount"))
        }
        Err(e) => Err(e).with_context(|| format!("could not make {NETNS_DIR} a shared mount")),
    }
}
