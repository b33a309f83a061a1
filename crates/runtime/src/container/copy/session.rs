//! The daemon's side of `cp`: finds the container's root, has the
//! launcher fork a [`super::jail`] there, and hands back the archive's
//! pipe and the jail's verdict.


use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::unix::pipe;

use super::jail::{Job, JailRequest, Report};
use super::CopySource;
use crate::container::pipes::{pipe_pair, receiver, sender};
use crate::container::{ContainerError, ContainerManager};

type Result<T> = std::result::Result<T, ContainerError>;

/// A copy out of a container: what the path is, then its archive.
pub struct CopyOut {
    pub source: CopySource,
    pub data: pipe::Receiver,
    pub done: CopyDone,
}

/// A copy into a container: write the archive to `data`, close it, then
/// wait on `done`.
pub struct CopyIn {
    pub data: pipe::Sender,
    pub done: CopyDone,
}

/// The jail's last word.
pub struct CopyDone {
    status: BufReader<pipe::Receiver>,
    container: String,
}

impl CopyDone {
    /// The archive's size once the jail finished, or why it failed.
    pub async fn wait(mut self) -> Result<u64> {
        match next_report(&mut self.status, &self.container).await? {
            Report::Done(bytes) => Ok(bytes),
            Report::Failed(reason) => Err(ContainerError::InvalidRequest(reason)),
            Report::Source(_) => Err(ContainerError::Internal("the copy reported its source twice".into())),
        }
    }
}

async fn next_report(status: &mut BufReader<pipe::Receiver>, container: &str) -> Result<Report> {
    let mut line = String::new();
    let read = status.read_line(&mut line).await.map_err(|e| ContainerError::io("reading how a copy went", e))?;
    if read == 0 {
        return Err(ContainerError::Internal(format!("the copy for container {container} ended without a word")));
    }
    serde_json::from_str(line.trim()).map_err(|e| ContainerError::Internal(format!("the copy's report is unreadable: {e}")))
}

impl ContainerManager {
    /// Starts archiving `path` in the container `name` (running or not).
    pub async fn copy_from(&self, name: &str, path: &str, follow_link: bool) -> Result<CopyOut> {
        if path.is_empty() {
            return Err(ContainerError::InvalidRequest("cp needs a path in the container, e.g. web:/etc/hosts".into()));
        }
        let (container, root) = self.copy_root(name)?;
        let (data_read, data_write) = pipe_pair()?;
        let (status_read, status_write) = pipe_pair()?;
        let request = JailRequest { root, container: container.clone(), job: Job::Pack { path: path.to_string(), follow_link } };
        self.launch_copy(&request, &data_write, &status_write)?;
        drop((data_write, status_write));
        let mut status = BufReader::new(receiver(status_read)?);
        let data = receiver(data_read)?;
        match next_report(&mut status, &container).await? {
            Report::Source(source) => Ok(CopyOut { source, data, done: CopyDone { status, container } }),
            Report::Failed(reason) => Err(ContainerError::InvalidRequest(reason)),
            Report::Done(_) => Err(ContainerError::Internal("the copy ended before saying what it copies".into())),
        }
    }

    /// Starts unpacking an archive at `destination` in the container
    /// `name`; `source` None for a plain tar stream (`cp - web:/dir`).
    pub async fn copy_to(&self, name: &str, destination: &str, source: Option<CopySource>, keep_owners: bool) -> Result<CopyIn> {
        if destination.is_empty() {
            return Err(ContainerError::InvalidRequest("cp needs a path in the container, e.g. web:/tmp/".into()));
        }
        let (container, root) = self.copy_root(name)?;
        let (data_read, data_write) = pipe_pair()?;
        let (status_read, status_write) = pipe_pair()?;
        let job = Job::Unpack { destination: destination.to_string(), source, keep_owners };
        let request = JailRequest { root, container: container.clone(), job };
        self.launch_copy(&request, &data_read, &status_write)?;
        drop((data_read, status_write));
        Ok(CopyIn { data: sender(data_write)?, done: CopyDone { status: BufReader::new(receiver(status_read)?), container } })
    }
}
