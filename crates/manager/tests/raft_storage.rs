//! Raft storage on sled: openraft's conformance suite, and what must survive
//! a manager restart (log, vote, committed index, state machine, snapshot).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{
    AnyError, BasicNode, CommittedLeaderId, Entry, EntryPayload, LogId, Membership, RaftLogReader, RaftSnapshotBuilder,
    StorageError, StorageIOError, StoredMembership, Vote,
};
use shoal_manager::raft::log_store::LogStore;
use shoal_manager::raft::sealed::{Dek, Sealer};
use shoal_manager::raft::state_machine::StateMachine;
use shoal_manager::raft::{open_storage, NodeId, TypeConfig};
use shoal_manager::store::{Config, Kind, Meta, Object, Op, Store, Transaction};
use tempfile::TempDir;

/// Opens the database at `path`. A "restart" reopens it right after the
/// previous handle was dropped, and sled's background flusher may hold the
/// file lock a moment longer (more so on a loaded machine): wait for it,
/// bounded, as a restarted manager process would find it free.
fn open_db(path: &Path) -> sled::Db {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match sled::Config::new().path(path).open() {
            Ok(db) => return db,
            Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("open sled: {e:?}"),
        }
    }
}

/// Every store here encrypts, as a manager's does; each test with its own key.
fn sealer() -> Sealer {
    Sealer::new(&Dek::generate())
}

/// Each suite case gets a fresh database in its own temporary directory,
/// removed when the case ends.
struct SledStoreBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for SledStoreBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<NodeId>> {
        let dir = tempfile::tempdir().map_err(|e| StorageIOError::write(AnyError::new(&e)))?;
        let db = sled::Config::new().path(dir.path()).open().map_err(|e| StorageIOError::write(AnyError::new(&e)))?;
        let (log, sm) = open_storage(&db, dir.path(), Store::new(), sealer())?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    // The suite runs each case on its own tokio runtime, so this is a plain test.
    if let Err(e) = Suite::test_all(SledStoreBuilder) {
        panic!("storage suite failed: {e}");
    }
}

fn log_id(term: u64, index: u64) -> LogId<NodeId> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn config(id: &str, name: &str) -> Object {
    Object::Config(Config {
        meta: Meta { id: id.into(), ..Default::default() },
        name: name.into(),
        labels: BTreeMap::new(),
        data: b"x".to_vec(),
    })
}

fn normal(term: u64, index: u64, ops: Vec<Op>) -> Entry<TypeConfig> {
    Entry { log_id: log_id(term, index), payload: EntryPayload::Normal(Transaction { ops, timestamp_ms: 1_000 }.into()) }
}

fn blank(term: u64, index: u64) -> Entry<TypeConfig> {
    Entry { log_id: log_id(term, index), payload: EntryPayload::Blank }
}

fn membership(term: u64, index: u64) -> Entry<TypeConfig> {
    let nodes = BTreeMap::from([(1, BasicNode { addr: "127.0.0.1:1".into() })]);
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Membership(Membership::new(vec![BTreeSet::from([1])], nodes)),
    }
}

fn config_names(store: &Store) -> Vec<String> {
    store.view(|s| s.list(Kind::Config).filter_map(|o| o.name().map(str::to_string)).collect())
}

#[tokio::test]
async fn log_vote_and_committed_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let sealer = sealer();
    let entries = vec![
        blank(1, 1),
        membership(1, 2),
        normal(1, 3, vec![Op::Create(config("a", "one"))]),
        normal(2, 4, vec![Op::Create(config("b", "two"))]),
        blank(2, 5),
    ];
    {
        let db = open_db(dir.path());
        let mut log = LogStore::open(&db, &dir.path().join("wal"), sealer.clone()).unwrap();
        log.blocking_append(entries.clone()).await.unwrap();
        log.save_vote(&Vote::new_committed(2, 1)).await.unwrap();
        log.save_committed(Some(log_id(2, 4))).await.unwrap();
        log.purge(log_id(1, 1)).await.unwrap();
        // A conflicting suffix from an old leader, cut off again.
        log.blocking_append([blank(2, 6), blank(2, 7)]).await.unwrap();
        log.truncate(log_id(2, 6)).await.unwrap();
    }

    let db = open_db(dir.path());
    let mut log = LogStore::open(&db, &dir.path().join("wal"), sealer.clone()).unwrap();
    assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new_committed(2, 1)));
    assert_eq!(log.read_committed().await.unwrap(), Some(log_id(2, 4)));
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 1)));
    assert_eq!(state.last_log_id, Some(log_id(2, 5)));
    let got = log.try_get_log_entries(0..100).await.unwrap();
    assert_eq!(got, entries[1..].to_vec());
}

#[tokio::test]
async fn an_interrupted_purge_is_finished_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let sealer = sealer();
    {
        let db = open_db(dir.path());
        let mut log = LogStore::open(&db, &dir.path().join("wal"), sealer.clone()).unwrap();
        log.blocking_append([blank(1, 1), blank(1, 2), blank(1, 3)]).await.unwrap();
        log.purge(log_id(1, 2)).await.unwrap();
        // As if the crash came after the purge point was recorded but before
        // the entries were deleted.
        let tree = db.open_tree("raft_log").unwrap();
        let key = 2u64.to_be_bytes();
        let value = sealer.seal("raft_log", &key, &bincode::serialize(&blank(1, 2)).unwrap()).unwrap();
        tree.insert(key, value).unwrap();
        db.flush().unwrap();
    }
    let db = open_db(dir.path());
    let mut log = LogStore::open(&db, &dir.path().join("wal"), sealer.clone()).unwrap();
    let got = log.try_get_log_entries(0..100).await.unwrap();
    assert_eq!(got, vec![blank(1, 3)]);
}

#[tokio::test]
async fn state_machine_reloads_objects_and_position_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let sealer = sealer();
    {
        let db = open_db(dir.path());
        let store = Store::new();
        let mut sm = StateMachine::new(&db, store.clone(), sealer.clone()).unwrap();
        let replies = sm
            .apply([
                membership(1, 1),
                normal(1, 2, vec![Op::Create(config("a", "one")), Op::Create(config("b", "two"))]),
                // Fails (name taken): must change nothing, on disk either.
                normal(1, 3, vec![Op::Create(config("c", "two"))]),
            ])
            .await
            .unwrap();
        assert_eq!(replies.len(), 3);
        assert!(replies[2][0].is_err());
        sm.apply([normal(1, 4, vec![Op::Delete { kind: Kind::Config, id: "a".into() }]), blank(1, 5)]).await.unwrap();
        assert_eq!(config_names(&store), vec!["two".to_string()]);
        db.flush().unwrap();
    }

    let db = open_db(dir.path());
    let store = Store::new();
    let mut sm = StateMachine::new(&db, store.clone(), sealer.clone()).unwrap();
    assert_eq!(config_names(&store), vec!["two".to_string()]);
    let b = store.view(|s| s.get(Kind::Config, "b").cloned()).unwrap();
    assert_eq!(b.meta().version, 2);
    // The name index is rebuilt, not just the objects.
    assert!(store.view(|s| s.find_by_name(Kind::Config, "two").is_some()));
    let (applied, membership) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(1, 5)));
    assert_eq!(membership.log_id(), &Some(log_id(1, 1)));
}

#[tokio::test]
async fn restore_rewrites_the_whole_persisted_store() {
    let dir = tempfile::tempdir().unwrap();
    let sealer = sealer();
    {
        let db = open_db(dir.path());
        let mut sm = StateMachine::new(&db, Store::new(), sealer.clone()).unwrap();
        sm.apply([normal(1, 1, vec![Op::Create(config("a", "one"))])]).await.unwrap();
        sm.apply([normal(1, 2, vec![Op::Restore(vec![config("z", "last")])])]).await.unwrap();
        db.flush().unwrap();
    }
    let db = open_db(dir.path());
    let store = Store::new();
    let _sm = StateMachine::new(&db, store.clone(), sealer.clone()).unwrap();
    assert_eq!(config_names(&store), vec!["last".to_string()]);
}

#[tokio::test]
async fn snapshots_survive_restart_and_install_elsewhere() {
    let leader_dir = tempfile::tempdir().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    // Each manager has its own key: the snapshot travels in the clear
    // (over mTLS) and each side seals it with its own.
    let (sealer, follower_sealer) = (sealer(), sealer());

    let built = {
        let db = open_db(leader_dir.path());
        let mut sm = StateMachine::new(&db, Store::new(), sealer.clone()).unwrap();
        sm.apply([membership(1, 1), normal(1, 2, vec![Op::Create(config("a", "one"))])]).await.unwrap();
        sm.get_snapshot_builder().await.build_snapshot().await.unwrap()
    };

    // The leader's snapshot is still there after a restart.
    let snapshot = {
        let db = open_db(leader_dir.path());
        let mut sm = StateMachine::new(&db, Store::new(), sealer.clone()).unwrap();
        let current = sm.get_current_snapshot().await.unwrap().expect("snapshot after restart");
        assert_eq!(current.meta, built.meta);
        assert_eq!(current.snapshot.get_ref(), built.snapshot.get_ref());
        current
    };

    // A follower installs it, and has it all after its own restart.
    {
        let db = open_db(follower_dir.path());
        let store = Store::new();
        let mut sm = StateMachine::new(&db, store.clone(), follower_sealer.clone()).unwrap();
        sm.apply([normal(1, 1, vec![Op::Create(config("stale", "gone"))])]).await.unwrap();
        let mut receiving = sm.begin_receiving_snapshot().await.unwrap();
        *receiving = *snapshot.snapshot;
        sm.install_snapshot(&snapshot.meta, receiving).await.unwrap();
        assert_eq!(config_names(&store), vec!["one".to_string()]);
    }
    let db = open_db(follower_dir.path());
    let store = Store::new();
    let mut sm = StateMachine::new(&db, store.clone(), follower_sealer.clone()).unwrap();
    assert_eq!(config_names(&store), vec!["one".to_string()]);
    assert_eq!(
        sm.applied_state().await.unwrap(),
        (
            Some(log_id(1, 2)),
            StoredMembership::new(
                Some(log_id(1, 1)),
                match membership(1, 1).payload {
                    EntryPayload::Membership(m) => m,
                    _ => unreachable!(),
                }
            )
        )
    );
    let current = sm.get_current_snapshot().await.unwrap().expect("installed snapshot after restart");
    assert_eq!(current.meta, snapshot.meta);
}

#[tokio::test]
async fn a_snapshot_newer_than_the_state_machine_wins_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let sealer = sealer();
    {
        let db = open_db(dir.path());
        let mut sm = StateMachine::new(&db, Store::new(), sealer.clone()).unwrap();
        sm.apply([normal(1, 1, vec![Op::Create(config("a", "one"))])]).await.unwrap();
        sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
        // As if a crash during a snapshot install lost the state machine's
        // own rewrite: its tree says nothing was applied.
        let tree = db.open_tree("sm").unwrap();
        tree.clear().unwrap();
        db.flush().unwrap();
    }
    let db = open_db(dir.path());
    let store = Store::new();
    let mut sm = StateMachine::new(&db, store.clone(), sealer.clone()).unwrap();
    assert_eq!(config_names(&store), vec!["one".to_string()]);
    assert_eq!(sm.applied_state().await.unwrap().0, Some(log_id(1, 1)));
    drop(sm);
    drop(db);
    // ... and the state machine tree was brought up to date too.
    let db = open_db(dir.path());
    let tree = db.open_tree("sm").unwrap();
    assert!(tree.scan_prefix("obj/").next().is_some());
}

/// Transactions batched into one entry apply in order and independently:
/// a failing one changes nothing and does not undo its neighbours.
#[tokio::test]
async fn batched_transactions_apply_independently() {
    let dir = tempfile::tempdir().unwrap();
    let sealer = sealer();
    let db = open_db(dir.path());
    let store = Store::new();
    let mut sm = StateMachine::new(&db, store.clone(), sealer.clone()).unwrap();
    let batch = shoal_manager::raft::Proposal {
        txns: vec![
            Transaction { ops: vec![Op::Create(config("a", "one"))], timestamp_ms: 1_000 },
            // Name taken by the transaction before it in the same entry.
            Transaction { ops: vec![Op::Create(config("b", "one"))], timestamp_ms: 1_000 },
            Transaction { ops: vec![Op::Create(config("c", "three"))], timestamp_ms: 1_000 },
        ],
    };
    let replies = sm
        .apply([membership(1, 1), Entry { log_id: log_id(1, 2), payload: EntryPayload::Normal(batch) }])
        .await
        .unwrap();
    let outcomes = &replies[1];
    assert_eq!(outcomes.len(), 3);
    assert!(outcomes[0].is_ok() && outcomes[1].is_err() && outcomes[2].is_ok(), "{outcomes:?}");
    assert_eq!(config_names(&store), vec!["one".to_string(), "three".to_string()]);
}
