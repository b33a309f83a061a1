//! `shoal container stats`: CPU, memory, network, block I/O and pids of
//! running containers, as `docker stats` shows them: two readings a second
//! apart give the CPU percentage; without `--no-stream` the table is
//! redrawn every second until interrupted.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use serde::Serialize;
use shoal_proto::pb;
use tonic::transport::Channel;

use crate::error::CliResult;
use crate::output::{print_table, Format};

type Runtime = pb::runtime_client::RuntimeClient<Channel>;

const INTERVAL: Duration = Duration::from_secs(1);

/// docker's `stats --format json` fields.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct StatsJson {
    #[serde(rename = "BlockIO")]
    block_io: String,
    #[serde(rename = "CPUPerc")]
    cpu_perc: String,
    container: String,
    #[serde(rename = "ID")]
    id: String,
    mem_perc: String,
    mem_usage: String,
    name: String,
    #[serde(rename = "NetIO")]
    net_io: String,
    #[serde(rename = "PIDs")]
    pids: String,
}

pub async fn run(runtime: &mut Runtime, containers: Vec<String>, no_stream: bool, format: Format) -> CliResult {
    let names = if containers.is_empty() {
        let running = runtime.list_containers(pb::ListContainersRequest { all: false }).await?.into_inner().containers;
        running.into_iter().map(|c| c.id).collect()
    } else {
        containers
    };
    let redraw = !no_stream && format == Format::Table && std::io::stdout().is_terminal();
    let by_id = |readings: Vec<(pb::ContainerUsage, Instant)>| -> HashMap<String, (pb::ContainerUsage, Instant)> {
        readings.into_iter().map(|(usage, at)| (usage.id.clone(), (usage, at))).collect()
    };
    let mut previous = by_id(read_all(runtime, &names).await?);
    loop {
        tokio::time::sleep(INTERVAL).await;
        let current = read_all(runtime, &names).await?;
        let rows: Vec<StatsJson> = current.iter().map(|(usage, at)| row(usage, *at, previous.get(&usage.id))).collect();
        if redraw {
            // Home and clear, as docker's live table does.
            print!("\x1b[2J\x1b[H");
        }
        match format {
            Format::Json => rows.iter().try_for_each(|r| serde_json::to_string(r).map(|line| println!("{line}")))?,
            Format::Table => print_table(
                &["CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "NET I/O", "BLOCK I/O", "PIDS"],
                rows.into_iter()
                    .map(|r| vec![r.id, r.name, r.cpu_perc, r.mem_usage, r.mem_perc, r.net_io, r.block_io, r.pids])
                    .collect(),
            ),
        }
        if no_stream {
            return Ok(());
        }
        previous = by_id(current);
    }
}

/// One reading of each container, keyed by id for the next round; a
/// container that went meanwhile drops out.
async fn read_all(runtime: &mut Runtime, names: &[String]) -> CliResult<Vec<(pb::ContainerUsage, Instant)>> {
    let mut readings = Vec::new();
    for name in names {
        match runtime.container_stats(pb::ContainerRef { name: name.clone() }).await {
            Ok(usage) => readings.push((usage.into_inner(), Instant::now())),
            Err(status) if names.len() > 1 && status.code() == tonic::Code::FailedPrecondition => {}
            Err(status) => return Err(status.into()),
        }
    }
    Ok(readings)
}

fn row(usage: &pb::ContainerUsage, at: Instant, before: Option<&(pb::ContainerUsage, Instant)>) -> StatsJson {
    // CPU time over wall time: 100% is one CPU busy, as docker counts it.
    let cpu = before
        .map(|(old, then)| {
            let wall = at.duration_since(*then).as_nanos().max(1) as f64;
            usage.cpu_nanos.saturating_sub(old.cpu_nanos) as f64 / wall * 100.0
        })
        .unwrap_or(0.0);
    let memory_percent = usage.memory_bytes as f64 / usage.memory_limit_bytes.max(1) as f64 * 100.0;
    StatsJson {
        block_io: format!("{} / {}", decimal(usage.block_read_bytes), decimal(usage.block_write_bytes)),
        cpu_perc: format!("{cpu:.2}%"),
        container: usage.id[..usage.id.len().min(12)].to_string(),
        id: usage.id[..usage.id.len().min(12)].to_string(),
        mem_perc: format!("{memory_percent:.2}%"),
        mem_usage: format!("{} / {}", binary(usage.memory_bytes), binary(usage.memory_limit_bytes)),
        name: usage.name.clone(),
        net_io: format!("{} / {}", decimal(usage.net_rx_bytes), decimal(usage.net_tx_bytes)),
        pids: usage.pids.to_string(),
    }
}

/// docker's memory sizes: powers of 1024 (`12.3MiB`).
fn binary(bytes: u64) -> String {
    scaled(bytes, 1024.0, &["B", "KiB", "MiB", "GiB", "TiB"])
}

/// docker's I/O sizes: powers of 1000 (`1.2MB`).
fn decimal(bytes: u64) -> String {
    scaled(bytes, 1000.0, &["B", "kB", "MB", "GB", "TB"])
}

fn scaled(bytes: u64, base: f64, units: &[&str]) -> String {
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= base && unit + 1 < units.len() {
        value /= base;
        unit += 1;
    }
    // Four significant digits, as docker's sizes have them (23.54GiB).
    let decimals = 4usize.saturating_sub(format!("{}", value.trunc() as u64).len());
    let text = format!("{value:.decimals$}");
    let text = if text.contains('.') { text.trim_end_matches('0').trim_end_matches('.') } else { &text };
    format!("{text}{}", units[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_percentages_read_as_docker_prints_them() {
        assert_eq!(binary(512), "512B");
        assert_eq!(binary(3 * 1024 * 1024 / 2), "1.5MiB");
        assert_eq!(binary(25_275_000_000), "23.54GiB");
        assert_eq!(decimal(3434), "3.434kB");
        assert_eq!(decimal(2_000_000), "2MB");
        let at = Instant::now();
        let old = pb::ContainerUsage { id: "a".repeat(64), cpu_nanos: 0, memory_limit_bytes: 100, ..Default::default() };
        let new = pb::ContainerUsage { cpu_nanos: 500_000_000, memory_bytes: 25, ..old.clone() };
        let row = row(&new, at + Duration::from_secs(1), Some(&(old, at)));
        assert_eq!((row.cpu_perc.as_str(), row.mem_perc.as_str(), row.id.len()), ("50.00%", "25.00%", 12));
    }
}
