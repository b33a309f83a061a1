//! The steady state: every task placed and running, nothing changing but
//! heartbeats. What the cluster then costs is what it costs to exist, and
//! it must stay small for thousands of nodes to fit.

use std::time::{Duration, Instant};

use anyhow::Context;

use super::measure::{cpu_seconds_between, cpu_ticks_of, scrape_metrics, Managers};

/// How long the idle cluster is watched.
const WINDOW: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SteadyState {
    /// Heartbeats the leader recorded per second (its own and relayed).
    pub heartbeats_per_second: f64,
    /// Store writes per second, as the leader applied them.
    pub writes_per_second: f64,
    /// CPU of all managers together, 100 = one core.
    pub managers_cpu_percent: f64,
    /// CPU of the simulated nodes' process, 100 = one core.
    pub nodes_cpu_percent: f64,
}

/// Watches the idle cluster for [`WINDOW`]: the leader's heartbeats and
/// writes from its metrics, everyone's CPU from /proc.
pub async fn measure(managers: &Managers, nodes_pid: Option<u32>) -> anyhow::Result<SteadyState> {
    let leader = managers.leader().await?;
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as f64;
    let before = (scrape_metrics(&leader).await?, managers.sample(), cpu_ticks_of(nodes_pid).unwrap_or(0), Instant::now());
    tokio::time::sleep(WINDOW).await;
    let after = (scrape_metrics(&leader).await?, managers.sample(), cpu_ticks_of(nodes_pid).unwrap_or(0), Instant::now());
    let seconds = after.3.duration_since(before.3).as_secs_f64();
    let rate = |name: &str| -> anyhow::Result<f64> {
        let start = before.0.get(name).with_context(|| format!("the leader's metrics have no {name}"))?;
        let end = after.0.get(name).with_context(|| format!("the leader's metrics have no {name}"))?;
        Ok((end - start) / seconds)
    };
    Ok(SteadyState {
        heartbeats_per_second: rate("shoal_dispatcher_heartbeats_total")?,
        writes_per_second: rate("shoal_store_writes_total")?,
        managers_cpu_percent: cpu_seconds_between(&before.1, &after.1) / seconds * 100.0,
        nodes_cpu_percent: after.2.saturating_sub(before.2) as f64 / ticks / seconds * 100.0,
    })
}
