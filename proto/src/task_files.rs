//! Where a secret or config lands in a task's container, as its reference's
//! `target` says: the managers check targets with this when a service is
//! written, and agents place the files with it, so both read a target the
//! same way.

use std::path::{Component, Path};

use crate::pb::FileKind;

/// Where secrets with a relative target go, as in docker.
pub const SECRETS_DIR: &str = "/run/secrets";

/// The absolute path in the container for `target`, or why it is not
/// acceptable (one sentence naming it). A relative secret target is under
/// /run/secrets, a relative config target under /; an absolute one is
/// taken as it is. No target may climb with `..`, end in `/` or name `/`.
pub fn container_path(kind: FileKind, target: &str) -> Result<String, String> {
    let what = match kind {
        FileKind::Config => "config",
        _ => "secret",
    };
    let invalid = |why: &str| Err(format!("{what} target {target:?} is invalid: {why}"));
    if target.is_empty() {
        return invalid("it is empty; give a file name or an absolute path");
    }
    if target.contains('\0') {
        return invalid("it contains a NUL byte");
    }
    if target.ends_with('/') {
        return invalid("it names a directory; give a file name");
    }
    let path = Path::new(target);
    if path.components().any(|c| c == Component::ParentDir) {
        return invalid("'..' could leave the directory it belongs in; give a path without '..'");
    }
    let full = if path.is_absolute() {
        target.to_string()
    } else {
        match kind {
            FileKind::Config => format!("/{target}"),
            _ => format!("{SECRETS_DIR}/{target}"),
        }
    };
    // `/./` and `//` are harmless but `/` itself is no file.
    let normal: Vec<&str> = full.split('/').filter(|part| !part.is_empty() && *part != ".").collect();
    if normal.is_empty() {
        return invalid("it names the container's root; give a file name");
    }
    Ok(format!("/{}", normal.join("/")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_targets_land_where_docker_puts_them() {
        assert_eq!(container_path(FileKind::Secret, "db_pass").unwrap(), "/run/secrets/db_pass");
        assert_eq!(container_path(FileKind::Secret, "app/db").unwrap(), "/run/secrets/app/db");
        assert_eq!(container_path(FileKind::Secret, "/etc/ssl/key.pem").unwrap(), "/etc/ssl/key.pem");
        assert_eq!(container_path(FileKind::Config, "app.conf").unwrap(), "/app.conf");
        assert_eq!(container_path(FileKind::Config, "/etc//app/./app.conf").unwrap(), "/etc/app/app.conf");
    }

    #[test]
    fn targets_that_escape_or_name_no_file_are_refused_naming_them() {
        for bad in ["../etc/passwd", "/run/secrets/../../etc/shadow", "a/..", "", "dir/", "/", "/./", "a\0b"] {
            let error = container_path(FileKind::Secret, bad).unwrap_err();
            assert!(error.contains(&format!("{bad:?}")), "{error}");
        }
        assert!(container_path(FileKind::Config, "..").unwrap_err().starts_with("config target"));
    }
}
