//! The yardstick: a 3-member etcd cluster (Debian's `etcd-server`) on
//! namespace hosts of its own, made like the Shoal cluster's (same
//! `dev-cluster` plumbing, data on the same filesystem), written to with
//! etcd's gRPC `KV/Put`, which answers once the write is committed on a
//! majority and in each member's fsynced WAL.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shoal_proto::etcd::kv_client::KvClient;
use shoal_proto::etcd::PutRequest;
use tonic::transport::Channel;

use super::support::Cluster;

pub const CLIENT_PORT: u16 = 2379;
const PEER_PORT: u16 = 2380;

struct Member {
    name: String,
    netns: String,
    address: std::net::Ipv4Addr,
    data_dir: PathBuf,
    process: Option<Child>,
}

/// Three etcd members; every process is killed and every host removed
/// when it drops, also on a panic.
pub struct EtcdCluster {
    members: Vec<Member>,
    initial_cluster: String,
    token: String,
    // Dropped after the members: the namespaces outlive their processes.
    _hosts: Cluster,
}

impl EtcdCluster {
    pub fn up(tag: &str) -> EtcdCluster {
        assert!(
            Command::new("etcd").arg("--version").stdout(Stdio::null()).status().is_ok_and(|s| s.success()),
            "etcd is not installed; install it with `apt-get install etcd-server etcd-client`"
        );
        let hosts = Cluster::up_network_only(tag, 3, 0);
        // Beside the Shoal cluster's data: the same filesystem, the same fsync.
        let root = PathBuf::from("/run/shoal-dev").join(hosts.name());
        let members: Vec<Member> = hosts
            .hosts()
            .into_iter()
            .enumerate()
            .map(|(i, host)| Member {
                name: format!("etcd{}", i + 1),
                netns: host.netns,
                address: host.address,
                data_dir: root.join(format!("etcd{}", i + 1)),
                process: None,
            })
            .collect();
        let initial_cluster =
            members.iter().map(|m| format!("{}=http://{}:{PEER_PORT}", m.name, m.address)).collect::<Vec<_>>().join(",");
        let mut cluster = EtcdCluster { members, initial_cluster, token: hosts.name().to_string(), _hosts: hosts };
        for i in 0..cluster.members.len() {
            cluster.start(i);
        }
        cluster
    }

    /// The client URL of every member.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| format!("http://{}:{CLIENT_PORT}", m.address)).collect()
    }

    /// Starts member `i` (again, after a kill: its data dir says it has
    /// been a member, so the initial-cluster flags are ignored).
    pub fn start(&mut self, i: usize) {
        let (initial_cluster, token) = (self.initial_cluster.clone(), self.token.clone());
        let member = &mut self.members[i];
        let (peer, client) =
            (format!("http://{}:{PEER_PORT}", member.address), format!("http://{}:{CLIENT_PORT}", member.address));
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", member.netns))
            .arg("etcd")
            .args(["--name", &member.name])
            .arg("--data-dir")
            .arg(&member.data_dir)
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--initial-cluster", &initial_cluster, "--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", &token])
            .args(["--logger", "zap", "--log-level", "error"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting etcd");
        member.process = Some(child);
    }

    /// The running members' process ids (nsenter execs etcd in place).
    pub fn pids(&self) -> Vec<u32> {
        self.members.iter().filter_map(|m| m.process.as_ref().map(Child::id)).collect()
    }

    /// kill -9 of member `i`, as the Shoal leader is killed.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The index of the member that leads now, from `etcdctl endpoint status`.
    pub fn leader(&self) -> Option<usize> {
        let output = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--command-timeout=1s", "endpoint", "status", "-w", "json", "--endpoints"])
            .arg(self.endpoints().join(","))
            .output()
            .ok()?;
        let statuses: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
        let endpoints = self.endpoints();
        statuses.as_array()?.iter().find_map(|status| {
            let member = status["Status"]["header"]["member_id"].as_u64()?;
            let leader = status["Status"]["leader"].as_u64()?;
            (member == leader).then(|| endpoints.iter().position(|e| Some(e.as_str()) == status["Endpoint"].as_str()))?
        })
    }

    /// Waits until member `through` takes writes.
    pub async fn wait_for_writes(&self, through: usize, within: Duration) {
        let deadline = Instant::now() + within;
        let endpoint = self.endpoints()[through].clone();
        let mut n = 0u64;
        loop {
            n += 1;
            if let Ok(mut client) = EtcdWriter::connect(&endpoint).await {
                if client.put(&format!("probe-{n}")).await {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "etcd took no write through {endpoint} within {within:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

/// One etcd client connection (clones share it).
#[derive(Clone)]
pub struct EtcdWriter {
    client: KvClient<Channel>,
}

impl EtcdWriter {
    pub async fn connect(endpoint: &str) -> Result<EtcdWriter, String> {
        let channel = Channel::from_shared(endpoint.to_string())
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        Ok(EtcdWriter { client: KvClient::new(channel) })
    }

    /// Whether etcd acknowledged the write (committed on a majority).
    pub async fn put(&mut self, key: &str) -> bool {
        self.client.put(PutRequest { key: key.as_bytes().to_vec(), value: b"x".to_vec() }).await.is_ok()
    }
}
