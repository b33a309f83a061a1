//! The cluster store: typed objects replicated by Raft.
//!
//! [`StoreState`] is the state machine's data and its pure `apply`; [`Store`]
//! is the shared handle that the Raft state machine writes through and that
//! every component reads and watches. Components never call each other: they
//! watch the store and write back to it.

#[cfg(test)]
pub(crate) mod fixtures;
pub mod endpoint;
pub mod network;
pub mod objects;
pub mod rollout;
pub mod service;
pub mod task_options;
pub mod task_load;
mod task_index;
pub mod transaction;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

pub use endpoint::*;
pub use network::*;
pub use objects::*;
pub use rollout::*;
pub use service::*;
pub use task_load::{NodeUsage, TaskLoad};
use task_index::TaskIndex;
pub use transaction::*;

/// One committed change, as watchers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Created(Object),
    Updated { old: Object, new: Object },
    Deleted(Object),
}

/// Everything one applied transaction changed, tagged with its log index.
#[derive(Debug, Clone)]
pub struct StoreEvent {
    pub index: u64,
    /// Shared: every watcher (one per node's assignments stream) receives
    /// a clone of the event, which must not copy the objects.
    pub changes: std::sync::Arc<Vec<Change>>,
}

/// The replicated data. Kept in memory for reads (cluster state is small),
/// persisted by the Raft state machine, serialised whole for snapshots.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreState {
    objects: BTreeMap<Kind, BTreeMap<String, Object>>,
    /// (kind, name) -> id, for kinds with unique names.
    #[serde(skip)]
    names: HashMap<(Kind, String), String>,
    /// What placed tasks hold per node, kept current by every write.
    #[serde(skip)]
    task_load: TaskLoad,
    /// Every address held on every network, kept current by every write.
    #[serde(skip)]
    addresses: AddressIndex,
    /// The tasks of each node and of each service, kept current by every write.
    #[serde(skip)]
    tasks: TaskIndex,
}

/// The addresses `object` holds while it holds them: a task until it ends,
/// a node on the networks it serves (and for its standalone containers),
/// a service its VIPs.
fn address_claims(object: &Object) -> Vec<Claim> {
    let claim = |holder: AddressHolder, network_id: &str, address: std::net::Ipv4Addr| Claim { holder, network_id: network_id.to_string(), address };
    match object {
        Object::Task(task) if !task.status.state.is_terminal() => {
            task.networks.iter().map(|a| claim(AddressHolder::Task(task.meta.id.clone()), &a.network_id, a.address)).collect()
        }
        Object::Node(node) => node
            .network_addresses
            .iter()
            .map(|(network, address)| claim(AddressHolder::Node(node.meta.id.clone()), network, *address))
            .chain(node.container_attachments.iter().map(|c| {
                let holder = AddressHolder::Container { node_id: node.meta.id.clone(), sandbox_id: c.sandbox_id.clone() };
                claim(holder, &c.network_id, c.address)
            }))
            .collect(),
        Object::Service(service) => {
            service.vips.iter().map(|v| claim(AddressHolder::Service(service.meta.id.clone()), &v.network_id, v.address)).collect()
        }
        _ => Vec::new(),
    }
}

impl StoreState {
    pub fn from_objects(objects: impl IntoIterator<Item = Object>) -> Self {
        let mut state = StoreState::default();
        for object in objects {
            state.insert(object);
        }
        state
    }

    pub fn get(&self, kind: Kind, id: &str) -> Option<&Object> {
        self.objects.get(&kind)?.get(id)
    }

    pub fn get_typed<T: Typed>(&self, id: &str) -> Option<&T> {
        self.get(T::KIND, id).and_then(T::from_object)
    }

    pub fn list(&self, kind: Kind) -> impl Iterator<Item = &Object> {
        self.objects.get(&kind).into_iter().flat_map(|m| m.values())
    }

    pub fn list_typed<'a, T: Typed + 'a>(&'a self) -> impl Iterator<Item = &'a T> {
        self.list(T::KIND).filter_map(T::from_object)
    }

    pub fn find_by_name(&self, kind: Kind, name: &str) -> Option<&Object> {
        let id = self.names.get(&(kind, name.to_string()))?;
        self.get(kind, id)
    }

    pub fn all_objects(&self) -> impl Iterator<Item = &Object> {
        self.objects.values().flat_map(|m| m.values())
    }

    pub fn cluster(&self) -> Option<&Cluster> {
        self.list_typed::<Cluster>().next()
    }

    pub fn task_load(&self) -> &TaskLoad {
        &self.task_load
    }

    pub fn addresses(&self) -> &AddressIndex {
        &self.addresses
    }

    /// The tasks placed on `node_id`, in any state.
    pub fn tasks_on_node<'a>(&'a self, node_id: &str) -> impl Iterator<Item = &'a Task> + 'a {
        self.tasks.on_node(node_id).filter_map(|id| self.get_typed::<Task>(id))
    }

    /// The addresses `node_id`'s live tasks hold, per network.
    pub fn task_addresses_on_node(&self, node_id: &str) -> Option<&BTreeMap<String, std::collections::BTreeSet<std::net::Ipv4Addr>>> {
        self.tasks.attached_to(node_id)
    }

    /// The tasks of `service_id`, in any state.
    pub fn tasks_of_service<'a>(&'a self, service_id: &str) -> impl Iterator<Item = &'a Task> + 'a {
        self.tasks.of_service(service_id).filter_map(|id| self.get_typed::<Task>(id))
    }

    /// Rebuilds the indexes after deserialisation (they are not serialised).
    pub fn reindex(&mut self) {
        self.task_load = TaskLoad::from_tasks(self.list_typed::<Task>());
        let mut tasks = TaskIndex::default();
        for task in self.list_typed::<Task>() {
            tasks.add(task);
        }
        self.tasks = tasks;
        self.names.clear();
        self.addresses = AddressIndex::default();
        for (kind, objects) in &self.objects {
            for object in objects.values() {
                if let Some(name) = object.name() {
                    self.names.insert((*kind, name.to_string()), object.id().to_string());
                }
                self.addresses.add(address_claims(object));
            }
        }
    }

    fn insert(&mut self, object: Object) -> Option<Object> {
        let kind = object.kind();
        let name = object.name().map(str::to_string);
        let id = object.id().to_string();
        if let Object::Task(task) = &object {
            self.task_load.add(task);
        }
        let claims = address_claims(&object);
        let previous = self.objects.entry(kind).or_default().insert(id.clone(), object);
        if let Some(Object::Task(task)) = &previous {
            self.task_load.remove(task);
            self.tasks.remove(task);
        }
        if let Some(Object::Task(task)) = self.objects.get(&kind).and_then(|m| m.get(&id)) {
            self.tasks.add(task);
        }
        if let Some(previous) = &previous {
            self.addresses.remove(address_claims(previous));
        }
        self.addresses.add(claims);
        // A rename must release the old name.
        if let Some(old_name) = previous.as_ref().and_then(|p| p.name()) {
            if Some(old_name) != name.as_deref() {
                self.names.remove(&(kind, old_name.to_string()));
            }
        }
        if let Some(name) = name {
            self.names.insert((kind, name), id);
        }
        previous
    }

    fn remove(&mut self, kind: Kind, id: &str) -> Option<Object> {
        let removed = self.objects.get_mut(&kind)?.remove(id)?;
        if let Object::Task(task) = &removed {
            self.task_load.remove(task);
            self.tasks.remove(task);
        }
        self.addresses.remove(address_claims(&removed));
        if let Some(name) = removed.name() {
            self.names.remove(&(kind, name.to_string()));
        }
        Some(removed)
    }

    /// Checks every precondition of `txn` against the current state without
    /// changing anything, so that a failing transaction leaves no trace.
    fn check(&self, txn: &Transaction) -> Result<(), TxnError> {
        // Names claimed or released earlier in the same transaction count.
        let mut claimed: HashMap<(Kind, String), String> = HashMap::new();
        let mut released: Vec<(Kind, String)> = Vec::new();
        // Services deleted earlier in the transaction use nothing any more
        // (`stack rm` deletes services and their secrets together).
        let mut deleted_services: std::collections::HashSet<String> = std::collections::HashSet::new();
        // So do addresses claimed earlier in the transaction.
        let mut addresses_claimed: HashMap<(String, std::net::Ipv4Addr), AddressHolder> = HashMap::new();
        for op in &txn.ops {
            if let Op::Create(object) | Op::Update { object, .. } = op {
                self.check_addresses(object, &mut addresses_claimed)?;
                self.check_subnet(object)?;
            }
            match op {
                Op::Create(object) => {
                    let kind = object.kind();
                    if self.get(kind, object.id()).is_some() {
                        return Err(TxnError::AlreadyExists { kind, id: object.id().to_string() });
                    }
                    if let Some(name) = object.name() {
                        let key = (kind, name.to_string());
                        let taken = (self.names.contains_key(&key) && !released.contains(&key))
                            || claimed.contains_key(&key);
                        if taken {
                            return Err(TxnError::NameInUse { kind, name: name.to_string() });
                        }
                        claimed.insert(key, object.id().to_string());
                    }
                }
                Op::Update { object, expected_version } => {
                    let kind = object.kind();
                    let current = self
                        .get(kind, object.id())
                        .ok_or_else(|| TxnError::NotFound { kind, id: object.id().to_string() })?;
                    if let Some(expected) = expected_version {
                        if current.meta().version != *expected {
                            return Err(TxnError::VersionConflict {
                                kind,
                                id: object.id().to_string(),
                                expected: *expected,
                                actual: current.meta().version,
                            });
                        }
                    }
                    if let Some(name) = object.name() {
                        let key = (kind, name.to_string());
                        let owner = claimed.get(&key).or_else(|| self.names.get(&key));
                        if owner.is_some_and(|owner| owner != object.id()) && !released.contains(&key) {
                            return Err(TxnError::NameInUse { kind, name: name.to_string() });
                        }
                        claimed.insert(key, object.id().to_string());
                    }
                }
                Op::Delete { kind, id } => {
                    let current =
                        self.get(*kind, id).ok_or_else(|| TxnError::NotFound { kind: *kind, id: id.clone() })?;
                    self.check_unused(current, &deleted_services)?;
                    if *kind == Kind::Service {
                        deleted_services.insert(id.clone());
                    }
                    if let Some(name) = current.name() {
                        released.push((*kind, name.to_string()));
                    }
                }
                Op::Check { kind, id, version } => {
                    let current =
                        self.get(*kind, id).ok_or_else(|| TxnError::NotFound { kind: *kind, id: id.clone() })?;
                    if current.meta().version != *version {
                        return Err(TxnError::VersionConflict {
                            kind: *kind,
                            id: id.clone(),
                            expected: *version,
                            actual: current.meta().version,
                        });
                    }
                }
                Op::TaskStatus { .. } | Op::Restore(_) => {}
            }
        }
        Ok(())
    }

    /// A service never names a secret or config that is gone: the API
    /// checks before deleting one, and this catches a service written
    /// meanwhile.
    fn check_unused(&self, object: &Object, deleted_services: &std::collections::HashSet<String>) -> Result<(), TxnError> {
        let uses: fn(&TaskSpec) -> &[FileReference] = match object {
            Object::Secret(_) => |t| &t.secrets,
            Object::Config(_) => |t| &t.configs,
            _ => return Ok(()),
        };
        let user = self
            .list_typed::<Service>()
            .filter(|s| !deleted_services.contains(&s.meta.id))
            .find(|s| uses(&s.spec.task).iter().any(|r| r.id == object.id()));
        match user {
            Some(service) => Err(TxnError::InUse {
                kind: object.kind(),
                name: object.name().unwrap_or_default().to_string(),
                service: service.spec.name.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Refuses an address another object holds (or one claimed earlier in
    /// the same transaction by someone else).
    fn check_addresses(
        &self,
        object: &Object,
        claimed: &mut HashMap<(String, std::net::Ipv4Addr), AddressHolder>,
    ) -> Result<(), TxnError> {
        for Claim { holder, network_id, address } in address_claims(object) {
            let current = claimed.get(&(network_id.clone(), address)).or_else(|| self.addresses.holder(&network_id, address));
            if let Some(other) = current.filter(|other| **other != holder) {
                return Err(TxnError::AddressInUse { network_id, address, holder: other.to_string() });
            }
            claimed.insert((network_id, address), holder);
        }
        Ok(())
    }

    /// Networks never share address space: a subnet overlapping another
    /// network's would make routes ambiguous on every node serving both.
    fn check_subnet(&self, object: &Object) -> Result<(), TxnError> {
        let Object::Network(network) = object else { return Ok(()) };
        for other in self.list_typed::<Network>() {
            let overlaps = other.subnet.contains(&network.subnet.network()) || network.subnet.contains(&other.subnet.network());
            if other.meta.id != network.meta.id && overlaps {
                return Err(TxnError::SubnetOverlap { subnet: network.subnet, other: other.subnet, other_name: other.spec.name.clone() });
            }
        }
        Ok(())
    }

    /// Applies a committed transaction at log `index`. Deterministic.
    pub fn apply(&mut self, index: u64, txn: &Transaction) -> (TxnOutcome, Vec<Change>) {
        if let Err(err) = self.check(txn) {
            return (Err(err), Vec::new());
        }
        let mut written = Vec::new();
        let mut changes = Vec::new();
        for op in &txn.ops {
            match op {
                Op::Create(object) => {
                    let mut object = object.clone();
                    let meta = object.meta_mut();
                    meta.version = index;
                    meta.created_at = txn.timestamp_ms;
                    meta.updated_at = txn.timestamp_ms;
                    self.insert(object.clone());
                    written.push(object.clone());
                    changes.push(Change::Created(object));
                }
                Op::Update { object, .. } => {
                    let mut object = object.clone();
                    let old = self.get(object.kind(), object.id()).cloned();
                    let meta = object.meta_mut();
                    meta.version = index;
                    meta.created_at = old.as_ref().map(|o| o.meta().created_at).unwrap_or(txn.timestamp_ms);
                    meta.updated_at = txn.timestamp_ms;
                    self.insert(object.clone());
                    written.push(object.clone());
                    if let Some(old) = old {
                        changes.push(Change::Updated { old, new: object });
                    }
                }
                Op::Delete { kind, id } => {
                    if let Some(old) = self.remove(*kind, id) {
                        written.push(old.clone());
                        changes.push(Change::Deleted(old));
                    }
                }
                Op::Check { .. } => {}
                Op::TaskStatus { task_id, node_id, status } => {
                    let Some(Object::Task(old)) = self.get(Kind::Task, task_id).cloned() else { continue };
                    if old.node_id != *node_id || status.state < old.status.state || *status == old.status {
                        continue;
                    }
                    let mut task = old.clone();
                    task.status = status.clone();
                    if status.state == TaskState::Running && task.started_ms == 0 {
                        task.started_ms = status.timestamp_ms.max(1);
                    }
                    task.meta.version = index;
                    task.meta.updated_at = txn.timestamp_ms;
                    let new = Object::Task(task);
                    self.insert(new.clone());
                    written.push(new.clone());
                    changes.push(Change::Updated { old: Object::Task(old), new });
                }
                Op::Restore(objects) => {
                    for old in std::mem::take(&mut self.objects).into_values().flat_map(|m| m.into_values()) {
                        changes.push(Change::Deleted(old));
                    }
                    self.names.clear();
                    self.task_load = TaskLoad::default();
                    self.addresses = AddressIndex::default();
                    self.tasks = TaskIndex::default();
                    for object in objects {
                        let mut object = object.clone();
                        object.meta_mut().version = index;
                        self.insert(object.clone());
                        changes.push(Change::Created(object));
                    }
                }
            }
        }
        (Ok(written), changes)
    }
}

/// Shared handle to the store: the Raft state machine writes through it,
/// everything else reads and watches.
#[derive(Clone)]
pub struct Store {
    state: Arc<RwLock<StoreState>>,
    events: broadcast::Sender<StoreEvent>,
    /// What applied entries changed, as `shoal events` shows it.
    history: Arc<crate::events::EventHistory>,
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl Store {
    pub fn new() -> Self {
        Self::with_event_history(crate::events::DEFAULT_CAPACITY)
    }

    /// A store whose event history keeps the last `capacity` events.
    pub fn with_event_history(capacity: usize) -> Self {
        // Watchers that fall this far behind get `Lagged` and must resync
        // from a fresh read, as SwarmKit's watch queue does.
        let (events, _) = broadcast::channel(4096);
        Store { state: Arc::new(RwLock::new(StoreState::default())), events, history: Arc::new(crate::events::EventHistory::new(capacity)) }
    }

    /// A consistent view of the whole store for as long as the guard lives.
    /// Keep it short: writes wait for it.
    pub fn read(&self) -> RwLockReadGuard<'_, StoreState> {
        self.state.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn view<R>(&self, f: impl FnOnce(&StoreState) -> R) -> R {
        f(&self.read())
    }

    /// The swarm's event history (`shoal events`).
    pub fn history(&self) -> &crate::events::EventHistory {
        &self.history
    }

    pub fn watch(&self) -> broadcast::Receiver<StoreEvent> {
        self.events.subscribe()
    }

    /// Applies a committed entry and tells watchers. Called by the Raft
    /// state machine only.
    pub fn apply(&self, index: u64, txn: &Transaction) -> TxnOutcome {
        let (outcome, changes) = {
            let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
            state.apply(index, txn)
        };
        crate::metrics::count_changes(&changes);
        self.history.record_changes(index, txn.timestamp_ms, &changes);
        if !changes.is_empty() {
            // No receivers is fine: nobody is watching yet.
            let _ = self.events.send(StoreEvent { index, changes: changes.into() });
        }
        outcome
    }

    /// Replaces the whole state (snapshot install or recovery from disk).
    pub fn replace(&self, mut state: StoreState, index: u64) {
        state.reindex();
        let mut guard = self.state.write().unwrap_or_else(|p| p.into_inner());
        let old = std::mem::replace(&mut *guard, state);
        drop(guard);
        self.history.restart();
        let mut changes: Vec<Change> = old.all_objects().cloned().map(Change::Deleted).collect();
        changes.extend(self.read().all_objects().cloned().map(Change::Created));
        if !changes.is_empty() {
            let _ = self.events.send(StoreEvent { index, changes: changes.into() });
        }
    }

    pub fn snapshot(&self) -> StoreState {
        self.read().clone()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A config object: the smallest named object, for tests of the store and its storage.
    pub(crate) fn config(id: &str, name: &str) -> Object {
        Object::Config(Config {
            meta: Meta { id: id.into(), ..Default::default() },
            name: name.into(),
            labels: Default::default(),
            data: b"x".to_vec(),
        })
    }

    #[test]
    fn create_sets_version_and_times_from_the_entry() {
        let mut state = StoreState::default();
        let txn = Transaction { ops: vec![Op::Create(config("a", "one"))], timestamp_ms: 42 };
        let (outcome, changes) = state.apply(7, &txn);
        let written = outcome.unwrap();
        assert_eq!(written[0].meta(), &Meta { id: "a".into(), version: 7, created_at: 42, updated_at: 42 });
        assert_eq!(changes.len(), 1);
        assert_eq!(state.find_by_name(Kind::Config, "one").unwrap().id(), "a");
    }

    #[test]
    fn a_failing_op_leaves_the_whole_transaction_unapplied() {
        let mut state = StoreState::default();
        state.apply(1, &Transaction::single(Op::Create(config("a", "one")))).0.unwrap();
        let txn = Transaction::new(vec![Op::Create(config("b", "two")), Op::Create(config("c", "one"))]);
        let (outcome, changes) = state.apply(2, &txn);
        assert_eq!(outcome, Err(TxnError::NameInUse { kind: Kind::Config, name: "one".into() }));
        assert!(changes.is_empty());
        assert!(state.get(Kind::Config, "b").is_none());
    }

    #[test]
    fn a_config_in_use_goes_only_with_its_service() {
        let mut state = StoreState::default();
        state.apply(1, &Transaction::single(Op::Create(config("c", "conf")))).0.unwrap();
        let mut service = super::fixtures::service("web");
        service.spec.task.configs.push(FileReference { id: "c".into(), name: "conf".into(), target: "/conf".into(), uid: 0, gid: 0, mode: 0o444 });
        state.apply(2, &Transaction::single(Op::Create(Object::Service(service)))).0.unwrap();
        let config_alone = Transaction::single(Op::Delete { kind: Kind::Config, id: "c".into() });
        assert!(matches!(state.apply(3, &config_alone).0, Err(TxnError::InUse { .. })));
        // `stack rm`: the service and its config in one transaction.
        let both = Transaction::new(vec![Op::Delete { kind: Kind::Service, id: "web".into() }, Op::Delete { kind: Kind::Config, id: "c".into() }]);
        state.apply(4, &both).0.unwrap();
        assert!(state.get(Kind::Config, "c").is_none());
    }

    #[test]
    fn update_with_stale_version_is_a_conflict() {
        let mut state = StoreState::default();
        state.apply(1, &Transaction::single(Op::Create(config("a", "one")))).0.unwrap();
        let update = Op::Update { object: config("a", "one"), expected_version: Some(1) };
        state.apply(2, &Transaction::single(update.clone())).0.unwrap();
        let (outcome, _) = state.apply(3, &Transaction::single(update));
        assert!(matches!(outcome, Err(TxnError::VersionConflict { expected: 1, actual: 2, .. })));
    }

    #[test]
    fn delete_frees_the_name_within_one_transaction() {
        let mut state = StoreState::default();
        state.apply(1, &Transaction::single(Op::Create(config("a", "one")))).0.unwrap();
        let txn = Transaction::new(vec![
            Op::Delete { kind: Kind::Config, id: "a".into() },
            Op::Create(config("b", "one")),
        ]);
        state.apply(2, &txn).0.unwrap();
        assert_eq!(state.find_by_name(Kind::Config, "one").unwrap().id(), "b");
    }

    #[test]
    fn rename_releases_the_old_name() {
        let mut state = StoreState::default();
        state.apply(1, &Transaction::single(Op::Create(config("a", "one")))).0.unwrap();
        state.apply(2, &Transaction::single(Op::Update { object: config("a", "two"), expected_version: None })).0.unwrap();
        assert!(state.find_by_name(Kind::Config, "one").is_none());
        state.apply(3, &Transaction::single(Op::Create(config("b", "one")))).0.unwrap();
    }

    #[test]
    fn serialised_state_round_trips_with_its_name_index() {
        let mut state = StoreState::default();
        state.apply(1, &Transaction::single(Op::Create(config("a", "one")))).0.unwrap();
        let bytes = bincode::serialize(&state).unwrap();
        let mut back: StoreState = bincode::deserialize(&bytes).unwrap();
        back.reindex();
        assert_eq!(back, state);
    }

    fn task(id: &str, node: &str, state: TaskState) -> Task {
        let mut task = task_load::tests::task("web", node, state);
        task.meta.id = id.into();
        task
    }

    #[test]
    fn the_task_load_index_follows_every_kind_of_write() {
        let mut state = StoreState::default();
        let mut index = 0;
        let mut apply = |state: &mut StoreState, op: Op| {
            index += 1;
            state.apply(index, &Transaction::single(op)).0.unwrap();
            let rebuilt = TaskLoad::from_tasks(state.list_typed::<Task>());
            assert_eq!(state.task_load(), &rebuilt, "after write {index}");
        };
        apply(&mut state, Op::Create(Object::Task(task("t1", "", TaskState::Pending))));
        apply(&mut state, Op::Create(Object::Task(task("t2", "n2", TaskState::Assigned))));
        apply(&mut state, Op::Update { object: Object::Task(task("t1", "n1", TaskState::Assigned)), expected_version: None });
        assert_eq!(state.task_load().node("n1").reserved_memory, 100);
        let running = TaskStatus::new(TaskState::Running, 1, "");
        apply(&mut state, Op::TaskStatus { task_id: "t1".into(), node_id: "n1".into(), status: running });
        let failed = TaskStatus::new(TaskState::Failed, 2, "exit 1");
        apply(&mut state, Op::TaskStatus { task_id: "t1".into(), node_id: "n1".into(), status: failed });
        assert_eq!(state.task_load().node("n1").tasks, 0, "an ended task holds nothing");
        apply(&mut state, Op::Delete { kind: Kind::Task, id: "t2".into() });
        assert_eq!(state.task_load(), &TaskLoad::default());
        apply(&mut state, Op::Restore(vec![Object::Task(task("t3", "n3", TaskState::Running))]));
        assert_eq!(state.task_load().node("n3").tasks, 1);
    }

    #[tokio::test]
    async fn watchers_see_committed_changes() {
        let store = Store::new();
        let mut watch = store.watch();
        store.apply(5, &Transaction::single(Op::Create(config("a", "one")))).unwrap();
        let event = watch.recv().await.unwrap();
        assert_eq!(event.index, 5);
        assert!(matches!(&event.changes[0], Change::Created(o) if o.id() == "a"));
    }
}
