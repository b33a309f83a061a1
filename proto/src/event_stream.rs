//! How an `Events` call answers, for the swarm's events (a manager) and a
//! node's (the daemon) alike: the kept events from `--since`, then new
//! ones as they come, until `--until` passes or the client goes; a client
//! too slow to keep up is told to reconnect with `--since`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::broadcast::{self, error::RecvError};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::pb;

pub type EventStream = ReceiverStream<Result<pb::Event, Status>>;

/// Response metadata set when `--since` reached back before the history
/// kept: the sentence the client shows as a warning (the events kept are
/// still sent).
pub const TRUNCATED_HEADER: &str = "shoal-events-truncated";

/// `stream` as a response, with [`TRUNCATED_HEADER`] when `truncated`.
pub fn response(stream: EventStream, truncated: Option<String>) -> tonic::Response<EventStream> {
    let mut response = tonic::Response::new(stream);
    if let Some(value) = truncated.and_then(|t| t.parse().ok()) {
        response.metadata_mut().insert(TRUNCATED_HEADER, value);
    }
    response
}

/// Streams `replayed`, then what `live` brings, as `pb::Event`s: only those
/// `to_wire` keeps (it filters by returning `None`) and none after
/// `until_unix_nanos`.
pub fn replay_then_follow<E: Clone + Send + Sync + 'static>(
    replayed: Vec<E>,
    mut live: broadcast::Receiver<E>,
    until_unix_nanos: Option<i64>,
    to_wire: impl Fn(&E) -> Option<pb::Event> + Send + Sync + 'static,
) -> EventStream {
    let (sender, receiver) = tokio::sync::mpsc::channel(256);
    tokio::spawn(async move {
        let in_time = |event: &pb::Event| until_unix_nanos.is_none_or(|until| event.time_unix_nanos <= until);
        for event in replayed.iter().filter_map(&to_wire) {
            if in_time(&event) && sender.send(Ok(event)).await.is_err() {
                return;
            }
        }
        let deadline = until_unix_nanos.map(|until| {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
            tokio::time::Instant::now() + Duration::from_nanos(u64::try_from(until.saturating_sub(now)).unwrap_or(0))
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
                Err(RecvError::Closed) => return,
                Err(RecvError::Lagged(missed)) => {
                    let message = format!("this client fell {missed} events behind; reconnect with --since the last event's time");
                    let _ = sender.send(Err(Status::resource_exhausted(message))).await;
                    return;
                }
            };
            let Some(event) = to_wire(&event) else { continue };
            if !in_time(&event) {
                return;
            }
            if sender.send(Ok(event)).await.is_err() {
                return;
            }
        }
    });
    ReceiverStream::new(receiver)
}
