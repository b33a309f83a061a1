//! `Runtime.Events`: this node's runtime events (shoal_runtime::events) on
//! the wire: the kept ones from `since`, then new ones until `until`.

use std::time::Duration;

use shoal_proto::pb;
use shoal_runtime::events::{LocalEvent, Subject};
use tokio::sync::broadcast::error::RecvError;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

pub type LocalEventStream = ReceiverStream<Result<pb::Event, Status>>;

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

fn now_nanos() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

pub fn stream(request: pb::EventsRequest) -> Result<LocalEventStream, Status> {
    let (replayed, mut live) = shoal_runtime::events::events().replay(request.since_unix_nanos).map_err(|too_old| {
        let kept = humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_nanos(too_old.kept_since_unix_nanos.max(0) as u64));
        Status::out_of_range(format!(
            "this node keeps its last {} runtime events, from {kept} on; ask with --since {kept} or later",
            shoal_runtime::events::HISTORY
        ))
    })?;
    let until = request.until_unix_nanos;
    let types = request.types.clone();
    let wanted = move |event: &LocalEvent| types.is_empty() || types.contains(&wire_type(event.subject).into());
    let (sender, receiver) = tokio::sync::mpsc::channel(256);
    tokio::spawn(async move {
        let in_time = |event: &LocalEvent| until.is_none_or(|until| event.time_unix_nanos <= until);
        for event in replayed.iter().filter(|e| in_time(e) && wanted(e)) {
            if sender.send(Ok(to_wire(event))).await.is_err() {
                return;
            }
        }
        let deadline = until.map(|until| tokio::time::Instant::now() + Duration::from_nanos(until.saturating_sub(now_nanos()).max(0) as u64));
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
            match next {
                Ok(event) if in_time(&event) => {
                    if !wanted(&event) {
                        continue;
                    }
                    if sender.send(Ok(to_wire(&event))).await.is_err() {
                        return;
                    }
                }
                Ok(_) | Err(RecvError::Closed) => return,
                Err(RecvError::Lagged(missed)) => {
                    let message = format!("this client fell {missed} events behind the node; reconnect with --since the last event's time");
                    let _ = sender.send(Err(Status::resource_exhausted(message))).await;
                    return;
                }
            }
        }
    });
    Ok(ReceiverStream::new(receiver))
}
