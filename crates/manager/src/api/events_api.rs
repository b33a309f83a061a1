//! `Control.Events`: this manager's event history, then its new events as
//! they are applied, until `until` (or for as long as the client listens).

use std::time::Duration;

use shoal_proto::pb;
use tokio::sync::broadcast::error::RecvError;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::events::{ClusterEvent, Subject};
use crate::manager::Manager;

pub type EventStream = ReceiverStream<Result<pb::Event, Status>>;

const NANOS_PER_MS: i64 = 1_000_000;

fn wire_type(subject: Subject) -> pb::EventType {
    match subject {
        Subject::Cluster => pb::EventType::Cluster,
        Subject::Node => pb::EventType::Node,
        Subject::Service => pb::EventType::Service,
        Subject::Task => pb::EventType::Task,
        Subject::Network => pb::EventType::Network,
        Subject::Secret => pb::EventType::Secret,
        Subject::Config => pb::EventType::Config,
        Subject::Stack => pb::EventType::Stack,
    }
}

pub fn to_wire(event: &ClusterEvent) -> pb::Event {
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

pub fn stream(manager: &Manager, request: pb::EventsRequest) -> Result<EventStream, Status> {
    let since = request.since_unix_nanos.map(to_ms);
    let types: Vec<i32> = request.types.clone();
    let wanted = move |event: &ClusterEvent| types.is_empty() || types.contains(&wire_type(event.subject).into());
    let until = request.until_unix_nanos.map(to_ms);
    let (replayed, mut live) = manager.store.history().replay(since).map_err(|too_old| {
        let kept = humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(too_old.kept_since_ms));
        Status::out_of_range(format!(
            "this manager keeps events from {kept} on (a bounded history since it started); ask with --since {kept} or later"
        ))
    })?;
    let (sender, receiver) = tokio::sync::mpsc::channel(256);
    tokio::spawn(async move {
        let before_until = |event: &ClusterEvent| until.is_none_or(|until| event.time_ms <= until);
        for event in replayed.iter().filter(|e| before_until(e) && wanted(e)) {
            if sender.send(Ok(to_wire(event))).await.is_err() {
                return;
            }
        }
        let last_replayed = replayed.last().map(|e| (e.index, e.seq));
        let deadline = until.map(|until| {
            let wait = until.saturating_sub(crate::store::now_ms());
            tokio::time::Instant::now() + Duration::from_millis(wait)
        });
        loop {
            let next = match deadline {
                Some(deadline) => match tokio::time::timeout_at(deadline, live.recv()).await {
                    Ok(next) => next,
                    Err(_) => return,
                },
                None => tokio::select! {
                    next = live.recv() => next,
                    _ = sender.closed() => return,
                },
            };
            let event = match next {
                Ok(event) => event,
                Err(RecvError::Lagged(missed)) => {
                    let _ = sender
                        .send(Err(Status::resource_exhausted(format!(
                            "this client fell {missed} events behind the swarm; reconnect with --since the last event's time"
                        ))))
                        .await;
                    return;
                }
                Err(RecvError::Closed) => return,
            };
            // The replay and the live stream overlap by what was recorded
            // between taking them; each event once.
            if last_replayed.is_some_and(|last| (event.index, event.seq) <= last) {
                continue;
            }
            if !before_until(&event) {
                return;
            }
            if !wanted(&event) {
                continue;
            }
            if sender.send(Ok(to_wire(&event))).await.is_err() {
                return;
            }
        }
    });
    Ok(ReceiverStream::new(receiver))
}
