//! `--update-*` and `--rollback-*`: how a service's tasks move to a new
//! spec and back, as docker's flags, shared by `service create` and
//! `service update`. Only the flags given change the spec.

use shoal_proto::pb;

use super::spec::duration_ms;
use crate::commands::flags;
use crate::error::{CliError, CliResult};

#[derive(Debug, Default, clap::Args)]
pub struct RolloutFlags {
    /// Tasks updated at once (0: all at once; default 1)
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    update_parallelism: Option<String>,
    /// Delay between a task's update and the next, e.g. 10s (default 0s)
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    update_delay: Option<String>,
    /// What to do when an update fails: pause, continue or rollback (default pause)
    #[arg(long, value_name = "ACTION")]
    update_failure_action: Option<String>,
    /// How long after it starts a task's failure counts against the update (default 5s)
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    update_monitor: Option<String>,
    /// Fraction of updated tasks that may fail, 0 to 1 (default 0)
    #[arg(long, value_name = "RATIO", allow_hyphen_values = true)]
    update_max_failure_ratio: Option<String>,
    /// stop-first (default) or start-first: start the new task before stopping the old
    #[arg(long, value_name = "ORDER")]
    update_order: Option<String>,
    /// A new task not running and healthy this long after it was made counts as failed (default 5m)
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    update_healthy_deadline: Option<String>,
    /// Tasks rolled back at once (0: all at once; default 1)
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    rollback_parallelism: Option<String>,
    /// Delay between a task's rollback and the next (default 0s)
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    rollback_delay: Option<String>,
    /// What to do when a rollback fails: pause or continue (default pause)
    #[arg(long, value_name = "ACTION")]
    rollback_failure_action: Option<String>,
    /// How long after it starts a task's failure counts against the rollback (default 5s)
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    rollback_monitor: Option<String>,
    /// Fraction of rolled back tasks that may fail, 0 to 1 (default 0)
    #[arg(long, value_name = "RATIO", allow_hyphen_values = true)]
    rollback_max_failure_ratio: Option<String>,
    /// stop-first (default) or start-first
    #[arg(long, value_name = "ORDER")]
    rollback_order: Option<String>,
    /// A rolled back task not running and healthy this long after it was made counts as failed (default 5m)
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    rollback_healthy_deadline: Option<String>,
}

/// The settings one set of flags changes; `None` leaves a setting as it is.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ConfigChange {
    pub parallelism: Option<u64>,
    pub delay_ms: Option<u64>,
    pub failure_action: Option<pb::FailureAction>,
    pub monitor_ms: Option<u64>,
    pub max_failure_ratio: Option<f64>,
    pub order: Option<pb::UpdateOrder>,
    pub healthy_deadline_ms: Option<u64>,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct RolloutChange {
    pub update: ConfigChange,
    pub rollback: ConfigChange,
}

impl RolloutFlags {
    pub fn change(&self) -> CliResult<RolloutChange> {
        Ok(RolloutChange {
            update: config_change(
                "update",
                [
                    &self.update_parallelism,
                    &self.update_delay,
                    &self.update_failure_action,
                    &self.update_monitor,
                    &self.update_max_failure_ratio,
                    &self.update_order,
                    &self.update_healthy_deadline,
                ],
            )?,
            rollback: config_change(
                "rollback",
                [
                    &self.rollback_parallelism,
                    &self.rollback_delay,
                    &self.rollback_failure_action,
                    &self.rollback_monitor,
                    &self.rollback_max_failure_ratio,
                    &self.rollback_order,
                    &self.rollback_healthy_deadline,
                ],
            )?,
        })
    }
}

/// The seven flags of `--{which}-*`, in the struct's order.
fn config_change(which: &str, values: [&Option<String>; 7]) -> CliResult<ConfigChange> {
    let [parallelism, delay, action, monitor, ratio, order, deadline] = values;
    let flag = |name: &str| format!("--{which}-{name}");
    let parallelism = parallelism
        .as_deref()
        .map(|v| {
            flags::parse_count(&flag("parallelism"), v).map_err(|_| {
                CliError::msg(format!("{} {v:?} is invalid; use a whole number of tasks, 0 for all at once", flag("parallelism")))
            })
        })
        .transpose()?;
    let failure_action = action
        .as_deref()
        .map(|v| match v.trim() {
            "pause" => Ok(pb::FailureAction::Pause),
            "continue" => Ok(pb::FailureAction::Continue),
            "rollback" if which == "update" => Ok(pb::FailureAction::Rollback),
            _ if which == "update" => {
                Err(CliError::msg(format!("{} {v:?} is invalid; use pause, continue or rollback", flag("failure-action"))))
            }
            _ => Err(CliError::msg(format!("{} {v:?} is invalid; use pause or continue", flag("failure-action")))),
        })
        .transpose()?;
    let max_failure_ratio = ratio
        .as_deref()
        .map(|v| match v.trim().parse::<f64>() {
            Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
            _ => Err(CliError::msg(format!(
                "{} {v:?} is invalid; use a fraction from 0 to 1 of the updated tasks, e.g. 0.2",
                flag("max-failure-ratio")
            ))),
        })
        .transpose()?;
    let order = order
        .as_deref()
        .map(|v| match v.trim() {
            "stop-first" => Ok(pb::UpdateOrder::StopFirst),
            "start-first" => Ok(pb::UpdateOrder::StartFirst),
            _ => Err(CliError::msg(format!("{} {v:?} is invalid; use stop-first or start-first", flag("order")))),
        })
        .transpose()?;
    let healthy_deadline_ms = duration_ms(&flag("healthy-deadline"), deadline)?;
    if healthy_deadline_ms == Some(0) {
        return Err(CliError::msg(format!(
            "{} 0s leaves no time for a new task to start; give a duration such as 30s",
            flag("healthy-deadline")
        )));
    }
    Ok(ConfigChange {
        parallelism,
        delay_ms: duration_ms(&flag("delay"), delay)?,
        failure_action,
        monitor_ms: duration_ms(&flag("monitor"), monitor)?,
        max_failure_ratio,
        order,
        healthy_deadline_ms,
    })
}

impl ConfigChange {
    pub fn apply(&self, config: &mut pb::UpdateConfig) {
        for (field, value) in [
            (&mut config.parallelism, self.parallelism),
            (&mut config.delay_ms, self.delay_ms),
            (&mut config.monitor_ms, self.monitor_ms),
            (&mut config.healthy_deadline_ms, self.healthy_deadline_ms),
        ] {
            if value.is_some() {
                *field = value;
            }
        }
        if let Some(ratio) = self.max_failure_ratio {
            config.max_failure_ratio = Some(ratio);
        }
        if let Some(action) = self.failure_action {
            config.failure_action = action as i32;
        }
        if let Some(order) = self.order {
            config.order = order as i32;
        }
    }
}

impl RolloutChange {
    pub fn apply(&self, spec: &mut pb::ServiceSpec) {
        if self.update != ConfigChange::default() {
            self.update.apply(spec.update_config.get_or_insert_with(Default::default));
        }
        if self.rollback != ConfigChange::default() {
            self.rollback.apply(spec.rollback_config.get_or_insert_with(Default::default));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(set: impl FnOnce(&mut RolloutFlags)) -> CliResult<RolloutChange> {
        let mut f = RolloutFlags::default();
        set(&mut f);
        f.change()
    }

    #[test]
    fn flags_change_only_what_they_name() {
        let change = flags(|f| {
            f.update_parallelism = Some("2".into());
            f.update_delay = Some("1s".into());
            f.update_order = Some("start-first".into());
            f.rollback_failure_action = Some("continue".into());
        })
        .unwrap();
        let mut spec = pb::ServiceSpec::default();
        change.apply(&mut spec);
        let update = spec.update_config.unwrap();
        assert_eq!((update.parallelism, update.delay_ms, update.monitor_ms), (Some(2), Some(1000), None));
        assert_eq!(update.order, pb::UpdateOrder::StartFirst as i32);
        assert_eq!(spec.rollback_config.unwrap().failure_action, pb::FailureAction::Continue as i32);
    }

    #[test]
    fn bad_values_are_named_in_one_sentence() {
        let error = |set: fn(&mut RolloutFlags)| flags(set).unwrap_err().to_string();
        assert!(error(|f| f.update_parallelism = Some("-1".into())).contains("--update-parallelism \"-1\""));
        assert!(error(|f| f.update_max_failure_ratio = Some("1.5".into())).contains("--update-max-failure-ratio \"1.5\""));
        assert!(error(|f| f.update_failure_action = Some("explode".into())).contains("pause, continue or rollback"));
        assert!(error(|f| f.rollback_failure_action = Some("rollback".into())).contains("use pause or continue"));
        assert!(error(|f| f.update_order = Some("random".into())).contains("--update-order \"random\""));
        assert!(error(|f| f.update_healthy_deadline = Some("0s".into())).contains("--update-healthy-deadline 0s"));
    }
}
