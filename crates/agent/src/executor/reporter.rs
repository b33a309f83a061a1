//! Task status reports to the managers, batched the way Nagle batches
//! packets: an idle node sends a report at once, and whatever the workers
//! report while a call is in flight goes out together in the next call, so
//! batches grow with load without delaying a lone report. A failed call is retried, through whichever
//! manager answers, with only the latest update per task kept, so a task
//! that moved on meanwhile costs one update, and an end is never lost.

use std::collections::HashMap;
use std::time::Duration;

use shoal_proto::pb;
use tokio::sync::mpsc;

use crate::managers::ManagerDialer;
use super::task_state::TaskState;

/// The most updates one call carries.
const BIG_BATCH: usize = 200;
const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// Updates waiting to be sent, at most one per task.
#[derive(Debug, Default)]
pub struct PendingUpdates {
    by_task: HashMap<String, pb::TaskStatusUpdate>,
}

impl PendingUpdates {
    pub fn len(&self) -> usize {
        self.by_task.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_task.is_empty()
    }

    /// A new update from a worker: it replaces the task's pending one,
    /// unless that one is further along (a worker's reports only move
    /// forward, so that would be a bug; an end must still not be lost).
    pub fn push(&mut self, update: pb::TaskStatusUpdate) {
        match self.by_task.get(&update.task_id) {
            Some(pending) if rank(pending) > rank(&update) => {}
            _ => {
                self.by_task.insert(update.task_id.clone(), update);
            }
        }
    }

    /// An update from a batch that failed to send: it goes back unless the
    /// task has a newer one pending by now.
    pub fn requeue(&mut self, update: pb::TaskStatusUpdate) {
        match self.by_task.get(&update.task_id) {
            Some(pending) if rank(pending) >= rank(&update) => {}
            _ => {
                self.by_task.insert(update.task_id.clone(), update);
            }
        }
    }

    /// Everything pending, oldest first; the buffer is left empty.
    pub fn take(&mut self) -> Vec<pb::TaskStatusUpdate> {
        let mut batch: Vec<pb::TaskStatusUpdate> = self.by_task.drain().map(|(_, u)| u).collect();
        batch.sort_by(|a, b| (a.timestamp_ms, &a.task_id).cmp(&(b.timestamp_ms, &b.task_id)));
        batch
    }
}

/// How far along an update is; unknown states (never sent by this agent)
/// rank lowest.
fn rank(update: &pb::TaskStatusUpdate) -> Option<TaskState> {
    TaskState::parse(&update.state)
}

/// Sends the workers' updates until every sender is gone and the last
/// ones are out (or could not be sent).
pub async fn run_reporter(node_id: String, mut dialer: ManagerDialer, mut updates: mpsc::Receiver<pb::TaskStatusUpdate>) {
    let mut pending = PendingUpdates::default();
    let mut client: Option<pb::dispatcher_client::DispatcherClient<tonic::transport::Channel>> = None;
    let mut retry_delay = RETRY_MIN;
    let mut open = true;
    loop {
        if pending.is_empty() {
            if !open {
                return;
            }
            match updates.recv().await {
                Some(update) => pending.push(update),
                None => return,
            }
        }
        // Take what queued up meanwhile (during the previous call) and send it now.
        while open && pending.len() < BIG_BATCH {
            match updates.try_recv() {
                Ok(update) => pending.push(update),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => open = false,
            }
        }
        let batch = pending.take();
        match send(&node_id, &mut dialer, &mut client, batch.clone()).await {
            Ok(()) => retry_delay = RETRY_MIN,
            Err(error) => {
                tracing::debug!(%error, updates = batch.len(), "task status report failed; retrying");
                client = None;
                for update in batch {
                    pending.requeue(update);
                }
                if !open {
                    // The executor is stopping: nothing is left to retry for.
                    return;
                }
                // Keep taking updates while waiting, so workers never block.
                let wait = tokio::time::sleep(retry_delay);
                tokio::pin!(wait);
                loop {
                    tokio::select! {
                        update = updates.recv() => match update {
                            Some(update) => pending.push(update),
                            None => { open = false; break }
                        },
                        _ = &mut wait => break,
                    }
                }
                retry_delay = (retry_delay * 2).min(RETRY_MAX);
            }
        }
    }
}

async fn send(
    node_id: &str,
    dialer: &mut ManagerDialer,
    client: &mut Option<pb::dispatcher_client::DispatcherClient<tonic::transport::Channel>>,
    updates: Vec<pb::TaskStatusUpdate>,
) -> Result<(), String> {
    if client.is_none() {
        let (_, channel) = dialer.connect().await?;
        *client = Some(pb::dispatcher_client::DispatcherClient::new(channel));
    }
    let Some(connected) = client.as_mut() else { return Err("no manager connection".into()) };
    connected
        .update_task_status(pb::UpdateTaskStatusRequest { node_id: node_id.to_string(), updates })
        .await
        .map(drop)
        .map_err(|status| status.message().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(task: &str, state: &str, at: u64) -> pb::TaskStatusUpdate {
        pb::TaskStatusUpdate { task_id: task.into(), state: state.into(), timestamp_ms: at, ..Default::default() }
    }

    #[test]
    fn only_the_latest_update_per_task_is_kept() {
        let mut pending = PendingUpdates::default();
        pending.push(update("a", "accepted", 1));
        pending.push(update("a", "preparing", 2));
        pending.push(update("b", "running", 3));
        pending.push(update("a", "running", 4));
        assert_eq!(pending.take(), vec![update("b", "running", 3), update("a", "running", 4)]);
        assert!(pending.is_empty());
    }

    #[test]
    fn an_end_is_never_replaced_by_an_earlier_state() {
        let mut pending = PendingUpdates::default();
        pending.push(update("a", "failed", 5));
        pending.push(update("a", "running", 6));
        assert_eq!(pending.take(), vec![update("a", "failed", 5)]);
    }

    #[test]
    fn a_failed_batch_goes_back_behind_newer_updates() {
        let mut pending = PendingUpdates::default();
        let failed = vec![update("a", "running", 1), update("b", "running", 1), update("c", "complete", 1)];
        // Arrived while the batch was on its way.
        pending.push(update("a", "complete", 2));
        pending.push(update("c", "complete", 3));
        for u in failed {
            pending.requeue(u);
        }
        assert_eq!(pending.take(), vec![update("b", "running", 1), update("a", "complete", 2), update("c", "complete", 3)]);
    }
}
