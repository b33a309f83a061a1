//! What the Raft store acknowledges survives a power cut, not only a crash
//! of the manager.
//!
//! Method (needs root and loop devices; skipped otherwise):
//! - A sparse 128 MiB image is attached to a loop device, formatted ext4 and
//!   mounted with `commit=3600,noauto_da_alloc`: jbd2 then commits only when
//!   something fsyncs, and nothing but fsync makes a new file's blocks
//!   (their allocation) durable. Buffered data that the page cache writes
//!   back meanwhile lands in blocks the committed metadata does not point at.
//! - The writer is a separate process (this test binary run again, as the
//!   same test, with `SHOAL_POWER_CUT_WRITER` set). It opens the storage
//!   there with `open_storage`, saves votes, appends entries (every third
//!   one over 300 KiB, so sled writes blob files), applies them and builds
//!   a snapshot, and prints `ACK <index>` once an append's flush returned.
//! - After 40 acks the test kills it with SIGKILL, waits for the loop
//!   device to have no I/O in flight, and copies the backing image without
//!   any sync: the copy holds exactly what reached the "device". Mounting
//!   the copy replays the journal, as a reboot would; the storage opened
//!   there must hold every acknowledged entry, the last vote and snapshot.
//! - A negative control runs the same writer with sled flushed as before
//!   `DurableFlush` (sled's flush plus an fsync of its data file, blobs
//!   never synced) and expects the acknowledged snapshot, which is always a
//!   blob, to be lost: it shows the method sees the fault the fix is for.
//!
//! Limits: the drive's volatile write cache is not modelled (whatever the
//! loop device received survives). A missing directory fsync is not seen
//! either: on ext4 the fsync of a new file commits its directory entry, and
//! any fsync commits all pending metadata. Writeback that starts while the
//! image is being copied could tear the copy; after the writer is killed
//! nothing is expected to start within the test's few seconds.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::{
    BasicNode, CommittedLeaderId, Entry, EntryPayload, LogId, Membership, RaftLogReader, RaftSnapshotBuilder, Vote,
};
use shoal_manager::raft::log_store::LogStore;
use shoal_manager::raft::sealed::{Dek, Sealer};
use shoal_manager::raft::state_machine::StateMachine;
use shoal_manager::raft::{open_storage, NodeId, TypeConfig};
use shoal_manager::store::{Config, Kind, Meta, Object, Op, Store, Transaction};

/// Set in the writer process: the directory of its sled database.
const WRITER_ENV: &str = "SHOAL_POWER_CUT_WRITER";
const IMAGE_BYTES: u64 = 128 * 1024 * 1024;
/// Acks read before the power is cut.
const ACKS_BEFORE_CUT: usize = 40;
/// The writer stops there if it is not killed first (it always is).
const MAX_ENTRIES: u64 = 200;
const LARGE_BYTES: usize = 400 * 1024;
const SNAPSHOT_AT: u64 = 20;
const SECOND_VOTE_AT: u64 = 30;
const DEADLINE: Duration = Duration::from_secs(20);

#[test]
fn acknowledged_writes_survive_a_power_cut() {
    const NAME: &str = "acknowledged_writes_survive_a_power_cut";
    if let Some(dir) = std::env::var_os(WRITER_ENV) {
        return writer(Path::new(&dir), Flush::Durable);
    }
    let Some(cut) = power_cut(NAME) else { return };
    let found = recover(&cut.raft_dir).unwrap_or_else(|e| panic!("the storage does not open after the cut: {e}"));
    println!(
        "acked {} entries (last {}), vote term {:?}, snapshot at {:?}; blob files on the copy: {:?}",
        cut.acked.len(),
        cut.acked.iter().max().unwrap(),
        cut.vote_term,
        cut.snapshot_at,
        cut.blob_sizes
    );
    assert!(!cut.blob_sizes.is_empty(), "the large entries should have gone to sled blob files");
    assert_eq!(found.missing(&cut.acked), Vec::<u64>::new(), "acknowledged entries lost or wrong after the cut");
    assert_eq!(found.vote, cut.vote_term.map(|term| Vote::new(term, 1)), "the last saved vote");
    if let Some(at) = cut.snapshot_at {
        let (index, len) = found.snapshot.expect("the built snapshot is gone");
        assert!(index >= at, "snapshot at {index}, built at {at}");
        assert!(len > LARGE_BYTES * (at as usize / 3), "snapshot holds the whole store: {len} bytes");
    }
    // Applies are not flushed themselves (the log has every entry after
    // them, and a restarted manager applies those again); what reached the
    // disk is a consistent prefix, never behind the durable snapshot.
    if let Some(at) = cut.snapshot_at {
        assert!(found.applied >= at, "state machine at {} behind the snapshot at {at}", found.applied);
    }
    assert_eq!(found.wrong_configs, Vec::<u64>::new(), "configs applied but lost or wrong");
}

/// The negative control: without syncing sled's blob files, an
/// acknowledged snapshot (always a blob: it is the whole store) does not
/// survive; the entries do (they are in the write-ahead log).
#[test]
fn without_blob_fsync_acknowledged_writes_are_lost() {
    const NAME: &str = "without_blob_fsync_acknowledged_writes_are_lost";
    if let Some(dir) = std::env::var_os(WRITER_ENV) {
        return writer(Path::new(&dir), Flush::DataFileOnly);
    }
    let Some(cut) = power_cut(NAME) else { return };
    println!("blob files on the copy (name, bytes): {:?}", cut.blob_sizes);
    match recover(&cut.raft_dir) {
        Err(e) => println!("the storage does not even open after the cut: {e}"),
        Ok(found) => {
            println!("snapshot acked at {:?}; found after the cut: {:?}", cut.snapshot_at, found.snapshot);
            assert!(cut.snapshot_at.is_some(), "the writer built no snapshot before the cut");
            let kept = found.snapshot.is_some_and(|(index, _)| Some(index) >= cut.snapshot_at);
            assert!(!kept, "expected the acknowledged snapshot lost without syncing blob files");
        }
    }
}

// ---- the writer process ----

#[derive(Clone, Copy)]
enum Flush {
    /// The store as the manager opens it: `open_storage`, `DurableFlush` attached.
    Durable,
    /// The store before `DurableFlush`: sled's flush and an fsync of its data
    /// file (and once of its directory and `conf`), blob files never synced.
    DataFileOnly,
}

/// Writes until killed, reporting on stdout what the store acknowledged.
fn writer(dir: &Path, flush: Flush) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let db = sled::Config::new().path(dir).open().expect("open sled");
        let (mut log, mut sm, data_file) = match flush {
            Flush::Durable => {
                let (log, sm) = open_storage(&db, dir, Store::new(), sealer()).expect("open storage");
                (log, sm, None)
            }
            Flush::DataFileOnly => {
                let log = LogStore::open(&db, &dir.join("wal"), sealer()).expect("log store");
                let sm = StateMachine::new(&db, Store::new(), sealer()).expect("state machine");
                for path in [dir.join("db"), dir.join("conf"), dir.to_path_buf()] {
                    File::open(path).unwrap().sync_all().unwrap();
                }
                (log, sm, Some(File::open(dir.join("db")).unwrap()))
            }
        };
        let report = |line: String| {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            writeln!(out, "{line}").unwrap();
            out.flush().unwrap();
        };
        let sync_data_file = || {
            if let Some(file) = &data_file {
                file.sync_data().unwrap();
            }
        };
        log.save_vote(&Vote::new(1, 1)).await.unwrap();
        sync_data_file();
        report("VOTE 1".into());
        for index in 1..=MAX_ENTRIES {
            // Returns once the append's flush callback was called.
            log.blocking_append([entry(index)]).await.unwrap();
            sync_data_file();
            report(format!("ACK {index}"));
            sm.apply([entry(index)]).await.unwrap();
            if index == SNAPSHOT_AT {
                sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
                sync_data_file();
                report(format!("SNAP {index}"));
            }
            if index == SECOND_VOTE_AT {
                log.save_vote(&Vote::new(2, 1)).await.unwrap();
                sync_data_file();
                report("VOTE 2".into());
            }
        }
    });
    // Only the power cut ends the writer.
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

/// The same key in the writer and after the cut.
fn sealer() -> Sealer {
    Sealer::new(&Dek::from_bytes([0x5a; 32]))
}

fn log_id(index: u64) -> LogId<NodeId> {
    LogId::new(CommittedLeaderId::new(1, 1), index)
}

/// Entry `index`, the same in the writer and the checker: a membership
/// first, then configs, every third one with a large payload.
fn entry(index: u64) -> Entry<TypeConfig> {
    let payload = if index == 1 {
        let nodes = BTreeMap::from([(1, BasicNode { addr: "127.0.0.1:1".into() })]);
        EntryPayload::Membership(Membership::new(vec![BTreeSet::from([1])], nodes))
    } else {
        EntryPayload::Normal(Transaction { ops: vec![Op::Create(config(index))], timestamp_ms: 1_000 }.into())
    };
    Entry { log_id: log_id(index), payload }
}

fn config(index: u64) -> Object {
    let len = if index.is_multiple_of(3) { LARGE_BYTES } else { 100 };
    Object::Config(Config {
        meta: Meta { id: format!("c{index}"), ..Default::default() },
        name: format!("config-{index}"),
        labels: BTreeMap::new(),
        data: (0..len).map(|i| (i as u64).wrapping_mul(31).wrapping_add(index) as u8).collect(),
    })
}

// ---- what survived ----

struct Recovered {
    entries: BTreeMap<u64, Entry<TypeConfig>>,
    vote: Option<Vote<NodeId>>,
    /// The current snapshot's last log index and size.
    snapshot: Option<(u64, usize)>,
    applied: u64,
    /// Entries up to `applied` whose config is not in the store as written.
    wrong_configs: Vec<u64>,
}

impl Recovered {
    fn missing(&self, acked: &BTreeSet<u64>) -> Vec<u64> {
        acked.iter().copied().filter(|&i| self.entries.get(&i) != Some(&entry(i))).collect()
    }
}

/// Opens the storage in `dir` as a restarted manager would and reads it all.
fn recover(dir: &Path) -> Result<Recovered, String> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let db = sled::Config::new().path(dir).open().map_err(|e| format!("sled: {e}"))?;
        let store = Store::new();
        let (mut log, mut sm) = open_storage(&db, dir, store.clone(), sealer()).map_err(|e| e.to_string())?;
        let entries = log.try_get_log_entries(0..u64::MAX).await.map_err(|e| e.to_string())?;
        let vote = log.read_vote().await.map_err(|e| e.to_string())?;
        let snapshot = sm.get_current_snapshot().await.map_err(|e| e.to_string())?;
        let snapshot = snapshot.map(|s| (s.meta.last_log_id.map_or(0, |id| id.index), s.snapshot.get_ref().len()));
        let (applied, _) = sm.applied_state().await.map_err(|e| e.to_string())?;
        let applied = applied.map_or(0, |id| id.index);
        let wrong_configs = (2..=applied)
            .filter(|&i| store.view(|s| s.get(Kind::Config, &format!("c{i}")).map(|o| o.data_eq(&config(i)))) != Some(true))
            .collect();
        Ok(Recovered {
            entries: entries.into_iter().map(|e| (e.log_id.index, e)).collect(),
            vote,
            snapshot,
            applied,
            wrong_configs,
        })
    })
}

trait DataEq {
    fn data_eq(&self, other: &Object) -> bool;
}

impl DataEq for Object {
    /// Same config name and payload (the store sets versions and times).
    fn data_eq(&self, other: &Object) -> bool {
        match (self, other) {
            (Object::Config(a), Object::Config(b)) => a.name == b.name && a.data == b.data,
            _ => false,
        }
    }
}

// ---- the power cut ----

/// What the writer acknowledged before the cut, and where the copy of the
/// disk holds its database.
struct Cut {
    acked: BTreeSet<u64>,
    vote_term: Option<u64>,
    snapshot_at: Option<u64>,
    raft_dir: PathBuf,
    blob_sizes: Vec<(String, u64)>,
    /// Unmounts and detaches everything when the test ends.
    _guard: Guard,
}

/// Runs the writer of test `test_name` on a fresh loop-mounted ext4, cuts
/// the power after [`ACKS_BEFORE_CUT`] acks and mounts a copy of the disk
/// as it was. None (after saying why) without root or loop devices.
fn power_cut(test_name: &str) -> Option<Cut> {
    if let Some(reason) = skip_reason() {
        println!("skipped: {reason}");
        return None;
    }
    let started = Instant::now();
    let mut guard = Guard { child: None, mounts: Vec::new(), loops: Vec::new(), work: tempfile::tempdir().unwrap() };
    let work = guard.work.path().to_path_buf();

    let image = work.join("disk.img");
    File::create(&image).unwrap().set_len(IMAGE_BYTES).unwrap();
    let device = guard.attach(&image);
    run("mkfs.ext4", &["-q", "-E", "lazy_itable_init=0,lazy_journal_init=0", &device]);
    let mnt = work.join("mnt");
    guard.mount(&device, &mnt, Some("commit=3600,noauto_da_alloc"));
    let raft_dir = mnt.join("raft");

    let child = Command::new(std::env::current_exe().unwrap())
        .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .env(WRITER_ENV, &raft_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the writer");
    let stdout = guard.child.insert(child).stdout.take().unwrap();
    let (lines, reported) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines.send(line).is_err() {
                break;
            }
        }
    });

    let (mut acked, mut vote_term, mut snapshot_at) = (BTreeSet::new(), None, None);
    let mut take = |line: String| {
        let mut words = line.split_whitespace();
        let (what, n) = (words.next(), words.next().and_then(|n| n.parse::<u64>().ok()));
        match (what, n) {
            (Some("ACK"), Some(n)) => drop(acked.insert(n)),
            (Some("VOTE"), Some(n)) => vote_term = Some(n),
            (Some("SNAP"), Some(n)) => snapshot_at = Some(n),
            _ => {}
        }
    };
    let deadline = started + DEADLINE;
    let mut count = 0;
    while count < ACKS_BEFORE_CUT {
        let line = reported
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|e| panic!("the writer stopped or stalled after {count} acks: {e}"));
        count += line.starts_with("ACK ") as usize;
        take(line);
    }

    // The power cut: the writer dies where it is, nothing more is synced.
    let mut child = guard.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    // What it had printed before dying was acknowledged too.
    for line in reported.iter() {
        take(line);
    }
    wait_idle(&device);
    let crash_image = work.join("crash.img");
    // Kept sparse: a plain copy writes the whole image out, which a test
    // host with little disk left (CI's, once) cannot hold.
    run("cp", &["--sparse=always", "--", &image.to_string_lossy(), &crash_image.to_string_lossy()]);

    let crash_device = guard.attach(&crash_image);
    let crash_mnt = work.join("crash");
    guard.mount(&crash_device, &crash_mnt, None);
    let raft_dir = crash_mnt.join("raft");
    let mut blob_sizes: Vec<(String, u64)> = std::fs::read_dir(raft_dir.join("blobs"))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .map(|e| (e.file_name().to_string_lossy().into_owned(), e.metadata().map_or(0, |m| m.len())))
                .collect()
        })
        .unwrap_or_default();
    blob_sizes.sort_by_key(|(name, _)| name.parse::<u64>().unwrap_or(u64::MAX));
    println!("power cut after {:?}", started.elapsed());
    Some(Cut { acked, vote_term, snapshot_at, raft_dir, blob_sizes, _guard: guard })
}

fn skip_reason() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|ids| ids.split_whitespace().nth(1));
    if euid != Some("0") {
        return Some("needs root".into());
    }
    if !Path::new("/dev/loop-control").exists() {
        return Some("needs /dev/loop-control".into());
    }
    for tool in ["losetup", "mkfs.ext4", "mount", "umount"] {
        if Command::new(tool).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
            return Some(format!("needs {tool}"));
        }
    }
    None
}

/// Waits until the loop device has no request in flight.
fn wait_idle(device: &str) {
    let name = device.trim_start_matches("/dev/");
    let inflight = format!("/sys/block/{name}/inflight");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let counts = std::fs::read_to_string(&inflight).unwrap_or_else(|e| panic!("{inflight}: {e}"));
        if counts.split_whitespace().all(|n| n == "0") {
            return;
        }
        assert!(Instant::now() < deadline, "{device} still has I/O in flight: {counts}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Everything the test set up, undone also when it fails: the writer
/// killed, file systems unmounted, loop devices detached, files removed.
struct Guard {
    child: Option<Child>,
    mounts: Vec<PathBuf>,
    loops: Vec<String>,
    /// Dropped (removed) after [`Drop::drop`] has unmounted what is in it.
    work: tempfile::TempDir,
}

impl Guard {
    fn attach(&mut self, image: &Path) -> String {
        let device = run("losetup", &["-f", "--show", image.to_str().unwrap()]);
        self.loops.push(device.clone());
        device
    }

    fn mount(&mut self, device: &str, at: &Path, options: Option<&str>) {
        std::fs::create_dir_all(at).unwrap();
        let at_str = at.to_str().unwrap();
        match options {
            Some(options) => run("mount", &["-t", "ext4", "-o", options, device, at_str]),
            None => run("mount", &["-t", "ext4", device, at_str]),
        };
        self.mounts.push(at.to_path_buf());
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for mount in self.mounts.drain(..).rev() {
            // sled's threads may hold files a moment after the last handle
            // is dropped.
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let ok = Command::new("umount").arg(&mount).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
                if ok {
                    break;
                }
                if Instant::now() >= deadline {
                    eprintln!("power_cut: {} busy, detaching it lazily", mount.display());
                    let _ = Command::new("umount").arg("-l").arg(&mount).status();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        for device in self.loops.drain(..).rev() {
            if !Command::new("losetup").args(["-d", &device]).status().is_ok_and(|s| s.success()) {
                eprintln!("power_cut: could not detach {device}");
            }
        }
    }
}
