//! `Control.Events`: this manager's event history, then its new events as
//! they are applied, until `until` (or for as long as the client listens).

use std::time::Duration;

use shoal_proto::pb;
use shoal_proto::event_stream::replay_then_follow;
pub use shoal_proto::event_stream::EventStream;

use crate::events::ClusterEvent;
use crate::store::Kind;
use crate::manager::Manager;

const NANOS_PER_MS: i64 = 1_000_000;

fn wire_type(subject: Kind) -> pb::EventType {
    match subject {
        Kind::Cluster => pb::EventType::Cluster,
        Kind::Node => pb::EventType::Node,
        Kind::Service => pb::EventType::Service,
        Kind::Task => pb::EventType::Task,
        Kind::Network => pb::EventType::Network,
        Kind::Secret => pb::EventType::Secret,
        Kind::Config => pb::EventType::Config,
        Kind::Stack => pb::EventType::Stack,
    }
}

fn to_wire(event: &ClusterEvent) -> pb::Event {
    let r#type = wire_type(event.subject);
    pb::Event {
        id: event.event_id(),
        time_unix_nanos: i64::try_from(event.time_ms).unwrap_or(i64::MAX).saturating_mul(NANOS_PER_MS),
        r#type: r#type.into(),
        action: event.action.clone(),
        actor_id: event.id.clone(),
        actor_name: event.name.clone(),
        attributes: event.attributes.clone().into_iter().collect(),
        scope: pb::EventScope::Swarm.into(),
    }
}

fn to_ms(nanos: i64) -> u64 {
    u64::try_from(nanos.max(0) / NANOS_PER_MS).unwrap_or(0)
}

/// The stream, and a sentence when `--since` reaches back before what this
/// manager keeps (the kept events are sent all the same).
pub fn stream(manager: &Manager, request: pb::EventsRequest) -> (EventStream, Option<String>) {
    let history = manager.store.history();
    let since = request.since_unix_nanos.map(to_ms);
    let (replayed, live, too_old) = history.replay(since);
    let truncated = too_old.map(|too_old| {
        let kept = humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(too_old.kept_since_ms));
        format!("this manager keeps events from {kept} on (a bounded history since it started); earlier ones are not shown")
    });
    let types = request.types;
    let wanted = move |event: &ClusterEvent| types.is_empty() || types.contains(&wire_type(event.subject).into());
    (replay_then_follow(replayed, live, request.until_unix_nanos, move |event| wanted(event).then(|| to_wire(event))), truncated)
}
