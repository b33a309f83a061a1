//! The write load both stores get: N clients, each with its own connection
//! to one of the members (client i to member i mod 3 of the list given,
//! which starts at the leader; followers forward as they would for real
//! clients), each writing one small object after another for a fixed time;
//! every write's latency is kept.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use shoal_proto::pb;

use super::etcd::EtcdWriter;

/// Where the clients write.
pub enum Target {
    /// Shoal managers, through each one's control API socket.
    Shoal(Vec<PathBuf>),
    /// etcd members' client URLs.
    Etcd(Vec<String>),
}

enum Writer {
    Shoal(pb::control_client::ControlClient<tonic::transport::Channel>),
    Etcd(EtcdWriter),
}

impl Writer {
    async fn connect(target: &Target, client: usize) -> Writer {
        match target {
            Target::Shoal(sockets) => {
                let socket = &sockets[client % sockets.len()];
                let channel = shoal_proto::tls::connect_unix(socket).await.expect("connecting to a manager");
                Writer::Shoal(pb::control_client::ControlClient::new(channel))
            }
            Target::Etcd(endpoints) => {
                Writer::Etcd(EtcdWriter::connect(&endpoints[client % endpoints.len()]).await.expect("connecting to etcd"))
            }
        }
    }

    /// A small object under a new name: a config for Shoal, a key for etcd.
    async fn write(&mut self, name: String) -> bool {
        match self {
            Writer::Shoal(control) => control
                .create_config(pb::CreateConfigRequest { name, data: b"x".to_vec(), labels: Default::default() })
                .await
                .is_ok(),
            Writer::Etcd(etcd) => etcd.put(&name).await,
        }
    }
}

/// What one round of load achieved.
#[derive(Default, Clone)]
pub struct Load {
    pub writes: u64,
    pub seconds: f64,
    /// Of every acknowledged write, in microseconds.
    latencies_us: Vec<u32>,
}

impl Load {
    pub fn add(&mut self, other: Load) {
        self.writes += other.writes;
        self.seconds += other.seconds;
        self.latencies_us.extend(other.latencies_us);
    }

    pub fn per_sec(&self) -> f64 {
        self.writes as f64 / self.seconds
    }

    /// The latency below which `percent` of the acknowledged writes fell.
    pub fn percentile_ms(&self, percent: f64) -> f64 {
        let mut sorted = self.latencies_us.clone();
        sorted.sort_unstable();
        let Some(last) = sorted.len().checked_sub(1) else { return f64::NAN };
        sorted[((last as f64) * percent / 100.0).round() as usize] as f64 / 1000.0
    }
}

/// How long after `since` the first of a stream of write attempts was
/// acknowledged: a new attempt starts every 50 ms, none is cancelled, so a
/// write held up during an election counts when it is acknowledged, and
/// no client timeout rounds the figure (the same for both stores).
pub async fn first_acknowledged<F, Fut>(since: Instant, attempt: F) -> Duration
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = bool> + Send + 'static,
{
    let (acknowledged, mut first) = tokio::sync::mpsc::unbounded_channel();
    let mut every = tokio::time::interval(Duration::from_millis(50));
    for n in 0.. {
        tokio::select! {
            _ = every.tick() => {
                assert!(since.elapsed() < Duration::from_secs(30), "no write was acknowledged within 30 s of the kill");
                let (write, acknowledged) = (attempt(n), acknowledged.clone());
                tokio::spawn(async move {
                    if write.await {
                        let _ = acknowledged.send(Instant::now());
                    }
                });
            }
            Some(at) = first.recv() => return at - since,
        }
    }
    unreachable!("the attempts never end")
}

/// `clients` writers for `duration`; names carry `tag` so rounds never collide.
pub async fn run(target: &Target, clients: usize, duration: Duration, tag: &str) -> Load {
    let mut writers = Vec::new();
    for c in 0..clients {
        writers.push(Writer::connect(target, c).await);
    }
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = writers
        .into_iter()
        .enumerate()
        .map(|(c, mut writer)| {
            let tag = tag.to_string();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut i = 0u64;
                while Instant::now() < deadline {
                    i += 1;
                    let sent = Instant::now();
                    if writer.write(format!("{tag}-c{c}-{i}")).await {
                        latencies.push(sent.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    }
                }
                latencies
            })
        })
        .collect();
    let mut load = Load::default();
    for task in tasks {
        load.latencies_us.extend(task.await.unwrap_or_default());
    }
    load.seconds = started.elapsed().as_secs_f64();
    load.writes = load.latencies_us.len() as u64;
    load
}
