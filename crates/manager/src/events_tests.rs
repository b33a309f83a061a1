//! The swarm's events from store changes, and the bounded history.

use super::*;
use crate::store::fixtures;
use crate::store::{Kind, TaskState};

#[test]
fn a_service_is_created_updated_with_what_changed_and_removed() {
    let old = fixtures::service("web");
    let mut new = old.clone();
    new.spec.task.image = "busybox:2".into();
    new.spec.mode = crate::store::ServiceMode::Replicated { replicas: 3 };
    new.meta.version = 9;
    let changes = vec![
        Change::Created(Object::Service(old.clone())),
        Change::Updated { old: Object::Service(old.clone()), new: Object::Service(new.clone()) },
        Change::Deleted(Object::Service(new)),
    ];
    let events = from_changes(7, 0, 1000, &changes);
    let actions: Vec<(&str, Kind, &str, String)> = events.iter().map(|e| (e.action.as_str(), e.subject, e.name.as_str(), e.event_id())).collect();
    assert_eq!(
        actions,
        vec![
            ("create", Kind::Service, "web", "7.0".to_string()),
            ("update", Kind::Service, "web", "7.1".to_string()),
            ("remove", Kind::Service, "web", "7.2".to_string()),
        ]
    );
    let update = &events[1].attributes;
    assert_eq!(update.get("spec.task.image.new").map(String::as_str), Some("busybox:2"), "{update:?}");
    assert_eq!((update["spec.mode.replicas.old"].as_str(), update["spec.mode.replicas.new"].as_str()), ("1", "3"), "{update:?}");
    assert!(!update.keys().any(|k| k.starts_with("meta")), "the store's bookkeeping is not a change: {update:?}");
    // Bookkeeping alone makes no event.
    let mut touched = old.clone();
    touched.meta.version = 10;
    assert!(from_changes(8, 0, 1000, &[Change::Updated { old: Object::Service(old), new: Object::Service(touched) }]).is_empty());
}

#[test]
fn a_task_event_is_its_new_state_with_how_it_ended() {
    let running = fixtures::task("t1", "web", TaskState::Running);
    let mut failed = running.clone();
    failed.status.state = TaskState::Failed;
    failed.status.exit_code = Some(137);
    failed.status.error = "task: non-zero exit (137)".into();
    let events = from_changes(3, 0, 5, &[Change::Updated { old: Object::Task(running.clone()), new: Object::Task(failed) }]);
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].subject, events[0].action.as_str()), (Kind::Task, "failed"));
    assert_eq!(events[0].attributes["exit_code"], "137");
    assert_eq!(events[0].attributes["state.old"], "running");
    assert_eq!(events[0].attributes["service"], running.service_name);
    let mut noted = running.clone();
    noted.status.message = "still running".into();
    assert!(from_changes(4, 0, 5, &[Change::Updated { old: Object::Task(running), new: Object::Task(noted) }]).is_empty());
}

fn event(index: u64, time_ms: u64) -> ClusterEvent {
    leader_event(index, time_ms, "n1", 1)
}

#[test]
fn the_history_replays_what_it_keeps_and_refuses_older() {
    let history = EventHistory::new(3);
    let start = crate::store::now_ms();
    let (replayed, mut live, too_old) = history.replay(Some(start));
    assert!(replayed.is_empty() && too_old.is_none());
    history.record((1..=4).map(|i| event(i, start + i)).collect());
    // One dropped for capacity: the history is complete only after it.
    let (replayed, _, too_old) = history.replay(Some(start + 2));
    assert_eq!(replayed.iter().map(|e| e.index).collect::<Vec<_>>(), vec![2, 3, 4]);
    assert_eq!(too_old, None);
    let (replayed, _, too_old) = history.replay(Some(start));
    assert_eq!(too_old, Some(TooOld { kept_since_ms: start + 2 }), "said, and what is kept still comes");
    assert_eq!(replayed.len(), 3);
    // The live stream saw all four, in order.
    let seen: Vec<u64> = (0..4).map(|_| live.try_recv().unwrap().index).collect();
    assert_eq!(seen, vec![1, 2, 3, 4]);
    std::thread::sleep(std::time::Duration::from_millis(5));
    history.restart();
    assert!(history.replay(Some(start + 2)).2.is_some(), "a snapshot install forgets the history");
}
