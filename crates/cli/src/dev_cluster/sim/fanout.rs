//! Network fan-out: what the managers send the nodes when one task starts
//! on an overlay network that spans every node. Each node sharing the
//! network must learn the new task's address (its peer's allowed IPs, the
//! service's name): the messages grow with the nodes that share the
//! network, but each message must stay the size of the change, never a
//! whole peer or record list.

use std::time::{Duration, Instant};

use anyhow::bail;

use super::control;
use super::measure::{scrape_metrics, Managers};

const NETWORK: &str = "sim-fanout";
/// One task per node, so the network spans the cluster.
const SPREAD_SERVICE: &str = "sim-fanout-spread";
/// The one task whose start is measured.
const PROBE_SERVICE: &str = "sim-fanout-probe";
/// The managers are quiet when their counters hold still this long.
const QUIET: Duration = Duration::from_secs(2);
const TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct FanOut {
    /// Nodes on the network when the probe task started.
    pub nodes_on_network: usize,
    /// Assignment messages all managers sent for the one task's start.
    pub messages: f64,
    /// Their encoded bytes, all together.
    pub bytes: f64,
}

impl FanOut {
    pub fn bytes_per_message(&self) -> f64 {
        self.bytes / self.messages.max(1.0)
    }
}

/// Spreads a network over every live node, then starts one more task on it
/// and counts what the managers send until they are quiet again; then
/// removes what it made, until the nodes run `running_before` tasks again.
pub async fn measure(managers: &Managers, socket: &std::path::Path, live_nodes: usize, running_before: usize) -> anyhow::Result<FanOut> {
    managers.create_network(NETWORK).await?;
    let spread = managers.create_simulated_service(SPREAD_SERVICE, None, Some(NETWORK)).await?;
    let deadline = Instant::now() + TIMEOUT;
    while managers.running_tasks(&spread).await? < live_nodes as u64 {
        if Instant::now() > deadline {
            bail!("the network's global service did not reach {live_nodes} running tasks within {}s", TIMEOUT.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let before = quiet_counters(managers).await?;
    let probe = managers.create_simulated_service(PROBE_SERVICE, Some(1), Some(NETWORK)).await?;
    while managers.running_tasks(&probe).await? < 1 || control::status(socket).await?.running == 0 {
        if Instant::now() > deadline {
            bail!("the probe task on the spread network did not start within {}s", TIMEOUT.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = quiet_counters(managers).await?;
    for service in [&probe, &spread] {
        managers.remove_service(service).await?;
    }
    while control::status(socket).await?.running > running_before as u64 {
        if Instant::now() > deadline {
            bail!("the nodes still ran the fan-out's tasks {}s after their services were removed", TIMEOUT.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    managers.remove_network(NETWORK).await?;
    Ok(FanOut { nodes_on_network: live_nodes, messages: after.0 - before.0, bytes: after.1 - before.1 })
}

/// The managers' (messages, bytes) sent, once they stopped moving.
async fn quiet_counters(managers: &Managers) -> anyhow::Result<(f64, f64)> {
    let deadline = Instant::now() + TIMEOUT;
    let mut last = counters(managers).await?;
    loop {
        tokio::time::sleep(QUIET).await;
        let now = counters(managers).await?;
        if now == last {
            return Ok(now);
        }
        if Instant::now() > deadline {
            bail!("the managers kept sending assignments for {}s with nothing changing", TIMEOUT.as_secs());
        }
        last = now;
    }
}

async fn counters(managers: &Managers) -> anyhow::Result<(f64, f64)> {
    let mut total = (0.0, 0.0);
    for host in managers.live_hosts() {
        let metrics = scrape_metrics(host).await?;
        total.0 += metrics.get("shoal_dispatcher_assignments_sent_total").copied().unwrap_or(0.0);
        total.1 += metrics.get("shoal_dispatcher_assignment_bytes_sent_total").copied().unwrap_or(0.0);
    }
    Ok(total)
}
