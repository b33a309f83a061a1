//! Compose files, read as Docker's loader reads the Compose Specification:
//! with or without `version`, YAML anchors and `<<` merge keys, `x-`
//! extension fields ignored, several files merged in order, variables
//! substituted from the environment and a `.env` file, `env_file:` folded
//! into each service's environment. The result is a typed project that
//! `stack deploy` and `compose up` turn into specs. No clap here: the
//! commands pass paths and the environment in.

mod env_file;
mod ignored;
mod interpolate;
mod merge;
pub mod model;
pub mod service_parts;
mod syntax;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use serde_yaml_ng::{Mapping, Value};

pub use model::ComposeFile;

/// What to load.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// In order; later files override earlier ones.
    pub files: Vec<PathBuf>,
    /// `--env-file`; default: `.env` beside the first file, if present.
    pub env_file: Option<PathBuf>,
    /// The process environment (passed in so tests need not set it).
    pub environment: HashMap<String, String>,
}

/// A loaded project.
#[derive(Debug)]
pub struct Project {
    pub file: ComposeFile,
    /// The merged, interpolated file (`stack config` prints it).
    pub merged: Value,
    /// One sentence per key ignored, variable unset or such.
    pub warnings: Vec<String>,
}

const TOP_LEVEL_KEYS: &[&str] = &["version", "name", "services", "networks", "volumes", "secrets", "configs"];

/// Loads, merges, substitutes and checks the files. Every error is one
/// sentence naming the file and the key.
pub fn load(options: &LoadOptions) -> Result<Project, String> {
    let first = options.files.first().ok_or("no compose file given; name one with -c FILE")?;
    let working_dir = first
        .canonicalize()
        .map_err(|e| format!("cannot read the compose file {}: {e}; check the path", first.display()))?
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    let dot_env = match &options.env_file {
        Some(path) if !path.exists() => {
            return Err(format!("the env file {} does not exist; check --env-file", path.display()));
        }
        Some(path) => Some(path.clone()),
        None => Some(working_dir.join(".env")).filter(|p| p.is_file()),
    };
    let env = env_file::project_environment(options.environment.clone(), dot_env.as_deref())?;

    let mut unset = BTreeSet::new();
    let mut merged = Value::Mapping(Mapping::new());
    for path in &options.files {
        let file = read_file(path, &env, &mut unset)?;
        merge::merge(&mut merged, file, &mut Vec::new());
    }
    let files_named = names_of(&options.files);
    let Value::Mapping(mapping) = &mut merged else { unreachable!("merging mappings gives a mapping") };
    let mut warnings: Vec<String> = unset
        .iter()
        .map(|var| format!("the variable {var} is not set; an empty string is used in its place"))
        .collect();
    warnings.extend(ignored::take_ignored(mapping));

    let mut file: ComposeFile = serde_path_to_error::deserialize(merged.clone()).map_err(|e| {
        let path = e.path().to_string();
        let inner = unknown_key_sentence(e.into_inner().to_string());
        match path.as_str() {
            "." => format!("{files_named}: {inner}"),
            _ => format!("{files_named}: {path}: {inner}"),
        }
    })?;
    resolve(&mut file, &working_dir, &env, &files_named)?;
    check_references(&file, &files_named)?;
    Ok(Project { file, merged, warnings })
}

/// Reads one file into a mapping: parsed (errors with line and column),
/// merge keys applied, extension fields removed, top-level keys checked,
/// variables substituted.
fn read_file(path: &Path, env: &HashMap<String, String>, unset: &mut BTreeSet<String>) -> Result<Value, String> {
    let name = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read the compose file {name}: {e}; check the path"))?;
    let mut value: Value = serde_yaml_ng::from_str(&text).map_err(|e| match e.location() {
        Some(at) => format!("{name} line {} column {}: {}", at.line(), at.column(), yaml_reason(&e)),
        None => format!("{name}: {e}"),
    })?;
    if value.is_null() {
        return Err(format!("{name} is empty; a compose file needs at least `services:`"));
    }
    value.apply_merge().map_err(|e| format!("{name}: a `<<` merge key is invalid: {e}"))?;
    ignored::strip_extensions(&mut value);
    let Value::Mapping(top) = &value else {
        return Err(format!("{name} is not a mapping of keys such as `services:`; check the file's indentation"));
    };
    for key in top.keys() {
        let key = key.as_str().unwrap_or_default();
        if !TOP_LEVEL_KEYS.contains(&key) {
            return Err(format!(
                "{name}: the top-level key `{key}` is unknown; use services, networks, volumes, secrets, configs or name (or x-{key} for an extension)"
            ));
        }
    }
    substitute_all(&mut value, env, unset, &mut Vec::new()).map_err(|e| format!("{name}: {e}"))?;
    Ok(value)
}

/// serde's "unknown field `x`, expected one of <thirty names>" as one
/// short sentence.
fn unknown_key_sentence(message: String) -> String {
    match message.strip_prefix("unknown field `").and_then(|rest| rest.split_once('`')) {
        Some((key, _)) => format!("the key `{key}` is unknown here; check its spelling and indentation"),
        None => message,
    }
}

/// The parser's message without its own "at line L column C" suffix.
fn yaml_reason(error: &serde_yaml_ng::Error) -> String {
    let text = error.to_string();
    match text.find(" at line ") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

/// Substitutes variables in every string of `value`; errors name the key.
fn substitute_all(
    value: &mut Value,
    env: &HashMap<String, String>,
    unset: &mut BTreeSet<String>,
    path: &mut Vec<String>,
) -> Result<(), String> {
    use interpolate::InterpolationError;
    match value {
        Value::String(text) if text.contains('$') => {
            *text = interpolate::substitute(text, env, unset).map_err(|e| {
                let at = path.join(".");
                match e {
                    InterpolationError::Required { var, message } => {
                        format!("{at} needs the variable {var}: {message}")
                    }
                    InterpolationError::Invalid { text } => {
                        format!("{at} has an invalid variable reference in `{text}`; write $$ for a literal $")
                    }
                }
            })?;
        }
        Value::Mapping(mapping) => {
            for (key, child) in mapping.iter_mut() {
                path.push(key.as_str().map(str::to_string).unwrap_or_else(|| format!("{key:?}")));
                substitute_all(child, env, unset, path)?;
                path.pop();
            }
        }
        Value::Sequence(items) => {
            for (index, child) in items.iter_mut().enumerate() {
                let last = path.pop().unwrap_or_default();
                path.push(format!("{last}[{index}]"));
                substitute_all(child, env, unset, path)?;
                path.pop();
                path.push(last);
            }
        }
        _ => {}
    }
    Ok(())
}

fn names_of(files: &[PathBuf]) -> String {
    files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(" + ")
}

/// Makes the project self-contained: `env_file:` entries folded into the
/// environment (the service's own entries win), `KEY` without a value taken
/// from the environment, relative host paths made absolute.
fn resolve(file: &mut ComposeFile, working_dir: &Path, env: &HashMap<String, String>, files: &str) -> Result<(), String> {
    let absolute = |path: &str| -> String {
        let expanded = match path.strip_prefix("~/") {
            Some(rest) => env.get("HOME").map(|home| format!("{home}/{rest}")).unwrap_or_else(|| path.to_string()),
            None => path.to_string(),
        };
        let joined = working_dir.join(&expanded);
        normalize(&joined).display().to_string()
    };
    for (name, service) in &mut file.services {
        if service.image.as_deref().is_none_or(str::is_empty) {
            return Err(format!(
                "{files}: services.{name} has no image; Shoal deploys images and does not build them, so give `image:`"
            ));
        }
        let mut environment = std::collections::BTreeMap::new();
        for entry in service.env_file.take().map(|f| f.0).unwrap_or_default() {
            let path = PathBuf::from(absolute(&entry.path));
            if !path.exists() && !entry.required {
                continue;
            }
            for (key, value) in env_file::read(&path).map_err(|e| format!("{files}: services.{name}.env_file: {e}"))? {
                environment.insert(key, value);
            }
        }
        environment.extend(std::mem::take(&mut service.environment.0));
        // `- KEY` takes the variable from the environment, and is dropped
        // when the environment does not set it (as docker compose does).
        service.environment.0 = environment
            .into_iter()
            .filter_map(|(key, value)| match value {
                Some(value) => Some((key, Some(value))),
                None => env.get(&key).map(|value| (key, Some(value.clone()))),
            })
            .collect();
        for volume in &mut service.volumes {
            if volume.kind == model::VolumeKind::Bind {
                if let Some(source) = &volume.source {
                    volume.source = Some(absolute(source));
                }
            }
        }
    }
    for object in file.secrets.values_mut().chain(file.configs.values_mut()) {
        if let Some(path) = &object.file {
            object.file = Some(absolute(path));
        }
    }
    Ok(())
}

/// `a/./b/../c` as `a/c`, without touching the filesystem.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Every network, volume, secret, config and dependency a service names
/// must be defined in the file.
fn check_references(file: &ComposeFile, files: &str) -> Result<(), String> {
    for (name, service) in &file.services {
        let undefined = |kind: &str, what: &str| {
            format!("{files}: services.{name} uses the {kind} {what:?}, which the file does not define; add it under top-level `{kind}s:`")
        };
        for network in service.networks.0.keys() {
            if network != "default" && !file.networks.contains_key(network) {
                return Err(undefined("network", network));
            }
        }
        for volume in &service.volumes {
            if let (model::VolumeKind::Volume, Some(source)) = (volume.kind, &volume.source) {
                if !file.volumes.contains_key(source) {
                    return Err(undefined("volume", source));
                }
            }
        }
        for secret in &service.secrets {
            if !file.secrets.contains_key(&secret.source) {
                return Err(undefined("secret", &secret.source));
            }
        }
        for config in &service.configs {
            if !file.configs.contains_key(&config.source) {
                return Err(undefined("config", &config.source));
            }
        }
        for dependency in service.depends_on.0.keys() {
            if !file.services.contains_key(dependency) {
                return Err(format!(
                    "{files}: services.{name}.depends_on names {dependency:?}, which is not a service of the file; check the name"
                ));
            }
            if dependency == name {
                return Err(format!("{files}: services.{name}.depends_on names the service itself; remove it"));
            }
        }
    }
    for (kind, objects) in [("secret", &file.secrets), ("config", &file.configs)] {
        for (name, object) in objects {
            let sources = [object.file.is_some(), object.environment.is_some(), object.content.is_some(), object.external.external];
            if sources.iter().filter(|s| **s).count() != 1 {
                return Err(format!(
                    "{files}: {kind}s.{name} needs exactly one of file, environment{}, or external: true",
                    if kind == "config" { ", content" } else { "" }
                ));
            }
            if kind == "secret" && object.content.is_some() {
                return Err(format!("{files}: secrets.{name} cannot have inline content; use file or environment"));
            }
        }
    }
    Ok(())
}
