//! Harness for the multi-node tests: every test gets its own dev cluster,
//! made and removed through the real `shoal dev-cluster` CLI, and talks to
//! its hosts through the real `shoal` CLI.

// Each test module uses a different part of the harness.
#![allow(dead_code)]

pub mod bridge_node;
pub mod node;
pub mod swarm;
pub mod swarm_helpers;
pub mod terminal;

use std::fs::File;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Deserialize;

pub const SHOAL: &str = env!("CARGO_BIN_EXE_shoal");
/// Every CLI call is bounded, so a hung daemon fails a test instead of
/// stalling the run.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(30);
const UP_TIMEOUT: Duration = Duration::from_secs(120);
const LOG_TAIL_LINES: usize = 40;

/// What a finished (or timed-out) command produced.
#[derive(Debug)]
pub struct Output {
    pub command: String,
    /// `None` when the command was killed for running past its timeout.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// The output of a command that must succeed; panics showing its stderr.
    #[track_caller]
    pub fn ok(self) -> Self {
        if !self.success() {
            let status = match self.status {
                Some(status) => status.to_string(),
                None => "timed out".to_string(),
            };
            panic!(
                "`{}` failed ({status})\n--- stderr ---\n{}\n--- stdout ---\n{}",
                self.command, self.stderr, self.stdout
            );
        }
        self
    }

    #[track_caller]
    pub fn stdout_json<T: DeserializeOwned>(&self) -> T {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "`{}` printed invalid JSON ({e}):\n{}",
                self.command, self.stdout
            )
        })
    }

    /// Non-empty stdout lines, e.g. the ids printed by `-q`.
    pub fn lines(&self) -> Vec<&str> {
        self.stdout
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect()
    }
}

/// Runs `program args` and kills it after `timeout`.
pub fn run(program: &str, args: &[&str], timeout: Duration) -> Output {
    run_with_input(program, args, None, timeout)
}

/// [`run`] with `input` on the command's stdin (then its end).
pub fn run_with_input(program: &str, args: &[&str], input: Option<&[u8]>, timeout: Duration) -> Output {
    let command = format!("{program} {}", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("could not start `{command}`: {e}"));
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        let input = input.to_vec();
        std::thread::spawn(move || {
            use std::io::Write;
            let _ = stdin.write_all(&input);
        });
    }
    // Drained on threads so a chatty command cannot block on a full pipe.
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    // A grandchild that kept the pipes open must not hang the test.
    let collect =
        |rx: mpsc::Receiver<String>| rx.recv_timeout(Duration::from_secs(5)).unwrap_or_default();
    Output {
        command,
        status,
        stdout: collect(stdout),
        stderr: collect(stderr),
    }
}

fn drain(pipe: Option<impl Read + Send + 'static>) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    if let Some(mut pipe) = pipe {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            let _ = tx.send(String::from_utf8_lossy(&bytes).into_owned());
        });
    }
    rx
}

/// Polls `check` every 100 ms until it yields a value; panics naming `what`
/// after `timeout`.
#[track_caller]
pub fn wait_until<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One host, as `shoal dev-cluster ls --format json` reports it.
#[derive(Clone, Debug, Deserialize)]
pub struct Host {
    pub name: String,
    pub role: String,
    pub address: Ipv4Addr,
    pub socket: PathBuf,
    pub netns: String,
    pub log: PathBuf,
    pub pid: Option<u32>,
    pub running: bool,
}

/// A dev cluster owned by one test; dropping it (also on panic) removes it.
pub struct Cluster {
    name: String,
    removed: bool,
}

impl Cluster {
    /// A cluster with a daemon per host and a formed swarm.
    pub fn up(tag: &str, managers: u32, workers: u32) -> Cluster {
        Self::create(tag, managers, workers, None)
    }

    /// Namespaces and links only: for tests of the test-host plumbing.
    pub fn up_network_only(tag: &str, managers: u32, workers: u32) -> Cluster {
        Self::create(tag, managers, workers, Some("--network-only"))
    }

    /// Hosts running daemons that form no swarm (standalone nodes).
    pub fn up_standalone(tag: &str, hosts: u32) -> Cluster {
        Self::create(tag, hosts, 0, Some("--no-swarm"))
    }

    fn create(tag: &str, managers: u32, workers: u32, mode: Option<&str>) -> Cluster {
        // Built first, so Drop removes whatever a failing `up` left behind.
        let cluster = Cluster {
            name: unique_name(tag),
            removed: false,
        };
        let (managers, workers, owner) = (
            managers.to_string(),
            workers.to_string(),
            std::process::id().to_string(),
        );
        let mut args = vec![
            "--managers",
            &managers,
            "--workers",
            &workers,
            "--owner-pid",
            &owner,
        ];
        args.extend(mode);
        cluster
            .dev_cluster_with_timeout("up", &args, UP_TIMEOUT)
            .ok();
        cluster
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn hosts(&self) -> Vec<Host> {
        self.dev_cluster("ls", &["--format", "json"])
            .ok()
            .stdout_json()
    }

    #[track_caller]
    pub fn host(&self, host: &str) -> Host {
        let hosts = self.hosts();
        match hosts.iter().find(|h| h.name == host) {
            Some(found) => found.clone(),
            None => panic!("cluster {} has no host {host}", self.name),
        }
    }

    pub fn addr(&self, host: &str) -> Ipv4Addr {
        self.host(host).address
    }

    /// The cluster's subnet is 198.18.<index>.0/24.
    pub fn subnet_index(&self) -> u8 {
        self.hosts()[0].address.octets()[2]
    }

    /// `shoal -H unix://<host's socket> ARGS`; check the result with `.ok()`.
    pub fn shoal(&self, host: &str, args: &[&str]) -> Output {
        self.shoal_with_input_opt(host, args, None)
    }

    /// [`Cluster::shoal`] with `input` on its stdin.
    pub fn shoal_with_input(&self, host: &str, args: &[&str], input: &[u8]) -> Output {
        self.shoal_with_input_opt(host, args, Some(input))
    }

    fn shoal_with_input_opt(&self, host: &str, args: &[&str], input: Option<&[u8]>) -> Output {
        let uri = format!("unix://{}", self.host(host).socket.display());
        let mut full = vec!["-H", uri.as_str()];
        full.extend_from_slice(args);
        run_with_input(SHOAL, &full, input, CLI_TIMEOUT)
    }

    /// `shoal dev-cluster exec HOST -- COMMAND...`
    pub fn exec(&self, host: &str, command: &[&str]) -> Output {
        let mut args = vec![host, "--"];
        args.extend_from_slice(command);
        self.dev_cluster("exec", &args)
    }

    /// Stops the host's daemon: SIGTERM, or SIGKILL when `kill` (a crash).
    pub fn stop(&self, host: &str, kill: bool) {
        let args: &[&str] = if kill { &[host, "--kill"] } else { &[host] };
        self.dev_cluster("stop", args).ok();
    }

    pub fn start(&self, host: &str) {
        self.dev_cluster("start", &[host]).ok();
    }

    pub fn partition(&self, host: &str) {
        self.dev_cluster("partition", &[host]).ok();
    }

    pub fn heal(&self, host: &str) {
        self.dev_cluster("heal", &[host]).ok();
    }

    /// Adds a worker that joins the running swarm; returns it.
    pub fn add_worker(&self) -> Host {
        let before = self.hosts().len();
        self.dev_cluster_with_timeout("add", &["--role", "worker"], UP_TIMEOUT)
            .ok();
        let hosts = self.hosts();
        assert_eq!(
            hosts.len(),
            before + 1,
            "`dev-cluster add` did not add a host"
        );
        hosts[before].clone()
    }

    /// Whether a TCP connection from host `from` reaches a listener on host
    /// `to`'s address, within one second.
    pub fn can_connect(&self, from: &str, to: &str) -> bool {
        let target = self.host(to);
        let address = target.address;
        let listener = in_netns(&target.netns, move || TcpListener::bind((address, 0)))
            .unwrap_or_else(|e| panic!("could not listen on {address} in {}: {e}", target.netns));
        let port = listener
            .local_addr()
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("listener has no address: {e}"));
        // The kernel completes the handshake from the backlog; no accept needed.
        let peer = SocketAddr::from((address, port));
        in_netns(&self.host(from).netns, move || {
            TcpStream::connect_timeout(&peer, Duration::from_secs(1))
        })
        .is_ok()
    }

    /// `shoal dev-cluster SUBCOMMAND --name <this cluster> ARGS`.
    pub fn dev_cluster(&self, subcommand: &str, args: &[&str]) -> Output {
        self.dev_cluster_with_timeout(subcommand, args, CLI_TIMEOUT)
    }

    fn dev_cluster_with_timeout(
        &self,
        subcommand: &str,
        args: &[&str],
        timeout: Duration,
    ) -> Output {
        let mut full = vec!["dev-cluster", subcommand, "--name", self.name.as_str()];
        full.extend_from_slice(args);
        run(SHOAL, &full, timeout)
    }

    /// Removes the cluster now, asserting that `down` succeeds.
    pub fn down(mut self) {
        self.removed = true;
        self.dev_cluster_with_timeout("down", &[], UP_TIMEOUT).ok();
    }

    /// The end of every daemon log, to explain a failed test.
    fn print_logs(&self) {
        let Ok(hosts) = serde_json::from_str::<Vec<Host>>(
            &self.dev_cluster("ls", &["--format", "json"]).stdout,
        ) else {
            return;
        };
        for host in hosts {
            let Ok(log) = std::fs::read_to_string(&host.log) else {
                continue;
            };
            let lines: Vec<&str> = log.lines().collect();
            eprintln!("--- last lines of {} ---", host.log.display());
            eprintln!(
                "{}",
                lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
            );
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        if std::thread::panicking() {
            self.print_logs();
            // For a look at what failed: `shoal dev-cluster down --name N` removes it later.
            if std::env::var_os("SHOAL_TEST_KEEP_FAILED").is_some() {
                eprintln!("keeping dev cluster {} (SHOAL_TEST_KEEP_FAILED is set)", self.name);
                return;
            }
        }
        // No panic here: it would abort a test that is already unwinding.
        let down = self.dev_cluster_with_timeout("down", &[], UP_TIMEOUT);
        if !down.success() {
            eprintln!(
                "could not remove dev cluster {}: {}",
                self.name, down.stderr
            );
        }
    }
}

/// A file holding `bytes`, on tmpfs (/run) and removed on drop, for
/// `secret create NAME FILE` (tests and benches alike).
pub struct ValueFile(PathBuf);

impl ValueFile {
    pub fn new(name: &str, bytes: &[u8]) -> ValueFile {
        let path = PathBuf::from(format!("/run/shoal-test-value-{}-{name}", std::process::id()));
        std::fs::write(&path, bytes).expect("writing a value file");
        ValueFile(path)
    }

    pub fn path(&self) -> &str {
        self.0.to_str().expect("a UTF-8 path")
    }
}

impl Drop for ValueFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `<tag>-<pid in base 36>`: unique across test processes running at once
/// (nextest runs each test in its own process), and within a process as long
/// as each test uses its own tag. Fits the 12-character limit.
pub fn unique_name(tag: &str) -> String {
    assert!(
        (1..=6).contains(&tag.len())
            && tag
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
        "cluster tag {tag:?} must be 1-6 characters from a-z and 0-9"
    );
    let mut pid = std::process::id();
    let mut digits = Vec::new();
    loop {
        digits.push(char::from_digit(pid % 36, 36).unwrap_or('0'));
        pid /= 36;
        if pid == 0 {
            break;
        }
    }
    format!("{tag}-{}", digits.iter().rev().collect::<String>())
}

/// Runs `work` on a fresh thread inside network namespace `netns`; sockets
/// it creates stay in that namespace.
pub fn in_netns<T: Send + 'static>(
    netns: &str,
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    let ns = File::open(format!("/run/netns/{netns}"))?;
    std::thread::spawn(move || {
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)?;
        work()
    })
    .join()
    .unwrap_or_else(|_| {
        Err(std::io::Error::other(
            "thread in network namespace panicked",
        ))
    })
}
