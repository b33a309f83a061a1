//! Secret rotation: the time from `service update --secret-rm s1
//! --secret-add source=s2,target=app_secret app` until every task of `app`
//! (10 replicas of a busybox sleeper) reads the new value at
//! /run/secrets/app_secret, against Docker Swarm in the same run
//! (`cargo bench -p shoal-cli --bench secrets`; needs root, docker.io,
//! docker-registry and busybox-static):
//!
//! - ours: a dev cluster of 3 managers + 2 workers (network-namespace
//!   hosts on this machine), the tasks spread over the 5 nodes;
//! - Docker Swarm: a private dockerd, one node, the same 10 tasks there,
//!   updated with `--update-parallelism 0` (all at once), as ours rolls.
//!
//! Each run creates the other secret name with a fresh value and rotates
//! onto it (s1 -> s2 -> s1 ...); the runs of the two sides alternate, so
//! load from elsewhere on the machine falls on both. A run ends when the
//! old tasks' processes are gone and the process of each of the 10 wanted
//! tasks reads the new value (through /proc/PID/root).
//!
//! Everything it makes is removed at the end, on a panic and on
//! SIGINT/SIGTERM/SIGHUP. Not a test: never run in CI.

#[path = "../../../tests/cluster/support/mod.rs"]
mod support;
#[path = "overlay/interrupt.rs"]
mod interrupt;
#[path = "support/docker_swarm.rs"]
mod docker_swarm;

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use docker_swarm::DockerSwarm;
use shoal_runtime::testing::{TestImages, TestRegistry};
use support::{run, Cluster, Output, ValueFile, CLI_TIMEOUT, SHOAL};

const TAG: &str = "bsec";
const HOSTS: [&str; 5] = ["manager1", "manager2", "manager3", "worker1", "worker2"];
const REPLICAS: usize = 10;
const RUNS: usize = 5;
const SERVICE: &str = "app";
const TARGET: &str = "app_secret";
const SECRET_PATH: &str = "/run/secrets/app_secret";
/// Stops on SIGTERM once its current `sleep 1` ends (as PID 1, plain
/// `sleep` would ignore SIGTERM): the same on both sides.
const SLEEPER: &[&str] = &["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"];
/// How often the tasks' files are read: cheap (no process started).
const FILE_POLL: Duration = Duration::from_millis(20);
/// The task list (CLI calls) is re-read only while it lacks a task or a
/// listed process went, and then at most this often...
const RELIST_GAP: Duration = Duration::from_millis(50);
/// ...or when it is this old, in case it went stale some other way.
const RELIST_ANYWAY: Duration = Duration::from_secs(1);
/// Lets the machine quiet down between runs.
const PAUSE: Duration = Duration::from_secs(1);
const SETUP_TIMEOUT: Duration = Duration::from_secs(180);
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("secrets bench: skipped (needs root)");
        return;
    }
    interrupt::run_measured(TAG, measure, Report::print);
}

fn measure() -> Report {
    let images = TestImages::shared().expect("building the test images");
    let guard = interrupt::ClusterGuard(Some(Cluster::up(TAG, 3, 2)));
    let cluster = guard.get();
    let bridge = Ipv4Addr::new(198, 18, cluster.subnet_index(), 254);
    let port = TcpListener::bind((bridge, 0)).and_then(|l| l.local_addr()).expect("a free port on the bridge").port();
    let registry = TestRegistry::start_at(SocketAddr::from((bridge, port))).expect("starting docker-registry");
    let image = registry.push(&images.layout, TestImages::BUSYBOX, "busybox", "1").expect("pushing busybox").reference;
    let ours = Ours::new(cluster, &image);
    poll(Duration::from_secs(60), "every node to be ready", || {
        let nodes: Vec<serde_json::Value> = ours.shoal(&["node", "ls", "--format", "json"]).ok().stdout_json();
        (nodes.len() == HOSTS.len() && nodes.iter().all(|n| n["status"] == "ready")).then_some(())
    });
    // The image on every node beforehand, as Swarm's is loaded.
    for host in HOSTS {
        ours.shoal_on(host, &["image", "pull", "-q", &image]).ok();
    }
    let mut ours = Rotation::start(ours, "ours");

    let mut docker_error = None;
    let swarm = DockerSwarm::start(images).map_err(|e| docker_error = Some(e)).ok();
    let mut docker = swarm.as_ref().and_then(|swarm| yardstick(&mut docker_error, || Rotation::start(Docker(swarm), "docker")));

    for run_index in 1..=RUNS {
        ours.run(run_index);
        if let Some(rotation) = docker.as_mut() {
            if yardstick(&mut docker_error, || rotation.run(run_index)).is_none() {
                docker = None;
            }
        }
    }
    let report = Report {
        ours: ours.runs,
        placement: ours.tasks.iter().fold(BTreeMap::new(), |mut counts, (task, _)| {
            *counts.entry(task.node.clone()).or_insert(0) += 1;
            counts
        }),
        docker: docker.map(|d| d.runs),
        docker_version: swarm.as_ref().map(|s| s.docker(&["version", "--format", "{{.Server.Version}}"]).stdout.trim().to_string()),
        docker_error,
    };
    drop(swarm);
    drop(registry);
    report
}

/// Runs a step of the yardstick: a failure there (not an interrupt) is
/// reported instead of losing our figures.
fn yardstick<T>(error: &mut Option<String>, step: impl FnOnce() -> T) -> Option<T> {
    match std::panic::catch_unwind(AssertUnwindSafe(step)) {
        Ok(value) => Some(value),
        Err(payload) if interrupt::requested() => std::panic::resume_unwind(payload),
        Err(payload) => {
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic".into());
            *error = Some(format!("failed: {message}"));
            None
        }
    }
}

/// Which figure of a rollout a report row shows.
type Pick = fn(&Rollout) -> Duration;

/// One measured rotation.
#[derive(Debug, Clone)]
struct Rollout {
    /// Until the old processes were gone and every new one read the value.
    observed: Duration,
    /// Until the last new task's process was created (its /proc start
    /// time): the same end point without the polling's lag.
    created: Duration,
    /// Until the update command returned.
    returned: Duration,
    /// How many times the task list was read.
    lists: usize,
}

struct Report {
    ours: Vec<Rollout>,
    placement: BTreeMap<String, usize>,
    docker: Option<Vec<Rollout>>,
    docker_version: Option<String>,
    docker_error: Option<String>,
}

impl Report {
    fn print(&self, load_before: &str, load_after: &str) {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let stat = |runs: &[Rollout], pick: Pick| {
            let mut values: Vec<f64> = runs.iter().map(|r| ms(pick(r))).collect();
            values.sort_by(f64::total_cmp);
            (values[values.len() / 2], values[values.len() - 1])
        };
        let docker = self.docker.as_deref().filter(|runs| !runs.is_empty());
        let spread: Vec<String> = self.placement.iter().map(|(node, n)| format!("{node} {n}")).collect();
        println!();
        println!("secret rotation, {REPLICAS} replicas, {RUNS} runs per side, alternating (loadavg before {load_before}, after {load_after})");
        println!(
            "  ours: dev cluster of 3 managers + 2 workers (network-namespace hosts on this machine), tasks on {}; \
             `shoal service update --detach --secret-rm s1 --secret-add source=s2,target={TARGET} {SERVICE}`; \
             ours has no update-parallelism flag: it replaces every outdated task in one pass, \
             stopping the old tasks and starting the new ones at the same time (no stop-first wait)",
            spread.join(", ")
        );
        match (&self.docker_version, docker) {
            (Some(version), Some(_)) => println!(
                "  Docker Swarm {version}: private dockerd, one node ({REPLICAS} tasks there), busybox loaded from the same tarball; \
                 `docker service update --detach --update-parallelism 0 --secret-rm s1 --secret-add source=s2,target={TARGET} {SERVICE}` (all at once, stop-first)"
            ),
            _ => println!("  Docker Swarm: n/a ({})", self.docker_error.as_deref().unwrap_or("unavailable")),
        }
        println!(
            "  timed from the update command's start until the old tasks' processes are gone and the process of each of the {REPLICAS} wanted tasks \
             reads the new value at {SECRET_PATH} (via /proc/PID/root); files read every {} ms, the task list (service ps + container ls/inspect per node; \
             docker service ps + ps/inspect) re-read only while it lacks a task, at most every {} ms. \
             The sleeper exits on SIGTERM after its current `sleep 1`, on both sides.",
            FILE_POLL.as_millis(),
            RELIST_GAP.as_millis()
        );
        println!("{:<60} {:>16} {:>16} {:>7}", "median / max", "ours", "Docker Swarm", "ratio");
        let rows: [(&str, Pick); 3] = [
            ("new value in every task", |r| r.observed),
            ("last new process created (/proc start time, 10 ms ticks)", |r| r.created),
            ("update command returned", |r| r.returned),
        ];
        for (what, pick) in rows {
            let (median, max) = stat(&self.ours, pick);
            let theirs = docker.map(|runs| stat(runs, pick));
            let cell = |(median, max): (f64, f64)| format!("{median:.0} / {max:.0} ms");
            let ratio = theirs.map(|t| format!("{:.2}", median / t.0)).unwrap_or_else(|| "n/a".into());
            println!(
                "{:<60} {:>16} {:>16} {:>7}",
                what,
                cell((median, max)),
                theirs.map(cell).unwrap_or_else(|| "n/a".into()),
                ratio
            );
        }
        let runs = |runs: &[Rollout]| runs.iter().map(|r| ms(r.observed).round()).collect::<Vec<_>>();
        let lists = |runs: &[Rollout]| runs.iter().map(|r| r.lists).collect::<Vec<_>>();
        println!("  runs (ms): ours {:?}; Docker Swarm {:?}", runs(&self.ours), docker.map(runs).unwrap_or_default());
        println!("  task lists read per run: ours {:?}; Docker Swarm {:?}", lists(&self.ours), docker.map(lists).unwrap_or_default());
    }
}

/// A task of `app` that is wanted (desired state running).
#[derive(Debug, Clone)]
struct Task {
    id: String,
    node: String,
}

/// One side of the comparison, driven through its own CLI.
trait Side {
    fn create_secret(&self, name: &str, file: &str);
    /// Whether the secret is gone (or never was).
    fn remove_secret(&self, name: &str) -> bool;
    fn create_service(&self, secret: &str);
    /// The timed command.
    fn update(&self, old: &str, new: &str);
    /// Waits until the previous update has settled, before the next.
    fn settle(&self) {}
    fn wanted_tasks(&self) -> Vec<Task>;
    /// The processes of those of `tasks` whose container runs, by task id.
    fn processes(&self, tasks: &[&Task]) -> HashMap<String, Proc>;
}

/// A side with its service up, rotating between s1 and s2.
struct Rotation<S: Side> {
    side: S,
    who: &'static str,
    current: &'static str,
    tasks: Vec<(Task, Proc)>,
    runs: Vec<Rollout>,
}

impl<S: Side> Rotation<S> {
    fn start(side: S, who: &'static str) -> Self {
        let value = fresh_value(who, 0);
        let file = ValueFile::new(&format!("{who}-s1"), value.as_bytes());
        side.create_secret("s1", file.path());
        side.create_service("s1");
        let outcome = converge(&side, &[], value.as_bytes(), Instant::now(), SETUP_TIMEOUT);
        Rotation { side, who, current: "s1", tasks: outcome.tasks, runs: Vec::new() }
    }

    fn run(&mut self, index: usize) {
        let next = if self.current == "s1" { "s2" } else { "s1" };
        // A value is immutable: the name unused since the last rotation
        // is removed and created again with a new one.
        poll(Duration::from_secs(30), &format!("{} to remove secret {next}", self.who), || self.side.remove_secret(next).then_some(()));
        let value = fresh_value(self.who, index);
        let file = ValueFile::new(&format!("{}-{next}", self.who), value.as_bytes());
        self.side.create_secret(next, file.path());
        drop(file);
        self.side.settle();
        std::thread::sleep(PAUSE);
        interrupt::check();
        let old: Vec<Proc> = self.tasks.iter().map(|(_, p)| *p).collect();
        let boot_at_start = boot_time();
        let started = Instant::now();
        self.side.update(self.current, next);
        let returned = started.elapsed();
        let outcome = converge(&self.side, &old, value.as_bytes(), started, RUN_TIMEOUT);
        let last_created = outcome.tasks.iter().map(|(_, p)| p.created_since_boot()).fold(Duration::ZERO, Duration::max);
        let rollout = Rollout { observed: outcome.took, created: last_created.saturating_sub(boot_at_start), returned, lists: outcome.lists };
        eprintln!(
            "{} run {index}: every task read the new value after {:.0} ms (last process created at {:.0} ms, update returned at {:.0} ms, {} task lists)",
            self.who,
            rollout.observed.as_secs_f64() * 1e3,
            rollout.created.as_secs_f64() * 1e3,
            rollout.returned.as_secs_f64() * 1e3,
            rollout.lists
        );
        self.runs.push(rollout);
        self.tasks = outcome.tasks;
        self.current = next;
    }
}

struct Converged {
    took: Duration,
    tasks: Vec<(Task, Proc)>,
    lists: usize,
}

/// Polls until every process in `old` is gone and exactly [`REPLICAS`]
/// wanted tasks have a process reading `value` at [`SECRET_PATH`]; the
/// time since `started`.
///
/// The files are read every [`FILE_POLL`]; the task list, which costs CLI
/// calls on a busy machine, only while it lacks a task or a process (see
/// [`RELIST_GAP`]), and a known task's process is never looked up again.
fn converge(side: &impl Side, old: &[Proc], value: &[u8], started: Instant, timeout: Duration) -> Converged {
    let mut listed: Vec<(Task, Option<Proc>)> = Vec::new();
    let mut listed_at: Option<Instant> = None;
    let mut lists = 0;
    loop {
        interrupt::check();
        let complete = listed.len() == REPLICAS && listed.iter().all(|(_, p)| p.is_some_and(|p| p.alive()));
        let age = listed_at.map_or(Duration::MAX, |at| at.elapsed());
        if (!complete && age >= RELIST_GAP) || age >= RELIST_ANYWAY {
            let known: HashMap<String, Proc> = listed.drain(..).filter_map(|(t, p)| Some((t.id, p.filter(Proc::alive)?))).collect();
            let wanted = side.wanted_tasks();
            let missing: Vec<&Task> = wanted.iter().filter(|t| !known.contains_key(&t.id)).collect();
            let found = if missing.is_empty() { HashMap::new() } else { side.processes(&missing) };
            listed = wanted.into_iter().map(|t| {
                let process = known.get(&t.id).or_else(|| found.get(&t.id)).copied();
                (t, process)
            }).collect();
            listed_at = Some(Instant::now());
            lists += 1;
            continue;
        }
        let done = complete
            && old.iter().all(|p| !p.alive())
            && listed.iter().all(|(_, p)| p.is_some_and(|p| p.secret().as_deref() == Some(value)));
        if done {
            let took = started.elapsed();
            let tasks = listed.into_iter().filter_map(|(t, p)| Some((t, p?))).collect();
            return Converged { took, tasks, lists };
        }
        if started.elapsed() > timeout {
            let seen: Vec<(String, String, Option<i32>, Option<String>)> = listed
                .iter()
                .map(|(t, p)| (t.id.clone(), t.node.clone(), p.map(|p| p.pid), p.and_then(|p| p.secret()).map(|v| String::from_utf8_lossy(&v).into_owned())))
                .collect();
            let old_alive = old.iter().filter(|p| p.alive()).count();
            panic!("timed out after {timeout:?} waiting for {REPLICAS} tasks reading the new value; {old_alive} old processes alive; tasks: {seen:?}");
        }
        std::thread::sleep(FILE_POLL);
    }
}

/// A task's container process: its pid and start time (clock ticks since
/// boot), which tells a reused pid apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Proc {
    pid: i32,
    started: u64,
}

impl Proc {
    fn of(pid: i32) -> Option<Proc> {
        Some(Proc { pid, started: start_ticks(pid)? })
    }

    fn alive(&self) -> bool {
        start_ticks(self.pid) == Some(self.started)
    }

    /// The secret as the task's process sees it.
    fn secret(&self) -> Option<Vec<u8>> {
        std::fs::read(format!("/proc/{}/root{SECRET_PATH}", self.pid)).ok()
    }

    fn created_since_boot(&self) -> Duration {
        let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as u64;
        Duration::from_nanos(self.started * 1_000_000_000 / ticks)
    }
}

/// Field 22 of /proc/PID/stat; `None` once the process is gone or a zombie.
fn start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// CLOCK_BOOTTIME now: what /proc's start times count from.
fn boot_time() -> Duration {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime only writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut now) };
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// Ours: the dev cluster through `shoal` on each node's socket.
struct Ours<'a> {
    image: &'a str,
    sockets: HashMap<String, String>,
}

#[derive(serde::Deserialize)]
struct TaskRow {
    id: String,
    node: String,
    desired_state: String,
}

impl<'a> Ours<'a> {
    fn new(cluster: &Cluster, image: &'a str) -> Self {
        let sockets = cluster.hosts().iter().map(|h| (h.name.clone(), format!("unix://{}", h.socket.display()))).collect();
        Ours { image, sockets }
    }

    fn shoal_on(&self, host: &str, args: &[&str]) -> Output {
        interrupt::check();
        let socket = self.sockets.get(host).unwrap_or_else(|| panic!("no host {host} in the cluster"));
        let mut full = vec!["-H", socket.as_str()];
        full.extend_from_slice(args);
        let out = run(SHOAL, &full, CLI_TIMEOUT);
        interrupt::check();
        out
    }

    fn shoal(&self, args: &[&str]) -> Output {
        self.shoal_on("manager1", args)
    }
}

impl Side for Ours<'_> {
    fn create_secret(&self, name: &str, file: &str) {
        self.shoal(&["secret", "create", name, file]).ok();
    }

    fn remove_secret(&self, name: &str) -> bool {
        let names = self.shoal(&["secret", "ls", "--format", "json"]).ok().stdout_json::<Vec<serde_json::Value>>();
        !names.iter().any(|s| s["name"] == name) || self.shoal(&["secret", "rm", name]).success()
    }

    fn create_service(&self, secret: &str) {
        let source = format!("source={secret},target={TARGET}");
        let replicas = REPLICAS.to_string();
        let mut args = vec!["service", "create", "--detach", "--name", SERVICE, "--replicas", &replicas, "--secret", &source, self.image];
        args.extend_from_slice(SLEEPER);
        self.shoal(&args).ok();
    }

    fn update(&self, old: &str, new: &str) {
        let source = format!("source={new},target={TARGET}");
        self.shoal(&["service", "update", "--detach", "--secret-rm", old, "--secret-add", &source, SERVICE]).ok();
    }

    fn wanted_tasks(&self) -> Vec<Task> {
        let rows: Vec<TaskRow> = self.shoal(&["service", "ps", SERVICE, "--format", "json"]).ok().stdout_json();
        rows.into_iter().filter(|r| r.desired_state == "running").map(|r| Task { id: r.id, node: r.node }).collect()
    }

    fn processes(&self, tasks: &[&Task]) -> HashMap<String, Proc> {
        let mut by_node: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        // A task not yet assigned has no node, and no process yet.
        for task in tasks.iter().filter(|t| !t.node.is_empty()) {
            by_node.entry(task.node.as_str()).or_default().push(task.id.as_str());
        }
        let mut found = HashMap::new();
        for (node, ids) in by_node {
            let containers: Vec<serde_json::Value> = self.shoal_on(node, &["container", "ls", "--format", "json"]).ok().stdout_json();
            let (containers, task_ids): (Vec<&str>, Vec<&str>) = containers
                .iter()
                .filter_map(|c| {
                    let task = c["labels"]["shoal.task.id"].as_str().filter(|t| ids.contains(t))?;
                    Some((c["id"].as_str()?, task))
                })
                .unzip();
            if containers.is_empty() {
                continue;
            }
            let mut args = vec!["container", "inspect"];
            args.extend_from_slice(&containers);
            let docs: Vec<serde_json::Value> = self.shoal_on(node, &args).ok().stdout_json();
            for (doc, task) in docs.iter().zip(task_ids) {
                let pid = doc["state"]["pid"].as_i64().unwrap_or(0) as i32;
                if let Some(process) = Proc::of(pid).filter(|_| pid > 0) {
                    found.insert(task.to_string(), process);
                }
            }
        }
        found
    }
}

/// The yardstick: Docker Swarm through the docker CLI.
struct Docker<'a>(&'a DockerSwarm);

impl Docker<'_> {
    fn docker(&self, args: &[&str]) -> Output {
        interrupt::check();
        let out = self.0.docker(args);
        interrupt::check();
        out
    }
}

impl Side for Docker<'_> {
    fn create_secret(&self, name: &str, file: &str) {
        self.docker(&["secret", "create", name, file]).ok();
    }

    fn remove_secret(&self, name: &str) -> bool {
        let names = self.docker(&["secret", "ls", "--format", "{{.Name}}"]).ok();
        !names.lines().contains(&name) || self.docker(&["secret", "rm", name]).success()
    }

    fn create_service(&self, secret: &str) {
        let source = format!("source={secret},target={TARGET}");
        let replicas = REPLICAS.to_string();
        let mut args = vec![
            "service", "create", "--detach", "--quiet", "--no-resolve-image", "--name", SERVICE, "--replicas", &replicas, "--secret", &source, "busybox:1",
        ];
        args.extend_from_slice(SLEEPER);
        self.docker(&args).ok();
    }

    fn update(&self, old: &str, new: &str) {
        let source = format!("source={new},target={TARGET}");
        self.docker(&[
            "service", "update", "--detach", "--quiet", "--no-resolve-image", "--update-parallelism", "0", "--secret-rm", old, "--secret-add", &source, SERVICE,
        ])
        .ok();
    }

    /// Swarm keeps an update "updating" for its monitor period (5 s)
    /// after the tasks run; the next one starts from "completed".
    fn settle(&self) {
        poll(Duration::from_secs(60), "Swarm's update to complete", || {
            let out = self.docker(&["service", "inspect", SERVICE, "--format", "{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}"]).ok();
            matches!(out.stdout.trim(), "" | "completed").then_some(())
        });
    }

    fn wanted_tasks(&self) -> Vec<Task> {
        let out = self.docker(&["service", "ps", SERVICE, "--filter", "desired-state=running", "--no-trunc", "--format", "{{.ID}} {{.Node}}"]).ok();
        out.lines()
            .iter()
            .filter_map(|l| l.split_once(' '))
            .map(|(id, node)| Task { id: id.to_string(), node: node.to_string() })
            .collect()
    }

    fn processes(&self, tasks: &[&Task]) -> HashMap<String, Proc> {
        let label = format!("label=com.docker.swarm.service.name={SERVICE}");
        let ids = self.docker(&["ps", "-q", "--no-trunc", "--filter", &label]).ok();
        let ids = ids.lines();
        if ids.is_empty() {
            return HashMap::new();
        }
        let mut args = vec!["inspect", "--format", "{{index .Config.Labels \"com.docker.swarm.task.id\"}} {{.State.Pid}}"];
        args.extend_from_slice(&ids);
        // A container may go between the two calls: take what inspect gave.
        let out = self.docker(&args);
        out.lines()
            .iter()
            .filter_map(|l| l.split_once(' '))
            .filter(|(task, _)| tasks.iter().any(|t| t.id == *task))
            .filter_map(|(task, pid)| Some((task.to_string(), Proc::of(pid.parse().ok().filter(|p| *p > 0)?)?)))
            .collect()
    }
}

/// A distinct value per side and run, so a stale file never matches.
fn fresh_value(who: &str, run_index: usize) -> String {
    format!("{who}-run{run_index}-{:016x}", rand::random::<u64>())
}

#[track_caller]
fn poll<T>(timeout: Duration, what: &str, check: impl FnMut() -> Option<T>) -> T {
    interrupt::poll_every(Duration::from_millis(100), timeout, what, check)
}

