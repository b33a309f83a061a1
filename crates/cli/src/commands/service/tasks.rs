//! Task listings: `service ps` and `node ps`, in docker's columns.

use std::time::SystemTime;

use serde::Serialize;
use shoal_proto::pb;

use super::{parse_time, short_id, strip_digest, title};
use crate::error::{CliError, CliResult};
use crate::output::{human_duration, print_json, print_table, Format};

/// docker's limit on the ERROR column.
const MAX_ERROR_LEN: usize = 30;

/// The flags `service ps` and `node ps` share.
#[derive(Debug, Default, clap::Args)]
pub struct PsFlags {
    /// Do not truncate ids, images or errors
    #[arg(long)]
    pub no_trunc: bool,
    /// Filter: desired-state=running|shutdown|accepted, node=NODE, id=ID or name=NAME
    #[arg(short, long = "filter", value_name = "KEY=VALUE")]
    pub filters: Vec<String>,
    /// Only display task ids
    #[arg(short, long)]
    pub quiet: bool,
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// `-f` filters: what the manager filters on, and what the CLI does.
#[derive(Debug, Default, PartialEq)]
pub struct TaskFilter {
    pub desired_states: Vec<String>,
    pub node: Option<String>,
    ids: Vec<String>,
    names: Vec<String>,
}

impl TaskFilter {
    /// `allow_node`: `node ps` names its nodes itself.
    pub fn parse(values: &[String], allow_node: bool) -> CliResult<Self> {
        let mut filter = TaskFilter::default();
        for item in values {
            let invalid = || {
                let node = if allow_node { "node=NODE, " } else { "" };
                CliError::msg(format!("filter {item:?} is invalid; use desired-state=STATE, {node}id=ID or name=NAME"))
            };
            let Some((key, value)) = item.split_once('=') else { return Err(invalid()) };
            let value = value.trim();
            if value.is_empty() {
                return Err(invalid());
            }
            match key.trim() {
                "desired-state" => filter.desired_states.push(value.to_ascii_lowercase()),
                "node" if allow_node => {
                    if filter.node.is_some() {
                        return Err(CliError::msg(format!("filter {item:?} is a second node filter; give one node per listing")));
                    }
                    filter.node = Some(value.to_string());
                }
                "id" => filter.ids.push(value.to_string()),
                "name" => filter.names.push(value.to_string()),
                _ => return Err(invalid()),
            }
        }
        Ok(filter)
    }

    pub fn request(&self, service: &str, node: &str) -> pb::ListTasksRequest {
        pb::ListTasksRequest {
            service: service.to_string(),
            node: node.to_string(),
            desired_states: self.desired_states.clone(),
        }
    }

    /// The filters the manager does not apply.
    pub fn keep(&self, task: &pb::Task) -> bool {
        (self.ids.is_empty() || self.ids.iter().any(|id| task.id.starts_with(id.as_str())))
            && (self.names.is_empty()
                || self.names.iter().any(|n| task.name == *n || task.name.starts_with(&format!("{n}."))))
    }
}

/// Tasks grouped by slot (or node, for global tasks), newest first within
/// a group; `true` marks an older task of the same slot, shown as history.
pub fn order_history(mut tasks: Vec<pb::Task>) -> Vec<(bool, pb::Task)> {
    let group = |t: &pb::Task| (t.service_name.clone(), t.slot, if t.slot == 0 { t.node_id.clone() } else { String::new() });
    let time = |s: &str| parse_time(s);
    tasks.sort_by(|a, b| {
        group(a)
            .cmp(&group(b))
            .then_with(|| time(&b.created_at).cmp(&time(&a.created_at)))
            .then_with(|| time(&b.state_changed_at).cmp(&time(&a.state_changed_at)))
            .then_with(|| a.id.cmp(&b.id))
    });
    let mut ordered: Vec<(bool, pb::Task)> = Vec::with_capacity(tasks.len());
    for task in tasks {
        let history = ordered.last().is_some_and(|(_, prev)| group(prev) == group(&task));
        ordered.push((history, task));
    }
    ordered
}

/// "running 5 seconds ago"; the state alone when the time is unknown.
pub fn current_state(task: &pb::Task, now: SystemTime) -> String {
    let state = task.state.to_ascii_lowercase();
    match parse_time(&task.state_changed_at).filter(|t| *t > SystemTime::UNIX_EPOCH) {
        Some(at) => {
            let secs = now.duration_since(at).map(|d| d.as_secs()).unwrap_or(0);
            let age = human_duration(secs);
            let mut chars = age.chars();
            let age: String = chars.next().map(|c| c.to_ascii_lowercase()).into_iter().chain(chars).collect();
            format!("{state} {age} ago")
        }
        None => state,
    }
}

/// docker's ellipsis: the first `max - 1` characters and "…".
fn ellipsis(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        text.chars().take(max.saturating_sub(1)).chain(std::iter::once('…')).collect()
    }
}

fn node_column(task: &pb::Task, no_trunc: bool) -> String {
    if !task.node_hostname.is_empty() {
        task.node_hostname.clone()
    } else if no_trunc {
        task.node_id.clone()
    } else {
        short_id(&task.node_id).to_string()
    }
}

/// Docker's columns, and VERSION: the service spec version the task runs,
/// which tells old tasks from new ones during a rolling update.
pub const PS_HEADER: [&str; 8] = ["ID", "NAME", "IMAGE", "VERSION", "NODE", "DESIRED STATE", "CURRENT STATE", "ERROR"];

pub fn table_rows(ordered: &[(bool, pb::Task)], no_trunc: bool, now: SystemTime) -> Vec<Vec<String>> {
    ordered
        .iter()
        .map(|(history, t)| {
            let mut name = if no_trunc { format!("{}.{}", t.name, t.id) } else { t.name.clone() };
            if *history {
                name = format!(" \\_ {name}");
            }
            let error = if t.error.is_empty() {
                String::new()
            } else if no_trunc {
                format!("\"{}\"", t.error)
            } else {
                format!("\"{}\"", ellipsis(&t.error, MAX_ERROR_LEN))
            };
            vec![
                if no_trunc { t.id.clone() } else { short_id(&t.id).to_string() },
                name,
                if no_trunc { t.image.clone() } else { strip_digest(&t.image).to_string() },
                t.spec_version.to_string(),
                node_column(t, no_trunc),
                title(&t.desired_state),
                title(&current_state(t, now)),
                error,
            ]
        })
        .collect()
}

/// A task as `--format json` shows it.
#[derive(Debug, Serialize)]
pub struct TaskJson<'a> {
    id: &'a str,
    name: &'a str,
    service: &'a str,
    service_id: &'a str,
    slot: u64,
    node: &'a str,
    node_id: &'a str,
    image: &'a str,
    /// The service spec version the task was made from.
    spec_version: u64,
    desired_state: &'a str,
    state: &'a str,
    current_state: String,
    state_changed_at: &'a str,
    message: &'a str,
    error: &'a str,
    exit_code: Option<i32>,
    container_id: &'a str,
    created_at: &'a str,
    /// The task's address on each of its networks.
    networks: Vec<TaskAddressJson<'a>>,
}

#[derive(Debug, Serialize)]
pub struct TaskAddressJson<'a> {
    network: &'a str,
    network_id: &'a str,
    address: &'a str,
    aliases: &'a [String],
}

pub fn to_json(task: &pb::Task, now: SystemTime) -> TaskJson<'_> {
    TaskJson {
        id: &task.id,
        name: &task.name,
        service: &task.service_name,
        service_id: &task.service_id,
        slot: task.slot,
        node: &task.node_hostname,
        node_id: &task.node_id,
        image: &task.image,
        spec_version: task.spec_version,
        desired_state: &task.desired_state,
        state: &task.state,
        current_state: current_state(task, now),
        state_changed_at: &task.state_changed_at,
        message: &task.message,
        error: &task.error,
        exit_code: task.exit_code,
        container_id: &task.container_id,
        created_at: &task.created_at,
        networks: task
            .networks
            .iter()
            .map(|n| TaskAddressJson { network: &n.network_name, network_id: &n.network_id, address: &n.address, aliases: &n.aliases })
            .collect(),
    }
}

/// Prints tasks as `service ps` / `node ps` do.
pub fn print_tasks(tasks: Vec<pb::Task>, flags: &PsFlags) -> CliResult {
    let now = SystemTime::now();
    let ordered = order_history(tasks);
    if flags.quiet {
        for (_, task) in &ordered {
            println!("{}", task.id);
        }
        return Ok(());
    }
    match flags.format {
        Format::Json => print_json(&ordered.iter().map(|(_, t)| to_json(t, now)).collect::<Vec<_>>()),
        Format::Table => {
            print_table(&PS_HEADER, table_rows(&ordered, flags.no_trunc, now));
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn task(id: &str, name: &str, slot: u64, created: &str, state: &str, desired: &str) -> pb::Task {
        pb::Task {
            id: id.into(),
            name: name.into(),
            service_id: "svc1".into(),
            service_name: name.split('.').next().unwrap().into(),
            slot,
            node_id: "0123456789abcdef".into(),
            node_hostname: "worker1".into(),
            desired_state: desired.into(),
            state: state.into(),
            state_changed_at: "2024-05-01T12:00:00Z".into(),
            created_at: created.into(),
            image: "busybox:1@sha256:0123456789abcdef".into(),
            ..Default::default()
        }
    }

    fn at(rfc3339: &str) -> SystemTime {
        humantime::parse_rfc3339(rfc3339).unwrap()
    }

    #[test]
    fn history_is_grouped_by_slot_newest_first() {
        let tasks = vec![
            task("a-old", "web.1", 1, "2024-05-01T11:00:00Z", "failed", "shutdown"),
            task("b-new", "web.2", 2, "2024-05-01T11:59:00Z", "running", "running"),
            task("a-new", "web.1", 1, "2024-05-01T11:30:00.5Z", "running", "running"),
            task("a-mid", "web.1", 1, "2024-05-01T11:30:00Z", "failed", "shutdown"),
            task("c", "web.10", 10, "2024-05-01T11:00:00Z", "running", "running"),
            task("api", "api.1", 1, "2024-05-01T11:00:00Z", "running", "running"),
        ];
        let ordered = order_history(tasks);
        let seen: Vec<(bool, &str)> = ordered.iter().map(|(h, t)| (*h, t.id.as_str())).collect();
        assert_eq!(
            seen,
            [(false, "api"), (false, "a-new"), (true, "a-mid"), (true, "a-old"), (false, "b-new"), (false, "c")]
        );
        let rows = table_rows(&ordered, false, at("2024-05-01T12:00:05Z"));
        assert_eq!(rows[1][1], "web.1");
        assert_eq!(rows[2][1], " \\_ web.1");
        assert_eq!(rows[3][5], "Shutdown");
    }

    #[test]
    fn global_tasks_group_by_node() {
        let mut a = task("a", "agent.n1", 0, "2024-05-01T11:00:00Z", "running", "running");
        a.node_id = "n1".into();
        let mut b = task("b", "agent.n2", 0, "2024-05-01T11:00:00Z", "running", "running");
        b.node_id = "n2".into();
        let mut c = task("c", "agent.n1", 0, "2024-05-01T10:00:00Z", "failed", "shutdown");
        c.node_id = "n1".into();
        let ordered = order_history(vec![b, c, a]);
        let seen: Vec<(bool, &str)> = ordered.iter().map(|(h, t)| (*h, t.id.as_str())).collect();
        assert_eq!(seen, [(false, "a"), (true, "c"), (false, "b")]);
    }

    #[test]
    fn current_state_is_humanised() {
        let now = at("2024-05-01T12:00:00Z");
        let mut t = task("a", "web.1", 1, "", "running", "running");
        t.state_changed_at = "2024-05-01T11:59:55Z".into();
        assert_eq!(current_state(&t, now), "running 5 seconds ago");
        t.state_changed_at = "2024-05-01T11:59:00Z".into();
        assert_eq!(current_state(&t, now), "running about a minute ago");
        t.state_changed_at = "2024-05-01T11:59:59.800Z".into();
        assert_eq!(current_state(&t, now), "running less than a second ago");
        t.state_changed_at = "2024-05-01T09:00:00Z".into();
        assert_eq!(current_state(&t, now), "running 3 hours ago");
        // A clock a little ahead on the manager is not "in the future".
        t.state_changed_at = "2024-05-01T12:00:02Z".into();
        assert_eq!(current_state(&t, now), "running less than a second ago");
        t.state_changed_at = String::new();
        assert_eq!(current_state(&t, now), "running");
        t.state_changed_at = "1970-01-01T00:00:00Z".into();
        assert_eq!(current_state(&t, now), "running");
        t.state = "pending".into();
        t.state_changed_at = "2024-05-01T11:59:58Z".into();
        assert_eq!(title(&current_state(&t, now)), "Pending 2 seconds ago");
    }

    #[test]
    fn table_truncates_unless_asked_not_to() {
        let mut t = task("abcdefghijklmnopqrstuvwxy", "web.1", 1, "2024-05-01T11:00:00Z", "failed", "shutdown");
        t.error = "task: non-zero exit (1): the command was not found in the image".into();
        let now = at("2024-05-01T12:00:05Z");
        let ordered = order_history(vec![t]);
        let row = &table_rows(&ordered, false, now)[0];
        assert_eq!(row[0], "abcdefghijkl");
        assert_eq!(row[1], "web.1");
        assert_eq!(row[2], "busybox:1");
        assert_eq!(row[3], "0", "the spec version");
        assert_eq!(row[4], "worker1");
        assert_eq!(row[6], "Failed 5 seconds ago");
        assert_eq!(row[7], "\"task: non-zero exit (1): the …\"");
        assert_eq!(row[7].chars().count(), MAX_ERROR_LEN + 2);
        let row = &table_rows(&ordered, true, now)[0];
        assert_eq!(row[0], "abcdefghijklmnopqrstuvwxy");
        assert_eq!(row[1], "web.1.abcdefghijklmnopqrstuvwxy");
        assert_eq!(row[2], "busybox:1@sha256:0123456789abcdef");
        assert!(row[7].ends_with("image\""));
    }

    #[test]
    fn json_shape() {
        let mut t = task("t1", "web.2", 2, "2024-05-01T11:00:00Z", "rejected", "shutdown");
        t.error = "no such image".into();
        t.node_hostname = String::new();
        let now = at("2024-05-01T12:00:00Z") + Duration::from_secs(3);
        let value = serde_json::to_value(to_json(&t, now)).unwrap();
        for (key, expected) in [
            ("id", "t1"),
            ("name", "web.2"),
            ("service", "web"),
            ("node", ""),
            ("desired_state", "shutdown"),
            ("current_state", "rejected 3 seconds ago"),
            ("error", "no such image"),
            ("image", "busybox:1@sha256:0123456789abcdef"),
        ] {
            assert_eq!(value[key], expected, "{key}");
        }
        assert_eq!(value["slot"], 2);
        assert!(value["exit_code"].is_null());
    }

    #[test]
    fn filters() {
        let f = TaskFilter::parse(&["desired-state=Running".into(), "node=worker1".into(), "name=web".into()], true).unwrap();
        assert_eq!(f.desired_states, ["running"]);
        assert_eq!(f.node.as_deref(), Some("worker1"));
        let request = f.request("web", "");
        assert_eq!(request.desired_states, ["running"]);
        let t = task("abc", "web.1", 1, "", "running", "running");
        assert!(f.keep(&t));
        let mut other = t.clone();
        other.name = "webby.1".into();
        assert!(!f.keep(&other));
        assert_eq!(
            TaskFilter::parse(&["colour=red".into()], true).unwrap_err().to_string(),
            "filter \"colour=red\" is invalid; use desired-state=STATE, node=NODE, id=ID or name=NAME"
        );
        assert!(TaskFilter::parse(&["node=x".into()], false).is_err());
        assert!(TaskFilter::parse(&["desired-state".into()], false).is_err());
    }
}
