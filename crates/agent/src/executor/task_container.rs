//! A task as a container: its name, its labels (how the executor finds the
//! containers of its tasks again, after a restart too), the container
//! request made from the task's spec, and how the task is stopped.

use std::collections::BTreeMap;
use std::time::Duration;

use shoal_proto::pb;
use shoal_runtime::container::{parse_signal, CreateRequest, Limits, MountSpec};

pub const LABEL_TASK_ID: &str = "shoal.task.id";
pub const LABEL_TASK_NAME: &str = "shoal.task.name";
pub const LABEL_SERVICE_ID: &str = "shoal.service.id";
pub const LABEL_SERVICE_NAME: &str = "shoal.service.name";
pub const LABEL_NODE_ID: &str = "shoal.node.id";

/// docker's grace period between the stop signal and SIGKILL.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);

/// `web.1.<task id>`, as docker names task containers: unique, and
/// readable in `container ls`.
pub fn container_name(assignment: &pb::Assignment) -> String {
    format!("{}.{}", assignment.name, assignment.task_id)
}

pub fn task_labels(assignment: &pb::Assignment, node_id: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_TASK_ID.to_string(), assignment.task_id.clone()),
        (LABEL_TASK_NAME.to_string(), container_name(assignment)),
        (LABEL_SERVICE_ID.to_string(), assignment.service_id.clone()),
        (LABEL_SERVICE_NAME.to_string(), assignment.service_name.clone()),
        (LABEL_NODE_ID.to_string(), node_id.to_string()),
    ])
}

/// The container request for an assignment on node `node_id`. The error is
/// one sentence naming the bad value; the task is rejected with it.
pub fn create_request(assignment: &pb::Assignment, node_id: &str) -> Result<CreateRequest, String> {
    let spec = assignment.spec.clone().unwrap_or_default();
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
    // docker's service "command" replaces the image's ENTRYPOINT as a
    // whole; the runtime takes one program, so the rest of the list goes
    // in front of the arguments (the argv is the same).
    let (entrypoint, command) = match spec.entrypoint.split_first() {
        Some((program, rest)) => (Some(program.clone()), rest.iter().chain(&spec.args).cloned().collect()),
        None => (None, spec.args.clone()),
    };
    let hostname = expand_hostname(&spec.hostname, assignment, node_id)?;
    if let Some(signal) = non_empty(&spec.stop_signal) {
        if parse_signal(&signal).is_none() {
            return Err(format!("stop signal {signal:?} is unknown; use a name such as TERM or a number"));
        }
    }
    let resources = spec.resources.unwrap_or_default();
    Ok(CreateRequest {
        name: Some(container_name(assignment)),
        command,
        entrypoint,
        env: spec.env.clone(),
        hostname: non_empty(&hostname),
        user: non_empty(&spec.user),
        workdir: non_empty(&spec.workdir),
        labels: task_labels(assignment, node_id),
        read_only: spec.read_only,
        mounts: spec.mounts.iter().map(mount_spec).collect::<Result<_, _>>()?,
        limits: Limits {
            memory_bytes: (resources.limit_memory > 0).then_some(resources.limit_memory),
            nano_cpus: (resources.limit_nano_cpus > 0).then_some(resources.limit_nano_cpus),
            pids: (resources.pids_limit > 0).then(|| i64::try_from(resources.pids_limit).unwrap_or(i64::MAX)),
        },
        network_namespace: None,
        // The executor removes task containers itself, once it has reported
        // how they ended.
        auto_remove: false,
        // `--tty` gives the task a terminal (its logs come through it);
        // nothing attaches to a task's stdin, but it stays open if asked.
        tty: spec.tty,
        open_stdin: spec.open_stdin,
        healthcheck: spec.healthcheck.as_ref().map(health_config),
        options: process_options(spec.options.as_ref()),
        // The executor stops tasks itself with these; recorded too, so a
        // `container stop` on the node does the same.
        stop_signal: non_empty(&spec.stop_signal),
        stop_timeout: (spec.stop_grace_ms > 0).then(|| std::time::Duration::from_millis(spec.stop_grace_ms)),
    })
}

/// `--cap-add`, `--sysctl`, `--ulimit`, `--init`, `--host` from the wire (a
/// task's or `shoal run`'s) as the runtime takes them; it checks them.
pub fn process_options(options: Option<&pb::ProcessOptions>) -> shoal_runtime::container::ProcessOptions {
    let Some(options) = options else { return Default::default() };
    shoal_runtime::container::ProcessOptions {
        cap_add: options.cap_add.clone(),
        cap_drop: options.cap_drop.clone(),
        sysctls: options.sysctls.clone().into_iter().collect(),
        ulimits: options
            .ulimits
            .iter()
            .map(|u| shoal_runtime::container::Ulimit { name: u.name.clone(), soft: u.soft, hard: u.hard })
            .collect(),
        init: options.init,
        extra_hosts: options.extra_hosts.iter().map(|h| (h.name.clone(), h.address.clone())).collect(),
    }
}

/// A health check from the wire (a task's or `shoal run`'s) as the runtime
/// takes it; zeros stay "not given", for the runtime to fill from the
/// image or docker's defaults.
pub fn health_config(check: &pb::HealthCheck) -> shoal_runtime::container::HealthConfig {
    let millis = std::time::Duration::from_millis;
    shoal_runtime::container::HealthConfig {
        test: check.test.clone(),
        interval: millis(check.interval_ms),
        timeout: millis(check.timeout_ms),
        retries: check.retries,
        start_period: millis(check.start_period_ms),
        start_interval: millis(check.start_interval_ms),
    }
}

fn mount_spec(mount: &pb::Mount) -> Result<MountSpec, String> {
    match mount.r#type.as_str() {
        "bind" => Ok(MountSpec::Bind { source: mount.source.clone().into(), target: mount.target.clone(), readonly: mount.readonly }),
        "volume" => Ok(MountSpec::Volume { name: mount.source.clone(), target: mount.target.clone(), readonly: mount.readonly }),
        "tmpfs" => Ok(MountSpec::Tmpfs {
            target: mount.target.clone(),
            size_bytes: (mount.tmpfs_size > 0).then_some(mount.tmpfs_size),
            mode: (mount.tmpfs_mode > 0).then_some(mount.tmpfs_mode),
        }),
        other => Err(format!("mount type {other:?} is unknown; use bind, volume or tmpfs")),
    }
}

/// Expands docker's hostname placeholders (`{{.Service.Name}}`,
/// `{{.Task.Slot}}`, `{{.Node.Hostname}}`, ...). An empty result leaves
/// the container its default hostname.
pub fn expand_hostname(template: &str, assignment: &pb::Assignment, node_id: &str) -> Result<String, String> {
    let mut expanded = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        expanded.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or_else(|| format!("hostname template {template:?} has a \"{{{{\" without its \"}}}}\""))?;
        let field = after[..end].trim();
        let value = match field {
            ".Service.Name" => assignment.service_name.clone(),
            ".Service.ID" => assignment.service_id.clone(),
            ".Task.Name" => container_name(assignment),
            ".Task.ID" => assignment.task_id.clone(),
            ".Task.Slot" => assignment.slot.to_string(),
            ".Node.Hostname" => assignment.node_hostname.clone(),
            ".Node.ID" => node_id.to_string(),
            _ => {
                return Err(format!(
                    "hostname template field {{{{{field}}}}} is unknown; use .Service.Name, .Service.ID, .Task.Name, .Task.ID, .Task.Slot, .Node.Hostname or .Node.ID"
                ))
            }
        };
        expanded.push_str(&value);
        rest = &after[end + 2..];
    }
    expanded.push_str(rest);
    Ok(expanded)
}

/// How a task's container is stopped: the task's stop signal (the image's
/// when it names none) and the grace period before SIGKILL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopPlan {
    /// `None`: the container's own stop signal (the image's, or SIGTERM).
    pub signal: Option<String>,
    pub grace: Duration,
}

pub fn stop_plan(spec: Option<&pb::TaskSpec>) -> StopPlan {
    let signal = spec.map(|s| s.stop_signal.clone()).filter(|s| !s.is_empty() && parse_signal(s).is_some());
    let grace = spec.map(|s| s.stop_grace_ms).filter(|ms| *ms > 0).map(Duration::from_millis).unwrap_or(DEFAULT_STOP_GRACE);
    StopPlan { signal, grace }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assignment(spec: pb::TaskSpec) -> pb::Assignment {
        pb::Assignment {
            task_id: "t1abc".into(),
            name: "web.2".into(),
            service_id: "s1".into(),
            service_name: "web".into(),
            slot: 2,
            spec: Some(spec),
            desired_state: "running".into(),
            version: 7,
            node_hostname: "node-a".into(),
            observed_state: "assigned".into(),
            networks: Vec::new(),
        }
    }

    #[test]
    fn names_and_labels_follow_docker() {
        let a = assignment(pb::TaskSpec::default());
        assert_eq!(container_name(&a), "web.2.t1abc");
        let labels = task_labels(&a, "n1");
        assert_eq!(labels[LABEL_TASK_ID], "t1abc");
        assert_eq!(labels[LABEL_TASK_NAME], "web.2.t1abc");
        assert_eq!(labels[LABEL_SERVICE_ID], "s1");
        assert_eq!(labels[LABEL_SERVICE_NAME], "web");
        assert_eq!(labels[LABEL_NODE_ID], "n1");
    }

    #[test]
    fn hostname_templates_expand() {
        let a = assignment(pb::TaskSpec::default());
        assert_eq!(expand_hostname("{{.Service.Name}}-{{.Task.Slot}}", &a, "n1").unwrap(), "web-2");
        assert_eq!(expand_hostname("{{ .Node.Hostname }}.{{.Node.ID}}", &a, "n1").unwrap(), "node-a.n1");
        assert_eq!(expand_hostname("{{.Task.Name}}", &a, "n1").unwrap(), "web.2.t1abc");
        assert_eq!(expand_hostname("plain", &a, "n1").unwrap(), "plain");
        assert_eq!(expand_hostname("", &a, "n1").unwrap(), "");
    }

    #[test]
    fn bad_hostname_templates_name_the_problem() {
        let a = assignment(pb::TaskSpec::default());
        let error = expand_hostname("{{.Node.Zone}}", &a, "n1").unwrap_err();
        assert!(error.contains("{{.Node.Zone}}"), "{error}");
        let error = expand_hostname("x{{.Task.Slot", &a, "n1").unwrap_err();
        assert!(error.contains("x{{.Task.Slot"), "{error}");
    }

    #[test]
    fn spec_maps_to_a_container_request() {
        let spec = pb::TaskSpec {
            image: "busybox@sha256:00".into(),
            entrypoint: vec!["/bin/sh".into(), "-c".into()],
            args: vec!["echo hi".into()],
            env: vec!["A=1".into()],
            workdir: "/srv".into(),
            user: "nobody".into(),
            hostname: "{{.Service.Name}}-{{.Task.Slot}}".into(),
            mounts: vec![
                pb::Mount { r#type: "volume".into(), source: "data".into(), target: "/data".into(), readonly: true, ..Default::default() },
                pb::Mount { r#type: "tmpfs".into(), target: "/tmp".into(), tmpfs_size: 1 << 20, ..Default::default() },
                pb::Mount { r#type: "bind".into(), source: "/etc".into(), target: "/host-etc".into(), ..Default::default() },
            ],
            read_only: true,
            stop_signal: "INT".into(),
            stop_grace_ms: 0,
            resources: Some(pb::Resources { limit_memory: 64 << 20, limit_nano_cpus: 500_000_000, pids_limit: 100, ..Default::default() }),
            networks: Vec::new(),
            dns: None,
            secrets: Vec::new(),
            configs: Vec::new(),
            registry_auth: None,
            healthcheck: None,
            force_update: 0,
            options: Some(pb::ProcessOptions {
                cap_add: vec!["NET_ADMIN".into()],
                init: true,
                extra_hosts: vec![pb::HostEntry { name: "db".into(), address: "198.18.0.5".into() }],
                ..Default::default()
            }),
            tty: true,
            open_stdin: false,
        };
        let request = create_request(&assignment(spec), "n1").unwrap();
        assert_eq!(request.options.cap_add, ["NET_ADMIN"]);
        assert!(request.options.init && request.tty);
        assert_eq!(request.options.extra_hosts, [("db".to_string(), "198.18.0.5".to_string())]);
        assert_eq!(request.name.as_deref(), Some("web.2.t1abc"));
        assert_eq!(request.entrypoint.as_deref(), Some("/bin/sh"));
        assert_eq!(request.command, vec!["-c", "echo hi"]);
        assert_eq!(request.env, vec!["A=1"]);
        assert_eq!(request.workdir.as_deref(), Some("/srv"));
        assert_eq!(request.user.as_deref(), Some("nobody"));
        assert_eq!(request.hostname.as_deref(), Some("web-2"));
        assert!(request.read_only);
        assert_eq!(
            request.mounts,
            vec![
                MountSpec::Volume { name: "data".into(), target: "/data".into(), readonly: true },
                MountSpec::Tmpfs { target: "/tmp".into(), size_bytes: Some(1 << 20), mode: None },
                MountSpec::Bind { source: "/etc".into(), target: "/host-etc".into(), readonly: false },
            ]
        );
        assert_eq!(request.limits, Limits { memory_bytes: Some(64 << 20), nano_cpus: Some(500_000_000), pids: Some(100) });
        assert_eq!(request.labels[LABEL_TASK_ID], "t1abc");
        assert!(!request.auto_remove);
    }

    #[test]
    fn empty_fields_keep_the_image_defaults() {
        let request = create_request(&assignment(pb::TaskSpec { image: "busybox".into(), ..Default::default() }), "n1").unwrap();
        assert_eq!(request.entrypoint, None);
        assert!(request.command.is_empty());
        assert_eq!(request.hostname, None);
        assert_eq!(request.user, None);
        assert_eq!(request.workdir, None);
        assert_eq!(request.limits, Limits::default());

        let args_only = pb::TaskSpec { args: vec!["sleep".into(), "5".into()], ..Default::default() };
        let request = create_request(&assignment(args_only), "n1").unwrap();
        assert_eq!(request.entrypoint, None, "arguments alone keep the image's entrypoint");
        assert_eq!(request.command, vec!["sleep", "5"]);
    }

    #[test]
    fn bad_specs_are_one_sentence_naming_the_value() {
        let mount = pb::Mount { r#type: "nfs".into(), target: "/x".into(), ..Default::default() };
        let error = create_request(&assignment(pb::TaskSpec { mounts: vec![mount], ..Default::default() }), "n1").unwrap_err();
        assert!(error.contains("\"nfs\""), "{error}");
        let error = create_request(&assignment(pb::TaskSpec { stop_signal: "SIGNOPE".into(), ..Default::default() }), "n1").unwrap_err();
        assert!(error.contains("\"SIGNOPE\""), "{error}");
    }

    #[test]
    fn stop_plans_default_to_ten_seconds() {
        assert_eq!(stop_plan(None), StopPlan { signal: None, grace: DEFAULT_STOP_GRACE });
        let spec = pb::TaskSpec { stop_signal: "SIGINT".into(), stop_grace_ms: 2500, ..Default::default() };
        assert_eq!(stop_plan(Some(&spec)), StopPlan { signal: Some("SIGINT".into()), grace: Duration::from_millis(2500) });
        let spec = pb::TaskSpec { stop_signal: "NOPE".into(), ..Default::default() };
        assert_eq!(stop_plan(Some(&spec)).signal, None, "an unknown signal falls back to the container's own");
    }
}
