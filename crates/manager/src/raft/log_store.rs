//! The Raft log, the vote and the committed log id.
//!
//! - The entries live in the write-ahead log of [`super::wal`] (files of
//!   their own beside sled's, one `fdatasync` per flush), each a bincode
//!   openraft [`Entry`] sealed to its index.
//! - `raft_meta`, a tree of the manager's sled database: the vote, the
//!   committed log id and the last purged log id, each bincode-encoded
//!   under its own key and sealed to its tree and key.
//! - `raft_log`, the tree that held the entries before: read once, moved
//!   into the write-ahead log, and emptied.
//!
//! Raft's safety rests on the vote and the appended entries surviving a
//! crash once acknowledged, so both are flushed to disk before openraft is
//! told they are stored.

// openraft's traits fix `StorageError` (large) as the error type.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    Entry, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogId, RaftLogReader, Vote,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::durable::DurableFlush;
use super::sealed::Sealer;
use super::wal::{Wal, WalSync};
use super::{io_error, NodeId, StorageResult, TypeConfig};

/// Where managers before the write-ahead log kept the entries (read once).
pub(crate) const LEGACY_LOG_TREE: &str = "raft_log";
const META_TREE: &str = "raft_meta";

const VOTE_KEY: &[u8] = b"vote";
const COMMITTED_KEY: &[u8] = b"committed";
const LAST_PURGED_KEY: &[u8] = b"last_purged_log_id";

/// Upper bound on the encoded size of the entries returned for one
/// replication request (openraft asks again for the rest). openraft gives an
/// AppendEntries RPC only `heartbeat_interval` to complete, follower fsync
/// included; a batch that cannot make it in time would be retried forever
/// and the follower would never catch up. A single larger entry is still
/// sent whole, so transactions must stay well below this.
const MAX_REPLICATION_BYTES: usize = 512 * 1024;

/// The Raft log storage of one manager. Cloning is cheap (shared
/// handles); the clone doubles as openraft's log reader.
#[derive(Clone)]
pub struct LogStore {
    db: sled::Db,
    meta: sled::Tree,
    wal: Arc<Mutex<Wal>>,
    sealer: Sealer,
    group_commit: GroupCommit,
    /// Flushes of the meta tree (votes, purges) and the state machine's
    /// snapshots: sled's, made durable.
    durable: DurableFlush,
}

/// Group commit for appended entries. openraft's core waits for nothing
/// while an append is flushed (it gets a callback), so appends that arrive
/// during one fdatasync share the next: with many concurrent writers the
/// sync count stays near one per disk round trip instead of one per entry.
/// A dedicated thread, not a task, so the store works outside a runtime.
/// It ends when the last LogStore (and so every sender) is gone.
#[derive(Clone)]
struct GroupCommit {
    pending: std::sync::mpsc::Sender<LogFlushed<TypeConfig>>,
}

impl GroupCommit {
    fn start(wal: WalSync) -> std::io::Result<Self> {
        let (pending, waiting) = std::sync::mpsc::channel::<LogFlushed<TypeConfig>>();
        std::thread::Builder::new()
            .name("raft-log-flush".into())
            .spawn(move || {
                while let Ok(first) = waiting.recv() {
                    let mut batch = vec![first];
                    batch.extend(waiting.try_iter());
                    // Every entry in `batch` was written before its callback
                    // was queued, so this sync covers all of them.
                    let result = wal.sync().map_err(|e| e.to_string());
                    for callback in batch {
                        callback.log_io_completed(result.clone().map_err(std::io::Error::other));
                    }
                }
            })?;
        Ok(GroupCommit { pending })
    }
}

fn index_of_key(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

impl LogStore {
    /// Opens the log: the write-ahead log in `wal_dir` (moving in the
    /// entries an older manager kept in sled) and the meta tree of `db`.
    /// Finishes a purge that a crash interrupted (see
    /// [`RaftLogStorage::purge`]) so the log never starts at or below the
    /// recorded purge point. Values are sealed and opened with `sealer`.
    pub fn open(db: &sled::Db, wal_dir: &Path, sealer: Sealer) -> StorageResult<Self> {
        let meta = db.open_tree(META_TREE).map_err(|e| io_error(ErrorSubject::Store, ErrorVerb::Read, &e))?;
        let wal = Wal::open(wal_dir, sealer.clone()).map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Read, &e))?;
        let group_commit =
            GroupCommit::start(wal.sync_handle()).map_err(|e| io_error(ErrorSubject::Store, ErrorVerb::Write, &e))?;
        let store = LogStore {
            db: db.clone(),
            meta,
            wal: Arc::new(Mutex::new(wal)),
            sealer,
            group_commit,
            durable: DurableFlush::default(),
        };
        store.move_sled_log_in()?;
        if let Some(purged) = store.read_meta::<LogId<NodeId>>(LAST_PURGED_KEY, ErrorSubject::Logs)? {
            store.wal().purge_up_to(purged.index).map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Delete, &e))?;
        }
        Ok(store)
    }

    fn wal(&self) -> MutexGuard<'_, Wal> {
        self.wal.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Moves the entries of the `raft_log` tree (older managers) into the
    /// write-ahead log: synced there first, then removed from sled, so a
    /// crash in between only repeats the removal.
    fn move_sled_log_in(&self) -> StorageResult<()> {
        let subject = || ErrorSubject::Logs;
        let old = self.db.open_tree(LEGACY_LOG_TREE).map_err(|e| io_error(subject(), ErrorVerb::Read, &e))?;
        if old.is_empty() {
            return Ok(());
        }
        if self.wal().is_empty() {
            let mut entries = Vec::new();
            for item in old.iter() {
                let (key, value) = item.map_err(|e| io_error(subject(), ErrorVerb::Read, &e))?;
                let index = index_of_key(&key).ok_or_else(|| io_error(subject(), ErrorVerb::Read, &std::io::Error::other("a malformed key in the old Raft log")))?;
                let plain = self.sealer.open(LEGACY_LOG_TREE, &key, &value).map_err(|e| io_error(subject(), ErrorVerb::Read, &e))?;
                entries.push((index, plain.into_owned()));
            }
            let mut wal = self.wal();
            wal.append(&entries).map_err(|e| io_error(subject(), ErrorVerb::Write, &e))?;
            wal.sync_handle().sync().map_err(|e| io_error(subject(), ErrorVerb::Write, &e))?;
            tracing::info!(entries = entries.len(), "moved the Raft log out of sled into its own files");
        }
        old.clear().map_err(|e| io_error(subject(), ErrorVerb::Delete, &e))?;
        self.db.flush().map_err(|e| io_error(subject(), ErrorVerb::Write, &e))?;
        Ok(())
    }

    /// Makes every flush of the log and vote durable across a power cut
    /// (see [`DurableFlush`]): `sled_dir` is the directory the database
    /// was opened at, which sled does not say. Without this, flushed means
    /// handed to the disk, which survives a crash of the manager but not
    /// of the machine.
    pub fn fsync_after_flush(&self, sled_dir: &Path) -> std::io::Result<()> {
        self.durable.attach(sled_dir)
    }

    /// The flush the votes use, for the state machine's snapshots to share.
    pub fn durable_flush(&self) -> DurableFlush {
        self.durable.clone()
    }

    fn read_meta<T: DeserializeOwned>(
        &self,
        key: &[u8],
        subject: ErrorSubject<NodeId>,
    ) -> StorageResult<Option<T>> {
        let Some(bytes) = self
            .meta
            .get(key)
            .map_err(|e| io_error(subject.clone(), ErrorVerb::Read, &e))?
        else {
            return Ok(None);
        };
        let bytes = self
            .sealer
            .open(META_TREE, key, &bytes)
            .map_err(|e| io_error(subject.clone(), ErrorVerb::Read, &e))?;
        bincode::deserialize(&bytes)
            .map(Some)
            .map_err(|e| io_error(subject, ErrorVerb::Read, &e))
    }

    fn write_meta<T: Serialize>(
        &self,
        key: &[u8],
        value: &T,
        subject: ErrorSubject<NodeId>,
    ) -> StorageResult<()> {
        let bytes = bincode::serialize(value)
            .map_err(|e| io_error(subject.clone(), ErrorVerb::Write, &e))?;
        let bytes = self
            .sealer
            .seal(META_TREE, key, &bytes)
            .map_err(|e| io_error(subject.clone(), ErrorVerb::Write, &e))?;
        self.meta
            .insert(key, bytes)
            .map_err(|e| io_error(subject, ErrorVerb::Write, &e))?;
        Ok(())
    }

    async fn flush(&self, subject: ErrorSubject<NodeId>) -> StorageResult<()> {
        let (db, durable) = (self.db.clone(), self.durable.clone());
        // Blocking I/O, and rare (votes, truncations): off the runtime.
        tokio::task::spawn_blocking(move || durable.flush(&db))
            .await
            .map_err(std::io::Error::other)
            .and_then(|r| r)
            .map_err(|e| io_error(subject, ErrorVerb::Write, &e))?;
        Ok(())
    }

    fn read_entry(&self, wal: &Wal, index: u64) -> StorageResult<Option<Entry<TypeConfig>>> {
        let subject = || ErrorSubject::LogIndex(index);
        let Some(bytes) = wal.read(index).map_err(|e| io_error(subject(), ErrorVerb::Read, &e))? else {
            return Ok(None);
        };
        bincode::deserialize(&bytes).map(Some).map_err(|e| io_error(subject(), ErrorVerb::Read, &e))
    }

    fn last_entry_log_id(&self) -> StorageResult<Option<LogId<NodeId>>> {
        let wal = self.wal();
        let Some(last) = wal.last_index() else { return Ok(None) };
        Ok(self.read_entry(&wal, last)?.map(|entry| *entry.get_log_id()))
    }

    /// Reads entries in `range`, stopping early (but never before the first
    /// entry) once `byte_budget` stored bytes have been read.
    fn read_entries(
        &self,
        range: impl RangeBounds<u64>,
        byte_budget: usize,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let wal = self.wal();
        let (Some(first), Some(last)) = (wal.first_index(), wal.last_index()) else {
            return Ok(Vec::new());
        };
        let start = match range.start_bound() {
            Bound::Included(i) => Some(*i),
            Bound::Excluded(i) => i.checked_add(1),
            Bound::Unbounded => Some(first),
        };
        let end = match range.end_bound() {
            Bound::Included(i) => Some(*i),
            Bound::Excluded(i) => i.checked_sub(1),
            Bound::Unbounded => Some(last),
        };
        let (Some(start), Some(end)) = (start, end) else {
            return Ok(Vec::new());
        };
        let (start, end) = (start.max(first), end.min(last));
        let mut entries = Vec::new();
        let mut bytes = 0usize;
        for index in start..=end {
            bytes = bytes.saturating_add(wal.stored_len(index).unwrap_or(0));
            if !entries.is_empty() && bytes > byte_budget {
                break;
            }
            // Gaps read as nothing, as missing keys did in sled.
            if let Some(entry) = self.read_entry(&wal, index)? {
                entries.push(entry);
            }
        }
        Ok(entries)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        self.read_entries(range, usize::MAX)
    }

    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        self.read_entries(start..end, MAX_REPLICATION_BYTES)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let last_purged_log_id =
            self.read_meta::<LogId<NodeId>>(LAST_PURGED_KEY, ErrorSubject::Logs)?;
        // With every entry purged, the log still "ends" at the purge point.
        let last_log_id = self.last_entry_log_id()?.or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StorageResult<()> {
        self.write_meta(VOTE_KEY, vote, ErrorSubject::Vote)?;
        // A vote forgotten in a crash could let this node vote twice in one term.
        self.flush(ErrorSubject::Vote).await
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        self.read_meta(VOTE_KEY, ErrorSubject::Vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StorageResult<()> {
        // Not flushed on purpose: a committed id lost in a crash only means
        // re-applying a little less at startup (an older value is still a
        // true lower bound), and sled persists writes in order, so the next
        // flush of the log or vote carries it to disk.
        match committed {
            Some(log_id) => self.write_meta(COMMITTED_KEY, &log_id, ErrorSubject::Store),
            None => self
                .meta
                .remove(COMMITTED_KEY)
                .map(|_| ())
                .map_err(|e| io_error(ErrorSubject::Store, ErrorVerb::Delete, &e)),
        }
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<NodeId>>> {
        self.read_meta(COMMITTED_KEY, ErrorSubject::Store)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut encoded = Vec::new();
        for entry in entries {
            let log_id = *entry.get_log_id();
            let bytes = bincode::serialize(&entry).map_err(|e| io_error(ErrorSubject::Log(log_id), ErrorVerb::Write, &e))?;
            encoded.push((log_id.index, bytes));
        }
        if let Err(e) = self.wal().append(&encoded) {
            let err = io_error(ErrorSubject::Logs, ErrorVerb::Write, &e);
            callback.log_io_completed(Err(e));
            return Err(err);
        }
        // The callback tells openraft the entries are durable (it may then
        // acknowledge them to the leader), so it is called after the sync.
        if let Err(std::sync::mpsc::SendError(callback)) = self.group_commit.pending.send(callback) {
            let err = std::io::Error::other("the raft log flush thread has stopped");
            callback.log_io_completed(Err(std::io::Error::other(err.to_string())));
            return Err(io_error(ErrorSubject::Logs, ErrorVerb::Write, &err));
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        // Durable before returning (the WAL syncs it): conflicting entries
        // that came back after a crash would make this node's log claim
        // entries the leader overwrote.
        self.wal().truncate_from(log_id.index).map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Delete, &e))
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        // Record the purge point first: if the deletion below is cut short
        // by a crash, `new` finishes it, and until then the leftover entries
        // are still a valid, hole-free prefix.
        let current = self.read_meta::<LogId<NodeId>>(LAST_PURGED_KEY, ErrorSubject::Logs)?;
        if current.is_some_and(|current| current.index >= log_id.index) {
            return Ok(());
        }
        self.write_meta(LAST_PURGED_KEY, &log_id, ErrorSubject::Logs)?;
        // Durable before any segment goes: a log that starts past a purge
        // point nobody recorded would have a hole.
        self.flush(ErrorSubject::Logs).await?;
        self.wal().purge_up_to(log_id.index).map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Delete, &e))
    }
}
