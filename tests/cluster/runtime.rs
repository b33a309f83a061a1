//! The node's own container runtime through the real CLI and daemon: images
//! from a real registry on loopback, real containers, and a daemon that is
//! killed and restarted under them. Each test ends by proving it left no
//! mounts, cgroups or processes behind.

use std::time::Duration;

use serde::Deserialize;
use shoal_runtime::testing::TestImages;

use crate::support::node::{registry_with_busybox, LocalNode};
use crate::support::wait_until;


#[derive(Deserialize)]
struct ContainerRow {
    id: String,
    name: String,
    state: String,
    status: String,
}

fn containers(node: &LocalNode) -> Vec<ContainerRow> {
    node.shoal(&["container", "ls", "-a", "--format", "json"]).ok().stdout_json()
}

#[test]
fn pulls_by_tag_and_digest_and_runs_with_exit_codes_passed_through() {
    let (_registry, busybox) = registry_with_busybox();
    let node = LocalNode::start("run");

    let pulled = node.shoal(&["image", "pull", &busybox.reference]).ok();
    assert!(pulled.stderr.contains(&busybox.digest.to_string()), "pull reports the digest: {}", pulled.stderr);
    let by_digest = format!("{}@{}", busybox.reference.rsplit_once(':').unwrap().0, busybox.digest);
    node.shoal(&["image", "pull", &by_digest]).ok();
    let listed = node.shoal(&["image", "ls"]).ok().stdout;
    assert!(listed.contains("busybox") && listed.contains('1'), "{listed}");

    // Foreground run: output streams back, the exit code passes through.
    let run = node.shoal(&["run", "--rm", &busybox.reference, "sh", "-c", "echo out; echo err >&2; exit 7"]);
    assert_eq!(run.status.and_then(|s| s.code()), Some(7), "{run:?}");
    assert_eq!(run.stdout, "out\n");
    assert!(run.stderr.contains("err"), "{}", run.stderr);
    // --rm removed it.
    assert!(containers(&node).is_empty());

    // PID 1 is the command; the hostname is the container's own.
    let inside = node.shoal(&["run", "--rm", "--hostname", "box", &busybox.reference, "sh", "-c", "cat /proc/1/cmdline | tr '\\0' ' '; hostname"]).ok();
    assert!(inside.stdout.starts_with("sh -c cat /proc/1/cmdline"), "{}", inside.stdout);
    assert!(inside.stdout.ends_with(" box\n"), "{}", inside.stdout);

    // A missing command is one clear sentence, and leaves nothing behind.
    let missing = node.shoal(&["run", "--rm", &busybox.reference, "/bin/nope"]);
    assert!(!missing.success());
    assert!(missing.stderr.contains("/bin/nope"), "{}", missing.stderr);
    assert_eq!(missing.stderr.trim().lines().count(), 1, "{}", missing.stderr);

    node.assert_clean();
}

#[test]
fn containers_survive_a_daemon_crash_and_are_managed_after_restart() {
    let (_registry, busybox) = registry_with_busybox();
    let mut node = LocalNode::start("live");
    let script = "trap 'echo bye; exit 3' TERM; i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.1; done";
    let id = node.shoal(&["run", "-d", "--name", "ticker", &busybox.reference, "sh", "-c", script]).ok().stdout.trim().to_string();
    let ticks = |node: &LocalNode| node.shoal(&["container", "logs", "ticker"]).ok().stdout.lines().count();
    wait_until(Duration::from_secs(10), "the first ticks", || (ticks(&node) >= 3).then_some(()));

    node.kill_daemon();
    let before = std::fs::read_dir(node.data_root()).map(|d| d.count()).unwrap_or(0);
    assert!(before > 0);
    node.restart_daemon();

    let rows = containers(&node);
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].id.as_str(), rows[0].name.as_str(), rows[0].state.as_str()), (id.as_str(), "ticker", "running"));
    // Logs continue after the restart.
    let seen = ticks(&node);
    wait_until(Duration::from_secs(10), "more ticks after the restart", || (ticks(&node) > seen + 3).then_some(()));

    // Stop delivers SIGTERM to the trap, and the exit code is learned.
    node.shoal(&["container", "stop", "-t", "5", "ticker"]).ok();
    let rows = containers(&node);
    assert_eq!(rows[0].state, "exited");
    assert!(rows[0].status.starts_with("Exited (3)"), "{}", rows[0].status);
    assert!(node.shoal(&["container", "logs", "--tail", "1", "ticker"]).ok().stdout.contains("bye"));
    node.shoal(&["container", "rm", "ticker"]).ok();
    node.assert_clean();
}

#[test]
fn a_container_ignoring_sigterm_is_killed_after_the_grace_period() {
    let (_registry, busybox) = registry_with_busybox();
    let node = LocalNode::start("grace");
    node.shoal(&["run", "-d", "--name", "stubborn", &busybox.reference, "sh", "-c", "trap '' TERM; while true; do sleep 0.1; done"]).ok();
    let started = std::time::Instant::now();
    node.shoal(&["container", "stop", "-t", "1", "stubborn"]).ok();
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(5), "stop took {took:?}");
    let rows = containers(&node);
    assert!(rows[0].status.starts_with("Exited (137)"), "{}", rows[0].status);
    node.shoal(&["container", "rm", "stubborn"]).ok();
    node.assert_clean();
}

#[test]
fn memory_limits_oom_kill_and_are_reported() {
    let (_registry, busybox) = registry_with_busybox();
    let node = LocalNode::start("oom");
    let run = node.shoal(&["run", "--name", "hog", "--memory", "32m", &busybox.reference, "tail", "/dev/zero"]);
    assert_eq!(run.status.and_then(|s| s.code()), Some(137), "{run:?}");
    assert!(run.stderr.contains("out of memory"), "{}", run.stderr);
    let inspect: serde_json::Value = node.shoal(&["container", "inspect", "hog"]).ok().stdout_json();
    assert_eq!(inspect[0]["state"]["oom_killed"], true, "{inspect}");
    node.shoal(&["container", "rm", "hog"]).ok();
    node.assert_clean();
}

#[test]
fn images_in_use_are_kept_and_archives_load() {
    let (_registry, busybox) = registry_with_busybox();
    let node = LocalNode::start("imgs");
    node.shoal(&["run", "-d", "--name", "user", &busybox.reference, "sleep", "30"]).ok();
    let refused = node.shoal(&["image", "rm", &busybox.reference]);
    assert!(!refused.success() && refused.stderr.contains("container"), "{}", refused.stderr);
    node.shoal(&["container", "rm", "-f", "user"]).ok();
    node.shoal(&["image", "rm", &busybox.reference]).ok();
    assert!(node.shoal(&["image", "ls", "-q"]).ok().lines().is_empty());

    // Offline hosts: a `docker save` tar loads and runs.
    let archive = node.root.join("busybox.tar");
    TestImages::shared().unwrap().docker_save_archive(TestImages::BUSYBOX, "offline/busybox:1", &archive).unwrap();
    let loaded = node.shoal(&["image", "load", "-i", archive.to_str().unwrap()]).ok();
    assert!(loaded.stdout.contains("offline/busybox:1"), "{}", loaded.stdout);
    let run = node.shoal(&["run", "--rm", "offline/busybox:1", "echo", "loaded"]).ok();
    assert_eq!(run.stdout, "loaded\n");
    node.shoal(&["image", "prune"]).ok();
    node.assert_clean();
}

/// Each mistake is one sentence naming the bad value, a non-zero exit, and
/// no container or image left half-made.
#[test]
fn bad_input_is_refused_with_one_sentence_and_nothing_half_created() {
    let (registry, busybox) = registry_with_busybox();
    let node = LocalNode::start("bad");
    node.shoal(&["run", "-d", "--name", "taken", &busybox.reference, "sleep", "30"]).ok();
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let unknown_registry = format!("127.0.0.1:{closed_port}/busybox:1");
    let missing_image = format!("{}/nothing:here", registry.host());
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["image", "pull", "Not A/Reference"], "Not A/Reference"),
        (vec!["image", "pull", &unknown_registry], &unknown_registry[..15]),
        (vec!["image", "pull", &missing_image], "nothing"),
        (vec!["run", "--memory", "lots", &busybox.reference], "lots"),
        (vec!["run", "--cpus", "-2", &busybox.reference], "-2"),
        (vec!["run", "--mount", "type=bind,source=/no/such/dir,target=/x", &busybox.reference, "true"], "/no/such/dir"),
        (vec!["run", "--name", "taken", &busybox.reference, "true"], "taken"),
    ];
    for (args, named) in cases {
        let out = node.shoal_with_timeout(&args, Duration::from_secs(20));
        assert!(out.status.is_some() && !out.success(), "{args:?} should fail: {out:?}");
        let message = out.stderr.trim();
        assert_eq!(message.lines().count(), 1, "{args:?}: {message}");
        assert!(message.contains(named), "{args:?} should name {named:?}: {message}");
    }
    let rows = containers(&node);
    assert_eq!(rows.len(), 1, "only the first container exists");
    node.shoal(&["container", "rm", "-f", "taken"]).ok();
    node.assert_clean();
}

#[test]
fn filesystems_are_private_and_limits_hold() {
    let (_registry, busybox) = registry_with_busybox();
    let node = LocalNode::start("iso");
    let image = busybox.reference.as_str();

    // Writes stay in the container's own layer.
    node.shoal(&["run", "--name", "writer", image, "sh", "-c", "echo mine > /etc/marker"]).ok();
    let other = node.shoal(&["run", "--rm", image, "cat", "/etc/marker"]);
    assert!(!other.success(), "another container saw the write: {other:?}");

    // A read-only root refuses writes; a tmpfs mount is tmpfs and writable.
    let ro = node
        .shoal(&["run", "--rm", "--read-only", "--mount", "type=tmpfs,target=/scratch,tmpfs-size=8m", image, "sh", "-c",
            "touch /x 2>/dev/null && echo wrote-root; grep ' /scratch ' /proc/mounts | cut -d' ' -f3; touch /scratch/ok && echo wrote-tmpfs"])
        .ok();
    assert_eq!(ro.stdout, "tmpfs\nwrote-tmpfs\n");

    // The host's processes are invisible.
    let ps = node.shoal(&["run", "--rm", image, "sh", "-c", "ls /proc | grep -c '^[0-9]'"]).ok();
    assert!(ps.stdout.trim().parse::<u32>().unwrap() <= 3, "{}", ps.stdout);

    // A fork bomb under --pids-limit 20 is contained: forks fail inside
    // (busybox sh gives up), the host is unaffected.
    let bomb = node.shoal_with_timeout(
        &["run", "--rm", "--pids-limit", "20", image, "sh", "-c", "for i in $(seq 100); do sleep 30 & done; echo all-forked"],
        Duration::from_secs(30),
    );
    assert!(!bomb.success() && !bomb.stdout.contains("all-forked"), "{bomb:?}");
    assert!(bomb.stderr.contains("fork") || bomb.stderr.contains("Resource temporarily unavailable"), "{bomb:?}");
    assert!(crate::support::node::sh("true").success(), "the host can still fork");

    // --cpus becomes a CFS quota.
    let id = node.shoal(&["run", "-d", "--cpus", "0.5", image, "sleep", "30"]).ok().stdout.trim().to_string();
    let pids_max = format!("/sys/fs/cgroup/pids/{}/{id}/pids.max", node.cgroup_parent);
    assert_eq!(std::fs::read_to_string(&pids_max).map(|m| m.trim().to_string()).unwrap_or_default(), "max");
    let quota = std::fs::read_to_string(format!("/sys/fs/cgroup/cpu/{}/{id}/cpu.cfs_quota_us", node.cgroup_parent))
        .or_else(|_| std::fs::read_to_string(format!("/sys/fs/cgroup/{}/{id}/cpu.max", node.cgroup_parent)))
        .unwrap();
    assert!(quota.starts_with("50000"), "{quota}");
    node.shoal(&["container", "rm", "-f", &id, "writer"]).ok();
    node.assert_clean();
}
