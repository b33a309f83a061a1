//! The Raft log in files of its own: a write-ahead log of sealed entries.
//!
//! sled made every flush of the log pass its buffers through its I/O
//! threads (a pwrite and a sync_file_range each, hand-offs between them)
//! and share them with the state machine's writes; under perf that was a
//! large part of a manager's CPU per write. Here an append is one
//! `write` to the active segment and the flush one `fdatasync`.
//!
//! - Segments `wal/<first index, 20 digits>.seg`, in log order, each a run
//!   of records for consecutive indexes: `[u32 length][u64 index][u32
//!   crc32 of the rest][sealed entry]` (little-endian). The seal binds the
//!   entry to its index; the checksum finds a torn record also when a
//!   benchmark runs the log unsealed.
//! - At open every segment is read through; the first record that is cut
//!   short or does not open (a torn write at a crash) ends the log, and
//!   the file is truncated there.
//! - Truncating the log's tail shortens a segment (and removes later
//!   ones); purging its head removes whole segments only.
//!
//! Syncing is the caller's (see [`Wal::sync`]): appends only write.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::sealed::Sealer;

/// The log's directory, under the Raft directory (beside sled's files).
pub const DIR_NAME: &str = "wal";
/// The tree name the seal binds WAL records to.
const SEAL_DOMAIN: &str = "raft_wal";
/// A new segment starts once the active one passes this size.
const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
const HEADER_BYTES: u64 = 16;
/// No record is larger (the proposer caps entries far below this).
const MAX_RECORD_BYTES: u32 = 256 * 1024 * 1024;

/// Where one record lies.
#[derive(Clone, Copy, Debug)]
struct Position {
    segment: u64,
    offset: u64,
    length: u32,
}

struct Segment {
    file: Arc<File>,
    length: u64,
    /// The index its next record must have.
    next_index: u64,
}

pub struct Wal {
    dir: PathBuf,
    /// [`SEGMENT_BYTES`] but in tests.
    segment_bytes: u64,
    sealer: Sealer,
    segments: BTreeMap<u64, Segment>,
    index: BTreeMap<u64, Position>,
    /// Files written to (or created) since the last sync, and whether the
    /// directory changed (a segment made or removed).
    unsynced: Arc<Mutex<Unsynced>>,
}

#[derive(Default)]
struct Unsynced {
    files: Vec<Arc<File>>,
    directory: Option<PathBuf>,
}

/// What a flush thread needs to make the writes so far durable; cheap to
/// clone, usable while the log is being appended to.
#[derive(Clone)]
pub struct WalSync {
    unsynced: Arc<Mutex<Unsynced>>,
}

impl WalSync {
    /// fdatasyncs every segment written since the last call (and the
    /// directory when segments came or went).
    pub fn sync(&self) -> std::io::Result<()> {
        let pending = std::mem::take(&mut *self.unsynced.lock().unwrap_or_else(|p| p.into_inner()));
        for file in &pending.files {
            file.sync_data()?;
        }
        if let Some(dir) = pending.directory {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

impl Wal {
    /// Opens (or creates) the log in `dir`, dropping a torn tail.
    pub fn open(dir: &Path, sealer: Sealer) -> std::io::Result<Wal> {
        Self::open_with(dir, sealer, SEGMENT_BYTES)
    }

    fn open_with(dir: &Path, sealer: Sealer, segment_bytes: u64) -> std::io::Result<Wal> {
        std::fs::create_dir_all(dir)?;
        let mut wal = Wal {
            dir: dir.to_path_buf(),
            segment_bytes,
            sealer,
            segments: BTreeMap::new(),
            index: BTreeMap::new(),
            unsynced: Arc::default(),
        };
        let mut firsts: Vec<u64> = std::fs::read_dir(dir)?
            .filter_map(|entry| entry.ok())
            .filter_map(|entry| entry.file_name().to_str()?.strip_suffix(".seg")?.parse().ok())
            .collect();
        firsts.sort_unstable();
        let mut torn = false;
        for first in firsts {
            if torn {
                // Written after a torn record, so never acknowledged (the
                // sync that acknowledges a record syncs every earlier one).
                std::fs::remove_file(wal.segment_path(first))?;
                continue;
            }
            torn = !wal.load_segment(first)?;
        }
        File::open(dir)?.sync_all()?;
        Ok(wal)
    }

    pub fn sync_handle(&self) -> WalSync {
        WalSync { unsynced: self.unsynced.clone() }
    }

    fn segment_path(&self, first: u64) -> PathBuf {
        self.dir.join(format!("{first:020}.seg"))
    }

    /// Reads one segment into the index; false when it ended in a torn
    /// write (a record cut short, or its last record failing its checksum),
    /// which is cut off. Anything else that does not read back (a bad
    /// record with more after it, one that fails to open though its
    /// checksum holds, an index out of sequence) is damage, not a crash,
    /// and an error: dropping it would drop committed entries.
    fn load_segment(&mut self, first: u64) -> std::io::Result<bool> {
        let path = self.segment_path(first);
        // Append mode: writes always land at the end, also after a truncation.
        let mut file = OpenOptions::new().read(true).append(true).open(&path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let mut offset = 0u64;
        let mut expected = first;
        let mut whole = true;
        let damaged = |what: String| std::io::Error::other(format!("the Raft log segment {} is damaged: {what}", path.display()));
        while (offset as usize) < bytes.len() {
            let rest = &bytes[offset as usize..];
            let record = parse_header(rest).filter(|(_, length, _)| rest.len() as u64 >= HEADER_BYTES + *length as u64);
            let Some((index, length, crc)) = record else {
                whole = false;
                break;
            };
            let end = offset + HEADER_BYTES + length as u64;
            let sealed = &rest[HEADER_BYTES as usize..(HEADER_BYTES + length as u64) as usize];
            if crc32fast::hash(sealed) != crc {
                if end == bytes.len() as u64 {
                    whole = false;
                    break;
                }
                return Err(damaged(format!("entry {index} fails its checksum")));
            }
            if index != expected {
                return Err(damaged(format!("entry {index} stands where entry {expected} belongs")));
            }
            if let Err(e) = self.sealer.open(SEAL_DOMAIN, &index.to_be_bytes(), sealed) {
                return Err(std::io::Error::other(e.to_string()));
            }
            self.index.insert(index, Position { segment: first, offset, length });
            offset = end;
            expected += 1;
        }
        if !whole {
            tracing::warn!(segment = %path.display(), at = offset, "the Raft log ends in a torn record; dropping it");
            file.set_len(offset)?;
            file.sync_all()?;
        }
        self.segments.insert(first, Segment { file: Arc::new(file), length: offset, next_index: expected });
        Ok(whole)
    }

    pub fn first_index(&self) -> Option<u64> {
        self.index.keys().next().copied()
    }

    pub fn last_index(&self) -> Option<u64> {
        self.index.keys().next_back().copied()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Appends the encoded entries (`(index, bytes)`, consecutive). Raft
    /// appends right after the last entry; an append at or before it
    /// replaces the log from there, and one past a gap (after a purge
    /// beyond the log's end) starts a new segment. Written, not yet synced.
    pub fn append(&mut self, entries: &[(u64, Vec<u8>)]) -> std::io::Result<()> {
        let mut buffer = Vec::new();
        let mut records = Vec::new();
        let Some(&(first_index, _)) = entries.first() else { return Ok(()) };
        if entries.windows(2).any(|pair| pair[1].0 != pair[0].0 + 1) {
            return Err(std::io::Error::other("the entries of one Raft log append must have consecutive indexes"));
        }
        if self.last_index().is_some_and(|last| first_index <= last) {
            self.truncate_from(first_index)?;
        }
        let segment = self.active_segment(first_index)?;
        let start = self.segments[&segment].length;
        for (index, bytes) in entries {
            let sealed = self.sealer.seal(SEAL_DOMAIN, &index.to_be_bytes(), bytes).map_err(std::io::Error::other)?;
            let length = u32::try_from(sealed.len())
                .ok()
                .filter(|l| *l <= MAX_RECORD_BYTES)
                .ok_or_else(|| std::io::Error::other(format!("Raft log entry {index} is too large ({} bytes)", sealed.len())))?;
            records.push((*index, start + buffer.len() as u64, length));
            buffer.extend_from_slice(&length.to_le_bytes());
            buffer.extend_from_slice(&index.to_le_bytes());
            buffer.extend_from_slice(&crc32fast::hash(&sealed).to_le_bytes());
            buffer.extend_from_slice(&sealed);
        }
        let active = self.segments.get_mut(&segment).ok_or_else(|| std::io::Error::other("no active segment"))?;
        (&*active.file).write_all(&buffer)?;
        active.length += buffer.len() as u64;
        active.next_index += entries.len() as u64;
        let file = active.file.clone();
        for (index, offset, length) in records {
            self.index.insert(index, Position { segment, offset, length });
        }
        let mut unsynced = self.unsynced.lock().unwrap_or_else(|p| p.into_inner());
        if !unsynced.files.iter().any(|f| Arc::ptr_eq(f, &file)) {
            unsynced.files.push(file);
        }
        Ok(())
    }

    /// The segment the next record at `next_index` goes to, starting a new
    /// one when there is none or the active one is full.
    fn active_segment(&mut self, next_index: u64) -> std::io::Result<u64> {
        if let Some((&first, segment)) = self.segments.iter().next_back() {
            // A purge past the end of the log (a snapshot installed) makes
            // the log go on at a later index: in a new segment.
            if segment.length < self.segment_bytes && segment.next_index == next_index {
                return Ok(first);
            }
            if segment.length == 0 {
                // An empty segment named for another index: replace it.
                std::fs::remove_file(self.segment_path(first))?;
                self.segments.remove(&first);
            }
        }
        let path = self.segment_path(next_index);
        let file = OpenOptions::new().create(true).read(true).append(true).open(&path)?;
        self.segments.insert(next_index, Segment { file: Arc::new(file), length: 0, next_index });
        self.unsynced.lock().unwrap_or_else(|p| p.into_inner()).directory = Some(self.dir.clone());
        Ok(next_index)
    }

    /// The decoded bytes of entry `index`, if the log has it.
    pub fn read(&self, index: u64) -> std::io::Result<Option<Vec<u8>>> {
        let Some(position) = self.index.get(&index) else { return Ok(None) };
        let segment = &self.segments[&position.segment];
        let mut sealed = vec![0u8; position.length as usize];
        segment.file.read_exact_at(&mut sealed, position.offset + HEADER_BYTES)?;
        self.sealer
            .open(SEAL_DOMAIN, &index.to_be_bytes(), &sealed)
            .map(|plain| Some(plain.into_owned()))
            .map_err(std::io::Error::other)
    }

    /// The sealed size of entry `index` (for replication byte budgets).
    pub fn stored_len(&self, index: u64) -> Option<usize> {
        self.index.get(&index).map(|p| p.length as usize)
    }

    /// Removes entries at `index` and after, durably.
    pub fn truncate_from(&mut self, index: u64) -> std::io::Result<()> {
        let Some(position) = self.index.get(&index).copied() else { return Ok(()) };
        let later: Vec<u64> = self.segments.range(position.segment + 1..).map(|(first, _)| *first).collect();
        for first in later {
            self.segments.remove(&first);
            std::fs::remove_file(self.segment_path(first))?;
        }
        if position.offset == 0 {
            self.segments.remove(&position.segment);
            std::fs::remove_file(self.segment_path(position.segment))?;
        } else if let Some(segment) = self.segments.get_mut(&position.segment) {
            segment.file.set_len(position.offset)?;
            segment.file.sync_all()?;
            segment.length = position.offset;
            segment.next_index = index;
        }
        self.index.split_off(&index);
        File::open(&self.dir)?.sync_all()
    }

    /// Removes whole segments whose entries are all at or below `index`
    /// (the purged prefix); entries in a segment that also holds later
    /// ones stay on disk but leave the index.
    pub fn purge_up_to(&mut self, index: u64) -> std::io::Result<()> {
        let keep = self.index.split_off(&(index + 1));
        self.index = keep;
        let firsts: Vec<u64> = self.segments.keys().copied().collect();
        let mut removed = false;
        for pair in firsts.windows(2) {
            let (first, next) = (pair[0], pair[1]);
            if next <= index + 1 {
                self.segments.remove(&first);
                std::fs::remove_file(self.segment_path(first))?;
                removed = true;
            }
        }
        if removed {
            File::open(&self.dir)?.sync_all()?;
        }
        Ok(())
    }
}

/// `(index, length, crc)` of the record starting `bytes`.
fn parse_header(bytes: &[u8]) -> Option<(u64, u32, u32)> {
    let length = u32::from_le_bytes(bytes.get(0..4)?.try_into().ok()?);
    let index = u64::from_le_bytes(bytes.get(4..12)?.try_into().ok()?);
    let crc = u32::from_le_bytes(bytes.get(12..16)?.try_into().ok()?);
    (length <= MAX_RECORD_BYTES).then_some((index, length, crc))
}

#[cfg(test)]
#[path = "wal_tests.rs"]
mod tests;
