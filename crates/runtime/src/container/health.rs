//! What a container's health is and docker's rules for how a probe's
//! result changes it (moby's `handleProbeResult`). The monitor that runs
//! the probes is in `manager/health_monitor.rs`.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::model::HealthConfig;

/// docker keeps this many probe results.
pub const MAX_LOG_ENTRIES: usize = 5;
/// and this much of each probe's output.
pub const MAX_OUTPUT_BYTES: usize = 4096;

/// docker's defaults for what neither the request nor the image sets.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_RETRIES: u32 = 3;
pub const DEFAULT_START_PERIOD: Duration = Duration::ZERO;
pub const DEFAULT_START_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// No probe has succeeded yet.
    Starting,
    Healthy,
    /// `retries` probes in a row failed (outside the start period), or the
    /// container stopped.
    Unhealthy,
}

impl HealthStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            HealthStatus::Starting => "starting",
            HealthStatus::Healthy => "healthy",
            HealthStatus::Unhealthy => "unhealthy",
        }
    }
}

/// One probe's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthProbe {
    /// RFC 3339.
    pub start: String,
    pub end: String,
    /// The probe's exit code; -1 when it timed out or could not run.
    pub exit_code: i32,
    /// Its stdout and stderr, at most [`MAX_OUTPUT_BYTES`].
    pub output: String,
}

/// docker's `State.Health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub status: HealthStatus,
    /// Failed probes in a row that counted (not in the start period).
    pub failing_streak: u32,
    /// The last [`MAX_LOG_ENTRIES`] probes, oldest first.
    pub log: Vec<HealthProbe>,
}

impl Default for Health {
    fn default() -> Self {
        Health { status: HealthStatus::Starting, failing_streak: 0, log: Vec::new() }
    }
}

impl Health {
    /// A (re)started container: starting again, the log kept, as docker.
    pub(crate) fn restarted(&mut self) {
        self.status = HealthStatus::Starting;
        self.failing_streak = 0;
    }

    /// Applies a probe's result. `in_start_period`: the probe began within
    /// the start period, where failures do not count until a first success.
    pub(crate) fn record(&mut self, probe: HealthProbe, in_start_period: bool, retries: u32) {
        if probe.exit_code == 0 {
            self.failing_streak = 0;
            self.status = HealthStatus::Healthy;
        } else if !(self.status == HealthStatus::Starting && in_start_period) {
            self.failing_streak = self.failing_streak.saturating_add(1);
            if self.failing_streak >= retries {
                self.status = HealthStatus::Unhealthy;
            }
        }
        self.log.push(probe);
        if self.log.len() > MAX_LOG_ENTRIES {
            let excess = self.log.len() - MAX_LOG_ENTRIES;
            self.log.drain(..excess);
        }
    }
}

/// When the next probe is due after the last one ended: every start
/// interval while starting within the start period, else every interval.
pub(crate) fn next_delay(config: &HealthConfig, status: HealthStatus, started_at: SystemTime, now: SystemTime) -> Duration {
    if status == HealthStatus::Starting && in_start_period(config, started_at, now) {
        config.start_interval
    } else {
        config.interval
    }
}

pub(crate) fn in_start_period(config: &HealthConfig, started_at: SystemTime, at: SystemTime) -> bool {
    at.duration_since(started_at).unwrap_or(Duration::ZERO) < config.start_period
}

/// The command a probe runs, from a resolved test; `None` for `NONE` or a
/// test that names nothing to run.
pub(crate) fn probe_command(test: &[String]) -> Option<Vec<String>> {
    match test.split_first() {
        Some((kind, args)) if kind == "CMD" && !args.is_empty() => Some(args.to_vec()),
        // docker runs CMD-SHELL with the image's shell; busybox and
        // every distribution have /bin/sh.
        Some((kind, args)) if kind == "CMD-SHELL" && !args.is_empty() => {
            Some(vec!["/bin/sh".into(), "-c".into(), args.join(" ")])
        }
        _ => None,
    }
}

/// Output as docker keeps it: at most [`MAX_OUTPUT_BYTES`], lossy UTF-8.
pub(crate) fn output_text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_OUTPUT_BYTES)]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(exit_code: i32) -> HealthProbe {
        HealthProbe { start: String::new(), end: String::new(), exit_code, output: format!("exit {exit_code}") }
    }

    #[test]
    fn failures_count_only_outside_the_start_period_until_a_success() {
        let mut health = Health::default();
        for _ in 0..5 {
            health.record(probe(1), true, 2);
        }
        assert_eq!((health.status, health.failing_streak), (HealthStatus::Starting, 0));
        health.record(probe(1), false, 2);
        assert_eq!((health.status, health.failing_streak), (HealthStatus::Starting, 1));
        health.record(probe(0), false, 2);
        assert_eq!((health.status, health.failing_streak), (HealthStatus::Healthy, 0));
        // Once healthy, the start period no longer shields failures.
        health.record(probe(1), true, 2);
        health.record(probe(2), true, 2);
        assert_eq!((health.status, health.failing_streak), (HealthStatus::Unhealthy, 2));
        assert_eq!(health.log.len(), MAX_LOG_ENTRIES);
        assert_eq!(health.log.last().map(|p| p.exit_code), Some(2));
        health.record(probe(0), false, 2);
        assert_eq!(health.status, HealthStatus::Healthy);
    }

    #[test]
    fn probes_follow_the_start_interval_only_while_starting_in_the_start_period() {
        let config = HealthConfig {
            test: vec!["CMD".into(), "true".into()],
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(1),
            retries: 3,
            start_period: Duration::from_secs(10),
            start_interval: Duration::from_secs(1),
        };
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        assert_eq!(next_delay(&config, HealthStatus::Starting, t0, t0 + Duration::from_secs(5)), Duration::from_secs(1));
        assert_eq!(next_delay(&config, HealthStatus::Starting, t0, t0 + Duration::from_secs(11)), Duration::from_secs(30));
        assert_eq!(next_delay(&config, HealthStatus::Healthy, t0, t0 + Duration::from_secs(5)), Duration::from_secs(30));
    }

    #[test]
    fn tests_become_commands() {
        let strings = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(probe_command(&strings(&["CMD", "cat", "/x"])), Some(strings(&["cat", "/x"])));
        assert_eq!(probe_command(&strings(&["CMD-SHELL", "test -e /x"])), Some(strings(&["/bin/sh", "-c", "test -e /x"])));
        assert_eq!(probe_command(&strings(&["NONE"])), None);
        assert_eq!(probe_command(&strings(&["CMD"])), None);
        assert_eq!(output_text(&[b'a'; 5000]).len(), MAX_OUTPUT_BYTES);
    }
}
