//! A 3-manager, 2-worker swarm with a registry on its underlay holding
//! busybox, and readers over the CLI's JSON: what the service and network
//! tests share.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use serde::Deserialize;
use shoal_runtime::testing::{TestImages, TestRegistry};

use super::{wait_until, Cluster};
use super::swarm_helpers::wait_all_ready;

pub const MANAGERS: [&str; 3] = ["manager1", "manager2", "manager3"];
pub const HOSTS: [&str; 5] = ["manager1", "manager2", "manager3", "worker1", "worker2"];
pub const CONVERGE: Duration = Duration::from_secs(60);
/// Stops at once on SIGTERM (as PID 1, plain `sleep` would ignore it).
pub const SLEEPER: &[&str] = &["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"];

#[derive(Debug, Clone, Deserialize)]
pub struct TaskRow {
    pub id: String,
    pub name: String,
    pub node: String,
    pub desired_state: String,
    pub current_state: String,
    pub error: String,
    #[serde(default)]
    pub state_changed_at: String,
    #[serde(default)]
    pub networks: Vec<AddressRow>,
    #[serde(default)]
    pub image: String,
    /// The service spec version the task runs.
    #[serde(default)]
    pub spec_version: u64,
}

/// A task's address on one network (`address` in CIDR form).
#[derive(Debug, Clone, Deserialize)]
pub struct AddressRow {
    pub network: String,
    pub address: String,
}

impl TaskRow {
    /// The task's address on `network`.
    pub fn address_on(&self, network: &str) -> std::net::Ipv4Addr {
        let cidr = &self.networks.iter().find(|n| n.network == network).unwrap_or_else(|| panic!("{} is not on {network}", self.name)).address;
        cidr.split('/').next().and_then(|a| a.parse().ok()).unwrap_or_else(|| panic!("bad address {cidr}"))
    }
}

#[derive(Debug, Deserialize)]
pub struct ContainerRow {
    pub state: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// A cluster with a registry on its bridge holding busybox as `busybox:1`.
pub struct Swarm {
    pub cluster: Cluster,
    registry: TestRegistry,
    pub image: String,
}

impl Swarm {
    pub fn up(tag: &str) -> Swarm {
        let cluster = Cluster::up(tag, 3, 2);
        let bridge = std::net::Ipv4Addr::new(198, 18, cluster.subnet_index(), 254);
        let port = TcpListener::bind((bridge, 0)).and_then(|l| l.local_addr()).expect("a free port on the bridge").port();
        let registry = TestRegistry::start_at(SocketAddr::from((bridge, port))).expect("starting docker-registry");
        let images = TestImages::shared().expect("building the test images");
        let pushed = registry.push(&images.layout, TestImages::BUSYBOX, "busybox", "1").expect("pushing busybox");
        wait_all_ready(&cluster, "manager1", 5);
        Swarm { cluster, registry, image: pushed.reference }
    }

    /// busybox pushed again as `busybox:TAG`: another image reference
    /// (the same bytes), for updates to move tasks to.
    pub fn push_busybox_as(&self, tag: &str) -> String {
        let images = TestImages::shared().expect("building the test images");
        self.registry.push(&images.layout, TestImages::BUSYBOX, "busybox", tag).expect("pushing busybox").reference
    }

    /// The test image whose HEALTHCHECK passes once /tmp/healthy exists,
    /// pushed as `hc:1`.
    pub fn push_healthcheck_image(&self) -> String {
        let images = TestImages::shared().expect("building the test images");
        self.registry.push(&images.layout, TestImages::HEALTHCHECK, "hc", "1").expect("pushing the healthcheck image").reference
    }

    pub fn shoal(&self, args: &[&str]) -> crate::support::Output {
        self.cluster.shoal("manager1", args)
    }

    pub fn create(&self, name: &str, flags: &[&str], command: &[&str]) -> crate::support::Output {
        let mut args = vec!["service", "create", "--name", name];
        args.extend_from_slice(flags);
        args.push(&self.image);
        args.extend_from_slice(command);
        self.shoal(&args)
    }

    pub fn ps(&self, service: &str) -> Vec<TaskRow> {
        self.shoal(&["service", "ps", service, "--format", "json"]).ok().stdout_json()
    }

    pub fn running(&self, service: &str) -> Vec<TaskRow> {
        self.ps(service)
            .into_iter()
            .filter(|t| t.desired_state == "running" && t.current_state.starts_with("running"))
            .collect()
    }

    /// Waits until exactly `n` tasks run and nothing else is still wanted.
    pub fn wait_running(&self, service: &str, n: usize) -> Vec<TaskRow> {
        wait_until(CONVERGE, &format!("{n} running tasks of {service}"), || {
            let tasks = self.ps(service);
            let wanted = tasks.iter().filter(|t| t.desired_state == "running").count();
            let running = self.running(service);
            (running.len() == n && wanted == n).then_some(running)
        })
    }

    pub fn containers(&self, host: &str) -> Vec<ContainerRow> {
        self.cluster.shoal(host, &["container", "ls", "-a", "--format", "json"]).ok().stdout_json()
    }

    pub fn service_containers(&self, host: &str, service: &str) -> Vec<ContainerRow> {
        self.containers(host)
            .into_iter()
            .filter(|c| c.labels.get("shoal.service.name").map(String::as_str) == Some(service))
            .collect()
    }

    /// Running containers of `service` on every host.
    pub fn running_containers(&self, service: &str) -> usize {
        HOSTS
            .iter()
            .map(|h| self.service_containers(h, service).iter().filter(|c| c.state == "running").count())
            .sum()
    }
}

