//! Opening a manager's Raft database encrypted at rest, and bringing a
//! database from before encryption into the encrypted layout.
//!
//! An encrypted database carries a layout marker in its `at_rest` tree: a
//! known value sealed with the data key, so a wrong or replaced key file is
//! refused at start with one sentence, before Raft reads anything. A
//! database with data but no marker is in the plaintext layout managers
//! wrote before; it is migrated once, at start:
//!
//! 1. every tree is copied, each value sealed, into a new database beside
//!    it (`raft.sealing`), the marker written last and everything fsynced;
//! 2. the copy is renamed to `raft.sealed`: from here on it is complete;
//! 3. `raft` is renamed to `raft.plaintext`, `raft.sealed` to `raft`;
//! 4. `raft.plaintext` is removed.
//!
//! A crash anywhere is finished or undone at the next start
//! ([`finish_interrupted_migration`]): an unfinished `raft.sealing` is
//! dropped (the plaintext database is still whole), a complete
//! `raft.sealed` is swapped in. Copying into a new database rather than
//! rewriting values in place also leaves no plaintext in the live sled
//! files, which keep old versions of values until they compact.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::dek_file::{DekFile, DekFileError};
use super::sealed::{SealError, Sealer};

/// The tree holding the layout marker; itself never sealed as a whole.
const AT_REST_TREE: &str = "at_rest";
const LAYOUT_KEY: &[u8] = b"layout";
/// The marker's first byte: values sealed as in [`super::sealed`].
const LAYOUT_SEALED_V1: u8 = 1;
/// What the marker seals; opening it proves the data key is the right one.
const KEY_CHECK: &[u8] = b"shoal raft data key check";

/// Copy this many plaintext bytes per batch while migrating.
const MIGRATION_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// How long to wait for sled's file lock, which its background flusher
/// holds a moment after the previous handle to the same files is dropped.
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// How a manager stores its Raft data.
#[derive(Debug, Clone)]
pub enum AtRest {
    /// Sealed with the data key kept in `dek_file` (created on first start);
    /// `unlock_key` opens that file when autolock sealed it.
    Encrypted {
        dek_file: PathBuf,
        unlock_key: Option<crate::autolock::UnlockKey>,
    },
    /// Unencrypted, as before encryption existed. Only for the control-plane
    /// benchmark's with/without comparison (the daemon's
    /// `SHOAL_BENCH_UNENCRYPTED_RAFT`); never for a real swarm. A database
    /// written this way is migrated when next opened encrypted.
    PlaintextForBenchmark,
}

#[derive(Debug, thiserror::Error)]
pub enum AtRestError {
    #[error("cannot open the Raft database in {dir}: {source}")]
    Sled { dir: PathBuf, source: sled::Error },
    #[error("cannot {action} in {dir}: {source}")]
    Io {
        dir: PathBuf,
        action: &'static str,
        source: std::io::Error,
    },
    #[error(transparent)]
    DekFile(#[from] DekFileError),
    #[error("the Raft data in {dir} is encrypted but its key file {dek_file} is missing; restore that file, or remove {dir} and rejoin the swarm as a manager")]
    MissingDek { dir: PathBuf, dek_file: PathBuf },
    #[error("the Raft data in {dir} was encrypted with a different key than the one in {dek_file}; restore the matching key file, or remove {dir} and rejoin the swarm as a manager")]
    WrongDek { dir: PathBuf, dek_file: PathBuf },
    #[error("the Raft data in {dir} is encrypted, but this manager was started without encryption (SHOAL_BENCH_UNENCRYPTED_RAFT is set); unset it")]
    EncryptedButDisabled { dir: PathBuf },
    #[error("the Raft data in {dir} has at-rest layout {found}, which this version of shoal does not know; run a newer shoal")]
    UnknownLayout { dir: PathBuf, found: u8 },
    #[error("cannot encrypt the Raft data in {dir}: {source}")]
    Seal { dir: PathBuf, source: SealError },
}

/// Opens (creating or migrating as needed) the Raft database in `raft_dir`
/// as `at_rest` says: the database and the sealer its stores must use
/// (pass both to [`super::open_storage`]).
pub fn open_database(raft_dir: &Path, at_rest: &AtRest) -> Result<(sled::Db, Sealer), AtRestError> {
    finish_interrupted_migration(raft_dir)?;
    let db = open_sled(raft_dir)?;
    let marker = read_marker(&db, raft_dir)?;
    let dek_file = match at_rest {
        AtRest::PlaintextForBenchmark => {
            if marker.is_some() {
                return Err(AtRestError::EncryptedButDisabled {
                    dir: raft_dir.into(),
                });
            }
            tracing::warn!(dir = %raft_dir.display(), "Raft data is stored UNENCRYPTED (benchmark comparison mode)");
            return Ok((db, Sealer::plaintext()));
        }
        AtRest::Encrypted {
            dek_file,
            unlock_key,
        } => (DekFile::new(dek_file), unlock_key.as_ref()),
    };
    let (dek_file, unlock_key) = dek_file;
    let dek = match (dek_file.load_with(unlock_key)?, &marker) {
        (Some(dek), _) => dek,
        (None, Some(_)) => {
            return Err(AtRestError::MissingDek {
                dir: raft_dir.into(),
                dek_file: dek_file.path().into(),
            })
        }
        // Stored durably before anything is sealed with it.
        (None, None) => dek_file.create()?,
    };
    let sealer = Sealer::new(&dek);
    if marker.is_none() {
        // The copy below takes sled's trees only: put the log's entries
        // back in sled first, where the sealed store moves them out again.
        fold_wal_into_sled(&db, raft_dir).map_err(|source| AtRestError::Io {
            dir: raft_dir.into(),
            action: "move the plaintext Raft log into the copy",
            source,
        })?;
    }
    let wrong_key = || AtRestError::WrongDek {
        dir: raft_dir.into(),
        dek_file: dek_file.path().into(),
    };
    match marker {
        Some(sealed_check) => {
            check_key(&sealer, &sealed_check).map_err(|_| wrong_key())?;
            Ok((db, sealer))
        }
        None if has_data(&db) => {
            tracing::info!(dir = %raft_dir.display(), "encrypting the Raft data at rest (one-time migration)");
            drop(db);
            build_sealed_copy(raft_dir, &sealer)?;
            finish_interrupted_migration(raft_dir)?;
            let db = open_sled(raft_dir)?;
            let sealed_check = read_marker(&db, raft_dir)?.ok_or_else(wrong_key)?;
            check_key(&sealer, &sealed_check).map_err(|_| wrong_key())?;
            tracing::info!(dir = %raft_dir.display(), "Raft data encrypted at rest");
            Ok((db, sealer))
        }
        None => {
            write_marker(&db, &sealer, raft_dir)?;
            db.flush().map_err(|source| AtRestError::Sled {
                dir: raft_dir.into(),
                source,
            })?;
            Ok((db, sealer))
        }
    }
}

/// `raft.sealing`, `raft.sealed`, `raft.plaintext` beside `raft_dir`.
fn migration_dirs(raft_dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let name = raft_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "raft".into());
    let sibling = |suffix: &str| raft_dir.with_file_name(format!("{name}.{suffix}"));
    (sibling("sealing"), sibling("sealed"), sibling("plaintext"))
}

/// Steps 3 and 4 of the migration (see the module docs) for a complete
/// copy, and the clean-up of an incomplete one. Does nothing when no
/// migration was under way.
fn finish_interrupted_migration(raft_dir: &Path) -> Result<(), AtRestError> {
    let (building, built, old) = migration_dirs(raft_dir);
    let io = |action| {
        move |source| AtRestError::Io {
            dir: raft_dir.into(),
            action,
            source,
        }
    };
    if built.exists() {
        if raft_dir.exists() {
            remove_dir_if_present(&old).map_err(io("remove the leftover plaintext Raft data"))?;
            std::fs::rename(raft_dir, &old).map_err(io("set the plaintext Raft data aside"))?;
        }
        std::fs::rename(&built, raft_dir).map_err(io("put the encrypted Raft data in place"))?;
        sync_parent(raft_dir).map_err(io("sync the Raft data directory"))?;
    }
    remove_dir_if_present(&old).map_err(io("remove the plaintext Raft data"))?;
    remove_dir_if_present(&building)
        .map_err(io("remove an unfinished encrypted copy of the Raft data"))?;
    Ok(())
}

/// Steps 1 and 2 of the migration: a sealed, durable copy of the
/// plaintext database in `raft_dir`, at `raft.sealed`.
fn build_sealed_copy(raft_dir: &Path, sealer: &Sealer) -> Result<PathBuf, AtRestError> {
    let (building, built, _) = migration_dirs(raft_dir);
    let io = |action| {
        move |source| AtRestError::Io {
            dir: raft_dir.into(),
            action,
            source,
        }
    };
    remove_dir_if_present(&building)
        .map_err(io("remove an unfinished encrypted copy of the Raft data"))?;
    {
        let source = open_sled(raft_dir)?;
        let target = open_sled(&building)?;
        let sled_err = |source| AtRestError::Sled {
            dir: raft_dir.into(),
            source,
        };
        for name in source.tree_names() {
            if name == AT_REST_TREE.as_bytes() {
                continue;
            }
            // Our tree names are text; the sealer binds values to them.
            let tree_name = String::from_utf8_lossy(&name).into_owned();
            let from = source.open_tree(&name).map_err(sled_err)?;
            let to = target.open_tree(&name).map_err(sled_err)?;
            let (mut batch, mut batch_bytes) = (sled::Batch::default(), 0usize);
            for item in from.iter() {
                let (key, value) = item.map_err(sled_err)?;
                let sealed =
                    sealer
                        .seal(&tree_name, &key, &value)
                        .map_err(|source| AtRestError::Seal {
                            dir: raft_dir.into(),
                            source,
                        })?;
                batch.insert(key, sealed);
                batch_bytes += value.len();
                if batch_bytes >= MIGRATION_BATCH_BYTES {
                    to.apply_batch(std::mem::take(&mut batch))
                        .map_err(sled_err)?;
                    batch_bytes = 0;
                }
            }
            to.apply_batch(batch).map_err(sled_err)?;
        }
        // Last: its presence says the copy is whole.
        write_marker(&target, sealer, &building)?;
        target.flush().map_err(sled_err)?;
    }
    sync_recursively(&building).map_err(io("sync the encrypted copy of the Raft data"))?;
    std::fs::rename(&building, &built)
        .map_err(io("complete the encrypted copy of the Raft data"))?;
    sync_parent(&built).map_err(io("sync the Raft data directory"))?;
    Ok(built)
}

fn open_sled(dir: &Path) -> Result<sled::Db, AtRestError> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match sled::Config::new().path(dir).open() {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(source) => {
                return Err(AtRestError::Sled {
                    dir: dir.into(),
                    source,
                })
            }
        }
    }
}

/// The sealed key check of an encrypted database; `None` for a new or
/// plaintext one.
fn read_marker(db: &sled::Db, dir: &Path) -> Result<Option<Vec<u8>>, AtRestError> {
    let sled_err = |source| AtRestError::Sled {
        dir: dir.into(),
        source,
    };
    let Some(marker) = db
        .open_tree(AT_REST_TREE)
        .map_err(sled_err)?
        .get(LAYOUT_KEY)
        .map_err(sled_err)?
    else {
        return Ok(None);
    };
    match marker.first() {
        Some(&LAYOUT_SEALED_V1) => Ok(Some(marker[1..].to_vec())),
        found => Err(AtRestError::UnknownLayout {
            dir: dir.into(),
            found: found.copied().unwrap_or(0),
        }),
    }
}

fn write_marker(db: &sled::Db, sealer: &Sealer, dir: &Path) -> Result<(), AtRestError> {
    let sealed = sealer
        .seal(AT_REST_TREE, LAYOUT_KEY, KEY_CHECK)
        .map_err(|source| AtRestError::Seal {
            dir: dir.into(),
            source,
        })?;
    let marker = [&[LAYOUT_SEALED_V1][..], &sealed].concat();
    let sled_err = |source| AtRestError::Sled {
        dir: dir.into(),
        source,
    };
    db.open_tree(AT_REST_TREE)
        .map_err(sled_err)?
        .insert(LAYOUT_KEY, marker)
        .map_err(sled_err)?;
    Ok(())
}

fn check_key(sealer: &Sealer, sealed_check: &[u8]) -> Result<(), ()> {
    match sealer.open(AT_REST_TREE, LAYOUT_KEY, sealed_check) {
        Ok(check) if check.as_ref() == KEY_CHECK => Ok(()),
        _ => Err(()),
    }
}

/// Whether any tree but the marker's holds a value. Opening a tree creates
/// it empty, so an existing but empty tree is no data.
fn has_data(db: &sled::Db) -> bool {
    db.tree_names().iter().any(|name| {
        name != AT_REST_TREE.as_bytes()
            && db
                .open_tree(name)
                .map(|tree| !tree.is_empty())
                .unwrap_or(true)
    })
}

fn remove_dir_if_present(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Copies a plaintext write-ahead log's entries into sled's `raft_log`
/// tree (where managers before it kept them), durably; the log store moves
/// them into a new, sealed write-ahead log when it opens. Repeating it
/// after a crash writes the same keys again.
fn fold_wal_into_sled(db: &sled::Db, raft_dir: &Path) -> std::io::Result<()> {
    let dir = raft_dir.join(super::wal::DIR_NAME);
    if !dir.exists() {
        return Ok(());
    }
    let wal = super::wal::Wal::open(&dir, Sealer::plaintext())?;
    let (Some(first), Some(last)) = (wal.first_index(), wal.last_index()) else { return Ok(()) };
    let tree = db.open_tree(super::log_store::LEGACY_LOG_TREE).map_err(std::io::Error::other)?;
    for index in first..=last {
        if let Some(bytes) = wal.read(index)? {
            tree.insert(index.to_be_bytes(), bytes).map_err(std::io::Error::other)?;
        }
    }
    db.flush().map_err(std::io::Error::other)?;
    Ok(())
}

/// fsyncs every file under `dir`, then the directories: sled's own flush
/// neither flushes the disk cache nor covers its blob files.
fn sync_recursively(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            sync_recursively(&entry.path())?;
        } else {
            std::fs::File::open(entry.path())?.sync_all()?;
        }
    }
    std::fs::File::open(dir)?.sync_all()
}

/// Makes a rename in `path`'s directory durable.
fn sync_parent(path: &Path) -> std::io::Result<()> {
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => std::fs::File::open(parent)?.sync_all(),
        None => Ok(()),
    }
}

#[cfg(test)]
#[path = "at_rest_tests.rs"]
mod tests;
