//! Many simulated nodes in one process. Each joins with the join token
//! (its own key, certificate and WireGuard key), then runs the real
//! agent's session and executor over its own mTLS connections, with a
//! [`SimulatedRuntime`] in place of containers and the data path.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use shoal_overlay_net::wireguard::NodeKey;
use shoal_proto::pb;
use shoal_proto::tls::ClientTls;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::runtime::{SimulatedBehaviour, SimulatedRuntime, SimulationCounters};
use crate::executor::{Executor, ExecutorConfig};
use crate::join::{join_swarm, JoinRequest};
use crate::session::{run_session, SessionConfig, SessionEvent};

/// Bounds each step of one node's join.
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Joins retried (a manager busy with an election refuses some).
const JOIN_ATTEMPTS: usize = 5;
/// What every simulated node says it has: the scheduler places by it.
const NODE_CPUS: u64 = 8;
const NODE_MEMORY_BYTES: u64 = 32 << 30;
/// A simulated node's manager port, as a real worker's would be.
const ADVERTISE_PORT: u16 = 4242;
/// Data path ports count up from here, one per node, so every node's
/// WireGuard endpoint the managers hand out is distinct.
const FIRST_DATA_PATH_PORT: u32 = 20_000;

/// Where and how the simulated nodes join.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Managers' `host:port`, tried in turn.
    pub managers: Vec<String>,
    pub token: String,
    /// The address every simulated node advertises (they share a host).
    pub advertise_ip: IpAddr,
    /// Hostnames are this, a dash, and the node's number (`sim-00042`).
    pub hostname_prefix: String,
    pub behaviour: SimulatedBehaviour,
    /// Joins in flight at once.
    pub join_concurrency: usize,
}

struct SimulatedNode {
    node_id: String,
    runtime: Arc<SimulatedRuntime>,
    /// The session, and the loop draining its events.
    tasks: Vec<JoinHandle<()>>,
    executor: Option<Executor>,
}

impl SimulatedNode {
    /// Cuts the node off as a power loss would: no more heartbeats or
    /// reports, and its containers are gone.
    fn power_off(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        self.executor.take();
        self.runtime.power_off();
    }
}

/// What the pool's nodes report, summed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PoolStatus {
    /// Nodes that joined, lost ones included.
    pub joined: usize,
    pub lost: usize,
    pub running: u64,
    pub starts: u64,
    pub failed_starts: u64,
    pub stops: u64,
    pub overlay_views: u64,
    pub overlay_peers_seen: u64,
}

/// A task running on a simulated node.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RunningTask {
    pub task_id: String,
    pub node_id: String,
}

pub struct SimulatedPool {
    config: PoolConfig,
    counters: Arc<SimulationCounters>,
    nodes: Mutex<Vec<SimulatedNode>>,
    lost: Mutex<Vec<SimulatedNode>>,
}

impl SimulatedPool {
    pub fn new(config: PoolConfig) -> Self {
        SimulatedPool { config, counters: Arc::default(), nodes: Mutex::default(), lost: Mutex::default() }
    }

    /// Joins `count` more nodes, `join_concurrency` at a time; returns the
    /// first join that failed for good, after the others finished.
    pub async fn grow(&self, count: usize) -> Result<(), String> {
        let first = self.nodes.lock().unwrap_or_else(|p| p.into_inner()).len() + self.lost.lock().unwrap_or_else(|p| p.into_inner()).len();
        let joins = futures::stream::iter(first..first + count)
            .map(|number| self.join_one(number))
            .buffer_unordered(self.config.join_concurrency.max(1));
        let results: Vec<Result<SimulatedNode, String>> = joins.collect().await;
        let mut failure = None;
        let mut nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        for result in results {
            match result {
                Ok(node) => nodes.push(node),
                Err(error) => failure = failure.or(Some(error)),
            }
        }
        failure.map_or(Ok(()), Err)
    }

    async fn join_one(&self, number: usize) -> Result<SimulatedNode, String> {
        let hostname = format!("{}-{number:05}", self.config.hostname_prefix);
        let advertise = SocketAddr::new(self.config.advertise_ip, ADVERTISE_PORT);
        let mut last_error = String::from("no manager to join through");
        for attempt in 0..JOIN_ATTEMPTS {
            let remote = &self.config.managers[(number + attempt) % self.config.managers.len().max(1)];
            let request = JoinRequest { remote, token: &self.config.token, hostname: &hostname, advertise, timeout: JOIN_TIMEOUT };
            match join_swarm(request).await {
                Ok(membership) => return self.start_node(number, membership),
                Err(status) => last_error = format!("{hostname} could not join through {remote}: {}", status.message()),
            }
            tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
        }
        Err(last_error)
    }

    fn start_node(&self, number: usize, membership: crate::join::Membership) -> Result<SimulatedNode, String> {
        let tls = ClientTls::new(&membership.credentials).map_err(|e| e.to_string())?;
        let managers = Arc::new(Mutex::new(membership.managers));
        let key = NodeKey::ephemeral();
        let description = pb::NodeDescription {
            nano_cpus: NODE_CPUS * 1_000_000_000,
            memory_bytes: NODE_MEMORY_BYTES,
            os: std::env::consts::OS.to_string(),
            arch: "amd64".into(),
            engine_labels: vec![("simulated".into(), "true".into())].into_iter().collect(),
            wireguard_public_key: key.public_key().to_base64(),
            data_path_port: FIRST_DATA_PATH_PORT + (number as u32 % 40_000),
        };
        let (events, mut received) = mpsc::channel(16);
        let session = tokio::spawn(run_session(SessionConfig {
            node_id: membership.node_id.clone(),
            tls: tls.clone(),
            managers: managers.clone(),
            local_manager: None,
            events,
            description,
        }));
        // Manager lists, role changes and removal matter to a daemon; a
        // simulated node only keeps its session.
        let drain = tokio::spawn(async move {
            while let Some(event) = received.recv().await {
                if event == SessionEvent::Removed {
                    tracing::info!("a simulated node was removed from the swarm");
                }
            }
        });
        let runtime = Arc::new(SimulatedRuntime::new(self.config.behaviour, self.counters.clone()));
        let executor = Executor::spawn(ExecutorConfig { node_id: membership.node_id.clone(), tls, managers, backend: runtime.clone() });
        Ok(SimulatedNode { node_id: membership.node_id, runtime, tasks: vec![session, drain], executor: Some(executor) })
    }

    /// Powers off `count` nodes (the last joined first) and returns their ids.
    pub fn lose(&self, count: usize) -> Vec<String> {
        let mut nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        let keep = nodes.len().saturating_sub(count);
        let mut gone: Vec<SimulatedNode> = nodes.drain(keep..).collect();
        drop(nodes);
        for node in &mut gone {
            node.power_off();
        }
        let ids = gone.iter().map(|n| n.node_id.clone()).collect();
        self.lost.lock().unwrap_or_else(|p| p.into_inner()).extend(gone);
        ids
    }

    pub fn status(&self) -> PoolStatus {
        let joined = self.nodes.lock().unwrap_or_else(|p| p.into_inner()).len();
        let lost = self.lost.lock().unwrap_or_else(|p| p.into_inner()).len();
        let count = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        PoolStatus {
            joined: joined + lost,
            lost,
            running: count(&self.counters.running),
            starts: count(&self.counters.starts),
            failed_starts: count(&self.counters.failed_starts),
            stops: count(&self.counters.stops),
            overlay_views: count(&self.counters.overlay_views),
            overlay_peers_seen: count(&self.counters.overlay_peers_seen),
        }
    }

    /// Every task running on a live node, with its node.
    pub fn running_tasks(&self) -> Vec<RunningTask> {
        let nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        nodes
            .iter()
            .flat_map(|node| node.runtime.running_tasks().into_iter().map(|task_id| RunningTask { task_id, node_id: node.node_id.clone() }))
            .collect()
    }

    /// Ends every node's session and executor (the pool's process exits).
    pub fn shutdown(&self) {
        for node in self.nodes.lock().unwrap_or_else(|p| p.into_inner()).iter_mut() {
            node.power_off();
        }
    }
}
