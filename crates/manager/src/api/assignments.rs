//! A node's assignments stream: the tasks it must run (or stop), sent whole
//! once and then as changes, plus the log subscriptions that concern it,
//! its view of the overlay and the secrets and configs its tasks use.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use shoal_proto::pb;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tonic::Status;

use super::file_delivery::DeliveredFiles;
use super::overlay_view::{diff, overlay_view, update_entries, OverlayView, ViewChanges};
use super::service_pb::{task_addresses, task_spec_to_pb};
use crate::manager::Manager;
use crate::store::{Change, Node, Object, StoreState, Task, TaskState};

/// How often a quiet stream checks that this manager still leads.
const LEADERSHIP_CHECK: Duration = Duration::from_millis(500);

/// How long a stream gathers further changes into a message once one that
/// concerns its node arrives (SwarmKit's dispatcher waits 100 ms).
const BATCH_WAIT: Duration = Duration::from_millis(50);

/// The tasks a node holds containers for, with their versions: assigned
/// to it, running or ended. An ended task stays, its stopped container kept
/// for `service logs`, until the slot's history limit (or the service's
/// removal) deletes it; then the agent removes the container. Orphaned
/// tasks leave at once: they were replaced, and their containers must not
/// linger on a node that comes back.
fn held_tasks<'a>(state: &'a StoreState, node_id: &str) -> impl Iterator<Item = &'a Task> + 'a {
    state.tasks_on_node(node_id).filter(|t| t.status.state >= TaskState::Assigned && t.status.state != TaskState::Orphaned)
}

fn assignment(state: &StoreState, task: &Task, node_hostname: &str) -> pb::Assignment {
    pb::Assignment {
        task_id: task.meta.id.clone(),
        name: task.name(),
        service_id: task.service_id.clone(),
        service_name: task.service_name.clone(),
        slot: task.slot,
        spec: Some(task_spec_to_pb(&task.spec)),
        desired_state: task.desired_state.as_str().into(),
        version: task.meta.version,
        node_hostname: node_hostname.to_string(),
        observed_state: task.status.state.as_str().into(),
        networks: task_addresses(state, task),
    }
}

/// Whether a store change can alter `node_id`'s assignments (its tasks,
/// their addresses and files). Its view of the overlay is
/// [`ViewChanges::of`]'s to judge.
fn concerns_tasks(change: &Change, node_id: &str) -> bool {
    let on_node = |object: &Object| match object {
        Object::Task(t) => t.node_id == node_id,
        Object::Node(n) => n.meta.id == node_id,
        Object::Network(_) | Object::Service(_) => true,
        _ => false,
    };
    match change {
        Change::Created(o) | Change::Deleted(o) => on_node(o),
        Change::Updated { old, new } => on_node(old) || on_node(new),
    }
}

/// Feeds `tx` until the agent goes away or this manager stops leading
/// (the agent then reconnects to the new leader and gets a full set).
pub async fn stream(manager: Arc<Manager>, node_id: String, tx: mpsc::Sender<Result<pb::AssignmentsMessage, Status>>) {
    let mut events = manager.store.watch();
    let mut subscriptions = manager.logs.watch();
    let mut sent: HashMap<String, u64> = HashMap::new();
    let mut sent_subscriptions: HashSet<String> = HashSet::new();
    let mut sent_overlay = OverlayView::default();
    let mut sent_files = DeliveredFiles::default();
    let mut first = true;
    let mut dirty = true;
    let mut overlay_changes = ViewChanges::Everything;
    loop {
        if !manager.is_leader() {
            let _ = tx.send(Err(Status::unavailable("this manager stopped leading; reconnect to the new leader"))).await;
            return;
        }
        let mut message = pb::AssignmentsMessage { full: first, ..Default::default() };
        if dirty {
            // Files from the same view as the tasks: a task never arrives
            // without the values it uses.
            // Only the tasks whose version moved are turned into messages:
            // a node's stream wakes for every service or network change in
            // the swarm, and rebuilding each of its tasks' specs every time
            // was most of a busy leader's CPU (1,000 nodes).
            let current: HashMap<String, u64> = manager.store.view(|s| {
                sent_files.update(s, &node_id, &mut message);
                let hostname = s.get_typed::<Node>(&node_id).map(|n| n.hostname.clone()).unwrap_or_default();
                let mut current = HashMap::new();
                for task in held_tasks(s, &node_id) {
                    if first || sent.get(&task.meta.id) != Some(&task.meta.version) {
                        message.changed.push(assignment(s, task, &hostname));
                    }
                    current.insert(task.meta.id.clone(), task.meta.version);
                }
                current
            });
            message.removed = sent.keys().filter(|id| !current.contains_key(*id)).cloned().collect();
            sent.retain(|id, _| !message.removed.contains(id));
            sent.extend(message.changed.iter().map(|a| (a.task_id.clone(), a.version)));
            dirty = false;
        }
        let rebuild = match std::mem::replace(&mut overlay_changes, ViewChanges::Nothing) {
            ViewChanges::Nothing => false,
            ViewChanges::Everything => true,
            entries => !manager.store.view(|s| update_entries(s, &node_id, &mut sent_overlay, &entries, &mut message)),
        };
        if rebuild {
            let overlay = manager.store.view(|s| overlay_view(s, &node_id));
            diff(&sent_overlay, &overlay, &mut message);
            sent_overlay = overlay;
        }
        for subscription in manager.logs.for_node(&node_id) {
            if sent_subscriptions.insert(subscription.id.clone()) {
                message.log_subscriptions.push(subscription);
            }
        }
        let has_news = first
            || !message.changed.is_empty()
            || !message.removed.is_empty()
            || !message.log_subscriptions.is_empty()
            || !message.networks_changed.is_empty()
            || !message.networks_removed.is_empty()
            || !message.peers_changed.is_empty()
            || !message.peers_removed.is_empty()
            || !message.services_changed.is_empty()
            || !message.services_removed.is_empty()
            || !message.service_tasks_changed.is_empty()
            || !message.files_changed.is_empty()
            || !message.files_removed.is_empty();
        if has_news {
            let metrics = crate::metrics::metrics();
            metrics.assignments_sent.inc();
            // What a change costs the managers to tell the nodes: the
            // simulator's fan-out figures.
            metrics.assignment_bytes_sent.inc_by(prost::Message::encoded_len(&message) as u64);
        }
        if has_news && tx.send(Ok(message)).await.is_err() {
            return;
        }
        first = false;
        tokio::select! {
            event = events.recv() => {
                if !fold(event, &node_id, &mut dirty, &mut overlay_changes) {
                    return;
                }
                if dirty || overlay_changes != ViewChanges::Nothing {
                    // Whatever else changes in the next moment goes into the
                    // same message: while a service's tasks start across the
                    // swarm, each node gets a few messages a second, not one
                    // per task.
                    let until = tokio::time::Instant::now() + BATCH_WAIT;
                    while let Ok(event) = tokio::time::timeout_at(until, events.recv()).await {
                        if !fold(event, &node_id, &mut dirty, &mut overlay_changes) {
                            return;
                        }
                    }
                }
            }
            changed = subscriptions.changed() => if changed.is_err() { return },
            _ = tx.closed() => return,
            _ = tokio::time::sleep(LEADERSHIP_CHECK) => {}
        }
    }
}

/// Adds one store event to what the node's next message must cover;
/// `false` once the store is gone.
fn fold(event: Result<crate::store::StoreEvent, RecvError>, node_id: &str, dirty: &mut bool, overlay_changes: &mut ViewChanges) -> bool {
    match event {
        Ok(event) => {
            *dirty |= event.changes.iter().any(|c| concerns_tasks(c, node_id));
            overlay_changes.merge(ViewChanges::of(&event.changes, node_id));
            true
        }
        // Fell behind: recompute from the store; the diff against what was
        // sent still yields exact changes.
        Err(RecvError::Lagged(_)) => {
            *dirty = true;
            *overlay_changes = ViewChanges::Everything;
            true
        }
        Err(RecvError::Closed) => false,
    }
}
