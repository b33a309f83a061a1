//! The `shoal daemon` of one host: started inside the host's namespace,
//! detached from the command that started it, logging to daemon.log.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::process::{self, Stop, Tracked};
use super::state::HostState;

const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a daemon may take to shut down after SIGTERM.
pub const STOP_GRACE: Duration = Duration::from_secs(5);
const LOG_TAIL_LINES: usize = 20;
/// Each host serves Prometheus metrics on its own address at this port
/// (docker's customary one).
pub const METRICS_PORT: u16 = 9323;

/// The daemon of `host` as recorded in the state, or in its pid file when
/// the state is gone; `None` when neither knows one.
pub fn tracked(host: &HostState) -> Option<Tracked> {
    let pid = host.pid.or_else(|| read_pid_file(&host.pid_file()))?;
    Some(Tracked {
        pid,
        marker: host.host_uri(),
    })
}

pub fn is_running(host: &HostState) -> bool {
    tracked(host).is_some_and(|daemon| daemon.is_alive())
}

/// Starts the daemon of `host` and waits until its socket accepts
/// connections; returns its pid.
pub async fn start(shoal_exe: &Path, host: &HostState) -> anyhow::Result<u32> {
    fs::create_dir_all(&host.data_root)
        .with_context(|| format!("could not create {}", host.data_root.display()))?;
    // A socket file left by a killed daemon would only confuse the readiness check.
    match fs::remove_file(&host.socket) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| {
                format!("could not remove stale socket {}", host.socket.display())
            })
        }
    }
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&host.log)
        .with_context(|| format!("could not open {}", host.log.display()))?;
    let log_for_stderr = log
        .try_clone()
        .with_context(|| format!("could not open {}", host.log.display()))?;

    let mut command = process::command_in_netns(&host.netns, shoal_exe)?;
    command
        .arg("daemon")
        .arg("--data-root")
        .arg(&host.data_root)
        .arg("-H")
        .arg(host.host_uri())
        .arg("--node-name")
        .arg(&host.name)
        // Every host's containers under their own cgroup, so hosts sharing
        // this machine's cgroup tree never see each other's.
        .arg("--cgroup-parent")
        .arg(&host.netns)
        // A registry on this machine's end of the bridge (tests run one
        // there) speaks plain HTTP, as a loopback registry may.
        .arg("--insecure-registry")
        .arg(super::plan::bridge_address(host.address.octets()[2]).to_string())
        // Every host is scrapable (deploy/prometheus/dev-cluster.yml).
        .arg("--metrics-addr")
        .arg(format!("{}:{}", host.address, METRICS_PORT))
        .current_dir(host.dir())
        // Never the caller's pipes: a test capturing `up`'s output would
        // otherwise wait for the daemons to exit.
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_for_stderr);
    process::detach(&mut command);
    let mut child = command.spawn().with_context(|| {
        format!(
            "could not start `{} daemon` for {}",
            shoal_exe.display(),
            host.name
        )
    })?;
    let pid = child.id();
    let pid_file = host.pid_file();
    fs::write(&pid_file, format!("{pid}\n"))
        .with_context(|| format!("could not write {}", pid_file.display()))?;

    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if UnixStream::connect(&host.socket).is_ok() {
            return Ok(pid);
        }
        if let Ok(Some(status)) = child.try_wait() {
            bail!(
                "the daemon of {} exited ({status}) before opening {}; last lines of {}:\n{}",
                host.name,
                host.socket.display(),
                host.log.display(),
                log_tail(&host.log)
            );
        }
        if Instant::now() >= deadline {
            // Reap it here: it is our child, so it would linger as a zombie.
            let daemon = Tracked {
                pid,
                marker: host.host_uri(),
            };
            let _ = process::stop_all(&[daemon], Stop::Kill, Duration::ZERO).await;
            let _ = child.wait();
            bail!(
                "the daemon of {} did not open {} within {} s; last lines of {}:\n{}",
                host.name,
                host.socket.display(),
                READY_TIMEOUT.as_secs(),
                host.log.display(),
                log_tail(&host.log)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn read_pid_file(path: &Path) -> Option<u32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The last lines of a log, for error messages.
fn log_tail(path: &Path) -> String {
    match fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
            if tail.is_empty() {
                "(empty)".to_string()
            } else {
                tail
            }
        }
        Err(e) => format!("(unreadable: {e})"),
    }
}
