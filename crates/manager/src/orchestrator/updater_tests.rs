//! The rolling updater against a simulated world: the orchestrator's plan
//! applied to a store, and agents that start a task's container a tick
//! after it is made (or fail it, for a "broken" image), and stop what is
//! asked to stop. Properties are sampled from task states at every tick.

use std::collections::{BTreeMap, BTreeSet};

use super::plan;
use crate::store::fixtures::{self, node};
use crate::store::*;

const START: u64 = 1_000_000;
const TICK: u64 = 100;
const GOOD: &str = "web@sha256:01";
const NEW: &str = "web@sha256:02";
const BROKEN: &str = "web@sha256:ff";
/// An image whose task never gets running (e.g. its health check never passes).
const NEVER_HEALTHY: &str = "web@sha256:ee";
/// An image whose task no node takes (no node fits, or the pull hangs).
const UNPLACEABLE: &str = "web@sha256:dd";

struct Sim {
    state: StoreState,
    index: u64,
    now: u64,
    service_id: String,
}

impl Sim {
    fn new(replicas: u64, update: UpdateConfig, rollback: UpdateConfig) -> Self {
        let mut sim = Sim { state: StoreState::default(), index: 0, now: START, service_id: "svc".into() };
        sim.write(vec![Op::Create(Object::Cluster(fixtures::cluster()))]);
        sim.write(vec![Op::Create(Object::Node(node("a")))]);
        let mut service = fixtures::service("svc");
        service.spec.mode = ServiceMode::Replicated { replicas };
        service.spec.task.image = GOOD.into();
        service.spec.restart.delay_ms = 0;
        service.spec.update = update;
        service.spec.rollback = rollback;
        sim.write(vec![Op::Create(Object::Service(service))]);
        sim.run_until(|s| s.running_on(GOOD) == replicas as usize, 50);
        sim
    }

    fn write(&mut self, ops: Vec<Op>) {
        self.index += 1;
        let (outcome, _) = self.state.apply(self.index, &Transaction { ops, timestamp_ms: self.now });
        outcome.expect("transaction applies");
    }

    fn service(&self) -> Service {
        self.state.get_typed::<Service>(&self.service_id).cloned().unwrap()
    }

    /// `service update --image`, as the API writes it.
    fn update_image(&mut self, image: &str) {
        let mut service = self.service();
        service.previous_spec = Some(Box::new(service.spec.clone()));
        service.spec.task.image = image.into();
        service.spec_version += 1;
        service.update_status = Some(UpdateStatus::started(UpdateState::Updating, self.now, "update in progress"));
        self.write(vec![Op::Update { object: Object::Service(service), expected_version: None }]);
    }

    fn tasks(&self) -> Vec<Task> {
        self.state.list_typed::<Task>().cloned().collect()
    }

    fn running_on(&self, image: &str) -> usize {
        self.tasks()
            .iter()
            .filter(|t| t.desired_state == TaskState::Running && t.status.state == TaskState::Running && t.spec.image == image)
            .count()
    }

    /// Slots with no task that runs and is wanted: out of service.
    fn slots_down(&self, replicas: u64) -> usize {
        let serving: BTreeSet<u64> = self
            .tasks()
            .iter()
            .filter(|t| t.desired_state == TaskState::Running && t.status.state == TaskState::Running)
            .map(|t| t.slot)
            .collect();
        (1..=replicas).filter(|slot| !serving.contains(slot)).count()
    }

    fn state(&self) -> Option<UpdateState> {
        self.service().update_status.map(|s| s.state)
    }

    /// One tick: the orchestrator settles, then every agent acts once.
    fn tick(&mut self) {
        self.orchestrate();
        self.agents_act();
    }

    fn orchestrate(&mut self) {
        for _ in 0..10 {
            let plan = plan(&self.state, self.now);
            if plan.transactions.is_empty() {
                break;
            }
            for ops in plan.transactions {
                self.write(ops);
            }
        }
    }

    fn agents_act(&mut self) {
        let mut reports = Vec::new();
        for task in self.tasks() {
            let wanted = task.desired_state == TaskState::Running;
            let next = match task.status.state {
                s if s.is_terminal() => continue,
                _ if !wanted => TaskState::Shutdown,
                s if s < TaskState::Running && task.not_before_ms > self.now => continue,
                _ if task.spec.image == UNPLACEABLE => continue,
                TaskState::Running if task.spec.image == BROKEN => TaskState::Failed,
                s if s < TaskState::Running && task.spec.image == NEVER_HEALTHY => TaskState::Starting,
                s if s < TaskState::Running => TaskState::Running,
                _ => continue,
            };
            if task.node_id.is_empty() {
                let mut placed = task.clone();
                placed.node_id = "a".into();
                self.write(vec![Op::Update { object: Object::Task(placed), expected_version: None }]);
            }
            reports.push(Op::TaskStatus { task_id: task.meta.id, node_id: "a".into(), status: TaskStatus::new(next, self.now, next.as_str()) });
        }
        if !reports.is_empty() {
            self.write(reports);
        }
        self.now += TICK;
    }

    fn run_until(&mut self, done: impl Fn(&Sim) -> bool, max_ticks: u32) {
        for _ in 0..max_ticks {
            if done(self) {
                return;
            }
            self.tick();
        }
        panic!("not done after {max_ticks} ticks; update status {:?}; tasks {:#?}", self.service().update_status, self.tasks());
    }

    fn task_ids_on(&self, image: &str) -> BTreeSet<String> {
        self.tasks().into_iter().filter(|t| t.spec.image == image && t.desired_state == TaskState::Running).map(|t| t.meta.id).collect()
    }
}

fn config(parallelism: u64, delay_ms: u64) -> UpdateConfig {
    UpdateConfig { parallelism, delay_ms, monitor_ms: 1_000, ..Default::default() }
}

#[test]
fn an_update_never_takes_more_than_parallelism_slots_out_and_completes() {
    let mut sim = Sim::new(6, config(2, 1_000), config(1, 0));
    sim.update_image(NEW);
    let mut most_down = 0;
    let mut ticks = 0;
    while sim.state() != Some(UpdateState::Completed) {
        // Sampled where it is worst: the orchestrator has acted, the agents not yet.
        sim.orchestrate();
        most_down = most_down.max(sim.slots_down(6));
        sim.agents_act();
        ticks += 1;
        assert!(ticks < 400, "the update did not complete: {:?}", sim.service().update_status);
    }
    assert_eq!(most_down, 2, "at most 2 slots out of service at once, and the update used both");
    assert_eq!(sim.running_on(NEW), 6);
    // Three batches of two, each waiting out the 1 s delay: not all at once.
    assert!(ticks >= 30, "the delay between batches was honoured ({ticks} ticks)");
    let status = sim.service().update_status.unwrap();
    assert_eq!((status.message.as_str(), status.failed_tasks.len()), ("update completed", 0));
}

#[test]
fn start_first_never_has_fewer_running_than_asked() {
    let update = UpdateConfig { order: UpdateOrder::StartFirst, ..config(1, 0) };
    let mut sim = Sim::new(3, update, config(1, 0));
    sim.update_image(NEW);
    while sim.state() != Some(UpdateState::Completed) {
        sim.orchestrate();
        let running = sim.tasks().iter().filter(|t| t.status.state == TaskState::Running && t.desired_state == TaskState::Running).count();
        assert!(running >= 3, "only {running} tasks running during a start-first update");
        assert!(sim.now < START + 60_000, "the update did not complete");
        sim.agents_act();
    }
    assert_eq!(sim.running_on(NEW), 3);
}

#[test]
fn a_failing_update_rolls_back_only_the_slots_it_replaced() {
    let update = UpdateConfig { failure_action: FailureAction::Rollback, ..config(2, 0) };
    let mut sim = Sim::new(6, update, config(2, 0));
    let untouched_before = sim.task_ids_on(GOOD);
    sim.update_image(BROKEN);
    sim.run_until(|s| s.state() == Some(UpdateState::RollbackCompleted), 300);
    let broken: Vec<Task> = sim.tasks().into_iter().filter(|t| t.spec.image == BROKEN).collect();
    let slots: BTreeSet<u64> = broken.iter().map(|t| t.slot).collect();
    assert_eq!(slots.len(), 2, "the update stopped after its first batch: {slots:?}");
    assert_eq!(sim.running_on(GOOD), 6, "every slot back on the old spec");
    let kept = sim.task_ids_on(GOOD).intersection(&untouched_before).count();
    assert_eq!(kept, 4, "the four slots never updated kept their tasks");
    let status = sim.service().update_status.unwrap();
    assert!(status.message.starts_with("rollback completed: update rolled back due to failure or early termination of task"), "{status:?}");
}

#[test]
fn a_task_that_never_gets_healthy_pauses_the_update_by_its_deadline() {
    let update = UpdateConfig { healthy_deadline_ms: 2_000, ..config(1, 0) };
    let mut sim = Sim::new(3, update, config(1, 0));
    sim.update_image(NEVER_HEALTHY);
    let started = sim.now;
    sim.run_until(|s| s.state() == Some(UpdateState::Paused), 100);
    assert!(sim.now >= started + 2_000, "paused before the deadline");
    let status = sim.service().update_status.unwrap();
    assert!(status.message.contains("not running and healthy 2s after it was made"), "{}", status.message);
    // Paused means paused: nothing more is replaced.
    for _ in 0..30 {
        sim.tick();
    }
    assert_eq!(sim.running_on(GOOD), 2);
    // `service update --rollback` restores the old spec.
    let rolled = sim.service().rolled_back(sim.now, "manually requested rollback").unwrap();
    sim.write(vec![Op::Update { object: Object::Service(rolled), expected_version: None }]);
    sim.run_until(|s| s.state() == Some(UpdateState::RollbackCompleted), 100);
    assert_eq!(sim.running_on(GOOD), 3);
}

#[test]
fn a_task_that_is_never_placed_does_not_hold_the_update_for_ever() {
    let update = UpdateConfig { healthy_deadline_ms: 3_000, ..config(1, 0) };
    let mut sim = Sim::new(2, update, config(1, 0));
    sim.update_image(UNPLACEABLE);
    sim.run_until(|s| s.state() == Some(UpdateState::Paused), 100);
    let status = sim.service().update_status.unwrap();
    assert!(status.message.contains("not running and healthy 3s after it was made; it is new"), "{}", status.message);
}

#[test]
fn the_continue_action_goes_on_through_failures() {
    let update = UpdateConfig { failure_action: FailureAction::Continue, ..config(5, 0) };
    let mut sim = Sim::new(5, update, config(1, 0));
    sim.update_image(BROKEN);
    sim.run_until(|s| s.tasks().iter().filter(|t| t.spec.image == BROKEN).map(|t| t.slot).collect::<BTreeSet<_>>().len() == 5, 100);
    assert_eq!(sim.state(), Some(UpdateState::Updating), "continue never pauses");
}

#[test]
fn a_failing_rollback_pauses_instead_of_looping() {
    let update = UpdateConfig { failure_action: FailureAction::Rollback, ..config(1, 0) };
    let mut sim = Sim::new(2, update, config(1, 0));
    // The previous spec is itself broken now (as if its image was deleted).
    sim.update_image(NEW);
    sim.run_until(|s| s.state() == Some(UpdateState::Completed), 200);
    sim.update_image(BROKEN);
    let mut service = sim.service();
    service.previous_spec.as_mut().unwrap().task.image = BROKEN.into();
    sim.write(vec![Op::Update { object: Object::Service(service), expected_version: None }]);
    sim.run_until(|s| s.state() == Some(UpdateState::RollbackPaused), 200);
    let status = sim.service().update_status.unwrap();
    assert!(status.message.starts_with("rollback paused due to failure"), "{}", status.message);
}

#[test]
fn the_rollout_is_read_from_the_store_alone() {
    // A new leader has nothing but the store: planning the same snapshot
    // twice gives the same writes (ids and all but the new tasks' ids).
    let mut sim = Sim::new(4, config(2, 0), config(1, 0));
    sim.update_image(NEW);
    sim.tick();
    let first = plan(&sim.state, sim.now);
    let again = plan(&sim.state, sim.now);
    let shape = |p: &super::Plan| {
        p.transactions
            .iter()
            .flatten()
            .map(|op| match op {
                Op::Create(Object::Task(t)) => format!("create slot {}", t.slot),
                Op::Update { object, .. } => format!("update {}", object.id()),
                other => format!("{other:?}"),
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(shape(&first), shape(&again));
    let by_slot: BTreeMap<u64, usize> = sim.tasks().iter().filter(|t| t.spec.image == NEW).fold(BTreeMap::new(), |mut m, t| {
        *m.entry(t.slot).or_default() += 1;
        m
    });
    assert_eq!(by_slot.len(), 2, "the first batch is two slots");
}
