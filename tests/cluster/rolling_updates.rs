//! Rolling updates on a real 3-manager, 2-worker cluster, through the CLI:
//! batches bounded by `--update-parallelism`, automatic rollback of a
//! failing update that leaves the slots it never reached alone, and an
//! update that carries on across a leader failover.
//!
//! "Out of service" is read from task states, never from timing: a sampler
//! thread lists the tasks over and over while the update runs and counts
//! the slots with no running task that is wanted.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::support::swarm::{Swarm, TaskRow, CONVERGE, MANAGERS, SLEEPER};
use crate::support::{wait_until, Cluster};
use crate::swarm_helpers::leader;

/// Slots of a `replicas`-slot service with no running, wanted task.
fn slots_down(tasks: &[TaskRow], replicas: u64) -> usize {
    let serving: BTreeSet<u64> = tasks
        .iter()
        .filter(|t| t.desired_state == "running" && t.current_state.starts_with("running"))
        .filter_map(|t| slot_of(&t.name))
        .collect();
    (1..=replicas).filter(|s| !serving.contains(s)).count()
}

/// `web.3` -> 3.
fn slot_of(name: &str) -> Option<u64> {
    name.rsplit_once('.').and_then(|(_, slot)| slot.parse().ok())
}

/// Runs `during` while a second thread lists the service's tasks over and
/// over (from the first of `hosts` that answers: the leader may be down);
/// returns what `during` gave, the most slots ever seen out of service at
/// once, and how many listings were read.
fn sampling<T>(cluster: &Cluster, hosts: &[&str], service: &str, replicas: u64, during: impl FnOnce() -> T) -> (T, usize, usize) {
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let (mut worst, mut samples) = (0, 0);
            while !stop.load(Ordering::Relaxed) {
                for host in hosts {
                    let out = cluster.shoal(host, &["service", "ps", service, "--format", "json"]);
                    if out.success() {
                        let tasks: Vec<TaskRow> = out.stdout_json();
                        worst = worst.max(slots_down(&tasks, replicas));
                        samples += 1;
                        break;
                    }
                }
            }
            (worst, samples)
        });
        let value = during();
        stop.store(true, Ordering::Relaxed);
        let (worst, samples) = sampler.join().expect("the sampler thread");
        (value, worst, samples)
    })
}

fn inspect(swarm: &Swarm, host: &str, service: &str) -> serde_json::Value {
    let all: serde_json::Value = swarm.cluster.shoal(host, &["service", "inspect", service]).ok().stdout_json();
    all[0].clone()
}

#[test]
fn updates_roll_in_batches_and_a_failing_one_rolls_back_only_what_it_replaced() {
    let swarm = Swarm::up("roll");
    swarm.create("web", &["--replicas", "6", "--restart-delay", "0s"], SLEEPER).ok();
    swarm.wait_running("web", 6);
    let new_image = swarm.push_busybox_as("2");

    // Six replicas, two at a time, a second apart.
    let (update, worst, samples) = sampling(&swarm.cluster, &["manager1"], "web", 6, || {
        swarm.shoal(&["service", "update", "--image", &new_image, "--update-parallelism", "2", "--update-delay", "1s", "web"])
    });
    update.ok();
    assert!(samples >= 10, "the sampler saw the update ({samples} samples)");
    assert!(worst <= 2, "at most 2 slots out of service at once, saw {worst}");
    let running = swarm.wait_running("web", 6);
    assert!(running.iter().all(|t| t.image.contains("busybox:2@") && t.spec_version == 2), "{running:?}");
    let status = &inspect(&swarm, "manager1", "web")["update_status"];
    assert_eq!(status["state"], "completed", "{status}");

    // A new spec whose tasks exit at once, rolled back on failure.
    let before: BTreeMap<u64, String> = running.iter().map(|t| (slot_of(&t.name).unwrap(), t.id.clone())).collect();
    let failing = swarm.shoal(&[
        "service", "update", "--args", "sh -c 'exit 3'", "--update-parallelism", "2", "--update-failure-action", "rollback", "web",
    ]);
    assert!(!failing.success(), "an update that was rolled back is not a success: {failing:?}");
    assert!(failing.stderr.contains("update rolled back due to failure or early termination of task"), "{}", failing.stderr);
    let status = &inspect(&swarm, "manager1", "web")["update_status"];
    assert_eq!(status["state"], "rollback_completed", "{status}");
    let after = swarm.wait_running("web", 6);
    assert!(after.iter().all(|t| t.image.contains("busybox:2@")), "{after:?}");
    let spec = inspect(&swarm, "manager1", "web");
    assert_eq!(spec["spec"]["task"]["args"], serde_json::json!(SLEEPER), "{spec}");
    // Spec version 3 was the failing update: it reached one batch of slots.
    let tried: Vec<TaskRow> = swarm.ps("web").into_iter().filter(|t| t.spec_version == 3).collect();
    let tried_slots: BTreeSet<u64> = tried.iter().filter_map(|t| slot_of(&t.name)).collect();
    assert_eq!(tried_slots.len(), 2, "the update stopped after its first batch: {tried:?}");
    assert!(tried.iter().any(|t| t.current_state.starts_with("failed")), "{tried:?}");
    let kept: Vec<u64> = after.iter().filter(|t| before.get(&slot_of(&t.name).unwrap()) == Some(&t.id)).filter_map(|t| slot_of(&t.name)).collect();
    assert_eq!(kept.len(), 4, "the four slots the update never reached kept their tasks: {after:?}");
    assert!(kept.iter().all(|s| !tried_slots.contains(s)));

    // A health check that never passes: the new tasks stay starting, count
    // as failed at the healthy deadline, and the update pauses, saying why.
    let never = swarm.shoal(&[
        "service", "update", "--health-cmd", "false", "--health-interval", "200ms", "--health-retries", "1000",
        "--update-healthy-deadline", "2s", "--update-failure-action", "pause", "web",
    ]);
    assert!(!never.success(), "a paused update is not a success: {never:?}");
    assert!(never.stderr.contains("update paused due to failure or early termination of task"), "{}", never.stderr);
    let status = &inspect(&swarm, "manager1", "web")["update_status"];
    assert_eq!(status["state"], "paused", "{status}");
    assert!(status["message"].as_str().is_some_and(|m| m.contains("not running and healthy 2s after it was made")), "{status}");
    // `service update --rollback` brings the old spec back.
    swarm.shoal(&["service", "update", "--rollback", "web"]).ok();
    assert!(inspect(&swarm, "manager1", "web")["spec"]["task"]["healthcheck"].is_null());
    let back = swarm.wait_running("web", 6);
    assert!(back.iter().all(|t| t.image.contains("busybox:2@")), "{back:?}");

    // Bad input: one sentence each, nothing written.
    let version = inspect(&swarm, "manager1", "web")["version"].clone();
    for (args, names) in [
        (vec!["--update-parallelism", "-1"], "--update-parallelism \"-1\""),
        (vec!["--update-max-failure-ratio", "2"], "--update-max-failure-ratio \"2\""),
        (vec!["--update-failure-action", "explode"], "--update-failure-action \"explode\""),
        (vec!["--update-order", "sideways"], "--update-order \"sideways\""),
        (vec!["--health-retries", "0"], "--health-retries \"0\""),
    ] {
        let mut full = vec!["service", "update"];
        full.extend(args);
        full.push("web");
        let out = swarm.shoal(&full);
        assert!(!out.success() && out.stderr.contains(names) && out.stderr.trim().lines().count() == 1, "{out:?}");
    }
    swarm.create("fresh", &["--detach"], SLEEPER).ok();
    let out = swarm.shoal(&["service", "rollback", "fresh"]);
    assert!(!out.success() && out.stderr.contains("service fresh has no previous spec to roll back to"), "{out:?}");
    assert_eq!(inspect(&swarm, "manager1", "web")["version"], version, "refused updates wrote nothing");
}

#[test]
fn an_update_carries_on_across_a_leader_failover() {
    let swarm = Swarm::up("rollfo");
    // On the workers only: losing the leader's node takes no task with it.
    swarm.create("web", &["--replicas", "6", "--constraint", "node.role==worker"], SLEEPER).ok();
    swarm.wait_running("web", 6);
    let new_image = swarm.push_busybox_as("2");
    let (done, worst, _) = sampling(&swarm.cluster, &MANAGERS, "web", 6, || {
        swarm.shoal(&["service", "update", "--detach", "--image", &new_image, "--update-delay", "1s", "web"]).ok();
        // The first slot is done: cut the leader off mid-update.
        wait_until(CONVERGE, "the first updated task to run", || {
            swarm.running("web").iter().any(|t| t.spec_version == 2).then_some(())
        });
        let old_leader = leader(&swarm.cluster, &MANAGERS);
        swarm.cluster.stop(&old_leader, true);
        let others: Vec<&str> = MANAGERS.iter().copied().filter(|m| *m != old_leader).collect();
        let new_leader = leader(&swarm.cluster, &others);
        let service = wait_until(CONVERGE, "the update to complete under the new leader", || {
            let service = inspect(&swarm, &new_leader, "web");
            (service["update_status"]["state"] == "completed").then_some(service)
        });
        (old_leader, new_leader, service)
    });
    let (old_leader, new_leader, done) = done;
    assert!(worst <= 1, "at most one slot out of service at once across the failover, saw {worst}");
    let tasks: Vec<TaskRow> = swarm.cluster.shoal(&new_leader, &["service", "ps", "web", "--format", "json"]).ok().stdout_json();
    let running: Vec<&TaskRow> = tasks.iter().filter(|t| t.desired_state == "running" && t.current_state.starts_with("running")).collect();
    assert_eq!(running.len(), 6, "{tasks:?}");
    assert!(running.iter().all(|t| t.spec_version == 2), "{done}");
    swarm.cluster.start(&old_leader);
}

/// A busybox web server whose page is its hostname; unlike plain `httpd
/// -f` as PID 1, it stops on SIGTERM.
const SERVER: &[&str] = &[
    "sh",
    "-c",
    "mkdir -p /www && hostname > /www/index.html && httpd -p 80 -h /www && trap 'exit 0' TERM; while true; do sleep 1; done",
];

/// The id of `task`'s container, from its node's daemon.
fn container_of(swarm: &Swarm, task: &TaskRow) -> String {
    let containers: Vec<serde_json::Value> = swarm.cluster.shoal(&task.node, &["container", "ls", "--format", "json"]).ok().stdout_json();
    containers
        .iter()
        .find(|c| c["labels"]["shoal.task.id"] == task.id.as_str())
        .and_then(|c| c["id"].as_str())
        .unwrap_or_else(|| panic!("no container for {} on {}", task.name, task.node))
        .to_string()
}

#[test]
fn a_start_first_update_behind_the_vip_fails_no_request_and_health_gates_tasks() {
    let swarm = Swarm::up("rvip");
    swarm.shoal(&["network", "create", "-d", "overlay", "appnet"]).ok();
    let health = ["--health-cmd", "wget -q -O /dev/null http://127.0.0.1/", "--health-interval", "300ms"];
    let mut flags = vec!["--replicas", "3", "--network", "appnet", "--update-order", "start-first", "--restart-delay", "0s"];
    flags.extend(health);
    swarm.create("web", &flags, SERVER).ok();
    swarm.create("client", &["--network", "appnet"], crate::support::swarm::SLEEPER).ok();
    let client = crate::routing_mesh::netns_of(&swarm, &swarm.running("client")[0]);
    let vip = crate::routing_mesh::vip(&swarm, "appnet", "web");
    let url = format!("http://{vip}/");
    assert!(crate::routing_mesh::curl(Some(&client), &url, "3").is_some(), "the VIP answers before the update");

    // A client requests through the VIP, one request after another, for the
    // whole update; every request must be answered.
    let stop = AtomicBool::new(false);
    let (update, (answered, failed)) = std::thread::scope(|scope| {
        let hammer = scope.spawn(|| {
            let (mut answered, mut failed) = (0u32, Vec::new());
            let began = Instant::now();
            let net = format!("--net={client}");
            while !stop.load(Ordering::Relaxed) {
                // curl in the client task's network namespace, to the VIP.
                let out = crate::support::run("nsenter", &[&net, "curl", "-sS", "--connect-timeout", "2", "-m", "2", &url], Duration::from_secs(5));
                match out.success() {
                    true => answered += 1,
                    false => failed.push(format!("after {:?}: {}", began.elapsed(), out.stderr.trim())),
                }
            }
            (answered, failed)
        });
        let update = swarm.shoal(&["service", "update", "--env-add", "VERSION=2", "web"]);
        stop.store(true, Ordering::Relaxed);
        (update, hammer.join().expect("the client thread"))
    });
    update.ok();
    assert!(answered >= 20, "the client kept asking during the update ({answered} answers)");
    assert!(
        failed.is_empty(),
        "{} of {} requests failed during a start-first update: {failed:?}; tasks: {:#?}",
        failed.len(),
        answered as usize + failed.len(),
        swarm.ps("web")
    );
    let running = swarm.wait_running("web", 3);
    assert!(running.iter().all(|t| t.spec_version == 2), "{running:?}");

    // Health, with an image whose HEALTHCHECK passes once /tmp/healthy
    // exists: a task stays starting until its check passes...
    let probed_image = swarm.push_healthcheck_image();
    let with = |name: &'static str, flags: &[&'static str]| {
        let mut args = vec!["service", "create", "--name", name];
        args.extend_from_slice(flags);
        args.push(&probed_image);
        args.extend_from_slice(crate::support::swarm::SLEEPER);
        swarm.shoal(&args)
    };
    with("probed", &["--detach", "--health-start-period", "4s", "--restart-delay", "0s"]).ok();
    let task = wait_until(CONVERGE, "probed's container to start", || {
        swarm.ps("probed").into_iter().find(|t| t.desired_state == "running" && t.current_state.starts_with("starting"))
    });
    let watched_until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < watched_until {
        assert!(swarm.running("probed").is_empty(), "a task whose check has not passed is not running");
        std::thread::sleep(Duration::from_millis(200));
    }
    let container = container_of(&swarm, &task);
    swarm.cluster.shoal(&task.node, &["exec", &container, "touch", "/tmp/healthy"]).ok();
    wait_until(CONVERGE, "probed to run once healthy", || swarm.running("probed").into_iter().find(|t| t.id == task.id));
    let ls = swarm.cluster.shoal(&task.node, &["container", "ls"]).ok().stdout;
    assert!(ls.contains("(healthy)"), "{ls}");
    // ...and is replaced when it turns unhealthy (after its start period).
    swarm.cluster.shoal(&task.node, &["exec", &container, "rm", "/tmp/healthy"]).ok();
    let failed = wait_until(CONVERGE, "the unhealthy task to fail", || {
        swarm.ps("probed").into_iter().find(|t| t.id == task.id && t.current_state.starts_with("failed"))
    });
    assert!(failed.error.contains("unhealthy"), "{failed:?}");
    wait_until(CONVERGE, "a replacement task", || {
        swarm.ps("probed").into_iter().find(|t| t.id != task.id && t.desired_state == "running")
    });
    // --no-healthcheck turns the image's check off: it runs without /tmp/healthy.
    with("unprobed", &["--no-healthcheck"]).ok();
    assert_eq!(swarm.running("unprobed").len(), 1);
}
