//! A container's effective configuration: the image's defaults with the
//! request on top, by docker's rules.

use std::time::Duration;

use super::health;
use super::model::{ContainerRecord, CreateRequest, HealthConfig, ImageInput, MountSpec};
use super::{state, ContainerError};

/// The PATH a container gets when its image sets none (docker's).
pub(super) const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub fn make(id: &str, name: String, request: &CreateRequest, image: &ImageInput) -> Result<ContainerRecord, ContainerError> {
    let config = &image.config;
    let entrypoint: Vec<String> = match &request.entrypoint {
        Some(e) if e.is_empty() => Vec::new(),
        Some(e) => vec![e.clone()],
        None => config.entrypoint().clone().unwrap_or_default(),
    };
    // A new entrypoint drops the image's CMD, as in docker.
    let cmd = if !request.command.is_empty() {
        request.command.clone()
    } else if request.entrypoint.is_some() {
        Vec::new()
    } else {
        config.cmd().clone().unwrap_or_default()
    };
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if args.is_empty() {
        return Err(ContainerError::InvalidRequest(format!(
            "image {} has no default command; give one after the image name",
            image.reference
        )));
    }
    let mut env: Vec<String> = Vec::new();
    for item in config.env().iter().flatten().chain(&request.env) {
        let key = item.split('=').next().unwrap_or(item);
        env.retain(|e| e.split('=').next() != Some(key));
        env.push(item.clone());
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, format!("PATH={DEFAULT_PATH}"));
    }
    let hostname = request.hostname.clone().filter(|h| !h.is_empty()).unwrap_or_else(|| id[..12].to_string());
    if !env.iter().any(|e| e.starts_with("HOSTNAME=")) {
        env.push(format!("HOSTNAME={hostname}"));
    }
    for mount in &request.mounts {
        validate_mount(mount)?;
    }
    let healthcheck = resolve_healthcheck(request.healthcheck.as_ref(), image.healthcheck.as_ref())?;
    let options = super::process_options::validate(&request.options)?;
    if let Some(signal) = request.stop_signal.as_deref().filter(|s| !s.is_empty()) {
        if super::manager::parse_signal(signal).is_none() {
            return Err(ContainerError::InvalidRequest(format!(
                "stop signal {signal:?} is unknown; use a name such as TERM or QUIT, or a number"
            )));
        }
    }
    let non_empty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
    let mut labels: std::collections::BTreeMap<String, String> = config.labels().clone().unwrap_or_default().into_iter().collect();
    labels.extend(request.labels.clone());
    Ok(ContainerRecord {
        id: id.to_string(),
        name,
        image: image.reference.clone(),
        image_id: image.id.clone(),
        args,
        env,
        workdir: non_empty(&request.workdir).or_else(|| non_empty(config.working_dir())).unwrap_or_else(|| "/".into()),
        user: non_empty(&request.user).or_else(|| non_empty(config.user())).unwrap_or_default(),
        hostname,
        labels,
        read_only: request.read_only,
        mounts: request.mounts.clone(),
        limits: request.limits.clone(),
        stop_signal: non_empty(&request.stop_signal)
            .or_else(|| non_empty(config.stop_signal()))
            .unwrap_or_else(|| "SIGTERM".into()),
        stop_timeout_secs: request.stop_timeout.map(|t| t.as_secs()),
        auto_remove: request.auto_remove,
        created: state::now_rfc3339(),
        tty: request.tty,
        open_stdin: request.open_stdin,
        healthcheck,
        options,
    })
}

/// docker's merge of `--health-*` over the image's HEALTHCHECK: each field
/// the request leaves zero comes from the image, else docker's default.
/// `None` when there is nothing to run (no test, or `NONE`).
fn resolve_healthcheck(request: Option<&HealthConfig>, image: Option<&HealthConfig>) -> Result<Option<HealthConfig>, ContainerError> {
    let empty = HealthConfig::default();
    let (request, image) = (request.unwrap_or(&empty), image.unwrap_or(&empty));
    let test = if request.test.is_empty() { &image.test } else { &request.test };
    if test.is_empty() || test[0] == "NONE" {
        return Ok(None);
    }
    if health::probe_command(test).is_none() {
        return Err(ContainerError::InvalidRequest(format!(
            "health check test {test:?} is invalid; use [\"CMD\", program, args...], [\"CMD-SHELL\", command] or [\"NONE\"]"
        )));
    }
    let duration = |name: &str, ours: Duration, theirs: Duration, default: Duration| {
        let value = [ours, theirs].into_iter().find(|d| !d.is_zero()).unwrap_or(default);
        // docker's lower bound: a probe loop with no pause would spin.
        if !value.is_zero() && value < Duration::from_millis(1) {
            return Err(ContainerError::InvalidRequest(format!(
                "health check {name} {value:?} is too short; use at least 1ms"
            )));
        }
        Ok(value)
    };
    Ok(Some(HealthConfig {
        test: test.clone(),
        interval: duration("interval", request.interval, image.interval, health::DEFAULT_INTERVAL)?,
        timeout: duration("timeout", request.timeout, image.timeout, health::DEFAULT_TIMEOUT)?,
        retries: [request.retries, image.retries].into_iter().find(|r| *r > 0).unwrap_or(health::DEFAULT_RETRIES),
        start_period: duration("start period", request.start_period, image.start_period, health::DEFAULT_START_PERIOD)?,
        start_interval: duration("start interval", request.start_interval, image.start_interval, health::DEFAULT_START_INTERVAL)?,
    }))
}

fn validate_mount(mount: &MountSpec) -> Result<(), ContainerError> {
    let target = mount.target();
    if !target.starts_with('/') || target.split('/').any(|part| part == "..") {
        return Err(ContainerError::InvalidMount(format!(
            "mount target {target:?} must be an absolute path inside the container without \"..\""
        )));
    }
    match mount {
        MountSpec::Volume { name, .. } => crate::volume::validate_name(name)?,
        MountSpec::Bind { source, .. } => {
            if !source.is_absolute() {
                return Err(ContainerError::InvalidMount(format!(
                    "bind mount source {} must be an absolute path on the host",
                    source.display()
                )));
            }
            if !source.exists() {
                return Err(ContainerError::MountSourceMissing(source.clone()));
            }
        }
        MountSpec::Tmpfs { mode, .. } => {
            if mode.is_some_and(|m| m > 0o7777) {
                return Err(ContainerError::InvalidMount(format!(
                    "tmpfs mode {:o} for {target} is not a file mode; use an octal mode such as 1777",
                    mode.unwrap_or(0)
                )));
            }
        }
    }
    Ok(())
}

/// docker's rule for names: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
/// 64 random hex digits: container ids, and the names of anonymous volumes.
pub fn random_id() -> String {
    let bytes: [u8; 32] = rand::random();
    hex::encode(bytes)
}

pub fn validate_name(name: &str) -> Result<(), ContainerError> {
    let valid = name.len() >= 2
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if valid {
        Ok(())
    } else {
        Err(ContainerError::InvalidRequest(format!(
            "container name {name:?} is invalid; use letters, digits, '_', '.' and '-', starting with a letter or digit"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> ImageInput {
        let mut config = oci_spec::image::Config::default();
        config
            .set_entrypoint(Some(vec!["/init".into()]))
            .set_cmd(Some(vec!["sh".into()]))
            .set_env(Some(vec!["A=1".into(), "B=1".into()]))
            .set_working_dir(Some("/srv".into()));
        ImageInput { id: "sha256:x".into(), reference: "busybox".into(), layers: Vec::new(), config, healthcheck: None }
    }

    const ID: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn entrypoint_and_command_follow_docker() {
        let request = CreateRequest { command: vec!["echo".into(), "hi".into()], env: vec!["A=2".into()], ..Default::default() };
        let record = make(ID, "n".into(), &request, &image()).unwrap();
        assert_eq!(record.args, vec!["/init", "echo", "hi"]);
        assert!(record.env.contains(&"A=2".to_string()) && !record.env.contains(&"A=1".to_string()));
        assert!(record.env.contains(&"B=1".to_string()));
        assert_eq!(record.workdir, "/srv");
        assert_eq!(record.hostname, "0123456789ab");
        let request = CreateRequest { entrypoint: Some("/bin/true".into()), ..Default::default() };
        assert_eq!(make(ID, "n".into(), &request, &image()).unwrap().args, vec!["/bin/true"]);
        let request = CreateRequest { entrypoint: Some(String::new()), ..Default::default() };
        assert!(matches!(make(ID, "n".into(), &request, &image()), Err(ContainerError::InvalidRequest(_))));
    }

    #[test]
    fn the_stop_signal_and_timeout_given_replace_the_images() {
        let plain = CreateRequest { command: vec!["true".into()], ..Default::default() };
        let record = make(ID, "n".into(), &plain, &image()).unwrap();
        assert_eq!((record.stop_signal.as_str(), record.stop_timeout_secs), ("SIGTERM", None));
        let given = CreateRequest { stop_signal: Some("SIGINT".into()), stop_timeout: Some(std::time::Duration::from_secs(3)), ..plain.clone() };
        let record = make(ID, "n".into(), &given, &image()).unwrap();
        assert_eq!((record.stop_signal.as_str(), record.stop_timeout_secs), ("SIGINT", Some(3)));
        let bad = CreateRequest { stop_signal: Some("SIGNOPE".into()), ..plain };
        let error = make(ID, "n".into(), &bad, &image()).unwrap_err().to_string();
        assert!(error.contains("\"SIGNOPE\""), "{error}");
    }

    #[test]
    fn bad_mounts_are_refused_with_the_value() {
        let request = CreateRequest {
            command: vec!["true".into()],
            mounts: vec![MountSpec::Bind { source: "/no/such/dir".into(), target: "/x".into(), readonly: false }],
            ..Default::default()
        };
        let error = make(ID, "n".into(), &request, &image()).unwrap_err();
        assert!(error.to_string().contains("/no/such/dir"), "{error}");
        let request = CreateRequest {
            command: vec!["true".into()],
            mounts: vec![MountSpec::Tmpfs { target: "relative".into(), size_bytes: None, mode: None }],
            ..Default::default()
        };
        assert!(matches!(make(ID, "n".into(), &request, &image()), Err(ContainerError::InvalidMount(_))));
    }

    #[test]
    fn health_checks_merge_request_image_and_docker_defaults() {
        let strings = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut from_image = image();
        from_image.healthcheck = Some(HealthConfig {
            test: strings(&["CMD-SHELL", "test -e /ok"]),
            interval: Duration::from_secs(2),
            retries: 7,
            ..Default::default()
        });
        let base = CreateRequest { command: vec!["true".into()], ..Default::default() };
        let resolved = make(ID, "n".into(), &base, &from_image).unwrap().healthcheck.unwrap();
        assert_eq!(resolved.test, strings(&["CMD-SHELL", "test -e /ok"]));
        assert_eq!((resolved.interval, resolved.timeout, resolved.retries), (Duration::from_secs(2), Duration::from_secs(30), 7));
        assert_eq!((resolved.start_period, resolved.start_interval), (Duration::ZERO, Duration::from_secs(5)));

        let durations_only = HealthConfig { timeout: Duration::from_millis(500), ..Default::default() };
        let request = CreateRequest { healthcheck: Some(durations_only), ..base.clone() };
        let resolved = make(ID, "n".into(), &request, &from_image).unwrap().healthcheck.unwrap();
        assert_eq!((resolved.test[0].as_str(), resolved.interval, resolved.timeout), ("CMD-SHELL", Duration::from_secs(2), Duration::from_millis(500)));

        let off = CreateRequest { healthcheck: Some(HealthConfig { test: strings(&["NONE"]), ..Default::default() }), ..base.clone() };
        assert_eq!(make(ID, "n".into(), &off, &from_image).unwrap().healthcheck, None);
        assert_eq!(make(ID, "n".into(), &base, &image()).unwrap().healthcheck, None);

        let bad = CreateRequest { healthcheck: Some(HealthConfig { test: strings(&["RUN", "x"]), ..Default::default() }), ..base };
        let error = make(ID, "n".into(), &bad, &image()).unwrap_err();
        assert!(error.to_string().contains("RUN"), "{error}");
    }
}
