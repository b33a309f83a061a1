//! The orchestrators as a pure function: store snapshots in, writes out.

use std::collections::BTreeMap;

use super::plan;
use crate::store::fixtures::{self, node};
use crate::store::*;

const NOW: u64 = 1_000_000;

struct World {
    state: StoreState,
    index: u64,
}

impl World {
    fn new(nodes: &[&str]) -> Self {
        let cluster = fixtures::cluster();
        let mut world = World { state: StoreState::default(), index: 0 };
        world.write(vec![Op::Create(Object::Cluster(cluster))], NOW);
        for name in nodes {
            world.write(vec![Op::Create(Object::Node(node(name)))], NOW);
        }
        world
    }

    fn write(&mut self, ops: Vec<Op>, now: u64) {
        self.index += 1;
        let (outcome, _) = self.state.apply(self.index, &Transaction { ops, timestamp_ms: now });
        outcome.expect("transaction applies");
    }

    /// Runs orchestrator passes until nothing more is written.
    fn settle(&mut self, now: u64) -> Option<u64> {
        for _ in 0..10 {
            let plan = plan(&self.state, now);
            if plan.transactions.is_empty() {
                return plan.wake_at;
            }
            for ops in plan.transactions {
                self.write(ops, now);
            }
        }
        panic!("the orchestrator did not settle");
    }

    fn create_service(&mut self, name: &str, mode: ServiceMode, restart: RestartPolicy) -> String {
        let spec = ServiceSpec {
            name: name.into(),
            labels: BTreeMap::new(),
            mode,
            task: TaskSpec { image: "busybox@sha256:00".into(), ..Default::default() },
            restart,
            placement: Placement::default(),
            endpoint: EndpointSpec::default(),
            update: Default::default(),
            rollback: Default::default(),
            depends_on: Vec::new(),
        };
        let id = format!("svc-{name}");
        let service = Service { meta: Meta { id: id.clone(), ..Default::default() }, spec, spec_version: 1, vips: Vec::new(), previous_spec: None, update_status: None };
        self.write(vec![Op::Create(Object::Service(service))], NOW);
        id
    }

    fn service(&self, id: &str) -> Service {
        self.state.get_typed::<Service>(id).cloned().expect("service exists")
    }

    fn update_service(&mut self, id: &str, change: impl FnOnce(&mut Service)) {
        let mut service = self.service(id);
        change(&mut service);
        self.write(vec![Op::Update { object: Object::Service(service), expected_version: None }], NOW);
    }

    fn tasks(&self) -> Vec<Task> {
        self.state.list_typed::<Task>().cloned().collect()
    }

    fn runnable(&self) -> Vec<Task> {
        self.tasks().into_iter().filter(|t| t.desired_state == TaskState::Running).collect()
    }

    /// What an agent (and the scheduler) would write: the task reaches `state`.
    fn report(&mut self, task: &Task, node: &str, state: TaskState, at: u64) {
        let mut updated = task.clone();
        updated.node_id = node.into();
        updated.status = TaskStatus::new(state, at, state.as_str());
        self.write(vec![Op::Update { object: Object::Task(updated), expected_version: None }], at);
    }

    fn set_node(&mut self, id: &str, change: impl FnOnce(&mut Node), at: u64) {
        let mut node = self.state.get_typed::<Node>(id).cloned().expect("node exists");
        change(&mut node);
        self.write(vec![Op::Update { object: Object::Node(node), expected_version: None }], at);
    }
}


fn replicated(n: u64) -> ServiceMode {
    ServiceMode::Replicated { replicas: n }
}

fn slots(tasks: &[Task]) -> Vec<u64> {
    let mut slots: Vec<u64> = tasks.iter().map(|t| t.slot).collect();
    slots.sort();
    slots
}

#[test]
fn a_replicated_service_gets_one_new_task_per_slot() {
    let mut world = World::new(&["a", "b"]);
    world.create_service("web", replicated(3), RestartPolicy::default());
    world.settle(NOW);
    let tasks = world.runnable();
    assert_eq!(slots(&tasks), vec![1, 2, 3]);
    assert!(tasks.iter().all(|t| t.status.state == TaskState::New && t.node_id.is_empty()), "the allocator moves them on");
    assert_eq!(tasks[0].name(), format!("web.{}", tasks[0].slot));
}

#[test]
fn scaling_down_stops_the_highest_slots_and_scaling_up_refills_them() {
    let mut world = World::new(&["a"]);
    let id = world.create_service("web", replicated(3), RestartPolicy::default());
    world.settle(NOW);
    world.update_service(&id, |s| s.spec.mode = replicated(1));
    world.settle(NOW);
    assert_eq!(slots(&world.runnable()), vec![1]);
    // Never-assigned tasks are ended by the orchestrator itself.
    assert!(world.tasks().iter().filter(|t| t.slot > 1).all(|t| t.status.state == TaskState::Shutdown));
    world.update_service(&id, |s| s.spec.mode = replicated(4));
    world.settle(NOW);
    assert_eq!(slots(&world.runnable()), vec![1, 2, 3, 4]);
}

#[test]
fn a_failed_task_is_restarted_after_the_delay_until_attempts_run_out() {
    let mut world = World::new(&["a"]);
    let policy = RestartPolicy { condition: RestartCondition::OnFailure, delay_ms: 2_000, max_attempts: 2, window_ms: 0 };
    world.create_service("job", replicated(1), policy);
    world.settle(NOW);
    for attempt in 0..=2u64 {
        let task = world.runnable().pop().expect("a runnable task");
        assert_eq!(task.attempt, attempt);
        let died = NOW + 10_000 * (attempt + 1);
        world.report(&task, "a", TaskState::Failed, died);
        world.settle(died);
        let next = world.runnable();
        if attempt < 2 {
            assert_eq!(next.len(), 1, "attempt {attempt} is replaced");
            assert_eq!(next[0].not_before_ms, died + 2_000, "the delay is honoured");
            assert_eq!(next[0].slot, 1);
        } else {
            assert!(next.is_empty(), "max attempts reached: no more restarts");
            assert!(world.tasks().iter().any(|t| t.final_attempt));
        }
    }
    // The slot stays empty on later passes.
    assert_eq!(world.settle(NOW + 100_000), None);
    assert!(world.runnable().is_empty());
}

#[test]
fn on_failure_does_not_restart_a_task_that_completed() {
    let mut world = World::new(&["a"]);
    let policy = RestartPolicy { condition: RestartCondition::OnFailure, ..Default::default() };
    world.create_service("job", replicated(1), policy);
    world.settle(NOW);
    let task = world.runnable().pop().unwrap();
    world.report(&task, "a", TaskState::Complete, NOW + 1);
    world.settle(NOW + 2);
    assert!(world.runnable().is_empty());
}

#[test]
fn rejected_tasks_back_off() {
    let mut world = World::new(&["a"]);
    let policy = RestartPolicy { delay_ms: 0, ..Default::default() };
    world.create_service("broken", replicated(1), policy);
    world.settle(NOW);
    let mut delays = Vec::new();
    let mut at = NOW;
    for _ in 0..4 {
        let task = world.runnable().pop().unwrap();
        at = at.max(task.not_before_ms) + 1;
        world.report(&task, "a", TaskState::Rejected, at);
        world.settle(at);
        delays.push(world.runnable()[0].not_before_ms - at);
    }
    assert_eq!(delays, vec![1_000, 2_000, 4_000, 8_000]);
}

#[test]
fn tasks_of_a_lost_node_are_replaced_after_the_grace_period() {
    let mut world = World::new(&["a", "b"]);
    world.create_service("web", replicated(1), RestartPolicy::default());
    world.settle(NOW);
    let task = world.runnable().pop().unwrap();
    world.report(&task, "a", TaskState::Running, NOW);
    world.set_node("a", |n| n.status = NodeStatus::Down, NOW + 10);
    // Within the grace period the task stays, and the orchestrator asks to
    // be woken when it ends.
    assert_eq!(world.settle(NOW + 100), Some(NOW + 510));
    assert_eq!(world.runnable()[0].meta.id, task.meta.id);
    world.settle(NOW + 600);
    let old = world.state.get_typed::<Task>(&task.meta.id).unwrap();
    assert_eq!(old.status.state, TaskState::Orphaned);
    let replacement = world.runnable().pop().unwrap();
    assert_eq!((replacement.slot, replacement.status.state), (1, TaskState::New));
}

#[test]
fn draining_a_node_moves_its_tasks() {
    let mut world = World::new(&["a", "b"]);
    world.create_service("web", replicated(1), RestartPolicy::default());
    world.settle(NOW);
    let task = world.runnable().pop().unwrap();
    world.report(&task, "a", TaskState::Running, NOW);
    world.set_node("a", |n| n.availability = Availability::Drain, NOW);
    world.settle(NOW);
    let old = world.state.get_typed::<Task>(&task.meta.id).unwrap();
    assert_eq!((old.desired_state, old.status.state), (TaskState::Shutdown, TaskState::Running), "the agent stops it");
    assert_eq!(world.runnable().len(), 1);
    assert_ne!(world.runnable()[0].meta.id, task.meta.id);
}

#[test]
fn a_spec_change_replaces_tasks_but_scaling_does_not() {
    let mut world = World::new(&["a"]);
    let id = world.create_service("web", replicated(2), RestartPolicy::default());
    world.settle(NOW);
    let before: Vec<String> = world.runnable().into_iter().map(|t| t.meta.id).collect();
    world.update_service(&id, |s| s.spec.mode = replicated(2));
    world.settle(NOW);
    let same: Vec<String> = world.runnable().into_iter().map(|t| t.meta.id).collect();
    assert_eq!(before.len(), same.len());
    assert!(same.iter().all(|id| before.contains(id)));
    world.update_service(&id, |s| {
        s.spec.task.env = vec!["A=1".into()];
        s.spec_version += 1;
    });
    world.settle(NOW);
    let after = world.runnable();
    assert_eq!(after.len(), 2);
    assert!(after.iter().all(|t| !before.contains(&t.meta.id) && t.spec.env == vec!["A=1".to_string()]));
}

#[test]
fn a_global_service_follows_the_nodes() {
    let mut world = World::new(&["a", "b"]);
    let policy = RestartPolicy { delay_ms: 0, ..Default::default() };
    world.create_service("agent", ServiceMode::Global, policy);
    world.settle(NOW);
    let mut nodes: Vec<String> = world.runnable().into_iter().map(|t| t.node_id).collect();
    nodes.sort();
    assert_eq!(nodes, vec!["a", "b"]);
    world.write(vec![Op::Create(Object::Node(node("c")))], NOW);
    world.settle(NOW);
    assert_eq!(world.runnable().len(), 3, "a joining node gets its task");
    world.set_node("b", |n| n.availability = Availability::Drain, NOW);
    world.settle(NOW);
    let mut nodes: Vec<String> = world.runnable().into_iter().map(|t| t.node_id).collect();
    nodes.sort();
    assert_eq!(nodes, vec!["a", "c"], "a drained node loses it");
}

#[test]
fn removing_a_service_retires_its_tasks() {
    let mut world = World::new(&["a"]);
    let id = world.create_service("web", replicated(2), RestartPolicy::default());
    world.settle(NOW);
    let tasks = world.runnable();
    world.report(&tasks[0], "a", TaskState::Running, NOW);
    world.write(vec![Op::Delete { kind: Kind::Service, id }], NOW);
    world.settle(NOW);
    // The pending one is deleted; the running one is told to go.
    let left = world.tasks();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].desired_state, TaskState::Remove);
    world.report(&left[0], "a", TaskState::Shutdown, NOW + 1);
    world.settle(NOW + 1);
    assert!(world.tasks().is_empty());
}

#[test]
fn history_is_bounded_per_slot() {
    let mut world = World::new(&["a"]);
    world.create_service("crashy", replicated(1), RestartPolicy { delay_ms: 0, ..Default::default() });
    world.settle(NOW);
    for i in 0..8 {
        let task = world.runnable().pop().unwrap();
        world.report(&task, "a", TaskState::Failed, NOW + i);
        world.settle(NOW + i);
    }
    assert_eq!(world.tasks().len(), 5 + 1, "five ended tasks kept, plus the running one");
}

fn depending_on(world: &mut World, name: &str, on: &str, condition: DependencyCondition) -> String {
    let id = world.create_service(name, replicated(1), RestartPolicy::default());
    world.update_service(&id, |s| s.spec.depends_on = vec![Dependency { service: on.into(), condition }]);
    id
}

fn tasks_of(world: &World, service_id: &str) -> Vec<Task> {
    world.tasks().into_iter().filter(|t| t.service_id == service_id).collect()
}

#[test]
fn first_tasks_wait_for_their_dependencies_to_run() {
    let mut world = World::new(&["a"]);
    // web names db before db exists: it waits.
    let web = depending_on(&mut world, "web", "db", DependencyCondition::Healthy);
    world.settle(NOW);
    assert!(tasks_of(&world, &web).is_empty());
    let db = world.create_service("db", replicated(2), RestartPolicy::default());
    world.settle(NOW);
    assert!(tasks_of(&world, &web).is_empty(), "db has tasks but none runs");
    let db_tasks = tasks_of(&world, &db);
    world.report(&db_tasks[0], "a", TaskState::Running, NOW + 1);
    world.settle(NOW + 1);
    assert!(tasks_of(&world, &web).is_empty(), "one of db's two tasks runs");
    world.report(&db_tasks[1], "a", TaskState::Running, NOW + 2);
    world.settle(NOW + 2);
    assert_eq!(tasks_of(&world, &web).len(), 1, "every db task runs (healthy): web starts");

    // Once started, web keeps its tasks when db's fail.
    for task in tasks_of(&world, &db) {
        world.report(&task, "a", TaskState::Failed, NOW + 3);
    }
    world.settle(NOW + 3);
    assert_eq!(tasks_of(&world, &web).iter().filter(|t| t.desired_state == TaskState::Running).count(), 1);
}

#[test]
fn a_job_dependency_must_complete_successfully() {
    let mut world = World::new(&["a"]);
    let migrate = world.create_service("migrate", replicated(1), RestartPolicy { condition: RestartCondition::None, ..Default::default() });
    let app = depending_on(&mut world, "app", "migrate", DependencyCondition::CompletedSuccessfully);
    world.settle(NOW);
    let job = tasks_of(&world, &migrate).remove(0);
    world.report(&job, "a", TaskState::Running, NOW + 1);
    world.settle(NOW + 1);
    assert!(tasks_of(&world, &app).is_empty(), "the job still runs");
    let job = tasks_of(&world, &migrate).remove(0);
    world.report(&job, "a", TaskState::Complete, NOW + 2);
    world.settle(NOW + 2);
    assert_eq!(tasks_of(&world, &app).len(), 1, "the job completed: app starts");
}
