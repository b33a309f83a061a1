//! What the nodes already carry, and the bookkeeping of one group's
//! placements. Nodes are known by their index in the id-sorted node list.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::store::{Node, Placement, TaskLoad};

use super::filter::{explain, Demand, Tally};

/// FxHash (rustc's): a call looks up every node's id at least once, and
/// SipHash was a visible share of it. The keys are ids the manager
/// generated, so there is no untrusted input to defend against flooding.
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

/// Every node's load at the start of a call, and the placements made since.
pub(super) struct ClusterLoad<'a> {
    nodes: Vec<NodeLoad>,
    /// The store's node slot -> node index, to read per-service counts.
    by_slot: Vec<Option<usize>>,
    store: &'a TaskLoad,
    /// Nodes chosen earlier in this call, per service, so later groups of
    /// the same service count them.
    placed: FxMap<&'a str, Vec<usize>>,
}

impl<'a> ClusterLoad<'a> {
    /// Reads the store's load index for each node: the cost grows with
    /// the nodes, never with the tasks already placed.
    pub fn new(nodes: &[&'a Node], store: &'a TaskLoad) -> Self {
        let mut by_slot = vec![None; store.slot_count()];
        for (index, node) in nodes.iter().enumerate() {
            if let Some(slot) = store.slot(&node.meta.id) {
                by_slot[slot as usize] = Some(index);
            }
        }
        let loads = nodes
            .iter()
            .map(|n| {
                let usage = store.node(&n.meta.id);
                NodeLoad {
                    memory: n.description.memory_bytes,
                    nano_cpus: n.description.nano_cpus,
                    reserved_memory: usage.reserved_memory,
                    reserved_nano_cpus: usage.reserved_nano_cpus,
                    tasks: usage.tasks,
                }
            })
            .collect();
        ClusterLoad { nodes: loads, by_slot, store, placed: FxMap::default() }
    }

    /// The view one group places through; `rejected` holds what the static
    /// filters turned away, to which capacity rejections are added.
    pub fn group(&mut self, service: &'a str, demand: Demand, rejected: Tally) -> GroupLoad<'_> {
        let mut service_tasks = vec![0u32; self.nodes.len()];
        // A task on a node that has since been removed holds nothing.
        for (slot, count) in self.store.service_slots(service) {
            if let Some(&Some(node)) = self.by_slot.get(slot as usize) {
                service_tasks[node] += count;
            }
        }
        let placed = self.placed.entry(service).or_default();
        for &node in placed.iter() {
            service_tasks[node] += 1;
        }
        GroupLoad { loads: &mut self.nodes, placed, service_tasks, demand, rejected }
    }
}

/// One group's view: the cluster's load, its service's tasks per node, and
/// why nodes were turned away.
pub(super) struct GroupLoad<'c> {
    loads: &'c mut [NodeLoad],
    placed: &'c mut Vec<usize>,
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
        self.placed.push(node);
    }

    /// Why the group's remaining tasks fit nowhere.
    pub fn explain(&self, placement: &Placement) -> String {
        explain(&self.rejected, placement, &self.demand)
    }
}
