//! Prometheus metrics on a real 3+2 cluster: every node's /metrics passes
//! `promtool check metrics` (Debian's prometheus package), a real
//! Prometheus server scrapes the dev cluster's nodes (the targets from
//! `dev-cluster ls --format prometheus`, the config in deploy/prometheus)
//! and answers `sum(shoal_tasks{state="running"})` with the number of
//! running tasks, and the write counters move after a service create.
//! `--metrics-addr` refuses a bad or busy address with one sentence.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::swarm::{Swarm, CONVERGE, HOSTS, SLEEPER};
use crate::support::{run, run_with_input, wait_until, SHOAL};

const METRICS_PORT: u16 = 9323;

fn scrape(swarm: &Swarm, host: &str) -> String {
    let url = format!("http://{}:{METRICS_PORT}/metrics", swarm.cluster.addr(host));
    let out = run("curl", &["-sf", "--max-time", "5", &url], Duration::from_secs(10));
    assert!(out.success(), "{host}'s /metrics: {out:?}");
    out.stdout
}

/// The value of the sample line starting with `series` (name and labels).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// A Prometheus server for the test, killed (and its data removed) on drop.
struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(targets_json: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("dev-cluster-targets.json"), targets_json).unwrap();
        // The shipped config, with a faster scrape for the test.
        let shipped = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/prometheus/dev-cluster.yml")).unwrap();
        std::fs::write(dir.path().join("prometheus.yml"), shipped.replace("scrape_interval: 5s", "scrape_interval: 1s")).unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("prometheus")
            .current_dir(dir.path())
            .arg("--config.file=prometheus.yml")
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian's prometheus package) is installed");
        Prometheus { child, port, _dir: dir }
    }

    /// The single value `query` gives now, if any.
    fn query(&self, query: &str) -> Option<f64> {
        let url = format!("http://127.0.0.1:{}/api/v1/query", self.port);
        let out = run("curl", &["-sf", "--max-time", "2", &url, "--data-urlencode", &format!("query={query}")], Duration::from_secs(5));
        let reply: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
        reply["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn every_node_serves_metrics_that_prometheus_scrapes_and_queries() {
    let swarm = Swarm::up("metric");

    // Every node: valid exposition, its own parts, the manager's on managers.
    for host in HOSTS {
        let text = scrape(&swarm, host);
        let checked = run_with_input("promtool", &["check", "metrics"], Some(text.as_bytes()), Duration::from_secs(10));
        assert!(checked.success(), "promtool rejects {host}'s metrics: {checked:?}");
        for name in ["shoal_containers{state=\"running\"}", "shoal_container_oom_kills", "shoal_dns_queries", "shoal_image_pulls", "shoal_container_start_seconds"] {
            assert!(text.contains(name), "{host} exports {name}: {text}");
        }
        // Read from a running manager: absent on workers (whose manager counters stay at zero until promoted).
        for raft in ["shoal_raft_term", "shoal_raft_commit_index", "shoal_raft_storage_bytes"] {
            assert_eq!(text.contains(raft), host.starts_with("manager"), "{host}: {raft} on managers only");
        }
    }
    let leader = HOSTS.iter().copied().find(|h| sample(&scrape(&swarm, h), "shoal_raft_is_leader") == Some(1.0)).expect("a leader");
    let before = scrape(&swarm, leader);
    let service_creates = |text: &str| sample(text, "shoal_store_writes_total{kind=\"service\",action=\"create\"}").unwrap_or(0.0);

    swarm.create("web", &["--replicas", "3"], SLEEPER).ok();
    swarm.wait_running("web", 3);
    let after = scrape(&swarm, leader);
    let (commit, applied) = (sample(&after, "shoal_raft_commit_index").unwrap_or(0.0), sample(&after, "shoal_raft_applied_index").unwrap_or(0.0));
    assert!(commit >= applied - 1.0 && commit > 0.0, "the leader's commit index {commit}, applied {applied}");
    assert!(sample(&after, "shoal_raft_storage_bytes").unwrap_or(0.0) > 0.0, "the Raft storage is measured");
    assert_eq!(service_creates(&after), service_creates(&before) + 1.0, "one service created");
    let placed = |text: &str| sample(text, "shoal_scheduler_placements_total").unwrap_or(0.0);
    assert!(placed(&after) >= placed(&before) + 3.0, "three placements: {} -> {}", placed(&before), placed(&after));
    assert_eq!(sample(&after, "shoal_tasks{state=\"running\",service=\"web\"}"), Some(3.0), "{after}");
    assert!(sample(&after, "shoal_nodes{status=\"ready\",role=\"worker\"}") == Some(2.0), "{after}");
    let starts = HOSTS.iter().map(|h| sample(&scrape(&swarm, h), "shoal_container_start_seconds_count").unwrap_or(0.0)).sum::<f64>();
    assert!(starts >= 3.0, "the three starts were timed: {starts}");

    // A real Prometheus, fed the dev cluster's targets.
    let targets = swarm.cluster.dev_cluster("ls", &["--format", "prometheus"]).ok().stdout;
    let prometheus = Prometheus::start(&targets);
    let running = wait_until(CONVERGE, "Prometheus to see the running tasks", || {
        prometheus.query("sum(shoal_tasks{state=\"running\"})").filter(|v| *v == 3.0)
    });
    assert_eq!(running, 3.0);
    let up = wait_until(CONVERGE, "every node to be up in Prometheus", || prometheus.query("sum(up{job=\"shoal\"})").filter(|v| *v == 5.0));
    assert_eq!(up, 5.0);
}

#[test]
fn a_bad_or_busy_metrics_address_is_one_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let socket = format!("unix://{}", dir.path().join("shoal.sock").display());
    let data = dir.path().join("data").display().to_string();
    let exec = dir.path().join("run").display().to_string();
    let daemon = |address: &str| run(SHOAL, &["-H", &socket, "daemon", "--data-root", &data, "--exec-root", &exec, "--metrics-addr", address], Duration::from_secs(10));

    let bad = daemon("nowhere");
    assert!(!bad.success() && bad.stderr.contains("--metrics-addr \"nowhere\" is not an address; give IP:PORT"), "{bad:?}");
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = busy.local_addr().unwrap().to_string();
    let refused = daemon(&address);
    assert!(!refused.success() && refused.stderr.contains(&format!("--metrics-addr {address} is in use")), "{refused:?}");
    assert!(!dir.path().join("shoal.sock").exists(), "the daemon never served");
}

/// The scrape configurations and the dashboard shipped in deploy/ are valid,
/// and every metric the dashboard charts is one the nodes export.
#[test]
fn the_shipped_prometheus_configs_and_dashboard_are_valid() {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
    for config in ["prometheus/dev-cluster.yml", "prometheus/vagrant.yml"] {
        let path = deploy.join(config).display().to_string();
        let checked = run("promtool", &["check", "config", &path], Duration::from_secs(10));
        assert!(checked.success(), "{config}: {checked:?}");
    }
    let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(deploy.join("grafana/shoal-dashboard.json")).unwrap()).unwrap();
    let exported = [
        "shoal_tasks", "shoal_nodes", "shoal_tasks_pending", "shoal_raft_proposal_seconds", "shoal_store_writes_total",
        "shoal_leader_loop_plan_seconds", "shoal_containers", "shoal_container_start_seconds", "shoal_wireguard_peer_bytes_total",
        "shoal_dns_queries_total", "shoal_raft_term", "shoal_image_pull_bytes_total",
    ];
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10, "the main panels");
    for panel in panels {
        let expr = panel["targets"][0]["expr"].as_str().expect("a query");
        assert!(exported.iter().any(|m| expr.contains(m)), "{expr} charts an exported metric");
    }
}
