//! Subnet reservations, so clusters created concurrently under different
//! names (parallel tests) never share a /24 or link names.
//!
//! A reservation is the file `<registry_dir>/<index>` holding the cluster
//! name; `create_new` (O_EXCL) makes taking an index atomic across processes.

use std::fs;
use std::io::{ErrorKind, Write};

use anyhow::{bail, Context};

use super::plan::{registry_dir, MAX_INDEX};

/// Reserves the lowest free subnet index for `cluster`.
pub fn reserve(cluster: &str) -> anyhow::Result<u8> {
    let dir = registry_dir();
    fs::create_dir_all(&dir).with_context(|| format!("could not create {}", dir.display()))?;
    for index in 1..=MAX_INDEX {
        let path = dir.join(index.to_string());
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut file) => {
                file.write_all(format!("{cluster}\n").as_bytes())
                    .with_context(|| format!("could not write {}", path.display()))?;
                return Ok(index);
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(e).with_context(|| format!("could not create {}", path.display()))
            }
        }
    }
    bail!(
        "all {MAX_INDEX} dev-cluster subnets are in use (see {}); remove clusters with `shoal dev-cluster down --name NAME`",
        dir.display()
    )
}

/// Every reservation as (index, cluster name). An entry being written right
/// now may show an empty name; callers treat it as someone else's.
pub fn entries() -> anyhow::Result<Vec<(u8, String)>> {
    let dir = registry_dir();
    let listing = match fs::read_dir(&dir) {
        Ok(listing) => listing,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("could not read {}", dir.display())),
    };
    let mut entries = Vec::new();
    for entry in listing {
        let entry = entry.with_context(|| format!("could not read {}", dir.display()))?;
        let Some(index) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u8>().ok())
        else {
            continue;
        };
        // A reservation released between listing and reading is simply gone.
        if let Ok(owner) = fs::read_to_string(entry.path()) {
            entries.push((index, owner.trim().to_string()));
        }
    }
    entries.sort();
    Ok(entries)
}

/// Indices reserved for `cluster` (normally at most one).
pub fn lookup(cluster: &str) -> anyhow::Result<Vec<u8>> {
    Ok(entries()?
        .into_iter()
        .filter(|(_, owner)| owner == cluster)
        .map(|(index, _)| index)
        .collect())
}

/// Drops every reservation naming `cluster`; releasing nothing is fine.
pub fn release(cluster: &str) -> anyhow::Result<()> {
    for index in lookup(cluster)? {
        let path = registry_dir().join(index.to_string());
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e).with_context(|| format!("could not remove {}", path.display()))
            }
        }
    }
    Ok(())
}
