//! `Runtime.Events`: this node's runtime events (shoal_runtime::events) on
//! the wire: the kept ones from `since`, then new ones until `until`.

use std::time::Duration;

use shoal_proto::pb;
use shoal_runtime::events::{LocalEvent, Subject};
use shoal_proto::event_stream::replay_then_follow;
pub use shoal_proto::event_stream::EventStream as LocalEventStream;

fn wire_type(subject: Subject) -> pb::EventType {
    match subject {
        Subject::Container => pb::EventType::Container,
        Subject::Image => pb::EventType::Image,
        Subject::Volume => pb::EventType::Volume,
    }
}

fn to_wire(event: &LocalEvent) -> pb::Event {
    let r#type = wire_type(event.subject);
    pb::Event {
        id: event.seq.to_string(),
        time_unix_nanos: event.time_unix_nanos,
        r#type: r#type.into(),
        action: event.action.clone(),
        actor_id: event.id.clone(),
        actor_name: event.name.clone(),
        attributes: event.attributes.clone().into_iter().collect(),
        scope: pb::EventScope::Local.into(),
    }
}

/// The stream, and a sentence when `--since` reaches back before what the
/// node keeps (the kept events are sent all the same).
pub fn stream(request: pb::EventsRequest) -> (LocalEventStream, Option<String>) {
    let (replayed, live, too_old) = shoal_runtime::events::events().replay(request.since_unix_nanos);
    let truncated = too_old.map(|too_old| {
        let kept = humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_nanos(too_old.kept_since_unix_nanos.max(0) as u64));
        format!("this node keeps its last {} runtime events, from {kept} on; earlier ones are not shown", shoal_runtime::events::HISTORY)
    });
    let types = request.types;
    let wanted = move |event: &LocalEvent| types.is_empty() || types.contains(&wire_type(event.subject).into());
    (replay_then_follow(replayed, live, request.until_unix_nanos, move |event| wanted(event).then(|| to_wire(event))), truncated)
}
