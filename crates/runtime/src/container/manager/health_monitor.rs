//! The health monitor: one task per running container with a health
//! check, probing it through the exec machinery (no daemon round trip)
//! and applying docker's rules ([`crate::container::health`]). It ends
//! with the container's run or with the manager; the container's exit
//! marks it unhealthy ([`Entry::exited`]), as docker does when its monitor
//! stops.

use std::os::fd::AsRawFd;
use std::time::SystemTime;

use tokio::io::AsyncRead;

use super::*;
use crate::container::health::{self, Health, HealthProbe, HealthStatus};
use crate::container::{ExecIo, ExecOptions, ExecProcess};

/// The status of a health check's process is known; its output may still
/// be in flight, or held open by something it left running in the
/// background, which the probe does not wait for beyond this.
const OUTPUT_GRACE: Duration = Duration::from_millis(100);

/// Where a container's health is kept, so it survives a daemon restart.
pub(super) const HEALTH_FILE: &str = "health.json";

impl ContainerManager {
    /// The health of the container `name`; `None` when it has no health
    /// check (or is unknown).
    pub fn health(&self, name: &str) -> Option<Health> {
        let entry = self.find(name).ok()?;
        let health = entry.health.as_ref()?;
        let current = health.borrow().clone();
        Some(current)
    }

    /// Follows the health of the container `name`: the receiver sees every
    /// probe's result (and so every status change) as it is recorded.
    /// `None` when it has no health check. The monitor runs whether or not
    /// anyone watches.
    pub fn health_watch(&self, name: &str) -> Option<watch::Receiver<Health>> {
        let entry = self.find(name).ok()?;
        entry.health.as_ref().map(|h| h.subscribe())
    }

    /// Starts probing `entry`'s run that `started` describes, if it has a
    /// health check. `fresh`: the container has just started (docker's
    /// status goes back to starting); false when adopting a running one,
    /// whose recorded health stands.
    pub(super) fn monitor_health(self: &Arc<Self>, entry: &Arc<Entry>, started: &Started, fresh: bool) {
        let (Some(health), Some(config)) = (&entry.health, &entry.record.healthcheck) else { return };
        let Some(command) = health::probe_command(&config.test) else { return };
        if fresh {
            update(entry, health, |h| {
                h.restarted();
                true
            });
        }
        let run = Run {
            entry: entry.clone(),
            manager: Arc::downgrade(self),
            started: started.clone(),
            started_at: humantime::parse_rfc3339_weak(&started.started_at).unwrap_or_else(|_| SystemTime::now()),
            command,
            config: config.clone(),
        };
        tokio::spawn(run.probe_until_it_ends(self.shutdown.subscribe()));
    }
}

/// Changes the health of `entry` (if `change` says it did), recording it
/// on disk under the watch's lock, so writers cannot interleave.
pub(super) fn update(entry: &Entry, health: &watch::Sender<Health>, change: impl FnOnce(&mut Health) -> bool) {
    health.send_if_modified(|current| {
        let changed = change(current);
        if changed {
            if let Err(e) = state::write_json(&entry.dir.join(HEALTH_FILE), current) {
                tracing::warn!(container = %entry.record.id, error = %e, "recording the container's health");
            }
        }
        changed
    });
}

/// The health as recorded in a container's state directory, for a
/// container that has a health check: starting if nothing was recorded;
/// unhealthy if it is no longer running (its monitor has stopped).
pub(super) fn recovered(dir: &Path, phase: &Phase) -> Health {
    let mut health = state::read_json::<Health>(&dir.join(HEALTH_FILE)).unwrap_or_default();
    if matches!(phase, Phase::Exited(_)) && dir.join(HEALTH_FILE).exists() {
        health.status = HealthStatus::Unhealthy;
    }
    health
}

/// One run of a container, as its monitor probes it.
struct Run {
    entry: Arc<Entry>,
    /// Weak, so a monitor never keeps a dropped manager alive.
    manager: Weak<ContainerManager>,
    started: Started,
    started_at: SystemTime,
    command: Vec<String>,
    config: HealthConfig,
}

impl Run {
    /// Still this run (and not a later one after a restart)?
    fn is_current(&self, phase: &Phase) -> bool {
        matches!(phase, Phase::Running(s) if s.shim_pid == self.started.shim_pid && s.started_at == self.started.started_at)
    }

    async fn probe_until_it_ends(self, mut shutdown: watch::Receiver<()>) {
        let Some(health) = self.entry.health.clone() else { return };
        let mut phase = self.entry.phase.subscribe();
        let ended = async {
            while self.is_current(&phase.borrow_and_update()) {
                if phase.changed().await.is_err() {
                    return;
                }
            }
        };
        tokio::pin!(ended);
        loop {
            let status = health.borrow().status;
            let delay = health::next_delay(&self.config, status, self.started_at, SystemTime::now());
            tokio::select! {
                _ = &mut ended => return,
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            let start = SystemTime::now();
            let probing = self.probe();
            let (exit_code, output) = tokio::select! {
                result = probing => match result {
                    Some(result) => result,
                    None => continue,
                },
                // Dropping the probe kills it.
                _ = &mut ended => return,
                _ = shutdown.changed() => return,
            };
            let probe = HealthProbe {
                start: humantime::format_rfc3339_nanos(start).to_string(),
                end: state::now_rfc3339(),
                exit_code,
                output,
            };
            let in_start_period = health::in_start_period(&self.config, self.started_at, start);
            update(&self.entry, &health, |h| {
                // A result that lands after the container stopped would
                // undo the unhealthy its exit recorded.
                if !self.is_current(&self.entry.phase.borrow()) {
                    return false;
                }
                h.record(probe, in_start_period, self.config.retries);
                true
            });
        }
    }

    /// One probe: its exit code (-1 when it timed out or could not run)
    /// and output. `None` when no probe is due: the container is paused
    /// (an exec would freeze with it) or the manager is gone.
    async fn probe(&self) -> Option<(i32, String)> {
        let process = {
            let manager = self.manager.upgrade()?;
            if super::pause::is_paused(&self.entry) {
                return None;
            }
            let options = ExecOptions { command: self.command.clone(), ..Default::default() };
            manager.exec(&self.entry.record.id, options).await
        };
        Some(match process {
            Ok(process) => finish(process, self.config.timeout).await,
            Err(e) => (-1, e.to_string()),
        })
    }
}

/// Waits for a started probe, at most `timeout`, collecting its output;
/// a probe that overruns is killed.
async fn finish(process: ExecProcess, timeout: Duration) -> (i32, String) {
    let ExecProcess { pid, io, mut exit } = process;
    let mut guard = KillOnDrop::new(pid);
    let output = std::sync::Mutex::new(Vec::new());
    let (exited, mut exited_seen) = watch::channel(false);
    let waiting = async {
        let code = exit.wait().await;
        exited.send_replace(true);
        code
    };
    let reading = async {
        let ExecIo::Pipes { stdout, stderr, .. } = io else { return };
        tokio::select! {
            _ = async { tokio::join!(drain(stdout, &output), drain(stderr, &output)) } => {}
            _ = async {
                let _ = exited_seen.wait_for(|done| *done).await;
                tokio::time::sleep(OUTPUT_GRACE).await;
            } => {}
        }
    };
    match tokio::time::timeout(timeout, async { tokio::join!(waiting, reading).0 }).await {
        Ok(Ok(code)) => {
            guard.disarm();
            let bytes = output.lock().unwrap_or_else(|p| p.into_inner());
            (code, health::output_text(&bytes))
        }
        Ok(Err(e)) => (-1, e.to_string()),
        Err(_) => (-1, format!("Health check exceeded timeout ({})", humantime::format_duration(timeout))),
    }
}

/// Reads a pipe to its end, keeping what fits in a probe's output.
async fn drain(mut pipe: impl AsyncRead + Unpin, output: &std::sync::Mutex<Vec<u8>>) {
    use tokio::io::AsyncReadExt;
    let mut chunk = [0u8; 1024];
    loop {
        match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(read) => {
                let mut output = output.lock().unwrap_or_else(|p| p.into_inner());
                let room = health::MAX_OUTPUT_BYTES.saturating_sub(output.len());
                output.extend_from_slice(&chunk[..read.min(room)]);
            }
        }
    }
}

/// SIGKILLs a probe's process unless disarmed; through a pidfd, so a pid
/// reused after the probe ended is never hit.
struct KillOnDrop(Option<OwnedFd>);

impl KillOnDrop {
    fn new(pid: i32) -> Self {
        KillOnDrop(super::shims::pidfd_open(pid).ok())
    }

    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pidfd) = &self.0 {
            // SAFETY: pidfd_send_signal on a pidfd we own, with no siginfo.
            unsafe { libc::syscall(libc::SYS_pidfd_send_signal, pidfd.as_raw_fd(), libc::SIGKILL, std::ptr::null::<libc::siginfo_t>(), 0) };
        }
    }
}
