//! One group's candidate nodes, nested by the values of its spread labels
//! and kept in heaps, so each placement costs O(log nodes) whatever the
//! number of tasks already placed.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use crate::store::Node;

use super::load::{GroupLoad, Rank};

pub(super) enum Tree {
    /// No (more) spread labels: the nodes themselves, best rank on top.
    Nodes(BinaryHeap<Reverse<Rank>>),
    /// One subtree per label value (nodes without the label form their
    /// own), keyed by (the service's tasks under it, position in value
    /// order): the value with the fewest tasks goes first.
    Values { subtrees: Vec<Tree>, order: BinaryHeap<Reverse<(u32, usize)>> },
}

impl Tree {
    /// `candidates` passed the static filters. Those already too full are
    /// dropped (and tallied), but their tasks still count toward their
    /// label value's share.
    pub fn build(candidates: &[usize], spread: &[String], nodes: &[&Node], group: &mut GroupLoad) -> Tree {
        Self::build_level(candidates, spread, nodes, group).0
    }

    /// The subtree and the service's tasks in it.
    fn build_level(candidates: &[usize], spread: &[String], nodes: &[&Node], group: &mut GroupLoad) -> (Tree, u32) {
        let Some((key, deeper)) = spread.split_first() else {
            let tasks = candidates.iter().map(|&n| group.service_tasks(n)).sum();
            let mut ranked = Vec::with_capacity(candidates.len());
            for &n in candidates {
                if group.accepts(n) {
                    ranked.push(Reverse(group.rank(n)));
                }
            }
            return (Tree::Nodes(BinaryHeap::from(ranked)), tasks);
        };
        // Labelled values in order, then the nodes without the label.
        let mut by_value: BTreeMap<(bool, &str), Vec<usize>> = BTreeMap::new();
        for &n in candidates {
            let value = label_value(nodes[n], key);
            by_value.entry((value.is_none(), value.unwrap_or(""))).or_default().push(n);
        }
        let mut subtrees = Vec::with_capacity(by_value.len());
        let mut order = BinaryHeap::with_capacity(by_value.len());
        let mut total = 0u32;
        for (position, members) in by_value.into_values().enumerate() {
            let (subtree, tasks) = Self::build_level(&members, deeper, nodes, group);
            subtrees.push(subtree);
            order.push(Reverse((tasks, position)));
            total = total.saturating_add(tasks);
        }
        (Tree::Values { subtrees, order }, total)
    }

    /// Picks a node, records the placement, and returns the node; `None`
    /// once nothing under this tree can take another task.
    pub fn place(&mut self, group: &mut GroupLoad) -> Option<usize> {
        match self {
            Tree::Nodes(heap) => {
                while let Some(Reverse((_, _, node))) = heap.pop() {
                    if group.accepts(node) {
                        group.place(node);
                        heap.push(Reverse(group.rank(node)));
                        return Some(node);
                    }
                }
                None
            }
            Tree::Values { subtrees, order } => {
                while let Some(Reverse((tasks, position))) = order.pop() {
                    let Some(subtree) = subtrees.get_mut(position) else { continue };
                    if let Some(node) = subtree.place(group) {
                        order.push(Reverse((tasks.saturating_add(1), position)));
                        return Some(node);
                    }
                    // Exhausted: it stays out of the order.
                }
                None
            }
        }
    }
}

/// The value of a spread key (`node.labels.zone`, `engine.labels.disk`) on
/// `node`. Other keys have no value anywhere, so they do not spread.
fn label_value<'n>(node: &'n Node, key: &str) -> Option<&'n str> {
    if let Some(label) = key.strip_prefix("node.labels.") {
        node.labels.get(label).map(String::as_str)
    } else if let Some(label) = key.strip_prefix("engine.labels.") {
        node.description.engine_labels.get(label).map(String::as_str)
    } else {
        None
    }
}
