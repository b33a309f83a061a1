//! Publishing task logs for `service logs`: the leader asks (a
//! `LogSubscription` in the assignments stream) and this node sends the
//! lines of its containers back over one `PublishLogs` stream per
//! subscription, each task's part ending with `close`.

use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use shoal_proto::pb;
use shoal_proto::tls::{self, ClientTls};
use shoal_runtime::container::{ContainerManager, LogEntry, LogOptions};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::reconcile::{pick_container, TaskContainer};
use super::runtime_ops::task_containers;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The channel's per-call limit: a followed subscription's single call
/// lasts as long as the caller wants lines, so it must not be cut short.
const PUBLISH_CALL_LIMIT: Duration = Duration::from_secs(7 * 24 * 3600);
/// After the last line, how long the manager gets to acknowledge.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Lines per message, and bytes, well under gRPC's 4 MiB message limit.
const MAX_LINES_PER_MESSAGE: usize = 256;
const MAX_BYTES_PER_MESSAGE: usize = 1 << 20;

/// Publishes one subscription to the manager at `manager` (the leader that
/// sent it), until every task's lines are sent or the manager ends the
/// stream (the caller went away).
pub async fn publish_subscription(
    containers: Arc<ContainerManager>,
    tls: ClientTls,
    manager: String,
    subscription: pb::LogSubscription,
) {
    let connecting = tls::connect(&manager, &tls, PUBLISH_CALL_LIMIT);
    let channel = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(Ok(channel)) => channel,
        Ok(Err(e)) => {
            tracing::warn!(manager = %manager, error = %e, subscription = %subscription.id, "cannot publish logs");
            return;
        }
        Err(_) => {
            tracing::warn!(manager = %manager, subscription = %subscription.id, "cannot publish logs: connecting timed out");
            return;
        }
    };
    let mut client = pb::dispatcher_client::DispatcherClient::new(channel);
    let (messages, outgoing) = mpsc::channel::<pb::PublishLogsMessage>(16);
    let call = client.publish_logs(ReceiverStream::new(outgoing));
    tokio::pin!(call);

    let local = task_containers(&containers);
    let options = LogOptions {
        follow: subscription.follow,
        tail: subscription.tail.map(|t| usize::try_from(t).unwrap_or(usize::MAX)),
        timestamps: true,
    };
    let feeds = subscription.task_ids.iter().map(|task_id| {
        let container_id = container_for(&local, task_id);
        publish_task(&containers, &subscription.id, task_id, container_id, options, messages.clone())
    });
    // The last sender goes with the feeds: then the stream ends.
    let feed = futures::future::join_all(feeds.collect::<Vec<_>>());
    drop(messages);
    tokio::select! {
        result = &mut call => {
            // The manager ended it first: nobody wants the lines any more.
            if let Err(status) = result {
                tracing::debug!(subscription = %subscription.id, error = %status.message(), "log stream ended by the manager");
            }
            return;
        }
        _ = feed => {}
    }
    if let Ok(Err(status)) = tokio::time::timeout(CLOSE_TIMEOUT, call).await {
        tracing::debug!(subscription = %subscription.id, error = %status.message(), "publishing logs");
    }
}

/// The container whose logs stand for the task here, if it has one.
fn container_for(local: &[TaskContainer], task_id: &str) -> Option<String> {
    let mine: Vec<TaskContainer> = local.iter().filter(|c| c.task_id == task_id).cloned().collect();
    pick_container(&mine).0.map(|c| c.container_id.clone())
}

/// Sends one task's lines, then `close`; just `close` when the task has
/// no container on this node.
async fn publish_task(
    containers: &ContainerManager,
    subscription_id: &str,
    task_id: &str,
    container_id: Option<String>,
    options: LogOptions,
    messages: mpsc::Sender<pb::PublishLogsMessage>,
) {
    let message = |lines: Vec<pb::LogLine>, close: bool| pb::PublishLogsMessage {
        subscription_id: subscription_id.to_string(),
        task_id: task_id.to_string(),
        lines,
        close,
    };
    let entries = container_id.map(|id| containers.logs(&id, options));
    if let Some(Ok(mut entries)) = entries {
        while let Some(first) = entries.next().await {
            let mut lines = vec![log_line(first)];
            let mut bytes = lines[0].data.len();
            // Whatever else is ready now goes in the same message.
            while lines.len() < MAX_LINES_PER_MESSAGE && bytes < MAX_BYTES_PER_MESSAGE {
                match entries.next().now_or_never() {
                    Some(Some(entry)) => {
                        bytes += entry.bytes.len();
                        lines.push(log_line(entry));
                    }
                    _ => break,
                }
            }
            if messages.send(message(lines, false)).await.is_err() {
                return;
            }
        }
    }
    let _ = messages.send(message(Vec::new(), true)).await;
}

fn log_line(entry: LogEntry) -> pb::LogLine {
    pb::LogLine { time_unix_nanos: entry.time_unix_nanos(), stream: entry.stream.as_str().to_string(), data: entry.bytes }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_runtime::container::Status;

    #[test]
    fn the_running_container_stands_for_its_task() {
        let container = |id: &str, task: &str, status| TaskContainer {
            container_id: id.into(),
            task_id: task.into(),
            status,
            created: "1".into(),
        };
        let local = [container("a", "t1", Status::Exited), container("b", "t1", Status::Running), container("c", "t2", Status::Running)];
        assert_eq!(container_for(&local, "t1").as_deref(), Some("b"));
        assert_eq!(container_for(&local, "t3"), None);
    }
}
