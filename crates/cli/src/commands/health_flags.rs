//! docker's health check flags (`--health-cmd`, `--health-interval`, ...,
//! `--no-healthcheck`) and their mapping to the wire's `HealthCheck`,
//! shared by `container run/create` and the service commands.

use shoal_proto::pb;

use super::flags::parse_duration;
use crate::error::{CliError, CliResult};

/// The flags as `docker run` takes them; flatten into a command's args.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct HealthFlags {
    /// Command to run to check health (run by /bin/sh -c in the container)
    #[arg(long = "health-cmd", value_name = "COMMAND", allow_hyphen_values = true)]
    pub cmd: Option<String>,
    /// Time between running the check, e.g. 30s, 1m30s
    #[arg(long = "health-interval", value_name = "DURATION", allow_hyphen_values = true)]
    pub interval: Option<String>,
    /// Maximum time to allow one check to run, e.g. 30s
    #[arg(long = "health-timeout", value_name = "DURATION", allow_hyphen_values = true)]
    pub timeout: Option<String>,
    /// Consecutive failures needed to report unhealthy
    #[arg(long = "health-retries", value_name = "N", allow_hyphen_values = true)]
    pub retries: Option<String>,
    /// Start period for the container to initialize before failures count, e.g. 1m
    #[arg(long = "health-start-period", value_name = "DURATION", allow_hyphen_values = true)]
    pub start_period: Option<String>,
    /// Time between running the check during the start period, e.g. 5s
    #[arg(long = "health-start-interval", value_name = "DURATION", allow_hyphen_values = true)]
    pub start_interval: Option<String>,
    /// Disable any container-specified HEALTHCHECK
    #[arg(long = "no-healthcheck")]
    pub no_healthcheck: bool,
}

/// The flags as the wire's `HealthCheck`: `None` when none is given (the
/// image's HEALTHCHECK applies), `["NONE"]` for `--no-healthcheck`, an
/// empty test when only durations are given (the image's test with them).
/// Refuses, in one sentence naming the value, what docker refuses and a
/// zero interval, timeout, start interval or retry count (which would
/// silently mean "the image's").
pub fn health_from_flags(flags: &HealthFlags) -> CliResult<Option<pb::HealthCheck>> {
    let given = [
        ("--health-cmd", &flags.cmd),
        ("--health-interval", &flags.interval),
        ("--health-timeout", &flags.timeout),
        ("--health-retries", &flags.retries),
        ("--health-start-period", &flags.start_period),
        ("--health-start-interval", &flags.start_interval),
    ];
    if flags.no_healthcheck {
        if let Some((flag, Some(value))) = given.iter().find(|(_, value)| value.is_some()) {
            return Err(CliError::msg(format!(
                "--no-healthcheck conflicts with {flag} {value:?}; give either --no-healthcheck or the --health-* flags"
            )));
        }
        return Ok(Some(pb::HealthCheck { test: vec!["NONE".into()], ..Default::default() }));
    }
    if given.iter().all(|(_, value)| value.is_none()) {
        return Ok(None);
    }
    let test = match flags.cmd.as_deref() {
        None => Vec::new(),
        Some(cmd) if cmd.trim().is_empty() => {
            return Err(CliError::msg("--health-cmd is empty; give a command such as 'wget -q -O- http://localhost/'"))
        }
        Some(cmd) => vec!["CMD-SHELL".to_string(), cmd.to_string()],
    };
    let retries = match flags.retries.as_deref() {
        None => 0,
        Some(value) => match value.trim().parse::<u32>() {
            Ok(retries) if retries > 0 && !value.trim().starts_with('+') => retries,
            _ => return Err(CliError::msg(format!("--health-retries {value:?} is invalid; use a whole number of 1 or more"))),
        },
    };
    Ok(Some(pb::HealthCheck {
        test,
        interval_ms: millis("--health-interval", flags.interval.as_deref(), false)?,
        timeout_ms: millis("--health-timeout", flags.timeout.as_deref(), false)?,
        retries,
        start_period_ms: millis("--health-start-period", flags.start_period.as_deref(), true)?,
        start_interval_ms: millis("--health-start-interval", flags.start_interval.as_deref(), false)?,
    }))
}

/// A duration flag in milliseconds (0 when not given). At least 1ms, as
/// docker requires; a zero start period is the only zero that means what
/// it says, so only it may be given as 0.
fn millis(flag: &str, value: Option<&str>, zero_allowed: bool) -> CliResult<u64> {
    let Some(value) = value else { return Ok(0) };
    if value.trim().starts_with('-') {
        return Err(CliError::msg(format!("{flag} {value:?} is negative; use a positive duration such as 30s or 500ms")));
    }
    let duration = parse_duration(flag, value)?;
    if duration.is_zero() && zero_allowed {
        return Ok(0);
    }
    if duration.as_millis() < 1 {
        return Err(CliError::msg(format!("{flag} {value:?} is too short; use a positive duration of at least 1ms, such as 30s")));
    }
    Ok(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
}

/// `service update --health-*`: the flags given change the service's
/// check, the rest of it stays (docker's merge); `--no-healthcheck`
/// replaces it, and a check over `NONE` starts from nothing.
pub fn merge_health(old: Option<&pb::HealthCheck>, new: &pb::HealthCheck) -> pb::HealthCheck {
    let off = |h: &pb::HealthCheck| h.test.first().is_some_and(|t| t == "NONE");
    let Some(old) = old.filter(|old| !off(old) && !off(new)) else { return new.clone() };
    let pick = |new: u64, old: u64| if new > 0 { new } else { old };
    pb::HealthCheck {
        test: if new.test.is_empty() { old.test.clone() } else { new.test.clone() },
        interval_ms: pick(new.interval_ms, old.interval_ms),
        timeout_ms: pick(new.timeout_ms, old.timeout_ms),
        retries: if new.retries > 0 { new.retries } else { old.retries },
        start_period_ms: pick(new.start_period_ms, old.start_period_ms),
        start_interval_ms: pick(new.start_interval_ms, old.start_interval_ms),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_update_changes_only_the_flags_given() {
        let old = pb::HealthCheck { test: vec!["CMD-SHELL".into(), "true".into()], interval_ms: 1000, retries: 5, ..Default::default() };
        let merged = merge_health(Some(&old), &pb::HealthCheck { interval_ms: 200, ..Default::default() });
        assert_eq!((merged.test, merged.interval_ms, merged.retries), (old.test.clone(), 200, 5));
        let off = pb::HealthCheck { test: vec!["NONE".into()], ..Default::default() };
        assert_eq!(merge_health(Some(&old), &off), off);
        assert_eq!(merge_health(Some(&off), &old), old);
    }

    use super::*;

    fn flags(pairs: &[(&str, &str)]) -> HealthFlags {
        let mut flags = HealthFlags::default();
        for (flag, value) in pairs {
            let value = Some(value.to_string());
            match *flag {
                "cmd" => flags.cmd = value,
                "interval" => flags.interval = value,
                "timeout" => flags.timeout = value,
                "retries" => flags.retries = value,
                "start-period" => flags.start_period = value,
                "start-interval" => flags.start_interval = value,
                other => panic!("no flag {other}"),
            }
        }
        flags
    }

    #[test]
    fn flags_map_to_docker_health_checks() {
        assert_eq!(health_from_flags(&HealthFlags::default()).unwrap(), None);
        let check = health_from_flags(&flags(&[("cmd", "curl -f http://x/"), ("interval", "1m30s"), ("retries", "2"), ("start-interval", "500ms")]))
            .unwrap()
            .unwrap();
        assert_eq!(check.test, vec!["CMD-SHELL", "curl -f http://x/"]);
        assert_eq!((check.interval_ms, check.timeout_ms, check.retries, check.start_interval_ms), (90_000, 0, 2, 500));
        // Durations alone keep the image's test.
        let check = health_from_flags(&flags(&[("timeout", "2s"), ("start-period", "0")])).unwrap().unwrap();
        assert_eq!((check.test.len(), check.timeout_ms, check.start_period_ms), (0, 2000, 0));
        let off = HealthFlags { no_healthcheck: true, ..Default::default() };
        assert_eq!(health_from_flags(&off).unwrap().unwrap().test, vec!["NONE"]);
    }

    #[test]
    fn bad_values_are_one_sentence_naming_them() {
        let refused = |flags: &HealthFlags, needle: &str| {
            let error = health_from_flags(flags).unwrap_err().to_string();
            assert!(error.contains(needle), "{error}");
            assert_eq!(error.lines().count(), 1, "{error}");
        };
        refused(&flags(&[("retries", "0")]), "--health-retries \"0\"");
        refused(&flags(&[("retries", "-1")]), "--health-retries \"-1\"");
        refused(&flags(&[("interval", "0s")]), "--health-interval \"0s\"");
        refused(&flags(&[("interval", "-5s")]), "--health-interval \"-5s\" is negative");
        refused(&flags(&[("timeout", "soon")]), "--health-timeout \"soon\"");
        refused(&flags(&[("cmd", " ")]), "--health-cmd is empty");
        let both = HealthFlags { no_healthcheck: true, ..flags(&[("cmd", "true")]) };
        refused(&both, "--no-healthcheck conflicts with --health-cmd \"true\"");
    }
}
