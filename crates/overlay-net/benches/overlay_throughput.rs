//! Container-to-container TCP throughput across two namespace hosts,
//! through the encrypted WireGuard device and over a plain routed path on
//! the same hosts and containers, in the same run:
//!
//!     cargo bench -p shoal-overlay-net --bench overlay_throughput
//!
//! Needs root and iperf3. Each host is a network namespace on a veth
//! underlay (198.18.250.0/24, MTU 1500); each has a bridge carrying the
//! overlay gateway 100.64.250.1/24 and one "container" namespace on it
//! (100.64.250.2 on host A, .3 on host B, MTU 1440 = 1500 - 60), as the
//! overlay layout has it. Encrypted: the remote container's /32 routes
//! into the WireGuard device. Plain: the same /32 routes via the other
//! host's underlay address, no encapsulation and no encryption.
//! SHOAL_BENCH_SECONDS sets the iperf3 duration (default 10).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use shoal_overlay_net::wireguard::{PeerConfig, WireguardDevice, DEFAULT_LISTEN_PORT};

const SHOAL_WIREGUARD: &str = env!("CARGO_BIN_EXE_shoal-wireguard");
const OVERLAY_MTU: &str = "1440";

struct Host {
    netns: String,
    container: String,
    underlay: Ipv4Addr,
    container_ip: Ipv4Addr,
    device: String,
}

struct Bench {
    hosts: [Host; 2],
    dir: tempfile::TempDir,
}

impl Drop for Bench {
    fn drop(&mut self) {
        for host in &self.hosts {
            let _ = block_on(WireguardDevice::remove(&host.device));
            let _ = Command::new("ip").args(["netns", "del", &host.container]).status();
            let _ = Command::new("ip").args(["netns", "del", &host.netns]).status();
        }
    }
}

fn main() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || Command::new("iperf3").arg("--version").output().is_err() {
        eprintln!("overlay_throughput: skipped (needs root and iperf3)");
        return;
    }
    let seconds: u32 = std::env::var("SHOAL_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    let bench = Bench::set_up();
    let [a, b] = &bench.hosts;
    let remote = b.container_ip.to_string();
    let local = a.container_ip.to_string();

    // Encrypted: the remote container's address routes into the device.
    let devices = bench.devices();
    let pids: Vec<u32> = devices.iter().filter_map(WireguardDevice::pid).collect();
    bench.warm_up();
    let cpu_before: Vec<f64> = pids.iter().map(|&pid| cpu_seconds(pid)).collect();
    let encrypted = bench.iperf(seconds);
    let cpu_after: Vec<f64> = pids.iter().map(|&pid| cpu_seconds(pid)).collect();
    let encrypted_rtt = (bench.ping(a, &remote), bench.ping(b, &local));
    let handshake = block_on(devices[0].peers()).expect("peers").first().and_then(|peer| peer.last_handshake).is_some();

    // Plain: the same containers, routed over the underlay in clear.
    bench.route_over_underlay();
    bench.warm_up();
    let plain = bench.iperf(seconds);
    let plain_rtt = (bench.ping(a, &remote), bench.ping(b, &local));

    // Plain overlay: kernel VXLAN between the hosts, no encryption.
    bench.route_over_vxlan();
    bench.warm_up();
    let vxlan = bench.iperf(seconds);
    let vxlan_rtt = (bench.ping(a, &remote), bench.ping(b, &local));

    let gigabytes = encrypted.bytes as f64 / 1e9;
    let cpu_per_gb: Vec<f64> = cpu_before.iter().zip(&cpu_after).map(|(before, after)| (after - before) / gigabytes).collect();
    println!();
    println!("overlay throughput, container to container across two namespace hosts ({seconds} s iperf3 TCP, 1 stream)");
    println!("  command: nsenter --net=/run/netns/{} iperf3 -c {remote} -t {seconds} -J", a.container);
    println!("  encrypted (WireGuard, userspace device): {:>7.2} Gbit/s  retransmits {}", encrypted.gbits(), encrypted.retransmits);
    println!("  plain (routed veth/bridge, no encryption): {:>5.2} Gbit/s  retransmits {}", plain.gbits(), plain.retransmits);
    println!("  plain (kernel VXLAN, no encryption):       {:>5.2} Gbit/s  retransmits {}", vxlan.gbits(), vxlan.retransmits);
    println!("  ratio encrypted/plain routed: {:.2}x", encrypted.gbits() / plain.gbits());
    println!("  ratio encrypted/plain VXLAN:  {:.2}x", encrypted.gbits() / vxlan.gbits());
    println!("  ping RTT A->B / B->A, encrypted:    {:.3} / {:.3} ms", encrypted_rtt.0, encrypted_rtt.1);
    println!("  ping RTT A->B / B->A, plain routed: {:.3} / {:.3} ms", plain_rtt.0, plain_rtt.1);
    println!("  ping RTT A->B / B->A, plain VXLAN:  {:.3} / {:.3} ms", vxlan_rtt.0, vxlan_rtt.1);
    println!(
        "  device CPU per GB transferred: sender side {:.2} s, receiver side {:.2} s ({:.2} GB moved)",
        cpu_per_gb[0], cpu_per_gb[1], gigabytes
    );
    println!("  handshake seen by wireguard-control: {handshake}");
}

impl Bench {
    fn set_up() -> Bench {
        let tag = format!("{:05x}", std::process::id() & 0xfffff);
        let host = |side: u8| Host {
            netns: format!("sbh{tag}{side}"),
            container: format!("sbc{tag}{side}"),
            underlay: Ipv4Addr::new(198, 18, 250, side + 1),
            container_ip: Ipv4Addr::new(100, 64, 250, side + 2),
            device: format!("sbw{tag}{side}"),
        };
        let bench = Bench { hosts: [host(0), host(1)], dir: tempfile::tempdir().expect("a temporary directory") };
        let [a, b] = &bench.hosts;
        for host in [a, b] {
            run("ip", &["netns", "add", &host.netns]);
            run("ip", &["netns", "add", &host.container]);
        }
        let (under_a, under_b) = (format!("sbu{tag}0"), format!("sbu{tag}1"));
        run("ip", &["link", "add", &under_a, "netns", &a.netns, "type", "veth", "peer", "name", &under_b, "netns", &b.netns]);
        for (host, underlay_link) in [(a, &under_a), (b, &under_b)] {
            let (bridge, outside, inside) = ("br0", "vhost0", "eth0");
            host.exec(&["ip", "link", "set", "lo", "up"]);
            host.exec(&["ip", "addr", "add", &format!("{}/24", host.underlay), "dev", underlay_link]);
            host.exec(&["ip", "link", "set", underlay_link, "up"]);
            host.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
            host.exec(&["ip", "link", "add", bridge, "type", "bridge"]);
            host.exec(&["ip", "addr", "add", "100.64.250.1/24", "dev", bridge]);
            host.exec(&["ip", "link", "set", bridge, "up"]);
            host.exec(&["sysctl", "-qw", &format!("net.ipv4.conf.{bridge}.proxy_arp=1")]);
            host.exec(&["ip", "link", "add", outside, "mtu", OVERLAY_MTU, "type", "veth", "peer", "name", inside, "netns", &host.container]);
            host.exec(&["ip", "link", "set", outside, "master", bridge, "up"]);
            let container = |args: &[&str]| {
                let mut full = vec![format!("--net=/run/netns/{}", host.container)];
                full.extend(args.iter().map(|s| s.to_string()));
                run("nsenter", &full.iter().map(String::as_str).collect::<Vec<_>>());
            };
            container(&["ip", "link", "set", "lo", "up"]);
            container(&["ip", "link", "set", inside, "mtu", OVERLAY_MTU, "up"]);
            container(&["ip", "addr", "add", &format!("{}/24", host.container_ip), "dev", inside]);
            container(&["ip", "route", "add", "default", "via", "100.64.250.1"]);
        }
        bench
    }

    fn devices(&self) -> Vec<WireguardDevice> {
        let devices: Vec<WireguardDevice> = self
            .hosts
            .iter()
            .map(|host| {
                let (name, key) = (host.device.clone(), self.dir.path().join(format!("{}.key", host.device)));
                in_netns(&host.netns, move || {
                    block_on(WireguardDevice::ensure(&name, DEFAULT_LISTEN_PORT, &key, Path::new(SHOAL_WIREGUARD)))
                })
                .expect("a WireGuard device")
            })
            .collect();
        for (side, device) in devices.iter().enumerate() {
            let other = &self.hosts[1 - side];
            let peer = PeerConfig {
                public_key: devices[1 - side].public_key(),
                endpoint: SocketAddr::V4(SocketAddrV4::new(other.underlay, DEFAULT_LISTEN_PORT)),
                allowed_ips: vec![format!("{}/32", other.container_ip).parse().unwrap()],
                persistent_keepalive: None,
            };
            block_on(device.set_peers(&[peer])).expect("peers");
            self.hosts[side].exec(&["ip", "route", "replace", &format!("{}/32", other.container_ip), "dev", &self.hosts[side].device]);
        }
        devices
    }

    /// Routes each host's remote container over the underlay, in clear.
    fn route_over_underlay(&self) {
        for side in 0..2 {
            let (host, other) = (&self.hosts[side], &self.hosts[1 - side]);
            host.exec(&["ip", "route", "replace", &format!("{}/32", other.container_ip), "via", &other.underlay.to_string()]);
        }
    }

    /// Routes each host's remote container through a kernel VXLAN link
    /// between the hosts (198.19.250.0/24 on it), unencrypted.
    fn route_over_vxlan(&self) {
        for side in 0..2 {
            let (host, other) = (&self.hosts[side], &self.hosts[1 - side]);
            let underlay_link = format!("sbu{}{side}", &host.netns[3..8]);
            host.exec(&[
                "ip", "link", "add", "vx0", "type", "vxlan", "id", "42", "dstport", "4789",
                "local", &host.underlay.to_string(), "remote", &other.underlay.to_string(), "dev", &underlay_link,
            ]);
            host.exec(&["ip", "addr", "add", &format!("198.19.250.{}/24", side + 1), "dev", "vx0"]);
            host.exec(&["ip", "link", "set", "vx0", "up"]);
            let via = format!("198.19.250.{}", 2 - side);
            host.exec(&["ip", "route", "replace", &format!("{}/32", other.container_ip), "via", &via, "dev", "vx0"]);
        }
    }

    fn warm_up(&self) {
        let remote = self.hosts[1].container_ip.to_string();
        let mut command = Command::new("nsenter");
        command.arg(format!("--net=/run/netns/{}", self.hosts[0].container));
        command.args(["ping", "-c", "3", "-i", "0.2", "-W", "2", &remote]);
        let ok = command.stdout(Stdio::null()).status().is_ok_and(|s| s.success());
        assert!(ok, "container A cannot reach container B");
    }

    fn iperf(&self, seconds: u32) -> Transfer {
        let [a, b] = &self.hosts;
        let server_at = b.container_ip.to_string();
        let mut server = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", b.container))
            .args(["iperf3", "-s", "-1", "-B", &server_at])
            .stdout(Stdio::null())
            .spawn()
            .expect("iperf3 server");
        std::thread::sleep(Duration::from_millis(300));
        let output = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", a.container))
            .args(["iperf3", "-c", &server_at, "-t", &seconds.to_string(), "-J"])
            .output()
            .expect("iperf3 client");
        let _ = server.wait();
        let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("iperf3 JSON");
        let end = &report["end"];
        Transfer {
            bits_per_second: end["sum_received"]["bits_per_second"].as_f64().expect("iperf3 result"),
            bytes: end["sum_received"]["bytes"].as_u64().unwrap_or(0),
            retransmits: end["sum_sent"]["retransmits"].as_u64().unwrap_or(0),
        }
    }

    fn ping(&self, from: &Host, to: &str) -> f64 {
        let output = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", from.container))
            .args(["ping", "-c", "20", "-i", "0.05", "-q", to])
            .output()
            .expect("ping");
        let text = String::from_utf8_lossy(&output.stdout);
        // "rtt min/avg/max/mdev = 0.041/0.052/0.081/0.009 ms": the average.
        text.lines()
            .find_map(|line| line.split_once(" = ").map(|(_, values)| values.to_string()))
            .and_then(|values| values.split('/').nth(1).and_then(|avg| avg.parse().ok()))
            .unwrap_or(f64::NAN)
    }
}

impl Host {
    fn exec(&self, args: &[&str]) {
        let mut full = vec![format!("--net=/run/netns/{}", self.netns)];
        full.extend(args.iter().map(|s| s.to_string()));
        run("nsenter", &full.iter().map(String::as_str).collect::<Vec<_>>());
    }
}

struct Transfer {
    bits_per_second: f64,
    bytes: u64,
    retransmits: u64,
}

impl Transfer {
    fn gbits(&self) -> f64 {
        self.bits_per_second / 1e9
    }
}

/// User + system CPU seconds a process has used (/proc/PID/stat).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    // After the name: state is field 3, utime 14 and stime 15 (1-based).
    let ticks = |index: usize| fields.get(index - 3).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(14) + ticks(15)) / hz
}

fn run(program: &str, args: &[&str]) {
    let output = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program} {args:?}: {e}"));
    assert!(output.status.success(), "{program} {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
}

fn in_netns<T: Send + 'static>(netns: &str, body: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{netns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("the namespace file");
        // SAFETY: moves this thread (alone) into the namespace.
        assert_eq!(unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
        body()
    })
    .join()
    .expect("the namespace thread")
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime").block_on(future)
}
