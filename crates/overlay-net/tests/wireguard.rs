//! The WireGuard device between two namespace "hosts" joined by a veth
//! pair (198.18.x.y underlay, 100.64.x.y overlay): real processes, real
//! `wg`, real packets. Needs root; everything made is removed, also when
//! a test fails.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

use shoal_overlay_net::wireguard::{socket_path, PeerConfig, WireguardDevice, DEFAULT_LISTEN_PORT};

const SHOAL_WIREGUARD: &str = env!("CARGO_BIN_EXE_shoal-wireguard");

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

macro_rules! require_root {
    () => {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
    };
}

fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program} {args:?}: {e}"));
    assert!(output.status.success(), "{program} {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs `body` on a thread inside the named network namespace, with a
/// runtime of its own (a spawned device process starts in that namespace).
fn in_netns<T: Send + 'static>(netns: &str, body: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{netns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("the namespace file");
        // SAFETY: moves this thread (alone) into the namespace.
        assert_eq!(unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) }, 0, "setns {path}");
        body()
    })
    .join()
    .expect("the namespace thread")
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime").block_on(future)
}

struct Host {
    netns: String,
    veth: String,
    underlay: Ipv4Addr,
    overlay: Ipv4Addr,
    device: String,
}

/// Two hosts on a veth pair; removes devices and namespaces on drop.
struct Lab {
    hosts: [Host; 2],
    dir: tempfile::TempDir,
    children: Vec<Child>,
}

impl Lab {
    fn new(test: u8) -> Lab {
        let tag = format!("{:05x}{test}", std::process::id() & 0xfffff);
        let host = |side: u8| Host {
            netns: format!("swt{tag}{side}"),
            veth: format!("swv{tag}{side}"),
            underlay: Ipv4Addr::new(198, 18, 240 + test, side + 1),
            overlay: Ipv4Addr::new(100, 64, 240 + test, side + 1),
            device: format!("swg{tag}{side}"),
        };
        let lab = Lab { hosts: [host(0), host(1)], dir: tempfile::tempdir().expect("a temporary directory"), children: Vec::new() };
        let [a, b] = &lab.hosts;
        for host in [a, b] {
            run("ip", &["netns", "add", &host.netns]);
        }
        run("ip", &["link", "add", &a.veth, "netns", &a.netns, "type", "veth", "peer", "name", &b.veth, "netns", &b.netns]);
        for host in [a, b] {
            lab.exec(host, &["ip", "addr", "add", &format!("{}/24", host.underlay), "dev", &host.veth]);
            lab.exec(host, &["ip", "link", "set", &host.veth, "up"]);
            lab.exec(host, &["ip", "link", "set", "lo", "up"]);
        }
        lab
    }

    fn exec(&self, host: &Host, command: &[&str]) -> String {
        let mut args = vec![format!("--net=/run/netns/{}", host.netns)];
        args.extend(command.iter().map(|s| s.to_string()));
        run("nsenter", &args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    fn key_path(&self, host: &Host) -> PathBuf {
        self.dir.path().join(format!("{}.key", host.device))
    }

    fn ensure(&self, side: usize) -> WireguardDevice {
        let host = &self.hosts[side];
        let (name, key) = (host.device.clone(), self.key_path(host));
        in_netns(&host.netns, move || {
            block_on(WireguardDevice::ensure(&name, DEFAULT_LISTEN_PORT, &key, Path::new(SHOAL_WIREGUARD)))
        })
        .expect("ensure the device")
    }

    /// The overlay address on the device and a route to the other host's.
    fn address_devices(&self) {
        for (host, other) in [(&self.hosts[0], &self.hosts[1]), (&self.hosts[1], &self.hosts[0])] {
            self.exec(host, &["ip", "addr", "add", &format!("{}/32", host.overlay), "dev", &host.device]);
            self.exec(host, &["ip", "route", "add", &format!("{}/32", other.overlay), "dev", &host.device]);
        }
    }

    fn peer_of(&self, side: usize, device: &WireguardDevice) -> PeerConfig {
        let host = &self.hosts[side];
        PeerConfig {
            public_key: device.public_key(),
            endpoint: SocketAddr::V4(SocketAddrV4::new(host.underlay, DEFAULT_LISTEN_PORT)),
            allowed_ips: vec![format!("{}/32", host.overlay).parse().unwrap()],
            persistent_keepalive: None,
        }
    }

    /// Devices on both hosts, each with the other as its peer.
    fn connected(&self) -> [WireguardDevice; 2] {
        let devices = [self.ensure(0), self.ensure(1)];
        self.address_devices();
        block_on(async {
            devices[0].set_peers(&[self.peer_of(1, &devices[1])]).await.expect("peers of A");
            devices[1].set_peers(&[self.peer_of(0, &devices[0])]).await.expect("peers of B");
        });
        devices
    }

    fn ping(&self, from: usize, to: usize) -> bool {
        let target = self.hosts[to].overlay.to_string();
        let mut command = Command::new("nsenter");
        command.arg(format!("--net=/run/netns/{}", self.hosts[from].netns));
        command.args(["ping", "-c", "3", "-i", "0.2", "-W", "2", &target]);
        command.stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|status| status.success())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for host in &self.hosts {
            let _ = block_on(WireguardDevice::remove(&host.device));
            let _ = Command::new("ip").args(["netns", "del", &host.netns]).status();
        }
    }
}

fn wg_dump(device: &str) -> Vec<Vec<String>> {
    run("wg", &["show", device, "dump"]).lines().map(|line| line.split('\t').map(String::from).collect()).collect()
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs()
}

fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')))
}

#[test]
fn hosts_talk_through_the_tunnel_and_wg_show_sees_the_peers() {
    require_root!();
    let lab = Lab::new(1);
    let [a, b] = lab.connected();
    assert!(lab.ping(0, 1), "ping A -> B over the tunnel");
    assert!(lab.ping(1, 0), "ping B -> A over the tunnel");

    // `wg show` (wireguard-tools) reads our userspace device.
    let dump = wg_dump(a.name());
    assert_eq!(dump[0][1], a.public_key().to_string(), "interface line: {dump:?}");
    assert_eq!(dump[0][2], DEFAULT_LISTEN_PORT.to_string());
    let peer = dump.iter().find(|line| line[0] == b.public_key().to_string()).expect("B listed as a peer of A");
    assert_eq!(peer[2], format!("{}:{}", lab.hosts[1].underlay, DEFAULT_LISTEN_PORT));
    assert_eq!(peer[3], format!("{}/32", lab.hosts[1].overlay));
    let handshake: u64 = peer[4].parse().unwrap();
    assert!(now_secs().abs_diff(handshake) < 30, "latest handshake {handshake} is recent");

    let peers = block_on(a.peers()).unwrap();
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].public_key, b.public_key());
    assert!(peers[0].last_handshake.is_some());
    assert!(peers[0].rx_bytes > 0 && peers[0].tx_bytes > 0, "{peers:?}");

    // Setting the same peers again changes nothing (the session stays).
    block_on(a.set_peers(&[lab.peer_of(1, &b)])).unwrap();
    assert_eq!(block_on(a.peers()).unwrap()[0].last_handshake, peers[0].last_handshake);

    // A removed peer disappears from `wg show` and traffic stops.
    block_on(a.set_peers(&[])).unwrap();
    assert_eq!(run("wg", &["show", a.name(), "peers"]).trim(), "");
    assert!(!lab.ping(0, 1), "no peer, no path");
    // And comes back when set again.
    block_on(a.set_peers(&[lab.peer_of(1, &b)])).unwrap();
    assert!(lab.ping(0, 1), "ping after the peer is back");
}

#[test]
fn the_underlay_carries_only_wireguard_udp() {
    require_root!();
    let lab = Lab::new(2);
    lab.connected();
    assert!(lab.ping(0, 1));
    let capture = lab.dir.path().join("underlay.pcap");
    let mut tcpdump = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", lab.hosts[0].netns))
        .args(["tcpdump", "-Z", "root", "--immediate-mode", "-i", &lab.hosts[0].veth, "-U", "-s", "0", "-w"])
        .arg(&capture)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tcpdump");
    // tcpdump says "listening on" once it captures.
    let mut line = String::new();
    BufReader::new(tcpdump.stderr.take().unwrap()).read_line(&mut line).unwrap();
    assert!(line.contains("listening"), "tcpdump: {line}");

    let marker = format!("SHOAL-PLAINTEXT-MARKER-{}-{}", std::process::id(), now_secs());
    let listen_at = SocketAddrV4::new(lab.hosts[1].overlay, 7070);
    let listener = in_netns(&lab.hosts[1].netns, move || TcpListener::bind(listen_at).expect("listen on B's overlay address"));
    let receiver = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("a connection");
        let mut received = String::new();
        stream.read_to_string(&mut received).unwrap();
        received
    });
    let sent = marker.repeat(50);
    let payload = sent.clone();
    in_netns(&lab.hosts[0].netns, move || {
        let mut stream = TcpStream::connect_timeout(&listen_at.into(), Duration::from_secs(5)).expect("connect over the tunnel");
        stream.write_all(payload.as_bytes()).unwrap();
    });
    assert_eq!(receiver.join().unwrap(), sent, "the marker crossed the tunnel");
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: signals the tcpdump we started.
    unsafe { libc::kill(tcpdump.id() as i32, libc::SIGINT) };
    tcpdump.wait().unwrap();

    let raw = std::fs::read(&capture).unwrap();
    assert!(!raw.windows(marker.len()).any(|window| window == marker.as_bytes()), "the marker appears in clear on the underlay");
    let decoded = run("tcpdump", &["-r", capture.to_str().unwrap(), "-nn", "ip"]);
    let packets: Vec<&str> = decoded.lines().collect();
    assert!(packets.len() > 4, "the capture ({} bytes) saw the exchange: {decoded}", raw.len());
    let port = format!(".{DEFAULT_LISTEN_PORT}");
    for packet in packets {
        assert!(packet.contains("UDP") && packet.matches(&port).count() == 2, "not WireGuard UDP: {packet}");
    }
}

// A device killed -9 is replaced by the next ensure, also in the moment
// after the kill when its main thread is already a zombie but its other
// threads (and its control socket) are still winding down: that window
// made this test fail about one run in ten before ensure learnt to look
// again when an adopted device stops answering.
#[test]
fn the_device_outlives_its_starter_and_is_adopted() {
    require_root!();
    let mut lab = Lab::new(3);
    // Host A's device is started by a separate process, as by a daemon.
    let a_host = &lab.hosts[0];
    let mut starter = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", a_host.netns))
        .arg(SHOAL_WIREGUARD)
        .args(["__ensure", &a_host.device, &DEFAULT_LISTEN_PORT.to_string()])
        .arg(lab.key_path(a_host))
        .stdout(Stdio::piped())
        .spawn()
        .expect("the starter process");
    let mut pid = None;
    for line in BufReader::new(starter.stdout.take().unwrap()).lines() {
        if let Some((_, found)) = line.unwrap().split_once("STARTED ") {
            pid = Some(found.trim().parse::<u32>().unwrap());
            break;
        }
    }
    let device_pid = pid.expect("the starter reported the device's pid");
    lab.children.push(starter);

    let b = lab.ensure(1);
    let a = lab.ensure(0);
    assert_eq!(a.pid(), Some(device_pid), "ensure adopts the running device");
    lab.address_devices();
    block_on(async {
        a.set_peers(&[lab.peer_of(1, &b)]).await.unwrap();
        b.set_peers(&[lab.peer_of(0, &a)]).await.unwrap();
    });
    assert!(lab.ping(0, 1));

    // kill -9 the starter: the device and its traffic carry on.
    let starter = &mut lab.children[0];
    starter.kill().unwrap();
    starter.wait().unwrap();
    assert!(process_alive(device_pid), "the device survived its starter");
    assert!(lab.ping(0, 1), "traffic flows after the starter died");
    assert!(lab.ping(1, 0));

    // A new process (this one, again) adopts it, peers and all.
    let adopted = lab.ensure(0);
    assert_eq!(adopted.pid(), Some(device_pid), "no second device");
    assert_eq!(block_on(adopted.peers()).unwrap().len(), 1);
    assert_eq!(a.public_key(), adopted.public_key(), "same key file, same key");

    // A device killed -9 leaves a stale socket: ensure replaces it.
    // SAFETY: kills the device process this test started.
    unsafe { libc::kill(device_pid as i32, libc::SIGKILL) };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while process_alive(device_pid) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(socket_path(adopted.name()).exists(), "the dead device's socket is left behind");
    let replaced = lab.ensure(0);
    assert_ne!(replaced.pid(), Some(device_pid));
    lab.exec(&lab.hosts[0], &["ip", "addr", "add", &format!("{}/32", lab.hosts[0].overlay), "dev", replaced.name()]);
    lab.exec(&lab.hosts[0], &["ip", "route", "add", &format!("{}/32", lab.hosts[1].overlay), "dev", replaced.name()]);
    block_on(replaced.set_peers(&[lab.peer_of(1, &b)])).unwrap();
    assert!(lab.ping(0, 1), "the replacement device carries traffic");

    // remove leaves no process, link or socket.
    let replaced_pid = replaced.pid().unwrap();
    block_on(WireguardDevice::remove(replaced.name())).unwrap();
    assert!(!process_alive(replaced_pid), "the device process is gone");
    assert!(!socket_path(replaced.name()).exists(), "the socket is gone");
    let links = lab.exec(&lab.hosts[0], &["ip", "-o", "link", "show"]);
    assert!(!links.contains(&format!(" {}:", replaced.name())), "the link is gone: {links}");
    // Removing what is not there is fine.
    block_on(WireguardDevice::remove(replaced.name())).unwrap();
}
