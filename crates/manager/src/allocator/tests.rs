//! The allocator as a pure function over a simulated store: what it hands
//! out, when tasks leave `New`, and that an address never has two holders.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use super::plan;
use crate::store::fixtures;
use crate::store::*;

const NOW: u64 = 1_000;

struct World {
    state: StoreState,
    index: u64,
}

impl World {
    fn new(networks: &[(&str, &str)]) -> Self {
        let mut world = World { state: StoreState::default(), index: 0 };
        world.write(vec![Op::Create(Object::Cluster(fixtures::cluster()))]).unwrap();
        for node in ["n1", "n2"] {
            world.write(vec![Op::Create(Object::Node(fixtures::node(node)))]).unwrap();
        }
        for (name, subnet) in networks {
            world.write(vec![Op::Create(Object::Network(fixtures::network(name, name, subnet)))]).unwrap();
        }
        world
    }

    fn write(&mut self, ops: Vec<Op>) -> TxnOutcome {
        self.index += 1;
        self.state.apply(self.index, &Transaction { ops, timestamp_ms: NOW }).0
    }

    /// Applies allocator passes until nothing more is written.
    fn settle(&mut self) {
        for _ in 0..10 {
            let plan = plan(&self.state, NOW);
            if plan.transactions.is_empty() {
                return;
            }
            for ops in plan.transactions {
                self.write(ops).expect("the allocator's writes apply");
            }
        }
        panic!("the allocator did not settle");
    }

    fn service(&mut self, name: &str, networks: &[&str]) {
        let spec = ServiceSpec {
            name: name.into(),
            labels: Default::default(),
            mode: ServiceMode::Replicated { replicas: 1 },
            task: TaskSpec {
                networks: networks.iter().map(|n| NetworkAttachmentSpec { network_id: n.to_string(), aliases: vec![] }).collect(),
                ..Default::default()
            },
            restart: RestartPolicy::default(),
            placement: Placement::default(),
            endpoint: EndpointSpec::default(),
            update: Default::default(),
            rollback: Default::default(),
            depends_on: Vec::new(),
        };
        let service = Service { meta: Meta { id: name.into(), ..Default::default() }, spec, spec_version: 1, vips: vec![], previous_spec: None, update_status: None };
        self.write(vec![Op::Create(Object::Service(service))]).unwrap();
    }

    /// `count` new tasks of `service`, created in order.
    fn tasks(&mut self, service: &str, count: usize) -> Vec<String> {
        let spec = self.state.get_typed::<Service>(service).unwrap().spec.task.clone();
        (0..count)
            .map(|i| {
                let id = format!("{service}-{}-{i}", self.index);
                let mut task = fixtures::task(&id, service, TaskState::New);
                task.spec = spec.clone();
                task.slot = i as u64 + 1;
                self.write(vec![Op::Create(Object::Task(task))]).unwrap();
                id
            })
            .collect()
    }

    fn task(&self, id: &str) -> Task {
        self.state.get_typed::<Task>(id).cloned().unwrap()
    }

    fn set_task(&mut self, id: &str, change: impl FnOnce(&mut Task)) {
        let mut task = self.task(id);
        change(&mut task);
        self.write(vec![Op::Update { object: Object::Task(task), expected_version: None }]).unwrap();
    }

    fn addresses(&self, network: &str) -> Vec<Ipv4Addr> {
        self.state.addresses().used(network).map(|(a, _)| *a).collect()
    }
}

#[test]
fn tasks_leave_new_once_every_network_gave_them_an_address() {
    let mut world = World::new(&[("front", "100.64.1.0/24"), ("back", "100.64.2.0/24")]);
    world.service("web", &["front", "back"]);
    world.service("plain", &[]);
    let web = world.tasks("web", 2);
    let plain = world.tasks("plain", 1);
    world.settle();
    let first = world.task(&web[0]);
    assert_eq!(first.status.state, TaskState::Pending);
    let on = |t: &Task, n: &str| t.networks.iter().find(|a| a.network_id == n).map(|a| a.address);
    assert_eq!(on(&first, "front"), Some(Ipv4Addr::new(100, 64, 1, 2)), "the gateway .1 is skipped");
    assert_eq!(first.networks[0].network_id, "front", "in the spec's order");
    assert_eq!(on(&world.task(&web[1]), "front"), Some(Ipv4Addr::new(100, 64, 1, 3)));
    assert_eq!(world.task(&plain[0]).status.state, TaskState::Pending, "no networks: pending at once");
    let vips = &world.state.get_typed::<Service>("web").unwrap().vips;
    assert_eq!(vips.len(), 2, "a VIP on each network: {vips:?}");
}

#[test]
fn a_full_network_runs_the_first_tasks_and_tells_why_the_rest_wait() {
    // /29: .1 gateway, .2-.6 usable, .7 broadcast.
    let mut world = World::new(&[("small", "100.80.0.0/29")]);
    world.service("web", &["small"]);
    // The service gets its VIP before the orchestrator makes its tasks.
    world.settle();
    let tasks = world.tasks("web", 10);
    world.settle();
    let states: Vec<TaskState> = tasks.iter().map(|t| world.task(t).status.state).collect();
    let pending = states.iter().filter(|s| **s == TaskState::Pending).count();
    // The service (created first) holds its VIP: four addresses are left.
    assert_eq!(pending, 4, "{states:?}");
    assert!(tasks[..4].iter().all(|t| world.task(t).status.state == TaskState::Pending), "oldest first");
    let waiting = world.task(&tasks[9]);
    assert_eq!(waiting.status.state, TaskState::New);
    assert!(waiting.status.error.contains("no free address on network small (100.80.0.0/29"), "{}", waiting.status.error);

    // A task that ends gives its address back, and a waiting task gets it.
    let freed = world.task(&tasks[0]).networks[0].address;
    world.set_task(&tasks[0], |t| t.status = TaskStatus::new(TaskState::Failed, NOW, "failed"));
    world.settle();
    let next = world.task(&tasks[4]);
    assert_eq!((next.status.state, next.networks[0].address), (TaskState::Pending, freed));
}

#[test]
fn nodes_get_an_address_where_they_run_tasks_and_give_it_back() {
    let mut world = World::new(&[("front", "100.64.1.0/24")]);
    world.service("web", &["front"]);
    let task = world.tasks("web", 1).remove(0);
    world.settle();
    world.set_task(&task, |t| {
        t.node_id = "n1".into();
        t.status = TaskStatus::new(TaskState::Running, NOW, "running");
    });
    world.settle();
    let n1 = world.state.get_typed::<Node>("n1").unwrap().clone();
    assert!(n1.network_addresses.contains_key("front"), "{n1:?}");
    assert!(world.state.get_typed::<Node>("n2").unwrap().network_addresses.is_empty());
    world.set_task(&task, |t| t.status = TaskStatus::new(TaskState::Complete, NOW, "done"));
    world.settle();
    assert!(world.state.get_typed::<Node>("n1").unwrap().network_addresses.is_empty());
    assert!(world.addresses("front").len() == 1, "only the VIP is left: {:?}", world.addresses("front"));
}

#[test]
fn a_node_gives_its_address_back_to_a_task_that_waits() {
    let mut world = World::new(&[("small", "100.80.0.0/29")]);
    world.service("web", &["small"]);
    let first = world.tasks("web", 2);
    world.settle();
    for task in &first {
        world.set_task(task, |t| {
            t.node_id = "n1".into();
            t.status = TaskStatus::new(TaskState::Running, NOW, "running");
        });
    }
    world.settle();
    assert!(world.state.get_typed::<Node>("n1").unwrap().network_addresses.contains_key("small"));
    // VIP + 2 tasks + n1 = 4 of 5: two more tasks need the last one and n1's.
    let more = world.tasks("web", 2);
    world.settle();
    assert!(more.iter().all(|t| world.task(t).status.state == TaskState::Pending), "the node's address went to a task");
    assert!(world.state.get_typed::<Node>("n1").unwrap().network_addresses.is_empty());
}

#[test]
fn the_store_refuses_a_second_holder_for_an_address() {
    let mut world = World::new(&[("front", "100.64.1.0/24")]);
    world.service("web", &["front"]);
    let ids = world.tasks("web", 2);
    world.settle();
    let taken = world.task(&ids[0]).networks[0].clone();
    let mut thief = world.task(&ids[1]);
    thief.networks = vec![taken.clone()];
    let refused = world.write(vec![Op::Update { object: Object::Task(thief.clone()), expected_version: None }]);
    assert!(matches!(refused, Err(TxnError::AddressInUse { .. })), "{refused:?}");
    // Two claims within one transaction are refused too.
    let mut other = world.task(&ids[0]);
    other.networks[0].address = Ipv4Addr::new(100, 64, 1, 200);
    thief.networks[0].address = Ipv4Addr::new(100, 64, 1, 200);
    let refused = world.write(vec![
        Op::Update { object: Object::Task(other), expected_version: None },
        Op::Update { object: Object::Task(thief), expected_version: None },
    ]);
    assert!(matches!(refused, Err(TxnError::AddressInUse { .. })), "{refused:?}");
}

#[test]
fn a_new_leader_allocates_from_the_store_alone() {
    // Failover mid-scale: a fresh pass over a store rebuilt from its
    // serialised form hands out only free addresses.
    let mut world = World::new(&[("front", "100.64.1.0/24")]);
    world.service("web", &["front"]);
    world.tasks("web", 10);
    world.settle();
    let bytes = bincode::serialize(&world.state).unwrap();
    let mut restored: StoreState = bincode::deserialize(&bytes).unwrap();
    restored.reindex();
    world.state = restored;
    world.tasks("web", 20);
    world.settle();
    let tasks: Vec<Task> = world.state.list_typed::<Task>().cloned().collect();
    let addresses: BTreeSet<Ipv4Addr> = tasks.iter().flat_map(|t| t.networks.iter().map(|a| a.address)).collect();
    assert_eq!(tasks.len(), 30);
    assert_eq!(addresses.len(), 30, "30 tasks, 30 distinct addresses");
    assert!(tasks.iter().all(|t| t.status.state == TaskState::Pending));
}

#[test]
fn a_task_on_a_removed_network_waits_with_the_reason() {
    let mut world = World::new(&[("front", "100.64.1.0/24")]);
    world.service("web", &["front"]);
    world.write(vec![Op::Delete { kind: Kind::Network, id: "front".into() }]).unwrap();
    let task = world.tasks("web", 1).remove(0);
    world.settle();
    let task = world.task(&task);
    assert_eq!(task.status.state, TaskState::New);
    assert!(task.status.error.contains("network front no longer exists"), "{}", task.status.error);
}
