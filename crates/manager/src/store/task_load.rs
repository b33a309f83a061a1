//! A secondary index of the store: what the placed, active tasks hold on
//! each node, and how many tasks of each service each node runs.
//!
//! The scheduler needs exactly these figures for every call. Counting them
//! from every task in the store would make each call cost as much as the
//! tasks already placed; kept up to date as objects are written, a call
//! costs only its nodes and its batch. Derived from the objects, so it is
//! never serialised: [`super::StoreState::reindex`] rebuilds it.

use std::collections::{BTreeMap, HashMap};

use super::Task;

/// What a node's active tasks reserve.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeUsage {
    pub tasks: u32,
    pub reserved_memory: u64,
    pub reserved_nano_cpus: u64,
}

/// Nodes are numbered (slots) so that per-service counts are small
/// integer pairs: the scheduler reads a whole service's counts per call,
/// and chasing a string per node made that the dominant, growing cost.
#[derive(Debug, Clone, Default)]
pub struct TaskLoad {
    /// Node id -> slot, for nodes with active tasks.
    slots: HashMap<String, u32>,
    /// Usage by slot; a freed slot holds zeros.
    usage: Vec<NodeUsage>,
    /// Slots of nodes whose last task ended, for reuse.
    free: Vec<u32>,
    /// Service id -> slot -> active tasks of the service on that node.
    services: HashMap<String, HashMap<u32, u32>>,
}

impl TaskLoad {
    pub fn from_tasks<'a>(tasks: impl IntoIterator<Item = &'a Task>) -> Self {
        let mut load = TaskLoad::default();
        for task in tasks {
            load.add(task);
        }
        load
    }

    /// Counts `task` if it holds anything: placed on a node and active.
    pub fn add(&mut self, task: &Task) {
        if !holds_resources(task) {
            return;
        }
        let slot = match self.slots.get(&task.node_id) {
            Some(&slot) => slot,
            None => {
                let slot = self.free.pop().unwrap_or_else(|| {
                    self.usage.push(NodeUsage::default());
                    (self.usage.len() - 1) as u32
                });
                self.slots.insert(task.node_id.clone(), slot);
                slot
            }
        };
        let usage = &mut self.usage[slot as usize];
        usage.tasks += 1;
        usage.reserved_memory = usage.reserved_memory.saturating_add(task.spec.resources.reserve_memory);
        usage.reserved_nano_cpus = usage.reserved_nano_cpus.saturating_add(task.spec.resources.reserve_nano_cpus);
        *self.services.entry(task.service_id.clone()).or_default().entry(slot).or_default() += 1;
    }

    /// Undoes [`TaskLoad::add`] for the same task; entries that reach zero
    /// are dropped, so the index does not outgrow the live tasks.
    pub fn remove(&mut self, task: &Task) {
        if !holds_resources(task) {
            return;
        }
        let Some(&slot) = self.slots.get(&task.node_id) else { return };
        let usage = &mut self.usage[slot as usize];
        usage.tasks = usage.tasks.saturating_sub(1);
        usage.reserved_memory = usage.reserved_memory.saturating_sub(task.spec.resources.reserve_memory);
        usage.reserved_nano_cpus = usage.reserved_nano_cpus.saturating_sub(task.spec.resources.reserve_nano_cpus);
        if let Some(on_nodes) = self.services.get_mut(&task.service_id) {
            if let Some(count) = on_nodes.get_mut(&slot) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    on_nodes.remove(&slot);
                }
            }
            if on_nodes.is_empty() {
                self.services.remove(&task.service_id);
            }
        }
        // Its last task gone, no service count refers to the slot any more.
        if usage.tasks == 0 {
            *usage = NodeUsage::default();
            self.slots.remove(&task.node_id);
            self.free.push(slot);
        }
    }

    pub fn node(&self, node_id: &str) -> NodeUsage {
        self.slot(node_id).map(|slot| self.usage[slot as usize]).unwrap_or_default()
    }

    /// The number `node_id` goes by in [`TaskLoad::service_slots`], while
    /// it has active tasks.
    pub fn slot(&self, node_id: &str) -> Option<u32> {
        self.slots.get(node_id).copied()
    }

    /// Slots are below this.
    pub fn slot_count(&self) -> usize {
        self.usage.len()
    }

    /// (slot, active tasks of `service_id` on that node), for nodes with any.
    pub fn service_slots(&self, service_id: &str) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.services.get(service_id).into_iter().flatten().map(|(slot, count)| (*slot, *count))
    }

    /// Node id -> (usage, service id -> tasks): what the index says,
    /// independent of how slots happen to be numbered.
    fn by_node_id(&self) -> BTreeMap<&str, (NodeUsage, BTreeMap<&str, u32>)> {
        let mut nodes: BTreeMap<&str, (NodeUsage, BTreeMap<&str, u32>)> = BTreeMap::new();
        let names: HashMap<u32, &str> = self.slots.iter().map(|(id, slot)| (*slot, id.as_str())).collect();
        for (id, slot) in &self.slots {
            nodes.entry(id).or_default().0 = self.usage[*slot as usize];
        }
        for (service, on_nodes) in &self.services {
            for (slot, count) in on_nodes {
                let id = names.get(slot).copied().unwrap_or("");
                nodes.entry(id).or_default().1.insert(service, *count);
            }
        }
        nodes
    }
}

/// Equal when they count the same tasks on the same nodes, whatever the
/// slot numbers (an index rebuilt from a snapshot numbers them afresh).
impl PartialEq for TaskLoad {
    fn eq(&self, other: &Self) -> bool {
        self.by_node_id() == other.by_node_id()
    }
}

impl Eq for TaskLoad {}

/// A task counts against its node while it is placed there and its
/// container should be running or is being started.
fn holds_resources(task: &Task) -> bool {
    !task.node_id.is_empty() && task.is_active()
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::store::{Resources, TaskState};

    /// A task of `service` on `node` (none: ""), reserving 100 bytes and 10 nano-CPUs.
    pub(in crate::store) fn task(service: &str, node: &str, state: TaskState) -> Task {
        let mut task = crate::store::fixtures::task("", service, state);
        task.node_id = node.into();
        task.spec.resources = Resources { reserve_memory: 100, reserve_nano_cpus: 10, ..Default::default() };
        task
    }

    #[test]
    fn counts_placed_active_tasks_and_forgets_them_when_removed() {
        let running = task("web", "n1", TaskState::Running);
        let other = task("db", "n1", TaskState::Assigned);
        let unplaced = task("web", "", TaskState::Pending);
        let ended = task("web", "n2", TaskState::Failed);
        let mut load = TaskLoad::from_tasks([&running, &other, &unplaced, &ended]);
        assert_eq!(load.node("n1"), NodeUsage { tasks: 2, reserved_memory: 200, reserved_nano_cpus: 20 });
        assert_eq!(load.node("n2"), NodeUsage::default());
        let n1 = load.slot("n1").expect("n1 has tasks");
        assert_eq!(load.service_slots("web").collect::<Vec<_>>(), vec![(n1, 1)]);

        load.remove(&running);
        load.remove(&other);
        assert_eq!(load, TaskLoad::default(), "empty entries are dropped");
        assert_eq!(load.slot("n1"), None);

        // A freed slot is reused, and equality ignores slot numbers.
        let elsewhere = task("web", "n3", TaskState::Running);
        load.add(&elsewhere);
        assert_eq!(load.slot_count(), 1);
        assert_eq!(load, TaskLoad::from_tasks([&elsewhere]));
    }
}
