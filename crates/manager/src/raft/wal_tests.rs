use super::*;
use crate::raft::sealed::Dek;

fn sealer() -> Sealer {
    Sealer::new(&Dek::generate())
}

fn entries(range: std::ops::RangeInclusive<u64>) -> Vec<(u64, Vec<u8>)> {
    range.map(|i| (i, format!("entry {i}").into_bytes())).collect()
}

fn read_all(wal: &Wal) -> Vec<(u64, Vec<u8>)> {
    let (Some(first), Some(last)) = (wal.first_index(), wal.last_index()) else { return Vec::new() };
    (first..=last).map(|i| (i, wal.read(i).unwrap().unwrap())).collect()
}

fn segment_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    names
}

#[test]
fn entries_come_back_after_reopening_and_are_sealed_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let sealer = sealer();
    {
        let mut wal = Wal::open(dir.path(), sealer.clone()).unwrap();
        wal.append(&entries(1..=3)).unwrap();
        wal.append(&entries(4..=5)).unwrap();
        wal.sync_handle().sync().unwrap();
    }
    let wal = Wal::open(dir.path(), sealer).unwrap();
    assert_eq!(read_all(&wal), entries(1..=5));
    let raw = std::fs::read(dir.path().join(format!("{:020}.seg", 1))).unwrap();
    assert!(!raw.windows(7).any(|w| w == b"entry 3"), "an entry is in clear on disk");
}

#[test]
fn an_append_past_a_gap_starts_a_segment_and_one_before_the_end_replaces_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    let sealer = sealer();
    let mut wal = Wal::open(dir.path(), sealer.clone()).unwrap();
    wal.append(&entries(1..=2)).unwrap();
    wal.append(&entries(5..=6)).unwrap();
    assert_eq!(wal.read(3).unwrap(), None);
    assert_eq!(segment_files(dir.path()).len(), 2);
    wal.append(&[(6, b"replaced".to_vec())]).unwrap();
    drop(wal);
    let wal = Wal::open(dir.path(), sealer.clone()).unwrap();
    assert_eq!(wal.read(2).unwrap().unwrap(), b"entry 2");
    assert_eq!(wal.read(5).unwrap().unwrap(), b"entry 5");
    assert_eq!(wal.read(6).unwrap().unwrap(), b"replaced");
    assert_eq!(wal.last_index(), Some(6));
    let other = tempfile::tempdir().unwrap();
    assert!(Wal::open(other.path(), sealer).unwrap().append(&[(1, vec![]), (3, vec![])]).is_err());
}

#[test]
fn a_torn_tail_is_cut_and_the_log_goes_on_from_there() {
    let dir = tempfile::tempdir().unwrap();
    let sealer = sealer();
    let path = dir.path().join(format!("{:020}.seg", 1));
    {
        let mut wal = Wal::open(dir.path(), sealer.clone()).unwrap();
        wal.append(&entries(1..=4)).unwrap();
    }
    let whole = std::fs::metadata(&path).unwrap().len();
    // A crash in the middle of the last record's write.
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(whole - 5).unwrap();
    drop(file);
    let mut wal = Wal::open(dir.path(), sealer.clone()).unwrap();
    assert_eq!(read_all(&wal), entries(1..=3));
    wal.append(&entries(4..=6)).unwrap();
    drop(wal);
    // A flipped byte in a record is torn too.
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let wal = Wal::open(dir.path(), sealer).unwrap();
    assert_eq!(read_all(&wal), entries(1..=5));
}

#[test]
fn damage_before_the_tail_is_an_error_not_a_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let sealer = sealer();
    let path = dir.path().join(format!("{:020}.seg", 1));
    {
        let mut wal = Wal::open(dir.path(), sealer.clone()).unwrap();
        wal.append(&entries(1..=3)).unwrap();
    }
    let mut bytes = std::fs::read(&path).unwrap();
    // A byte of the first record's payload: there are records after it.
    bytes[HEADER_BYTES as usize + 2] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let err = Wal::open(dir.path(), sealer).err().expect("a damaged record must not be dropped silently");
    assert!(err.to_string().contains("damaged") && err.to_string().contains("entry 1"), "{err}");
}

#[test]
fn truncation_and_purges_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let sealer = sealer();
    // Segments of about two records each.
    let mut wal = Wal::open_with(dir.path(), sealer.clone(), 100).unwrap();
    for i in 1..=9 {
        wal.append(&entries(i..=i)).unwrap();
    }
    assert!(segment_files(dir.path()).len() >= 4, "{:?}", segment_files(dir.path()));
    wal.truncate_from(6).unwrap();
    assert_eq!(wal.last_index(), Some(5));
    wal.append(&entries(6..=7)).unwrap();
    wal.purge_up_to(4).unwrap();
    assert_eq!(wal.first_index(), Some(5));
    assert!(!segment_files(dir.path()).contains(&format!("{:020}.seg", 1)), "a purged segment is gone");
    drop(wal);
    let wal = Wal::open_with(dir.path(), sealer, 100).unwrap();
    // A purge keeps a segment that still holds later entries: its earlier
    // ones read back, and the log store filters them by its purge point.
    assert!(wal.first_index().is_some_and(|first| first <= 5));
    assert_eq!(wal.last_index(), Some(7));
    for i in 5..=7 {
        assert_eq!(wal.read(i).unwrap().unwrap(), format!("entry {i}").into_bytes());
    }
}

#[test]
fn truncating_everything_then_appending_starts_clean() {
    let dir = tempfile::tempdir().unwrap();
    let sealer = sealer();
    let mut wal = Wal::open(dir.path(), sealer.clone()).unwrap();
    wal.append(&entries(1..=3)).unwrap();
    wal.truncate_from(1).unwrap();
    assert!(wal.is_empty());
    wal.append(&entries(1..=2)).unwrap();
    drop(wal);
    assert_eq!(read_all(&Wal::open(dir.path(), sealer).unwrap()), entries(1..=2));
}

#[test]
fn a_torn_segment_drops_the_segments_written_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let sealer = sealer();
    {
        let mut wal = Wal::open_with(dir.path(), sealer.clone(), 100).unwrap();
        for i in 1..=6 {
            wal.append(&entries(i..=i)).unwrap();
        }
    }
    let files = segment_files(dir.path());
    assert!(files.len() >= 3, "{files:?}");
    // The power went while the first segment's last record was on its way
    // (later segments reached the disk first).
    let first = dir.path().join(&files[0]);
    let length = std::fs::metadata(&first).unwrap().len();
    OpenOptions::new().write(true).open(&first).unwrap().set_len(length - 4).unwrap();
    let wal = Wal::open_with(dir.path(), sealer, 100).unwrap();
    assert_eq!(segment_files(dir.path()), vec![files[0].clone()]);
    assert_eq!(wal.first_index(), Some(1));
    assert!(wal.last_index().is_some_and(|last| last < 3));
}
