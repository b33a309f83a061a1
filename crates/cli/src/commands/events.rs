//! `shoal events`: the swarm's events (from any manager's history, the
//! same on each) and, on a node's own socket, the node's runtime events,
//! merged as they come, filtered and printed as `docker events` prints.

use std::collections::BTreeMap;

use shoal_proto::pb;
use tonic::transport::Channel;

use crate::client::{ConnectArgs, Target};
use crate::commands::flags;
use crate::error::{CliError, CliResult};

#[derive(Debug, clap::Args)]
pub struct EventsArgs {
    /// Events since this time: RFC 3339, Unix seconds, or a duration ago (10m)
    #[arg(long)]
    since: Option<String>,
    /// Stop at this time (same forms as --since); without it, follow
    #[arg(long)]
    until: Option<String>,
    /// type=service|task|node|network|secret|config|stack|container|image|volume, event=ACTION,
    /// service=, node=, container=, image=, volume=, network=, secret=, config=, scope=swarm|local
    #[arg(short, long = "filter", value_name = "KEY=VALUE")]
    filters: Vec<String>,
    /// json: one object per line, as docker's --format json
    #[arg(long)]
    format: Option<String>,
}

const FILTER_KEYS: [&str; 12] = ["type", "event", "service", "node", "container", "image", "volume", "network", "secret", "config", "stack", "scope"];

/// Filters as docker applies them: values of one key are alternatives,
/// different keys must all match.
#[derive(Debug, Default, PartialEq)]
struct Filters(BTreeMap<String, Vec<String>>);

impl Filters {
    fn parse(values: &[String]) -> CliResult<Filters> {
        let mut filters = BTreeMap::<String, Vec<String>>::new();
        for value in values {
            let Some((key, wanted)) = value.split_once('=') else {
                return Err(CliError::msg(format!("filter {value:?} is invalid; use KEY=VALUE, e.g. type=service")));
            };
            let key = if key == "action" { "event" } else { key };
            if !FILTER_KEYS.contains(&key) {
                return Err(CliError::msg(format!("filter key {key:?} is unknown; use one of {}", FILTER_KEYS.join(", "))));
            }
            if key == "type" && type_from_name(wanted).is_none() {
                return Err(CliError::msg(format!(
                    "event type {wanted:?} is unknown; use service, task, node, network, secret, config, stack, container, image or volume"
                )));
            }
            filters.entry(key.to_string()).or_default().push(wanted.to_string());
        }
        Ok(Filters(filters))
    }

    fn matches(&self, event: &pb::Event) -> bool {
        let kind = type_name(event.r#type());
        let attribute = |name: &str| event.attributes.get(name).map(String::as_str);
        let names = |value: &str| event.actor_name == value || (!value.is_empty() && event.actor_id.starts_with(value));
        self.0.iter().all(|(key, values)| {
            values.iter().any(|value| match key.as_str() {
                "type" => kind == *value,
                "event" => event.action == *value,
                "scope" => (event.scope() == pb::EventScope::Swarm && value == "swarm") || (event.scope() == pb::EventScope::Local && value == "local"),
                "service" => (kind == "service" && names(value)) || attribute("service") == Some(value),
                "node" => (kind == "node" && names(value)) || attribute("node") == Some(value),
                "image" => (kind == "image" && names(value)) || attribute("image") == Some(value),
                other => kind == other && names(value),
            })
        })
    }

    /// Whether the filters can let events of `scope` through at all.
    fn wants(&self, scope: pb::EventScope) -> bool {
        let local = ["container", "image", "volume"];
        let by_type = self.0.get("type").is_none_or(|types| types.iter().any(|t| local.contains(&t.as_str()) == (scope == pb::EventScope::Local)));
        let by_scope = self.0.get("scope").is_none_or(|scopes| scopes.iter().any(|s| (s == "local") == (scope == pb::EventScope::Local)));
        by_type && by_scope
    }
}

/// `service`, `task`, ...: the wire's name without its prefix, lowercase.
fn type_name(kind: pb::EventType) -> String {
    kind.as_str_name().trim_start_matches("EVENT_TYPE_").to_ascii_lowercase()
}

fn type_from_name(name: &str) -> Option<pb::EventType> {
    pb::EventType::from_str_name(&format!("EVENT_TYPE_{}", name.to_ascii_uppercase())).filter(|t| *t != pb::EventType::Unspecified)
}

/// docker's line: `TIME TYPE ACTION ID (name=..., key=value, ...)`.
fn text_line(event: &pb::Event) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(event.time_unix_nanos.max(0) as u64);
    let mut attributes: Vec<String> = Vec::new();
    if !event.actor_name.is_empty() {
        attributes.push(format!("name={}", event.actor_name));
    }
    let sorted: BTreeMap<&String, &String> = event.attributes.iter().collect();
    attributes.extend(sorted.into_iter().map(|(k, v)| format!("{k}={v}")));
    format!(
        "{} {} {} {} ({})",
        humantime::format_rfc3339_nanos(time),
        type_name(event.r#type()),
        event.action,
        event.actor_id,
        attributes.join(", ")
    )
}

/// docker's JSON shape, with the event's id.
fn json_line(event: &pb::Event) -> String {
    let mut attributes: BTreeMap<String, String> = event.attributes.clone().into_iter().collect();
    if !event.actor_name.is_empty() {
        attributes.insert("name".into(), event.actor_name.clone());
    }
    serde_json::json!({
        "id": event.id,
        "Type": type_name(event.r#type()),
        "Action": event.action,
        "Actor": {"ID": event.actor_id, "Attributes": attributes},
        "scope": if event.scope() == pb::EventScope::Local { "local" } else { "swarm" },
        "time": event.time_unix_nanos / 1_000_000_000,
        "timeNano": event.time_unix_nanos,
    })
    .to_string()
}

pub async fn run(args: EventsArgs, connect: &ConnectArgs) -> CliResult {
    let filters = Filters::parse(&args.filters)?;
    let json = match args.format.as_deref() {
        None => false,
        Some("json") => true,
        Some(other) => return Err(CliError::msg(format!("--format {other:?} is unknown; use json, or leave it out for docker's lines"))),
    };
    // The type filter is applied where the events are made, too.
    let types = filters.0.get("type").map(|t| t.iter().filter_map(|t| type_from_name(t)).map(i32::from).collect()).unwrap_or_default();
    let request = pb::EventsRequest {
        types,
        since_unix_nanos: args.since.as_deref().map(|s| flags::parse_time("--since", s)).transpose()?,
        until_unix_nanos: args.until.as_deref().map(|u| flags::parse_time("--until", u)).transpose()?,
    };
    let local = matches!(connect.target()?, Target::Unix(_));
    let channel = connect.connect().await?;
    let (sender, mut merged) = tokio::sync::mpsc::channel::<CliResult<pb::Event>>(256);
    let mut sources = 0;
    if filters.wants(pb::EventScope::Swarm) {
        let mut control = pb::control_client::ControlClient::new(channel.clone());
        match control.events(request.clone()).await {
            Ok(stream) => {
                warn_if_truncated(&stream);
                forward(stream.into_inner(), sender.clone());
                sources += 1;
            }
            // A worker's own socket has no manager behind it: its events are its own.
            Err(status) if local && is_not_a_manager(&status) => {}
            Err(status) => return Err(status.into()),
        }
    }
    if local && filters.wants(pb::EventScope::Local) {
        let mut runtime = pb::runtime_client::RuntimeClient::<Channel>::new(channel);
        let stream = runtime.events(request).await?;
        warn_if_truncated(&stream);
        forward(stream.into_inner(), sender.clone());
        sources += 1;
    }
    drop(sender);
    if sources == 0 {
        return Err(CliError::msg("no source has events of that kind here: swarm events need a manager, node events the node's own socket"));
    }
    while let Some(event) = merged.recv().await {
        let event = event?;
        if filters.matches(&event) {
            println!("{}", if json { json_line(&event) } else { text_line(&event) });
        }
    }
    Ok(())
}

/// The server's sentence when `--since` reached back before its history.
fn warn_if_truncated<T>(response: &tonic::Response<T>) {
    if let Some(sentence) = response.metadata().get(shoal_proto::event_stream::TRUNCATED_HEADER).and_then(|v| v.to_str().ok()) {
        eprintln!("warning: {sentence}");
    }
}

fn is_not_a_manager(status: &tonic::Status) -> bool {
    matches!(status.code(), tonic::Code::FailedPrecondition | tonic::Code::Unavailable | tonic::Code::Unimplemented)
}

fn forward(mut stream: tonic::Streaming<pb::Event>, sender: tokio::sync::mpsc::Sender<CliResult<pb::Event>>) {
    tokio::spawn(async move {
        loop {
            match stream.message().await {
                Ok(Some(event)) => {
                    if sender.send(Ok(event)).await.is_err() {
                        return;
                    }
                }
                Ok(None) => return,
                Err(status) => {
                    let _ = sender.send(Err(status.into())).await;
                    return;
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: pb::EventType, action: &str, name: &str, attributes: &[(&str, &str)]) -> pb::Event {
        pb::Event {
            id: "1.0".into(),
            time_unix_nanos: 1_765_015_200_000_000_000,
            r#type: kind.into(),
            action: action.into(),
            actor_id: "abc123".into(),
            actor_name: name.into(),
            attributes: attributes.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            scope: pb::EventScope::Swarm.into(),
        }
    }

    #[test]
    fn filters_combine_as_dockers_do() {
        let filters = Filters::parse(&["type=service".into(), "type=task".into(), "service=web".into()]).unwrap();
        assert!(filters.matches(&event(pb::EventType::Service, "create", "web", &[])));
        assert!(filters.matches(&event(pb::EventType::Task, "running", "web.1", &[("service", "web")])));
        assert!(!filters.matches(&event(pb::EventType::Service, "create", "db", &[])));
        assert!(!filters.matches(&event(pb::EventType::Node, "update", "web", &[])));
        assert!(filters.wants(pb::EventScope::Swarm) && !filters.wants(pb::EventScope::Local));
        let died = Filters::parse(&["event=die".into()]).unwrap();
        assert!(died.matches(&event(pb::EventType::Container, "die", "c1", &[("exitCode", "3")])));
    }

    #[test]
    fn bad_filters_are_one_sentence() {
        let unknown = Filters::parse(&["colour=red".into()]).unwrap_err().to_string();
        assert!(unknown.contains("filter key \"colour\" is unknown"), "{unknown}");
        let kind = Filters::parse(&["type=plugin".into()]).unwrap_err().to_string();
        assert!(kind.contains("event type \"plugin\" is unknown"), "{kind}");
        let bare = Filters::parse(&["service".into()]).unwrap_err().to_string();
        assert!(bare.contains("use KEY=VALUE"), "{bare}");
    }

    #[test]
    fn lines_look_like_dockers() {
        let line = text_line(&event(pb::EventType::Service, "update", "web", &[("spec.task.image.new", "busybox:2")]));
        assert_eq!(line, "2025-12-06T10:00:00.000000000Z service update abc123 (name=web, spec.task.image.new=busybox:2)");
        let json: serde_json::Value = serde_json::from_str(&json_line(&event(pb::EventType::Task, "failed", "web.1", &[("exit_code", "1")]))).unwrap();
        assert_eq!((json["Type"].as_str(), json["Action"].as_str()), (Some("task"), Some("failed")));
        assert_eq!(json["Actor"]["Attributes"]["exit_code"], "1");
        assert_eq!(json["Actor"]["Attributes"]["name"], "web.1");
    }
}
