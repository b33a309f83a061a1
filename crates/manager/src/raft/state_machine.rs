//! The Raft state machine: applies committed transactions to the shared
//! [`Store`] and keeps a copy of it, and its latest snapshot, in sled.
//!
//! Two trees of the manager's one sled database:
//!
//! - `sm`: every object under `obj/<kind>/<id>` (bincode [`Object`]), plus
//!   the last applied log id and last membership under `meta/...`. Each
//!   `apply()` call writes all of these in one batch, so on disk the objects
//!   and `last_applied` always agree.
//! - `snapshot`: the latest snapshot (built here or installed from the
//!   leader) with its metadata, under a single key so it is replaced
//!   atomically.
//!
//! Applying does not flush: the log is durable, and after a crash openraft
//! re-applies everything after the `last_applied` that made it to disk.

// openraft's traits fix `StorageError` (large) as the error type.
#![allow(clippy::result_large_err)]

use std::collections::BTreeSet;
use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend,
    RaftSnapshotBuilder, SnapshotMeta, StoredMembership,
};
use serde::{Deserialize, Serialize};

use super::{io_error, NodeId, StorageResult, TypeConfig};
use crate::store::{Kind, Object, Op, Store, StoreState, TxnOutcome};

const SM_TREE: &str = "sm";
const SNAPSHOT_TREE: &str = "snapshot";

const OBJECT_PREFIX: &str = "obj/";
const LAST_APPLIED_KEY: &[u8] = b"meta/last_applied";
const LAST_MEMBERSHIP_KEY: &[u8] = b"meta/last_membership";
const CURRENT_SNAPSHOT_KEY: &[u8] = b"current";

type Membership = StoredMembership<NodeId, BasicNode>;
type Meta = SnapshotMeta<NodeId, BasicNode>;

/// What a snapshot's bytes hold: the whole store and the Raft position it
/// reflects.
type SnapshotPayload = (StoreState, Option<LogId<NodeId>>, Membership);

fn object_key(kind: Kind, id: &str) -> String {
    format!("{OBJECT_PREFIX}{kind}/{id}")
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
    /// Makes "compare with the saved snapshot, then replace it" atomic, so a
    /// slow builder cannot overwrite a newer snapshot installed meanwhile.
    replace: Arc<Mutex<()>>,
    /// Distinguishes snapshots built at the same log id; seeded from the
    /// clock so ids stay distinct across restarts.
    counter: Arc<AtomicU64>,
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

    async fn flush(&self, meta: &Meta) -> StorageResult<()> {
        self.db.flush_async().await.map_err(|e| {
            io_error(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Write,
                &e,
            )
        })?;
        Ok(())
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
    snapshots: SnapshotSlot,
    last_applied: Option<LogId<NodeId>>,
    last_membership: Membership,
}

impl StateMachine {
    /// Opens the state machine's trees in `db` and loads what they hold into
    /// `store`: the `sm` tree, or the saved snapshot when that is newer (a
    /// crash cut an install short).
    pub fn new(db: &sled::Db, store: Store) -> StorageResult<Self> {
        let open = |name: &str| {
            db.open_tree(name)
                .map_err(|e| io_error(ErrorSubject::StateMachine, ErrorVerb::Read, &e))
        };
        let sm = open(SM_TREE)?;
        let snapshots = SnapshotSlot {
            db: db.clone(),
            tree: open(SNAPSHOT_TREE)?,
            replace: Arc::new(Mutex::new(())),
            counter: Arc::new(AtomicU64::new(crate::store::now_ms())),
        };
        let mut machine = StateMachine {
            store,
            sm,
            snapshots,
            last_applied: None,
            last_membership: Membership::default(),
        };
        machine.last_applied = machine.read_meta(LAST_APPLIED_KEY)?.flatten();
        machine.last_membership = machine.read_meta(LAST_MEMBERSHIP_KEY)?.unwrap_or_default();

        if let Some(saved) = machine.snapshots.load()? {
            if saved.meta.last_log_id > machine.last_applied {
                tracing::info!(snapshot = %saved.meta.snapshot_id, "state machine is behind its snapshot; loading the snapshot");
                machine.load_snapshot(&saved.meta, &saved.data)?;
                return Ok(machine);
            }
        }
        let state = StoreState::from_objects(machine.read_objects()?);
        machine
            .store
            .replace(state, machine.last_applied.map_or(0, |id| id.index));
        Ok(machine)
    }

    fn read_meta<T: for<'de> Deserialize<'de>>(&self, key: &[u8]) -> StorageResult<Option<T>> {
        let Some(bytes) = self
            .sm
            .get(key)
            .map_err(|e| io_error(ErrorSubject::StateMachine, ErrorVerb::Read, &e))?
        else {
            return Ok(None);
        };
        bincode::deserialize(&bytes)
            .map(Some)
            .map_err(|e| io_error(ErrorSubject::StateMachine, ErrorVerb::Read, &e))
    }

    fn read_objects(&self) -> StorageResult<Vec<Object>> {
        let mut objects = Vec::new();
        for item in self.sm.scan_prefix(OBJECT_PREFIX) {
            let (_, value) =
                item.map_err(|e| io_error(ErrorSubject::StateMachine, ErrorVerb::Read, &e))?;
            objects.push(
                bincode::deserialize(&value)
                    .map_err(|e| io_error(ErrorSubject::StateMachine, ErrorVerb::Read, &e))?,
            );
        }
        Ok(objects)
    }

    /// Adds to `batch` what makes the `sm` tree hold exactly `state`'s objects.
    fn rewrite_objects(&self, state: &StoreState, batch: &mut sled::Batch) -> StorageResult<()> {
        // Removals first: a sled batch keeps the last write per key, so the
        // inserts below win for objects that stay.
        for key in self.sm.scan_prefix(OBJECT_PREFIX).keys() {
            batch.remove(
                key.map_err(|e| io_error(ErrorSubject::StateMachine, ErrorVerb::Delete, &e))?,
            );
        }
        for object in state.all_objects() {
            batch.insert(
                object_key(object.kind(), object.id()).as_bytes(),
                encode(object)?,
            );
        }
        Ok(())
    }

    fn write_position(&self, batch: &mut sled::Batch) -> StorageResult<()> {
        batch.insert(LAST_APPLIED_KEY, encode(&self.last_applied)?);
        batch.insert(LAST_MEMBERSHIP_KEY, encode(&self.last_membership)?);
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
        let mut batch = sled::Batch::default();
        self.rewrite_objects(&state, &mut batch)?;
        self.write_position(&mut batch)?;
        self.sm
            .apply_batch(batch)
            .map_err(|e| io_error(signature(), ErrorVerb::Write, &e))?;
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
        let mut replies = Vec::new();
        let mut touched = Touched::default();
        for entry in entries {
            self.last_applied = Some(entry.log_id);
            let reply = match entry.payload {
                EntryPayload::Blank => Vec::new(),
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

        // Write the after-images as the store holds them now, once per key
        // however often the batch changed it; absent means deleted.
        let mut batch = sled::Batch::default();
        {
            let state = self.store.read();
            if touched.everything {
                self.rewrite_objects(&state, &mut batch)?;
            } else {
                for (kind, id) in &touched.keys {
                    let key = object_key(*kind, id);
                    match state.get(*kind, id) {
                        Some(object) => batch.insert(key.as_bytes(), encode(object)?),
                        None => batch.remove(key.as_bytes()),
                    }
                }
            }
        }
        self.write_position(&mut batch)?;
        self.sm
            .apply_batch(batch)
            .map_err(|e| io_error(ErrorSubject::StateMachine, ErrorVerb::Write, &e))?;
        Ok(replies)
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
