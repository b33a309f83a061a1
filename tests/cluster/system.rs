//! `system df`, `system prune` and `info`'s counts on one standalone node:
//! the sizes match what is on disk, and prune removes only what nothing
//! uses (a stopped container, an unused volume) and keeps the rest.

use std::path::Path;

use crate::support::bridge_node::{import_busybox, IMAGE};
use crate::support::Cluster;

const HOST: &str = "manager1";

/// Bytes of the files under `dir`, as `du --apparent-size` counts them.
fn bytes_under(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => bytes_under(&e.path()),
                    Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
                    _ => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// `system df --format json` as (type, name) -> (size, active).
fn df(cluster: &Cluster) -> Vec<(String, String, u64, bool)> {
    let categories: Vec<serde_json::Value> = cluster.shoal(HOST, &["system", "df", "--format", "json"]).ok().stdout_json();
    categories
        .iter()
        .flat_map(|c| {
            let kind = c["type"].as_str().unwrap_or_default().to_string();
            c["items"].as_array().cloned().unwrap_or_default().into_iter().map(move |i| {
                (kind.clone(), i["name"].as_str().unwrap_or_default().to_string(), i["size"].as_u64().unwrap_or(0), i["active"].as_bool().unwrap_or(false))
            })
        })
        .collect()
}

fn find<'a>(rows: &'a [(String, String, u64, bool)], kind: &str, name: &str) -> Option<&'a (String, String, u64, bool)> {
    rows.iter().find(|r| r.0 == kind && r.1 == name)
}

#[test]
fn df_measures_the_disk_and_prune_keeps_what_is_used() {
    let cluster = Cluster::up_standalone("sysdf", 1);
    import_busybox(&cluster, HOST, IMAGE);
    let shoal = |args: &[&str]| cluster.shoal(HOST, args);
    shoal(&["volume", "create", "kept"]).ok();
    shoal(&["run", "-d", "--name", "keep", "-v", "kept:/data", IMAGE, "sleep", "300"]).ok();
    shoal(&["run", "--name", "gone", IMAGE, "sh", "-c", "head -c 1000000 /dev/zero > /big; echo written"]).ok();
    shoal(&["run", "--rm", "-v", "spare:/d", IMAGE, "sh", "-c", "head -c 2000000 /dev/zero > /d/f"]).ok();

    let rows = df(&cluster);
    let data = cluster.host(HOST).socket.parent().unwrap().join("data");
    let gone_id = shoal(&["container", "inspect", "gone"]).ok().stdout_json::<serde_json::Value>()[0]["id"].as_str().unwrap().to_string();
    let gone = find(&rows, "Containers", "gone").expect("the stopped container");
    assert_eq!(gone.2, bytes_under(&data.join("containers").join(&gone_id).join("upper")), "its writable layer, as on disk");
    assert!(gone.2 >= 1_000_000 && !gone.3, "{gone:?}");
    assert!(find(&rows, "Containers", "keep").is_some_and(|r| r.3), "keep runs");
    let spare = find(&rows, "Local Volumes", "spare").expect("the unused volume");
    assert_eq!((spare.2, spare.3), (2_000_000, false));
    assert!(find(&rows, "Local Volumes", "kept").is_some_and(|r| r.3), "kept is mounted");
    let log = find(&rows, "Container Logs", "gone").expect("gone's log");
    assert_eq!(log.2, std::fs::metadata(data.join("containers").join(&gone_id).join("container.log")).unwrap().len(), "{log:?}");
    assert!(find(&rows, "Images", IMAGE).is_some_and(|r| r.3 && r.2 > 0), "the image is in use: {rows:?}");
    let table = shoal(&["system", "df"]).ok().stdout;
    assert!(table.lines().any(|l| l.starts_with("Containers") && l.split_whitespace().nth(1) == Some("2")), "{table}");

    let info = shoal(&["info"]).ok().stdout;
    for line in ["Containers: 2", " Running: 1", " Stopped: 1", "Images: 1", "Storage Driver: overlay"] {
        assert!(info.lines().any(|l| l == line), "{line}: {info}");
    }

    let pruned = shoal(&["system", "prune", "--volumes", "-f"]).ok().stdout;
    assert!(pruned.contains("Deleted Containers:") && pruned.contains("spare"), "{pruned}");
    let after = df(&cluster);
    assert!(find(&after, "Containers", "gone").is_none() && find(&after, "Local Volumes", "spare").is_none(), "{after:?}");
    assert!(find(&after, "Containers", "keep").is_some() && find(&after, "Local Volumes", "kept").is_some(), "what is used stays: {after:?}");
    assert!(find(&after, "Images", IMAGE).is_some(), "an image in use stays");
    shoal(&["rm", "-f", "keep"]).ok();
}
