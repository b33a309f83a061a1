//! Contexts, as docker's: a named way to reach a swarm (a manager's
//! address, the other managers to try when it is down, and the client
//! certificate), kept in the user's config directory so a remote CLI needs
//! no flags once one is in use.
//!
//! Layout under `$SHOAL_CONFIG` (default `~/.shoal`):
//! - `config.json`: `{"currentContext": NAME}`;
//! - `contexts/NAME/meta.json`: the host, the managers, a description;
//! - `contexts/NAME/tls/{ca,cert,key}.pem`, the key readable by its owner only.
//!
//! `default` is the built-in context: the local daemon's socket.

use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{CliError, CliResult};

/// The built-in context's name.
pub const DEFAULT: &str = "default";
const TLS_FILES: [&str; 3] = ["ca.pem", "cert.pem", "key.pem"];

/// What `meta.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Context {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// `tcp://HOST:PORT` or `unix:///PATH`.
    pub host: String,
    /// Every manager's `HOST:PORT`, tried in turn after `host` when it does
    /// not answer.
    #[serde(default)]
    pub managers: Vec<String>,
}

/// The TLS files of a context, as PEM text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: String,
    pub cert: String,
    pub key: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Config {
    #[serde(rename = "currentContext", default, skip_serializing_if = "String::is_empty")]
    current: String,
}

pub struct ContextStore {
    dir: PathBuf,
}

fn error(message: String) -> CliError {
    CliError::msg(message)
}

/// Docker's rule for context names.
pub fn check_name(name: &str) -> CliResult {
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "_.+-".contains(c))
        && name.len() <= 64;
    if !valid {
        return Err(error(format!(
            "context name {name:?} is invalid; use letters, digits, '_', '.', '+' or '-', starting with a letter or digit"
        )));
    }
    if name == DEFAULT {
        return Err(error("context name \"default\" is the built-in context (the local daemon); choose another name".into()));
    }
    Ok(())
}

/// A host a context may name: `tcp://HOST[:PORT]` or `unix:///PATH`.
pub fn check_host(host: &str) -> CliResult {
    let ok = host.strip_prefix("tcp://").is_some_and(|a| !a.trim_end_matches('/').is_empty())
        || host.strip_prefix("unix://").is_some_and(|p| p.starts_with('/'));
    if ok {
        Ok(())
    } else {
        Err(error(format!("host {host:?} is invalid; use tcp://HOST:PORT (a manager's TLS port) or unix:///PATH")))
    }
}

impl ContextStore {
    /// `$SHOAL_CONFIG`, else `~/.shoal`.
    pub fn open() -> CliResult<ContextStore> {
        if let Some(dir) = std::env::var_os("SHOAL_CONFIG").filter(|d| !d.is_empty()) {
            return Ok(ContextStore { dir: PathBuf::from(dir) });
        }
        let home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .ok_or_else(|| error("neither SHOAL_CONFIG nor HOME is set, so there is nowhere to keep contexts; set SHOAL_CONFIG to a directory".into()))?;
        Ok(ContextStore { dir: PathBuf::from(home).join(".shoal") })
    }

    #[cfg(test)]
    pub fn at(dir: &Path) -> ContextStore {
        ContextStore { dir: dir.to_path_buf() }
    }

    fn context_dir(&self, name: &str) -> PathBuf {
        self.dir.join("contexts").join(name)
    }

    pub fn tls_dir(&self, name: &str) -> PathBuf {
        self.context_dir(name).join("tls")
    }

    pub fn exists(&self, name: &str) -> bool {
        self.context_dir(name).join("meta.json").is_file()
    }

    pub fn get(&self, name: &str) -> CliResult<Context> {
        let path = self.context_dir(name).join("meta.json");
        let text = std::fs::read_to_string(&path).map_err(|_| {
            error(format!("context {name:?} does not exist; `shoal context ls` lists them, `shoal context create` makes one"))
        })?;
        serde_json::from_str(&text).map_err(|e| error(format!("context {name:?} is damaged ({}: {e}); remove it and create it again", path.display())))
    }

    /// Every context, by name.
    pub fn list(&self) -> CliResult<Vec<Context>> {
        let Ok(entries) = std::fs::read_dir(self.dir.join("contexts")) else { return Ok(Vec::new()) };
        let mut contexts = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if self.exists(&name) {
                contexts.push(self.get(&name)?);
            }
        }
        contexts.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(contexts)
    }

    /// Writes a new context with its TLS files (none for a unix:// host).
    pub fn create(&self, context: &Context, tls: Option<&TlsFiles>) -> CliResult {
        check_name(&context.name)?;
        check_host(&context.host)?;
        if self.exists(&context.name) {
            return Err(error(format!("context {:?} already exists; remove it first or choose another name", context.name)));
        }
        let dir = self.context_dir(&context.name);
        make_private_dir(&dir)?;
        if let Some(tls) = tls {
            let tls_dir = self.tls_dir(&context.name);
            make_private_dir(&tls_dir)?;
            for (name, content) in TLS_FILES.iter().zip([&tls.ca, &tls.cert, &tls.key]) {
                write_file(&tls_dir.join(name), content.as_bytes(), if *name == "key.pem" { 0o600 } else { 0o644 })?;
            }
        }
        let meta = serde_json::to_vec_pretty(context).map_err(|e| error(e.to_string()))?;
        write_file(&dir.join("meta.json"), &meta, 0o644)
    }

    pub fn tls(&self, name: &str) -> CliResult<Option<TlsFiles>> {
        let dir = self.tls_dir(name);
        if !dir.is_dir() {
            return Ok(None);
        }
        let read = |file: &str| {
            let path = dir.join(file);
            std::fs::read_to_string(&path).map_err(|e| {
                error(format!("context {name:?} cannot read {}: {e}; create the context again with readable files", path.display()))
            })
        };
        Ok(Some(TlsFiles { ca: read("ca.pem")?, cert: read("cert.pem")?, key: read("key.pem")? }))
    }

    pub fn remove(&self, name: &str) -> CliResult {
        if name == DEFAULT {
            return Err(error("the default context cannot be removed".into()));
        }
        self.get(name)?;
        std::fs::remove_dir_all(self.context_dir(name)).map_err(|e| error(format!("cannot remove context {name:?}: {e}")))?;
        if self.current()? == name {
            self.set_current(DEFAULT)?;
        }
        Ok(())
    }

    /// The context in use: `config.json`'s, else `default`.
    pub fn current(&self) -> CliResult<String> {
        let Ok(text) = std::fs::read_to_string(self.dir.join("config.json")) else { return Ok(DEFAULT.into()) };
        let config: Config = serde_json::from_str(&text).unwrap_or_default();
        Ok(if config.current.is_empty() { DEFAULT.into() } else { config.current })
    }

    pub fn set_current(&self, name: &str) -> CliResult {
        if name != DEFAULT {
            self.get(name)?;
        }
        make_private_dir(&self.dir)?;
        let path = self.dir.join("config.json");
        // Keep whatever else the file holds.
        let mut config: serde_json::Value =
            std::fs::read_to_string(&path).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_else(|| serde_json::json!({}));
        if name == DEFAULT {
            if let Some(object) = config.as_object_mut() {
                object.remove("currentContext");
            }
        } else {
            config["currentContext"] = serde_json::Value::String(name.into());
        }
        let text = serde_json::to_vec_pretty(&config).map_err(|e| error(e.to_string()))?;
        write_file(&path, &text, 0o600)
    }

    /// `context export`: a tar of meta.json and the TLS files.
    pub fn export(&self, name: &str, out: impl Write) -> CliResult {
        let context = self.get(name)?;
        let mut archive = tar::Builder::new(out);
        let mut add = |path: &str, bytes: &[u8], mode: u32| -> CliResult {
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(mode);
            header.set_cksum();
            archive.append_data(&mut header, path, bytes).map_err(|e| error(format!("cannot write the export: {e}")))
        };
        add("meta.json", &serde_json::to_vec_pretty(&context).map_err(|e| error(e.to_string()))?, 0o644)?;
        if let Some(tls) = self.tls(name)? {
            for (file, content) in TLS_FILES.iter().zip([&tls.ca, &tls.cert, &tls.key]) {
                add(&format!("tls/{file}"), content.as_bytes(), if *file == "key.pem" { 0o600 } else { 0o644 })?;
            }
        }
        archive.finish().map_err(|e| error(format!("cannot write the export: {e}")))
    }

    /// `context import NAME FILE`: an export made here or elsewhere.
    pub fn import(&self, name: &str, input: impl Read) -> CliResult {
        let mut meta = None;
        let mut tls = TlsFiles::default();
        let mut seen_tls = 0;
        let mut archive = tar::Archive::new(input);
        let invalid = |why: String| error(format!("the file is not a context export ({why}); make one with `shoal context export`"));
        for entry in archive.entries().map_err(|e| invalid(e.to_string()))? {
            let entry = entry.map_err(|e| invalid(e.to_string()))?;
            let path = entry.path().map_err(|e| invalid(e.to_string()))?.to_string_lossy().into_owned();
            let mut text = String::new();
            entry.take(1 << 20).read_to_string(&mut text).map_err(|e| invalid(format!("{path}: {e}")))?;
            match path.as_str() {
                "meta.json" => meta = Some(serde_json::from_str::<Context>(&text).map_err(|e| invalid(format!("meta.json: {e}")))?),
                "tls/ca.pem" => (tls.ca, seen_tls) = (text, seen_tls + 1),
                "tls/cert.pem" => (tls.cert, seen_tls) = (text, seen_tls + 1),
                "tls/key.pem" => (tls.key, seen_tls) = (text, seen_tls + 1),
                _ => {}
            }
        }
        let mut context = meta.ok_or_else(|| invalid("it has no meta.json".into()))?;
        context.name = name.to_string();
        let tls = match seen_tls {
            0 => None,
            3 => Some(&tls),
            _ => return Err(invalid("it has only some of ca.pem, cert.pem and key.pem".into())),
        };
        self.create(&context, tls)
    }
}

fn make_private_dir(dir: &Path) -> CliResult {
    std::fs::create_dir_all(dir).map_err(|e| error(format!("cannot create {}: {e}", dir.display())))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| error(format!("cannot protect {}: {e}", dir.display())))
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> CliResult {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(|e| error(format!("cannot write {}: {e}", path.display())))?;
    file.write_all(bytes).map_err(|e| error(format!("cannot write {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(name: &str) -> Context {
        Context {
            name: name.into(),
            description: "lab".into(),
            host: "tcp://198.18.0.1:4242".into(),
            managers: vec!["198.18.0.1:4242".into(), "198.18.0.2:4242".into()],
        }
    }

    fn tls() -> TlsFiles {
        TlsFiles { ca: "CA".into(), cert: "CERT".into(), key: "KEY".into() }
    }

    #[test]
    fn create_use_list_and_remove() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContextStore::at(dir.path());
        assert_eq!(store.current().unwrap(), DEFAULT);
        store.create(&context("lab"), Some(&tls())).unwrap();
        let key = store.tls_dir("lab").join("key.pem");
        assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600, "the key is its owner's only");
        assert_eq!(store.get("lab").unwrap(), context("lab"));
        assert_eq!(store.tls("lab").unwrap(), Some(tls()));
        store.set_current("lab").unwrap();
        assert_eq!(store.current().unwrap(), "lab");
        assert_eq!(store.list().unwrap().iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["lab"]);
        store.remove("lab").unwrap();
        assert_eq!(store.current().unwrap(), DEFAULT, "removing the current context falls back to default");
        assert!(store.list().unwrap().is_empty());
    }

    #[test]
    fn export_then_import_under_another_name() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContextStore::at(dir.path());
        store.create(&context("lab"), Some(&tls())).unwrap();
        let mut archive = Vec::new();
        store.export("lab", &mut archive).unwrap();
        store.import("copy", archive.as_slice()).unwrap();
        assert_eq!(store.get("copy").unwrap(), Context { name: "copy".into(), ..context("lab") });
        assert_eq!(store.tls("copy").unwrap(), Some(tls()));
        let error = store.import("bad", &b"not a tar at all"[..]).unwrap_err().to_string();
        assert!(error.contains("not a context export"), "{error}");
    }

    #[test]
    fn bad_input_is_one_sentence_naming_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContextStore::at(dir.path());
        store.create(&context("lab"), Some(&tls())).unwrap();
        let message = |r: CliResult| r.unwrap_err().to_string();
        assert!(message(store.create(&context("lab"), Some(&tls()))).contains("context \"lab\" already exists"));
        assert!(message(store.create(&context("bad name"), None)).contains("\"bad name\""));
        assert!(message(store.create(&context("default"), None)).contains("built-in"));
        let http = Context { host: "http://198.18.0.1:4242".into(), ..context("web") };
        assert!(message(store.create(&http, None)).contains("host \"http://198.18.0.1:4242\" is invalid"));
        assert!(message(store.set_current("nope")).contains("context \"nope\" does not exist"));
        assert!(message(store.remove("default")).contains("cannot be removed"));
        std::fs::set_permissions(store.tls_dir("lab").join("key.pem"), std::fs::Permissions::from_mode(0o000)).unwrap();
        // Root reads anything; the message is checked where the file is gone.
        std::fs::remove_file(store.tls_dir("lab").join("key.pem")).unwrap();
        assert!(message(store.tls("lab").map(|_| ())).contains("key.pem"));
    }
}
