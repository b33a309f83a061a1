//! Registry credentials where docker keeps them, so the two tools share a
//! login: `$DOCKER_CONFIG/config.json` (`~/.docker/config.json` by
//! default), `auths.<server>.auth` holding base64 of `user:password`, the
//! file 0600 in a 0700 directory, every other key in it left as it was.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;

use base64::Engine as _;
use shoal_proto::pb;
use shoal_runtime::image::Reference;

use crate::error::{CliError, CliResult};

/// Docker Hub's key in `auths`, as docker writes it.
const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

pub struct CredentialStore {
    path: PathBuf,
}

impl CredentialStore {
    /// `$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json`.
    pub fn locate() -> CliResult<Self> {
        let dir = match std::env::var_os("DOCKER_CONFIG") {
            Some(dir) => PathBuf::from(dir),
            None => {
                let home = std::env::var_os("HOME")
                    .ok_or_else(|| CliError::msg("HOME is not set, so there is nowhere to keep logins; set HOME or DOCKER_CONFIG"))?;
                PathBuf::from(home).join(".docker")
            }
        };
        Ok(CredentialStore { path: dir.join("config.json") })
    }

    #[cfg(test)]
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    fn read(&self) -> CliResult<serde_json::Value> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                CliError::msg(format!("{} is not valid JSON ({e}); fix or remove it", self.path.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(serde_json::json!({})),
            Err(e) => Err(CliError::msg(format!("cannot read {}: {e}", self.path.display()))),
        }
    }

    fn write(&self, config: &serde_json::Value) -> CliResult<()> {
        let dir = self.path.parent().unwrap_or(std::path::Path::new("."));
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
            .map_err(|e| CliError::msg(format!("cannot create {}: {e}", dir.display())))?;
        // Written beside it and renamed: a crash leaves the old file whole.
        let temp = dir.join(".config.json.tmp");
        let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&temp)
            .map_err(|e| CliError::msg(format!("cannot write {}: {e}", temp.display())))?;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        file.write_all(&serde_json::to_vec_pretty(config)?)?;
        file.sync_all()?;
        std::fs::rename(&temp, &self.path).map_err(|e| CliError::msg(format!("cannot write {}: {e}", self.path.display())))
    }

    /// The credentials kept for `server` (a key as [`server_key`] makes it).
    pub fn get(&self, server: &str) -> Option<(String, String)> {
        let config = self.read().ok()?;
        let encoded = config["auths"][server]["auth"].as_str()?;
        let decoded = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (user, password) = text.split_once(':')?;
        Some((user.to_string(), password.to_string()))
    }

    pub fn set(&self, server: &str, username: &str, password: &str) -> CliResult<()> {
        let mut config = self.read()?;
        if !config["auths"].is_object() {
            config["auths"] = serde_json::json!({});
        }
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
        config["auths"][server] = serde_json::json!({ "auth": encoded });
        self.write(&config)
    }

    /// Whether there was a login to remove.
    pub fn remove(&self, server: &str) -> CliResult<bool> {
        let mut config = self.read()?;
        let removed = config["auths"].as_object_mut().is_some_and(|auths| auths.remove(server).is_some());
        if removed {
            self.write(&config)?;
        }
        Ok(removed)
    }
}

/// The `auths` key for a server as the user names it: docker.io (or none)
/// is Docker Hub's URL; others are `host[:port]` without scheme or path.
pub fn server_key(server: &str) -> String {
    let host = server.trim().trim_start_matches("https://").trim_start_matches("http://");
    let host = host.split('/').next().unwrap_or(host);
    match host {
        "" | "docker.io" | "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB_KEY.to_string(),
        _ => host.to_string(),
    }
}

/// The registry host the daemon speaks to for a key.
pub fn registry_host(key: &str) -> String {
    if key == DOCKER_HUB_KEY {
        "docker.io".to_string()
    } else {
        key.to_string()
    }
}

/// The credentials `login` kept for the registry of `image`, if any.
pub fn for_image(image: &str) -> Option<pb::RegistryCredentials> {
    let registry = Reference::parse(image).ok()?.registry().to_string();
    let (username, password) = CredentialStore::locate().ok()?.get(&server_key(&registry))?;
    Some(pb::RegistryCredentials { username, password })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_dockers() {
        assert_eq!(server_key("docker.io"), DOCKER_HUB_KEY);
        assert_eq!(server_key(""), DOCKER_HUB_KEY);
        assert_eq!(server_key("https://registry.local:5000/v2/"), "registry.local:5000");
        assert_eq!(registry_host(&server_key("docker.io")), "docker.io");
    }

    #[test]
    fn a_login_is_kept_beside_other_settings_readable_only_by_its_owner() {
        let dir = tempfile::tempdir().unwrap();
        let store = CredentialStore { path: dir.path().join("docker/config.json") };
        std::fs::create_dir_all(dir.path().join("docker")).unwrap();
        std::fs::write(store.path(), r#"{"credsStore": "", "detachKeys": "ctrl-e,e"}"#).unwrap();
        store.set("127.0.0.1:5000", "shoal", "p:ss").unwrap();
        assert_eq!(store.get("127.0.0.1:5000"), Some(("shoal".into(), "p:ss".into())));
        let mode = std::fs::metadata(store.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let config: serde_json::Value = serde_json::from_slice(&std::fs::read(store.path()).unwrap()).unwrap();
        assert_eq!(config["detachKeys"], "ctrl-e,e", "other settings stay");
        assert!(store.remove("127.0.0.1:5000").unwrap());
        assert!(!store.remove("127.0.0.1:5000").unwrap());
        assert_eq!(store.get("127.0.0.1:5000"), None);
    }
}
