//! A container's root filesystem: the image's read-only layers under a
//! per-container writable layer, joined by overlayfs; and the lookups that
//! need it (the user in /etc/passwd, the command in PATH).

use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use super::ContainerError;

/// Mounts the image's `layers` (lowest first) read-only under a writable
/// layer made in `state_dir`, at `state_dir/rootfs`. Even a one-layer
/// image goes through overlayfs: the layer is shared and must not change.
pub fn mount_overlay(state_dir: &Path, layers: &[PathBuf]) -> Result<PathBuf, ContainerError> {
    if layers.is_empty() {
        return Err(ContainerError::InvalidRequest("the image has no layers; pull or load it again".into()));
    }
    for layer in layers {
        let text = layer.to_string_lossy();
        // overlayfs splits lowerdir on ':' and options on ','.
        if text.contains([':', ',']) {
            return Err(ContainerError::Internal(format!("layer directory {text} contains ':' or ',', which overlayfs cannot take")));
        }
    }
    // overlayfs lists the topmost layer first.
    let lowerdirs = layers.iter().rev().map(|l| l.to_string_lossy()).collect::<Vec<_>>().join(":");
    let upper = state_dir.join("upper");
    let work = state_dir.join("work");
    let rootfs = state_dir.join("rootfs");
    for dir in [&upper, &work, &rootfs] {
        std::fs::create_dir_all(dir).map_err(|e| ContainerError::io(format!("creating {}", dir.display()), e))?;
    }
    let options = format!("lowerdir={lowerdirs},upperdir={},workdir={}", upper.display(), work.display());
    mount(Some("overlay"), &rootfs, Some("overlay"), MsFlags::empty(), Some(options.as_str()))
        .map_err(|e| ContainerError::Internal(format!("cannot mount the container's root filesystem: {e}")))?;
    Ok(rootfs)
}

/// Unmounts the root filesystem if it is mounted; a missing mount is fine.
pub fn unmount_overlay(state_dir: &Path) -> Result<(), ContainerError> {
    let rootfs = state_dir.join("rootfs");
    match umount2(&rootfs, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(ContainerError::Internal(format!("cannot unmount {}: {e}", rootfs.display()))),
    }
}

pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub home: Option<String>,
}

/// Resolves docker's `user[:group]` forms against the container's own
/// /etc/passwd and /etc/group.
pub fn resolve_user(rootfs: &Path, user: &str) -> Result<ResolvedUser, ContainerError> {
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap_or_default();
    let groups = std::fs::read_to_string(rootfs.join("etc/group")).unwrap_or_default();
    let (user_part, group_part) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    // No user: root, with root's home and groups if the image lists it.
    let user_part = if user_part.is_empty() { "0" } else { user_part };
    let entry = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 7 && (f[0] == user_part || f[2] == user_part));
    let (uid, mut gid, home, name) = match (&entry, user_part.parse::<u32>()) {
        (Some(f), _) => (
            f[2].parse().unwrap_or(0),
            f[3].parse().unwrap_or(0),
            Some(f[5].to_string()),
            Some(f[0].to_string()),
        ),
        (None, Ok(uid)) => (uid, uid, None, None),
        (None, Err(_)) => {
            return Err(ContainerError::InvalidRequest(format!(
                "user {user_part:?} is not in the image's /etc/passwd; use a numeric uid or a user the image defines"
            )))
        }
    };
    let group_entries: Vec<Vec<&str>> = groups.lines().map(|l| l.split(':').collect::<Vec<_>>()).filter(|f| f.len() >= 4).collect();
    if let Some(group) = group_part {
        gid = match group_entries.iter().find(|f| f[0] == group || f[2] == group) {
            Some(f) => f[2].parse().unwrap_or(0),
            None => group.parse().map_err(|_| {
                ContainerError::InvalidRequest(format!(
                    "group {group:?} is not in the image's /etc/group; use a numeric gid or a group the image defines"
                ))
            })?,
        };
    }
    let additional_gids = match name {
        Some(name) => group_entries
            .iter()
            .filter(|f| f[3].split(',').any(|member| member == name))
            .filter_map(|f| f[2].parse().ok())
            .collect(),
        None => Vec::new(),
    };
    Ok(ResolvedUser { uid, gid, additional_gids, home })
}

/// Fails with a clear sentence when `program` cannot be found in the
/// container (docker reports this at start; checking first leaves nothing
/// half-made).
pub fn check_command(rootfs: &Path, program: &str, env: &[String]) -> Result<(), ContainerError> {
    let exists = |path: &str| -> bool {
        // Resolve inside the rootfs: an absolute symlink (busybox applets
        // are often `/bin/busybox`) must not be followed on the host.
        let mut current = PathBuf::from(path.trim_start_matches('/'));
        for _ in 0..16 {
            let host = rootfs.join(&current);
            match std::fs::symlink_metadata(&host) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    let Ok(target) = std::fs::read_link(&host) else { return false };
                    current = if target.is_absolute() {
                        target.strip_prefix("/").unwrap_or(&target).to_path_buf()
                    } else {
                        current.parent().map(|p| p.join(&target)).unwrap_or(target)
                    };
                }
                Ok(meta) => return meta.is_file(),
                Err(_) => return false,
            }
        }
        false
    };
    if program.contains('/') {
        if exists(program) {
            return Ok(());
        }
        return Err(ContainerError::CommandNotFound(format!(
            "executable {program:?} does not exist in the container; check the command"
        )));
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(super::record::DEFAULT_PATH);
    if path.split(':').any(|dir| exists(&format!("{dir}/{program}"))) {
        return Ok(());
    }
    Err(ContainerError::CommandNotFound(format!(
        "executable {program:?} was not found in the container's PATH ({path}); check the command"
    )))
}
