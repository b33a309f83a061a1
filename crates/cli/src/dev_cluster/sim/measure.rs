//! What the simulator reads from the managers: their CPU time and memory
//! (from /proc), and their view of nodes and tasks (through a manager's
//! control API, as the CLI reads it).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use shoal_agent::simulation::RunningTask;
use shoal_proto::pb;
use tonic::transport::Channel;

use super::super::plan::Role;
use super::super::state::{ClusterState, HostState};

/// What the simulated tasks run: never pulled (the nodes are simulated),
/// and a registry that refuses at once, so pinning its digest fails fast.
const SIMULATED_IMAGE: &str = "127.0.0.1:1/simulated:1";
const SERVICE_NAME: &str = "simulated";
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// The managers' CPU time and resident memory at one moment.
#[derive(Debug, Clone, Default)]
pub struct ManagerSample {
    /// Per manager, in clock ticks.
    pub cpu_ticks: Vec<u64>,
    pub rss_bytes: Vec<u64>,
}

/// What a step cost the managers, for every 1,000 nodes (or tasks).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Cost {
    /// CPU seconds, all managers together.
    pub cpu_seconds: f64,
    /// Growth of resident memory, all managers together.
    pub rss_bytes: i64,
}

impl ManagerSample {
    pub fn per_thousand(before: &ManagerSample, after: &ManagerSample, count: usize) -> Cost {
        let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as f64;
        let cpu: u64 = after.cpu_ticks.iter().zip(&before.cpu_ticks).map(|(a, b)| a.saturating_sub(*b)).sum();
        let rss: i64 = after.rss_bytes.iter().zip(&before.rss_bytes).map(|(a, b)| *a as i64 - *b as i64).sum();
        let scale = 1000.0 / count.max(1) as f64;
        Cost { cpu_seconds: cpu as f64 / ticks * scale, rss_bytes: (rss as f64 * scale) as i64 }
    }
}

/// Seconds of CPU the managers used between two samples, all together.
pub fn cpu_seconds_between(before: &ManagerSample, after: &ManagerSample) -> f64 {
    ManagerSample::per_thousand(before, after, 1000).cpu_seconds
}

/// Resident memory of process `pid`.
pub fn rss_of(pid: Option<u32>) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// utime + stime of process `pid`, in clock ticks.
pub fn cpu_ticks_of(pid: Option<u32>) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid?)).ok()?;
    // The command name may hold spaces: fields count from after its ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// How the managers' view of the service compares with the nodes'.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Check {
    /// Tasks the managers record as running.
    pub managers_running: usize,
    /// Tasks running on the simulated nodes.
    pub nodes_running: usize,
    /// Tasks running on more than one node.
    pub duplicates: usize,
    /// Running by the managers' record, on another node or none in fact.
    pub mismatched: usize,
}

impl Check {
    pub fn holds(&self) -> bool {
        self.duplicates == 0 && self.mismatched == 0 && self.managers_running == self.nodes_running
    }
}

pub struct Managers {
    hosts: Vec<HostState>,
}

/// The sum of every series of each metric in a manager's Prometheus
/// exposition (`name{labels} value` lines), by metric name.
pub async fn scrape_metrics(host: &HostState) -> anyhow::Result<HashMap<String, f64>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = (host.address, super::super::daemon::METRICS_PORT);
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(address).await?;
        stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: shoal\r\n\r\n").await?;
        let mut body = String::new();
        stream.read_to_string(&mut body).await?;
        anyhow::Ok(body)
    };
    let body = tokio::time::timeout(CALL_TIMEOUT, fetch)
        .await
        .map_err(|_| anyhow!("{}'s metrics did not answer within {}s", host.name, CALL_TIMEOUT.as_secs()))?
        .with_context(|| format!("could not read {}'s metrics at {}:{}", host.name, address.0, address.1))?;
    let mut sums = HashMap::new();
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let Ok(value) = value.parse::<f64>() else { continue };
        let name = series.split('{').next().unwrap_or(series);
        *sums.entry(name.to_string()).or_insert(0.0) += value;
    }
    Ok(sums)
}

impl Managers {
    pub async fn of(state: &ClusterState) -> anyhow::Result<Managers> {
        let hosts: Vec<HostState> = state.hosts.iter().filter(|h| h.role == Role::Manager).cloned().collect();
        if hosts.is_empty() {
            bail!("dev cluster {:?} has no manager", state.name);
        }
        Ok(Managers { hosts })
    }

    pub fn first_host(&self) -> &HostState {
        &self.hosts[0]
    }

    /// The manager host that leads now.
    pub async fn leader(&self) -> anyhow::Result<HostState> {
        let mut control = self.control().await?;
        let nodes = timed(control.list_nodes(pb::ListNodesRequest {})).await?.nodes;
        let leader = nodes.iter().find(|n| n.manager_status == "leader").context("no manager leads")?;
        self.hosts.iter().find(|h| h.name == leader.hostname).cloned().with_context(|| format!("the leader {} is no host of the cluster", leader.hostname))
    }

    /// The managers not killed by the simulator.
    pub fn live_hosts(&self) -> &[HostState] {
        &self.hosts
    }

    /// Stops counting `host` (it was killed): its socket answers no more.
    pub fn forget(&mut self, host: &str) {
        self.hosts.retain(|h| h.name != host);
    }

    /// One small write through the managers: whether it committed.
    pub async fn write_succeeds(&self, name: &str) -> anyhow::Result<bool> {
        let mut control = self.control().await?;
        let request = pb::CreateConfigRequest { name: name.into(), data: b"failover probe".to_vec(), labels: Default::default() };
        Ok(timed(control.create_config(request)).await.is_ok())
    }

    /// Worker nodes the managers count ready.
    pub async fn ready_workers(&self) -> anyhow::Result<usize> {
        let mut control = self.control().await?;
        let nodes = timed(control.list_nodes(pb::ListNodesRequest {})).await?.nodes;
        Ok(nodes.iter().filter(|n| n.role == "worker" && n.status == "ready").count())
    }

    pub fn sample(&self) -> ManagerSample {
        ManagerSample {
            cpu_ticks: self.hosts.iter().map(|h| cpu_ticks_of(h.pid).unwrap_or(0)).collect(),
            rss_bytes: self.hosts.iter().map(|h| rss_of(h.pid).unwrap_or(0)).collect(),
        }
    }

    /// The control API of the first manager that answers.
    async fn control(&self) -> anyhow::Result<pb::control_client::ControlClient<Channel>> {
        let mut last = None;
        for host in &self.hosts {
            match shoal_proto::tls::connect_unix(&host.socket).await {
                Ok(channel) => return Ok(pb::control_client::ControlClient::new(channel).max_decoding_message_size(1 << 30)),
                Err(error) => last = Some(anyhow!("{}: {error}", host.name)),
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("no manager to ask")))
    }

    pub async fn ready_nodes_at_least(&self, count: usize) -> anyhow::Result<bool> {
        let mut control = self.control().await?;
        let nodes = timed(control.list_nodes(pb::ListNodesRequest {})).await?.nodes;
        Ok(nodes.iter().filter(|n| n.status == "ready").count() >= count)
    }

    /// Creates the simulated service; returns its id.
    pub async fn create_service(&self, replicas: u64) -> anyhow::Result<String> {
        self.create_simulated_service(SERVICE_NAME, Some(replicas), None).await
    }

    /// A service of simulated tasks: `replicas` of them, or one per node
    /// (global) for `None`, attached to `network` if one is given.
    pub async fn create_simulated_service(&self, name: &str, replicas: Option<u64>, network: Option<&str>) -> anyhow::Result<String> {
        let networks = network.map(|n| pb::NetworkAttachmentConfig { target: n.into(), ..Default::default() }).into_iter().collect();
        let spec = pb::ServiceSpec {
            name: name.into(),
            mode: if replicas.is_some() { "replicated" } else { "global" }.into(),
            replicas: replicas.unwrap_or(0),
            task: Some(pb::TaskSpec { image: SIMULATED_IMAGE.into(), networks, ..Default::default() }),
            // A task whose node is lost starts again elsewhere at once.
            restart: Some(pb::RestartPolicy { condition: "any".into(), delay_ms: 0, max_attempts: 0, window_ms: 0 }),
            // The managers are real nodes, but only the simulated ones
            // pretend to run this image.
            placement: Some(pb::Placement { constraints: vec!["engine.labels.simulated==true".into()], ..Default::default() }),
            ..Default::default()
        };
        let mut control = self.control().await?;
        let created = timed(control.create_service(pb::CreateServiceRequest { spec: Some(spec) })).await?;
        created.service.map(|s| s.id).context("the managers created the service but sent no id")
    }

    /// An overlay network with room for every simulated task (its own subnet, inside the
    /// overlay range).
    pub async fn create_network(&self, name: &str) -> anyhow::Result<()> {
        let spec = pb::NetworkSpec {
            name: name.into(),
            driver: pb::NetworkDriver::Overlay as i32,
            subnet: "100.80.0.0/14".into(),
            ..Default::default()
        };
        let mut control = self.control().await?;
        timed(control.create_network(pb::CreateNetworkRequest { spec: Some(spec) })).await?;
        Ok(())
    }

    pub async fn remove_service(&self, service: &str) -> anyhow::Result<()> {
        let mut control = self.control().await?;
        timed(control.remove_service(pb::ServiceRef { service: service.into() })).await?;
        Ok(())
    }

    /// Removes `network`; retried while its last tasks are still leaving it.
    pub async fn remove_network(&self, network: &str) -> anyhow::Result<()> {
        let deadline = std::time::Instant::now() + CALL_TIMEOUT;
        loop {
            let mut control = self.control().await?;
            match timed(control.remove_network(pb::NetworkRef { network: network.into() })).await {
                Ok(_) => return Ok(()),
                Err(error) if std::time::Instant::now() > deadline => return Err(error),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// Running tasks of the service, by the managers' count.
    pub async fn running_tasks(&self, service: &str) -> anyhow::Result<u64> {
        let mut control = self.control().await?;
        let service = timed(control.inspect_service(pb::ServiceRef { service: service.into() })).await?;
        Ok(service.running_tasks)
    }

    /// Running tasks of the service on nodes other than `lost`.
    pub async fn running_tasks_off(&self, service: &str, lost: &[String]) -> anyhow::Result<u64> {
        let lost: HashSet<&str> = lost.iter().map(String::as_str).collect();
        let tasks = self.running_records(service).await?;
        Ok(tasks.iter().filter(|t| !lost.contains(t.node_id.as_str())).count() as u64)
    }

    async fn running_records(&self, service: &str) -> anyhow::Result<Vec<pb::Task>> {
        let mut control = self.control().await?;
        let request = pb::ListTasksRequest { service: service.into(), node: String::new(), desired_states: vec!["running".into()] };
        let tasks = timed(control.list_tasks(request)).await?.tasks;
        Ok(tasks.into_iter().filter(|t| t.state == "running").collect())
    }

    /// The managers' running tasks against what the nodes run.
    pub async fn compare(&self, service: &str, on_nodes: &[RunningTask]) -> anyhow::Result<Check> {
        let records = self.running_records(service).await?;
        let mut placed: HashMap<&str, &str> = HashMap::new();
        let mut duplicates = 0;
        for task in on_nodes {
            if placed.insert(&task.task_id, &task.node_id).is_some() {
                duplicates += 1;
            }
        }
        let mismatched = records.iter().filter(|t| placed.get(t.id.as_str()) != Some(&t.node_id.as_str())).count();
        Ok(Check { managers_running: records.len(), nodes_running: on_nodes.len(), duplicates, mismatched })
    }
}

async fn timed<T>(call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>) -> anyhow::Result<T> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(Ok(reply)) => Ok(reply.into_inner()),
        Ok(Err(status)) => Err(anyhow!("{}", status.message())),
        Err(_) => Err(anyhow!("a manager did not answer within {}s", CALL_TIMEOUT.as_secs())),
    }
}
