//! Services on a real 3-manager, 2-worker cluster: real daemons in network
//! namespaces, pulling from a real registry on the underlay bridge, running
//! real containers. Everything goes through the `shoal` CLI.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::support::swarm::{Swarm, TaskRow, CONVERGE, HOSTS, MANAGERS, SLEEPER};
use crate::support::wait_until;
use crate::swarm_helpers::leader;

#[test]
fn a_replicated_service_spreads_scales_drains_and_leaves_nothing() {
    let swarm = Swarm::up("svc");
    // Without --detach, create returns once the service has converged.
    swarm.create("web", &["--replicas", "3"], SLEEPER).ok();
    let tasks = swarm.running("web");
    assert_eq!(tasks.len(), 3, "{tasks:?}");
    let nodes: BTreeSet<&str> = tasks.iter().map(|t| t.node.as_str()).collect();
    assert_eq!(nodes.len(), 3, "three replicas on three nodes: {tasks:?}");
    for task in &tasks {
        let containers = swarm.service_containers(&task.node, "web");
        assert!(
            containers.iter().any(|c| c.labels.get("shoal.task.id") == Some(&task.id) && c.state == "running"),
            "`container ls` on {} shows task {}: {containers:?}",
            task.node,
            task.name
        );
    }
    let ls = swarm.shoal(&["service", "ls"]).ok().stdout;
    assert!(ls.contains("web") && ls.contains("3/3"), "{ls}");
    // Pinned at create: a digest every node runs, and the platform the scheduler filters on.
    let inspect: serde_json::Value = swarm.shoal(&["service", "inspect", "web"]).ok().stdout_json();
    let spec = &inspect[0]["spec"];
    assert!(spec["task"]["image"].as_str().is_some_and(|i| i.contains("@sha256:")), "{inspect}");
    assert_eq!(spec["placement"]["platforms"], serde_json::json!(["linux/amd64"]), "{inspect}");

    swarm.shoal(&["service", "scale", "web=10"]).ok();
    let ten = swarm.wait_running("web", 10);
    let slots: BTreeSet<&str> = ten.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(slots.len(), 10, "ten distinct slots: {ten:?}");
    swarm.shoal(&["service", "scale", "web=2"]).ok();
    swarm.wait_running("web", 2);
    wait_until(CONVERGE, "scaled-down containers to go", || (swarm.running_containers("web") == 2).then_some(()));

    // Drain moves tasks off a node.
    let drained = swarm.running("web")[0].node.clone();
    swarm.shoal(&["node", "update", "--availability", "drain", &drained]).ok();
    wait_until(CONVERGE, "tasks to leave the drained node", || {
        let running = swarm.running("web");
        (running.len() == 2 && running.iter().all(|t| t.node != drained)).then_some(())
    });
    swarm.shoal(&["node", "update", "--availability", "active", &drained]).ok();

    // A node label pins tasks; an unsatisfiable constraint leaves them pending, with the reason.
    swarm.shoal(&["node", "update", "--label-add", "zone=blue", "worker2"]).ok();
    swarm.create("pinned", &["--replicas", "2", "--constraint", "node.labels.zone==blue"], SLEEPER).ok();
    assert!(swarm.running("pinned").iter().all(|t| t.node == "worker2"));
    swarm.create("nowhere", &["--detach", "--constraint", "node.labels.zone==mars"], SLEEPER).ok();
    let pending = wait_until(CONVERGE, "the pending reason", || {
        swarm.ps("nowhere").into_iter().find(|t| t.current_state.starts_with("pending") && !t.error.is_empty())
    });
    assert!(pending.error.contains("no suitable node") && pending.error.contains("node.labels.zone==mars"), "{pending:?}");

    for service in ["web", "pinned", "nowhere"] {
        swarm.shoal(&["service", "rm", service]).ok();
    }
    wait_until(CONVERGE, "every service container to be removed", || {
        HOSTS.iter().all(|h| swarm.containers(h).is_empty()).then_some(())
    });
    assert!(swarm.shoal(&["service", "ls", "-q"]).ok().lines().is_empty());
}

#[test]
fn tasks_of_a_lost_worker_move_and_its_stale_containers_are_removed() {
    let swarm = Swarm::up("lost");
    // Spread puts one replica on each of the five nodes.
    swarm.create("web", &["--replicas", "5"], SLEEPER).ok();
    let before = swarm.running("web");
    assert!(before.iter().any(|t| t.node == "worker2"), "{before:?}");

    // A crash and a cut link: the managers hear nothing more from worker2.
    // Its containers keep running under their shims.
    let lost_at = Instant::now();
    swarm.cluster.stop("worker2", true);
    swarm.cluster.partition("worker2");
    wait_until(Duration::from_secs(15), "worker2's task to run elsewhere", || {
        let running = swarm.running("web");
        (running.len() == 5 && running.iter().all(|t| t.node != "worker2")).then_some(())
    });
    let moved_in = lost_at.elapsed();
    eprintln!("tasks of the lost worker ran elsewhere after {moved_in:?}");
    assert!(moved_in < Duration::from_secs(5), "took {moved_in:?}");

    swarm.cluster.heal("worker2");
    swarm.cluster.start("worker2");
    wait_until(CONVERGE, "worker2's stale containers to be removed", || {
        swarm.service_containers("worker2", "web").is_empty().then_some(())
    });
    assert_eq!(swarm.running("web").len(), 5);
}

#[test]
fn restart_policies_and_missing_images() {
    let swarm = Swarm::up("rst");
    let flags = ["--detach", "--restart-condition", "on-failure", "--restart-max-attempts", "2", "--restart-delay", "1s"];
    swarm.create("crash", &flags, &["sh", "-c", "echo crashing in $(hostname); exit 3"]).ok();
    let failed = wait_until(CONVERGE, "three failed attempts", || {
        let tasks = swarm.ps("crash");
        (tasks.iter().filter(|t| t.current_state.starts_with("failed")).count() == 3).then_some(tasks)
    });
    assert!(failed.iter().all(|t| t.error.contains("non-zero exit (3)")), "{failed:?}");
    // Max attempts respected: nothing more is started.
    std::thread::sleep(Duration::from_secs(3));
    let tasks = swarm.ps("crash");
    assert_eq!(tasks.len(), 3, "no fourth attempt: {tasks:?}");
    assert!(tasks.iter().all(|t| t.desired_state == "shutdown"), "{tasks:?}");
    // Ended tasks keep their stopped containers, so their logs say why
    // they crashed: one line per attempt, each prefixed with its task.
    let logs = swarm.shoal(&["service", "logs", "crash"]).ok().stdout;
    let lines: Vec<&str> = logs.lines().filter(|l| l.contains("crashing in")).collect();
    assert_eq!(lines.len(), 3, "{logs}");
    assert!(lines.iter().all(|l| l.starts_with("crash.1.")), "{logs}");

    // The delay is honoured: each attempt fails (at once) at least 1 s
    // after the one before it.
    let mut failed_at: Vec<std::time::SystemTime> = tasks
        .iter()
        .map(|t| humantime::parse_rfc3339(&t.state_changed_at).unwrap_or_else(|e| panic!("{t:?}: {e}")))
        .collect();
    failed_at.sort();
    for pair in failed_at.windows(2) {
        let gap = pair[1].duration_since(pair[0]).unwrap_or_default();
        assert!(gap >= Duration::from_millis(1000), "attempts {gap:?} apart: {tasks:?}");
    }

    // A missing image: rejected with the registry's error, retried with back-off.
    let missing = swarm.image.replace("busybox:1", "nothing-here:1");
    swarm.shoal(&["service", "create", "--detach", "--name", "ghost", &missing]).ok();
    let rejected = wait_until(CONVERGE, "a rejected task", || {
        swarm.ps("ghost").into_iter().find(|t| t.current_state.starts_with("rejected"))
    });
    assert!(rejected.error.contains("nothing-here"), "the error names the image: {rejected:?}");
    std::thread::sleep(Duration::from_secs(6));
    let attempts = swarm.ps("ghost").len();
    assert!(attempts <= 4, "back-off, not a tight loop: {attempts} attempts in ~6 s");
}

#[test]
fn a_global_service_runs_on_every_node_including_one_that_joins() {
    let swarm = Swarm::up("glob");
    swarm.create("agent", &["--mode", "global"], SLEEPER).ok();
    let tasks = swarm.wait_running("agent", 5);
    let nodes: BTreeSet<&str> = tasks.iter().map(|t| t.node.as_str()).collect();
    assert_eq!(nodes.len(), 5, "{tasks:?}");
    let joined = swarm.cluster.add_worker();
    let tasks = swarm.wait_running("agent", 6);
    assert!(tasks.iter().any(|t| t.node == joined.name), "{tasks:?}");
}

#[test]
fn leader_failover_during_a_scale_to_50_ends_with_exactly_50() {
    let swarm = Swarm::up("fo50");
    swarm.create("many", &["--replicas", "2"], SLEEPER).ok();
    let old_leader = leader(&swarm.cluster, &MANAGERS);
    let survivor = MANAGERS.iter().find(|m| **m != old_leader).copied().unwrap_or("manager1");
    swarm.cluster.shoal(survivor, &["service", "scale", "--detach", "many=50"]).ok();
    swarm.cluster.stop(&old_leader, true);
    let ps = |host: &str| -> Vec<TaskRow> {
        let out = swarm.cluster.shoal(host, &["service", "ps", "many", "--format", "json"]);
        if out.success() { out.stdout_json() } else { Vec::new() }
    };
    let running = wait_until(Duration::from_secs(120), "50 running tasks after the failover", || {
        let tasks = ps(survivor);
        let running: Vec<TaskRow> = tasks
            .into_iter()
            .filter(|t| t.desired_state == "running" && t.current_state.starts_with("running"))
            .collect();
        (running.len() == 50).then_some(running)
    });
    let slots: BTreeSet<&str> = running.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(slots.len(), 50, "one task per slot, none duplicated");
    // The old leader's containers are still running (its daemon was killed);
    // count containers on the live hosts only.
    let live = HOSTS.iter().filter(|h| **h != old_leader);
    let containers: usize = live
        .map(|h| swarm.service_containers(h, "many").iter().filter(|c| c.state == "running").count())
        .sum();
    let on_old_leader = running.iter().filter(|t| t.node == old_leader).count();
    assert_eq!(containers + on_old_leader, 50, "exactly 50 containers run");
}

#[test]
fn bad_service_input_is_one_sentence_and_writes_nothing() {
    let swarm = Swarm::up("badsvc");
    swarm.create("dup", &["--detach"], SLEEPER).ok();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["service", "create", "--detach", "--name", "dup", &swarm.image], "dup"),
        (vec!["service", "ps", "no-such-service"], "no-such-service"),
        (vec!["service", "create", "--detach", "--name", "c1", "--constraint", "node.labels.zone=a", &swarm.image], "node.labels.zone=a"),
        (vec!["service", "create", "--detach", "--name", "c2", "--replicas", "-1", &swarm.image], "-1"),
        (vec!["service", "create", "--detach", "--name", "c3", "--replicas", "lots", &swarm.image], "lots"),
        (vec!["service", "create", "--detach", "--name", "c4", "--replicas", "2", "--mode", "global", &swarm.image], "global"),
        (vec!["service", "create", "--detach", "--name", "c5", "--reserve-memory", "100t", &swarm.image], "memory"),
    ];
    for (args, named) in cases {
        let out = swarm.shoal(&args);
        assert!(!out.success(), "`{}` should fail", args.join(" "));
        let message = out.stderr.trim();
        assert!(message.contains(named), "`{}`: {message:?} should name {named:?}", args.join(" "));
        assert_eq!(message.lines().count(), 1, "one sentence: {message:?}");
    }
    let names = swarm.shoal(&["service", "ls", "--format", "json"]).ok().stdout;
    assert!(!names.contains("\"c1\"") && !names.contains("\"c5\"") && names.contains("\"dup\""), "{names}");
}
