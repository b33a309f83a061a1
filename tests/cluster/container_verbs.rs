//! The everyday container verbs beyond run/exec, through the real CLI and
//! daemon: pause and unpause (the freezer cgroup really stops the
//! processes, and `ls` / `inspect` say so), and named volumes.

use std::time::Duration;

use serde::Deserialize;

use crate::support::node::{registry_with_busybox, LocalNode};
use crate::support::wait_until;

const WAIT: Duration = Duration::from_secs(20);

#[derive(Deserialize)]
struct Row {
    name: String,
    state: String,
    status: String,
}

/// The counter the container's loop writes, read through its init's view
/// of the root (this works while the container is frozen).
fn count(pid: i64) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/root/tmp/count")).ok().and_then(|c| c.trim().parse().ok()).unwrap_or(0)
}

/// The freezer's own word on the container's cgroup, from the host.
fn freezer_state(pid: i64) -> String {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("the container's cgroups");
    for line in cgroups.lines() {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next(), fields.next().unwrap_or_default(), fields.next().unwrap_or_default());
        if controllers.split(',').any(|c| c == "freezer") {
            return std::fs::read_to_string(format!("/sys/fs/cgroup/freezer{path}/freezer.state")).unwrap_or_default().trim().to_string();
        }
        if controllers.is_empty() && std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            let frozen = std::fs::read_to_string(format!("/sys/fs/cgroup{path}/cgroup.freeze")).unwrap_or_default();
            return if frozen.trim() == "1" { "FROZEN".into() } else { "THAWED".into() };
        }
    }
    panic!("no freezer cgroup for pid {pid}:\n{cgroups}");
}

#[test]
fn pause_freezes_the_processes_and_unpause_resumes_them() {
    let (_registry, busybox) = registry_with_busybox();
    let node = LocalNode::start("pause");
    let script = "i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.02; done";
    node.shoal(&["run", "-d", "--name", "ticker", &busybox.reference, "sh", "-c", script]).ok();
    let inspect = || -> serde_json::Value { node.shoal(&["container", "inspect", "ticker"]).ok().stdout_json::<Vec<serde_json::Value>>().remove(0) };
    let pid = inspect()["state"]["pid"].as_i64().expect("a running container's pid");
    wait_until(WAIT, "the loop to count", || (count(pid) >= 3).then_some(()));

    node.shoal(&["container", "pause", "ticker"]).ok();
    assert_eq!(freezer_state(pid), "FROZEN");
    let frozen_at = count(pid);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(count(pid), frozen_at, "a paused container's loop must not run");
    assert_eq!(inspect()["state"]["paused"], true);
    let rows: Vec<Row> = node.shoal(&["container", "ls", "--format", "json"]).ok().stdout_json();
    let row = rows.iter().find(|r| r.name == "ticker").expect("ticker listed");
    assert_eq!(row.state, "paused");
    assert!(row.status.ends_with("(Paused)"), "{}", row.status);

    // Refused while paused, with the way out named; pausing twice too.
    let exec = node.shoal(&["exec", "ticker", "true"]);
    assert!(!exec.success() && exec.stderr.contains("paused") && exec.stderr.contains("unpause"), "{}", exec.stderr);
    let again = node.shoal(&["container", "pause", "ticker"]);
    assert!(!again.success() && again.stderr.contains("already paused"), "{}", again.stderr);

    node.shoal(&["container", "unpause", "ticker"]).ok();
    assert_eq!(freezer_state(pid), "THAWED");
    wait_until(WAIT, "the loop to count again", || (count(pid) > frozen_at + 2).then_some(()));
    assert_eq!(inspect()["state"]["paused"], false);
    let not_paused = node.shoal(&["container", "unpause", "ticker"]);
    assert!(!not_paused.success() && not_paused.stderr.contains("not paused"), "{}", not_paused.stderr);

    // A paused container still stops (thawed first, so the signal lands).
    node.shoal(&["container", "pause", "ticker"]).ok();
    let stop = node.shoal(&["container", "stop", "-t", "1", "ticker"]).ok();
    assert!(stop.stdout.contains("ticker"));
    let stopped = node.shoal(&["container", "pause", "ticker"]);
    assert!(!stopped.success() && stopped.stderr.contains("not running"), "{}", stopped.stderr);
    node.shoal(&["container", "rm", "ticker"]).ok();
    node.assert_clean();
}

#[test]
fn volumes_keep_data_across_containers_and_are_refused_or_pruned_as_docker_does() {
    let (_registry, busybox) = registry_with_busybox();
    let node = LocalNode::start("volumes");

    let named = node.shoal(&["volume", "create", "--label", "team=web", "data"]).ok();
    assert_eq!(named.stdout.trim(), "data");
    let inspected: Vec<serde_json::Value> = node.shoal(&["volume", "inspect", "data"]).ok().stdout_json();
    assert_eq!(inspected[0]["Labels"]["team"], "web");
    assert_eq!(inspected[0]["Driver"], "local");

    // Written by one container (-v), read by the next (--mount); a name
    // used for the first time makes the volume, as in docker.
    node.shoal(&["run", "--rm", "-v", "data:/data", &busybox.reference, "sh", "-c", "echo kept > /data/file"]).ok();
    let read = node.shoal(&["run", "--rm", "--mount", "type=volume,source=data,target=/in,readonly", &busybox.reference, "cat", "/in/file"]).ok();
    assert_eq!(read.stdout, "kept\n");
    node.shoal(&["run", "-d", "--name", "user", "-v", "implicit:/x", &busybox.reference, "sleep", "1000"]).ok();
    let listed = node.shoal(&["volume", "ls", "-q"]).ok().stdout;
    assert_eq!(listed.lines().collect::<Vec<_>>(), vec!["data", "implicit"], "{listed}");

    // In use (by a running or stopped container): refused, naming it.
    let refused = node.shoal(&["volume", "rm", "implicit"]);
    assert!(!refused.success() && refused.stderr.contains("user"), "{}", refused.stderr);
    node.shoal(&["container", "stop", "-t", "1", "user"]).ok();
    assert!(node.shoal(&["volume", "rm", "implicit"]).stderr.contains("user"));

    // Prune removes only what nothing uses.
    let pruned = node.shoal(&["volume", "prune", "-f"]).ok().stdout;
    assert!(pruned.contains("data") && !pruned.contains("implicit"), "{pruned}");
    assert_eq!(node.shoal(&["volume", "ls", "-q"]).ok().stdout.trim(), "implicit");
    node.shoal(&["container", "rm", "user"]).ok();
    node.shoal(&["volume", "rm", "implicit"]).ok();

    // Bad input: one sentence each, nothing made.
    let slash = node.shoal(&["volume", "create", "a/b"]);
    assert!(!slash.success() && slash.stderr.contains("a/b") && slash.stderr.trim().lines().count() == 1, "{}", slash.stderr);
    let missing = node.shoal(&["volume", "inspect", "nope"]);
    assert!(!missing.success() && missing.stderr.contains("no such volume"), "{}", missing.stderr);
    assert!(node.shoal(&["volume", "ls", "-q"]).ok().stdout.trim().is_empty());
    node.assert_clean();
}

#[test]
fn top_lists_the_processes_ls_filters_and_prune_removes_only_stopped_containers() {
    let (_registry, busybox) = registry_with_busybox();
    let node = LocalNode::start("top");
    node.shoal(&["run", "-d", "--name", "worker", "--label", "app=web", &busybox.reference, "sh", "-c", "sleep 1001 & exec sleep 1000"]).ok();
    node.shoal(&["run", "--name", "finished", &busybox.reference, "true"]).ok();

    // Both processes, with ps -ef's header, pids as the host sees them.
    let top = wait_until(WAIT, "both processes", || {
        let top = node.shoal(&["container", "top", "worker"]).ok().stdout;
        (top.contains("sleep 1000") && top.contains("sleep 1001")).then_some(top)
    });
    let header: Vec<&str> = top.lines().next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(header, ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"], "{top}");
    assert!(top.lines().skip(1).all(|l| l.split_whitespace().next() == Some("root")), "{top}");

    let names = |filters: &[&str]| -> Vec<String> {
        let mut args = vec!["container", "ls", "--format", "json"];
        for f in filters {
            args.extend(["--filter", f]);
        }
        let mut names: Vec<String> = node.shoal(&args).ok().stdout_json::<Vec<Row>>().into_iter().map(|r| r.name).collect();
        names.sort();
        names
    };
    assert_eq!(names(&[]), ["worker"]);
    assert_eq!(names(&["status=exited"]), ["finished"], "asking for exited ones lists stopped containers");
    assert_eq!(names(&["label=app=web"]), ["worker"]);
    assert_eq!(names(&["label=app=db"]), Vec::<String>::new());
    assert_eq!(names(&["name=work", "status=running"]), ["worker"]);
    // docker's Go templates: plain lines, and `table` lining up under a header.
    let plain = node.shoal(&["container", "ls", "-a", "--format", "{{.Names}}: {{.State}} {{.Label \"app\"}}", "-f", "name=worker"]).ok();
    assert_eq!(plain.stdout, "worker: running web\n");
    let table = node.shoal(&["container", "ls", "-a", "--format", "table {{.Names}}\\t{{.Status}}"]).ok().stdout;
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("NAMES") && lines[0].contains("STATUS") && lines.len() == 3, "{table}");
    let column = lines[0].find("STATUS").expect("a STATUS column");
    for line in &lines[1..] {
        let (name, status) = line.split_at(column);
        assert!(name.ends_with(' ') && !status.starts_with(' ') && (status.starts_with("Up") || status.starts_with("Exited")), "{table}");
    }
    // docker's shortcuts: `ps` is `container ls`, `images` is `image ls`.
    assert_eq!(node.shoal(&["ps", "--format", "{{.Names}}"]).ok().stdout, "worker\n");
    assert!(node.shoal(&["images"]).ok().stdout.contains("busybox"));
    let unknown = node.shoal(&["container", "ls", "--format", "{{.Colour}}"]);
    assert!(!unknown.success() && unknown.stderr.contains("{{.Colour}}") && unknown.stderr.contains("{{.Names}}"), "{}", unknown.stderr);
    let bad = node.shoal(&["container", "ls", "--filter", "colour=red"]);
    assert!(!bad.success() && bad.stderr.contains("colour") && bad.stderr.trim().lines().count() == 1, "{}", bad.stderr);

    let pruned = node.shoal(&["container", "prune", "-f"]).ok().stdout;
    assert!(pruned.starts_with("Deleted Containers:") && pruned.contains("Total reclaimed space"), "{pruned}");
    let left: Vec<Row> = node.shoal(&["container", "ls", "-a", "--format", "json"]).ok().stdout_json();
    assert_eq!(left.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["worker"], "prune keeps the running one");
    let stopped_top = node.shoal(&["container", "top", "finished"]);
    assert!(!stopped_top.success(), "{stopped_top:?}");
    node.shoal(&["container", "rm", "-f", "worker"]).ok();
    node.assert_clean();
}

#[test]
fn logs_since_and_until_cut_by_time() {
    let (_registry, busybox) = registry_with_busybox();
    let node = LocalNode::start("since");
    node.shoal(&["run", "--name", "stamps", &busybox.reference, "sh", "-c", "echo early; sleep 1.5; echo late"]).ok();
    let stamped = node.shoal(&["container", "logs", "-t", "stamps"]).ok().stdout;
    let times: Vec<std::time::SystemTime> = stamped
        .lines()
        .map(|l| humantime::parse_rfc3339_weak(l.split_whitespace().next().unwrap_or_default().trim_end_matches('Z')).expect("an RFC 3339 time"))
        .collect();
    assert_eq!(times.len(), 2, "{stamped}");
    let cut = times[0] + times[1].duration_since(times[0]).expect("in order") / 2;
    let cut = format!("{:.3}", cut.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64());
    assert_eq!(node.shoal(&["container", "logs", "--since", &cut, "stamps"]).ok().stdout, "late\n");
    assert_eq!(node.shoal(&["container", "logs", "--until", &cut, "stamps"]).ok().stdout, "early\n");
    assert_eq!(node.shoal(&["container", "logs", "--since", "1h", "stamps"]).ok().stdout, "early\nlate\n");
    let bad = node.shoal(&["container", "logs", "--since", "yesterday", "stamps"]);
    assert!(!bad.success() && bad.stderr.contains("yesterday"), "{}", bad.stderr);
    node.shoal(&["container", "rm", "stamps"]).ok();
    node.assert_clean();
}

#[test]
fn create_then_start_runs_the_container_and_start_runs_it_again() {
    let (_registry, busybox) = registry_with_busybox();
    let node = LocalNode::start("create");
    let id = node.shoal(&["container", "create", "--name", "later", &busybox.reference, "sh", "-c", "echo hello from $(hostname); exit 4"]).ok().stdout;
    assert_eq!(id.trim().len(), 64, "create prints the id: {id}");
    let state = |node: &LocalNode| -> String {
        node.shoal(&["container", "ls", "-a", "--format", "json"]).ok().stdout_json::<Vec<Row>>().remove(0).state
    };
    assert_eq!(state(&node), "created");

    // -a streams its output and ends with its exit code.
    let started = node.shoal(&["container", "start", "-a", "later"]);
    assert_eq!(started.status.and_then(|s| s.code()), Some(4), "{started:?}");
    assert!(started.stdout.starts_with("hello from "), "{}", started.stdout);
    assert_eq!(state(&node), "exited");
    // A stopped container starts again, as in docker: the same container,
    // its log growing by this run's output.
    let again = node.shoal(&["container", "start", "-a", "later"]);
    assert_eq!((again.status.and_then(|s| s.code()), again.stdout.lines().count()), (Some(4), 1), "{again:?}");
    assert_eq!(node.shoal(&["container", "logs", "later"]).ok().stdout.lines().count(), 2);

    // Without -a it returns at once, naming the container.
    node.shoal(&["container", "create", "--name", "bg", &busybox.reference, "sleep", "1000"]).ok();
    assert_eq!(node.shoal(&["container", "start", "bg"]).ok().stdout, "bg\n");
    node.shoal(&["exec", "bg", "true"]).ok();
    node.shoal(&["container", "rm", "-f", "bg", "later"]).ok();
    node.assert_clean();
}

/// `12.5MiB` -> bytes.
fn mebibytes(size: &str) -> f64 {
    let units = [("KiB", 1.0 / 1024.0), ("MiB", 1.0), ("GiB", 1024.0), ("B", 1.0 / 1024.0 / 1024.0)];
    let (number, scale) = units.iter().find_map(|(unit, scale)| size.strip_suffix(unit).map(|n| (n, *scale))).expect("a size with a unit");
    number.parse::<f64>().expect("a number") * scale
}

#[test]
fn stats_shows_memory_rising_under_the_limit_as_json() {
    let (_registry, busybox) = registry_with_busybox();
    let node = LocalNode::start("stats");
    node.shoal(&["run", "-d", "--name", "hog", "--memory", "64m", &busybox.reference, "sleep", "1000"]).ok();
    let reading = || -> serde_json::Value {
        let out = node.shoal(&["container", "stats", "--no-stream", "--format", "json", "hog"]).ok().stdout;
        serde_json::from_str(out.lines().next().expect("one line per container")).expect("a JSON line")
    };
    let usage = |r: &serde_json::Value| -> (f64, f64) {
        let text = r["MemUsage"].as_str().expect("MemUsage");
        let (used, limit) = text.split_once(" / ").expect("USED / LIMIT");
        (mebibytes(used), mebibytes(limit))
    };
    let before = reading();
    assert_eq!(before["Name"], "hog");
    assert!(before["CPUPerc"].as_str().is_some_and(|c| c.ends_with('%')), "{before}");
    assert!(before["PIDs"].as_str().is_some_and(|p| p.parse::<u32>().is_ok_and(|n| n >= 1)), "{before}");
    let (used_before, limit) = usage(&before);
    assert_eq!(limit, 64.0, "{before}");

    // 24 MiB on the container's /dev/shm is charged to its memory.
    node.shoal(&["exec", "hog", "dd", "if=/dev/zero", "of=/dev/shm/fill", "bs=1M", "count=24"]).ok();
    let after = reading();
    let (used_after, _) = usage(&after);
    assert!(used_after >= used_before + 20.0 && used_after < 64.0, "{before} -> {after}");
    let percent: f64 = after["MemPerc"].as_str().and_then(|p| p.strip_suffix('%')).and_then(|p| p.parse().ok()).expect("MemPerc");
    assert!((30.0..100.0).contains(&percent), "{after}");

    let table = node.shoal(&["container", "stats", "--no-stream"]).ok().stdout;
    assert!(table.starts_with("CONTAINER ID") && table.contains("hog"), "{table}");
    node.shoal(&["container", "rm", "-f", "hog"]).ok();
    node.assert_clean();
}

#[test]
fn image_tag_adds_a_name_that_runs_and_bad_tags_are_one_sentence() {
    let (_registry, busybox) = registry_with_busybox();
    let node = LocalNode::start("tag");
    node.shoal(&["image", "pull", "-q", &busybox.reference]).ok();
    node.shoal(&["image", "tag", &busybox.reference, "mybox:v2"]).ok();
    let listed = node.shoal(&["image", "ls"]).ok().stdout;
    assert!(listed.lines().any(|l| l.starts_with("mybox") && l.contains("v2")), "{listed}");
    assert_eq!(node.shoal(&["run", "--rm", "mybox:v2", "echo", "tagged"]).ok().stdout, "tagged\n");
    for (source, target, named) in [(busybox.reference.as_str(), "Not:Valid", "Not:Valid"), ("nosuch:1", "other:1", "nosuch")] {
        let refused = node.shoal(&["image", "tag", source, target]);
        assert!(!refused.success() && refused.stderr.contains(named) && refused.stderr.trim().lines().count() == 1, "{}", refused.stderr);
    }
    node.assert_clean();
}

#[test]
fn rename_keeps_the_container_and_its_state() {
    let (_registry, busybox) = registry_with_busybox();
    let mut node = LocalNode::start("rename");
    node.shoal(&["run", "-d", "--name", "before", &busybox.reference, "sleep", "1000"]).ok();
    node.shoal(&["run", "-d", "--name", "taken", &busybox.reference, "sleep", "1000"]).ok();
    node.shoal(&["container", "rename", "before", "after"]).ok();
    node.shoal(&["exec", "after", "true"]).ok();
    let inspect: Vec<serde_json::Value> = node.shoal(&["container", "inspect", "after"]).ok().stdout_json();
    assert_eq!((inspect[0]["name"].as_str(), inspect[0]["state"]["status"].as_str()), (Some("after"), Some("running")));
    assert!(!node.shoal(&["container", "inspect", "before"]).success());

    // Refused: a name in use, an invalid one.
    let taken = node.shoal(&["container", "rename", "after", "taken"]);
    assert!(!taken.success() && taken.stderr.contains("taken") && taken.stderr.contains("in use"), "{}", taken.stderr);
    let invalid = node.shoal(&["container", "rename", "after", "no/slash"]);
    assert!(!invalid.success() && invalid.stderr.contains("no/slash"), "{}", invalid.stderr);

    // The new name is on disk: it survives a daemon restart, and the
    // container still stops and goes under it.
    node.restart_daemon();
    node.shoal(&["container", "stop", "-t", "1", "after"]).ok();
    node.shoal(&["container", "rm", "-f", "after", "taken"]).ok();
    node.assert_clean();
}

#[test]
fn commit_makes_an_image_of_the_containers_changes_that_runs() {
    let (_registry, busybox) = registry_with_busybox();
    let node = LocalNode::start("commit");
    // As the labs do: change a container, then keep its changes as an image.
    node.shoal(&["run", "--name", "lab", &busybox.reference, "sh", "-c", "echo made-in-lab > /solution.txt && rm /etc/group"]).ok();
    let commit = node.shoal(&["container", "commit", "-m", "the answer", "-c", "CMD cat /solution.txt", "lab", "lab-soln:1"]).ok();
    let id = commit.stdout.trim().to_string();
    assert!(id.starts_with("sha256:") && id.len() == 71, "{id}");
    assert_eq!(node.shoal(&["run", "--rm", "lab-soln:1"]).ok().stdout, "made-in-lab\n", "the new CMD runs and the file is there");
    let deleted = node.shoal(&["run", "--rm", "lab-soln:1", "sh", "-c", "test -e /etc/group && echo present || echo deleted"]).ok();
    assert_eq!(deleted.stdout, "deleted\n", "a deletion in the container is one in the image");
    let image: serde_json::Value = node.shoal(&["image", "inspect", "lab-soln:1"]).ok().stdout_json::<Vec<serde_json::Value>>().remove(0);
    let base: serde_json::Value = node.shoal(&["image", "inspect", &busybox.reference]).ok().stdout_json::<Vec<serde_json::Value>>().remove(0);
    assert_eq!(image["diff_ids"].as_array().map(Vec::len), base["diff_ids"].as_array().map(|d| d.len() + 1), "one layer over the base");
    // `image history` shows the commit as the newest step, with its message and a layer of its own.
    let steps: Vec<serde_json::Value> = node.shoal(&["image", "history", "--format", "json", "lab-soln:1"]).ok().stdout_json();
    assert_eq!(steps[0]["id"].as_str(), Some(id.as_str()));
    assert_eq!(steps[0]["comment"], "the answer");
    assert!(steps[0]["created_by"].as_str().unwrap_or_default().contains("made-in-lab"), "{steps:?}");
    assert!(steps[0]["size"].as_u64().unwrap_or(0) > 0 && steps.len() >= 2, "{steps:?}");
    assert!(steps[1..].iter().all(|s| s["id"] == "<missing>"), "{steps:?}");
    let table = node.shoal(&["image", "history", "lab-soln:1"]).ok().stdout;
    assert!(table.starts_with("IMAGE") && table.contains("the answer"), "{table}");

    // A running container is frozen while committed, then runs on.
    node.shoal(&["run", "-d", "--name", "live", &busybox.reference, "sh", "-c", "echo live > /live.txt; exec sleep 3600"]).ok();
    wait_until(WAIT, "the live container's file", || node.shoal(&["exec", "live", "cat", "/live.txt"]).success().then_some(()));
    node.shoal(&["commit", "live", "live-snap"]).ok();
    let state: serde_json::Value = node.shoal(&["container", "inspect", "live"]).ok().stdout_json::<Vec<serde_json::Value>>().remove(0);
    assert_eq!((state["state"]["status"].as_str(), state["state"]["paused"].as_bool()), (Some("running"), Some(false)));
    assert_eq!(node.shoal(&["run", "--rm", "live-snap", "cat", "/live.txt"]).ok().stdout, "live\n");

    for (args, expected) in [
        (vec!["commit", "nosuch", "x:1"], "no such container: nosuch"),
        (vec!["commit", "lab", "Bad Name!"], "Bad Name!"),
        (vec!["commit", "-c", "RUN make", "lab", "x:1"], "only CMD, ENTRYPOINT"),
    ] {
        let out = node.shoal(&args);
        assert!(!out.success() && out.stderr.contains(expected) && out.stderr.trim().lines().count() == 1, "{args:?}: {}", out.stderr);
    }
    node.shoal(&["container", "rm", "-f", "live", "lab"]).ok();
    node.assert_clean();
}
