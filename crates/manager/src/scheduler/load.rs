//! What the nodes already carry, and the bookkeeping of one group's
//! placements. Nodes are known by their index in the id-sorted node list.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::store::{Constraint, Node, Task};

use super::filter::{explain, Demand, Tally};

/// FxHash (rustc's): counting hashes two ids per existing task, and SipHash
/// made that half of a large call. The keys are ids the manager generated,
/// so there is no untrusted input to defend against flooding.
#[derive(Default)]
struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let tail = chunks.remainder();
        if !tail.is_empty() {
            self.add(tail.iter().rev().fold(0, |word, &byte| word << 8 | u64::from(byte)));
        }
    }

    fn write_u8(&mut self, byte: u8) {
        self.add(u64::from(byte));
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// A node's capacity and what its active tasks reserve.
#[derive(Debug, Clone, Default)]
pub(super) struct NodeLoad {
    /// As the node reported it; 0: unknown, so unlimited.
    pub memory: u64,
    pub nano_cpus: u64,
    pub reserved_memory: u64,
    pub reserved_nano_cpus: u64,
    pub tasks: u32,
}

impl NodeLoad {
    /// One more task, reserving `memory` and `nano_cpus`.
    fn take(&mut self, memory: u64, nano_cpus: u64) {
        self.reserved_memory = self.reserved_memory.saturating_add(memory);
        self.reserved_nano_cpus = self.reserved_nano_cpus.saturating_add(nano_cpus);
        self.tasks = self.tasks.saturating_add(1);
    }
}

/// Every node's load, plus where each batch service's tasks run.
pub(super) struct ClusterLoad<'a> {
    nodes: Vec<NodeLoad>,
    /// For each service with tasks in the batch, the node of each of its
    /// active tasks. A group turns it into per-node counts, so counting
    /// costs the service's size rather than nodes x services.
    service_nodes: FxMap<&'a str, Vec<usize>>,
}

impl<'a> ClusterLoad<'a> {
    /// One pass over `existing`: the only part of a call that grows with
    /// the number of tasks already placed (two hash lookups per task).
    pub fn count(nodes: &[&Node], existing: &[&'a Task], services: impl Iterator<Item = &'a str>) -> Self {
        let index: FxMap<&str, usize> = nodes.iter().enumerate().map(|(i, n)| (n.meta.id.as_str(), i)).collect();
        let mut service_nodes: FxMap<&'a str, Vec<usize>> = services.map(|s| (s, Vec::new())).collect();
        let mut loads: Vec<NodeLoad> = nodes
            .iter()
            .map(|n| NodeLoad { memory: n.description.memory_bytes, nano_cpus: n.description.nano_cpus, ..NodeLoad::default() })
            .collect();
        for task in existing {
            if task.node_id.is_empty() || !task.is_active() {
                continue;
            }
            // A task on a node that has since been removed holds nothing.
            let Some(&node) = index.get(task.node_id.as_str()) else { continue };
            loads[node].take(task.spec.resources.reserve_memory, task.spec.resources.reserve_nano_cpus);
            if let Some(on) = service_nodes.get_mut(task.service_id.as_str()) {
                on.push(node);
            }
        }
        ClusterLoad { nodes: loads, service_nodes }
    }

    /// The view one group places through; `rejected` holds what the static
    /// filters turned away, to which capacity rejections are added.
    pub fn group(&mut self, service: &'a str, demand: Demand, rejected: Tally) -> GroupLoad<'_> {
        let service_nodes = self.service_nodes.entry(service).or_default();
        let mut service_tasks = vec![0u32; self.nodes.len()];
        for &node in service_nodes.iter() {
            service_tasks[node] += 1;
        }
        GroupLoad { loads: &mut self.nodes, service_nodes, service_tasks, demand, rejected }
    }
}

/// One group's view: the cluster's load, its service's tasks per node, and
/// why nodes were turned away.
pub(super) struct GroupLoad<'c> {
    loads: &'c mut [NodeLoad],
    service_nodes: &'c mut Vec<usize>,
    service_tasks: Vec<u32>,
    demand: Demand,
    rejected: Tally,
}

/// (this service's tasks, all tasks, node index): the lowest wins; the
/// index breaks ties by node id since nodes are sorted by id.
pub(super) type Rank = (u32, u32, usize);

impl GroupLoad<'_> {
    pub fn rank(&self, node: usize) -> Rank {
        (self.service_tasks[node], self.loads[node].tasks, node)
    }

    pub fn service_tasks(&self, node: usize) -> u32 {
        self.service_tasks[node]
    }

    /// Whether one more task fits on `node`; if not, records why. Within a
    /// group every task asks the same, so a node refused once is refused
    /// for good and its caller drops it.
    pub fn accepts(&mut self, node: usize) -> bool {
        match self.demand.rejection(&self.loads[node], self.service_tasks[node]) {
            None => true,
            Some(rejection) => {
                *self.rejected.entry(rejection).or_default() += 1;
                false
            }
        }
    }

    pub fn place(&mut self, node: usize) {
        self.loads[node].take(self.demand.memory, self.demand.nano_cpus);
        self.service_tasks[node] += 1;
        // Later groups of the same service count it too.
        self.service_nodes.push(node);
    }

    /// Why the group's remaining tasks fit nowhere.
    pub fn explain(&self, constraints: &[Constraint]) -> String {
        explain(&self.rejected, constraints, &self.demand)
    }
}
