//! The Raft state machine: applies committed transactions to the shared
//! [`Store`] and keeps a copy of it, and its latest snapshot, in sled.
//!
//! Two trees of the manager's one sled database:
//!
//! - `sm`: the store as a base image plus a journal of what changed since.
//!   - `obj/<kind>#<n>`: the objects of that kind (bincode `Vec<Object>`,
//!     in chunks of at most [`MAX_CHUNK_BYTES`]) as of `meta/base`, the log
//!     position (last applied log id and membership) the image reflects.
//!   - `journal/<index>`: one record per `apply()` call, keyed by the index
//!     of the last entry it applied (big-endian, so sled's order is log
//!     order): the after-images of the objects that call changed, the
//!     deleted ones, and the new position.
//!
//!   Each `apply()` writes one record. Keeping one key per object instead
//!   made every write rewrite a tree node at a random place in sled (object
//!   ids are random); appending at the end of the journal costs about what
//!   the Raft log append does. Once the journal outgrows the base image the
//!   two are folded into a new base image in one atomic batch, so startup
//!   reads at most about twice the store and disk use stays bounded.
//! - `snapshot`: the latest snapshot (built here or installed from the
//!   leader) with its metadata, under a single key so it is replaced
//!   atomically.
//!
//! Every value in both trees is sealed with the manager's data key
//! ([`Sealer`]), bound to its tree and key; the keys stay plaintext.
//!
//! Applying does not flush: the log is durable, and after a crash openraft
//! re-applies everything after the position that made it to disk.
//!
//! Older managers kept one `obj/<kind>/<id>` key per object with the
//! position under `meta/last_applied` and `meta/last_membership`; such a
//! tree is read as the base image and rewritten in the current layout at
//! startup.

// openraft's traits fix `StorageError` (large) as the error type.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend,
    RaftSnapshotBuilder, SnapshotMeta, StoredMembership,
};
use serde::{Deserialize, Serialize};

use super::durable::DurableFlush;
use super::sealed::Sealer;
use super::{io_error, NodeId, StorageResult, TypeConfig};
use crate::store::{Kind, Object, Op, Store, StoreState, TxnOutcome};

const SM_TREE: &str = "sm";
const SNAPSHOT_TREE: &str = "snapshot";

const BASE_PREFIX: &str = "obj/";
const BASE_POSITION_KEY: &[u8] = b"meta/base";
const JOURNAL_PREFIX: &[u8] = b"journal/";
const LEGACY_LAST_APPLIED_KEY: &[u8] = b"meta/last_applied";
const LEGACY_LAST_MEMBERSHIP_KEY: &[u8] = b"meta/last_membership";
const CURRENT_SNAPSHOT_KEY: &[u8] = b"current";

/// The journal is folded into the base image once it holds more than this
/// many bytes and more than the base image itself: small stores are not
/// rewritten for every few writes, and large ones at most double their
/// write volume.
const MIN_JOURNAL_BYTES_TO_FOLD: u64 = 4 * 1024 * 1024;

type Membership = StoredMembership<NodeId, BasicNode>;
type Meta = SnapshotMeta<NodeId, BasicNode>;

/// What a snapshot's bytes hold: the whole store and the Raft position it
/// reflects.
type SnapshotPayload = (StoreState, Option<LogId<NodeId>>, Membership);

/// Most encoded bytes per base image chunk, so that rewriting one object
/// kind rewrites a bounded part of the image. (Chunks do not keep sled
/// from writing blob files: a tree node of several chunks can pass its
/// 128 KiB limit; [`DurableFlush`] syncs those.)
const MAX_CHUNK_BYTES: u64 = 32 * 1024;

/// `obj/<kind>#<n>`: never a `/` after the prefix, unlike the legacy keys.
fn base_key(kind: Kind, chunk: usize) -> String {
    format!("{BASE_PREFIX}{kind}#{chunk:08}")
}

fn journal_key(index: u64) -> Vec<u8> {
    let mut key = JOURNAL_PREFIX.to_vec();
    key.extend_from_slice(&index.to_be_bytes());
    key
}

/// Where the state machine stands in the Raft log.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Position {
    last_applied: Option<LogId<NodeId>>,
    membership: Membership,
}

/// One journal record. Written with `O = &Object` (no copies), read back
/// with `O = Object`: bincode encodes both the same way.
#[derive(Serialize, Deserialize)]
struct Record<O> {
    position: Position,
    changes: Changes<O>,
}

#[derive(Serialize, Deserialize)]
enum Changes<O> {
    /// After-images of the objects that changed, and the ones deleted.
    /// Applying them on top of any state between the previous record's
    /// position and this one's gives this one's (they are whole objects,
    /// not deltas).
    Objects { upserts: Vec<O>, deletes: Vec<(Kind, String)> },
    /// A `Restore` replaced the whole store with these objects.
    Everything(Vec<O>),
}

fn encode<T: Serialize>(value: &T) -> StorageResult<Vec<u8>> {
    bincode::serialize(value)
        .map_err(|e| io_error(ErrorSubject::StateMachine, ErrorVerb::Write, &e))
}

/// The snapshot as stored: its metadata next to its bytes.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: Meta,
    data: Vec<u8>,
}

impl StoredSnapshot {
    fn into_snapshot(self) -> Snapshot<TypeConfig> {
        Snapshot {
            meta: self.meta,
            snapshot: Box::new(Cursor::new(self.data)),
        }
    }
}

/// The `snapshot` tree, shared by the state machine (installs) and the
/// builders openraft runs in the background.
#[derive(Clone)]
struct SnapshotSlot {
    db: sled::Db,
    tree: sled::Tree,
    sealer: Sealer,
    /// Makes "compare with the saved snapshot, then replace it" atomic, so a
    /// slow builder cannot overwrite a newer snapshot installed meanwhile.
    replace: Arc<Mutex<()>>,
    /// Distinguishes snapshots built at the same log id; seeded from the
    /// clock so ids stay distinct across restarts.
    counter: Arc<AtomicU64>,
    /// How a saved snapshot is made durable: shared with the log store.
    durable: DurableFlush,
}

impl SnapshotSlot {
    fn load(&self) -> StorageResult<Option<StoredSnapshot>> {
        let subject = || ErrorSubject::Snapshot(None);
        let Some(bytes) = self
            .tree
            .get(CURRENT_SNAPSHOT_KEY)
            .map_err(|e| io_error(subject(), ErrorVerb::Read, &e))?
        else {
            return Ok(None);
        };
        let bytes = self
            .sealer
            .open(SNAPSHOT_TREE, CURRENT_SNAPSHOT_KEY, &bytes)
            .map_err(|e| io_error(subject(), ErrorVerb::Read, &e))?;
        bincode::deserialize(&bytes)
            .map(Some)
            .map_err(|e| io_error(subject(), ErrorVerb::Read, &e))
    }

    /// Stores `snapshot` as the current one unless a newer one is already
    /// there (or `force`). Written but not flushed; see [`Self::flush`].
    fn store(&self, snapshot: &StoredSnapshot, force: bool) -> StorageResult<()> {
        let subject = || ErrorSubject::Snapshot(Some(snapshot.meta.signature()));
        let bytes =
            bincode::serialize(snapshot).map_err(|e| io_error(subject(), ErrorVerb::Write, &e))?;
        let bytes = self
            .sealer
            .seal(SNAPSHOT_TREE, CURRENT_SNAPSHOT_KEY, &bytes)
            .map_err(|e| io_error(subject(), ErrorVerb::Write, &e))?;
        let _guard = self.replace.lock().unwrap_or_else(|p| p.into_inner());
        if !force {
            if let Some(current) = self.load()? {
                if current.meta.last_log_id > snapshot.meta.last_log_id {
                    return Ok(());
                }
            }
        }
        self.tree
            .insert(CURRENT_SNAPSHOT_KEY, bytes)
            .map_err(|e| io_error(subject(), ErrorVerb::Write, &e))?;
        Ok(())
    }

    /// Makes the saved snapshot durable across a power cut (it is the
    /// whole store, so always in a blob file of sled's; see [`DurableFlush`]).
    async fn flush(&self, meta: &Meta) -> StorageResult<()> {
        let (db, durable) = (self.db.clone(), self.durable.clone());
        tokio::task::spawn_blocking(move || durable.flush(&db))
            .await
            .map_err(std::io::Error::other)
            .and_then(|r| r)
            .map_err(|e| io_error(ErrorSubject::Snapshot(Some(meta.signature())), ErrorVerb::Write, &e))
    }

    fn next_id(&self, last_log_id: Option<LogId<NodeId>>) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        match last_log_id {
            Some(id) => format!("{}-{}-{n}", id.leader_id.term, id.index),
            None => format!("0-0-{n}"),
        }
    }
}

/// openraft's state machine over the cluster store.
pub struct StateMachine {
    store: Store,
    sm: sled::Tree,
    sealer: Sealer,
    snapshots: SnapshotSlot,
    last_applied: Option<LogId<NodeId>>,
    last_membership: Membership,
    /// Encoded size of the base image and of the journal records since it,
    /// which decide when to fold the journal in.
    base_bytes: u64,
    journal_bytes: u64,
    /// [`MIN_JOURNAL_BYTES_TO_FOLD`], lowered by tests to exercise folding.
    min_journal_bytes_to_fold: u64,
}

impl StateMachine {
    /// Opens the state machine's trees in `db` and loads what they hold into
    /// `store`: the `sm` tree, or the saved snapshot when that is newer (a
    /// crash cut an install short). Values are sealed and opened with
    /// `sealer`.
    /// Saved snapshots are flushed with `durable` (the log store's), so
    /// they too survive a power cut.
    pub fn flush_snapshots_with(&mut self, durable: DurableFlush) {
        self.snapshots.durable = durable;
    }

    pub fn new(db: &sled::Db, store: Store, sealer: Sealer) -> StorageResult<Self> {
        let open = |name: &str| {
            db.open_tree(name)
                .map_err(|e| io_error(ErrorSubject::StateMachine, ErrorVerb::Read, &e))
        };
        let sm = open(SM_TREE)?;
        let snapshots = SnapshotSlot {
            db: db.clone(),
            tree: open(SNAPSHOT_TREE)?,
            sealer: sealer.clone(),
            replace: Arc::new(Mutex::new(())),
            counter: Arc::new(AtomicU64::new(crate::store::now_ms())),
            durable: DurableFlush::default(),
        };
        let mut machine = StateMachine {
            store,
            sm,
            sealer,
            snapshots,
            last_applied: None,
            last_membership: Membership::default(),
            base_bytes: 0,
            journal_bytes: 0,
            min_journal_bytes_to_fold: MIN_JOURNAL_BYTES_TO_FOLD,
        };
        let (objects, position, legacy) = machine.read_sm()?;
        machine.last_applied = position.last_applied;
        machine.last_membership = position.membership;

        if let Some(saved) = machine.snapshots.load()? {
            if saved.meta.last_log_id > machine.last_applied {
                tracing::info!(snapshot = %saved.meta.snapshot_id, "state machine is behind its snapshot; loading the snapshot");
                machine.load_snapshot(&saved.meta, &saved.data)?;
                return Ok(machine);
            }
        }
        let state = StoreState::from_objects(objects.into_values());
        if legacy {
            tracing::info!("rewriting the state machine in the journal layout");
            machine.write_base(&state)?;
        }
        machine
            .store
            .replace(state, machine.last_applied.map_or(0, |id| id.index));
        Ok(machine)
    }

    fn read_key<T: for<'de> Deserialize<'de>>(&self, key: &[u8]) -> StorageResult<Option<T>> {
        let Some(bytes) = self
            .sm
            .get(key)
            .map_err(|e| io_error(ErrorSubject::StateMachine, ErrorVerb::Read, &e))?
        else {
            return Ok(None);
        };
        self.decode(key, &bytes).map(Some)
    }

    /// Opens the value stored under `key` of the `sm` tree and decodes it.
    fn decode<T: for<'de> Deserialize<'de>>(&self, key: &[u8], stored: &[u8]) -> StorageResult<T> {
        let bytes = self
            .sealer
            .open(SM_TREE, key, stored)
            .map_err(|e| io_error(ErrorSubject::StateMachine, ErrorVerb::Read, &e))?;
        bincode::deserialize(&bytes).map_err(|e| io_error(ErrorSubject::StateMachine, ErrorVerb::Read, &e))
    }

    /// Encodes `value` and seals it for `key` of the `sm` tree.
    fn encode<T: Serialize>(&self, key: &[u8], value: &T) -> StorageResult<Vec<u8>> {
        self.sealer
            .seal(SM_TREE, key, &encode(value)?)
            .map_err(|e| io_error(ErrorSubject::StateMachine, ErrorVerb::Write, &e))
    }

    /// Reads the base image and replays the journal over it: the objects
    /// and the position they reflect, and whether the tree is still in the
    /// legacy one-key-per-object layout. Sets the byte counts.
    #[allow(clippy::type_complexity)]
    fn read_sm(&mut self) -> StorageResult<(BTreeMap<(Kind, String), Object>, Position, bool)> {
        let mut objects = BTreeMap::new();
        let mut legacy = false;
        self.base_bytes = 0;
        for item in self.sm.scan_prefix(BASE_PREFIX) {
            let (key, value) =
                item.map_err(|e| io_error(ErrorSubject::StateMachine, ErrorVerb::Read, &e))?;
            self.base_bytes += value.len() as u64;
            // `obj/<kind>#<n>` holds a chunk of a kind's image;
            // `obj/<kind>/<id>` one object of the legacy layout.
            if key[BASE_PREFIX.len()..].contains(&b'/') {
                legacy = true;
                let object: Object = self.decode(&key, &value)?;
                objects.insert((object.kind(), object.id().to_string()), object);
            } else {
                for object in self.decode::<Vec<Object>>(&key, &value)? {
                    objects.insert((object.kind(), object.id().to_string()), object);
                }
            }
        }
        let mut position = match self.read_key::<Position>(BASE_POSITION_KEY)? {
            Some(position) => position,
            None => {
                let last_applied: Option<Option<LogId<NodeId>>> = self.read_key(LEGACY_LAST_APPLIED_KEY)?;
                legacy |= last_applied.is_some();
                Position {
                    last_applied: last_applied.flatten(),
                    membership: self.read_key(LEGACY_LAST_MEMBERSHIP_KEY)?.unwrap_or_default(),
                }
            }
        };
        self.journal_bytes = 0;
        for item in self.sm.scan_prefix(JOURNAL_PREFIX) {
            let (key, value) =
                item.map_err(|e| io_error(ErrorSubject::StateMachine, ErrorVerb::Read, &e))?;
            self.journal_bytes += value.len() as u64;
            let record: Record<Object> = self.decode(&key, &value)?;
            // Records are removed together with the base image they were
            // folded into, so none is older than the base; skipping such a
            // record anyway keeps the position from going backwards.
            if record.position.last_applied <= position.last_applied {
                continue;
            }
            match record.changes {
                Changes::Objects { upserts, deletes } => {
                    for key in deletes {
                        objects.remove(&key);
                    }
                    for object in upserts {
                        objects.insert((object.kind(), object.id().to_string()), object);
                    }
                }
                Changes::Everything(all) => {
                    objects = all.into_iter().map(|o| ((o.kind(), o.id().to_string()), o)).collect();
                }
            }
            position = record.position;
        }
        Ok((objects, position, legacy))
    }

    fn position(&self) -> Position {
        Position { last_applied: self.last_applied, membership: self.last_membership.clone() }
    }

    /// Replaces the whole `sm` tree with `state` as the base image at the
    /// current position, in one batch: no journal, no legacy keys.
    fn write_base(&mut self, state: &StoreState) -> StorageResult<()> {
        let mut by_kind: BTreeMap<Kind, Vec<&Object>> = BTreeMap::new();
        for object in state.all_objects() {
            by_kind.entry(object.kind()).or_default().push(object);
        }
        let mut batch = sled::Batch::default();
        // Removals first: a sled batch keeps the last write per key, so the
        // inserts below win for the kinds that stay.
        for prefix in [BASE_PREFIX.as_bytes(), JOURNAL_PREFIX] {
            for key in self.sm.scan_prefix(prefix).keys() {
                batch.remove(
                    key.map_err(|e| io_error(ErrorSubject::StateMachine, ErrorVerb::Delete, &e))?,
                );
            }
        }
        batch.remove(LEGACY_LAST_APPLIED_KEY);
        batch.remove(LEGACY_LAST_MEMBERSHIP_KEY);
        let mut base_bytes = 0;
        for (kind, objects) in by_kind {
            let mut chunks = Vec::new();
            let (mut chunk, mut chunk_bytes) = (Vec::new(), 0u64);
            for object in objects {
                let size = bincode::serialized_size(object)
                    .map_err(|e| io_error(ErrorSubject::StateMachine, ErrorVerb::Write, &e))?;
                if !chunk.is_empty() && chunk_bytes + size > MAX_CHUNK_BYTES {
                    chunks.push(std::mem::take(&mut chunk));
                    chunk_bytes = 0;
                }
                chunk.push(object);
                chunk_bytes += size;
            }
            chunks.push(chunk);
            for (n, chunk) in chunks.iter().enumerate() {
                let key = base_key(kind, n);
                let bytes = self.encode(key.as_bytes(), chunk)?;
                base_bytes += bytes.len() as u64;
                batch.insert(key.as_bytes(), bytes);
            }
        }
        batch.insert(BASE_POSITION_KEY, self.encode(BASE_POSITION_KEY, &self.position())?);
        self.sm
            .apply_batch(batch)
            .map_err(|e| io_error(ErrorSubject::StateMachine, ErrorVerb::Write, &e))?;
        self.base_bytes = base_bytes;
        self.journal_bytes = 0;
        Ok(())
    }

    /// Replaces the store and the `sm` tree with a snapshot's contents. Not
    /// flushed: the caller has saved the snapshot itself, which wins at
    /// startup until the `sm` tree catches up.
    fn load_snapshot(&mut self, meta: &Meta, data: &[u8]) -> StorageResult<()> {
        let signature = || ErrorSubject::Snapshot(Some(meta.signature()));
        let (state, _, _): SnapshotPayload =
            bincode::deserialize(data).map_err(|e| io_error(signature(), ErrorVerb::Read, &e))?;
        // The metadata is what openraft reasons with; trust it over the copy
        // inside the payload.
        self.last_applied = meta.last_log_id;
        self.last_membership = meta.last_membership.clone();
        self.write_base(&state)?;
        self.store
            .replace(state, meta.last_log_id.map_or(0, |id| id.index));
        Ok(())
    }
}

/// Remembers which objects an `apply()` call changed, so that only those
/// are rewritten on disk.
#[derive(Default)]
struct Touched {
    keys: BTreeSet<(Kind, String)>,
    /// A `Restore` replaced the whole store.
    everything: bool,
}

impl Touched {
    fn record(&mut self, ops: &[Op]) {
        for op in ops {
            match op {
                Op::Create(object) | Op::Update { object, .. } => {
                    self.keys.insert((object.kind(), object.id().to_string()));
                }
                Op::Delete { kind, id } => {
                    self.keys.insert((*kind, id.clone()));
                }
                Op::TaskStatus { task_id, .. } => {
                    self.keys.insert((Kind::Task, task_id.clone()));
                }
                Op::Check { .. } => {}
                Op::Restore(_) => self.everything = true,
            }
        }
    }
}

impl StateMachine {
    /// Applies committed entries to the store and journals what they
    /// changed; one outcome per transaction of each entry.
    fn apply_entries<I>(&mut self, entries: I) -> StorageResult<Vec<Vec<TxnOutcome>>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>>,
    {
        let mut replies = Vec::new();
        let mut touched = Touched::default();
        for entry in entries {
            self.last_applied = Some(entry.log_id);
            let reply = match entry.payload {
                EntryPayload::Blank => {
                    // Each new leader's first entry: every manager sees the
                    // change of leader at the same place in the log.
                    let leader = crate::store::node_id_string(entry.log_id.leader_id.node_id);
                    let event = crate::events::leader_event(entry.log_id.index, crate::store::now_ms(), &leader, entry.log_id.leader_id.term);
                    self.store.history().record(vec![event]);
                    Vec::new()
                }
                EntryPayload::Normal(proposal) => proposal
                    .txns
                    .iter()
                    .map(|txn| {
                        let outcome = self.store.apply(entry.log_id.index, txn);
                        // A failed transaction changed nothing.
                        if outcome.is_ok() {
                            touched.record(&txn.ops);
                        }
                        outcome
                    })
                    .collect(),
                EntryPayload::Membership(membership) => {
                    self.last_membership = StoredMembership::new(Some(entry.log_id), membership);
                    Vec::new()
                }
            };
            replies.push(reply);
        }
        if replies.is_empty() {
            return Ok(replies);
        }

        // Non-empty `replies` means something was applied, so this index is
        // new and the key orders after every record before it.
        let key = journal_key(self.last_applied.map_or(0, |id| id.index));
        // Journal the after-images as the store holds them now, once per key
        // however often the batch changed it; absent means deleted.
        let record = {
            let state = self.store.read();
            let changes = if touched.everything {
                Changes::Everything(state.all_objects().collect())
            } else {
                let mut upserts = Vec::new();
                let mut deletes = Vec::new();
                for (kind, id) in touched.keys {
                    match state.get(kind, &id) {
                        Some(object) => upserts.push(object),
                        None => deletes.push((kind, id)),
                    }
                }
                Changes::Objects { upserts, deletes }
            };
            self.encode(&key, &Record { position: self.position(), changes })?
        };
        self.journal_bytes += record.len() as u64;
        self.sm
            .insert(key, record)
            .map_err(|e| io_error(ErrorSubject::StateMachine, ErrorVerb::Write, &e))?;
        if self.journal_bytes > self.min_journal_bytes_to_fold.max(self.base_bytes) {
            let store = self.store.clone();
            let state = store.read();
            self.write_base(&state)?;
        }
        Ok(replies)
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> StorageResult<(Option<LogId<NodeId>>, Membership)> {
        Ok((self.last_applied, self.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<Vec<TxnOutcome>>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // Applying is CPU work (every changed object sealed and journalled,
        // now and then the whole store folded into a new base) that can take
        // longer than an election timeout. On Raft's own runtime
        // (`own_runtime`) it would hold up the core that shares its thread:
        // a follower whose core is not polled misses its leader's heartbeats
        // and stands for election (1,000-node simulator: 37 terms during
        // placement). Off the core's thread, Raft keeps its timing.
        if tokio::runtime::Handle::current().runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread {
            tokio::task::block_in_place(|| self.apply_entries(entries))
        } else {
            self.apply_entries(entries)
        }
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            state: self.store.snapshot(),
            last_applied: self.last_applied,
            last_membership: self.last_membership.clone(),
            slot: self.snapshots.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: snapshot.into_inner(),
        };
        // Saved before the `sm` tree is rewritten, so a crash in between
        // leaves a snapshot newer than `sm`, which `new` then loads.
        self.snapshots.store(&stored, true)?;
        self.load_snapshot(meta, &stored.data)?;
        self.snapshots.flush(meta).await
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        Ok(self.snapshots.load()?.map(StoredSnapshot::into_snapshot))
    }
}

/// A point-in-time copy of the state machine, serialised and saved off the
/// apply path by openraft's snapshot task.
pub struct SnapshotBuilder {
    state: StoreState,
    last_applied: Option<LogId<NodeId>>,
    last_membership: Membership,
    slot: SnapshotSlot,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let meta = Meta {
            last_log_id: self.last_applied,
            last_membership: self.last_membership.clone(),
            snapshot_id: self.slot.next_id(self.last_applied),
        };
        let data = bincode::serialize(&(&self.state, &self.last_applied, &self.last_membership))
            .map_err(|e| {
                io_error(
                    ErrorSubject::Snapshot(Some(meta.signature())),
                    ErrorVerb::Write,
                    &e,
                )
            })?;
        let stored = StoredSnapshot { meta, data };
        self.slot.store(&stored, false)?;
        // openraft purges the log up to this snapshot once it returns, so
        // the snapshot must be on disk first.
        self.slot.flush(&stored.meta).await?;
        Ok(stored.into_snapshot())
    }
}

#[cfg(test)]
#[path = "state_machine_tests.rs"]
mod tests;
