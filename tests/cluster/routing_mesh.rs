//! Service VIPs and published ports on a real 3-manager, 2-worker cluster:
//! a VIP balances over the running tasks on every node and follows scale
//! and node loss at once; `-p` answers on every node through the routing
//! mesh, and only where a task runs in host mode. Requests are sent with
//! curl from the host, inside a task's network namespace (nsenter) or from
//! the root namespace, where the hosts' underlay addresses are reachable.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};


use crate::support::swarm::{Swarm, TaskRow, MANAGERS};
use crate::support::{run, wait_until, Output};
use crate::swarm_helpers::{leader, node_ls};

/// A busybox web server whose page is its hostname, so a reply names the
/// task that answered.
const SERVER: &[&str] = &["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www"];
const SLEEPER: &[&str] = &["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"];

/// The network namespace of `task`'s container, from its node's daemon.
pub(crate) fn netns_of(swarm: &Swarm, task: &TaskRow) -> String {
    let containers: Vec<serde_json::Value> = swarm.cluster.shoal(&task.node, &["container", "ls", "--format", "json"]).ok().stdout_json();
    let id = containers
        .iter()
        .find(|c| c["labels"]["shoal.task.id"] == task.id.as_str())
        .and_then(|c| c["id"].as_str())
        .unwrap_or_else(|| panic!("no container for {} on {}", task.name, task.node))
        .to_string();
    let inspect: serde_json::Value = swarm.cluster.shoal(&task.node, &["container", "inspect", &id]).ok().stdout_json();
    let pid = inspect[0]["state"]["pid"].as_i64().unwrap_or_else(|| panic!("container {id} has no pid"));
    format!("/proc/{pid}/ns/net")
}

/// curl `url` inside namespace `netns` (`None`: the root namespace): the
/// page, or `None` when the exchange failed. In a task's namespace
/// (`/proc/PID/ns/net`) names resolve as the task resolves them: curl runs
/// in a private mount namespace where a copy of the task's /etc/resolv.conf
/// (the embedded DNS at 127.0.0.11) lies over the host's (a copy: the
/// task's own file is a mount in another mount namespace).
pub(crate) fn curl(netns: Option<&str>, url: &str, timeout_s: &str) -> Option<String> {
    let out: Output = match netns {
        Some(netns) => {
            let root = netns.strip_suffix("/ns/net").expect("a /proc/PID/ns/net path");
            let script = format!(
                "copy=$(mktemp) && cat {root}/root/etc/resolv.conf > $copy && mount --bind $copy /etc/resolv.conf && rm $copy && exec nsenter --net={netns} curl -sf --connect-timeout {timeout_s} -m {timeout_s} {url}"
            );
            run("unshare", &["--mount", "--propagation", "private", "sh", "-c", &script], Duration::from_secs(5))
        }
        None => run("curl", &["-sf", "--connect-timeout", timeout_s, "-m", timeout_s, url], Duration::from_secs(5)),
    };
    out.success().then(|| out.stdout.trim().to_string())
}

/// The service's VIP on `network`, from `network inspect`.
pub(crate) fn vip(swarm: &Swarm, network: &str, service: &str) -> Ipv4Addr {
    let inspect: serde_json::Value = swarm.shoal(&["network", "inspect", network]).ok().stdout_json();
    inspect[0]["attachments"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["kind"] == "vip" && a["name"] == service)
        .and_then(|a| a["address"].as_str())
        .and_then(|a| a.split('/').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("{service} has no VIP on {network}: {inspect}"))
}

/// Each task's page, fetched from its own address by `client`.
fn pages(client: &str, tasks: &[TaskRow], network: &str) -> BTreeMap<String, String> {
    tasks
        .iter()
        .map(|t| {
            let page = curl(Some(client), &format!("http://{}/", t.address_on(network)), "3").unwrap_or_else(|| panic!("{} does not answer directly", t.name));
            (page, t.id.clone())
        })
        .collect()
}

#[test]
fn a_vip_balances_over_running_tasks_and_follows_scale_and_node_loss() {
    let swarm = Swarm::up("vip");
    swarm.shoal(&["network", "create", "-d", "overlay", "front"]).ok();
    swarm.create("client", &["--network", "front", "--constraint", "node.hostname==worker2"], SLEEPER).ok();
    swarm.create("web", &["--replicas", "3", "--replicas-max-per-node", "1", "--network", "front", "--constraint", "node.hostname!=worker2"], SERVER).ok();
    let client_task = swarm.wait_running("client", 1).remove(0);
    let client = netns_of(&swarm, &client_task);
    let web = swarm.wait_running("web", 3);
    let by_page = pages(&client, &web, "front");
    assert_eq!(by_page.len(), 3, "three tasks, three pages: {by_page:?}");
    let vip = vip(&swarm, "front", "web");
    // By name: the client's resolver asks the embedded DNS, which gives
    // the VIP.
    let url = "http://web/".to_string();

    // Round robin per node: 12 requests reach all three tasks, on other nodes.
    let mut hits: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..12 {
        let page = curl(Some(&client), &url, "3").unwrap_or_else(|| panic!("web (VIP {vip}) did not answer"));
        assert!(by_page.contains_key(&page), "{page} is none of web's tasks");
        *hits.entry(page).or_default() += 1;
    }
    assert_eq!(hits.len(), 3, "every task answered: {hits:?}");
    // Any port: the tasks' httpd listens on 80 only, and a closed port
    // of the backend answers for itself (refused, not a timeout).
    let started = Instant::now();
    assert!(curl(Some(&client), &format!("http://{vip}:81/"), "3").is_none());
    assert!(started.elapsed() < Duration::from_secs(2), "port 81 refused at once");

    // Scale 3 -> 1: within 1 s the VIP sends nothing to the removed tasks.
    swarm.shoal(&["service", "scale", "--detach", "web=1"]).ok();
    let scaled = Instant::now();
    let survivor = wait_until(Duration::from_secs(5), "one wanted task of web", || {
        let wanted: Vec<TaskRow> = swarm.ps("web").into_iter().filter(|t| t.desired_state == "running").collect();
        (wanted.len() == 1).then(|| wanted[0].id.clone())
    });
    let mut last_removed = None;
    while scaled.elapsed() < Duration::from_secs(1) {
        if let Some(page) = curl(Some(&client), &url, "1") {
            if by_page.get(&page) != Some(&survivor) {
                last_removed = Some(scaled.elapsed());
            }
        }
    }
    eprintln!("after scale 3 -> 1 a removed task last answered the VIP at {last_removed:?}");
    for _ in 0..10 {
        let page = curl(Some(&client), &url, "2");
        assert_eq!(page.as_ref().and_then(|p| by_page.get(p)), Some(&survivor), "1 s after the scale only the survivor answers");
    }

    // Kill -9 and cut off a node holding a task (not the leader, so no
    // failover is measured here): once the managers call it down, within
    // 2 s connections succeed again and never reach its task.
    swarm.shoal(&["service", "scale", "--detach", "web=3"]).ok();
    let web = swarm.wait_running("web", 3);
    let by_page = pages(&client, &web, "front");
    let leader = leader(&swarm.cluster, &MANAGERS);
    let lost = web.iter().find(|t| t.node != leader).expect("a task off the leader").clone();
    let lost_page = by_page.iter().find(|(_, id)| **id == lost.id).map(|(p, _)| p.clone()).expect("the lost task's page");
    swarm.cluster.stop(&lost.node, true);
    swarm.cluster.partition(&lost.node);
    let killed = Instant::now();
    let mut down_at = None;
    // When the current run of good answers began: with round robin, every
    // third connection went to the lost task while it was a backend, so a
    // run of 10 starts when it left.
    let (mut streak, mut streak_start) = (0, Duration::ZERO);
    // And when the client's DNS gave only the live tasks: exactly the
    // running tasks off the lost node (a replacement may get the lost
    // task's address again, so "the address is gone" would not do).
    let mut dns_dropped_at = None;
    // The VIP itself from here: what is measured is the balancing, not the
    // name lookup in front of it.
    let url = format!("http://{vip}/");
    while streak < 10 || down_at.is_none() || dns_dropped_at.is_none() {
        if dns_dropped_at.is_none() && down_at.is_some() {
            let live: BTreeSet<String> = swarm.ps("web")
                .iter()
                .filter(|t| t.node != lost.node && t.desired_state == "running" && t.current_state.starts_with("running"))
                .map(|t| t.address_on("front").to_string())
                .collect();
            let net = format!("--net={client}");
            let dug = run("nsenter", &[&net, "dig", "@127.0.0.11", "+short", "+tries=1", "+time=1", "tasks.web"], Duration::from_secs(3));
            let answered: BTreeSet<String> = dug.stdout.lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect();
            if dug.success() && answered == live {
                dns_dropped_at = Some(killed.elapsed());
            }
        }
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "the VIP or DNS did not recover from losing {}: node down at {down_at:?}, good answers in a row {streak}, DNS dropped it at {dns_dropped_at:?}",
            lost.node
        );
        if down_at.is_none() && node_ls(&swarm.cluster, &leader).is_some_and(|nodes| nodes.iter().any(|n| n.hostname == lost.node && n.status == "down")) {
            down_at = Some(killed.elapsed());
        }
        match curl(Some(&client), &url, "0.5") {
            // A replacement task may answer too (its page is new).
            Some(page) if page != lost_page && !page.is_empty() => {
                if streak == 0 {
                    streak_start = killed.elapsed();
                }
                streak += 1;
            }
            _ => streak = 0,
        }
    }
    let down = down_at.expect("the node was seen down");
    let recovered = streak_start.saturating_sub(down);
    eprintln!("node {} down {down:?} after the kill; the VIP answered only live tasks {recovered:?} after that ({streak_start:?} after the kill)", lost.node);
    assert!(recovered <= Duration::from_secs(2), "the VIP recovered {recovered:?} after the node went down");
    let dns_dropped = dns_dropped_at.expect("DNS dropped the lost task").saturating_sub(down);
    eprintln!("tasks.web dropped the lost task {dns_dropped:?} after the node went down");
    assert!(dns_dropped <= Duration::from_secs(2), "DNS still gave the lost task {dns_dropped:?} after the node went down");
}

#[test]
fn published_ports_answer_on_every_node_and_host_mode_only_where_tasks_run() {
    let swarm = Swarm::up("mesh");
    swarm.create("web", &["-p", "8080:80", "--constraint", "node.hostname==worker1"], SERVER).ok();
    let task = swarm.wait_running("web", 1).remove(0);
    assert_eq!(task.node, "worker1");
    let page = |host: &str, port: u16, timeout: &str| curl(None, &format!("http://{}:{port}/", swarm.cluster.addr(host)), timeout);

    // worker2 runs no task of web, and answers with its page; so does
    // every other node.
    let worker2 = wait_until(Duration::from_secs(5), "worker2:8080 to answer", || page("worker2", 8080, "2"));
    assert!(!worker2.is_empty());
    for host in crate::support::swarm::HOSTS {
        assert_eq!(page(host, 8080, "2").as_deref(), Some(worker2.as_str()), "{host}:8080");
    }

    // Host mode: only the node running the task answers.
    swarm.shoal(&["network", "create", "-d", "overlay", "hostnet"]).ok();
    swarm.create("local", &["--network", "hostnet", "-p", "published=8090,target=80,mode=host", "--constraint", "node.hostname==worker1"], SERVER).ok();
    let local = swarm.wait_running("local", 1).remove(0);
    let expected = wait_until(Duration::from_secs(5), "worker1:8090 to answer", || page("worker1", 8090, "2"));
    assert_ne!(expected, worker2, "a different task");
    for host in ["worker2", "manager1"] {
        assert_eq!(page(host, 8090, "2"), None, "{host} runs no task of local, so 8090 is closed there");
    }
    drop(local);

    // Bad input: one sentence naming the value, nothing written.
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["service", "create", "--detach", "--name", "bad1", "-p", "70000:80", &swarm.image], "70000"),
        (vec!["service", "create", "--detach", "--name", "bad2", "-p", "8080:80", &swarm.image], "web"),
        (vec!["service", "create", "--detach", "--name", "bad3", "-p", "8085:80/sctp", &swarm.image], "sctp"),
        (vec!["service", "create", "--detach", "--name", "bad4", "--endpoint-mode", "dnsrr", "-p", "8086:80", &swarm.image], "dnsrr"),
        (vec!["service", "create", "--detach", "--name", "bad5", "--network", "name=hostnet,alias=no!label", &swarm.image], "no!label"),
    ];
    for (args, named) in &cases {
        let out = swarm.shoal(args);
        assert!(!out.success(), "`{}` should fail", args.join(" "));
        let message = out.stderr.trim();
        assert!(message.contains(named), "`{}`: {message:?} should name {named:?}", args.join(" "));
        assert_eq!(message.lines().count(), 1, "one sentence: {message:?}");
    }
    let listed: BTreeSet<String> = swarm.shoal(&["service", "ls", "--format", "json"]).ok().stdout_json::<Vec<serde_json::Value>>().iter().filter_map(|s| s["name"].as_str().map(str::to_string)).collect();
    assert_eq!(listed, ["local", "web"].iter().map(|s| s.to_string()).collect(), "nothing was written");
}
