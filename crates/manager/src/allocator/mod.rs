//! The network allocator: the leader's loop that hands out addresses.
//!
//! [`plan`] is a pure function from a store snapshot to writes, like the
//! orchestrators':
//! - a task waits in `New` until it has an address on every network its
//!   spec names, then moves to `Pending` (the scheduler only places pending
//!   tasks); a task that cannot get one stays `New` with the reason;
//! - a service gets a virtual IP on each of its networks;
//! - a node gets its own address on each network it runs tasks on, and
//!   gives it back once it runs none there, or when tasks wait for an
//!   address on that network (a task needs one to run; a node does not).
//!
//! Addresses are released by the store itself when their holder ends (a
//! task that reached a final state, a deleted service or node): nothing
//! here keeps state between passes, so a new leader allocates from the
//! store alone, and the store refuses any write that would give an address
//! a second holder.

pub mod ipam;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;

use crate::control_loop::Plan;
use crate::manager::Manager;
use crate::store::{
    EndpointMode, Network, NetworkAttachment, Node, Object, Op, Service, StoreState, Task, TaskState, TaskStatus, Vip,
};

/// Addresses handed out earlier in the same pass, on top of the store's
/// index. Within one pass nothing is released and each claim takes the
/// lowest free address, so the next free one of a network is never below
/// the last claimed: the search resumes there, and a pass costs one sweep
/// of each network's addresses rather than one per claim.
#[derive(Default)]
struct PassClaims {
    claimed: HashSet<(String, Ipv4Addr)>,
    searched_up_to: HashMap<String, Ipv4Addr>,
}

impl PassClaims {
    /// The lowest free address of `network`, claimed for the rest of the pass.
    fn claim(&mut self, state: &StoreState, network: &Network) -> Option<Ipv4Addr> {
        let id = &network.meta.id;
        let from = self.searched_up_to.get(id).copied();
        let address = ipam::free_address_from(network, from, |a| {
            state.addresses().holder(id, a).is_some() || self.claimed.contains(&(id.clone(), a))
        });
        match address {
            Some(address) => {
                self.claimed.insert((id.clone(), address));
                self.searched_up_to.insert(id.clone(), address);
            }
            // Full: later claims in this pass need not look again.
            None => {
                self.searched_up_to.insert(id.clone(), network.subnet.broadcast());
            }
        }
        address
    }
}

pub fn plan(state: &StoreState, now_ms: u64) -> Plan {
    let mut plan = Plan::default();
    let mut claims = PassClaims::default();
    // Tasks first, oldest first: a full network should run the tasks that
    // asked first, and VIPs and node addresses are not needed for a task
    // to run.
    let mut waiting: Vec<&Task> =
        state.list_typed::<Task>().filter(|t| t.status.state == TaskState::New && t.desired_state <= TaskState::Running).collect();
    waiting.sort_by_key(|t| (t.meta.created_at, t.slot, t.meta.id.as_str()));
    let mut starved: HashSet<String> = HashSet::new();
    for task in waiting {
        let (op, full) = allocate_task(state, task, now_ms, &mut claims);
        plan.transactions.extend(op.map(|op| vec![op]));
        starved.extend(full);
    }
    for service in state.list_typed::<Service>() {
        if let Some(op) = allocate_vips(state, service, &mut claims) {
            plan.transactions.push(vec![op]);
        }
    }
    let served = networks_served(state);
    // Every node forwards the routing mesh's traffic from its own address there.
    let ingress = state.list_typed::<Network>().find(|n| n.spec.ingress).map(|n| n.meta.id.as_str());
    for node in state.list_typed::<Node>() {
        let mut wanted = served.get(node.meta.id.as_str()).cloned().unwrap_or_default();
        wanted.extend(ingress);
        wanted.retain(|network| !starved.contains(*network));
        if let Some(op) = allocate_node(state, node, &wanted, &mut claims) {
            plan.transactions.push(vec![op]);
        }
    }
    plan
}

/// Gives the task an address on each of its networks and moves it to
/// `Pending`, or records why it has to wait; also names the network that
/// had no address left, if one had none.
fn allocate_task(state: &StoreState, task: &Task, now_ms: u64, claims: &mut PassClaims) -> (Option<Op>, Option<String>) {
    let mut attachments = Vec::new();
    let mut failure = None;
    let mut full = None;
    for wanted in &task.spec.networks {
        let Some(network) = state.get_typed::<Network>(&wanted.network_id) else {
            failure = Some(format!(
                "network {} no longer exists; update the service with --network-rm",
                wanted.network_id
            ));
            break;
        };
        match claims.claim(state, network) {
            Some(address) => {
                attachments.push(NetworkAttachment { network_id: network.meta.id.clone(), address, aliases: wanted.aliases.clone() })
            }
            None => {
                full = Some(network.meta.id.clone());
                failure = Some(format!(
                    "no free address on network {} ({} holds {} addresses, all in use)",
                    network.spec.name,
                    network.subnet,
                    ipam::capacity(network)
                ));
                break;
            }
        }
    }
    let mut updated = task.clone();
    match failure {
        None => {
            updated.networks = attachments;
            updated.status = TaskStatus::new(TaskState::Pending, now_ms, "pending");
        }
        // The addresses claimed for the other networks go back at the end
        // of the pass: nothing was written.
        Some(reason) if reason != task.status.error => {
            updated.status.error = reason;
            updated.status.message = "waiting for a network address".into();
        }
        Some(_) => return (None, full),
    }
    (Some(Op::Update { object: Object::Task(updated), expected_version: Some(task.meta.version) }), full)
}

/// A VIP on each network the service's tasks join (in vip mode); none on
/// the others.
fn allocate_vips(state: &StoreState, service: &Service, claims: &mut PassClaims) -> Option<Op> {
    let wanted: Vec<&Network> = match service.spec.endpoint.mode {
        EndpointMode::Vip => unique_networks(state, service.spec.task.networks.iter().map(|n| n.network_id.as_str())),
        EndpointMode::Dnsrr => Vec::new(),
    };
    let mut vips: Vec<Vip> = Vec::new();
    for network in wanted {
        match service.vips.iter().find(|v| v.network_id == network.meta.id) {
            Some(vip) => vips.push(vip.clone()),
            None => {
                // A full network leaves the service without a VIP there; the
                // next pass tries again once an address is free.
                if let Some(address) = claims.claim(state, network) {
                    vips.push(Vip { network_id: network.meta.id.clone(), address });
                }
            }
        }
    }
    if vips == service.vips {
        return None;
    }
    let mut updated = service.clone();
    updated.vips = vips;
    Some(Op::Update { object: Object::Service(updated), expected_version: Some(service.meta.version) })
}

/// The node's own address on each network in `wanted` (those it runs tasks
/// on), and none elsewhere.
fn allocate_node(state: &StoreState, node: &Node, wanted: &BTreeSet<&str>, claims: &mut PassClaims) -> Option<Op> {
    let mut addresses = BTreeMap::new();
    for network in unique_networks(state, wanted.iter().copied()) {
        match node.network_addresses.get(&network.meta.id) {
            Some(address) => {
                addresses.insert(network.meta.id.clone(), *address);
            }
            None => {
                if let Some(address) = claims.claim(state, network) {
                    addresses.insert(network.meta.id.clone(), address);
                }
            }
        }
    }
    if addresses == node.network_addresses {
        return None;
    }
    let mut updated = node.clone();
    updated.network_addresses = addresses;
    Some(Op::Update { object: Object::Node(updated), expected_version: Some(node.meta.version) })
}

/// The existing networks among `ids`, each once, in order.
fn unique_networks<'a>(state: &'a StoreState, ids: impl Iterator<Item = &'a str>) -> Vec<&'a Network> {
    let mut seen = HashSet::new();
    ids.filter(|id| seen.insert(*id)).filter_map(|id| state.get_typed::<Network>(id)).collect()
}

/// node id -> the networks its active tasks are attached to.
pub fn networks_served(state: &StoreState) -> BTreeMap<&str, BTreeSet<&str>> {
    let mut served: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for task in state.list_typed::<Task>() {
        if task.node_id.is_empty() || task.status.state.is_terminal() || task.networks.is_empty() {
            continue;
        }
        served.entry(task.node_id.as_str()).or_default().extend(task.networks.iter().map(|a| a.network_id.as_str()));
    }
    served
}

pub async fn run(manager: Arc<Manager>) {
    crate::control_loop::drive(manager, "allocator", plan).await
}

#[cfg(test)]
mod tests;
