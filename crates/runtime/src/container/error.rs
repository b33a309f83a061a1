//! The container side's errors, one sentence each for the CLI to print.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("no such container: {0}; `container ls -a` lists them")]
    NotFound(String),
    #[error("no such volume: {0}; `shoal volume ls` lists them")]
    NoSuchVolume(String),
    #[error("container name {0:?} is already in use; remove that container or choose another name")]
    NameInUse(String),
    #[error("container id prefix {0:?} matches more than one container; give more of the id")]
    Ambiguous(String),
    #[error("container {0} is running; stop it first or use --force")]
    Running(String),
    #[error("container {0} is not running; see how it ended with `shoal container inspect {0}`")]
    NotRunning(String),
    #[error("mount source {} does not exist on this host; create it or fix the path", .0.display())]
    MountSourceMissing(PathBuf),
    #[error("{0}")]
    InvalidMount(String),
    /// The command does not exist or cannot run in the container.
    #[error("{0}")]
    CommandNotFound(String),
    #[error("{0}")]
    InvalidRequest(String),
    /// The container could not start; the message says why.
    #[error("{0}")]
    StartFailed(String),
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    #[error("{0}")]
    Internal(String),
}

impl ContainerError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        ContainerError::Io { context: context.into(), source }
    }
}
