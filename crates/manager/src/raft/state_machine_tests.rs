//! Tests of the state machine's persisted layout (journal, base image, legacy layout).

use openraft::{CommittedLeaderId, EntryPayload};

use super::*;
use crate::raft::sealed::Dek;
use crate::store::Transaction;

/// Each test encrypts with its own key, as a manager does.
fn sealer() -> Sealer {
    Sealer::new(&Dek::generate())
}

fn log_id(index: u64) -> LogId<NodeId> {
    LogId::new(CommittedLeaderId::new(1, 1), index)
}

use crate::store::tests::config;

fn entry(index: u64, ops: Vec<Op>) -> Entry<TypeConfig> {
    Entry {
        log_id: log_id(index),
        payload: EntryPayload::Normal(Transaction { ops, timestamp_ms: 1_000 }.into()),
    }
}

fn names(store: &Store) -> Vec<String> {
    let mut names: Vec<String> =
        store.view(|s| s.list(Kind::Config).filter_map(|o| o.name().map(str::to_string)).collect());
    names.sort();
    names
}

/// Opens the database at `path`. A reopen right after the previous handle
/// was dropped may find sled's background flusher still holding the file
/// lock for a moment (longer on a loaded machine): wait for it, bounded.
fn open_db(path: &std::path::Path) -> sled::Db {
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

fn keys_with_prefix(db: &sled::Db, prefix: &[u8]) -> usize {
    db.open_tree(SM_TREE).unwrap().scan_prefix(prefix).count()
}

#[tokio::test]
async fn the_journal_folds_into_the_base_image_and_both_reload() {
    let dir = tempfile::tempdir().unwrap();
    let sealer = sealer();
    {
        let db = open_db(dir.path());
        let mut sm = StateMachine::new(&db, Store::new(), sealer.clone()).unwrap();
        sm.min_journal_bytes_to_fold = 1;
        sm.apply([entry(1, vec![Op::Create(config("a", "one"))])]).await.unwrap();
        // Folded at once (the journal outgrew the empty base image).
        assert_eq!(keys_with_prefix(&db, JOURNAL_PREFIX), 0);
        sm.min_journal_bytes_to_fold = u64::MAX;
        sm.apply([entry(2, vec![Op::Create(config("b", "two"))])]).await.unwrap();
        sm.apply([entry(3, vec![Op::Delete { kind: Kind::Config, id: "a".into() }])]).await.unwrap();
        assert_eq!(keys_with_prefix(&db, JOURNAL_PREFIX), 2);
        db.flush().unwrap();
    }
    let db = open_db(dir.path());
    let store = Store::new();
    let mut sm = StateMachine::new(&db, store.clone(), sealer.clone()).unwrap();
    assert_eq!(names(&store), vec!["two".to_string()]);
    assert_eq!(sm.applied_state().await.unwrap().0, Some(log_id(3)));
    // The next fold keeps exactly the current objects.
    sm.min_journal_bytes_to_fold = 1;
    sm.apply([entry(4, vec![Op::Create(config("c", "three"))])]).await.unwrap();
    assert_eq!(keys_with_prefix(&db, JOURNAL_PREFIX), 0);
    drop(sm);
    let store = Store::new();
    let mut sm = StateMachine::new(&db, store.clone(), sealer.clone()).unwrap();
    assert_eq!(names(&store), vec!["three".to_string(), "two".to_string()]);
    assert_eq!(sm.applied_state().await.unwrap().0, Some(log_id(4)));
}

#[tokio::test]
async fn a_large_base_image_is_chunked_and_reloads_whole() {
    let dir = tempfile::tempdir().unwrap();
    let sealer = sealer();
    let db = open_db(dir.path());
    let mut sm = StateMachine::new(&db, Store::new(), sealer.clone()).unwrap();
    let ops = (0..2_000).map(|i| Op::Create(config(&format!("id{i:05}"), &format!("name{i:05}")))).collect();
    sm.min_journal_bytes_to_fold = 1;
    sm.apply([entry(1, ops)]).await.unwrap();
    let chunks = keys_with_prefix(&db, BASE_PREFIX.as_bytes());
    assert!(chunks > 1, "{chunks} chunk(s)");
    drop(sm);
    let store = Store::new();
    let _sm = StateMachine::new(&db, store.clone(), sealer.clone()).unwrap();
    assert_eq!(names(&store).len(), 2_000);
}

#[tokio::test]
async fn a_tree_in_the_one_key_per_object_layout_is_read_and_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let sealer = sealer();
    let db = open_db(dir.path());
    {
        let tree = db.open_tree(SM_TREE).unwrap();
        let mut object = config("a", "one");
        object.meta_mut().version = 7;
        // As the at-rest migration leaves a plaintext tree: each value sealed
        // under its own key.
        let insert = |key: &[u8], value: Vec<u8>| {
            tree.insert(key, sealer.seal(SM_TREE, key, &value).unwrap()).unwrap();
        };
        insert(b"obj/config/a", bincode::serialize(&object).unwrap());
        insert(LEGACY_LAST_APPLIED_KEY, bincode::serialize(&Some(log_id(7))).unwrap());
        insert(LEGACY_LAST_MEMBERSHIP_KEY, bincode::serialize(&Membership::default()).unwrap());
    }
    let store = Store::new();
    let mut sm = StateMachine::new(&db, store.clone(), sealer.clone()).unwrap();
    assert_eq!(names(&store), vec!["one".to_string()]);
    assert_eq!(sm.applied_state().await.unwrap().0, Some(log_id(7)));
    let tree = db.open_tree(SM_TREE).unwrap();
    assert!(tree.get("obj/config/a").unwrap().is_none());
    assert!(tree.get(LEGACY_LAST_APPLIED_KEY).unwrap().is_none());
    assert!(tree.get(base_key(Kind::Config, 0)).unwrap().is_some());

    sm.apply([entry(8, vec![Op::Create(config("b", "two"))])]).await.unwrap();
    drop(sm);
    let store = Store::new();
    let mut sm = StateMachine::new(&db, store.clone(), sealer.clone()).unwrap();
    assert_eq!(names(&store), vec!["one".to_string(), "two".to_string()]);
    let a = store.view(|s| s.get(Kind::Config, "a").cloned()).unwrap();
    assert_eq!(a.meta().version, 7);
    assert_eq!(sm.applied_state().await.unwrap().0, Some(log_id(8)));
}
