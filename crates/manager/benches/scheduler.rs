//! The scheduler at scale: 100,000 tasks of 100 services onto 5,000 nodes,
//! with constraints and spread, in batches of 10,000 whose placements are
//! counted in the store's load index, as the manager's store does.
//! Reports placements per second overall and for the batches that start
//! with 10k, 50k and 100k tasks already placed: the figures should be flat.
//!
//! `cargo bench -p shoal-manager --bench scheduler`

use std::time::{Duration, Instant};

use shoal_manager::scheduler::schedule;
use shoal_manager::store::{
    Availability, Constraint, Meta, Node, NodeDescription, NodeRole, NodeStatus, Placement, Platform, Resources, Task, TaskLoad,
    TaskSpec, TaskState, TaskStatus,
};

const NODES: usize = 5_000;
const SERVICES: usize = 100;
const TASKS: usize = 100_000;
const BATCH: usize = 10_000;
const GIB: u64 = 1 << 30;

fn nodes() -> Vec<Node> {
    (0..NODES)
        .map(|i| {
            let mut labels = std::collections::BTreeMap::new();
            labels.insert("zone".to_string(), format!("zone-{}", i % 5));
            if i.is_multiple_of(3) {
                labels.insert("disk".to_string(), "ssd".to_string());
            }
            Node {
                meta: Meta { id: format!("{:016x}", (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)), ..Meta::default() },
                hostname: format!("node-{i}"),
                role: if i.is_multiple_of(50) { NodeRole::Manager } else { NodeRole::Worker },
                desired_role: NodeRole::Worker,
                // A few drained and down nodes, as in any real cluster.
                availability: if i.is_multiple_of(97) { Availability::Drain } else { Availability::Active },
                labels,
                addr: String::new(),
                manager_addr: String::new(),
                status: if i.is_multiple_of(89) { NodeStatus::Down } else { NodeStatus::Ready },
                manager_reachable: false,
                manager_locked: false,
                cert_expiry: 0,
                description: NodeDescription {
                    nano_cpus: 16_000_000_000,
                    memory_bytes: 64 * GIB,
                    os: "linux".into(),
                    arch: "amd64".into(),
                    ..Default::default()
                },
                network_addresses: Default::default(),
                container_attachments: Vec::new(),
            }
        })
        .collect()
}

/// Service `s`: a quarter want SSD nodes, a quarter avoid managers, a
/// quarter both; half spread over zones; a few cap replicas per node.
fn placement(s: usize) -> Placement {
    let parse = |c: &str| Constraint::parse(c).expect("valid constraint");
    let constraints = match s % 4 {
        0 => vec![parse("node.labels.disk==ssd")],
        1 => vec![parse("node.role!=manager")],
        2 => vec![parse("node.role!=manager"), parse("node.labels.disk==ssd")],
        _ => vec![],
    };
    let spread = if s.is_multiple_of(2) { vec!["node.labels.zone".to_string()] } else { vec![] };
    // Every image is built for the nodes' platform, so the filter runs on every node.
    let platforms = vec![Platform { os: "linux".into(), architecture: "amd64".into() }];
    Placement { constraints, spread, max_replicas_per_node: if s % 10 == 3 { 5 } else { 0 }, platforms, host_ports: false }
}

/// Task `i` of `count`, interleaved across services so that every batch
/// holds every service: the most groups per call.
fn pending_tasks(first: usize, count: usize) -> Vec<Task> {
    let placements: Vec<Placement> = (0..SERVICES).map(placement).collect();
    (first..first + count)
        .map(|i| {
            let service = i % SERVICES;
            Task {
                meta: Meta { id: format!("task-{i:07}"), ..Meta::default() },
                service_id: format!("service-{service:03}"),
                service_name: format!("svc{service}"),
                slot: (i / SERVICES + 1) as u64,
                node_id: String::new(),
                spec: TaskSpec {
                    resources: Resources { reserve_nano_cpus: 100_000_000, reserve_memory: 128 << 20, ..Default::default() },
                    ..TaskSpec::default()
                },
                placement: placements[service].clone(),
                spec_version: 1,
                desired_state: TaskState::Running,
                status: TaskStatus::new(TaskState::Pending, 0, "pending"),
                attempt: 0,
                not_before_ms: 0,
                final_attempt: false,
                networks: Vec::new(),
                started_ms: 0,
            }
        })
        .collect()
}

/// Schedules `store[from..]`, writes the placements back and counts them
/// in `load`, as the store's index does on every write. Returns the time
/// that took (schedule() plus the index upkeep), the time a call with one
/// task per service took (the per-call part: reading every node's load and
/// each group's setup), and how many tasks found no node.
fn schedule_batch(node_refs: &[&Node], store: &mut [Task], load: &mut TaskLoad, from: usize) -> (Duration, Duration, usize) {
    let started = Instant::now();
    let pending: Vec<&Task> = store[from..].iter().collect();
    let _ = schedule(node_refs, load, &pending[..SERVICES]);
    let per_call = started.elapsed();

    let started = Instant::now();
    let decisions = schedule(node_refs, load, &pending);
    let mut failed = 0;
    for (task, decision) in store[from..].iter_mut().zip(decisions) {
        match decision.outcome {
            Ok(node) => {
                task.node_id = node;
                task.status = TaskStatus::new(TaskState::Assigned, 0, "assigned");
                load.add(task);
            }
            Err(_) => failed += 1,
        }
    }
    (started.elapsed(), per_call, failed)
}

fn rate(tasks: usize, elapsed: Duration) -> u64 {
    (tasks as f64 / elapsed.as_secs_f64()) as u64
}

/// One batch's figures: tasks already placed, placements/s, per-call
/// milliseconds, and placements/s of the placing alone.
struct Point {
    placed: usize,
    rate: u64,
    per_call_ms: f64,
    placing_rate: u64,
}

fn main() {
    let nodes = nodes();
    let node_refs: Vec<&Node> = nodes.iter().collect();
    let mut store: Vec<Task> = Vec::with_capacity(TASKS + BATCH);
    let mut load = TaskLoad::default();
    let mut total = Duration::ZERO;
    let mut failed = 0;
    let mut points = Vec::new();
    // The last batch starts with all 100k placed, to see the cost has not grown.
    for first in (0..=TASKS).step_by(BATCH) {
        store.extend(pending_tasks(first, BATCH));
        let (elapsed, per_call, batch_failed) = schedule_batch(&node_refs, &mut store, &mut load, first);
        if first < TASKS {
            total += elapsed;
        }
        failed += batch_failed;
        points.push(Point {
            placed: first,
            rate: rate(BATCH, elapsed),
            per_call_ms: per_call.as_secs_f64() * 1e3,
            placing_rate: rate(BATCH - SERVICES, elapsed.saturating_sub(per_call)),
        });
    }
    let at = |placed: usize| points.iter().find(|p| p.placed == placed).map_or(0, |p| p.rate);
    println!(
        "scheduler: {TASKS} tasks onto {NODES} nodes: {} placements/s (at 10k: {}, at 50k: {}, at 100k: {})",
        rate(TASKS, total),
        at(10_000),
        at(50_000),
        at(TASKS),
    );
    println!("  batches of {BATCH} tasks of {SERVICES} services; per batch, by tasks already placed:");
    for p in &points {
        println!(
            "  {:>4}k placed: {:>7} placements/s; per-call part {:5.1} ms; placing alone {:>8} placements/s",
            p.placed / 1000,
            p.rate,
            p.per_call_ms,
            p.placing_rate
        );
    }
    println!("  unschedulable: {failed} of {}", TASKS + BATCH);
}
