//! `container ls`: docker's filters (`-f name=`, `id=`, `status=`,
//! `label=`) and formats (the default table, `json`, Go templates).

use serde::Serialize;
use shoal_proto::pb;

use crate::client::ConnectArgs;
use crate::error::{CliError, CliResult};
use crate::output::{print_json, print_table};
use crate::template::{self, OutputFormat};

/// The fields a `--format` template may use, as docker names them.
const FIELDS: &[&str] = &["ID", "Image", "Command", "CreatedAt", "RunningFor", "State", "Status", "Names", "Labels"];

pub async fn run(all: bool, filters: &[String], quiet: bool, format: Option<&str>, connect: &ConnectArgs) -> CliResult {
    let filters = filters.iter().map(|f| ListFilter::parse(f)).collect::<CliResult<Vec<_>>>()?;
    let format = OutputFormat::parse(format, FIELDS)?;
    // Asking for a status other than running means the stopped ones too, as in docker.
    let all = all || filters.iter().any(|f| matches!(f, ListFilter::Status(s) if s != "running" && s != "paused"));
    let mut runtime = pb::runtime_client::RuntimeClient::new(connect.connect().await?);
    let mut containers = runtime.list_containers(pb::ListContainersRequest { all }).await?.into_inner().containers;
    containers.retain(|c| filters.iter().all(|f| f.matches(c)));
    list(containers, quiet, format)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ListFilter {
    Name(String),
    Id(String),
    Status(String),
    Label(String, Option<String>),
}

impl ListFilter {
    fn parse(value: &str) -> CliResult<ListFilter> {
        let (key, rest) = value.split_once('=').ok_or_else(|| {
            CliError::msg(format!("filter {value:?} is invalid; use KEY=VALUE with name, id, status or label"))
        })?;
        match key {
            "name" => Ok(ListFilter::Name(rest.to_string())),
            "id" => Ok(ListFilter::Id(rest.to_string())),
            "status" => match rest {
                "created" | "running" | "paused" | "exited" | "dead" => Ok(ListFilter::Status(rest.to_string())),
                other => Err(CliError::msg(format!(
                    "status {other:?} is unknown; use created, running, paused, exited or dead"
                ))),
            },
            "label" => Ok(match rest.split_once('=') {
                Some((k, v)) => ListFilter::Label(k.to_string(), Some(v.to_string())),
                None => ListFilter::Label(rest.to_string(), None),
            }),
            other => Err(CliError::msg(format!("filter key {other:?} is unknown; use name, id, status or label"))),
        }
    }

    fn matches(&self, container: &pb::ContainerSummary) -> bool {
        match self {
            ListFilter::Name(part) => container.name.contains(part.as_str()),
            ListFilter::Id(prefix) => container.id.starts_with(prefix.as_str()),
            ListFilter::Status(status) => container.state == *status,
            ListFilter::Label(key, value) => match (container.labels.get(key), value) {
                (Some(found), Some(wanted)) => found == wanted,
                (Some(_), None) => true,
                (None, _) => false,
            },
        }
    }
}

/// `run`: pulls a missing image first (as docker does), then one streaming
/// call creates, starts and, unless detached, relays output until the exit.
/// Returns the container's exit code.
#[derive(Serialize)]
struct ContainerJson<'a> {
    id: &'a str,
    name: &'a str,
    image: &'a str,
    command: &'a str,
    created: i64,
    state: &'a str,
    status: &'a str,
    labels: &'a std::collections::HashMap<String, String>,
}

fn list(containers: Vec<pb::ContainerSummary>, quiet: bool, format: OutputFormat) -> CliResult {
    if quiet {
        for c in &containers {
            println!("{}", &c.id[..c.id.len().min(12)]);
        }
        return Ok(());
    }
    match format {
        OutputFormat::Json => print_json(
            &containers
                .iter()
                .map(|c| ContainerJson {
                    id: &c.id,
                    name: &c.name,
                    image: &c.image,
                    command: &c.command,
                    created: c.created_unix,
                    state: &c.state,
                    status: &c.status,
                    labels: &c.labels,
                })
                .collect::<Vec<_>>(),
        ),
        OutputFormat::Template { table, parts } => {
            template::print(&containers, table, &parts, field, |c, key| c.labels.get(key).cloned().unwrap_or_default(), header);
            Ok(())
        }
        OutputFormat::Table => {
            let rows = containers
                .iter()
                .map(|c| {
                    let mut command = format!("\"{}\"", c.command);
                    if command.chars().count() > 22 {
                        command = format!("{}…\"", command.chars().take(20).collect::<String>());
                    }
                    vec![
                        c.id.chars().take(12).collect(),
                        c.image.clone(),
                        command,
                        crate::output::ago(c.created_unix),
                        c.status.clone(),
                        c.name.clone(),
                    ]
                })
                .collect();
            print_table(&["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "NAMES"], rows);
            Ok(())
        }
    }
}

/// A field of a row, as docker's template shows it.
fn field(c: &pb::ContainerSummary, name: &str) -> String {
    match name {
        "ID" => c.id.chars().take(12).collect(),
        "Image" => c.image.clone(),
        "Command" => format!("\"{}\"", c.command),
        "CreatedAt" => humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(c.created_unix.max(0) as u64)).to_string(),
        "RunningFor" => crate::output::ago(c.created_unix),
        "State" => c.state.clone(),
        "Status" => c.status.clone(),
        "Names" => c.name.clone(),
        "Labels" => c.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","),
        _ => String::new(),
    }
}

/// A column's header in `table` templates, as docker titles it.
fn header(name: &str) -> String {
    match name {
        "ID" => "CONTAINER ID".into(),
        "RunningFor" => "CREATED".into(),
        "CreatedAt" => "CREATED AT".into(),
        other => other.to_uppercase(),
    }
}
