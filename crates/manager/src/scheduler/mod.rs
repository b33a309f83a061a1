//! The scheduler: a pure function from the nodes, the store's index of what
//! placed tasks hold and a batch of pending tasks to one [`Decision`] per pending task.
//!
//! A node qualifies when it is ready, active, satisfies the task's
//! constraints, has room for its reservations (a resource a node reports
//! as 0 is unlimited) and runs fewer than `max_replicas_per_node` of its
//! service. Among those, the task goes to the node with the fewest tasks of
//! its service, then the fewest tasks, then the lowest id; spread
//! preferences first pick, level by level, the label value whose nodes run
//! the fewest tasks of the service.
//!
//! To keep a placement's cost independent of the number already placed,
//! pending tasks are grouped by service and requirements; each group
//! filters the nodes once (cached across groups with the same constraints)
//! and then places its tasks through heaps ([`spread::Tree`]), updating the
//! counts so later tasks and groups see earlier placements. What placed
//! tasks already hold comes from the store's [`TaskLoad`] index, kept
//! current on every write, so no part of a call grows with the store.

mod filter;
mod load;
mod spread;
#[cfg(test)]
mod tests;

use std::collections::HashMap;

use crate::store::{Node, Task, TaskLoad};

use filter::{Demand, StaticFilterCache, NO_NODES};
use load::ClusterLoad;
use spread::Tree;

/// Where a pending task goes: `Ok(node id)`, or `Err(why it fits nowhere)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub task_id: String,
    pub outcome: Result<String, String>,
}

/// One decision per task of `pending`, in its order. `load` is the store's
/// index of what placed tasks already hold ([`crate::store::StoreState::task_load`]).
pub fn schedule(nodes: &[&Node], load: &TaskLoad, pending: &[&Task]) -> Vec<Decision> {
    let decide = |task: &Task, outcome| Decision { task_id: task.meta.id.clone(), outcome };
    if nodes.is_empty() {
        return pending.iter().map(|task| decide(task, Err(NO_NODES.to_string()))).collect();
    }
    // Sorted once, a node's index is its tie-break: the lowest id wins.
    let mut nodes = nodes.to_vec();
    nodes.sort_by(|a, b| a.meta.id.cmp(&b.meta.id));
    let groups = group_pending(pending);
    let mut load = ClusterLoad::new(&nodes, load);
    let mut filters = StaticFilterCache::new(&nodes);
    let mut outcomes: Vec<Result<String, String>> = vec![Err(String::new()); pending.len()];
    for group in &groups {
        let task = group.sample;
        let eligibility = filters.eligibility(&task.placement);
        let mut view = load.group(&task.service_id, Demand::of(task), eligibility.rejected.clone());
        let mut tree = Tree::build(&eligibility.nodes, &task.placement.spread, &nodes, &mut view);
        // Once the tree is exhausted nothing changes, so one explanation serves the rest.
        let mut reason: Option<String> = None;
        for &member in &group.members {
            outcomes[member] = match tree.place(&mut view) {
                Some(node) => Ok(nodes[node].meta.id.clone()),
                None => Err(reason.get_or_insert_with(|| view.explain(&task.placement)).clone()),
            };
        }
    }
    pending.iter().zip(outcomes).map(|(task, outcome)| decide(task, outcome)).collect()
}

/// Pending tasks that ask the same of a node: one service, one placement,
/// one set of resources. `members` are indices into the batch.
struct Group<'a> {
    sample: &'a Task,
    members: Vec<usize>,
}

/// Groups in order of their first task, so older work goes first.
fn group_pending<'a>(pending: &[&'a Task]) -> Vec<Group<'a>> {
    let mut groups: Vec<Group<'a>> = Vec::new();
    // A service rarely has more than one or two variants in flight (during
    // an update), so a short scan per service suffices.
    let mut by_service: HashMap<&str, Vec<usize>> = HashMap::new();
    for (index, &task) in pending.iter().enumerate() {
        let variants = by_service.entry(task.service_id.as_str()).or_default();
        let same = |g: &usize| {
            let sample = groups[*g].sample;
            sample.placement == task.placement && sample.spec.resources == task.spec.resources
        };
        match variants.iter().find(|g| same(g)) {
            Some(&g) => groups[g].members.push(index),
            None => {
                variants.push(groups.len());
                groups.push(Group { sample: task, members: vec![index] });
            }
        }
    }
    groups
}
