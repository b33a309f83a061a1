//! The swarm's events (`shoal events`): what each applied Raft entry
//! changed, as docker's event stream names it (a service created, updated
//! with what changed, removed; a task's new state; a node's new status; a
//! new leader). Every manager applies the same entries, so every manager
//! makes the same events with the same ids (`INDEX.SEQ`) and times (the
//! leader's, from the entry): a client that reconnects to another manager
//! after a failover and asks `--since` sees neither gaps nor duplicates.
//!
//! The history is bounded ([`DEFAULT_CAPACITY`], `--event-history`) and
//! in memory: a manager keeps what it applied since it started, and says
//! so when asked for older events.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use serde_json::Value;
use tokio::sync::broadcast;

use crate::store::{Change, Kind, Object, Task};

pub const DEFAULT_CAPACITY: usize = 10_000;

#[derive(Debug, Clone, PartialEq)]
pub struct ClusterEvent {
    /// The Raft entry that made it, and its place among that entry's events.
    pub index: u64,
    pub seq: u32,
    pub time_ms: u64,
    /// What the event is about: the kind of the object (a leader event: Node).
    pub subject: Kind,
    pub action: String,
    pub id: String,
    pub name: String,
    pub attributes: BTreeMap<String, String>,
}

impl ClusterEvent {
    /// `INDEX.SEQ`, ordered as the events happened.
    pub fn event_id(&self) -> String {
        format!("{}.{}", self.index, self.seq)
    }
}

/// Asked for events older than the history holds.
#[derive(Debug, Clone, PartialEq)]
pub struct TooOld {
    /// The oldest time the history is complete from (Unix ms).
    pub kept_since_ms: u64,
}

pub struct EventHistory {
    kept: Mutex<Kept>,
    capacity: usize,
    live: broadcast::Sender<ClusterEvent>,
}

struct Kept {
    events: VecDeque<ClusterEvent>,
    /// From when the history is complete: the manager's start, or the time
    /// of the newest event dropped to stay within capacity.
    complete_since_ms: u64,
}

impl EventHistory {
    pub fn new(capacity: usize) -> Self {
        EventHistory {
            kept: Mutex::new(Kept { events: VecDeque::new(), complete_since_ms: crate::store::now_ms() }),
            capacity,
            live: broadcast::channel(4096).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn record(&self, events: Vec<ClusterEvent>) {
        if events.is_empty() || self.capacity == 0 {
            return;
        }
        let mut kept = self.lock();
        for event in events {
            if kept.events.len() == self.capacity {
                if let Some(dropped) = kept.events.pop_front() {
                    kept.complete_since_ms = kept.complete_since_ms.max(dropped.time_ms + 1);
                }
            }
            // Sent under the lock, so a subscriber taken under it misses
            // nothing; a copy only when someone follows.
            if self.live.receiver_count() > 0 {
                let _ = self.live.send(event.clone());
            }
            kept.events.push_back(event);
        }
    }

    /// Records the events of `changes`, made by the entry at `index`
    /// (an entry may hold several transactions: their events number on).
    pub fn record_changes(&self, index: u64, time_ms: u64, changes: &[Change]) {
        // A capacity of 0 turns the swarm's events off.
        if changes.is_empty() || self.capacity == 0 {
            return;
        }
        let first_seq = match self.lock().events.back() {
            Some(last) if last.index == index => last.seq + 1,
            _ => 0,
        };
        self.record(from_changes(index, first_seq, time_ms, changes));
    }

    /// The store was replaced wholesale (a snapshot from the leader): what
    /// happened in between is unknown here, so the history restarts.
    pub fn restart(&self) {
        let mut kept = self.lock();
        kept.events.clear();
        kept.complete_since_ms = crate::store::now_ms();
    }

    /// The kept events at or after `since_ms` (none when `None`), and a
    /// receiver of every later one, taken together so nothing falls between;
    /// with [`TooOld`] when `since_ms` reaches back before what is kept
    /// (the kept ones are returned all the same).
    pub fn replay(&self, since_ms: Option<u64>) -> (Vec<ClusterEvent>, broadcast::Receiver<ClusterEvent>, Option<TooOld>) {
        let kept = self.lock();
        let receiver = self.live.subscribe();
        let Some(since) = since_ms else { return (Vec::new(), receiver, None) };
        let too_old = (since < kept.complete_since_ms).then_some(TooOld { kept_since_ms: kept.complete_since_ms });
        (kept.events.iter().filter(|e| e.time_ms >= since).cloned().collect(), receiver, too_old)
    }
}

/// A new leader took office at `index` (the blank entry each new leader
/// writes first), as every manager sees it in the log.
pub fn leader_event(index: u64, time_ms: u64, leader: &str, term: u64) -> ClusterEvent {
    ClusterEvent {
        index,
        seq: 0,
        time_ms,
        subject: Kind::Node,
        action: "leader".into(),
        id: leader.to_string(),
        name: String::new(),
        attributes: BTreeMap::from([("term".to_string(), term.to_string())]),
    }
}

/// The events of the changes one entry's transaction made.
pub fn from_changes(index: u64, first_seq: u32, time_ms: u64, changes: &[Change]) -> Vec<ClusterEvent> {
    let mut events = Vec::new();
    for change in changes {
        let (object, action, attributes) = match change {
            Change::Created(object) => (object, "create".to_string(), BTreeMap::new()),
            Change::Deleted(object) => (object, "remove".to_string(), BTreeMap::new()),
            Change::Updated { old, new } => match (old, new) {
                (Object::Task(old_task), Object::Task(new_task)) => match task_change(old_task, new_task) {
                    Some((action, attributes)) => (new, action, attributes),
                    None => continue,
                },
                _ => {
                    let attributes = changed_fields(old, new);
                    if attributes.is_empty() {
                        continue;
                    }
                    (new, "update".to_string(), attributes)
                }
            },
        };
        let mut attributes = attributes;
        let name = object.name().map(str::to_string).unwrap_or_else(|| match object {
            Object::Node(node) => node.hostname.clone(),
            Object::Task(task) => format!("{}.{}", task.service_name, task.slot),
            _ => String::new(),
        });
        if let Object::Task(task) = object {
            attributes.insert("service".into(), task.service_name.clone());
            if !task.node_id.is_empty() {
                attributes.insert("node".into(), task.node_id.clone());
            }
        }
        events.push(ClusterEvent {
            index,
            seq: first_seq + events.len() as u32,
            time_ms,
            subject: object.kind(),
            action,
            id: object.id().to_string(),
            name,
            attributes,
        });
    }
    events
}

/// A task's event: its new state (with how it ended), or a change of the
/// state it should be in; `None` for bookkeeping alone.
fn task_change(old: &Task, new: &Task) -> Option<(String, BTreeMap<String, String>)> {
    let mut attributes = BTreeMap::new();
    if old.status.state != new.status.state {
        attributes.insert("state.old".into(), old.status.state.as_str().to_string());
        if let Some(code) = new.status.exit_code {
            attributes.insert("exit_code".into(), code.to_string());
        }
        if !new.status.error.is_empty() {
            attributes.insert("error".into(), new.status.error.clone());
        }
        return Some((new.status.state.as_str().to_string(), attributes));
    }
    if old.desired_state != new.desired_state {
        attributes.insert("desired_state.old".into(), old.desired_state.as_str().to_string());
        attributes.insert("desired_state.new".into(), new.desired_state.as_str().to_string());
        return Some(("update".into(), attributes));
    }
    None
}

/// What changed between two versions of an object, as `PATH.old` and
/// `PATH.new` for values and `PATH` listed in `changed` for the rest
/// (the version and timestamps are the store's, not the user's).
fn changed_fields(old: &Object, new: &Object) -> BTreeMap<String, String> {
    let (Ok(old), Ok(new)) = (serde_json::to_value(old), serde_json::to_value(new)) else { return BTreeMap::new() };
    let mut attributes = BTreeMap::new();
    let mut structural = Vec::new();
    diff("", &old, &new, 0, &mut attributes, &mut structural);
    if !structural.is_empty() {
        attributes.insert("changed".into(), structural.join(","));
    }
    attributes
}

/// Depth-first over maps, up to six levels: scalars that differ become
/// attributes, deeper or list differences are named only.
fn diff(path: &str, old: &Value, new: &Value, depth: usize, attributes: &mut BTreeMap<String, String>, structural: &mut Vec<String>) {
    if old == new {
        return;
    }
    match (old, new) {
        (Value::Object(old), Value::Object(new)) if depth < 6 => {
            let keys: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
            for key in keys {
                // Enum variants (serde writes them capitalised: the object's
                // kind, `Replicated`) are not fields: `spec.mode.replicas`.
                let variant = key.starts_with(|c: char| c.is_ascii_uppercase());
                let child = if variant { path.to_string() } else if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                if depth == 1 && key == "meta" {
                    continue;
                }
                let null = Value::Null;
                diff(&child, old.get(key).unwrap_or(&null), new.get(key).unwrap_or(&null), depth + 1, attributes, structural);
            }
        }
        (Value::Object(_) | Value::Array(_), _) | (_, Value::Object(_) | Value::Array(_)) => structural.push(path.to_string()),
        _ => {
            attributes.insert(format!("{path}.old"), scalar(old));
            attributes.insert(format!("{path}.new"), scalar(new));
        }
    }
}

fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
#[path = "events_tests.rs"]
mod tests;
