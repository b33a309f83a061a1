//! The guard that keeps one task's reports moving forward only.
//!
//! The managers' store is the authority on the order (it ignores a report
//! that goes backwards); the guard makes sure the agent never sends one.

pub use shoal_proto::task_state::TaskState;

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
