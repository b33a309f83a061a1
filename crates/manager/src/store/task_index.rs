//! Which tasks each node holds and each service has, kept current by every
//! write, so what concerns one node or one service costs what it holds,
//! not what the whole swarm holds.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

use super::objects::Task;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskIndex {
    /// Node id -> ids of the tasks placed on it, in any state.
    by_node: HashMap<String, BTreeSet<String>>,
    /// Service id -> ids of its tasks, in any state.
    by_service: HashMap<String, BTreeSet<String>>,
    /// Node id -> network id -> the addresses its live tasks hold there:
    /// what sits behind the node on the overlay.
    attached: HashMap<String, BTreeMap<String, BTreeSet<Ipv4Addr>>>,
}

impl TaskIndex {
    pub fn add(&mut self, task: &Task) {
        if !task.node_id.is_empty() {
            self.by_node.entry(task.node_id.clone()).or_default().insert(task.meta.id.clone());
        }
        if !task.service_id.is_empty() {
            self.by_service.entry(task.service_id.clone()).or_default().insert(task.meta.id.clone());
        }
        if is_attached(task) {
            let networks = self.attached.entry(task.node_id.clone()).or_default();
            for attachment in &task.networks {
                networks.entry(attachment.network_id.clone()).or_default().insert(attachment.address);
            }
        }
    }

    pub fn remove(&mut self, task: &Task) {
        forget(&mut self.by_node, &task.node_id, &task.meta.id);
        forget(&mut self.by_service, &task.service_id, &task.meta.id);
        if is_attached(task) {
            if let Some(networks) = self.attached.get_mut(&task.node_id) {
                for attachment in &task.networks {
                    if let Some(addresses) = networks.get_mut(&attachment.network_id) {
                        addresses.remove(&attachment.address);
                        if addresses.is_empty() {
                            networks.remove(&attachment.network_id);
                        }
                    }
                }
                if networks.is_empty() {
                    self.attached.remove(&task.node_id);
                }
            }
        }
    }

    /// The addresses `node_id`'s live tasks hold, per network.
    pub fn attached_to(&self, node_id: &str) -> Option<&BTreeMap<String, BTreeSet<Ipv4Addr>>> {
        self.attached.get(node_id)
    }

    pub fn on_node(&self, node_id: &str) -> impl Iterator<Item = &String> {
        self.by_node.get(node_id).into_iter().flatten()
    }

    pub fn of_service(&self, service_id: &str) -> impl Iterator<Item = &String> {
        self.by_service.get(service_id).into_iter().flatten()
    }
}

/// A placed task that has not ended holds its addresses.
fn is_attached(task: &Task) -> bool {
    !task.node_id.is_empty() && !task.status.state.is_terminal() && !task.networks.is_empty()
}

fn forget(index: &mut HashMap<String, BTreeSet<String>>, key: &str, task_id: &str) {
    if let Some(tasks) = index.get_mut(key) {
        tasks.remove(task_id);
        if tasks.is_empty() {
            index.remove(key);
        }
    }
}
