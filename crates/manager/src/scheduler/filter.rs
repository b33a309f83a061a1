//! Which nodes can take a task, and why the others cannot.
//!
//! Static filters (status, availability, platform, constraints) depend only
//! on the node and the task's placement, so they are evaluated once per
//! distinct set of constraints and platforms per call. Capacity filters
//! (reservations, max replicas per node) change with every placement and are
//! checked each time a node is picked.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};

use crate::store::{decimal, human_bytes, Availability, Constraint, Node, NodeStatus, Placement, Platform, Task};

use super::load::NodeLoad;

/// The first filter a node failed, in the order filters run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Rejection {
    NotReady,
    Paused,
    Drained,
    /// Runs none of the image's platforms.
    Platform,
    /// Index into the task's constraints.
    Constraint(usize),
    Memory,
    Cpu,
    MaxReplicas,
    /// The node already runs a task of the service publishing host-mode ports.
    HostPorts,
}

/// How many nodes each filter turned away.
pub(super) type Tally = BTreeMap<Rejection, u32>;

/// The first static filter `node` fails for a task with `placement`.
fn static_rejection(node: &Node, placement: &StaticPlacement) -> Option<Rejection> {
    if node.status != NodeStatus::Ready {
        return Some(Rejection::NotReady);
    }
    match node.availability {
        Availability::Active => {}
        Availability::Pause => return Some(Rejection::Paused),
        Availability::Drain => return Some(Rejection::Drained),
    }
    let (constraints, platforms) = *placement;
    if !platforms.is_empty() && !platforms.iter().any(|p| p.runs_on(node)) {
        return Some(Rejection::Platform);
    }
    constraints.iter().position(|c| !c.matches(node)).map(Rejection::Constraint)
}

/// The nodes that pass the static filters, and a tally of those that do not.
pub(super) struct Eligibility {
    pub nodes: Vec<usize>,
    pub rejected: Tally,
}

/// The part of a placement the static filters read.
type StaticPlacement<'a> = (&'a [Constraint], &'a [Platform]);

/// Static verdicts shared by every group with the same constraints and
/// platforms: services usually share a handful of them, and label lookups
/// on every node for every group would dominate large batches.
pub(super) struct StaticFilterCache<'a> {
    nodes: &'a [&'a Node],
    verdicts: HashMap<StaticPlacement<'a>, Eligibility>,
}

/// Beyond this many distinct constraint sets in one call the cache starts
/// over, so memory stays bounded by nodes x this.
const MAX_CACHED_CONSTRAINT_SETS: usize = 256;

impl<'a> StaticFilterCache<'a> {
    pub fn new(nodes: &'a [&'a Node]) -> Self {
        StaticFilterCache { nodes, verdicts: HashMap::new() }
    }

    pub fn eligibility(&mut self, placement: &'a Placement) -> &Eligibility {
        let key: StaticPlacement = (&placement.constraints, &placement.platforms);
        if !self.verdicts.contains_key(&key) && self.verdicts.len() >= MAX_CACHED_CONSTRAINT_SETS {
            self.verdicts.clear();
        }
        let nodes = self.nodes;
        self.verdicts.entry(key).or_insert_with(|| {
            let mut eligibility = Eligibility { nodes: Vec::new(), rejected: Tally::new() };
            for (index, node) in nodes.iter().enumerate() {
                match static_rejection(node, &key) {
                    Some(rejection) => *eligibility.rejected.entry(rejection).or_default() += 1,
                    None => eligibility.nodes.push(index),
                }
            }
            eligibility
        })
    }
}

/// What each task of a group reserves on its node, and how many may share one.
#[derive(Debug, Clone, Copy)]
pub(super) struct Demand {
    pub memory: u64,
    pub nano_cpus: u64,
    /// 0: no limit.
    pub max_per_node: u64,
    /// At most one task per node: the service binds host-mode ports.
    pub host_ports: bool,
}

impl Demand {
    pub fn of(task: &Task) -> Self {
        Demand {
            memory: task.spec.resources.reserve_memory,
            nano_cpus: task.spec.resources.reserve_nano_cpus,
            max_per_node: task.placement.max_replicas_per_node,
            host_ports: task.placement.host_ports,
        }
    }

    /// The capacity filter a node fails with `load` and `service_tasks` of
    /// this service on it. A capacity of 0 means the node did not report
    /// it: treated as unlimited rather than as full.
    pub fn rejection(&self, load: &NodeLoad, service_tasks: u32) -> Option<Rejection> {
        let exceeds = |reserved: u64, asked: u64, capacity: u64| {
            asked != 0 && capacity != 0 && reserved.saturating_add(asked) > capacity
        };
        if exceeds(load.reserved_memory, self.memory, load.memory) {
            Some(Rejection::Memory)
        } else if exceeds(load.reserved_nano_cpus, self.nano_cpus, load.nano_cpus) {
            Some(Rejection::Cpu)
        } else if self.max_per_node != 0 && u64::from(service_tasks) >= self.max_per_node {
            Some(Rejection::MaxReplicas)
        } else if self.host_ports && service_tasks > 0 {
            Some(Rejection::HostPorts)
        } else {
            None
        }
    }
}

pub(super) const NO_NODES: &str = "no suitable node: the swarm has no nodes";

/// "no suitable node: 3 nodes lack 2 GiB memory reservation; 2 nodes are
/// not ready": the filters that turned nodes away, most nodes first.
pub(super) fn explain(tally: &Tally, placement: &Placement, demand: &Demand) -> String {
    let mut reasons: Vec<(Rejection, u32)> = tally.iter().map(|(r, n)| (*r, *n)).collect();
    // Stable: equal counts keep filter order.
    reasons.sort_by_key(|&(_, count)| Reverse(count));
    let parts: Vec<String> = reasons.iter().map(|&(r, n)| describe(r, n, placement, demand)).collect();
    format!("no suitable node: {}", parts.join("; "))
}

fn describe(rejection: Rejection, count: u32, placement: &Placement, demand: &Demand) -> String {
    let constraints = &placement.constraints;
    let one = count == 1;
    let nodes = if one { "1 node".to_string() } else { format!("{count} nodes") };
    let (is, does, lacks, runs) = if one { ("is", "does", "lacks", "runs") } else { ("are", "do", "lack", "run") };
    match rejection {
        Rejection::NotReady => format!("{nodes} {is} not ready"),
        Rejection::Paused => format!("{nodes} {is} paused"),
        Rejection::Drained => format!("{nodes} {is} drained"),
        Rejection::Platform => {
            let platforms: Vec<String> = placement.platforms.iter().map(Platform::to_string).collect();
            format!("{nodes} {does} not run the image's platform ({})", platforms.join(", "))
        }
        Rejection::Constraint(i) => match constraints.get(i) {
            Some(constraint) => format!("{nodes} {does} not satisfy {constraint}"),
            None => format!("{nodes} {does} not satisfy the constraints"),
        },
        Rejection::Memory => format!("{nodes} {lacks} {} memory reservation", human_bytes(demand.memory)),
        Rejection::Cpu => format!("{nodes} {lacks} {} CPU reservation", decimal(demand.nano_cpus as f64 / 1e9)),
        Rejection::HostPorts => format!("{nodes} already {runs} a task of the service, whose host-mode ports one node can bind once"),
        Rejection::MaxReplicas => {
            let max = demand.max_per_node;
            format!("{nodes} already {runs} the service's maximum of {max} task{} per node", if max == 1 { "" } else { "s" })
        }
    }
}

