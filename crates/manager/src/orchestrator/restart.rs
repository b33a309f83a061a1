//! The restart policy: whether, and when, an ended task comes back.

use crate::store::{RestartCondition, RestartPolicy, Task, TaskState};

/// Rejections (a missing image, a bad mount) back off exponentially from
/// the policy's delay up to this, so a broken service is not retried in a
/// tight loop.
const MAX_BACKOFF_MS: u64 = 60_000;
const MIN_REJECTION_DELAY_MS: u64 = 1_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Replace it, not before `at_ms`.
    Restart { at_ms: u64 },
    /// Leave the slot empty: the policy is spent or forbids a restart.
    Stop,
}

/// `task` has ended; `history` holds every task of its slot.
pub fn decide(policy: &RestartPolicy, task: &Task, history: &[&Task], now_ms: u64) -> Decision {
    let ended_ok = task.status.state == TaskState::Complete;
    let wanted = match policy.condition {
        RestartCondition::None => false,
        RestartCondition::OnFailure => !ended_ok,
        RestartCondition::Any => true,
    };
    if !wanted {
        return Decision::Stop;
    }
    if policy.max_attempts > 0 {
        let attempts = if policy.window_ms == 0 {
            task.attempt
        } else {
            // Restarts made within the window (bounded by the history kept).
            let since = now_ms.saturating_sub(policy.window_ms);
            history.iter().filter(|t| t.attempt > 0 && t.meta.created_at >= since).count() as u64
        };
        if attempts >= policy.max_attempts {
            return Decision::Stop;
        }
    }
    let delay = if task.status.state == TaskState::Rejected {
        let base = policy.delay_ms.max(MIN_REJECTION_DELAY_MS);
        base.saturating_mul(1 << task.attempt.min(6)).min(MAX_BACKOFF_MS)
    } else {
        policy.delay_ms
    };
    let ended_at = if task.status.timestamp_ms == 0 { now_ms } else { task.status.timestamp_ms.min(now_ms) };
    Decision::Restart { at_ms: ended_at + delay }
}
