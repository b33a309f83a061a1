//! Making what sled wrote survive a power cut, not only a crash of the
//! manager, before anything is acknowledged.
//!
//! sled 0.34's `flush` ends with `sync_file_range` on its data file, which
//! flushes neither the disk's cache nor the file's metadata, and it never
//! syncs the blob files (`blobs/<lsn>`) it writes for anything logged over
//! about 128 KiB: a snapshot, a log entry batching large secrets, a tree
//! node that grew. After a power cut a blob that lost its bytes makes sled
//! end its log at that point on recovery, taking every later write with
//! it, acknowledged or not. So a durable flush here is: sled's flush, then
//! an fsync of every blob file not synced before and of their directory,
//! then of the data file. Blobs first: the log entries that point at them
//! must never be on disk without them.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// Shared by the log store (votes, purge points) and the state machine
/// (snapshots); the log's entries are in [`super::wal`], synced there. Until [`DurableFlush::attach`] it only flushes sled (unit
/// tests that do not care about power cuts).
#[derive(Clone, Default)]
pub struct DurableFlush {
    files: Arc<OnceLock<SledFiles>>,
}

struct SledFiles {
    blobs: PathBuf,
    data: File,
    /// Blob files already fsynced, with their length then. sled writes a
    /// blob in several calls and never changes it after, but a flush may
    /// list the directory while another thread is half-way through one:
    /// a file that grew since is synced again.
    synced_blobs: Mutex<HashMap<OsString, u64>>,
}

impl DurableFlush {
    /// Learns where sled keeps its files (`sled_dir`, which it does not
    /// say itself), and makes its directory entries durable once: the
    /// ones created before this process started included.
    pub fn attach(&self, sled_dir: &Path) -> std::io::Result<()> {
        let data = File::open(sled_dir.join("db"))?;
        for file in ["db", "conf"] {
            if let Ok(file) = File::open(sled_dir.join(file)) {
                file.sync_all()?;
            }
        }
        File::open(sled_dir)?.sync_all()?;
        // The directory's own entry, when it was just made.
        if let Some(parent) = sled_dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            File::open(parent)?.sync_all()?;
        }
        let _ = self.files.set(SledFiles {
            blobs: sled_dir.join("blobs"),
            data,
            synced_blobs: Mutex::new(HashMap::new()),
        });
        Ok(())
    }

    /// sled's flush, then fsyncs of what it left unsynced (see the module).
    pub fn flush(&self, db: &sled::Db) -> std::io::Result<()> {
        db.flush().map_err(std::io::Error::other)?;
        let Some(files) = self.files.get() else { return Ok(()) };
        files.sync_new_blobs()?;
        files.data.sync_data()
    }
}

impl SledFiles {
    fn sync_new_blobs(&self) -> std::io::Result<()> {
        let entries = match std::fs::read_dir(&self.blobs) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut synced = self.synced_blobs.lock().unwrap_or_else(|p| p.into_inner());
        let mut present = HashMap::new();
        let mut any_new = false;
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            // The length before the sync: whatever is written after it is
            // the next flush's to sync. sled removes blobs its log moved
            // past; one gone meanwhile needs nothing.
            let length = match entry.metadata() {
                Ok(metadata) => metadata.len(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if synced.get(&name) != Some(&length) {
                match File::open(entry.path()) {
                    Ok(file) => file.sync_all()?,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                }
                any_new |= !synced.contains_key(&name);
            }
            present.insert(name, length);
        }
        if any_new {
            // The new names themselves, so the files are found after a cut.
            File::open(&self.blobs)?.sync_all()?;
        }
        // Forget blobs sled has deleted, so the set stays as small as the directory.
        *synced = present;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_blob_files_are_synced_once_and_deleted_ones_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let durable = DurableFlush::default();
        durable.attach(dir.path()).unwrap();
        // Over sled's quarter segment: written to a blob file.
        db.insert(b"big", vec![7u8; 300 * 1024]).unwrap();
        durable.flush(&db).unwrap();
        let files = durable.files.get().unwrap();
        let synced = files.synced_blobs.lock().unwrap().clone();
        assert!(!synced.is_empty(), "the large value went to a blob file, which was synced");
        db.insert(b"small", b"x".to_vec()).unwrap();
        durable.flush(&db).unwrap();
        assert_eq!(*files.synced_blobs.lock().unwrap(), synced, "nothing new to sync");
    }

    #[test]
    fn without_attach_it_only_flushes_sled() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        db.insert(b"k", b"v".to_vec()).unwrap();
        DurableFlush::default().flush(&db).unwrap();
    }
}
