//! The closing table: every figure with its target, MISSED beside any
//! that misses it.

use std::time::Duration;

use super::{Report, Transfer, GBIT_TARGET, IPERF_SECONDS, PINGS, RATIO_TARGET, RSS_TARGET_MIB};

const LABEL: usize = 62;
const VALUE: usize = 22;

impl Report {
    pub fn print(&self, load_before: &str, load_after: &str) {
        println!();
        println!("overlay networks: dev cluster {} (manager1 + worker1), ours and the plain paths in the same run", self.cluster);
        println!("load average before: {load_before}; after: {load_after}");
        println!("MTU: overlay (task eth0) {0}, kernel VXLAN {0}, underlay eth0 1500", self.mtu);
        println!();
        println!("{:<LABEL$} {:>VALUE$} {:>10}", "figure", "measured", "target");
        for t in &self.throughput {
            let gbit = |x: &Transfer| format!("{:.2} Gbit/s", x.gbits());
            heading(&format!("iperf3 TCP, {IPERF_SECONDS} s, -P {}", t.streams));
            row("encrypted overlay, task to task (WireGuard)", gbit(&t.overlay), ">= 1", t.overlay.gbits() >= GBIT_TARGET);
            row("plain underlay, host to host (eth0)", gbit(&t.underlay), "yardstick", true);
            row("plain kernel VXLAN, host to host", gbit(&t.vxlan), "yardstick", true);
            for (plain, name) in [(&t.underlay, "underlay"), (&t.vxlan, "kernel VXLAN")] {
                let ratio = t.overlay.gbits() / plain.gbits();
                row(&format!("ratio encrypted / plain {name}"), format!("{ratio:.2}x"), ">= 0.30x", ratio >= RATIO_TARGET);
            }
            let retransmits = format!("{} / {} / {}", t.overlay.retransmits, t.underlay.retransmits, t.vxlan.retransmits);
            info("TCP retransmits overlay / underlay / VXLAN", retransmits);
            let gb = t.overlay.bytes as f64 / 1e9;
            let [sender, receiver] = t.device_cpu;
            info(&format!("WireGuard device CPU per GB, both nodes ({gb:.2} GB moved)"), format!("{:.2} s/GB", (sender + receiver) / gb));
            info("  manager1 (sends) / worker1 (receives)", format!("{:.2} / {:.2} s/GB", sender / gb, receiver / gb));
            let busy = |cpu: f64| cpu / f64::from(IPERF_SECONDS) * 100.0;
            info("  device busy, share of one core", format!("{:.0}% / {:.0}%", busy(sender), busy(receiver)));
        }
        heading(&format!("ping round trip, {PINGS} pings at 10 ms: median / p99"));
        for (what, latency) in &self.rtt {
            let lost = PINGS - latency.replies;
            let lost = if lost == 0 { String::new() } else { format!(" ({lost} lost)") };
            info(what, format!("{:.3} / {:.3} ms{lost}", latency.median_ms, latency.p99_ms));
        }
        heading("service create --network (2 tasks, 2 nodes) until the first packet");
        let mut sorted: Vec<Duration> = self.first_packet.iter().map(|f| f.took).collect();
        sorted.sort();
        info(&format!("median of {}", sorted.len()), format!("{} ms", sorted[sorted.len() / 2].as_millis()));
        let runs: Vec<String> = self.first_packet.iter().map(|f| f.took.as_millis().to_string()).collect();
        info("each run (ms)", runs.join(","));
        let found: Vec<String> = self.first_packet.iter().map(|f| f.found.as_millis().to_string()).collect();
        info("  both task sandboxes addressed, probing began (ms)", found.join(","));
        let probes: Vec<String> = self.first_packet.iter().map(|f| f.probes.to_string()).collect();
        info("  SYNs sent until one was answered", probes.join(","));
        let peers: Vec<String> = self.first_packet.iter().map(|f| f.peers_before.to_string()).collect();
        info("manager1's WireGuard peers when each run began", peers.join(","));
        heading("node RSS, daemon + WireGuard device");
        let mib = |kib: u64| kib as f64 / 1024.0;
        for (before, after) in self.rss_before.iter().zip(&self.rss_with_mesh) {
            let host = &before.host;
            let split = |r: &super::NodeRss| format!("{:.1} + {:.1} MiB", mib(r.daemon_kib), mib(r.device_kib));
            info(&format!("{host}: no overlay network yet, device up ({} peers)", before.peers), split(before));
            info(&format!("{host}: mesh carrying the service ({} peers)", after.peers), split(after));
            let more = after.total_mib() - before.total_mib();
            row(&format!("{host}: with the mesh, more than without"), format!("{more:+.1} MiB"), "<= 10 MiB", more <= RSS_TARGET_MIB);
            // The stricter reading: the idle device counts as mesh cost too.
            let strict = after.total_mib() - mib(before.daemon_kib);
            row(&format!("{host}: same, the idle device counted too"), format!("{strict:+.1} MiB"), "<= 10 MiB", strict <= RSS_TARGET_MIB);
        }
        println!();
        println!("for scale (published, not measured here): Swarm's IPsec overlay 262 KB/s vs 113 MB/s plain");
        println!("(moby#33133); wireguard-go 10+ Gbit/s with TUN offloads and UDP GSO/GRO.");
    }
}

fn heading(text: &str) {
    println!("{text}");
}

fn row(what: &str, value: String, target: &str, ok: bool) {
    let verdict = if ok { "" } else { "  MISSED" };
    println!("  {what:<w$} {value:>VALUE$} {target:>10}{verdict}", w = LABEL - 2);
}

fn info(what: &str, value: String) {
    println!("  {what:<w$} {value:>VALUE$}", w = LABEL - 2);
}
