//! Update and rollback configurations, health checks and update status
//! between their wire form and the store's, with the checks of what a
//! user can set (`--update-*`, `--rollback-*`, `--health-*`).

use shoal_proto::pb;

use super::control::rfc3339;
use crate::errors::ManagerError;
use crate::store::{FailureAction, HealthCheck, UpdateConfig, UpdateOrder, UpdateState, UpdateStatus};

fn invalid(message: String) -> ManagerError {
    ManagerError::InvalidArgument(message)
}

/// `which` is `update` or `rollback`, for naming the flag in errors.
pub fn update_config_from_pb(config: Option<pb::UpdateConfig>, which: &str) -> Result<UpdateConfig, ManagerError> {
    let defaults = UpdateConfig::default();
    let Some(c) = config else { return Ok(defaults) };
    let ratio = c.max_failure_ratio.unwrap_or(0.0);
    if !(0.0..=1.0).contains(&ratio) || ratio.is_nan() {
        return Err(invalid(format!(
            "--{which}-max-failure-ratio {ratio} is outside 0..1; give the fraction of updated tasks that may fail, e.g. 0.2"
        )));
    }
    let monitor_ms = c.monitor_ms.unwrap_or(defaults.monitor_ms);
    let healthy_deadline_ms = c.healthy_deadline_ms.unwrap_or(defaults.healthy_deadline_ms);
    if healthy_deadline_ms == 0 {
        return Err(invalid(format!(
            "--{which}-healthy-deadline 0s leaves no time for a new task to start; give a duration such as 30s"
        )));
    }
    let failure_action = match pb::FailureAction::try_from(c.failure_action) {
        Ok(pb::FailureAction::Unspecified | pb::FailureAction::Pause) => FailureAction::Pause,
        Ok(pb::FailureAction::Continue) => FailureAction::Continue,
        Ok(pb::FailureAction::Rollback) if which == "rollback" => {
            return Err(invalid(
                "--rollback-failure-action rollback would roll a rollback back; use pause or continue".into(),
            ))
        }
        Ok(pb::FailureAction::Rollback) => FailureAction::Rollback,
        Err(_) => {
            return Err(invalid(format!(
                "--{which}-failure-action {} is unknown; use pause, continue or rollback",
                c.failure_action
            )))
        }
    };
    let order = match pb::UpdateOrder::try_from(c.order) {
        Ok(pb::UpdateOrder::Unspecified | pb::UpdateOrder::StopFirst) => UpdateOrder::StopFirst,
        Ok(pb::UpdateOrder::StartFirst) => UpdateOrder::StartFirst,
        Err(_) => return Err(invalid(format!("--{which}-order {} is unknown; use stop-first or start-first", c.order))),
    };
    Ok(UpdateConfig {
        parallelism: c.parallelism.unwrap_or(defaults.parallelism),
        delay_ms: c.delay_ms.unwrap_or(defaults.delay_ms),
        failure_action,
        monitor_ms,
        max_failure_ratio_ppm: (ratio * 1e6).round() as u32,
        order,
        healthy_deadline_ms,
    })
}

pub fn update_config_to_pb(config: &UpdateConfig) -> pb::UpdateConfig {
    pb::UpdateConfig {
        parallelism: Some(config.parallelism),
        delay_ms: Some(config.delay_ms),
        failure_action: match config.failure_action {
            FailureAction::Pause => pb::FailureAction::Pause,
            FailureAction::Continue => pb::FailureAction::Continue,
            FailureAction::Rollback => pb::FailureAction::Rollback,
        } as i32,
        monitor_ms: Some(config.monitor_ms),
        max_failure_ratio: Some(config.max_failure_ratio()),
        order: match config.order {
            UpdateOrder::StopFirst => pb::UpdateOrder::StopFirst,
            UpdateOrder::StartFirst => pb::UpdateOrder::StartFirst,
        } as i32,
        healthy_deadline_ms: Some(config.healthy_deadline_ms),
    }
}

pub fn health_from_pb(health: Option<pb::HealthCheck>) -> Result<Option<HealthCheck>, ManagerError> {
    let Some(h) = health else { return Ok(None) };
    match h.test.first().map(String::as_str) {
        None | Some("NONE") => {}
        Some("CMD") | Some("CMD-SHELL") if h.test.len() >= 2 && !h.test[1].trim().is_empty() => {}
        Some(_) => {
            return Err(invalid(format!(
                "health check test {:?} is invalid; use --health-cmd COMMAND or --no-healthcheck",
                h.test
            )))
        }
    }
    if h.test.first().is_some_and(|t| t == "NONE") && h.test.len() > 1 {
        return Err(invalid(format!("health check test {:?} turns the check off but names a command; give one or the other", h.test)));
    }
    Ok(Some(HealthCheck {
        test: h.test,
        interval_ms: h.interval_ms,
        timeout_ms: h.timeout_ms,
        retries: h.retries,
        start_period_ms: h.start_period_ms,
        start_interval_ms: h.start_interval_ms,
    }))
}

pub fn health_to_pb(health: &HealthCheck) -> pb::HealthCheck {
    pb::HealthCheck {
        test: health.test.clone(),
        interval_ms: health.interval_ms,
        timeout_ms: health.timeout_ms,
        retries: health.retries,
        start_period_ms: health.start_period_ms,
        start_interval_ms: health.start_interval_ms,
    }
}

pub fn update_status_to_pb(status: &UpdateStatus) -> pb::UpdateStatus {
    let state = match status.state {
        UpdateState::Updating => pb::UpdateState::Updating,
        UpdateState::Paused => pb::UpdateState::Paused,
        UpdateState::Completed => pb::UpdateState::Completed,
        UpdateState::RollbackStarted => pb::UpdateState::RollbackStarted,
        UpdateState::RollbackPaused => pb::UpdateState::RollbackPaused,
        UpdateState::RollbackCompleted => pb::UpdateState::RollbackCompleted,
    };
    pb::UpdateStatus {
        state: state as i32,
        started_at: rfc3339(status.started_at_ms),
        completed_at: if status.completed_at_ms == 0 { String::new() } else { rfc3339(status.completed_at_ms) },
        message: status.message.clone(),
        failed_tasks: status.failed_tasks.len() as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_fields_take_dockers_defaults_and_round_trip() {
        assert_eq!(update_config_from_pb(None, "update").unwrap(), UpdateConfig::default());
        let partial = pb::UpdateConfig { parallelism: Some(0), order: pb::UpdateOrder::StartFirst as i32, ..Default::default() };
        let config = update_config_from_pb(Some(partial), "update").unwrap();
        assert_eq!((config.parallelism, config.order, config.monitor_ms), (0, UpdateOrder::StartFirst, 5_000));
        let with_ratio = UpdateConfig { max_failure_ratio_ppm: 250_000, failure_action: FailureAction::Rollback, ..config };
        assert_eq!(update_config_from_pb(Some(update_config_to_pb(&with_ratio)), "update").unwrap(), with_ratio);
    }

    #[test]
    fn bad_configs_are_refused_with_the_value_named() {
        let ratio = pb::UpdateConfig { max_failure_ratio: Some(1.5), ..Default::default() };
        let error = update_config_from_pb(Some(ratio), "update").unwrap_err().to_string();
        assert!(error.contains("--update-max-failure-ratio 1.5"), "{error}");
        let action = pb::UpdateConfig { failure_action: 9, ..Default::default() };
        assert!(update_config_from_pb(Some(action), "rollback").unwrap_err().to_string().contains("--rollback-failure-action 9"));
        let order = pb::UpdateConfig { order: 7, ..Default::default() };
        assert!(update_config_from_pb(Some(order), "update").unwrap_err().to_string().contains("--update-order 7"));
        let looping = pb::UpdateConfig { failure_action: pb::FailureAction::Rollback as i32, ..Default::default() };
        assert!(update_config_from_pb(Some(looping), "rollback").is_err());
        let test = pb::HealthCheck { test: vec!["CMD".into()], ..Default::default() };
        assert!(health_from_pb(Some(test)).unwrap_err().to_string().contains("[\"CMD\"]"));
    }
}
