//! The services a node resolves names of and balances connections for, as
//! it learns them on its assignments stream: each service on a network the
//! node serves (every service publishing through the routing mesh is on the
//! ingress network, which every node serves), with its VIPs, aliases and
//! ports, and its running tasks with their addresses. Only what is on the
//! node's own networks is sent: names are scoped per network.

use std::collections::{BTreeMap, BTreeSet};

use shoal_proto::pb;

use super::endpoint_pb::port_to_pb;
use super::networks::cidr;
use crate::store::{EndpointMode, Network, Service, StoreState, Task, TaskState};

/// A task is a backend (and has a name) while it runs and is still wanted:
/// one being stopped leaves its VIP before its container is gone.
fn serves(task: &Task) -> bool {
    task.status.state == TaskState::Running && task.desired_state <= TaskState::Running
}

/// Docker's task names in DNS: `SERVICE.SLOT.TASKID` (`SERVICE.NODEID.TASKID`
/// for a global service).
pub fn task_dns_name(task: &Task) -> String {
    format!("{}.{}", task.name(), task.meta.id)
}

pub fn service_directories(state: &StoreState, networks: &BTreeSet<&str>) -> BTreeMap<String, pb::ServiceDirectory> {
    state.list_typed::<Service>().filter_map(|service| directory_on(state, service, networks).map(|d| (service.meta.id.clone(), d))).collect()
}

/// The service's directory as a node serving `networks` sees it; `None`
/// when the service is on none of them.
pub fn directory_on(state: &StoreState, service: &Service, networks: &BTreeSet<&str>) -> Option<pb::ServiceDirectory> {
    let on = networks_on(service, networks);
    if on.is_empty() {
        return None;
    }
    let tasks: Vec<&Task> = state.tasks_of_service(&service.meta.id).filter(|t| serves(t)).collect();
    Some(directory(state, service, &on, &tasks))
}

/// The networks of `service` that a node serving `networks` sees it on.
fn networks_on<'a>(service: &'a Service, networks: &BTreeSet<&str>) -> Vec<&'a str> {
    service.spec.task.networks.iter().map(|n| n.network_id.as_str()).filter(|id| networks.contains(id)).collect()
}

/// One task's entry in its service's directory as a node serving
/// `networks` sees it: `None` when it is no backend there (not running,
/// being stopped, gone, or on none of those networks). What one task's
/// change costs each node, whatever the size of its service.
pub fn task_entry_on(state: &StoreState, service: &Service, task_id: &str, networks: &BTreeSet<&str>) -> Option<pb::TaskDirectory> {
    let task = state.get_typed::<Task>(task_id).filter(|t| serves(t) && t.service_id == service.meta.id)?;
    let on = networks_on(service, networks);
    task_entry(state, task, &on)
}

fn directory(state: &StoreState, service: &Service, on: &[&str], tasks: &[&Task]) -> pb::ServiceDirectory {
    let network = |id: &str| state.get_typed::<Network>(id);
    let vips = match service.spec.endpoint.mode {
        EndpointMode::Vip => service
            .vips
            .iter()
            .filter(|v| on.contains(&v.network_id.as_str()))
            .map(|v| network_address(state, &v.network_id, v.address, Vec::new()))
            .collect(),
        EndpointMode::Dnsrr => Vec::new(),
    };
    let aliases = service
        .spec
        .task
        .networks
        .iter()
        .filter(|n| on.contains(&n.network_id.as_str()) && !n.aliases.is_empty())
        .map(|n| pb::NetworkAddress {
            network_id: n.network_id.clone(),
            network_name: network(&n.network_id).map(|net| net.spec.name.clone()).unwrap_or_default(),
            address: String::new(),
            aliases: n.aliases.clone(),
        })
        .collect();
    // Sorted by id: a node's copy is kept up to date task by task.
    let mut tasks: Vec<pb::TaskDirectory> = tasks.iter().filter_map(|task| task_entry(state, task, on)).collect();
    tasks.sort_by(|a, b| a.id.cmp(&b.id));
    pb::ServiceDirectory {
        id: service.meta.id.clone(),
        name: service.spec.name.clone(),
        mode: match service.spec.endpoint.mode {
            EndpointMode::Vip => pb::EndpointMode::Vip.into(),
            EndpointMode::Dnsrr => pb::EndpointMode::Dnsrr.into(),
        },
        vips,
        aliases,
        ports: service.spec.endpoint.ports.iter().map(port_to_pb).collect(),
        tasks,
    }
}

fn task_entry(state: &StoreState, task: &Task, on: &[&str]) -> Option<pb::TaskDirectory> {
    let addresses: Vec<pb::NetworkAddress> = task
        .networks
        .iter()
        .filter(|a| on.contains(&a.network_id.as_str()))
        .map(|a| network_address(state, &a.network_id, a.address, Vec::new()))
        .collect();
    if addresses.is_empty() {
        return None;
    }
    Some(pb::TaskDirectory { id: task.meta.id.clone(), name: task_dns_name(task), node_id: task.node_id.clone(), addresses })
}

fn network_address(state: &StoreState, network_id: &str, address: std::net::Ipv4Addr, aliases: Vec<String>) -> pb::NetworkAddress {
    let network = state.get_typed::<Network>(network_id);
    pb::NetworkAddress {
        network_id: network_id.to_string(),
        network_name: network.map(|n| n.spec.name.clone()).unwrap_or_default(),
        address: cidr(network, address),
        aliases,
    }
}
