//! Task states as the agent sees them, and the guard that keeps one task's
//! reports moving forward only.
//!
//! The managers' store is the authority on the order (it ignores a report
//! that goes backwards); this copy exists so the agent never sends one.

use std::fmt;

/// A task's life, in the managers' order; on the wire as lower-case words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TaskState {
    New,
    Pending,
    Assigned,
    Accepted,
    Preparing,
    Starting,
    Running,
    Complete,
    Shutdown,
    Failed,
    Rejected,
    Remove,
    Orphaned,
}

impl TaskState {
    const ALL: [TaskState; 13] = [
        TaskState::New,
        TaskState::Pending,
        TaskState::Assigned,
        TaskState::Accepted,
        TaskState::Preparing,
        TaskState::Starting,
        TaskState::Running,
        TaskState::Complete,
        TaskState::Shutdown,
        TaskState::Failed,
        TaskState::Rejected,
        TaskState::Remove,
        TaskState::Orphaned,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::New => "new",
            TaskState::Pending => "pending",
            TaskState::Assigned => "assigned",
            TaskState::Accepted => "accepted",
            TaskState::Preparing => "preparing",
            TaskState::Starting => "starting",
            TaskState::Running => "running",
            TaskState::Complete => "complete",
            TaskState::Shutdown => "shutdown",
            TaskState::Failed => "failed",
            TaskState::Rejected => "rejected",
            TaskState::Remove => "remove",
            TaskState::Orphaned => "orphaned",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == s)
    }

    /// Nothing more happens to the task's container after this.
    pub fn is_terminal(self) -> bool {
        self > TaskState::Running
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The highest state reported for one task: a report is let through only
/// if it moves the task forward and no terminal state went out before, so
/// a task ends exactly once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReportGuard {
    reported: Option<TaskState>,
}

impl ReportGuard {
    /// Records `state` and returns true if it may be reported.
    pub fn advance(&mut self, state: TaskState) -> bool {
        if self.reported.is_some_and(|reported| state <= reported || reported.is_terminal()) {
            return false;
        }
        self.reported = Some(state);
        true
    }

    pub fn reported(&self) -> Option<TaskState> {
        self.reported
    }

    pub fn is_terminal(&self) -> bool {
        self.reported.is_some_and(TaskState::is_terminal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_and_order() {
        for state in TaskState::ALL {
            assert_eq!(TaskState::parse(state.as_str()), Some(state));
        }
        assert_eq!(TaskState::parse("ready"), None);
        assert!(TaskState::Accepted < TaskState::Preparing);
        assert!(TaskState::Running < TaskState::Complete);
        assert!(!TaskState::Running.is_terminal());
        assert!(TaskState::Shutdown.is_terminal());
    }

    #[test]
    fn guard_only_moves_forward() {
        let mut guard = ReportGuard::default();
        assert!(guard.advance(TaskState::Accepted));
        assert!(guard.advance(TaskState::Preparing));
        assert!(!guard.advance(TaskState::Accepted), "backwards");
        assert!(!guard.advance(TaskState::Preparing), "the same state twice");
        assert!(guard.advance(TaskState::Running), "skipping states is fine");
        assert_eq!(guard.reported(), Some(TaskState::Running));
        assert!(!guard.is_terminal());
    }

    #[test]
    fn guard_lets_one_terminal_state_through() {
        let mut guard = ReportGuard::default();
        assert!(guard.advance(TaskState::Failed));
        assert!(guard.is_terminal());
        assert!(!guard.advance(TaskState::Failed));
        assert!(!guard.advance(TaskState::Running));
        assert!(!guard.advance(TaskState::Rejected), "a second, different end");
        assert_eq!(guard.reported(), Some(TaskState::Failed));
    }
}
