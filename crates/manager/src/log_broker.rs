//! Brokers `service logs` between the caller and the nodes holding the
//! containers, in the leader's memory (SwarmKit's design): a subscription
//! names tasks; each node learns of the subscriptions that concern it
//! through its assignments stream and publishes the lines back.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use shoal_proto::pb;
use tokio::sync::{mpsc, watch};

/// A task whose logs a subscription wants, and how to label its lines.
#[derive(Debug, Clone)]
pub struct LoggedTask {
    pub task_id: String,
    pub task_name: String,
    pub node_id: String,
    pub node_hostname: String,
}

struct Subscription {
    wire: pb::LogSubscription,
    tasks: HashMap<String, LoggedTask>,
    /// Tasks whose node has not yet said it sent everything.
    open: HashSet<String>,
    lines: mpsc::Sender<pb::ServiceLogLine>,
}

pub struct LogBroker {
    subscriptions: Mutex<HashMap<String, Subscription>>,
    /// Bumped on every new subscription, so assignment streams look again.
    generation: watch::Sender<u64>,
}

impl Default for LogBroker {
    fn default() -> Self {
        LogBroker { subscriptions: Mutex::new(HashMap::new()), generation: watch::channel(0).0 }
    }
}

impl LogBroker {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Subscription>> {
        self.subscriptions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens a subscription; lines arrive on the receiver, which closes once
    /// every node has sent everything (never, with `follow`, until dropped).
    pub fn subscribe(&self, tasks: Vec<LoggedTask>, follow: bool, tail: Option<u64>) -> mpsc::Receiver<pb::ServiceLogLine> {
        let (lines, receiver) = mpsc::channel(256);
        if tasks.is_empty() {
            return receiver;
        }
        let id = crate::store::new_object_id();
        let wire = pb::LogSubscription { id: id.clone(), task_ids: tasks.iter().map(|t| t.task_id.clone()).collect(), follow, tail };
        let subscription = Subscription {
            wire,
            open: tasks.iter().map(|t| t.task_id.clone()).collect(),
            tasks: tasks.into_iter().map(|t| (t.task_id.clone(), t)).collect(),
            lines,
        };
        self.lock().insert(id, subscription);
        self.generation.send_modify(|g| *g += 1);
        receiver
    }

    pub fn watch(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// The live subscriptions with tasks on `node_id`, narrowed to those tasks.
    pub fn for_node(&self, node_id: &str) -> Vec<pb::LogSubscription> {
        let mut subscriptions = self.lock();
        // Callers that went away leave their subscriptions behind.
        subscriptions.retain(|_, s| !s.lines.is_closed());
        subscriptions
            .values()
            .filter_map(|s| {
                let task_ids: Vec<String> =
                    s.tasks.values().filter(|t| t.node_id == node_id).map(|t| t.task_id.clone()).collect();
                (!task_ids.is_empty()).then(|| pb::LogSubscription { task_ids, ..s.wire.clone() })
            })
            .collect()
    }

    /// Lines from `node_id`. Returns false once nobody wants them any more.
    pub async fn publish(&self, node_id: &str, message: pb::PublishLogsMessage) -> bool {
        let (sender, task) = {
            let subscriptions = self.lock();
            let Some(subscription) = subscriptions.get(&message.subscription_id) else { return false };
            let Some(task) = subscription.tasks.get(&message.task_id).filter(|t| t.node_id == node_id) else {
                return true;
            };
            (subscription.lines.clone(), task.clone())
        };
        for line in message.lines {
            let line = pb::ServiceLogLine {
                task_id: task.task_id.clone(),
                task_name: task.task_name.clone(),
                node_id: task.node_id.clone(),
                node_hostname: task.node_hostname.clone(),
                line: Some(line),
            };
            if sender.send(line).await.is_err() {
                self.lock().remove(&message.subscription_id);
                return false;
            }
        }
        if message.close {
            let mut subscriptions = self.lock();
            if let Some(subscription) = subscriptions.get_mut(&message.subscription_id) {
                subscription.open.remove(&message.task_id);
                if subscription.open.is_empty() {
                    // Dropping the sender ends the caller's stream.
                    subscriptions.remove(&message.subscription_id);
                }
            }
        }
        true
    }
}
