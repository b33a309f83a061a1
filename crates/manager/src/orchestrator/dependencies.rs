//! compose's depends_on: a service's first tasks are made only once every
//! service it depends on is ready, so a stack's first deploy starts a
//! database before the application that needs it, or a migration job to
//! its end before the application. Only the first tasks wait: a service
//! already running is not stopped when a dependency restarts, as in
//! docker compose.

use std::collections::BTreeMap;

use crate::store::{DependencyCondition, Kind, Object, Service, ServiceMode, StoreState, Task, TaskState};

/// Whether every dependency of `service` is ready; a dependency that does
/// not exist (yet) is not.
pub fn ready(state: &StoreState, service: &Service, tasks_by_service: &BTreeMap<&str, Vec<&Task>>) -> bool {
    service.spec.depends_on.iter().all(|dependency| {
        let Some(Object::Service(other)) = state.find_by_name(Kind::Service, &dependency.service) else { return false };
        let tasks = tasks_by_service.get(other.meta.id.as_str()).map(Vec::as_slice).unwrap_or_default();
        let current: Vec<&&Task> = tasks.iter().filter(|t| t.desired_state <= TaskState::Running).collect();
        match dependency.condition {
            // A task with a health check is only reported running once
            // healthy, so both wait for every wanted task to run.
            DependencyCondition::Started | DependencyCondition::Healthy => {
                let running = current.iter().filter(|t| t.status.state == TaskState::Running).count();
                let wanted = match other.spec.mode {
                    ServiceMode::Replicated { replicas } => replicas as usize,
                    ServiceMode::Global => current.len().max(1),
                };
                running >= wanted.max(1)
            }
            DependencyCondition::CompletedSuccessfully => {
                tasks.iter().any(|t| t.status.state == TaskState::Complete)
                    && !tasks.iter().any(|t| t.status.state == TaskState::Running)
            }
        }
    })
}
