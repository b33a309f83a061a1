//! Container output on disk, like docker's json-file driver: one JSON
//! object per line (`{"log": text, "stream": "stdout", "time": RFC 3339
//! nanos}`), rotated by size. The shim writes ([`LogWriter`]); the daemon
//! reads and, while the container runs, follows ([`read`]), woken by
//! inotify rather than polling (one instance for the process: see
//! `log_watch`).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use super::log_watch::DirWatch;

pub const LOG_FILE: &str = "container.log";
/// A line longer than this is split into several entries (docker: 16 KiB).
const MAX_LINE: usize = 16 * 1024;

/// Size-based rotation: `container.log` grows to `max_bytes`, then
/// becomes `container.log.1` (older ones shift up) and a new file starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRotation {
    pub max_bytes: u64,
    /// Files kept, the current one included (at least 1).
    pub max_files: u32,
}

impl Default for LogRotation {
    fn default() -> Self {
        LogRotation { max_bytes: 10 << 20, max_files: 3 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    Stdout,
    Stderr,
}

impl LogStream {
    pub fn as_str(&self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        }
    }
}

/// One entry as `logs` yields it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub stream: LogStream,
    /// When the shim read it; `None` unless timestamps were asked for.
    pub time: Option<SystemTime>,
    /// The text, ending in a newline unless the line was partial (cut at
    /// 16 KiB, or the stream ended mid-line).
    pub bytes: Vec<u8>,
}

impl LogEntry {
    /// For `--timestamps`: RFC 3339 with nanoseconds, as docker prints.
    pub fn time_rfc3339(&self) -> Option<String> {
        self.time.map(|t| humantime::format_rfc3339_nanos(t).to_string())
    }

    pub fn time_unix_nanos(&self) -> i64 {
        self.time
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0)
    }
}

/// A line of the log file.
#[derive(Serialize, Deserialize)]
struct Record<'a> {
    #[serde(borrow)]
    log: std::borrow::Cow<'a, str>,
    stream: LogStream,
    time: std::borrow::Cow<'a, str>,
}

/// The shim's side: appends entries and rotates.
pub struct LogWriter {
    dir: PathBuf,
    rotation: LogRotation,
    file: File,
    written: u64,
}

impl LogWriter {
    pub fn open(dir: &Path, rotation: LogRotation) -> std::io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(dir.join(LOG_FILE))?;
        let written = file.metadata()?.len();
        Ok(LogWriter { dir: dir.to_path_buf(), rotation, file, written })
    }

    pub fn write(&mut self, stream: LogStream, line: &[u8]) -> std::io::Result<()> {
        let time = humantime::format_rfc3339_nanos(SystemTime::now()).to_string();
        let record = Record { log: String::from_utf8_lossy(line), stream, time: time.into() };
        let mut bytes = serde_json::to_vec(&record).map_err(std::io::Error::other)?;
        bytes.push(b'\n');
        if self.written > 0 && self.written + bytes.len() as u64 > self.rotation.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(&bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let keep = self.rotation.max_files.max(1);
        if keep == 1 {
            self.file.set_len(0)?;
        } else {
            for n in (1..keep - 1).rev() {
                let _ = std::fs::rename(rotated_path(&self.dir, n), rotated_path(&self.dir, n + 1));
            }
            std::fs::rename(self.dir.join(LOG_FILE), rotated_path(&self.dir, 1))?;
            self.file = OpenOptions::new().create(true).append(true).open(self.dir.join(LOG_FILE))?;
        }
        self.written = 0;
        Ok(())
    }
}

/// Reads whole lines from `offset`; returns the offset after the last
/// whole line (a partial one is read again next time).
fn read_records(file: &File, offset: u64, timestamps: bool, entries: &mut Vec<LogEntry>) -> std::io::Result<u64> {
    let mut file = file;
    file.seek(SeekFrom::Start(offset))?;
    let mut reader = BufReader::new(file);
    let mut position = offset;
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = reader.read_until(b'\n', &mut line)?;
        if read == 0 || line.last() != Some(&b'\n') {
            return Ok(position);
        }
        position += read as u64;
        if let Ok(record) = serde_json::from_slice::<Record>(&line) {
            let time = if timestamps { humantime::parse_rfc3339(&record.time).ok() } else { None };
            entries.push(LogEntry { stream: record.stream, time, bytes: record.log.into_owned().into_bytes() });
        }
    }
}

fn rotated_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("{LOG_FILE}.{n}"))
}

/// Splits a stream into lines for [`LogWriter`]; keeps a partial line
/// until its newline arrives or the stream ends.
#[derive(Default)]
pub struct LineBuffer {
    pending: Vec<u8>,
}

impl LineBuffer {
    /// Feeds `data`; calls `emit` with each line it completes.
    pub fn push(&mut self, data: &[u8], mut emit: impl FnMut(&[u8])) {
        self.pending.extend_from_slice(data);
        let mut start = 0;
        while let Some(at) = self.pending[start..].iter().position(|b| *b == b'\n') {
            emit(&self.pending[start..start + at + 1]);
            start += at + 1;
        }
        // A runaway line without newlines is cut rather than held forever.
        while self.pending.len() - start > MAX_LINE {
            emit(&self.pending[start..start + MAX_LINE]);
            start += MAX_LINE;
        }
        self.pending.drain(..start);
    }

    pub fn finish(&mut self) -> Option<Vec<u8>> {
        (!self.pending.is_empty()).then(|| std::mem::take(&mut self.pending))
    }
}

/// What `logs` is asked for.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogOptions {
    /// Keep streaming new entries until the container has exited.
    pub follow: bool,
    /// Only the last `n` entries written so far.
    pub tail: Option<usize>,
    pub timestamps: bool,
}

/// The entries of a container's log, as an async stream.
pub type LogEntries = tokio_stream::wrappers::ReceiverStream<LogEntry>;

/// Streams the log in `dir`. With `follow`, keeps going until `exited`
/// says the container has ended (its shim has closed the log for good),
/// then drains what is left. Survives rotation: a followed file that was
/// renamed is finished before the new one is read.
pub fn read(dir: PathBuf, options: LogOptions, mut exited: watch::Receiver<bool>) -> LogEntries {
    let (sender, receiver) = mpsc::channel(256);
    tokio::spawn(async move {
        // Watch before the first read so no write slips between them.
        let wakeup = options.follow.then(|| Wakeup::new(&dir));
        let mut reader = Reader { dir, timestamps: options.timestamps, cursor: None, current: None };
        let Ok(mut entries) = reader.read_existing() else { return };
        if let Some(tail) = options.tail {
            entries.drain(..entries.len().saturating_sub(tail));
        }
        for entry in entries {
            if sender.send(entry).await.is_err() {
                return;
            }
        }
        let Some(mut wakeup) = wakeup else { return };
        loop {
            let done = *exited.borrow_and_update();
            for entry in reader.read_new().unwrap_or_default() {
                if sender.send(entry).await.is_err() {
                    return;
                }
            }
            if done {
                return;
            }
            tokio::select! {
                _ = wakeup.changed() => {}
                changed = exited.changed() => if changed.is_err() { return },
                _ = sender.closed() => return,
            }
        }
    });
    LogEntries::new(receiver)
}

/// How a follower learns that the log may have grown: the shared inotify
/// watch ([`DirWatch`]) or, without one, a slow poll.
enum Wakeup {
    Watch(DirWatch),
    Poll,
}

impl Wakeup {
    const POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

    fn new(dir: &Path) -> Self {
        // No inotify (e.g. out of watches): poll.
        DirWatch::new(dir).map_or(Wakeup::Poll, Wakeup::Watch)
    }

    async fn changed(&mut self) {
        match self {
            Wakeup::Watch(watch) => {
                if watch.changed().await.is_err() {
                    // Directory deleted (or the watcher stopped): nothing
                    // will wake the watch again, so look once more now,
                    // then poll.
                    *self = Wakeup::Poll;
                }
            }
            Wakeup::Poll => tokio::time::sleep(Self::POLL_INTERVAL).await,
        }
    }
}

/// Where a follower is: the file (by inode) and the offset after the
/// last whole line read from it.
#[derive(Clone, Copy)]
struct Cursor {
    inode: u64,
    offset: u64,
}

struct Reader {
    dir: PathBuf,
    timestamps: bool,
    cursor: Option<Cursor>,
    /// The file the cursor is in, kept open: a `--rm` container's
    /// directory may be deleted before a follower has read the last lines.
    current: Option<File>,
}

impl Reader {
    /// The rotated files, oldest first, then the current one.
    fn read_existing(&mut self) -> std::io::Result<Vec<LogEntry>> {
        let mut entries = Vec::new();
        let mut rotated: Vec<(u32, PathBuf)> = std::fs::read_dir(&self.dir)?
            .flatten()
            .filter_map(|e| {
                let name = e.file_name();
                let n = name.to_str()?.strip_prefix(LOG_FILE)?.strip_prefix('.')?.parse().ok()?;
                Some((n, e.path()))
            })
            .collect();
        rotated.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
        for (_, path) in rotated {
            // Rotated away meanwhile: its entries are in the next file.
            let _ = self.read_file(&path, 0, &mut entries);
        }
        let current = self.dir.join(LOG_FILE);
        match std::fs::metadata(&current) {
            Ok(meta) => {
                let offset = self.read_current(&current, 0, &mut entries)?;
                self.cursor = Some(Cursor { inode: meta.ino(), offset });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(entries)
    }

    /// Entries written since the last read, following a rotation.
    fn read_new(&mut self) -> std::io::Result<Vec<LogEntry>> {
        let mut entries = Vec::new();
        let current = self.dir.join(LOG_FILE);
        let inode = match std::fs::metadata(&current) {
            Ok(meta) => meta.ino(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Deleted: finish the file we hold, if any.
                if let (Some(cursor), Some(file)) = (self.cursor.as_mut(), self.current.as_ref()) {
                    cursor.offset = read_records(file, cursor.offset, self.timestamps, &mut entries)?;
                }
                return Ok(entries);
            }
            Err(e) => return Err(e),
        };
        let mut offset = 0;
        if let Some(cursor) = self.cursor {
            if cursor.inode == inode {
                offset = cursor.offset;
            } else if let Some(old) = self.find_rotated(cursor.inode) {
                // Rotated since: finish the old file first.
                self.read_file(&old, cursor.offset, &mut entries)?;
            }
        }
        let offset = self.read_current(&current, offset, &mut entries)?;
        self.cursor = Some(Cursor { inode, offset });
        Ok(entries)
    }

    fn find_rotated(&self, inode: u64) -> Option<PathBuf> {
        (1..=16).map(|n| rotated_path(&self.dir, n)).find(|p| std::fs::metadata(p).is_ok_and(|m| m.ino() == inode))
    }

    /// The records of the file at `path` from `offset` (see [`read_records`]).
    fn read_file(&self, path: &Path, offset: u64, entries: &mut Vec<LogEntry>) -> std::io::Result<u64> {
        read_records(&File::open(path)?, offset, self.timestamps, entries)
    }

    /// Reads the current file and keeps it open as [`Reader::current`].
    fn read_current(&mut self, path: &Path, offset: u64, entries: &mut Vec<LogEntry>) -> std::io::Result<u64> {
        let file = File::open(path)?;
        let offset = read_records(&file, offset, self.timestamps, entries)?;
        self.current = Some(file);
        Ok(offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::StreamExt;

    fn lines(buffer: &mut LineBuffer, data: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        buffer.push(data, |l| out.push(l.to_vec()));
        out
    }

    #[test]
    fn partial_lines_wait_for_their_newline() {
        let mut buffer = LineBuffer::default();
        assert!(lines(&mut buffer, b"hel").is_empty());
        assert_eq!(lines(&mut buffer, b"lo\nwor"), vec![b"hello\n".to_vec()]);
        assert_eq!(buffer.finish(), Some(b"wor".to_vec()));
        let long = vec![b'x'; MAX_LINE * 2 + 5];
        assert_eq!(lines(&mut buffer, &long).len(), 2);
        assert_eq!(buffer.finish().map(|r| r.len()), Some(5));
    }

    #[tokio::test]
    async fn follows_across_rotation_until_exit() {
        let dir = tempfile::tempdir().unwrap();
        let rotation = LogRotation { max_bytes: 1000, max_files: 3 };
        let mut writer = LogWriter::open(dir.path(), rotation).unwrap();
        writer.write(LogStream::Stdout, b"first\n").unwrap();
        let (exited, exited_rx) = watch::channel(false);
        let options = LogOptions { follow: true, tail: None, timestamps: true };
        let mut stream = read(dir.path().to_path_buf(), options, exited_rx);
        assert_eq!(stream.next().await.unwrap().bytes, b"first\n");
        for n in 0..20 {
            writer.write(LogStream::Stderr, format!("line {n}\n").as_bytes()).unwrap();
        }
        assert!(dir.path().join(format!("{LOG_FILE}.1")).exists(), "rotated");
        exited.send_replace(true);
        let rest: Vec<LogEntry> = stream.collect().await;
        let texts: Vec<String> = rest.iter().map(|e| String::from_utf8_lossy(&e.bytes).into_owned()).collect();
        let expected: Vec<String> = (0..20).map(|n| format!("line {n}\n")).collect();
        assert_eq!(texts, expected);
        assert!(rest.iter().all(|e| e.stream == LogStream::Stderr && e.time.is_some()));
    }

    /// Bounds a wait that would otherwise hang a broken test.
    async fn within<T>(future: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(std::time::Duration::from_secs(5), future).await.expect("timed out")
    }

    async fn next(stream: &mut LogEntries) -> Option<Vec<u8>> {
        within(stream.next()).await.map(|e| e.bytes)
    }

    async fn until_subscribers(dir: &Path, expected: usize) {
        within(async {
            while super::super::log_watch::subscribers(dir) != expected {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
        .await
    }

    #[tokio::test]
    async fn followers_share_one_watch_per_directory() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = LogWriter::open(dir.path(), LogRotation::default()).unwrap();
        let follow = LogOptions { follow: true, tail: None, timestamps: false };

        // Followers of one directory share a watch, counted: one leaving
        // (its receiver dropped) leaves it working for the others, which
        // are all woken and all end on exit.
        let (exited, exited_rx) = watch::channel(false);
        let mut first = read(dir.path().to_path_buf(), follow, exited_rx.clone());
        let mut second = read(dir.path().to_path_buf(), follow, exited_rx.clone());
        let leaving = read(dir.path().to_path_buf(), follow, exited_rx);
        until_subscribers(dir.path(), 3).await;
        drop(leaving);
        until_subscribers(dir.path(), 2).await;
        writer.write(LogStream::Stdout, b"a\n").unwrap();
        assert_eq!(next(&mut first).await, Some(b"a\n".to_vec()));
        assert_eq!(next(&mut second).await, Some(b"a\n".to_vec()));
        exited.send_replace(true);
        assert_eq!(next(&mut first).await, None);
        assert_eq!(next(&mut second).await, None);
        until_subscribers(dir.path(), 0).await;

        // The watch was removed with its last follower; a new one gets a
        // live watch, not a stale entry nothing would wake (it would hang:
        // a subscriber does not poll).
        let (exited, exited_rx) = watch::channel(false);
        let mut third = read(dir.path().to_path_buf(), follow, exited_rx);
        assert_eq!(next(&mut third).await, Some(b"a\n".to_vec()));
        until_subscribers(dir.path(), 1).await;
        writer.write(LogStream::Stdout, b"b\n").unwrap();
        assert_eq!(next(&mut third).await, Some(b"b\n".to_vec()));

        // A deleted directory (a removed `--rm` container) does not hang a
        // follower: it ends on exit, and its watch goes with it.
        drop(writer);
        let path = dir.path().to_path_buf();
        dir.close().unwrap();
        exited.send_replace(true);
        assert_eq!(next(&mut third).await, None);
        until_subscribers(&path, 0).await;
    }

    #[tokio::test]
    async fn a_follower_gets_the_last_lines_even_if_the_directory_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = LogWriter::open(dir.path(), LogRotation::default()).unwrap();
        writer.write(LogStream::Stdout, b"first\n").unwrap();
        let (exited, exited_rx) = watch::channel(false);
        let options = LogOptions { follow: true, tail: None, timestamps: false };
        let mut stream = read(dir.path().to_path_buf(), options, exited_rx);
        assert_eq!(next(&mut stream).await, Some(b"first\n".to_vec()));
        // The container's last words, then exit and `--rm` removal, all
        // before the follower runs again.
        writer.write(LogStream::Stdout, b"last\n").unwrap();
        drop(writer);
        exited.send_replace(true);
        dir.close().unwrap();
        assert_eq!(next(&mut stream).await, Some(b"last\n".to_vec()));
        assert_eq!(next(&mut stream).await, None);
    }

    #[tokio::test]
    async fn tail_takes_the_last_entries() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = LogWriter::open(dir.path(), LogRotation::default()).unwrap();
        for n in 0..5 {
            writer.write(LogStream::Stdout, format!("{n}\n").as_bytes()).unwrap();
        }
        let options = LogOptions { follow: false, tail: Some(2), timestamps: false };
        let entries: Vec<LogEntry> = read(dir.path().to_path_buf(), options, watch::channel(false).1).collect().await;
        assert_eq!(entries.iter().map(|e| e.bytes.clone()).collect::<Vec<_>>(), vec![b"3\n".to_vec(), b"4\n".to_vec()]);
        assert!(entries[0].time.is_none());
    }
}
