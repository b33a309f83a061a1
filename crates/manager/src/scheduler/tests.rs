use std::collections::BTreeMap;

use super::*;
use crate::store::fixtures;
use crate::store::{Availability, Constraint, NodeDescription, NodeRole, NodeStatus, Platform, Resources, TaskState};

const GIB: u64 = 1 << 30;

fn node(id: &str) -> Node {
    let mut node = fixtures::node(id);
    node.hostname = format!("host-{id}");
    node
}

fn labelled(id: &str, key: &str, value: &str) -> Node {
    let mut n = node(id);
    n.labels.insert(key.into(), value.into());
    n
}

fn task(id: &str, service: &str) -> Task {
    fixtures::task(id, service, TaskState::Pending)
}

fn running(id: &str, service: &str, on: &str) -> Task {
    let mut t = task(id, service);
    t.node_id = on.into();
    t.status.state = TaskState::Running;
    t
}

fn tasks(count: usize, service: &str, shape: impl Fn(&mut Task)) -> Vec<Task> {
    (0..count)
        .map(|i| {
            let mut t = task(&format!("{service}-{i}"), service);
            shape(&mut t);
            t
        })
        .collect()
}

/// Schedules with `existing` placed tasks; returns the outcomes in order.
fn run(nodes: &[Node], existing: &[Task], pending: &[Task]) -> Vec<Result<String, String>> {
    let nodes: Vec<&Node> = nodes.iter().collect();
    // Pending tasks are in the store too; unplaced, they count nowhere.
    let load = TaskLoad::from_tasks(existing.iter().chain(pending));
    let pending: Vec<&Task> = pending.iter().collect();
    let decisions = schedule(&nodes, &load, &pending);
    assert!(decisions.iter().zip(&pending).all(|(d, t)| d.task_id == t.meta.id));
    decisions.into_iter().map(|d| d.outcome).collect()
}

fn placed(outcomes: &[Result<String, String>]) -> Vec<&str> {
    outcomes.iter().map(|o| o.as_deref().unwrap_or("-")).collect()
}

fn per_node(outcomes: Vec<Result<String, String>>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for node in placed(&outcomes) {
        *counts.entry(node.to_string()).or_default() += 1;
    }
    counts
}

fn expected_counts<const N: usize>(expected: [(&str, usize); N]) -> BTreeMap<String, usize> {
    expected.into_iter().map(|(node, n)| (node.to_string(), n)).collect()
}

#[test]
fn replicas_go_one_per_node() {
    let nodes = [node("c"), node("a"), node("b")];
    assert_eq!(placed(&run(&nodes, &[], &tasks(3, "web", |_| {}))), ["a", "b", "c"]);
}

#[test]
fn fewest_of_the_service_then_fewest_tasks_then_lowest_id() {
    let nodes = [node("a"), node("b"), node("c")];
    // a runs one web task; b runs two other tasks; c runs one other.
    let existing = [running("w1", "web", "a"), running("o1", "db", "b"), running("o2", "db", "b"), running("o3", "db", "c")];
    let outcomes = run(&nodes, &existing, &tasks(3, "web", |_| {}));
    // b and c run no web task, c fewer tasks: c, then b. Then each runs
    // one web task and a runs the fewest tasks (1, against 3 and 2): a.
    assert_eq!(placed(&outcomes), ["c", "b", "a"]);
}

#[test]
fn only_ready_active_nodes_take_tasks() {
    let mut drained = node("a");
    drained.availability = Availability::Drain;
    let mut paused = node("b");
    paused.availability = Availability::Pause;
    let mut down = node("c");
    down.status = NodeStatus::Down;
    let mut unknown = node("d");
    unknown.status = NodeStatus::Unknown;
    let outcomes = run(&[drained.clone(), paused, down, unknown, node("e")], &[], &tasks(2, "web", |_| {}));
    assert_eq!(placed(&outcomes), ["e", "e"]);
    let outcomes = run(&[drained.clone(), drained], &[], &tasks(1, "web", |_| {}));
    assert_eq!(outcomes[0], Err("no suitable node: 2 nodes are drained".to_string()));
    assert_eq!(run(&[], &[], &tasks(1, "web", |_| {}))[0], Err("no suitable node: the swarm has no nodes".to_string()));
}

#[test]
fn constraints_of_every_kind() {
    let mut manager = labelled("m", "zone", "eu");
    manager.role = NodeRole::Manager;
    let mut ssd = labelled("s", "zone", "us");
    ssd.description.engine_labels.insert("disk".into(), "ssd".into());
    ssd.hostname = "fast".into();
    let bare = node("x");
    let nodes = [manager, ssd, bare];
    let place = |constraints: &[&str]| {
        let constraints: Vec<Constraint> = constraints.iter().filter_map(|c| Constraint::parse(c).ok()).collect();
        let mut outcomes = run(&nodes, &[], &tasks(1, "web", |t| t.placement.constraints = constraints.clone()));
        outcomes.remove(0)
    };
    assert_eq!(place(&["node.id==s"]), Ok("s".into()));
    assert_eq!(place(&["node.hostname==fast"]), Ok("s".into()));
    assert_eq!(place(&["node.role==manager"]), Ok("m".into()));
    assert_eq!(place(&["node.labels.zone==us"]), Ok("s".into()));
    assert_eq!(place(&["engine.labels.disk==ssd"]), Ok("s".into()));
    // != holds where the label is missing: x has no zone.
    assert_eq!(place(&["node.labels.zone!=eu", "node.labels.zone!=us"]), Ok("x".into()));
    assert_eq!(place(&["node.role!=manager", "node.id!=s"]), Ok("x".into()));
    assert_eq!(
        place(&["node.labels.zone==mars"]),
        Err("no suitable node: 3 nodes do not satisfy node.labels.zone==mars".into())
    );
    assert_eq!(
        place(&["node.role==worker", "node.labels.zone==eu"]),
        Err("no suitable node: 2 nodes do not satisfy node.labels.zone==eu; 1 node does not satisfy node.role==worker".into())
    );
}

#[test]
fn tasks_go_only_to_nodes_of_the_image_platform() {
    let on = |id: &str, os: &str, arch: &str| {
        let mut n = node(id);
        n.description.os = os.into();
        n.description.arch = arch.into();
        n
    };
    let nodes = [on("amd", "linux", "amd64"), on("arm", "linux", "arm64"), on("win", "windows", "amd64")];
    let platform = |arch: &str| Platform { os: "linux".into(), architecture: arch.into() };
    let built_for = |platforms: Vec<Platform>| move |t: &mut Task| t.placement.platforms = platforms.clone();
    assert_eq!(placed(&run(&nodes, &[], &tasks(2, "web", built_for(vec![platform("arm64")])))), ["arm", "arm"]);
    let both = run(&nodes, &[], &tasks(2, "web", built_for(vec![platform("amd64"), platform("arm64")])));
    assert_eq!(placed(&both), ["amd", "arm"]);
    assert_eq!(
        run(&nodes, &[], &tasks(1, "web", built_for(vec![platform("s390x")])))[0],
        Err("no suitable node: 3 nodes do not run the image's platform (linux/s390x)".into())
    );
    // An image whose platform is unknown goes anywhere, as does a task to a
    // node that did not say what it runs.
    assert_eq!(placed(&run(&nodes, &[], &tasks(3, "web", |_| {}))), ["amd", "arm", "win"]);
    assert_eq!(placed(&run(&[node("quiet")], &[], &tasks(1, "web", built_for(vec![platform("arm64")])))), ["quiet"]);
    // node.platform constraints read the same description.
    let arch = Constraint::parse("node.platform.arch==arm64").unwrap();
    let os = Constraint::parse("node.platform.os!=linux").unwrap();
    assert_eq!(placed(&run(&nodes, &[], &tasks(1, "web", |t| t.placement.constraints = vec![arch.clone()]))), ["arm"]);
    assert_eq!(placed(&run(&nodes, &[], &tasks(1, "web", |t| t.placement.constraints = vec![os.clone()]))), ["win"]);
}

#[test]
fn reservations_fill_nodes_and_explain_why() {
    let mut small = node("a");
    small.description = NodeDescription { memory_bytes: 4 * GIB, nano_cpus: 4_000_000_000, ..Default::default() };
    let mut cpu_poor = node("b");
    cpu_poor.description = NodeDescription { memory_bytes: 64 * GIB, nano_cpus: 1_000_000_000, ..Default::default() };
    let mut down = node("c");
    down.status = NodeStatus::Down;
    let nodes = [small, cpu_poor, down];
    // a holds one 2 GiB task already: room for one more; b has the memory
    // but only one CPU for 1.5-CPU tasks.
    let mut holder = running("old", "db", "a");
    holder.spec.resources.reserve_memory = 2 * GIB;
    let big = |t: &mut Task| {
        t.spec.resources = Resources { reserve_memory: 2 * GIB, reserve_nano_cpus: 1_500_000_000, ..Default::default() };
    };
    let outcomes = run(&nodes, &[holder], &tasks(3, "web", big));
    assert_eq!(outcomes[0], Ok("a".into()));
    let expected = "no suitable node: 1 node is not ready; 1 node lacks 2 GiB memory reservation; 1 node lacks 1.5 CPU reservation";
    assert_eq!(outcomes[1], Err(expected.into()));
    assert_eq!(outcomes[2], outcomes[1]);
    // A node that reports no memory size is not full.
    let outcomes = run(&[node("z")], &[], &tasks(3, "web", big));
    assert_eq!(placed(&outcomes), ["z", "z", "z"]);
}

#[test]
fn max_replicas_per_node_caps_each_node() {
    let nodes = [node("a"), node("b")];
    let outcomes = run(&nodes, &[running("w0", "web", "a")], &tasks(4, "web", |t| t.placement.max_replicas_per_node = 2));
    assert_eq!(placed(&outcomes)[..3], ["b", "a", "b"]);
    assert_eq!(outcomes[3], Err("no suitable node: 2 nodes already run the service's maximum of 2 tasks per node".into()));
}

#[test]
fn host_mode_ports_allow_one_task_per_node() {
    let nodes = [node("a"), node("b")];
    let outcomes = run(&nodes, &[], &tasks(3, "web", |t| t.placement.host_ports = true));
    assert_eq!(placed(&outcomes)[..2], ["a", "b"]);
    assert_eq!(outcomes[2], Err("no suitable node: 2 nodes already run a task of the service, whose host-mode ports one node can bind once".into()));
}

#[test]
fn spread_balances_label_values_before_nodes() {
    // Zone a has one node, zone b three: the zones still get 3 tasks each.
    let nodes = [labelled("a1", "zone", "a"), labelled("b1", "zone", "b"), labelled("b2", "zone", "b"), labelled("b3", "zone", "b")];
    let spread = |t: &mut Task| t.placement.spread = vec!["node.labels.zone".into()];
    let counts = per_node(run(&nodes, &[], &tasks(6, "web", spread)));
    assert_eq!(counts, expected_counts([("a1", 3), ("b1", 1), ("b2", 1), ("b3", 1)]));
    // Tasks already running count toward their zone; nodes without the
    // label form a value of their own.
    let nodes = [labelled("a1", "zone", "a"), labelled("b1", "zone", "b"), node("x")];
    let existing = [running("r1", "web", "a1"), running("r2", "web", "a1")];
    let counts = per_node(run(&nodes, &existing, &tasks(4, "web", spread)));
    assert_eq!(counts, expected_counts([("b1", 2), ("x", 2)]));
}

#[test]
fn nested_spread_balances_each_level() {
    let mut nodes = Vec::new();
    for (id, zone, rack) in [("n1", "a", "1"), ("n2", "a", "1"), ("n3", "a", "2"), ("n4", "b", "1")] {
        let mut n = labelled(id, "zone", zone);
        n.labels.insert("rack".into(), rack.into());
        nodes.push(n);
    }
    let spread = |t: &mut Task| t.placement.spread = vec!["node.labels.zone".into(), "node.labels.rack".into()];
    let counts = per_node(run(&nodes, &[], &tasks(4, "web", spread)));
    // 2 per zone; within zone a, one per rack.
    assert_eq!(counts, expected_counts([("n1", 1), ("n3", 1), ("n4", 2)]));
}

#[test]
fn only_active_placed_tasks_count() {
    let nodes = [node("a"), node("b")];
    let mut ended = running("done", "web", "b");
    ended.status.state = TaskState::Complete;
    let mut stopping = running("stop", "web", "b");
    stopping.desired_state = TaskState::Shutdown;
    let existing = [running("r", "web", "a"), ended, stopping, running("gone", "web", "removed-node")];
    assert_eq!(placed(&run(&nodes, &existing, &tasks(2, "web", |_| {}))), ["b", "a"]);
}

#[test]
fn batches_mix_services_and_variants() {
    let nodes = [node("a"), node("b")];
    let mut batch = tasks(2, "web", |_| {});
    batch.extend(tasks(1, "db", |_| {}));
    // A second variant of web (mid-update) still balances with the first.
    batch.extend(tasks(2, "web", |t| {
        t.meta.id.push('v');
        t.spec.resources.reserve_memory = 1;
    }));
    assert_eq!(placed(&run(&nodes, &[], &batch)), ["a", "b", "a", "b", "a"]);
}

#[test]
fn decisions_do_not_depend_on_input_order() {
    let mut nodes: Vec<Node> = (0..20).map(|i| labelled(&format!("n{i:02}"), "zone", ["x", "y", "z"][i % 3])).collect();
    let mut existing: Vec<Task> = (0..15).map(|i| running(&format!("r{i}"), "web", &format!("n{:02}", i % 7))).collect();
    let pending = tasks(30, "web", |t| t.placement.spread = vec!["node.labels.zone".into()]);
    let first = run(&nodes, &existing, &pending);
    nodes.reverse();
    existing.reverse();
    assert_eq!(run(&nodes, &existing, &pending), first);
}
