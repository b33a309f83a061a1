//! A task's secrets and configs on the node. The values come on the
//! assignments stream and are kept in memory only ([`HeldFiles`]); each
//! task that uses some gets a tmpfs of its own under the daemon's run
//! directory (never the data root, so nothing reaches a disk), mounted
//! nodev,nosuid,noexec, holding one file per reference with the
//! reference's owner and mode, each bind-mounted read-only into the
//! container at its target. The tmpfs goes when the task's container
//! ends; after a daemon restart the values come from the managers again.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use shoal_proto::pb;
use shoal_proto::task_files::container_path;
use shoal_runtime::container::MountSpec;
use zeroize::Zeroizing;

/// A value as the managers sent it; wiped from memory when dropped, and
/// left out of Debug output.
struct FileValue {
    name: String,
    data: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for FileValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileValue").field("name", &self.name).field("data", &shoal_proto::redacted::Redacted(self.data.len())).finish()
    }
}

type Key = (pb::FileKind, String);

/// The secrets and configs this node's tasks use, as the managers last
/// said: added when a task that uses one arrives, dropped when the last
/// one leaves.
#[derive(Clone, Default)]
pub struct HeldFiles {
    values: Arc<Mutex<BTreeMap<Key, FileValue>>>,
}

impl fmt::Debug for HeldFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.held().iter().map(|k| (k.kind(), k.id.clone()))).finish()
    }
}

impl HeldFiles {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Key, FileValue>> {
        self.values.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes in what an assignments message says; a full message replaces
    /// everything held.
    pub fn apply(&self, message: &pb::AssignmentsMessage) {
        let mut values = self.lock();
        if message.full {
            values.clear();
        }
        for removed in &message.files_removed {
            if values.remove(&(removed.kind(), removed.id.clone())).is_some() {
                tracing::info!(kind = ?removed.kind(), id = %removed.id, "secret or config withdrawn: no task here uses it any more");
            }
        }
        for file in &message.files_changed {
            tracing::info!(kind = ?file.kind(), id = %file.id, name = %file.name, "secret or config received for a task");
            let value = FileValue { name: file.name.clone(), data: Zeroizing::new(file.data.clone()) };
            values.insert((file.kind(), file.id.clone()), value);
        }
    }

    /// What is held, by kind and id (never the values).
    pub fn held(&self) -> Vec<pb::FileKey> {
        self.lock().keys().map(|(kind, id)| pb::FileKey { kind: (*kind).into(), id: id.clone() }).collect()
    }

    fn value(&self, kind: pb::FileKind, id: &str) -> Option<Zeroizing<Vec<u8>>> {
        self.lock().get(&(kind, id.to_string())).map(|v| v.data.clone())
    }
}

/// One file of a task: which value, where in the container, how owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub kind: pb::FileKind,
    pub id: String,
    pub name: String,
    /// Its name in the task's tmpfs: numbered, so no target (which the user
    /// chose) becomes a path on the node.
    pub file: String,
    pub target: String,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

/// Where each of the spec's secrets and configs goes; the error is one
/// sentence naming the bad target.
pub fn placements(spec: &pb::TaskSpec) -> Result<Vec<Placement>, String> {
    let secrets = spec.secrets.iter().map(|r| (pb::FileKind::Secret, r));
    let configs = spec.configs.iter().map(|r| (pb::FileKind::Config, r));
    secrets
        .chain(configs)
        .enumerate()
        .map(|(index, (kind, reference))| {
            let target = if reference.target.is_empty() { &reference.name } else { &reference.target };
            Ok(Placement {
                kind,
                id: reference.id.clone(),
                name: reference.name.clone(),
                file: format!("{}-{index}", if kind == pb::FileKind::Config { "config" } else { "secret" }),
                target: container_path(kind, target)?,
                uid: reference.uid,
                gid: reference.gid,
                mode: reference.mode.unwrap_or(0o444),
            })
        })
        .collect()
}

/// The directory under the run directory that holds every task's tmpfs.
#[derive(Debug, Clone)]
pub struct TaskFilesRoot(pub PathBuf);

impl TaskFilesRoot {
    fn dir(&self, task_id: &str) -> PathBuf {
        self.0.join(task_id)
    }

    /// Mounts the task's tmpfs, writes its files and returns the bind
    /// mounts that put them in the container; none when the task uses no
    /// secret or config. On error nothing is left mounted.
    pub async fn prepare(&self, task_id: &str, spec: &pb::TaskSpec, held: &HeldFiles) -> Result<Vec<MountSpec>, String> {
        let placements = placements(spec)?;
        self.release(task_id).await;
        if placements.is_empty() {
            return Ok(Vec::new());
        }
        let mut values = Vec::with_capacity(placements.len());
        for placement in &placements {
            let what = if placement.kind == pb::FileKind::Config { "config" } else { "secret" };
            let value = held.value(placement.kind, &placement.id).ok_or_else(|| {
                format!("{what} {} (id {}) has not reached this node; the managers send it with the task, so retry the task", placement.name, placement.id)
            })?;
            values.push(value);
        }
        let dir = self.dir(task_id);
        let root = self.0.clone();
        let written = {
            let (dir, placements) = (dir.clone(), placements.clone());
            tokio::task::spawn_blocking(move || write_tmpfs(&root, &dir, &placements, &values))
                .await
                .map_err(|e| format!("placing the task's secrets stopped: {e}"))?
        };
        if let Err(error) = written {
            self.release(task_id).await;
            return Err(error);
        }
        Ok(placements
            .into_iter()
            .map(|p| MountSpec::Bind { source: dir.join(&p.file), target: p.target, readonly: true })
            .collect())
    }

    /// Unmounts and removes the task's tmpfs; nothing to do is fine.
    pub async fn release(&self, task_id: &str) {
        let dir = self.dir(task_id);
        let _ = tokio::task::spawn_blocking(move || remove_tmpfs(&dir)).await;
    }

    /// The tasks that have a tmpfs here.
    pub fn tasks(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.0) else { return Vec::new() };
        entries.flatten().filter_map(|e| e.file_name().to_str().map(str::to_string)).collect()
    }

    /// Removes the tmpfs of every task but `keep` (after a restart: tasks
    /// that ended or moved while the daemon was down).
    pub async fn sweep(&self, keep: &HashSet<String>) {
        for task in self.tasks().into_iter().filter(|t| !keep.contains(t)) {
            tracing::info!(task = %task, "removing the secrets tmpfs of a task no longer assigned here");
            self.release(&task).await;
        }
    }
}

/// Unmounts every task's secrets tmpfs under `root`: on leaving the
/// swarm, with the task containers.
pub async fn remove_all_task_files(root: &Path) {
    TaskFilesRoot(root.to_path_buf()).sweep(&HashSet::new()).await;
}

fn tmpfs_flags() -> MsFlags {
    MsFlags::MS_NODEV | MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC
}

/// Enough pages for the files plus a little, so a task's tmpfs cannot
/// grow into the node's memory.
fn tmpfs_options(values: &[Zeroizing<Vec<u8>>]) -> String {
    const PAGE: usize = 4096;
    let pages: usize = values.iter().map(|v| v.len().div_ceil(PAGE).max(1)).sum();
    format!("mode=0700,size={},nr_inodes={}", (pages + 4) * PAGE, values.len() + 8)
}

fn write_tmpfs(root: &Path, dir: &Path, placements: &[Placement], values: &[Zeroizing<Vec<u8>>]) -> Result<(), String> {
    std::fs::create_dir_all(root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
    let _ = std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700));
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    mount(Some("tmpfs"), dir, Some("tmpfs"), tmpfs_flags(), Some(tmpfs_options(values).as_str()))
        .map_err(|e| format!("cannot mount a tmpfs for the task's secrets at {}: {e}", dir.display()))?;
    for (placement, value) in placements.iter().zip(values) {
        let path = dir.join(&placement.file);
        let what = || format!("{} {}", if placement.kind == pb::FileKind::Config { "config" } else { "secret" }, placement.name);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| format!("cannot write {}: {e}", what()))?;
        file.write_all(value).map_err(|e| format!("cannot write {}: {e}", what()))?;
        std::os::unix::fs::fchown(&file, Some(placement.uid), Some(placement.gid))
            .map_err(|e| format!("cannot give {} to {}:{}: {e}", what(), placement.uid, placement.gid))?;
        file.set_permissions(std::fs::Permissions::from_mode(placement.mode))
            .map_err(|e| format!("cannot set the mode of {}: {e}", what()))?;
    }
    // Written once: from now on read-only, on the node too.
    mount(None::<&str>, dir, None::<&str>, MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | tmpfs_flags(), None::<&str>)
        .map_err(|e| format!("cannot make the task's secrets tmpfs read-only: {e}"))?;
    Ok(())
}

fn remove_tmpfs(dir: &Path) {
    // A retried start may have stacked a mount; take every one off.
    for _ in 0..4 {
        match umount2(dir, MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            Err(Errno::EINVAL) | Err(Errno::ENOENT) => break,
            Err(error) => {
                tracing::warn!(dir = %dir.display(), %error, "unmounting a task's secrets tmpfs");
                break;
            }
        }
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => tracing::warn!(dir = %dir.display(), %error, "removing a task's secrets directory"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(name: &str, target: &str, mode: Option<u32>) -> pb::FileReference {
        pb::FileReference { id: format!("id-{name}"), name: name.into(), target: target.into(), uid: 1000, gid: 1001, mode }
    }

    #[test]
    fn placements_follow_the_references() {
        let spec = pb::TaskSpec {
            secrets: vec![reference("db_pass", "db_pass", Some(0o400)), reference("tls", "/etc/tls/key.pem", None)],
            configs: vec![reference("app.conf", "", None)],
            ..Default::default()
        };
        let placed = placements(&spec).unwrap();
        let summary: Vec<(&str, &str, u32)> = placed.iter().map(|p| (p.file.as_str(), p.target.as_str(), p.mode)).collect();
        assert_eq!(
            summary,
            [("secret-0", "/run/secrets/db_pass", 0o400), ("secret-1", "/etc/tls/key.pem", 0o444), ("config-2", "/app.conf", 0o444)]
        );
        assert_eq!((placed[0].uid, placed[0].gid), (1000, 1001));
        let bad = pb::TaskSpec { secrets: vec![reference("x", "../../etc/passwd", None)], ..Default::default() };
        assert!(placements(&bad).unwrap_err().contains("\"../../etc/passwd\""));
    }

    #[test]
    fn held_values_follow_the_messages_and_never_show() {
        let held = HeldFiles::default();
        let data = |id: &str, value: &[u8]| pb::FileData { kind: pb::FileKind::Secret.into(), id: id.into(), name: format!("n-{id}"), data: value.to_vec() };
        held.apply(&pb::AssignmentsMessage { full: true, files_changed: vec![data("a", b"alpha-value"), data("b", b"beta")], ..Default::default() });
        assert_eq!(held.held().len(), 2);
        assert_eq!(held.value(pb::FileKind::Secret, "a").as_deref().map(Vec::as_slice), Some(&b"alpha-value"[..]));
        assert!(held.value(pb::FileKind::Config, "a").is_none(), "kinds are apart");
        let removed = pb::FileKey { kind: pb::FileKind::Secret.into(), id: "a".into() };
        held.apply(&pb::AssignmentsMessage { files_removed: vec![removed], ..Default::default() });
        assert_eq!(held.held().iter().map(|k| k.id.as_str()).collect::<Vec<_>>(), ["b"]);
        held.apply(&pb::AssignmentsMessage { full: true, ..Default::default() });
        assert!(held.held().is_empty(), "a full set replaces what was held");
        held.apply(&pb::AssignmentsMessage { full: true, files_changed: vec![data("c", b"gamma-value")], ..Default::default() });
        let values = format!("{:?}", held.lock().values().collect::<Vec<_>>());
        let shown = format!("{held:?} {values}");
        assert!(!shown.contains("gamma-value") && shown.contains("redacted"), "{shown}");
    }

    /// Needs root (CI runs as root): a real tmpfs under /run.
    #[tokio::test]
    async fn files_land_on_a_private_read_only_tmpfs_that_goes_with_the_task() {
        let root = TaskFilesRoot(PathBuf::from(format!("/run/shoal-agent-files-test-{}", std::process::id())));
        struct Cleanup(PathBuf);
        impl Drop for Cleanup {
            fn drop(&mut self) {
                let _ = umount2(&self.0.join("t1"), MntFlags::MNT_DETACH);
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
        let _cleanup = Cleanup(root.0.clone());
        let held = HeldFiles::default();
        let value = pb::FileData { kind: pb::FileKind::Secret.into(), id: "id-db_pass".into(), name: "db_pass".into(), data: b"s3cr3t".to_vec() };
        held.apply(&pb::AssignmentsMessage { full: true, files_changed: vec![value], ..Default::default() });
        let spec = pb::TaskSpec { secrets: vec![reference("db_pass", "db_pass", Some(0o400))], ..Default::default() };

        let mounts = root.prepare("t1", &spec, &held).await.unwrap();
        let dir = root.0.join("t1");
        assert_eq!(mounts, vec![MountSpec::Bind { source: dir.join("secret-0"), target: "/run/secrets/db_pass".into(), readonly: true }]);
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(dir.join("secret-0")).unwrap();
        assert_eq!((meta.uid(), meta.gid(), meta.mode() & 0o7777), (1000, 1001, 0o400));
        assert_eq!(std::fs::read(dir.join("secret-0")).unwrap(), b"s3cr3t");
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o7777, 0o700);
        let table = std::fs::read_to_string("/proc/self/mounts").unwrap();
        let line = table.lines().find(|l| l.split(' ').nth(1) == Some(dir.to_str().unwrap())).expect("the task's tmpfs is mounted");
        let options = line.split(' ').nth(3).unwrap();
        assert!(line.starts_with("tmpfs ") && ["ro", "nosuid", "nodev", "noexec"].iter().all(|o| options.split(',').any(|x| x == *o)), "{line}");
        assert!(std::fs::write(dir.join("other"), b"x").is_err(), "read-only on the node too");

        // A second prepare (a retried start) replaces the first.
        root.prepare("t1", &spec, &held).await.unwrap();
        assert_eq!(std::fs::read_to_string("/proc/self/mounts").unwrap().matches(dir.to_str().unwrap()).count(), 1);
        assert_eq!(root.tasks(), ["t1"]);

        root.release("t1").await;
        assert!(!dir.exists());
        assert!(!std::fs::read_to_string("/proc/self/mounts").unwrap().contains(dir.to_str().unwrap()));

        let missing = pb::TaskSpec { secrets: vec![reference("other", "", None)], ..Default::default() };
        let error = root.prepare("t1", &missing, &held).await.unwrap_err();
        assert!(error.contains("secret other (id id-other) has not reached this node"), "{error}");
        assert!(!dir.exists(), "nothing left after a refusal");
    }

    #[test]
    fn the_tmpfs_is_sized_to_its_files() {
        let values = vec![Zeroizing::new(vec![0u8; 10]), Zeroizing::new(vec![0u8; 5000])];
        assert_eq!(tmpfs_options(&values), "mode=0700,size=28672,nr_inodes=10");
    }
}
