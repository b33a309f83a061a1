//! Secrets and configs on a real 3-manager, 2-worker cluster: created
//! through the CLI, delivered to the nodes that run tasks using them, seen
//! by the tasks' processes at their targets (read through /proc/PID/root),
//! and found on no disk, in no log and on no node without such a task.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::support::swarm::{Swarm, TaskRow, CONVERGE, HOSTS, SLEEPER};
use crate::support::{wait_until, Host, ValueFile};

/// A value no byte search could find by chance.
fn distinctive(what: &str) -> String {
    let random: u64 = rand::random();
    format!("shoal-{what}-{random:016x}-{}", std::process::id())
}

fn create_secret(swarm: &Swarm, name: &str, value: &[u8]) -> String {
    let file = ValueFile::new(name, value);
    swarm.shoal(&["secret", "create", name, file.path()]).ok().stdout.trim().to_string()
}

fn create_config(swarm: &Swarm, name: &str, value: &[u8]) -> String {
    let file = ValueFile::new(name, value);
    swarm.shoal(&["config", "create", name, file.path()]).ok().stdout.trim().to_string()
}

/// The pid (in this machine's pid namespace) of the task's container.
fn task_pid(swarm: &Swarm, task: &TaskRow) -> i64 {
    let containers: Vec<serde_json::Value> = swarm.cluster.shoal(&task.node, &["container", "ls", "--format", "json"]).ok().stdout_json();
    let id = containers
        .iter()
        .find(|c| c["labels"]["shoal.task.id"] == task.id.as_str())
        .and_then(|c| c["id"].as_str())
        .unwrap_or_else(|| panic!("no container for {} on {}: {containers:?}", task.name, task.node))
        .to_string();
    let inspect: serde_json::Value = swarm.cluster.shoal(&task.node, &["container", "inspect", &id]).ok().stdout_json();
    inspect[0]["state"]["pid"].as_i64().unwrap_or_else(|| panic!("{} has no pid: {inspect}", task.name))
}

/// A file as the task's process sees it: content, owner, group, mode.
fn file_in(pid: i64, path: &str) -> Option<(Vec<u8>, u32, u32, u32)> {
    let full = format!("/proc/{pid}/root{path}");
    let meta = std::fs::metadata(&full).ok()?;
    Some((std::fs::read(&full).ok()?, meta.uid(), meta.gid(), meta.mode() & 0o7777))
}

/// The filesystem type and options of the mount at `path` in the task.
fn mount_in(pid: i64, path: &str) -> Option<(String, String)> {
    let table = std::fs::read_to_string(format!("/proc/{pid}/mounts")).ok()?;
    table.lines().rev().map(|l| l.split(' ').collect::<Vec<_>>()).find(|f| f.len() > 3 && f[1] == path).map(|f| (f[2].to_string(), f[3].to_string()))
}

/// What `shoal info` says the host's agent holds in memory.
fn held(swarm: &Swarm, host: &str) -> (Vec<String>, Vec<String>) {
    let info: serde_json::Value = swarm.cluster.shoal(host, &["info", "--format", "json"]).ok().stdout_json();
    let ids = |key: &str| info[key].as_array().unwrap_or_else(|| panic!("no {key} in {info}")).iter().filter_map(|v| v.as_str().map(String::from)).collect();
    (ids("secrets_held"), ids("configs_held"))
}

fn host_dir(host: &Host) -> PathBuf {
    host.socket.parent().expect("the socket lies in the host's directory").to_path_buf()
}

/// The tasks with a secrets tmpfs on `host` (dirs under its run directory).
fn tmpfs_dirs(host: &Host) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(host_dir(host).join("task-files")) else { return Vec::new() };
    entries.flatten().filter_map(|e| e.file_name().to_str().map(String::from)).collect()
}

/// Every regular file below `dir` (symlinks not followed) that holds
/// `needle`, and how many files were read.
fn files_holding(dir: &Path, needle: &[u8]) -> (Vec<PathBuf>, usize) {
    let (mut found, mut read) = (Vec::new(), 0);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
        if meta.is_dir() {
            stack.extend(std::fs::read_dir(&path).into_iter().flatten().flatten().map(|e| e.path()));
        } else if meta.is_file() {
            read += 1;
            if std::fs::read(&path).is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle)) {
                found.push(path);
            }
        }
    }
    (found, read)
}

#[test]
fn secrets_and_configs_reach_their_tasks_only_and_never_a_disk() {
    let swarm = Swarm::up("sec");
    let value = distinctive("db-pass");
    let lonely_value = distinctive("lonely");
    let conf = format!("listen = 8080\n# {}\n", distinctive("conf"));
    let db_pass = create_secret(&swarm, "db_pass", value.as_bytes());
    let lonely = create_secret(&swarm, "lonely", lonely_value.as_bytes());
    let app_conf = create_config(&swarm, "app.conf", conf.as_bytes());

    // On every node: the secret owned by 1000:1001 mode 0400, the config
    // with the default owner and mode 0440.
    swarm
        .create(
            "web",
            &["--mode", "global", "--secret", "source=db_pass,uid=1000,gid=1001,mode=0400", "--config", "source=app.conf,target=/etc/app.conf,mode=0440"],
            SLEEPER,
        )
        .ok();
    // On worker1 only: no other node may ever see this one.
    swarm.create("pinned", &["--constraint", "node.hostname==worker1", "--secret", "lonely"], SLEEPER).ok();
    let tasks = swarm.wait_running("web", 5);
    assert_eq!(tasks.iter().map(|t| t.node.as_str()).collect::<BTreeSet<_>>().len(), 5, "{tasks:?}");
    for task in &tasks {
        let pid = task_pid(&swarm, task);
        let (bytes, uid, gid, mode) = file_in(pid, "/run/secrets/db_pass").unwrap_or_else(|| panic!("{} has no /run/secrets/db_pass", task.name));
        assert_eq!(bytes, value.as_bytes(), "{} on {}", task.name, task.node);
        assert_eq!((uid, gid, mode), (1000, 1001, 0o400), "{} on {}", task.name, task.node);
        let (fs, options) = mount_in(pid, "/run/secrets/db_pass").unwrap_or_else(|| panic!("no mount at /run/secrets/db_pass in {}", task.name));
        assert_eq!(fs, "tmpfs", "{} mounts the secret from {fs} ({options})", task.name);
        assert!(options.split(',').any(|o| o == "ro"), "read-only in {}: {options}", task.name);
        let (bytes, uid, gid, mode) = file_in(pid, "/etc/app.conf").unwrap_or_else(|| panic!("{} has no /etc/app.conf", task.name));
        assert_eq!((bytes.as_slice(), uid, gid, mode), (conf.as_bytes(), 0, 0, 0o440), "{} on {}", task.name, task.node);
        assert!(file_in(pid, "/run/secrets/lonely").is_none(), "{} got another service's secret", task.name);
    }
    // The node side: a tmpfs per task under the run directory, nodev,nosuid,noexec.
    let mounts = std::fs::read_to_string("/proc/self/mounts").expect("the mount table");
    for task in &tasks {
        let dir = host_dir(&swarm.cluster.host(&task.node)).join("task-files").join(&task.id);
        let line = mounts.lines().find(|l| l.split(' ').nth(1) == dir.to_str()).unwrap_or_else(|| panic!("no tmpfs at {}", dir.display()));
        let options: Vec<&str> = line.split(' ').nth(3).unwrap_or_default().split(',').collect();
        assert!(line.starts_with("tmpfs ") && ["nodev", "nosuid", "noexec"].iter().all(|o| options.contains(o)), "{line}");
    }

    // The agents' own view: worker1 holds both secrets; the others never got `lonely`.
    for host in HOSTS {
        let (secrets, configs) = held(&swarm, host);
        assert!(secrets.contains(&db_pass) && configs == [app_conf.clone()], "{host} holds {secrets:?} {configs:?}");
        assert_eq!(secrets.contains(&lonely), host == "worker1", "{host} holds {secrets:?}");
        let log = std::fs::read_to_string(&swarm.cluster.host(host).log).expect("the daemon log");
        let received = log.lines().any(|l| l.contains("secret or config received") && l.contains(&lonely));
        assert_eq!(received, host == "worker1", "{host}'s log on receiving {lonely}");
    }
    let worker2 = swarm.cluster.host("worker2");
    assert_eq!(tmpfs_dirs(&worker2).len(), 1, "worker2 has the tmpfs of its web task only: {:?}", tmpfs_dirs(&worker2));

    // A restarted daemon holds nothing from disk: it gets the values again from the managers.
    swarm.cluster.stop("worker2", false);
    swarm.cluster.start("worker2");
    wait_until(CONVERGE, "worker2's agent to get db_pass again", || held(&swarm, "worker2").0.contains(&db_pass).then_some(()));

    // Shown by id and name, never by value.
    let inspect = swarm.shoal(&["service", "inspect", "web"]).ok().stdout;
    assert!(inspect.contains(&db_pass) && inspect.contains("\"db_pass\"") && !inspect.contains(&value), "{inspect}");
    let secret = swarm.shoal(&["secret", "inspect", "db_pass"]).ok().stdout;
    assert!(!secret.contains(&value) && secret.contains("\"web\""), "{secret}");
    let listed: Vec<serde_json::Value> = swarm.shoal(&["secret", "ls", "--format", "json"]).ok().stdout_json();
    let services = |name: &str| listed.iter().find(|s| s["name"] == name).map(|s| s["services"].clone());
    assert_eq!(services("db_pass"), Some(serde_json::json!(["web"])), "{listed:?}");
    assert_eq!(services("lonely"), Some(serde_json::json!(["pinned"])), "{listed:?}");

    // No byte of either value on any node's data root (managers' Raft
    // files included) or in any daemon's log.
    let mut searched = 0;
    for host in swarm.cluster.hosts() {
        // The search finds the value where it is: the task's tmpfs.
        let (in_tmpfs, _) = files_holding(&host_dir(&host).join("task-files"), value.as_bytes());
        assert_eq!(in_tmpfs.len(), 1, "{}'s tmpfs holds db_pass once: {in_tmpfs:?}", host.name);
        for needle in [&value, &lonely_value] {
            let (found, read) = files_holding(&host_dir(&host).join("data"), needle.as_bytes());
            assert!(found.is_empty(), "{} found on {}'s disk in {found:?}", needle, host.name);
            searched += read;
            let log = std::fs::read(&host.log).expect("the daemon log");
            assert!(!log.windows(needle.len()).any(|w| w == needle.as_bytes()), "{needle} in {}", host.log.display());
        }
    }
    assert!(searched > 100, "the search read {searched} files: the data roots are where the test thinks");

    // Gone with the tasks: tmpfs and the agents' copies.
    for service in ["web", "pinned"] {
        swarm.shoal(&["service", "rm", service]).ok();
    }
    wait_until(CONVERGE, "every agent to drop the values and every tmpfs to go", || {
        HOSTS
            .iter()
            .all(|h| {
                let (secrets, configs) = held(&swarm, h);
                secrets.is_empty() && configs.is_empty() && tmpfs_dirs(&swarm.cluster.host(h)).is_empty()
            })
            .then_some(())
    });
    swarm.shoal(&["secret", "rm", "db_pass", "lonely"]).ok();
    swarm.shoal(&["config", "rm", "app.conf"]).ok();
    assert!(swarm.shoal(&["secret", "ls", "-q"]).ok().lines().is_empty());
}

/// The running tasks of `service` made from its latest spec, once
/// exactly `n` run and nothing older is wanted.
fn new_tasks(swarm: &Swarm, service: &str, n: usize, old: &BTreeSet<String>) -> Vec<TaskRow> {
    wait_until(CONVERGE, &format!("{n} new tasks of {service}"), || {
        let running = swarm.running(service);
        (running.len() == n && running.iter().all(|t| !old.contains(&t.id))).then_some(running)
    })
}

#[test]
fn rotation_removal_and_bad_input() {
    let swarm = Swarm::up("secrot");
    let v1 = distinctive("v1");
    let v2 = distinctive("v2");
    create_secret(&swarm, "db_pass", v1.as_bytes());
    swarm.create("app", &["--replicas", "2", "--secret", "db_pass"], SLEEPER).ok();
    let first = swarm.wait_running("app", 2);
    for task in &first {
        let (bytes, uid, gid, mode) = file_in(task_pid(&swarm, task), "/run/secrets/db_pass").expect("the secret in the task");
        assert_eq!((bytes.as_slice(), uid, gid, mode), (v1.as_bytes(), 0, 0, 0o444), "docker's defaults in {}", task.name);
    }

    // In use: refused, naming the service, and still there.
    let refused = swarm.shoal(&["secret", "rm", "db_pass"]);
    assert!(!refused.success() && refused.stderr.contains("in use by service app"), "{refused:?}");
    assert_eq!(refused.stderr.trim().lines().count(), 1, "{refused:?}");
    assert!(swarm.shoal(&["secret", "ls"]).ok().stdout.contains("db_pass"));

    // Rotation: the new value under the old name, in new tasks.
    create_secret(&swarm, "db_pass_v2", v2.as_bytes());
    swarm.shoal(&["service", "update", "--secret-rm", "db_pass", "--secret-add", "source=db_pass_v2,target=db_pass", "app"]).ok();
    let old: BTreeSet<String> = first.iter().map(|t| t.id.clone()).collect();
    let rotated = new_tasks(&swarm, "app", 2, &old);
    for task in &rotated {
        let (bytes, ..) = file_in(task_pid(&swarm, task), "/run/secrets/db_pass").expect("the rotated secret");
        assert_eq!(bytes, v2.as_bytes(), "{} serves the new value", task.name);
    }
    // The old one is free once the old tasks are gone.
    wait_until(CONVERGE, "db_pass to be removable", || swarm.shoal(&["secret", "rm", "db_pass"]).success().then_some(()));

    // --secret-rm: new tasks have no file.
    swarm.shoal(&["service", "update", "--secret-rm", "db_pass_v2", "app"]).ok();
    let old: BTreeSet<String> = rotated.iter().map(|t| t.id.clone()).collect();
    for task in &new_tasks(&swarm, "app", 2, &old) {
        assert!(file_in(task_pid(&swarm, task), "/run/secrets/db_pass").is_none(), "{} still has the secret", task.name);
    }
    wait_until(CONVERGE, "the agents to drop db_pass_v2", || HOSTS.iter().all(|h| held(&swarm, h).0.is_empty()).then_some(()));

    // Bad input: one sentence naming the value, nothing written.
    let empty = ValueFile::new("empty", b"");
    let big = ValueFile::new("big", &vec![b'x'; 600 * 1024]);
    let fine = ValueFile::new("fine", b"fine");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["secret", "create", "e1", empty.path()], "empty"),
        (vec!["secret", "create", "b1", big.path()], "500 KiB"),
        (vec!["secret", "create", "bad name", fine.path()], "\"bad name\""),
        (vec!["secret", "create", "trail.", fine.path()], "\"trail.\""),
        (vec!["secret", "create", "db_pass_v2", fine.path()], "db_pass_v2"),
        (vec!["secret", "rm", "no-such-secret"], "no-such-secret"),
        (vec!["config", "create", "c.empty", empty.path()], "empty"),
        (vec!["service", "create", "--detach", "--name", "s1", "--secret", "nope", &swarm.image], "\"nope\""),
        (vec!["service", "create", "--detach", "--name", "s2", "--config", "nope.conf", &swarm.image], "\"nope.conf\""),
        (vec!["service", "create", "--detach", "--name", "s3", "--secret", "source=db_pass_v2,target=../../etc/shadow", &swarm.image], "../../etc/shadow"),
        (vec!["service", "create", "--detach", "--name", "s4", "--secret", "source=db_pass_v2,mode=rw", &swarm.image], "\"rw\""),
        (vec!["service", "create", "--detach", "--name", "s5", "--secret", "source=db_pass_v2,mode=0999", &swarm.image], "0999"),
        (vec!["service", "update", "--secret-add", "missing", "app"], "\"missing\""),
    ];
    for (args, named) in cases {
        let out = swarm.shoal(&args);
        assert!(!out.success(), "`{}` should fail", args.join(" "));
        let message = out.stderr.trim();
        assert!(message.contains(named), "`{}`: {message:?} should name {named:?}", args.join(" "));
        assert_eq!(message.lines().count(), 1, "one sentence: {message:?}");
    }
    let secrets: Vec<serde_json::Value> = swarm.shoal(&["secret", "ls", "--format", "json"]).ok().stdout_json();
    let names: Vec<&str> = secrets.iter().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(names, ["db_pass_v2"], "nothing written");
    assert!(swarm.shoal(&["config", "ls", "-q"]).ok().lines().is_empty());
    let services = swarm.shoal(&["service", "ls", "--format", "json"]).ok().stdout;
    assert!(!services.contains("\"s1\"") && services.contains("\"app\""), "{services}");
    let spec: serde_json::Value = swarm.shoal(&["service", "inspect", "app"]).ok().stdout_json();
    assert_eq!(spec[0]["spec"]["task"]["secrets"], serde_json::json!([]), "the failed update changed nothing: {spec}");
}
