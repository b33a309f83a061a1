//! The process that does a `cp` against a container: forked by the
//! launcher, it chroots into the container's root (the running init's
//! `/proc/PID/root`, which shows its volumes too, or the mounted root
//! filesystem of a stopped container) before touching a path, so every
//! link it meets, absolute or `..`, resolves inside the container, as
//! docker's chrooted archiver does. It reports on its status pipe, one
//! JSON [`Report`] per line, and moves the archive over its data pipe.

use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::archive;
use super::rules::{self, CopySource};

/// What the launcher is asked to fork for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JailRequest {
    /// The container's root as the daemon sees it.
    pub root: PathBuf,
    /// The container's name, for messages.
    pub container: String,
    pub job: Job,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Job {
    /// Archive `path` to the data pipe.
    Pack { path: String, follow_link: bool },
    /// Unpack the data pipe's archive at `destination`; `source` None: a
    /// tar stream to unpack as it is.
    Unpack { destination: String, source: Option<CopySource>, keep_owners: bool },
}

/// One line on the status pipe.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Report {
    /// Packing: what the path is; the archive follows on the data pipe.
    Source(CopySource),
    /// Finished; the archive's size.
    Done(u64),
    /// Failed; one sentence.
    Failed(String),
}

pub fn encode(request: &JailRequest) -> Vec<u8> {
    serde_json::to_vec(request).unwrap_or_default()
}

pub fn decode(bytes: &[u8]) -> Option<JailRequest> {
    serde_json::from_slice(bytes).ok()
}

/// The forked process's work; its exit code.
pub fn run(request: &JailRequest, data: OwnedFd, status: OwnedFd) -> i32 {
    let mut status = File::from(status);
    let data = File::from(data);
    let result = enter(&request.root).and_then(|()| match &request.job {
        Job::Pack { path, follow_link } => pack(&request.container, path, *follow_link, data, &mut status),
        Job::Unpack { destination, source, keep_owners } => {
            unpack(&request.container, destination, source.as_ref(), *keep_owners, data)
        }
    });
    let (report, code) = match result {
        Ok(bytes) => (Report::Done(bytes), 0),
        Err(reason) => (Report::Failed(reason), 1),
    };
    let _ = say(&mut status, &report);
    code
}

fn say(status: &mut File, report: &Report) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(report).unwrap_or_default();
    line.push(b'\n');
    status.write_all(&line)
}

/// Makes `root` this process's `/`.
fn enter(root: &Path) -> Result<(), String> {
    nix::unistd::chroot(root).map_err(|e| format!("cannot enter the container's root {}: {e}", root.display()))?;
    std::env::set_current_dir("/").map_err(|e| format!("cannot enter the container's root: {e}"))
}

fn pack(container: &str, path: &str, follow_link: bool, data: File, status: &mut File) -> Result<u64, String> {
    let absolute = rules::absolute_in_container(path);
    let target = archive::without_trailing(&absolute);
    let kind = archive::source_kind(&target, follow_link).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!("there is no {absolute} in container {container}; check the path"),
        _ => format!("cannot read {absolute} in container {container}: {e}"),
    })?;
    if absolute.ends_with('/') && kind != rules::SourceKind::Directory {
        return Err(format!("{absolute} in container {container} is not a directory; drop the trailing slash"));
    }
    let (name, contents_only) = rules::source_name(&absolute);
    // With -L the link's target is what goes; resolving it here, chrooted,
    // keeps it inside the container.
    let target = if follow_link { std::fs::canonicalize(&target).unwrap_or(target) } else { target };
    let source = CopySource { kind, name: name.clone(), contents_only };
    say(status, &Report::Source(source)).map_err(|e| format!("cannot report on the copy: {e}"))?;
    archive::pack(&target, kind, &name, data).map_err(|e| format!("cannot archive {absolute} in container {container}: {e}"))
}

fn unpack(container: &str, destination: &str, source: Option<&CopySource>, keep_owners: bool, data: File) -> Result<u64, String> {
    let absolute = rules::absolute_in_container(destination);
    let (state, parent_is_directory) = archive::destination(Path::new(&absolute));
    let placement = rules::place(source, &absolute, state, parent_is_directory, &format!("container {container}"))
        .map_err(|e| e.to_string())?;
    archive::unpack(data, &placement, keep_owners)
}
