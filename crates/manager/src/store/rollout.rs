//! How a service's tasks move to a new spec: the update and rollback
//! configurations a user sets (`--update-*`, `--rollback-*`), the health
//! check tasks are gated by (`--health-*`), and the state of the rollout
//! in progress that the updater keeps in the store, so that a new leader
//! carries on where the old one was.

use serde::{Deserialize, Serialize};

/// Docker's `UpdateConfig` / `RollbackConfig`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateConfig {
    /// Tasks updated at once; 0: all at once.
    pub parallelism: u64,
    /// Wait between a slot's new task running and that slot's next update.
    pub delay_ms: u64,
    pub failure_action: FailureAction,
    /// How long after it starts a new task's failure counts against the update.
    pub monitor_ms: u64,
    /// Failures tolerated, as a fraction of the tasks updated, in
    /// millionths (docker's float, kept exact so specs compare equal).
    pub max_failure_ratio_ppm: u32,
    pub order: UpdateOrder,
    /// A new task not running (healthy) this long after it was made counts
    /// as failed: one that cannot be placed, pulled or made healthy never
    /// holds an update up for ever. Beyond docker.
    pub healthy_deadline_ms: u64,
}

/// Docker's defaults, the same for updates and rollbacks.
pub const DEFAULT_MONITOR_MS: u64 = 5_000;
pub const DEFAULT_HEALTHY_DEADLINE_MS: u64 = 5 * 60 * 1000;

impl Default for UpdateConfig {
    fn default() -> Self {
        UpdateConfig {
            parallelism: 1,
            delay_ms: 0,
            failure_action: FailureAction::Pause,
            monitor_ms: DEFAULT_MONITOR_MS,
            max_failure_ratio_ppm: 0,
            order: UpdateOrder::StopFirst,
            healthy_deadline_ms: DEFAULT_HEALTHY_DEADLINE_MS,
        }
    }
}

impl UpdateConfig {
    pub fn max_failure_ratio(&self) -> f64 {
        self.max_failure_ratio_ppm as f64 / 1e6
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailureAction {
    Pause,
    Continue,
    Rollback,
}

impl FailureAction {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureAction::Pause => "pause",
            FailureAction::Continue => "continue",
            FailureAction::Rollback => "rollback",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum UpdateOrder {
    /// The old task stops before its replacement starts (docker's default).
    StopFirst,
    /// The replacement runs (healthy) before the old task stops: never
    /// fewer tasks in service than asked for.
    StartFirst,
}

impl UpdateOrder {
    pub fn as_str(self) -> &'static str {
        match self {
            UpdateOrder::StopFirst => "stop-first",
            UpdateOrder::StartFirst => "start-first",
        }
    }
}

/// A container health check, as docker's HEALTHCHECK; zero durations and
/// retries take the image's values, else docker's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// `["CMD", ...]`, `["CMD-SHELL", cmd]`, `["NONE"]` (off); empty: the image's.
    pub test: Vec<String>,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub retries: u32,
    pub start_period_ms: u64,
    pub start_interval_ms: u64,
}

/// Where the rollout of the service's latest spec stands (docker's
/// `UpdateStatus`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateStatus {
    pub state: UpdateState,
    pub started_at_ms: u64,
    /// 0 while in progress.
    pub completed_at_ms: u64,
    /// Why it paused or rolled back, for people.
    pub message: String,
    /// Tasks of this rollout counted as failed, each once (kept here, not
    /// derived from tasks, since old tasks are trimmed from the store).
    pub failed_tasks: Vec<String>,
}

impl UpdateStatus {
    pub fn started(state: UpdateState, now_ms: u64, message: impl Into<String>) -> Self {
        UpdateStatus { state, started_at_ms: now_ms, completed_at_ms: 0, message: message.into(), failed_tasks: Vec::new() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum UpdateState {
    Updating,
    Paused,
    Completed,
    RollbackStarted,
    RollbackPaused,
    RollbackCompleted,
}

impl UpdateState {
    /// Docker's names.
    pub fn as_str(self) -> &'static str {
        match self {
            UpdateState::Updating => "updating",
            UpdateState::Paused => "paused",
            UpdateState::Completed => "completed",
            UpdateState::RollbackStarted => "rollback_started",
            UpdateState::RollbackPaused => "rollback_paused",
            UpdateState::RollbackCompleted => "rollback_completed",
        }
    }

    /// The updater is replacing tasks.
    pub fn in_progress(self) -> bool {
        matches!(self, UpdateState::Updating | UpdateState::RollbackStarted)
    }

    pub fn is_rollback(self) -> bool {
        matches!(self, UpdateState::RollbackStarted | UpdateState::RollbackPaused | UpdateState::RollbackCompleted)
    }
}

impl super::Service {
    /// The service going back to its previous spec, which becomes the
    /// one to roll back to in turn; None if it has never been updated.
    pub fn rolled_back(&self, now_ms: u64, message: impl Into<String>) -> Option<super::Service> {
        let previous = self.previous_spec.as_deref()?;
        let mut rolled = self.clone();
        rolled.spec = previous.clone();
        // Docker's rule for a login: one that is not in the old spec stays.
        if rolled.spec.task.registry_auth.is_none() {
            rolled.spec.task.registry_auth = self.spec.task.registry_auth.clone();
        }
        rolled.previous_spec = Some(Box::new(self.spec.clone()));
        rolled.spec_version += 1;
        rolled.update_status = Some(UpdateStatus::started(UpdateState::RollbackStarted, now_ms, message));
        Some(rolled)
    }

    /// Whether a change from `self.spec` to `spec` changes what tasks run
    /// (and so starts a rollout), rather than only their number.
    pub fn changes_tasks(&self, spec: &super::ServiceSpec) -> bool {
        spec.task != self.spec.task || spec.placement != self.spec.placement || spec.restart != self.spec.restart
    }
}
