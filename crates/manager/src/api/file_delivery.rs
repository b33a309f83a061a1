//! The secrets' and configs' values a node gets on its assignments stream:
//! only those its own tasks use, sent with the first task that uses one and
//! withdrawn when the last such task leaves, as SwarmKit's dispatcher
//! counts references. The stream is mutual TLS to the node's own
//! certificate, so a value travels to that node and no other.
//!
//! A task uses its files from assignment until its container ends: an
//! ended task's container is kept for its logs, but it never starts again
//! and needs nothing more.

use std::collections::{BTreeMap, BTreeSet};

use shoal_proto::pb;

use super::file_refs::FileKind;
use crate::store::{StoreState, Task, TaskState};

/// A secret or config, by kind and id.
pub type FileKey = (FileKind, String);

fn needs_files(task: &Task, node_id: &str) -> bool {
    task.node_id == node_id && task.status.state >= TaskState::Assigned && !task.status.state.is_terminal()
}

/// How many of `node_id`'s tasks use each secret and config.
pub fn file_references(state: &StoreState, node_id: &str) -> BTreeMap<FileKey, usize> {
    let mut counts = BTreeMap::new();
    for task in state.tasks_on_node(node_id).filter(|t| needs_files(t, node_id)) {
        for kind in [FileKind::Secret, FileKind::Config] {
            // One task naming a secret twice still holds it once.
            let ids: BTreeSet<&str> = kind.references(&task.spec).iter().map(|r| r.id.as_str()).collect();
            for id in ids {
                *counts.entry((kind, id.to_string())).or_insert(0) += 1;
            }
        }
    }
    counts
}

/// What one node's stream has handed over and not withdrawn.
#[derive(Debug, Default)]
pub struct DeliveredFiles {
    held: BTreeSet<FileKey>,
}

impl DeliveredFiles {
    /// Puts into `message` the values the node now needs and lacks, and the
    /// keys of those it no longer needs (everything it needs when the
    /// message is `full`).
    pub fn update(&mut self, state: &StoreState, node_id: &str, message: &mut pb::AssignmentsMessage) {
        let needed = file_references(state, node_id);
        if message.full {
            self.held.clear();
        }
        message.files_removed = self
            .held
            .iter()
            .filter(|key| !needed.contains_key(*key))
            .map(|(kind, id)| pb::FileKey { kind: kind.to_pb().into(), id: id.clone() })
            .collect();
        self.held.retain(|key| needed.contains_key(key));
        for (kind, id) in needed.into_keys() {
            if self.held.contains(&(kind, id.clone())) {
                continue;
            }
            // Removal is refused while a service uses it; a task of an
            // older spec can still outlive it, and fails on the node.
            let Some((name, data)) = kind.lookup(state, &id) else {
                tracing::warn!(kind = kind.as_str(), %id, node = %node_id, "a task uses a secret or config that no longer exists");
                continue;
            };
            message.files_changed.push(pb::FileData { kind: kind.to_pb().into(), id: id.clone(), name: name.to_string(), data: data.to_vec() });
            self.held.insert((kind, id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{fixtures, Config, FileReference, Meta, Object, Secret};

    fn reference(id: &str) -> FileReference {
        FileReference { id: id.into(), name: id.into(), target: id.into(), uid: 0, gid: 0, mode: 0o444 }
    }

    fn task(id: &str, node: &str, state: TaskState, secrets: &[&str], configs: &[&str]) -> Object {
        let mut task = fixtures::task(id, "web", state);
        task.node_id = node.into();
        task.spec.secrets = secrets.iter().map(|s| reference(s)).collect();
        task.spec.configs = configs.iter().map(|c| reference(c)).collect();
        Object::Task(task)
    }

    fn values() -> Vec<Object> {
        let meta = |id: &str| Meta { id: id.into(), ..Default::default() };
        vec![
            Object::Secret(Secret { meta: meta("s1"), name: "db_pass".into(), labels: Default::default(), data: b"pw1".to_vec() }),
            Object::Secret(Secret { meta: meta("s2"), name: "api_key".into(), labels: Default::default(), data: b"key2".to_vec() }),
            Object::Config(Config { meta: meta("c1"), name: "app.conf".into(), labels: Default::default(), data: b"conf".to_vec() }),
        ]
    }

    fn state(tasks: Vec<Object>) -> StoreState {
        StoreState::from_objects(values().into_iter().chain(tasks))
    }

    fn send(delivered: &mut DeliveredFiles, state: &StoreState, full: bool) -> pb::AssignmentsMessage {
        let mut message = pb::AssignmentsMessage { full, ..Default::default() };
        delivered.update(state, "n1", &mut message);
        message
    }

    fn ids(message: &pb::AssignmentsMessage) -> (Vec<String>, Vec<String>) {
        (message.files_changed.iter().map(|f| f.id.clone()).collect(), message.files_removed.iter().map(|f| f.id.clone()).collect())
    }

    #[test]
    fn a_node_gets_only_what_its_own_live_tasks_use() {
        let state = state(vec![
            task("t1", "n1", TaskState::Running, &["s1"], &["c1"]),
            task("t2", "n2", TaskState::Running, &["s2"], &[]),
            task("t3", "n1", TaskState::Pending, &["s2"], &[]),
            task("t4", "n1", TaskState::Complete, &["s2"], &[]),
        ]);
        let counts = file_references(&state, "n1");
        assert_eq!(counts.keys().cloned().collect::<Vec<_>>(), [(FileKind::Secret, "s1".to_string()), (FileKind::Config, "c1".to_string())]);
        let message = send(&mut DeliveredFiles::default(), &state, true);
        assert_eq!(ids(&message).0, ["s1", "c1"], "not s2: another node's, an unplaced and an ended task's");
        assert_eq!(message.files_changed[0].data, b"pw1");
        assert_eq!(message.files_changed[0].kind(), pb::FileKind::Secret);
        assert_eq!(message.files_changed[1].kind(), pb::FileKind::Config);
    }

    #[test]
    fn a_value_is_sent_once_and_withdrawn_with_the_last_task_using_it() {
        let mut delivered = DeliveredFiles::default();
        let one = state(vec![task("t1", "n1", TaskState::Assigned, &["s1"], &[])]);
        assert_eq!(ids(&send(&mut delivered, &one, true)), (vec!["s1".into()], vec![]));

        let two = state(vec![task("t1", "n1", TaskState::Running, &["s1"], &[]), task("t2", "n1", TaskState::Assigned, &["s1", "s1"], &[])]);
        assert_eq!(file_references(&two, "n1")[&(FileKind::Secret, "s1".to_string())], 2);
        assert_eq!(ids(&send(&mut delivered, &two, false)), (vec![], vec![]), "already there: nothing travels again");

        let first_gone = state(vec![task("t1", "n1", TaskState::Shutdown, &["s1"], &[]), task("t2", "n1", TaskState::Running, &["s1"], &[])]);
        assert_eq!(ids(&send(&mut delivered, &first_gone, false)), (vec![], vec![]), "t2 still uses it");

        let rotated = state(vec![task("t2", "n1", TaskState::Failed, &["s1"], &[]), task("t3", "n1", TaskState::Assigned, &["s2"], &[])]);
        assert_eq!(ids(&send(&mut delivered, &rotated, false)), (vec!["s2".into()], vec!["s1".into()]));

        let nothing = state(vec![]);
        assert_eq!(ids(&send(&mut delivered, &nothing, false)), (vec![], vec!["s2".into()]));
        assert_eq!(ids(&send(&mut delivered, &nothing, false)), (vec![], vec![]), "withdrawn once");
    }

    #[test]
    fn a_full_message_resends_everything_needed() {
        let mut delivered = DeliveredFiles::default();
        let state = state(vec![task("t1", "n1", TaskState::Running, &["s1"], &[])]);
        send(&mut delivered, &state, true);
        assert_eq!(ids(&send(&mut delivered, &state, true)), (vec!["s1".into()], vec![]), "a reconnected agent starts from nothing");
    }

    #[test]
    fn a_vanished_value_is_skipped_not_sent_empty() {
        let mut delivered = DeliveredFiles::default();
        let state = state(vec![task("t1", "n1", TaskState::Running, &["gone"], &[])]);
        let message = send(&mut delivered, &state, true);
        assert!(message.files_changed.is_empty() && message.files_removed.is_empty());
    }
}
