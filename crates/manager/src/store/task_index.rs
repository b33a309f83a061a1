//! Which tasks each node holds and each service has, kept current by every
//! write, so what concerns one node or one service costs what it holds,
//! not what the whole swarm holds.

use std::collections::{BTreeSet, HashMap};

use super::objects::Task;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskIndex {
    /// Node id -> ids of the tasks placed on it, in any state.
    by_node: HashMap<String, BTreeSet<String>>,
    /// Service id -> ids of its tasks, in any state.
    by_service: HashMap<String, BTreeSet<String>>,
}

impl TaskIndex {
    pub fn add(&mut self, task: &Task) {
        if !task.node_id.is_empty() {
            self.by_node.entry(task.node_id.clone()).or_default().insert(task.meta.id.clone());
        }
        if !task.service_id.is_empty() {
            self.by_service.entry(task.service_id.clone()).or_default().insert(task.meta.id.clone());
        }
    }

    pub fn remove(&mut self, task: &Task) {
        forget(&mut self.by_node, &task.node_id, &task.meta.id);
        forget(&mut self.by_service, &task.service_id, &task.meta.id);
    }

    pub fn on_node(&self, node_id: &str) -> impl Iterator<Item = &String> {
        self.by_node.get(node_id).into_iter().flatten()
    }

    pub fn of_service(&self, service_id: &str) -> impl Iterator<Item = &String> {
        self.by_service.get(service_id).into_iter().flatten()
    }
}

fn forget(index: &mut HashMap<String, BTreeSet<String>>, key: &str, task_id: &str) {
    if let Some(tasks) = index.get_mut(key) {
        tasks.remove(task_id);
        if tasks.is_empty() {
            index.remove(key);
        }
    }
}
