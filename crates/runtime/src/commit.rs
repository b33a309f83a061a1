//! `commit`: a container's changes as a new image, the one operation that
//! spans both halves of the runtime. The container's overlayfs upper
//! directory becomes a layer over its image ([`crate::image::write_layer`]),
//! its process settings the image's defaults (as docker commit takes them),
//! `--change` instructions go on top. A running container is frozen while
//! its changes are read, unless asked not to be.

use crate::container::{ContainerError, ContainerManager};
use crate::image::{write_layer, CommitRequest, ConfigPatch, Image, ImageError, ImageStore, Reference};

#[derive(Debug, Clone, Default)]
pub struct CommitOptions {
    pub reference: Option<Reference>,
    pub author: Option<String>,
    pub message: Option<String>,
    /// Dockerfile instructions: CMD, ENTRYPOINT, ENV, WORKDIR, USER,
    /// LABEL, EXPOSE.
    pub changes: Vec<String>,
    /// Freeze a running container while its changes are read (`--pause`).
    pub pause: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error(transparent)]
    Container(#[from] ContainerError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("{0}")]
    InvalidChange(String),
    #[error("cannot write the container's changes as a layer: {0}")]
    Layer(std::io::Error),
}

/// Commits the container `name`; the new image.
pub async fn commit(containers: &ContainerManager, images: &ImageStore, name: &str, options: CommitOptions) -> Result<Image, CommitError> {
    let source = containers.commit_source(name)?;
    let base = images.resolve(&source.record.image_id).await?;
    let mut patch = defaults_from_container(&source.record, &base.config.entrypoint);
    for change in &options.changes {
        apply_change(&mut patch, change)?;
    }
    let freeze = options.pause && source.running && !source.paused;
    if freeze {
        containers.pause(name).await?;
    }
    let layer = tempfile::Builder::new()
        .prefix("commit-layer-")
        .tempfile_in(images.root().join("tmp"))
        .map_err(CommitError::Layer)?
        .into_temp_path();
    let (upper, path) = (source.upper.clone(), layer.to_path_buf());
    let written = tokio::task::spawn_blocking(move || write_layer(&upper, std::fs::File::create(&path)?))
        .await
        .map_err(|e| CommitError::Layer(std::io::Error::other(e)));
    if freeze {
        // Thawed whatever the outcome: a failed commit must not leave it frozen.
        let _ = containers.unpause(name).await;
    }
    written?.map_err(CommitError::Layer)?;
    let request = CommitRequest {
        base: base.id.to_string(),
        layer: layer.to_path_buf(),
        reference: options.reference,
        patch,
        author: options.author,
        message: options.message,
        created_by: source.record.args.join(" "),
        container_id: source.record.id.clone(),
    };
    Ok(images.commit(request).await?)
}

/// The container's process settings as image defaults: the image's
/// entrypoint stays when the container ran it, the rest is the command.
fn defaults_from_container(record: &crate::container::ContainerRecord, image_entrypoint: &[String]) -> ConfigPatch {
    let (entrypoint, cmd) = if !image_entrypoint.is_empty() && record.args.starts_with(image_entrypoint) {
        (None, record.args[image_entrypoint.len()..].to_vec())
    } else {
        (Some(Vec::new()), record.args.clone())
    };
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
    ConfigPatch {
        cmd: Some(cmd),
        entrypoint,
        env: Some(record.env.clone()),
        working_dir: non_empty(&record.workdir),
        user: non_empty(&record.user),
        // Shoal's own bookkeeping (task ids and the like) stays behind.
        labels: record.labels.iter().filter(|(k, _)| !k.starts_with("shoal.")).map(|(k, v)| (k.clone(), v.clone())).collect(),
        exposed_ports: Vec::new(),
    }
}

/// One `--change` instruction, as a Dockerfile line.
fn apply_change(patch: &mut ConfigPatch, change: &str) -> Result<(), CommitError> {
    let (instruction, rest) = change.trim().split_once(char::is_whitespace).unwrap_or((change.trim(), ""));
    let rest = rest.trim();
    let invalid = |why: &str| CommitError::InvalidChange(format!("--change {change:?}: {why}"));
    if rest.is_empty() {
        return Err(invalid("the instruction needs a value"));
    }
    match instruction.to_ascii_uppercase().as_str() {
        "CMD" => patch.cmd = Some(command_form(rest).map_err(|e| invalid(&e))?),
        "ENTRYPOINT" => patch.entrypoint = Some(command_form(rest).map_err(|e| invalid(&e))?),
        "ENV" => {
            let env = patch.env.get_or_insert_with(Vec::new);
            for (key, value) in key_values(rest).map_err(|e| invalid(&e))? {
                env.retain(|existing| existing.split_once('=').map_or(existing.as_str(), |(k, _)| k) != key);
                env.push(format!("{key}={value}"));
            }
        }
        "LABEL" => patch.labels.extend(key_values(rest).map_err(|e| invalid(&e))?),
        "WORKDIR" if rest.starts_with('/') => patch.working_dir = Some(rest.to_string()),
        "WORKDIR" => return Err(invalid("the directory must be absolute")),
        "USER" => patch.user = Some(rest.to_string()),
        "EXPOSE" => {
            for port in rest.split_whitespace() {
                let (number, protocol) = port.split_once('/').unwrap_or((port, "tcp"));
                if number.parse::<u16>().is_err() || !matches!(protocol, "tcp" | "udp" | "sctp") {
                    return Err(invalid("give PORT or PORT/tcp|udp|sctp"));
                }
                patch.exposed_ports.push(format!("{number}/{protocol}"));
            }
        }
        _ => return Err(invalid("only CMD, ENTRYPOINT, ENV, LABEL, WORKDIR, USER and EXPOSE can be changed")),
    }
    Ok(())
}

/// `["a", "b"]` as is; anything else through `/bin/sh -c`, as Dockerfiles do.
fn command_form(value: &str) -> Result<Vec<String>, String> {
    if value.starts_with('[') {
        return serde_json::from_str(value).map_err(|_| "the JSON form must be an array of strings".to_string());
    }
    Ok(vec!["/bin/sh".into(), "-c".into(), value.into()])
}

/// `KEY=VALUE ...` (values may be double-quoted) or the old `KEY VALUE`.
fn key_values(value: &str) -> Result<Vec<(String, String)>, String> {
    if !value.contains('=') {
        let (key, rest) = value.split_once(char::is_whitespace).ok_or("give KEY=VALUE")?;
        return Ok(vec![(key.to_string(), rest.trim().to_string())]);
    }
    let mut pairs = Vec::new();
    let mut rest = value.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=').ok_or("give KEY=VALUE")?;
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err("give KEY=VALUE".into());
        }
        let (value, after) = match after.strip_prefix('"') {
            Some(quoted) => {
                let end = quoted.find('"').ok_or("a quoted value has no closing quote")?;
                (quoted[..end].to_string(), &quoted[end + 1..])
            }
            None => {
                let end = after.find(char::is_whitespace).unwrap_or(after.len());
                (after[..end].to_string(), &after[end..])
            }
        };
        pairs.push((key.to_string(), value));
        rest = after.trim_start();
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_read_as_dockerfile_lines() {
        let mut patch = ConfigPatch { env: Some(vec!["A=1".into()]), ..Default::default() };
        apply_change(&mut patch, r#"CMD ["httpd", "-f"]"#).unwrap();
        apply_change(&mut patch, "ENTRYPOINT echo hi").unwrap();
        apply_change(&mut patch, r#"ENV A=2 B="two words""#).unwrap();
        apply_change(&mut patch, "LABEL team=web").unwrap();
        apply_change(&mut patch, "EXPOSE 80 53/udp").unwrap();
        apply_change(&mut patch, "WORKDIR /srv").unwrap();
        assert_eq!(patch.cmd, Some(vec!["httpd".into(), "-f".into()]));
        assert_eq!(patch.entrypoint, Some(vec!["/bin/sh".into(), "-c".into(), "echo hi".into()]));
        assert_eq!(patch.env, Some(vec!["A=2".into(), "B=two words".into()]));
        assert_eq!(patch.labels, vec![("team".into(), "web".into())]);
        assert_eq!(patch.exposed_ports, vec!["80/tcp".to_string(), "53/udp".to_string()]);
        assert_eq!(patch.working_dir.as_deref(), Some("/srv"));
        for bad in ["RUN make", "WORKDIR relative", "EXPOSE http", "CMD", r#"CMD ["a", 1]"#] {
            let error = apply_change(&mut patch, bad).unwrap_err().to_string();
            assert!(error.starts_with("--change"), "{bad}: {error}");
        }
    }
}
