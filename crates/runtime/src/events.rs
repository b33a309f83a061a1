//! This node's runtime events (`shoal events` on the node): containers
//! created, started, dying (with exit code and OOM), destroyed; images
//! pulled and deleted; volumes created and destroyed. Process-wide, as the
//! metrics are (one runtime per daemon), with a short history for
//! `--since` as dockerd keeps one.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{LazyLock, Mutex};

use tokio::sync::broadcast;

/// How many events the node keeps for `--since` (dockerd keeps 256).
pub const HISTORY: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    Container,
    Image,
    Volume,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LocalEvent {
    /// Numbers the node's events in order since the daemon started.
    pub seq: u64,
    pub time_unix_nanos: i64,
    pub subject: Subject,
    pub action: String,
    pub id: String,
    pub name: String,
    pub attributes: BTreeMap<String, String>,
}

/// Asked for events older than the node keeps.
#[derive(Debug, Clone, PartialEq)]
pub struct TooOld {
    pub kept_since_unix_nanos: i64,
}

pub struct LocalEvents {
    kept: Mutex<Kept>,
    live: broadcast::Sender<LocalEvent>,
}

struct Kept {
    events: VecDeque<LocalEvent>,
    next_seq: u64,
    complete_since: i64,
}

static EVENTS: LazyLock<LocalEvents> = LazyLock::new(|| LocalEvents {
    kept: Mutex::new(Kept { events: VecDeque::new(), next_seq: 1, complete_since: now_nanos() }),
    live: broadcast::channel(1024).0,
});

pub fn events() -> &'static LocalEvents {
    &EVENTS
}

fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

impl LocalEvents {
    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that `action` happened to `subject` `id` (named `name`).
    pub fn emit(&self, subject: Subject, action: &str, id: &str, name: &str, attributes: BTreeMap<String, String>) {
        let mut kept = self.lock();
        let event = LocalEvent {
            seq: kept.next_seq,
            time_unix_nanos: now_nanos(),
            subject,
            action: action.to_string(),
            id: id.to_string(),
            name: name.to_string(),
            attributes,
        };
        kept.next_seq += 1;
        if kept.events.len() == HISTORY {
            if let Some(dropped) = kept.events.pop_front() {
                kept.complete_since = dropped.time_unix_nanos + 1;
            }
        }
        let _ = self.live.send(event.clone());
        kept.events.push_back(event);
    }

    /// The kept events at or after `since` (none when `None`) and a
    /// receiver of every later one, taken together; with [`TooOld`] when
    /// `since` reaches back before what is kept (the kept ones still come).
    pub fn replay(&self, since: Option<i64>) -> (Vec<LocalEvent>, broadcast::Receiver<LocalEvent>, Option<TooOld>) {
        let kept = self.lock();
        let receiver = self.live.subscribe();
        let Some(since) = since else { return (Vec::new(), receiver, None) };
        let too_old = (since < kept.complete_since).then_some(TooOld { kept_since_unix_nanos: kept.complete_since });
        (kept.events.iter().filter(|e| e.time_unix_nanos >= since).cloned().collect(), receiver, too_old)
    }
}

/// Shorthand for the runtime's own calls.
pub(crate) fn emit(subject: Subject, action: &str, id: &str, name: &str, attributes: &[(&str, String)]) {
    let attributes = attributes.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    events().emit(subject, action, id, name, attributes);
}
