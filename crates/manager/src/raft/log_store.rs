//! The Raft log, the vote and the committed log id, persisted in sled.
//!
//! Two trees of the manager's one sled database:
//!
//! - `raft_log`: key = log index as big-endian u64 (so sled's byte order is
//!   log order), value = bincode of the openraft [`Entry`].
//! - `raft_meta`: the vote, the committed log id and the last purged log id,
//!   each bincode-encoded under its own key.
//!
//! Every value is sealed with the manager's data key ([`Sealer`]), bound
//! to its tree and key; keys stay plaintext so sled keeps log order.
//!
//! Raft's safety rests on the vote and the appended entries surviving a
//! crash once acknowledged, so both are flushed to disk before openraft is
//! told they are stored.

// openraft's traits fix `StorageError` (large) as the error type.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    Entry, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogId, RaftLogReader, Vote,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::durable::DurableFlush;
use super::sealed::Sealer;
use super::{io_error, NodeId, StorageResult, TypeConfig};

const LOG_TREE: &str = "raft_log";
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

/// The Raft log storage of one manager. Cloning is cheap (sled trees are
/// shared handles); the clone doubles as openraft's log reader.
#[derive(Clone)]
pub struct LogStore {
    db: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
    sealer: Sealer,
    group_commit: GroupCommit,
}

/// Group commit for appended entries. openraft's core waits for nothing
/// while an append is flushed (it gets a callback), so appends that arrive
/// during one fsync share the next: with many concurrent writers the fsync
/// count stays near one per disk round trip instead of one per entry.
/// A dedicated thread, not a task, so the store works outside a runtime.
///
/// The database handle travels with each request rather than living in the
/// thread, so the database closes as soon as the last LogStore is dropped
/// (a manager restarted in-process reopens it at once).
#[derive(Clone)]
struct GroupCommit {
    pending: std::sync::mpsc::Sender<(sled::Db, LogFlushed<TypeConfig>)>,
    durable: DurableFlush,
}

impl GroupCommit {
    fn start() -> std::io::Result<Self> {
        let (pending, waiting) = std::sync::mpsc::channel::<(sled::Db, LogFlushed<TypeConfig>)>();
        let durable = DurableFlush::default();
        let flusher = durable.clone();
        std::thread::Builder::new()
            .name("raft-log-flush".into())
            .spawn(move || {
                // Ends when every LogStore clone (and so every sender) is gone.
                while let Ok((db, first)) = waiting.recv() {
                    let mut batch = vec![first];
                    batch.extend(waiting.try_iter().map(|(_, callback)| callback));
                    // Every entry in `batch` was written before its callback
                    // was queued, so this flush covers all of them.
                    let result = flusher.flush(&db).map_err(|e| e.to_string());
                    drop(db);
                    for callback in batch {
                        callback.log_io_completed(result.clone().map_err(std::io::Error::other));
                    }
                }
            })?;
        Ok(GroupCommit { pending, durable })
    }
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn index_of_key(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

impl LogStore {
    /// Opens the log trees of `db`. Finishes a purge that a crash interrupted
    /// (see [`RaftLogStorage::purge`]) so the log never starts at or below the
    /// recorded purge point. Values are sealed and opened with `sealer`.
    pub fn new(db: &sled::Db, sealer: Sealer) -> StorageResult<Self> {
        let open = |name: &str| {
            db.open_tree(name)
                .map_err(|e| io_error(ErrorSubject::Store, ErrorVerb::Read, &e))
        };
        let store = LogStore {
            db: db.clone(),
            log: open(LOG_TREE)?,
            meta: open(META_TREE)?,
            sealer,
            group_commit: GroupCommit::start()
                .map_err(|e| io_error(ErrorSubject::Store, ErrorVerb::Write, &e))?,
        };
        if let Some(purged) =
            store.read_meta::<LogId<NodeId>>(LAST_PURGED_KEY, ErrorSubject::Logs)?
        {
            store.remove_up_to(purged.index)?;
        }
        Ok(store)
    }

    /// Makes every flush of the log and vote durable across a power cut
    /// (see [`DurableFlush`]): `sled_dir` is the directory the database
    /// was opened at, which sled does not say. Without this, flushed means
    /// handed to the disk, which survives a crash of the manager but not
    /// of the machine.
    pub fn fsync_after_flush(&self, sled_dir: &Path) -> std::io::Result<()> {
        self.group_commit.durable.attach(sled_dir)
    }

    /// The flush the log uses, for the state machine's snapshots to share.
    pub fn durable_flush(&self) -> DurableFlush {
        self.group_commit.durable.clone()
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
        let (db, durable) = (self.db.clone(), self.group_commit.durable.clone());
        // Blocking I/O, and rare (votes, truncations): off the runtime.
        tokio::task::spawn_blocking(move || durable.flush(&db))
            .await
            .map_err(std::io::Error::other)
            .and_then(|r| r)
            .map_err(|e| io_error(subject, ErrorVerb::Write, &e))?;
        Ok(())
    }

    fn decode_entry(&self, key: &[u8], value: &[u8]) -> StorageResult<Entry<TypeConfig>> {
        let subject = match index_of_key(key) {
            Some(index) => ErrorSubject::LogIndex(index),
            None => ErrorSubject::Logs,
        };
        let value = self
            .sealer
            .open(LOG_TREE, key, value)
            .map_err(|e| io_error(subject.clone(), ErrorVerb::Read, &e))?;
        bincode::deserialize(&value).map_err(|e| io_error(subject, ErrorVerb::Read, &e))
    }

    /// Removes every entry with an index in `range` in one atomic batch.
    fn remove_range(&self, range: (Bound<[u8; 8]>, Bound<[u8; 8]>)) -> StorageResult<()> {
        let mut batch = sled::Batch::default();
        for key in self.log.range(range).keys() {
            batch.remove(key.map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Delete, &e))?);
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Delete, &e))
    }

    fn remove_up_to(&self, index: u64) -> StorageResult<()> {
        self.remove_range((Bound::Unbounded, Bound::Included(index_key(index))))
    }

    fn last_entry_log_id(&self) -> StorageResult<Option<LogId<NodeId>>> {
        let last = self
            .log
            .last()
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Read, &e))?;
        match last {
            Some((key, value)) => Ok(Some(*self.decode_entry(&key, &value)?.get_log_id())),
            None => Ok(None),
        }
    }

    /// Reads entries in `range`, stopping early (but never before the first
    /// entry) once `byte_budget` encoded bytes have been read.
    fn read_entries(
        &self,
        range: impl RangeBounds<u64>,
        byte_budget: usize,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let start = match range.start_bound() {
            Bound::Included(i) => Some(*i),
            Bound::Excluded(i) => i.checked_add(1),
            Bound::Unbounded => Some(0),
        };
        let end = match range.end_bound() {
            Bound::Included(i) => i.checked_add(1),
            Bound::Excluded(i) => Some(*i),
            Bound::Unbounded => None,
        };
        // An empty or inverted range reads nothing; sled would otherwise walk
        // the tree for it.
        let Some(start) = start else {
            return Ok(Vec::new());
        };
        if end.is_some_and(|end| end <= start) {
            return Ok(Vec::new());
        }
        let upper = end.map_or(Bound::Unbounded, |end| Bound::Excluded(index_key(end)));
        let mut entries = Vec::new();
        let mut bytes = 0usize;
        for item in self.log.range((Bound::Included(index_key(start)), upper)) {
            let (key, value) =
                item.map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Read, &e))?;
            bytes = bytes.saturating_add(value.len());
            if !entries.is_empty() && bytes > byte_budget {
                break;
            }
            entries.push(self.decode_entry(&key, &value)?);
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
        // One batch: a crash leaves either all of these entries or none, so
        // the log never has a hole.
        let mut batch = sled::Batch::default();
        for entry in entries {
            let log_id = *entry.get_log_id();
            let key = index_key(log_id.index);
            let bytes = bincode::serialize(&entry)
                .map_err(|e| io_error(ErrorSubject::Log(log_id), ErrorVerb::Write, &e))?;
            let bytes = self
                .sealer
                .seal(LOG_TREE, &key, &bytes)
                .map_err(|e| io_error(ErrorSubject::Log(log_id), ErrorVerb::Write, &e))?;
            batch.insert(&key, bytes);
        }
        if let Err(e) = self.log.apply_batch(batch) {
            let err = io_error(ErrorSubject::Logs, ErrorVerb::Write, &e);
            callback.log_io_completed(Err(std::io::Error::other(e)));
            return Err(err);
        }
        // The callback tells openraft the entries are durable (it may then
        // acknowledge them to the leader), so it is called after the flush.
        if let Err(std::sync::mpsc::SendError((_, callback))) = self.group_commit.pending.send((self.db.clone(), callback)) {
            let err = std::io::Error::other("the raft log flush thread has stopped");
            callback.log_io_completed(Err(std::io::Error::other(err.to_string())));
            return Err(io_error(ErrorSubject::Logs, ErrorVerb::Write, &err));
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        self.remove_range((Bound::Included(index_key(log_id.index)), Bound::Unbounded))?;
        // Durable before returning: conflicting entries that came back after
        // a crash would make this node's log claim entries the leader
        // overwrote.
        self.flush(ErrorSubject::Logs).await
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
        self.remove_up_to(log_id.index)?;
        // No flush: purged entries are covered by a durable snapshot, so
        // losing the deletion in a crash only means purging again later.
        Ok(())
    }
}
