//! `container stats`: a running container's resource counters, read from
//! its cgroup (CPU time, memory and its limit, pids, block I/O) and from
//! its network namespace (bytes in and out of its interfaces). The CLI
//! turns two readings into rates and percentages, as docker does.

use std::path::Path;

use serde::Serialize;

use super::cgroups::{Cgroup, Layout};

/// Counters at one instant; all cumulative but memory and pids.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// CPU time used by every process of the container, ever.
    pub cpu_nanos: u64,
    /// Memory in use, less the page cache docker leaves out (inactive file).
    pub memory_bytes: u64,
    /// The container's memory limit, or the host's memory without one.
    pub memory_limit_bytes: u64,
    pub pids: u64,
    pub net_rx_bytes: u64,
    pub net_tx_bytes: u64,
    pub block_read_bytes: u64,
    pub block_write_bytes: u64,
}

/// Reads the counters of the container whose cgroup is `cgroup` and whose
/// first process is `pid`.
pub fn read(cgroup: &Cgroup, pid: i32) -> Usage {
    let (net_rx_bytes, net_tx_bytes) = network(pid);
    let (block_read_bytes, block_write_bytes) = block_io(cgroup);
    let host_memory = host_memory_bytes();
    let (memory_bytes, limit) = memory(cgroup);
    Usage {
        cpu_nanos: cpu_nanos(cgroup),
        memory_bytes,
        memory_limit_bytes: limit.filter(|l| *l < host_memory).unwrap_or(host_memory),
        pids: number(cgroup.controller_dir("pids"), "pids.current").unwrap_or(0),
        net_rx_bytes,
        net_tx_bytes,
        block_read_bytes,
        block_write_bytes,
    }
}

fn read_file(dir: Option<&Path>, file: &str) -> Option<String> {
    std::fs::read_to_string(dir?.join(file)).ok()
}

fn number(dir: Option<&Path>, file: &str) -> Option<u64> {
    read_file(dir, file)?.trim().parse().ok()
}

/// `key value` lines (cpu.stat, memory.stat).
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

fn cpu_nanos(cgroup: &Cgroup) -> u64 {
    match cgroup.layout {
        Layout::Unified => read_file(cgroup.controller_dir("cpu"), "cpu.stat").and_then(|s| keyed(&s, "usage_usec")).unwrap_or(0) * 1000,
        Layout::V1(_) => number(cgroup.controller_dir("cpuacct"), "cpuacct.usage").unwrap_or(0),
    }
}

/// In use (less inactive page cache, as docker reports it) and the limit.
fn memory(cgroup: &Cgroup) -> (u64, Option<u64>) {
    let dir = cgroup.controller_dir("memory");
    let (usage, stat, limit) = match cgroup.layout {
        Layout::Unified => (number(dir, "memory.current"), read_file(dir, "memory.stat"), number(dir, "memory.max")),
        Layout::V1(_) => (number(dir, "memory.usage_in_bytes"), read_file(dir, "memory.stat"), number(dir, "memory.limit_in_bytes")),
    };
    let inactive_file = stat
        .as_deref()
        .and_then(|s| keyed(s, "total_inactive_file").or_else(|| keyed(s, "inactive_file")))
        .unwrap_or(0);
    (usage.unwrap_or(0).saturating_sub(inactive_file), limit)
}

/// Bytes read and written on block devices.
fn block_io(cgroup: &Cgroup) -> (u64, u64) {
    let dir = cgroup.controller_dir(match cgroup.layout {
        Layout::Unified => "io",
        Layout::V1(_) => "blkio",
    });
    let (mut read, mut write) = (0, 0);
    match cgroup.layout {
        // `MAJ:MIN rbytes=N wbytes=N ...` per device.
        Layout::Unified => {
            for field in read_file(dir, "io.stat").unwrap_or_default().split_whitespace() {
                if let Some(n) = field.strip_prefix("rbytes=").and_then(|n| n.parse::<u64>().ok()) {
                    read += n;
                } else if let Some(n) = field.strip_prefix("wbytes=").and_then(|n| n.parse::<u64>().ok()) {
                    write += n;
                }
            }
        }
        // `MAJ:MIN Read N` / `MAJ:MIN Write N` per device.
        Layout::V1(_) => {
            for line in read_file(dir, "blkio.throttle.io_service_bytes").unwrap_or_default().lines() {
                let fields: Vec<&str> = line.split_whitespace().collect();
                if let [_, op, n] = fields.as_slice() {
                    let n: u64 = n.parse().unwrap_or(0);
                    match *op {
                        "Read" => read += n,
                        "Write" => write += n,
                        _ => {}
                    }
                }
            }
        }
    }
    (read, write)
}

/// Bytes received and sent on the container's interfaces but loopback.
fn network(pid: i32) -> (u64, u64) {
    let dev = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).unwrap_or_default();
    let (mut rx, mut tx) = (0, 0);
    for line in dev.lines().skip(2) {
        let Some((name, counters)) = line.split_once(':') else { continue };
        if name.trim() == "lo" {
            continue;
        }
        let counters: Vec<u64> = counters.split_whitespace().filter_map(|c| c.parse().ok()).collect();
        rx += counters.first().copied().unwrap_or(0);
        tx += counters.get(8).copied().unwrap_or(0);
    }
    (rx, tx)
}

fn host_memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().find_map(|l| l.strip_prefix("MemTotal:")?.trim().strip_suffix("kB")?.trim().parse::<u64>().ok()))
        .map(|kib| kib * 1024)
        .unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_lines_and_this_process_network_read() {
        assert_eq!(keyed("usage_usec 1500\nuser_usec 900\n", "usage_usec"), Some(1500));
        assert_eq!(keyed("total_inactive_file 4096\ninactive_file 1", "inactive_file"), Some(1));
        // Our own namespace has at least loopback, which is left out.
        let (rx, tx) = network(std::process::id() as i32);
        assert!(rx < u64::MAX && tx < u64::MAX);
        assert!(host_memory_bytes() > 1 << 20);
    }
}
