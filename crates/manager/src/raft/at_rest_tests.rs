//! The Raft store encrypted at rest, through the real stores on real sled
//! files: nothing readable on disk, the migration of a plaintext database
//! (also when a crash cut it short), and refusals of the wrong key.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, CommittedLeaderId, Entry, EntryPayload, LogId, Membership, RaftLogReader,
    RaftSnapshotBuilder, SnapshotMeta, StoredMembership, Vote,
};

use super::*;
use crate::raft::dek_file::DekFile;
use crate::raft::{open_storage, NodeId, TypeConfig};
use crate::store::{Config, Kind, Meta, Object, Op, Store, Transaction};

/// What a secret-looking config holds; must never appear in an encrypted
/// manager's files.
const NEEDLE: &[u8] = b"zq-distinctive-config-value-7f3a";

struct Dirs {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    raft: PathBuf,
    dek: PathBuf,
}

impl Dirs {
    /// As the daemon lays them out: `manager/raft` and `certs/raft-dek`.
    fn new() -> Dirs {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        Dirs {
            raft: root.join("manager/raft"),
            dek: root.join("certs/raft-dek"),
            root,
            _tmp: tmp,
        }
    }

    fn encrypted(&self) -> AtRest {
        AtRest::Encrypted {
            dek_file: self.dek.clone(),
            unlock_key: None,
        }
    }
}

fn log_id(index: u64) -> LogId<NodeId> {
    LogId::new(CommittedLeaderId::new(1, 1), index)
}

fn secret_config(n: u32) -> Object {
    Object::Config(Config {
        meta: Meta {
            id: format!("c{n}"),
            ..Default::default()
        },
        name: format!("app-{n}"),
        labels: BTreeMap::from([(
            "note".to_string(),
            String::from_utf8_lossy(NEEDLE).into_owned(),
        )]),
        data: NEEDLE.repeat(2),
    })
}

fn normal(index: u64, ops: Vec<Op>) -> Entry<TypeConfig> {
    Entry {
        log_id: log_id(index),
        payload: EntryPayload::Normal(
            Transaction {
                ops,
                timestamp_ms: 1_000,
            }
            .into(),
        ),
    }
}

fn entries() -> Vec<Entry<TypeConfig>> {
    let nodes = BTreeMap::from([(
        1,
        BasicNode {
            addr: "127.0.0.1:1".into(),
        },
    )]);
    vec![
        Entry {
            log_id: log_id(1),
            payload: EntryPayload::Membership(Membership::new(vec![BTreeSet::from([1])], nodes)),
        },
        normal(
            2,
            vec![Op::Create(secret_config(0)), Op::Create(secret_config(1))],
        ),
        normal(3, vec![Op::Create(secret_config(2))]),
        Entry {
            log_id: log_id(4),
            payload: EntryPayload::Blank,
        },
        normal(
            5,
            vec![Op::Delete {
                kind: Kind::Config,
                id: "c1".into(),
            }],
        ),
    ]
}

/// Writes every kind of value the stores keep: log entries, vote,
/// committed and purged ids, the journal, a snapshot; returns the snapshot.
async fn write_workload(raft_dir: &Path, at_rest: &AtRest) -> Snapshot<TypeConfig> {
    let (db, sealer) = open_database(raft_dir, at_rest).unwrap();
    let (mut log, mut sm) = open_storage(&db, raft_dir, Store::new(), sealer).unwrap();
    log.blocking_append(entries()).await.unwrap();
    log.save_vote(&Vote::new_committed(1, 1)).await.unwrap();
    log.save_committed(Some(log_id(5))).await.unwrap();
    sm.apply(entries()).await.unwrap();
    let snapshot = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    log.purge(log_id(2)).await.unwrap();
    let more = vec![normal(6, vec![Op::Create(secret_config(3))])];
    log.blocking_append(more.clone()).await.unwrap();
    sm.apply(more).await.unwrap();
    db.flush().unwrap();
    snapshot
}

/// Installs `snapshot` as a follower would: the state machine's base image.
async fn install(raft_dir: &Path, at_rest: &AtRest, snapshot: &Snapshot<TypeConfig>) {
    let (db, sealer) = open_database(raft_dir, at_rest).unwrap();
    let (_, mut sm) = open_storage(&db, raft_dir, Store::new(), sealer).unwrap();
    let mut receiving = sm.begin_receiving_snapshot().await.unwrap();
    *receiving = (*snapshot.snapshot).clone();
    sm.install_snapshot(&snapshot.meta, receiving)
        .await
        .unwrap();
    db.flush().unwrap();
}

/// Everything a restarted manager reads back from its Raft storage.
#[derive(Debug, PartialEq)]
struct Observed {
    entries: Vec<Entry<TypeConfig>>,
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
    last_purged: Option<LogId<NodeId>>,
    last_log: Option<LogId<NodeId>>,
    applied: (Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>),
    objects: Vec<Object>,
    snapshot: Option<(SnapshotMeta<NodeId, BasicNode>, Vec<u8>)>,
}

async fn observe(raft_dir: &Path, at_rest: &AtRest) -> Result<Observed, String> {
    let (db, sealer) = open_database(raft_dir, at_rest).map_err(|e| e.to_string())?;
    let store = Store::new();
    let (mut log, mut sm) =
        open_storage(&db, raft_dir, store.clone(), sealer).map_err(|e| e.to_string())?;
    let state = log.get_log_state().await.map_err(|e| e.to_string())?;
    let snapshot = sm.get_current_snapshot().await.map_err(|e| e.to_string())?;
    Ok(Observed {
        entries: log
            .try_get_log_entries(0..100)
            .await
            .map_err(|e| e.to_string())?,
        vote: log.read_vote().await.map_err(|e| e.to_string())?,
        committed: log.read_committed().await.map_err(|e| e.to_string())?,
        last_purged: state.last_purged_log_id,
        last_log: state.last_log_id,
        applied: sm.applied_state().await.map_err(|e| e.to_string())?,
        objects: store.snapshot().all_objects().cloned().collect(),
        snapshot: snapshot.map(|s| (s.meta, s.snapshot.into_inner())),
    })
}

/// Rewrites the write-ahead log in `wal_dir` with entry `from`'s sealed
/// bytes (and a matching checksum) in the place of entry `to`.
fn copy_wal_record(wal_dir: &Path, from: u64, to: u64) {
    let segment = std::fs::read_dir(wal_dir).unwrap().next().unwrap().unwrap().path();
    let bytes = std::fs::read(&segment).unwrap();
    let mut records = Vec::new();
    let mut offset = 0;
    while offset < bytes.len() {
        let length = u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap()) as usize;
        let index = u64::from_le_bytes(bytes[offset + 4..offset + 12].try_into().unwrap());
        records.push((index, bytes[offset + 16..offset + 16 + length].to_vec()));
        offset += 16 + length;
    }
    let payload = records.iter().find(|(i, _)| *i == from).unwrap().1.clone();
    let mut out = Vec::new();
    for (index, sealed) in records {
        let sealed = if index == to { payload.clone() } else { sealed };
        out.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
        out.extend_from_slice(&index.to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&sealed).to_le_bytes());
        out.extend_from_slice(&sealed);
    }
    std::fs::write(&segment, out).unwrap();
}

/// Files under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files_containing(&path, needle));
        } else if std::fs::read(&path)
            .unwrap()
            .windows(needle.len())
            .any(|w| w == needle)
        {
            found.push(path);
        }
    }
    found
}

fn leftover_migration_dirs(raft_dir: &Path) -> Vec<PathBuf> {
    let (a, b, c) = migration_dirs(raft_dir);
    [a, b, c].into_iter().filter(|d| d.exists()).collect()
}

#[tokio::test]
async fn no_stored_value_shows_its_plaintext_on_disk() {
    // Control: the same writes without encryption leave the value in the
    // files, so the search below can find it.
    let plain = Dirs::new();
    let snapshot = write_workload(&plain.raft, &AtRest::PlaintextForBenchmark).await;
    install(
        &plain.root.join("follower/raft"),
        &AtRest::PlaintextForBenchmark,
        &snapshot,
    )
    .await;
    assert!(!files_containing(&plain.root.join("manager"), NEEDLE).is_empty());
    assert!(!files_containing(&plain.root.join("follower"), NEEDLE).is_empty());

    let dirs = Dirs::new();
    let snapshot = write_workload(&dirs.raft, &dirs.encrypted()).await;
    // A follower's base image comes from an installed snapshot.
    install(
        &dirs.root.join("follower/raft"),
        &dirs.encrypted(),
        &snapshot,
    )
    .await;
    assert_eq!(files_containing(&dirs.root, NEEDLE), Vec::<PathBuf>::new());
    // ... while every value reads back whole.
    let observed = observe(&dirs.raft, &dirs.encrypted()).await.unwrap();
    assert_eq!(observed.objects.len(), 3);
    assert_eq!(observed.entries.len(), 4);
    let follower = observe(&dirs.root.join("follower/raft"), &dirs.encrypted())
        .await
        .unwrap();
    assert_eq!(follower.objects.len(), 2);
    assert_eq!(follower.applied.0, Some(log_id(5)));
}

#[tokio::test]
async fn a_plaintext_database_is_migrated_and_reads_the_same() {
    let dirs = Dirs::new();
    write_workload(&dirs.raft, &AtRest::PlaintextForBenchmark).await;
    {
        // The layout managers wrote before encryption: bare bincode values.
        let db = open_sled(&dirs.raft).unwrap();
        let vote = db
            .open_tree("raft_meta")
            .unwrap()
            .get("vote")
            .unwrap()
            .unwrap();
        assert_eq!(
            vote.as_ref(),
            bincode::serialize(&Vote::<NodeId>::new_committed(1, 1)).unwrap()
        );
        assert!(db.open_tree(AT_REST_TREE).unwrap().is_empty());
    }
    let before = observe(&dirs.raft, &AtRest::PlaintextForBenchmark)
        .await
        .unwrap();
    assert!(!dirs.dek.exists());

    let after = observe(&dirs.raft, &dirs.encrypted()).await.unwrap();
    assert_eq!(after, before);
    assert!(dirs.dek.exists());
    assert_eq!(files_containing(&dirs.root, NEEDLE), Vec::<PathBuf>::new());
    assert_eq!(leftover_migration_dirs(&dirs.raft), Vec::<PathBuf>::new());
    // The next start opens it as it is, and it is no longer readable without the key.
    assert_eq!(
        observe(&dirs.raft, &dirs.encrypted()).await.unwrap(),
        before
    );
    let err = observe(&dirs.raft, &AtRest::PlaintextForBenchmark)
        .await
        .unwrap_err();
    assert!(err.contains("is encrypted"), "{err}");
}

#[tokio::test]
async fn a_migration_cut_short_is_redone_or_finished_at_the_next_start() {
    #[derive(Debug, Clone, Copy)]
    enum CrashPoint {
        /// The sealed copy was still being written.
        WhileCopying,
        /// The copy was complete, the plaintext database still in place.
        BeforeSwap,
        /// The plaintext database was set aside, the copy not yet moved in.
        MidSwap,
    }
    for crash in [
        CrashPoint::WhileCopying,
        CrashPoint::BeforeSwap,
        CrashPoint::MidSwap,
    ] {
        let dirs = Dirs::new();
        write_workload(&dirs.raft, &AtRest::PlaintextForBenchmark).await;
        let before = observe(&dirs.raft, &AtRest::PlaintextForBenchmark)
            .await
            .unwrap();
        let sealer = Sealer::new(&DekFile::new(&dirs.dek).create().unwrap());
        // As open_database does before copying.
        let db = open_sled(&dirs.raft).unwrap();
        fold_wal_into_sled(&db, &dirs.raft).unwrap();
        drop(db);
        let built = build_sealed_copy(&dirs.raft, &sealer).unwrap();
        let (building, _, plaintext) = migration_dirs(&dirs.raft);
        match crash {
            CrashPoint::WhileCopying => {
                std::fs::rename(&built, &building).unwrap();
                // A half-written copy: one tree cleared.
                let db = open_sled(&building).unwrap();
                db.open_tree("raft_log").unwrap().clear().unwrap();
                db.flush().unwrap();
            }
            CrashPoint::BeforeSwap => {}
            CrashPoint::MidSwap => std::fs::rename(&dirs.raft, &plaintext).unwrap(),
        }
        let after = observe(&dirs.raft, &dirs.encrypted()).await.unwrap();
        assert_eq!(after, before, "crash {crash:?}");
        assert_eq!(
            leftover_migration_dirs(&dirs.raft),
            Vec::<PathBuf>::new(),
            "crash {crash:?}"
        );
        assert_eq!(
            files_containing(&dirs.root, NEEDLE),
            Vec::<PathBuf>::new(),
            "crash {crash:?}"
        );
    }
}

#[tokio::test]
async fn a_wrong_or_missing_key_is_refused_naming_the_key_file() {
    let dirs = Dirs::new();
    write_workload(&dirs.raft, &dirs.encrypted()).await;
    let right_key = std::fs::read(&dirs.dek).unwrap();

    DekFile::new(&dirs.dek).create().unwrap();
    let err = observe(&dirs.raft, &dirs.encrypted()).await.unwrap_err();
    assert!(
        err.contains("different key") && err.contains(&dirs.dek.display().to_string()),
        "{err}"
    );

    std::fs::remove_file(&dirs.dek).unwrap();
    let err = observe(&dirs.raft, &dirs.encrypted()).await.unwrap_err();
    assert!(
        err.contains("is missing") && err.contains(&dirs.dek.display().to_string()),
        "{err}"
    );
    // Refusing created no key: a later start with the restored file works.
    assert!(!dirs.dek.exists());

    std::fs::write(&dirs.dek, right_key).unwrap();
    assert_eq!(
        observe(&dirs.raft, &dirs.encrypted())
            .await
            .unwrap()
            .objects
            .len(),
        3
    );
}

#[tokio::test]
async fn a_value_altered_or_moved_on_disk_is_refused() {
    let dirs = Dirs::new();
    write_workload(&dirs.raft, &dirs.encrypted()).await;
    // Entry 3 copied over entry 4 in the write-ahead log, checksum and all:
    // it decrypts, but not at the other's index.
    copy_wal_record(&dirs.raft.join("wal"), 3, 4);
    let err = observe(&dirs.raft, &dirs.encrypted()).await.unwrap_err();
    assert!(err.contains("does not decrypt"), "{err}");

    let dirs = Dirs::new();
    write_workload(&dirs.raft, &dirs.encrypted()).await;
    {
        let db = open_sled(&dirs.raft).unwrap();
        let meta = db.open_tree("raft_meta").unwrap();
        let mut vote = meta.get("vote").unwrap().unwrap().to_vec();
        let last = vote.len() - 1;
        vote[last] ^= 1;
        meta.insert("vote", vote).unwrap();
        db.flush().unwrap();
    }
    let err = observe(&dirs.raft, &dirs.encrypted()).await.unwrap_err();
    assert!(
        err.contains("raft_meta/vote") && err.contains("does not decrypt"),
        "{err}"
    );
}
