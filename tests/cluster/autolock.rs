//! Autolock: a restarted manager stays locked (no Raft, no writes) until
//! `swarm unlock` gets the swarm's unlock key; the swarm stays available
//! meanwhile; rotation retires the old key; workers are never locked; no
//! key reaches a log.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use shoal_manager::autolock::UnlockKey;
use shoal_manager::raft::dek_file::DekFile;

use crate::support::{wait_until, Cluster, Output, SHOAL};
use crate::swarm_helpers::{config_names, create_config, info, node_ls, wait_all_ready};

const MANAGERS: [&str; 3] = ["manager1", "manager2", "manager3"];
const SETTLE: Duration = Duration::from_secs(20);
const SEALED_KEY_HEADER: &str = "-----BEGIN SHOAL SEALED PRIVATE KEY-----";

fn certs(cluster: &Cluster, host: &str) -> PathBuf {
    cluster
        .host(host)
        .log
        .with_file_name("data")
        .join("swarm/certs")
}

/// The protection byte of the host's DEK file: 0 clear, 1 sealed with the unlock key.
fn dek_protection(cluster: &Cluster, host: &str) -> Option<u8> {
    std::fs::read(certs(cluster, host).join("raft-dek"))
        .ok()
        .and_then(|b| b.get(9).copied())
}

fn node_key_sealed(cluster: &Cluster, host: &str) -> bool {
    std::fs::read_to_string(certs(cluster, host).join("node-key.pem"))
        .is_ok_and(|t| t.starts_with(SEALED_KEY_HEADER))
}

fn wait_locked_files(cluster: &Cluster, host: &str, locked: bool) {
    let want = if locked { 1 } else { 0 };
    wait_until(
        SETTLE,
        &format!(
            "{host}'s key files to be {}",
            if locked { "sealed" } else { "in clear" }
        ),
        || {
            (dek_protection(cluster, host) == Some(want)
                && node_key_sealed(cluster, host) == locked)
                .then_some(())
        },
    );
}

/// The `SHLKEY-1-...` word in a command's output.
fn key_in(out: &Output) -> String {
    out.stdout
        .split_whitespace()
        .find(|w| w.starts_with("SHLKEY-1-"))
        .unwrap_or_else(|| panic!("`{}` printed no unlock key:\n{}", out.command, out.stdout))
        .to_string()
}

/// `shoal swarm unlock` on `host` with `key` on its stdin.
fn unlock(cluster: &Cluster, host: &str, key: &str) -> Output {
    let uri = format!("unix://{}", cluster.host(host).socket.display());
    let args = ["-H", uri.as_str(), "swarm", "unlock"];
    let mut child = Command::new(SHOAL)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting shoal swarm unlock");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{key}\n").as_bytes())
        .expect("writing the key");
    let out = child
        .wait_with_output()
        .expect("waiting for shoal swarm unlock");
    Output {
        command: format!("{SHOAL} {}", args.join(" ")),
        status: Some(out.status),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn swarm_state(cluster: &Cluster, host: &str) -> Option<String> {
    info(cluster, host).map(|i| i.swarm)
}

fn restart(cluster: &Cluster, host: &str) {
    cluster.stop(host, false);
    cluster.start(host);
}

/// Neither the unlock keys nor the manager's data key, in any form, in any log.
fn assert_no_key_in_logs(cluster: &Cluster, hosts: &[&str], keys: &[&str]) {
    for host in hosts {
        let log = std::fs::read(&cluster.host(host).log).expect("reading a daemon log");
        let text = String::from_utf8_lossy(&log);
        assert!(
            !text.contains("SHLKEY-1-"),
            "{host}'s log holds an unlock key"
        );
        for key in keys {
            let parsed = UnlockKey::parse(key).expect("a printed key parses");
            let hex = key.trim_start_matches("SHLKEY-1-");
            assert!(
                !text.contains(hex),
                "{host}'s log holds an unlock key's bytes (hex)"
            );
            assert!(
                !log.windows(32).any(|w| w == parsed.as_bytes()),
                "{host}'s log holds an unlock key's raw bytes"
            );
            if let Ok(Some(dek)) =
                DekFile::new(certs(cluster, host).join("raft-dek")).load_with(Some(&parsed))
            {
                assert!(
                    !text.contains(&shoal_hex(dek.as_bytes())),
                    "{host}'s log holds its data key (hex)"
                );
                assert!(
                    !log.windows(32).any(|w| w == dek.as_bytes()),
                    "{host}'s log holds its data key's raw bytes"
                );
            }
        }
    }
}

fn shoal_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn a_restarted_manager_stays_locked_until_unlocked_and_rotation_retires_the_old_key() {
    let cluster = Cluster::up("alock", 3, 1);
    wait_all_ready(&cluster, "manager1", 4);

    // Before autolock: nothing to show, nothing to unlock.
    let no_key = cluster.shoal("manager1", &["swarm", "unlock-key"]);
    assert!(
        !no_key.success() && no_key.stderr.contains("autolock is off"),
        "{}",
        no_key.stderr
    );
    let not_locked = unlock(
        &cluster,
        "manager1",
        &format!("SHLKEY-1-{}", "0".repeat(64)),
    );
    assert!(
        !not_locked.success() && not_locked.stderr.contains("this node is not locked"),
        "{}",
        not_locked.stderr
    );

    let updated = cluster
        .shoal("manager1", &["swarm", "update", "--autolock=true"])
        .ok();
    assert!(
        updated
            .stdout
            .contains("To unlock a swarm manager after it restarts, run `shoal swarm unlock`"),
        "{}",
        updated.stdout
    );
    let key = key_in(&updated);
    // Every manager learns the key through the store and seals its files; workers never do.
    let shown = cluster
        .shoal("manager2", &["swarm", "unlock-key", "-q"])
        .ok();
    assert_eq!(shown.stdout.trim(), key);
    for host in MANAGERS {
        wait_locked_files(&cluster, host, true);
    }
    assert!(!node_key_sealed(&cluster, "worker1") && dek_protection(&cluster, "worker1").is_none());

    create_config(&cluster, "manager1", "alock-before").ok();
    wait_until(SETTLE, "manager3 to apply the config", || {
        config_names(&cluster, "manager3").filter(|n| n.iter().any(|c| c == "alock-before"))
    });

    // Restarted: locked, and it serves nothing of the swarm.
    restart(&cluster, "manager3");
    assert_eq!(swarm_state(&cluster, "manager3").as_deref(), Some("locked"));
    let table = cluster.shoal("manager3", &["info"]).ok();
    assert!(table.stdout.contains("Swarm: locked"), "{}", table.stdout);
    let refused = create_config(&cluster, "manager3", "alock-on-locked");
    assert!(
        !refused.success(),
        "a locked manager accepted a write: {}",
        refused.stdout
    );
    assert!(!cluster.shoal("manager3", &["node", "ls"]).success());
    let join = cluster.shoal(
        "manager3",
        &["swarm", "init", "--advertise-addr", "198.18.255.1"],
    );
    assert!(
        !join.success() && join.stderr.contains("locked manager"),
        "{}",
        join.stderr
    );

    // The others carry on, and see the locked manager as down and locked
    // (not merely unreachable), on every manager.
    create_config(&cluster, "manager1", "alock-while-locked").ok();
    for viewer in ["manager1", "manager2"] {
        wait_until(SETTLE, &format!("{viewer} to see manager3 locked"), || {
            node_ls(&cluster, viewer)?.into_iter().find(|n| {
                n.hostname == "manager3" && n.manager_status.as_deref() == Some("locked") && n.status == "down"
            })
        });
    }
    let table = cluster.shoal("manager1", &["node", "ls"]).ok();
    let row = table.stdout.lines().find(|l| l.contains("manager3")).unwrap_or_default();
    assert!(row.contains("Locked"), "node ls: {}", table.stdout);

    // Wrong or malformed keys change nothing.
    let wrong = unlock(
        &cluster,
        "manager3",
        UnlockKey::generate().to_text().as_str(),
    );
    assert!(
        !wrong.success() && wrong.stderr.contains("unlock key is wrong"),
        "{}",
        wrong.stderr
    );
    let garbage = unlock(&cluster, "manager3", "SHLTKN-1-not-a-key");
    assert!(
        !garbage.success() && garbage.stderr.contains("not a swarm unlock key"),
        "{}",
        garbage.stderr
    );
    assert_eq!(swarm_state(&cluster, "manager3").as_deref(), Some("locked"));

    unlock(&cluster, "manager3", &key).ok();
    assert_eq!(swarm_state(&cluster, "manager3").as_deref(), Some("active"));
    wait_until(SETTLE, "manager3 to catch up after unlock", || {
        config_names(&cluster, "manager3").filter(|n| n.iter().any(|c| c == "alock-while-locked"))
    });
    wait_all_ready(&cluster, "manager3", 4);
    wait_until(SETTLE, "manager3 to show reachable again once unlocked", || {
        node_ls(&cluster, "manager1")?
            .into_iter()
            .find(|n| n.hostname == "manager3" && n.manager_status.as_deref() == Some("reachable"))
    });
    let again = unlock(&cluster, "manager3", &key);
    assert!(
        !again.success() && again.stderr.contains("this node is not locked"),
        "{}",
        again.stderr
    );

    // Rotation: running managers rewrap at once; the old key stops working.
    let before =
        std::fs::read(certs(&cluster, "manager2").join("raft-dek")).expect("manager2's key file");
    let rotated = cluster
        .shoal("manager1", &["swarm", "unlock-key", "--rotate"])
        .ok();
    let new_key = key_in(&rotated);
    assert_ne!(new_key, key);
    wait_until(SETTLE, "manager2 to rewrap its data key", || {
        let now = std::fs::read(certs(&cluster, "manager2").join("raft-dek")).ok()?;
        let opened = DekFile::new(certs(&cluster, "manager2").join("raft-dek"))
            .load_with(Some(&UnlockKey::parse(&new_key).ok()?));
        (now != before && opened.is_ok()).then_some(())
    });
    restart(&cluster, "manager2");
    assert_eq!(swarm_state(&cluster, "manager2").as_deref(), Some("locked"));
    let old = unlock(&cluster, "manager2", &key);
    assert!(
        !old.success() && old.stderr.contains("unlock key is wrong"),
        "{}",
        old.stderr
    );
    unlock(&cluster, "manager2", &new_key).ok();
    create_config(&cluster, "manager2", "alock-after-rotation").ok();

    // Workers are never locked.
    restart(&cluster, "worker1");
    assert_eq!(swarm_state(&cluster, "worker1").as_deref(), Some("active"));
    wait_all_ready(&cluster, "manager1", 4);

    assert_no_key_in_logs(
        &cluster,
        &["manager1", "manager2", "manager3", "worker1"],
        &[&key, &new_key],
    );
}

#[test]
fn swarm_init_with_autolock_locks_at_once_and_autolock_off_unlocks_for_good() {
    let cluster = Cluster::up("alinit", 1, 0);
    wait_all_ready(&cluster, "manager1", 1);
    let addr = cluster.addr("manager1").to_string();
    cluster
        .shoal("manager1", &["swarm", "leave", "--force"])
        .ok();
    let init = cluster
        .shoal(
            "manager1",
            &["swarm", "init", "--autolock", "--advertise-addr", &addr],
        )
        .ok();
    assert!(
        init.stdout
            .contains("run `shoal swarm unlock` and provide the following key"),
        "{}",
        init.stdout
    );
    let key = key_in(&init);
    // Sealed before `init` returned.
    assert_eq!(dek_protection(&cluster, "manager1"), Some(1));
    assert!(node_key_sealed(&cluster, "manager1"));
    create_config(&cluster, "manager1", "alinit-state").ok();

    restart(&cluster, "manager1");
    assert_eq!(swarm_state(&cluster, "manager1").as_deref(), Some("locked"));
    unlock(&cluster, "manager1", &key).ok();
    wait_until(SETTLE, "the unlocked manager to serve its state", || {
        config_names(&cluster, "manager1").filter(|n| n.iter().any(|c| c == "alinit-state"))
    });

    let off = cluster
        .shoal("manager1", &["swarm", "update", "--autolock=false"])
        .ok();
    assert!(!off.stdout.contains("SHLKEY-1-"), "{}", off.stdout);
    wait_locked_files(&cluster, "manager1", false);
    let no_key = cluster.shoal("manager1", &["swarm", "unlock-key"]);
    assert!(
        !no_key.success() && no_key.stderr.contains("autolock is off"),
        "{}",
        no_key.stderr
    );
    restart(&cluster, "manager1");
    assert_eq!(swarm_state(&cluster, "manager1").as_deref(), Some("active"));
    wait_until(
        SETTLE,
        "the manager to serve its state without a key",
        || config_names(&cluster, "manager1").filter(|n| n.iter().any(|c| c == "alinit-state")),
    );

    // The data key is in clear now: neither it nor the old unlock key was ever logged.
    let dek = DekFile::new(certs(&cluster, "manager1").join("raft-dek"))
        .load()
        .expect("reading the key file")
        .expect("a key file");
    let log = std::fs::read(&cluster.host("manager1").log).expect("reading the log");
    assert!(!log.windows(32).any(|w| w == dek.as_bytes()));
    assert!(!String::from_utf8_lossy(&log).contains(&shoal_hex(dek.as_bytes())));
    assert_no_key_in_logs(&cluster, &["manager1"], &[&key]);
}
