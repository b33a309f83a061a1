//! `shoal events` on a real 3+2 cluster: a follower of `-f type=service`
//! sees a service's create, update and remove in order; a task that exits
//! shows as failed with its exit code, and its node's own stream shows the
//! container's die with the same code; after the leader is killed,
//! `--since` on another manager replays the same events once each, and one
//! older than the history says so; bad input is one sentence.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::support::swarm::{Swarm, CONVERGE, MANAGERS, SLEEPER};
use crate::support::swarm_helpers::leader;
use crate::support::{wait_until, SHOAL};

/// The `shoal events --format json` lines of `host`, parsed.
fn events(swarm: &Swarm, host: &str, args: &[&str]) -> Vec<serde_json::Value> {
    let mut full = vec!["events", "--format", "json"];
    full.extend_from_slice(args);
    let out = swarm.cluster.shoal(host, &full).ok();
    out.stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"))).collect()
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string()
}

fn actions_of(events: &[serde_json::Value], name: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["Actor"]["Attributes"]["name"] == name)
        .map(|e| e["Action"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn events_follow_the_swarm_and_survive_a_leader_failover() {
    let swarm = Swarm::up("events");
    let start = now_rfc3339();

    // A follower, as a user runs it.
    let socket = format!("unix://{}", swarm.cluster.host("manager2").socket.display());
    let mut follower = Command::new(SHOAL)
        // From the test's start: whenever it connects, it misses nothing.
        .args(["-H", &socket, "events", "--format", "json", "-f", "type=service", "--since", &start])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (lines, seen) = mpsc::channel();
    let stdout = follower.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });

    swarm.create("web", &["--replicas", "1"], SLEEPER).ok();
    swarm.wait_running("web", 1);
    swarm.shoal(&["service", "scale", "web=2"]).ok();
    swarm.wait_running("web", 2);
    swarm.shoal(&["service", "rm", "web"]).ok();
    let mut followed = Vec::new();
    while followed.len() < 3 {
        let line = seen.recv_timeout(Duration::from_secs(20)).unwrap_or_else(|_| panic!("the follower saw only {followed:?}"));
        followed.push(serde_json::from_str::<serde_json::Value>(&line).unwrap());
    }
    let _ = follower.kill();
    let _ = follower.wait();
    assert_eq!(actions_of(&followed, "web"), vec!["create", "update", "remove"], "{followed:?}");
    assert!(followed[1]["Actor"]["Attributes"].as_object().unwrap().keys().any(|k| k.contains("replicas")), "the update says what changed: {}", followed[1]);
    assert!(followed.iter().all(|e| e["Type"] == "service" && e["scope"] == "swarm"));

    // A task that exits with 3: failed with its code; its node saw the container die.
    swarm
        .create("job", &["--detach", "--restart-condition", "none", "--constraint", "node.hostname==worker1"], &["sh", "-c", "sleep 1; exit 3"])
        .ok();
    let failed = wait_until(CONVERGE, "the job's task to fail", || {
        let found = events(&swarm, "manager1", &["--since", &start, "--until", &now_rfc3339(), "-f", "type=task", "-f", "event=failed"]);
        found.into_iter().find(|e| e["Actor"]["Attributes"]["service"] == "job")
    });
    assert_eq!(failed["Actor"]["Attributes"]["exit_code"], "3", "{failed}");
    let died = events(&swarm, "worker1", &["--since", &start, "--until", &now_rfc3339(), "-f", "event=die"]);
    assert!(died.iter().any(|e| e["Type"] == "container" && e["scope"] == "local" && e["Actor"]["Attributes"]["exitCode"] == "3"), "{died:?}");

    // Kill the leader; another manager replays the same history.
    let until = now_rfc3339();
    let before = events(&swarm, "manager2", &["--since", &start, "--until", &until, "-f", "type=service"]);
    let old_leader = leader(&swarm.cluster, &MANAGERS);
    swarm.cluster.stop(&old_leader, true);
    let others: Vec<&str> = MANAGERS.iter().copied().filter(|m| *m != old_leader).collect();
    let new_leader = leader(&swarm.cluster, &others);
    let after = events(&swarm, &new_leader, &["--since", &start, "--until", &until, "-f", "type=service"]);
    let ids = |events: &[serde_json::Value]| events.iter().map(|e| e["id"].as_str().unwrap_or_default().to_string()).collect::<Vec<_>>();
    assert_eq!(ids(&after), ids(&before), "the same events, once each, on every manager");
    assert_eq!(actions_of(&after, "web"), vec!["create", "update", "remove"]);
    let mut unique = ids(&after);
    unique.dedup();
    assert_eq!(unique.len(), after.len(), "no duplicates: {after:?}");
    let leaders = events(&swarm, &new_leader, &["--since", &start, "-f", "type=node", "-f", "event=leader", "--until", &now_rfc3339()]);
    assert!(!leaders.is_empty(), "the new leader's election is an event");

    // Older than kept: said, and what is kept still comes.
    let long_ago = swarm.cluster.shoal(&new_leader, &["events", "--format", "json", "--since", "2000-01-01T00:00:00Z", "--until", &until, "-f", "type=service"]).ok();
    assert!(long_ago.stderr.starts_with("warning: this manager keeps events from"), "{long_ago:?}");
    assert_eq!(long_ago.stdout.lines().count(), after.len(), "{long_ago:?}");

    // Bad input: one sentence each.
    for (args, named) in [
        (vec!["events", "-f", "colour=red"], "filter key \"colour\" is unknown"),
        (vec!["events", "--since", "yesterday-ish"], "--since \"yesterday-ish\" is not a time"),
        (vec!["events", "--format", "yaml"], "--format \"yaml\" is unknown"),
    ] {
        let out = swarm.cluster.shoal(&new_leader, &args);
        assert!(!out.success() && out.stderr.trim().lines().count() == 1 && out.stderr.contains(named), "{args:?}: {out:?}");
    }
}
