//! A node's runtime without containers: the [`TaskBackend`] of a simulated
//! node. A task's "container" is an entry in memory that starts after the
//! configured delay, fails to start at the configured rate, runs until it
//! is stopped, and leaves an exit behind as a real one does. Networks,
//! secrets and logs are accepted and cost nothing; the overlay views the
//! managers send are counted, so the simulator can show their fan-out.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use shoal_proto::pb;
use shoal_proto::tls::ClientTls;
use shoal_runtime::container::{ExitInfo, Health, Status};
use tokio::sync::watch;

use crate::executor::{HeldFiles, OverlayView, Rejection, StopPlan, TaskBackend, TaskContainer};

/// How simulated tasks behave.
#[derive(Debug, Clone, Copy)]
pub struct SimulatedBehaviour {
    /// How long a container takes to start.
    pub start_delay: Duration,
    /// The share of starts that fail (0.0 to 1.0).
    pub fail_rate: f64,
}

/// Exit code of a simulated start failure.
pub const FAILED_START_EXIT: i32 = 1;
/// Exit code of a stopped task, as SIGTERM's in a shell.
pub const STOPPED_EXIT: i32 = 143;

/// What every simulated node of one process adds to.
#[derive(Debug, Default)]
pub struct SimulationCounters {
    /// Containers running now, across the nodes.
    pub running: AtomicU64,
    pub starts: AtomicU64,
    pub failed_starts: AtomicU64,
    pub stops: AtomicU64,
    /// Overlay views received (each one a change the managers pushed).
    pub overlay_views: AtomicU64,
    /// Peers and name records in the views received, summed: what full
    /// lists would cost, against the number of views.
    pub overlay_peers_seen: AtomicU64,
}

struct Container {
    task_id: String,
    status: Status,
    /// RFC 3339-sortable, to tell the newest of several.
    created: String,
    started_at: Option<String>,
    exit: Option<ExitInfo>,
    /// Flips to `true` when the container stops running.
    ended: watch::Sender<bool>,
}

/// One simulated node's containers.
pub struct SimulatedRuntime {
    behaviour: SimulatedBehaviour,
    counters: Arc<SimulationCounters>,
    containers: Mutex<HashMap<String, Container>>,
    next_id: AtomicU64,
}

impl SimulatedRuntime {
    pub fn new(behaviour: SimulatedBehaviour, counters: Arc<SimulationCounters>) -> Self {
        SimulatedRuntime { behaviour, counters, containers: Mutex::new(HashMap::new()), next_id: AtomicU64::new(1) }
    }

    /// The tasks whose containers run here now.
    pub fn running_tasks(&self) -> Vec<String> {
        let containers = self.containers.lock().unwrap_or_else(|p| p.into_inner());
        containers.values().filter(|c| c.status == Status::Running).map(|c| c.task_id.clone()).collect()
    }

    /// Ends every running container without a report reaching anyone: the
    /// node lost power.
    pub fn power_off(&self) {
        let mut containers = self.containers.lock().unwrap_or_else(|p| p.into_inner());
        for container in containers.values_mut().filter(|c| c.status == Status::Running) {
            container.status = Status::Dead;
            self.counters.running.fetch_sub(1, Ordering::Relaxed);
            container.ended.send_replace(true);
        }
    }

    /// Marks a container ended with `code`; false when it was not running.
    fn end(&self, container_id: &str, code: i32, error: Option<String>) -> bool {
        let mut containers = self.containers.lock().unwrap_or_else(|p| p.into_inner());
        let Some(container) = containers.get_mut(container_id) else { return false };
        let was_running = container.status == Status::Running;
        if was_running {
            self.counters.running.fetch_sub(1, Ordering::Relaxed);
        }
        if matches!(container.status, Status::Running | Status::Created) {
            container.status = Status::Exited;
            container.exit = Some(ExitInfo { code, oom_killed: false, finished_at: now_rfc3339(), error });
            container.ended.send_replace(true);
        }
        was_running
    }
}

#[async_trait]
impl TaskBackend for SimulatedRuntime {
    fn task_containers(&self) -> Vec<TaskContainer> {
        let containers = self.containers.lock().unwrap_or_else(|p| p.into_inner());
        containers
            .iter()
            .map(|(id, c)| TaskContainer { container_id: id.clone(), task_id: c.task_id.clone(), status: c.status, created: c.created.clone() })
            .collect()
    }

    fn containers_of(&self, task_id: &str) -> Vec<TaskContainer> {
        let containers = self.containers.lock().unwrap_or_else(|p| p.into_inner());
        containers
            .iter()
            .filter(|(_, c)| c.task_id == task_id)
            .map(|(id, c)| TaskContainer { container_id: id.clone(), task_id: c.task_id.clone(), status: c.status, created: c.created.clone() })
            .collect()
    }

    async fn pull(&self, _assignment: &pb::Assignment) -> Result<(), String> {
        Ok(())
    }

    async fn create(&self, assignment: &pb::Assignment, _node_id: &str, _files: &HeldFiles) -> Result<String, Rejection> {
        let number = self.next_id.fetch_add(1, Ordering::Relaxed);
        let id = format!("sim{number:012}");
        let (ended, _) = watch::channel(false);
        let container = Container {
            task_id: assignment.task_id.clone(),
            status: Status::Created,
            // Zero-padded, so the newest sorts last as RFC 3339 times do.
            created: format!("{number:020}"),
            started_at: None,
            exit: None,
            ended,
        };
        self.containers.lock().unwrap_or_else(|p| p.into_inner()).insert(id.clone(), container);
        Ok(id)
    }

    async fn start(&self, container_id: &str) -> Result<(), String> {
        tokio::time::sleep(self.behaviour.start_delay).await;
        if rand::random::<f64>() < self.behaviour.fail_rate {
            self.counters.failed_starts.fetch_add(1, Ordering::Relaxed);
            let error = "simulated start failure".to_string();
            self.end(container_id, FAILED_START_EXIT, Some(error.clone()));
            return Err(error);
        }
        let mut containers = self.containers.lock().unwrap_or_else(|p| p.into_inner());
        let container = containers.get_mut(container_id).ok_or_else(|| format!("container {container_id} was removed before it started"))?;
        if container.status != Status::Created {
            return Err(format!("container {container_id} is not created but {:?}", container.status));
        }
        container.status = Status::Running;
        container.started_at = Some(now_rfc3339());
        self.counters.running.fetch_add(1, Ordering::Relaxed);
        self.counters.starts.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn exit_of(&self, container_id: &str) -> Option<ExitInfo> {
        let containers = self.containers.lock().unwrap_or_else(|p| p.into_inner());
        containers.get(container_id).and_then(|c| c.exit.clone())
    }

    fn started_at(&self, container_id: &str) -> Option<String> {
        let containers = self.containers.lock().unwrap_or_else(|p| p.into_inner());
        containers.get(container_id).and_then(|c| c.started_at.clone())
    }

    fn health_watch(&self, _container_id: &str) -> Option<watch::Receiver<Health>> {
        None
    }

    async fn wait(&self, container_id: &str) {
        let ended = {
            let containers = self.containers.lock().unwrap_or_else(|p| p.into_inner());
            containers.get(container_id).map(|c| c.ended.subscribe())
        };
        if let Some(mut ended) = ended {
            // A removed container drops its sender: that ends the wait too.
            let _ = ended.wait_for(|ended| *ended).await;
        }
    }

    async fn stop(&self, container_id: &str, _plan: &StopPlan) -> Result<(), String> {
        if self.end(container_id, STOPPED_EXIT, None) {
            self.counters.stops.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    async fn remove(&self, container_id: &str) -> Result<(), String> {
        self.end(container_id, STOPPED_EXIT, None);
        self.containers.lock().unwrap_or_else(|p| p.into_inner()).remove(container_id);
        Ok(())
    }

    async fn repair_network(&self, _assignment: &pb::Assignment) -> Result<(), String> {
        Ok(())
    }

    async fn release(&self, _task_id: &str) {}

    async fn sweep(&self, _assigned: HashSet<String>) {}

    async fn follow_overlay(&self, mut views: watch::Receiver<OverlayView>) {
        while views.changed().await.is_ok() {
            // Counted, not converted: a simulated node has no data plane.
            let seen = {
                let view = views.borrow_and_update();
                view.peers.len() + view.networks.len()
            };
            self.counters.overlay_views.fetch_add(1, Ordering::Relaxed);
            self.counters.overlay_peers_seen.fetch_add(seen as u64, Ordering::Relaxed);
        }
    }

    async fn publish_logs(&self, _tls: ClientTls, _manager: String, _subscription: pb::LogSubscription) {
        // Simulated tasks write no logs; the subscription gets none.
    }
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_nanos(SystemTime::now()).to_string()
}
