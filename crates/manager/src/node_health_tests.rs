use super::*;

const DOWN_AFTER: Duration = Duration::from_secs(3);

/// `count` ready nodes, the first `silent` of them last heard `silence`
/// before `now`, the others just now.
fn swarm(
    count: usize,
    silent: usize,
    now: Instant,
    silence: Duration,
) -> Vec<(String, NodeStatus, Option<Instant>)> {
    (0..count)
        .map(|i| {
            let last = if i < silent { now - silence } else { now };
            (format!("node-{i}"), NodeStatus::Ready, Some(last))
        })
        .collect()
}

#[test]
fn a_silent_node_goes_down_after_the_window_and_comes_back() {
    let start = Instant::now();
    let mut state = HealthState::new(start);
    let now = start + Duration::from_secs(10);
    let nodes = swarm(20, 2, now, Duration::from_secs(4));
    let changes = plan_statuses(&mut state, &nodes, now, DOWN_AFTER);
    assert_eq!(changes.len(), 2);
    assert!(changes.values().all(|s| *s == NodeStatus::Down));

    let back = vec![("node-0".to_string(), NodeStatus::Down, Some(now))];
    let changes = plan_statuses(&mut state, &back, now, DOWN_AFTER);
    assert_eq!(changes.get("node-0"), Some(&NodeStatus::Ready));
}

#[test]
fn a_new_leader_gives_every_node_a_full_window() {
    let start = Instant::now();
    let mut state = HealthState::new(start);
    let nodes = vec![("never-heard".to_string(), NodeStatus::Ready, None)];
    assert!(plan_statuses(
        &mut state,
        &nodes,
        start + Duration::from_secs(2),
        DOWN_AFTER
    )
    .is_empty());
    let later = plan_statuses(
        &mut state,
        &nodes,
        start + Duration::from_secs(4),
        DOWN_AFTER,
    );
    assert_eq!(later.get("never-heard"), Some(&NodeStatus::Down));
}

#[test]
fn most_of_a_large_swarm_silent_at_once_is_held_back_then_believed() {
    let start = Instant::now();
    let mut state = HealthState::new(start);
    let now = start + Duration::from_secs(10);
    let nodes = swarm(100, 60, now, Duration::from_secs(4));
    assert!(
        plan_statuses(&mut state, &nodes, now, DOWN_AFTER).is_empty(),
        "60 of 100 silent at once: the leader suspects itself"
    );

    // Still silent a confirmation period later: they really are gone.
    let confirmed = now + DOWN_AFTER * MASS_SILENCE_CONFIRM;
    let nodes = swarm(
        100,
        60,
        confirmed,
        Duration::from_secs(4) + DOWN_AFTER * MASS_SILENCE_CONFIRM,
    );
    let changes = plan_statuses(&mut state, &nodes, confirmed, DOWN_AFTER);
    assert_eq!(
        changes.values().filter(|s| **s == NodeStatus::Down).count(),
        60
    );
}

#[test]
fn a_tenth_of_the_swarm_lost_goes_down_at_once() {
    let start = Instant::now();
    let mut state = HealthState::new(start);
    let now = start + Duration::from_secs(10);
    let nodes = swarm(1000, 100, now, Duration::from_secs(4));
    assert_eq!(
        plan_statuses(&mut state, &nodes, now, DOWN_AFTER).len(),
        100
    );
}

#[test]
fn in_a_small_swarm_most_nodes_silent_are_down_at_once() {
    let start = Instant::now();
    let mut state = HealthState::new(start);
    let now = start + Duration::from_secs(10);
    let nodes = swarm(3, 2, now, Duration::from_secs(4));
    assert_eq!(plan_statuses(&mut state, &nodes, now, DOWN_AFTER).len(), 2);
}

#[test]
fn a_leader_that_was_not_scheduled_restarts_every_window() {
    let start = Instant::now();
    let mut state = HealthState::new(start);
    let scheduled = start + Duration::from_secs(10);
    let woke = scheduled + Duration::from_secs(2);
    assert!(state.note_lateness(scheduled, woke, DOWN_AFTER).is_some());
    // Heard 4 s ago, but the leader slept through 2 of them: not down yet.
    let nodes = swarm(20, 1, woke, Duration::from_secs(4));
    assert!(plan_statuses(&mut state, &nodes, woke, DOWN_AFTER).is_empty());
    assert!(state
        .note_lateness(woke, woke + Duration::from_millis(30), DOWN_AFTER)
        .is_none());
}
