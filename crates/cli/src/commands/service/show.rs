//! `service ls` and `service inspect`: services as tables, JSON and
//! docker's `--pretty` text.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use shoal_proto::pb;

use super::endpoint_flags::ports_column;
use super::{format_duration_ms, short_id, strip_digest, title};

fn spec_of(service: &pb::Service) -> pb::ServiceSpec {
    service.spec.clone().unwrap_or_default()
}

/// A service as `service ls --format json` shows it.
#[derive(Debug, Serialize)]
pub struct LsJson {
    id: String,
    name: String,
    mode: String,
    /// Desired tasks.
    replicas: u64,
    running: u64,
    image: String,
    ports: String,
}

pub fn ls_json(service: &pb::Service) -> LsJson {
    let spec = spec_of(service);
    let ports = ports_column(Some(&spec));
    LsJson {
        ports,
        id: service.id.clone(),
        name: spec.name,
        mode: spec.mode,
        replicas: service.desired_tasks,
        running: service.running_tasks,
        image: spec.task.unwrap_or_default().image,
    }
}

pub const LS_HEADER: [&str; 6] = ["ID", "NAME", "MODE", "REPLICAS", "IMAGE", "PORTS"];

pub fn ls_row(service: &pb::Service) -> Vec<String> {
    let spec = spec_of(service);
    let mut replicas = format!("{}/{}", service.running_tasks, service.desired_tasks);
    let max = spec.placement.as_ref().map_or(0, |p| p.max_replicas_per_node);
    if max > 0 {
        replicas.push_str(&format!(" (max {max} per node)"));
    }
    let ports = ports_column(Some(&spec));
    let image = spec.task.map(|t| strip_digest(&t.image).to_string()).unwrap_or_default();
    vec![short_id(&service.id).to_string(), spec.name, spec.mode, replicas, image, ports]
}

#[derive(Debug, Serialize)]
pub struct ServiceJson {
    id: String,
    version: u64,
    created_at: String,
    updated_at: String,
    spec: SpecJson,
    /// Bumped by every change of what tasks run (`service ps` shows each task's).
    spec_version: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    previous_spec: Option<SpecJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    update_status: Option<UpdateStatusJson>,
    running_tasks: u64,
    desired_tasks: u64,
}

#[derive(Debug, Serialize)]
struct UpdateStatusJson {
    state: String,
    started_at: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    completed_at: String,
    message: String,
    failed_tasks: u64,
}

#[derive(Debug, Serialize)]
struct UpdateConfigJson {
    parallelism: u64,
    delay_ms: u64,
    failure_action: String,
    monitor_ms: u64,
    max_failure_ratio: f64,
    order: String,
    healthy_deadline_ms: u64,
}

#[derive(Debug, Serialize)]
struct HealthJson {
    test: Vec<String>,
    interval_ms: u64,
    timeout_ms: u64,
    retries: u32,
    start_period_ms: u64,
    start_interval_ms: u64,
}

/// The enum's proto name without its prefix, as docker spells it:
/// `UPDATE_ORDER_START_FIRST` -> `start-first`.
fn enum_word(name: &str, prefix: &str, separator: &str) -> String {
    name.trim_start_matches(prefix).to_lowercase().replace('_', separator)
}

pub fn update_state_word(status: &pb::UpdateStatus) -> String {
    enum_word(pb::UpdateState::try_from(status.state).unwrap_or(pb::UpdateState::Unspecified).as_str_name(), "UPDATE_STATE_", "_")
}

fn update_config_json(config: Option<pb::UpdateConfig>) -> UpdateConfigJson {
    let c = config.unwrap_or_default();
    UpdateConfigJson {
        parallelism: c.parallelism.unwrap_or(1),
        delay_ms: c.delay_ms.unwrap_or(0),
        failure_action: enum_word(c.failure_action().as_str_name(), "FAILURE_ACTION_", "-").replace("unspecified", "pause"),
        monitor_ms: c.monitor_ms.unwrap_or(5000),
        max_failure_ratio: c.max_failure_ratio.unwrap_or(0.0),
        order: enum_word(c.order().as_str_name(), "UPDATE_ORDER_", "-").replace("unspecified", "stop-first"),
        healthy_deadline_ms: c.healthy_deadline_ms.unwrap_or(300_000),
    }
}

#[derive(Debug, Serialize)]
struct SpecJson {
    name: String,
    labels: BTreeMap<String, String>,
    mode: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    replicas: Option<u64>,
    task: TaskSpecJson,
    restart: RestartJson,
    placement: PlacementJson,
    update_config: UpdateConfigJson,
    rollback_config: UpdateConfigJson,
}

#[derive(Debug, Serialize)]
struct TaskSpecJson {
    image: String,
    entrypoint: Vec<String>,
    args: Vec<String>,
    env: Vec<String>,
    workdir: String,
    user: String,
    hostname: String,
    mounts: Vec<MountJson>,
    read_only: bool,
    stop_signal: String,
    stop_grace_ms: u64,
    resources: ResourcesJson,
    secrets: Vec<FileJson>,
    configs: Vec<FileJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    healthcheck: Option<HealthJson>,
    /// Bumped by `service update --force`.
    force_update: u64,
    tty: bool,
    options: ProcessOptionsJson,
}

/// `--cap-add`, `--sysctl`, `--ulimit`, `--init`, `--add-host`.
#[derive(Debug, Serialize)]
struct ProcessOptionsJson {
    cap_add: Vec<String>,
    cap_drop: Vec<String>,
    sysctls: std::collections::BTreeMap<String, String>,
    /// NAME=SOFT:HARD
    ulimits: Vec<String>,
    init: bool,
    /// NAME:ADDRESS
    extra_hosts: Vec<String>,
}

/// A secret or config reference: which one and where; never a value.
#[derive(Debug, Serialize)]
struct FileJson {
    id: String,
    name: String,
    target: String,
    uid: u32,
    gid: u32,
    /// Octal, as given: "0444".
    mode: String,
}

fn files_json(references: Vec<pb::FileReference>) -> Vec<FileJson> {
    references
        .into_iter()
        .map(|r| FileJson { mode: format!("{:04o}", r.mode.unwrap_or(0o444)), id: r.id, name: r.name, target: r.target, uid: r.uid, gid: r.gid })
        .collect()
}

#[derive(Debug, Serialize)]
struct MountJson {
    #[serde(rename = "type")]
    kind: String,
    source: String,
    target: String,
    readonly: bool,
    #[serde(skip_serializing_if = "is_zero")]
    tmpfs_size: u64,
    #[serde(skip_serializing_if = "is_zero")]
    tmpfs_mode: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Serialize)]
struct ResourcesJson {
    reserve_nano_cpus: u64,
    reserve_memory: u64,
    limit_nano_cpus: u64,
    limit_memory: u64,
    pids_limit: u64,
}

#[derive(Debug, Serialize)]
struct RestartJson {
    condition: String,
    delay_ms: u64,
    max_attempts: u64,
    window_ms: u64,
}

#[derive(Debug, Serialize)]
struct PlacementJson {
    constraints: Vec<String>,
    spread: Vec<String>,
    max_replicas_per_node: u64,
    /// `linux/amd64`: what the image is built for, as the manager learnt it.
    platforms: Vec<String>,
}

pub fn inspect_json(service: &pb::Service) -> ServiceJson {
    ServiceJson {
        id: service.id.clone(),
        version: service.version,
        created_at: service.created_at.clone(),
        updated_at: service.updated_at.clone(),
        spec: spec_json(spec_of(service)),
        spec_version: service.spec_version,
        previous_spec: service.previous_spec.clone().map(spec_json),
        update_status: service.update_status.as_ref().map(|u| UpdateStatusJson {
            state: update_state_word(u),
            started_at: u.started_at.clone(),
            completed_at: u.completed_at.clone(),
            message: u.message.clone(),
            failed_tasks: u.failed_tasks,
        }),
        running_tasks: service.running_tasks,
        desired_tasks: service.desired_tasks,
    }
}

fn spec_json(spec: pb::ServiceSpec) -> SpecJson {
    let task = spec.task.unwrap_or_default();
    let r = task.resources.unwrap_or_default();
    let restart = spec.restart.unwrap_or_default();
    let placement = spec.placement.unwrap_or_default();
    SpecJson {
        name: spec.name,
        labels: spec.labels.into_iter().collect(),
        replicas: (spec.mode != "global").then_some(spec.replicas),
        mode: spec.mode,
        task: TaskSpecJson {
            image: task.image,
            entrypoint: task.entrypoint,
            args: task.args,
            env: task.env,
            workdir: task.workdir,
            user: task.user,
            hostname: task.hostname,
            mounts: task
                .mounts
                .into_iter()
                .map(|m| MountJson {
                    kind: m.r#type,
                    source: m.source,
                    target: m.target,
                    readonly: m.readonly,
                    tmpfs_size: m.tmpfs_size,
                    tmpfs_mode: u64::from(m.tmpfs_mode),
                })
                .collect(),
            read_only: task.read_only,
            stop_signal: task.stop_signal,
            stop_grace_ms: task.stop_grace_ms,
            resources: ResourcesJson {
                reserve_nano_cpus: r.reserve_nano_cpus,
                reserve_memory: r.reserve_memory,
                limit_nano_cpus: r.limit_nano_cpus,
                limit_memory: r.limit_memory,
                pids_limit: r.pids_limit,
            },
            secrets: files_json(task.secrets),
            configs: files_json(task.configs),
            healthcheck: task.healthcheck.map(|h| HealthJson {
                test: h.test,
                interval_ms: h.interval_ms,
                timeout_ms: h.timeout_ms,
                retries: h.retries,
                start_period_ms: h.start_period_ms,
                start_interval_ms: h.start_interval_ms,
            }),
            force_update: task.force_update,
            tty: task.tty,
            options: {
                let o = task.options.unwrap_or_default();
                ProcessOptionsJson {
                    cap_add: o.cap_add,
                    cap_drop: o.cap_drop,
                    sysctls: o.sysctls.into_iter().collect(),
                    ulimits: o.ulimits.iter().map(|u| format!("{}={}:{}", u.name, u.soft, u.hard)).collect(),
                    init: o.init,
                    extra_hosts: o.extra_hosts.iter().map(|h| format!("{}:{}", h.name, h.address)).collect(),
                }
            },
        },
        restart: RestartJson {
            condition: restart.condition,
            delay_ms: restart.delay_ms,
            max_attempts: restart.max_attempts,
            window_ms: restart.window_ms,
        },
        placement: PlacementJson {
            constraints: placement.constraints,
            spread: placement.spread,
            max_replicas_per_node: placement.max_replicas_per_node,
            platforms: placement.platforms.iter().map(|p| format!("{}/{}", p.os, p.architecture)).collect(),
        },
        update_config: update_config_json(spec.update_config),
        rollback_config: update_config_json(spec.rollback_config),
    }
}

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value.fract() == 0.0 {
        format!("{value}{}", UNITS[unit])
    } else {
        format!("{value:.2}{}", UNITS[unit])
    }
}

fn cpus(nanos: u64) -> String {
    format!("{}", nanos as f64 / 1e9)
}

/// docker's `service inspect --pretty`.
pub fn pretty(service: &pb::Service) -> String {
    let spec = spec_of(service);
    let task = spec.task.clone().unwrap_or_default();
    let mut out = String::new();
    let mut line = |key: &str, value: &str| {
        if value.is_empty() {
            let _ = writeln!(out, "{key}");
        } else {
            let key = format!("{key}:");
            let width = 16.max(key.len() + 1);
            let _ = writeln!(out, "{key:<width$}{value}");
        }
    };
    line("ID", &service.id);
    line("Name", &spec.name);
    if !spec.labels.is_empty() {
        line("Labels:", "");
        let labels: BTreeMap<_, _> = spec.labels.iter().collect();
        for (k, v) in labels {
            line(&format!(" {k}={v}"), "");
        }
    }
    line("Service Mode", &title(&spec.mode));
    if spec.mode != "global" {
        line(" Replicas", &spec.replicas.to_string());
    }
    line("Tasks", &format!("{} running, {} desired", service.running_tasks, service.desired_tasks));
    if let Some(u) = &service.update_status {
        line("UpdateStatus:", "");
        line(" State", &update_state_word(u));
        line(" Started", &u.started_at);
        if !u.completed_at.is_empty() {
            line(" Completed", &u.completed_at);
        }
        line(" Message", &u.message);
    }
    let placed_by_user = |p: &&pb::Placement| !p.constraints.is_empty() || !p.spread.is_empty() || p.max_replicas_per_node > 0;
    if let Some(p) = spec.placement.as_ref().filter(|p| placed_by_user(p) || !p.platforms.is_empty()) {
        line("Placement:", "");
        if !p.constraints.is_empty() {
            line(" Constraints", &format!("[{}]", p.constraints.join(" ")));
        }
        if !p.spread.is_empty() {
            line(" Preferences", &format!("[{}]", p.spread.iter().map(|s| format!("spread={s}")).collect::<Vec<_>>().join(" ")));
        }
        if p.max_replicas_per_node > 0 {
            line(" Max Replicas Per Node", &p.max_replicas_per_node.to_string());
        }
        if !p.platforms.is_empty() {
            let platforms: Vec<String> = p.platforms.iter().map(|p| format!("{}/{}", p.os, p.architecture)).collect();
            line(" Platforms", &platforms.join(", "));
        }
    }
    if let Some(r) = &spec.restart {
        line("RestartPolicy:", "");
        line(" Condition", &r.condition);
        line(" Delay", &format_duration_ms(r.delay_ms));
        line(" Max Attempts", &r.max_attempts.to_string());
        line(" Window", &format_duration_ms(r.window_ms));
    }
    for (title, config) in [("UpdateConfig:", &spec.update_config), ("RollbackConfig:", &spec.rollback_config)] {
        let c = update_config_json(*config);
        line(title, "");
        line(" Parallelism", &c.parallelism.to_string());
        if c.delay_ms > 0 {
            line(" Delay", &format_duration_ms(c.delay_ms));
        }
        line(" On failure", &c.failure_action);
        line(" Monitoring Period", &format_duration_ms(c.monitor_ms));
        line(" Max failure ratio", &c.max_failure_ratio.to_string());
        line(" Update order", &c.order);
        line(" Healthy deadline", &format_duration_ms(c.healthy_deadline_ms));
    }
    line("ContainerSpec:", "");
    line(" Image", &task.image);
    if !task.entrypoint.is_empty() {
        line(" Entrypoint", &task.entrypoint.join(" "));
    }
    if !task.args.is_empty() {
        line(" Args", &task.args.join(" "));
    }
    if !task.env.is_empty() {
        line(" Env", &task.env.join(" "));
    }
    for (key, value) in [(" Dir", &task.workdir), (" User", &task.user), (" Hostname", &task.hostname), (" StopSignal", &task.stop_signal)] {
        if !value.is_empty() {
            line(key, value);
        }
    }
    if task.read_only {
        line(" Read Only", "true");
    }
    line(" Stop Grace Period", &format_duration_ms(task.stop_grace_ms));
    if let Some(h) = &task.healthcheck {
        line("Healthcheck:", "");
        line(" Test", &format!("{:?}", h.test));
        for (key, ms) in [(" Interval", h.interval_ms), (" Timeout", h.timeout_ms), (" Start Period", h.start_period_ms)] {
            if ms > 0 {
                line(key, &format_duration_ms(ms));
            }
        }
        if h.retries > 0 {
            line(" Retries", &h.retries.to_string());
        }
    }
    if !task.mounts.is_empty() {
        line("Mounts:", "");
        for m in &task.mounts {
            line(" Target", &m.target);
            if !m.source.is_empty() {
                line("  Source", &m.source);
            }
            line("  ReadOnly", &m.readonly.to_string());
            line("  Type", &m.r#type);
        }
    }
    for (title, references) in [("Secrets:", &task.secrets), ("Configs:", &task.configs)] {
        if !references.is_empty() {
            line(title, "");
            for r in references {
                line(" Target", &r.target);
                line("  Source", &r.name);
                line("  Owner", &format!("{}:{} mode {:04o}", r.uid, r.gid, r.mode.unwrap_or(0o444)));
            }
        }
    }
    if !task.networks.is_empty() {
        line("Networks:", "");
        for n in &task.networks {
            let name = if n.name.is_empty() { &n.target } else { &n.name };
            let aliases = if n.aliases.is_empty() { String::new() } else { format!(" (aliases: {})", n.aliases.join(", ")) };
            line(" Network", &format!("{name}{aliases}"));
        }
    }
    let endpoint = spec.endpoint.clone().unwrap_or_default();
    let mode = if endpoint.mode() == pb::EndpointMode::Dnsrr { "dnsrr" } else { "vip" };
    line("Endpoint Mode:", mode);
    if !service.vips.is_empty() {
        line("VirtualIPs:", "");
        for vip in &service.vips {
            line(&format!(" {}", vip.network_name), &vip.address);
        }
    }
    if !endpoint.ports.is_empty() {
        line("Ports:", "");
        line(" ", &ports_column(Some(&spec)));
    }
    let r = task.resources.unwrap_or_default();
    if r != pb::Resources::default() {
        line("Resources:", "");
        if r.reserve_nano_cpus > 0 || r.reserve_memory > 0 {
            line(" Reservations:", "");
            if r.reserve_nano_cpus > 0 {
                line("  CPU", &cpus(r.reserve_nano_cpus));
            }
            if r.reserve_memory > 0 {
                line("  Memory", &human_bytes(r.reserve_memory));
            }
        }
        if r.limit_nano_cpus > 0 || r.limit_memory > 0 || r.pids_limit > 0 {
            line(" Limits:", "");
            if r.limit_nano_cpus > 0 {
                line("  CPU", &cpus(r.limit_nano_cpus));
            }
            if r.limit_memory > 0 {
                line("  Memory", &human_bytes(r.limit_memory));
            }
            if r.pids_limit > 0 {
                line("  Pids", &r.pids_limit.to_string());
            }
        }
    }
    line("Created", &service.created_at);
    line("Updated", &service.updated_at);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(mode: &str) -> pb::Service {
        pb::Service {
            vips: Vec::new(),
            id: "abcdefghijklmnopqrstuvwxy".into(),
            version: 7,
            created_at: "2024-05-01T12:00:00Z".into(),
            updated_at: "2024-05-01T12:05:00Z".into(),
            spec: Some(pb::ServiceSpec {
                name: "web".into(),
                labels: [("tier".to_string(), "front".to_string())].into_iter().collect(),
                mode: mode.into(),
                replicas: if mode == "global" { 0 } else { 3 },
                task: Some(pb::TaskSpec {
                    image: "busybox:1@sha256:feed".into(),
                    args: vec!["sleep".into(), "1000".into()],
                    stop_grace_ms: 10_000,
                    resources: Some(pb::Resources { reserve_memory: 64 << 20, reserve_nano_cpus: 500_000_000, ..Default::default() }),
                    ..Default::default()
                }),
                restart: Some(pb::RestartPolicy { condition: "on-failure".into(), delay_ms: 5000, max_attempts: 2, window_ms: 90_000 }),
                placement: Some(pb::Placement {
                    constraints: vec!["node.labels.zone==eu".into()],
                    spread: vec!["node.labels.rack".into()],
                    max_replicas_per_node: 2,
                    platforms: vec![pb::Platform { os: "linux".into(), architecture: "amd64".into() }],
                }),
                endpoint: None,
                update_config: Some(pb::UpdateConfig { parallelism: Some(2), order: pb::UpdateOrder::StartFirst as i32, ..Default::default() }),
                rollback_config: None,
                depends_on: Vec::new(),
            }),
            update_status: Some(pb::UpdateStatus {
                state: pb::UpdateState::Paused as i32,
                started_at: "2024-05-01T12:05:00Z".into(),
                message: "update paused due to failure or early termination of task t1".into(),
                ..Default::default()
            }),
            previous_spec: None,
            spec_version: 3,
            running_tasks: 2,
            desired_tasks: if mode == "global" { 5 } else { 3 },
        }
    }

    #[test]
    fn ls_rows_and_json() {
        assert_eq!(ls_row(&service("replicated")), ["abcdefghijkl", "web", "replicated", "2/3 (max 2 per node)", "busybox:1", ""]);
        let mut published = service("replicated");
        published.spec.as_mut().unwrap().endpoint = Some(pb::EndpointSpec {
            mode: 0,
            ports: vec![pb::PortConfig { protocol: 1, target_port: 80, published_port: 8080, publish_mode: 1 }],
        });
        assert_eq!(ls_row(&published)[5], "*:8080->80/tcp");
        assert_eq!(ls_row(&service("global"))[3], "2/5 (max 2 per node)");
        let json = serde_json::to_value(ls_json(&service("global"))).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "id": "abcdefghijklmnopqrstuvwxy", "name": "web", "mode": "global",
                "replicas": 5, "running": 2, "image": "busybox:1@sha256:feed", "ports": ""
            })
        );
    }

    #[test]
    fn inspect_json_shape() {
        let json = serde_json::to_value(inspect_json(&service("replicated"))).unwrap();
        assert_eq!(json["spec"]["replicas"], 3);
        assert_eq!(json["spec"]["restart"]["condition"], "on-failure");
        assert_eq!(json["spec"]["task"]["resources"]["reserve_memory"], 64 << 20);
        assert_eq!(json["spec"]["placement"]["constraints"][0], "node.labels.zone==eu");
        assert_eq!(json["spec"]["placement"]["platforms"][0], "linux/amd64");
        assert_eq!(json["version"], 7);
        assert_eq!(json["spec_version"], 3);
        assert_eq!(json["update_status"]["state"], "paused");
        assert_eq!(json["spec"]["update_config"]["order"], "start-first");
        assert_eq!(json["spec"]["update_config"]["parallelism"], 2);
        assert_eq!(json["spec"]["rollback_config"]["failure_action"], "pause");
        assert_eq!(json["spec"]["rollback_config"]["monitor_ms"], 5000);
        let global = serde_json::to_value(inspect_json(&service("global"))).unwrap();
        assert!(global["spec"].get("replicas").is_none());
    }

    #[test]
    fn pretty_reads_like_docker() {
        let text = pretty(&service("replicated"));
        for expected in [
            "ID:             abcdefghijklmnopqrstuvwxy\n",
            "Name:           web\n",
            "Labels:\n tier=front\n",
            "Service Mode:   Replicated\n Replicas:      3\n",
            " Constraints:   [node.labels.zone==eu]\n",
            " Preferences:   [spread=node.labels.rack]\n",
            " Platforms:     linux/amd64\n",
            " Condition:     on-failure\n Delay:         5s\n Max Attempts:  2\n Window:        1m30s\n",
            " Image:         busybox:1@sha256:feed\n Args:          sleep 1000\n",
            " Stop Grace Period: 10s\n",
            " Reservations:\n  CPU:          0.5\n  Memory:       64MiB\n",
            "UpdateStatus:\n State:         paused\n",
            "UpdateConfig:\n Parallelism:   2\n",
            " Update order:  start-first\n",
        ] {
            assert!(text.contains(expected), "{expected:?} in\n{text}");
        }
        assert!(!pretty(&service("global")).contains("Replicas:"));
    }
}
