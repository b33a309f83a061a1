//! Container output on disk, like docker's json-file driver: one JSON
//! object per line ({"t": time, "s": stream, "l": text}), rotated by size.
//! The shim writes; the daemon reads, and follows while the container runs.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const LOG_FILE: &str = "container.log";
/// Rotate when the current file passes this; one rotated file is kept.
pub const MAX_LOG_BYTES: u64 = 10 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// RFC 3339 with nanoseconds.
    #[serde(rename = "t")]
    pub time: String,
    /// "stdout" or "stderr".
    #[serde(rename = "s")]
    pub stream: String,
    /// The text, ending in a newline unless the stream ended mid-line.
    #[serde(rename = "l")]
    pub line: String,
}

impl LogEntry {
    pub fn time_unix_nanos(&self) -> i64 {
        humantime::parse_rfc3339(&self.time)
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0)
    }
}

/// The shim's side: appends entries and rotates.
pub struct LogWriter {
    dir: PathBuf,
    file: File,
    written: u64,
}

impl LogWriter {
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(dir.join(LOG_FILE))?;
        let written = file.metadata()?.len();
        Ok(LogWriter { dir: dir.to_path_buf(), file, written })
    }

    pub fn write(&mut self, stream: &str, line: &[u8]) -> std::io::Result<()> {
        let entry = LogEntry {
            time: humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string(),
            stream: stream.to_string(),
            line: String::from_utf8_lossy(line).into_owned(),
        };
        let mut bytes = serde_json::to_vec(&entry).map_err(std::io::Error::other)?;
        bytes.push(b'\n');
        if self.written + bytes.len() as u64 > MAX_LOG_BYTES && self.written > 0 {
            std::fs::rename(self.dir.join(LOG_FILE), self.dir.join(format!("{LOG_FILE}.1")))?;
            self.file = OpenOptions::new().create(true).append(true).open(self.dir.join(LOG_FILE))?;
            self.written = 0;
        }
        self.file.write_all(&bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }
}

/// Splits a stream into lines for [`LogWriter`]; keeps a partial line
/// until its newline arrives or the stream ends.
#[derive(Default)]
pub struct LineBuffer {
    pending: Vec<u8>,
}

impl LineBuffer {
    /// Feeds `data`; returns the complete lines it finished.
    pub fn push(&mut self, data: &[u8]) -> Vec<Vec<u8>> {
        self.pending.extend_from_slice(data);
        let mut lines = Vec::new();
        while let Some(at) = self.pending.iter().position(|b| *b == b'\n') {
            lines.push(self.pending.drain(..=at).collect());
        }
        // A runaway line without newlines is cut rather than held forever.
        if self.pending.len() > 16 * 1024 {
            lines.push(std::mem::take(&mut self.pending));
        }
        lines
    }

    pub fn finish(&mut self) -> Option<Vec<u8>> {
        (!self.pending.is_empty()).then(|| std::mem::take(&mut self.pending))
    }
}

/// A position in a container's log, for following it.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogCursor {
    inode: u64,
    offset: u64,
}

/// Everything logged so far (the last `tail` entries when given), and
/// where to continue from.
pub fn read_all(dir: &Path, tail: Option<usize>) -> std::io::Result<(Vec<LogEntry>, LogCursor)> {
    let mut entries = Vec::new();
    let rotated = dir.join(format!("{LOG_FILE}.1"));
    if rotated.exists() {
        read_from(&rotated, 0, &mut entries)?;
    }
    let (cursor, _) = match File::open(dir.join(LOG_FILE)) {
        Ok(file) => {
            let inode = std::os::unix::fs::MetadataExt::ino(&file.metadata()?);
            let offset = read_from(&dir.join(LOG_FILE), 0, &mut entries)?;
            (LogCursor { inode, offset }, ())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (LogCursor::default(), ()),
        Err(e) => return Err(e),
    };
    if let Some(tail) = tail {
        let skip = entries.len().saturating_sub(tail);
        entries.drain(..skip);
    }
    Ok((entries, cursor))
}

/// Entries written since `cursor`, following a rotation.
pub fn read_since(dir: &Path, cursor: &mut LogCursor) -> std::io::Result<Vec<LogEntry>> {
    let mut entries = Vec::new();
    let current = dir.join(LOG_FILE);
    let inode = match std::fs::metadata(&current) {
        Ok(meta) => std::os::unix::fs::MetadataExt::ino(&meta),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(entries),
        Err(e) => return Err(e),
    };
    if inode != cursor.inode && cursor.inode != 0 {
        // Rotated: finish the old file (now `.1`), then start the new one.
        let rotated = dir.join(format!("{LOG_FILE}.1"));
        if std::fs::metadata(&rotated).map(|m| std::os::unix::fs::MetadataExt::ino(&m)).ok() == Some(cursor.inode) {
            read_from(&rotated, cursor.offset, &mut entries)?;
        }
        cursor.offset = 0;
    }
    cursor.inode = inode;
    cursor.offset = read_from(&current, cursor.offset, &mut entries)?;
    Ok(entries)
}

/// Reads whole lines from `offset`; returns the offset after the last one
/// (a line still being written is left for the next call).
fn read_from(path: &Path, offset: u64, entries: &mut Vec<LogEntry>) -> std::io::Result<u64> {
    let mut file = File::open(path)?;
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
        if let Ok(entry) = serde_json::from_slice::<LogEntry>(&line) {
            entries.push(entry);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_lines_wait_for_their_newline() {
        let mut buffer = LineBuffer::default();
        assert!(buffer.push(b"hel").is_empty());
        assert_eq!(buffer.push(b"lo\nwor"), vec![b"hello\n".to_vec()]);
        assert_eq!(buffer.finish(), Some(b"wor".to_vec()));
    }

    #[test]
    fn follows_across_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = LogWriter::open(dir.path()).unwrap();
        writer.write("stdout", b"one\n").unwrap();
        let (entries, mut cursor) = read_all(dir.path(), None).unwrap();
        assert_eq!(entries.len(), 1);
        writer.written = MAX_LOG_BYTES;
        writer.write("stderr", b"two\n").unwrap();
        writer.write("stdout", b"three\n").unwrap();
        let more = read_since(dir.path(), &mut cursor).unwrap();
        assert_eq!(more.iter().map(|e| e.line.as_str()).collect::<Vec<_>>(), vec!["two\n", "three\n"]);
        let (all, _) = read_all(dir.path(), Some(2)).unwrap();
        assert_eq!(all.len(), 2);
    }
}
