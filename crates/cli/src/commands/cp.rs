//! `shoal cp` / `shoal container cp`: files between this host and a
//! container, as `docker cp` moves them: `CONTAINER:PATH` on one side, a
//! host path or `-` (a tar stream on stdin or stdout) on the other, and
//! docker's rules for where things land ([`rules`]). The archive is made
//! and unpacked on the host here and, in the container, by the daemon
//! inside the container's root.

use std::io::{Read, Write};
use std::path::Path;

use shoal_proto::pb;
use shoal_runtime::container::copy::{archive, rules, CopySource, SourceKind};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::client::ConnectArgs;
use crate::commands::image::human_size;
use crate::error::{CliError, CliResult};
use crate::wire::{copy_source_from_wire, copy_source_to_wire};

const CHUNK: usize = 64 * 1024;

#[derive(Debug, clap::Args)]
pub struct CpArgs {
    /// Keep the files' uid and gid (archive mode)
    #[arg(short, long)]
    archive: bool,
    /// Copy what a source link points to instead of the link
    #[arg(short = 'L', long)]
    follow_link: bool,
    /// Print nothing on success
    #[arg(short, long)]
    quiet: bool,
    /// CONTAINER:PATH, a host path, or - (a tar stream on stdin)
    source: String,
    /// CONTAINER:PATH, a host path, or - (a tar stream to stdout)
    destination: String,
}

/// One side of a copy.
#[derive(Debug, PartialEq, Eq)]
enum Side {
    Host(String),
    Container { container: String, path: String },
    /// `-`: a tar stream on stdin or stdout.
    Stream,
}

/// docker's reading of a cp argument: an absolute path or one starting
/// with `.` is the host's; else `NAME:PATH` names a container.
fn side(argument: &str) -> Side {
    if argument == "-" {
        return Side::Stream;
    }
    if argument.starts_with('/') || argument.starts_with('.') {
        return Side::Host(argument.to_string());
    }
    match argument.split_once(':') {
        Some((container, path)) if !container.is_empty() => Side::Container { container: container.to_string(), path: path.to_string() },
        _ => Side::Host(argument.to_string()),
    }
}

pub async fn run(args: CpArgs, connect: &ConnectArgs) -> CliResult {
    let (from, to) = (side(&args.source), side(&args.destination));
    match (from, to) {
        (Side::Container { container, path }, to @ (Side::Host(_) | Side::Stream)) => copy_out(&args, connect, &container, &path, to).await,
        (from @ (Side::Host(_) | Side::Stream), Side::Container { container, path }) => copy_in(&args, connect, from, &container, &path).await,
        (Side::Container { .. }, Side::Container { .. }) => {
            Err(CliError::msg("copying between two containers is not supported; copy to this host first, then into the other"))
        }
        (Side::Stream, Side::Stream) => Err(CliError::msg("cp - - copies nothing; one side must be CONTAINER:PATH")),
        _ => Err(CliError::msg(format!(
            "neither {:?} nor {:?} names a container; write one side as CONTAINER:PATH",
            args.source, args.destination
        ))),
    }
}

async fn copy_out(args: &CpArgs, connect: &ConnectArgs, container: &str, path: &str, to: Side) -> CliResult {
    let mut runtime = pb::runtime_client::RuntimeClient::new(connect.connect().await?);
    let request = pb::CopyFromRequest { container: container.to_string(), path: path.to_string(), follow_link: args.follow_link };
    let mut replies = runtime.copy_from_container(request).await?.into_inner();
    let source = match replies.message().await? {
        Some(pb::CopyFromReply { reply: Some(pb::copy_from_reply::Reply::Source(source)) }) => copy_source_from_wire(&source)
            .ok_or_else(|| CliError::msg(format!("the daemon sent a copy source of unknown kind {}; upgrade this client", source.kind)))?,
        _ => return Err(CliError::msg("the daemon did not say what it copies; try again")),
    };
    let Side::Host(destination) = to else {
        // `-`: the archive as it comes, to stdout.
        let mut stdout = std::io::stdout().lock();
        while let Some(reply) = replies.message().await? {
            if let Some(pb::copy_from_reply::Reply::Data(bytes)) = reply.reply {
                stdout.write_all(&bytes)?;
            }
        }
        stdout.flush()?;
        return Ok(());
    };
    let absolute = on_host(&destination)?;
    let (state, parent_is_directory) = archive::destination(Path::new(&absolute));
    let placement = rules::place(Some(&source), &absolute, state, parent_is_directory, "this host").map_err(|e| CliError::msg(e.to_string()))?;
    let (chunks, incoming) = mpsc::channel::<Vec<u8>>(16);
    let keep_owners = args.archive;
    let unpacking = tokio::task::spawn_blocking(move || archive::unpack(ChunkReader::new(incoming), &placement, keep_owners));
    let mut relayed = Ok(());
    loop {
        match replies.message().await {
            Ok(Some(pb::CopyFromReply { reply: Some(pb::copy_from_reply::Reply::Data(bytes)) })) => {
                if chunks.send(bytes).await.is_err() {
                    break; // Unpacking failed; it says why.
                }
            }
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(status) => {
                relayed = Err(CliError::from(status));
                break;
            }
        }
    }
    drop(chunks);
    let unpacked = unpacking.await.map_err(|e| CliError::msg(format!("unpacking stopped: {e}")))?;
    relayed?;
    let bytes = unpacked.map_err(CliError::msg)?;
    if !args.quiet {
        eprintln!("Successfully copied {} to {destination}", human_size(bytes));
    }
    Ok(())
}

async fn copy_in(args: &CpArgs, connect: &ConnectArgs, from: Side, container: &str, path: &str) -> CliResult {
    let (source, path_on_host) = match &from {
        Side::Host(source) => {
            let absolute = on_host(source)?;
            let target = archive::without_trailing(&absolute);
            let kind = archive::source_kind(&target, args.follow_link).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => CliError::msg(format!("there is no {source} on this host; check the path")),
                _ => CliError::msg(format!("cannot read {source}: {e}")),
            })?;
            if absolute.ends_with('/') && kind != SourceKind::Directory {
                return Err(CliError::msg(format!("{source} is not a directory; drop the trailing slash")));
            }
            let (name, contents_only) = rules::source_name(&absolute);
            let target = if args.follow_link { std::fs::canonicalize(&target)? } else { target };
            (Some(CopySource { kind, name, contents_only }), Some(target))
        }
        _ => (None, None),
    };
    let start = pb::CopyToStart {
        container: container.to_string(),
        path: path.to_string(),
        source: source.as_ref().map(copy_source_to_wire),
        keep_owners: args.archive,
    };
    let (requests, outgoing) = mpsc::channel(16);
    let _ = requests.send(pb::CopyToInput { input: Some(pb::copy_to_input::Input::Start(start)) }).await;
    // The archive is made on a blocking thread and flows as it is made.
    let producing = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let mut writer = ChunkWriter { requests, buffer: Vec::with_capacity(CHUNK) };
        match (source, path_on_host) {
            (Some(source), Some(path)) => {
                archive::pack(&path, source.kind, &source.name, &mut writer)?;
            }
            _ => {
                std::io::copy(&mut std::io::stdin().lock(), &mut writer)?;
            }
        }
        writer.flush()
    });
    let mut runtime = pb::runtime_client::RuntimeClient::new(connect.connect().await?);
    let result = runtime.copy_to_container(ReceiverStream::new(outgoing)).await;
    let produced = producing.await.map_err(|e| CliError::msg(format!("archiving stopped: {e}")))?;
    let result = result?.into_inner();
    if let Err(e) = produced {
        return Err(CliError::msg(format!("cannot archive {}: {e}", args.source)));
    }
    if !args.quiet {
        eprintln!("Successfully copied {} to {container}:{path}", human_size(result.bytes));
    }
    Ok(())
}

/// A host path made absolute against the working directory, keeping a
/// trailing `/` (which the rules read).
fn on_host(path: &str) -> CliResult<String> {
    if path.starts_with('/') {
        return Ok(path.to_string());
    }
    let cwd = std::env::current_dir().map_err(|e| CliError::msg(format!("cannot read the working directory: {e}")))?;
    Ok(format!("{}/{path}", cwd.display()))
}

/// Reads the chunks a channel brings; end-of-file once it closes.
struct ChunkReader {
    incoming: mpsc::Receiver<Vec<u8>>,
    current: Vec<u8>,
    offset: usize,
}

impl ChunkReader {
    fn new(incoming: mpsc::Receiver<Vec<u8>>) -> Self {
        ChunkReader { incoming, current: Vec::new(), offset: 0 }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.offset == self.current.len() {
            match self.incoming.blocking_recv() {
                Some(chunk) => {
                    self.current = chunk;
                    self.offset = 0;
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.offset);
        buf[..n].copy_from_slice(&self.current[self.offset..self.offset + n]);
        self.offset += n;
        Ok(n)
    }
}

/// Sends what is written as data messages of up to [`CHUNK`] bytes.
struct ChunkWriter {
    requests: mpsc::Sender<pb::CopyToInput>,
    buffer: Vec<u8>,
}

impl Write for ChunkWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(buf);
        if self.buffer.len() >= CHUNK {
            self.flush()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.buffer, Vec::with_capacity(CHUNK));
        self.requests
            .blocking_send(pb::CopyToInput { input: Some(pb::copy_to_input::Input::Data(data)) })
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the daemon stopped taking the archive"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_split_as_dockers_do() {
        assert_eq!(side("web:/etc/hosts"), Side::Container { container: "web".into(), path: "/etc/hosts".into() });
        assert_eq!(side("web:"), Side::Container { container: "web".into(), path: "".into() });
        assert_eq!(side("/tmp/a:b"), Side::Host("/tmp/a:b".into()));
        assert_eq!(side("./web:x"), Side::Host("./web:x".into()));
        assert_eq!(side("notes.txt"), Side::Host("notes.txt".into()));
        assert_eq!(side("-"), Side::Stream);
    }
}
