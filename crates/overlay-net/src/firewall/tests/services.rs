//! Root: swarm services' rules with real traffic between two "nodes"
//! (namespaces joined by a veth standing in for the WireGuard device, with
//! /32 routes and proxy ARP as the data plane sets them up). Servers answer
//! with their own address and the client address they see, so each check
//! shows which backend answered and what NAT did on the way.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::lab::{Lab, Ns};
use crate::conntrack;
use crate::firewall::namespace::run_in;
use crate::firewall::{
    Firewall, FirewallModel, MeshSource, NetworkRules, PortProtocol, ServicePort, VirtualIp,
};
use crate::load_balancer::stale_entries;

const TIMEOUT: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(20);

/// TCP and UDP servers answering "SERVER PEER": their own address and the
/// client's as they see them.
struct IdentityEcho {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl IdentityEcho {
    fn start(netns: &Path, addr: SocketAddr) -> IdentityEcho {
        let (tcp, udp) = run_in(Some(netns), |_| Ok((TcpListener::bind(addr).unwrap(), UdpSocket::bind(addr).unwrap()))).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        tcp.set_nonblocking(true).unwrap();
        udp.set_read_timeout(Some(POLL)).unwrap();
        let tcp_stop = stop.clone();
        let tcp_thread = std::thread::spawn(move || {
            while !tcp_stop.load(Ordering::Relaxed) {
                match tcp.accept() {
                    Ok((mut stream, peer)) => {
                        stream.set_nonblocking(false).unwrap();
                        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
                        let mut buffer = [0u8; 64];
                        if stream.read(&mut buffer).is_ok() {
                            let _ = stream.write_all(format!("{} {peer}", addr.ip()).as_bytes());
                        }
                    }
                    Err(_) => std::thread::sleep(POLL),
                }
            }
        });
        let udp_stop = stop.clone();
        let udp_thread = std::thread::spawn(move || {
            let mut buffer = [0u8; 64];
            while !udp_stop.load(Ordering::Relaxed) {
                if let Ok((_, peer)) = udp.recv_from(&mut buffer) {
                    let _ = udp.send_to(format!("{} {peer}", addr.ip()).as_bytes(), peer);
                }
            }
        });
        IdentityEcho { stop, threads: vec![tcp_thread, udp_thread] }
    }
}

impl Drop for IdentityEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// What a TCP exchange from `from` to `to` gave.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// (the server's address, the client address it saw)
    From(Ipv4Addr, Ipv4Addr),
    Refused,
    Nothing,
}

fn parse(reply: &str) -> Answer {
    let mut words = reply.split_whitespace();
    let server = words.next().and_then(|w| w.parse().ok());
    let peer = words.next().and_then(|w| w.parse::<SocketAddr>().ok());
    match (server, peer) {
        (Some(server), Some(SocketAddr::V4(peer))) => Answer::From(server, *peer.ip()),
        _ => Answer::Nothing,
    }
}

fn tcp(from: &Path, to: SocketAddr) -> Answer {
    run_in(Some(from), |_| {
        let mut stream = match TcpStream::connect_timeout(&to, TIMEOUT) {
            Ok(stream) => stream,
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => return Ok(Answer::Refused),
            Err(_) => return Ok(Answer::Nothing),
        };
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        let _ = stream.write_all(b"hello");
        let mut reply = String::new();
        let _ = stream.read_to_string(&mut reply);
        Ok(parse(&reply))
    })
    .unwrap()
}

/// A UDP socket in a namespace, kept across datagrams so its flow (and
/// conntrack entry) stays the same.
fn udp_socket(ns: &Path) -> UdpSocket {
    let socket = run_in(Some(ns), |_| Ok(UdpSocket::bind("0.0.0.0:0").unwrap())).unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    socket
}

fn udp(socket: &UdpSocket, to: SocketAddr) -> Answer {
    for _ in 0..3 {
        let _ = socket.send_to(b"hello", to);
        let mut buffer = [0u8; 64];
        if let Ok((len, _)) = socket.recv_from(&mut buffer) {
            return parse(std::str::from_utf8(&buffer[..len]).unwrap_or_default());
        }
    }
    Answer::Nothing
}

fn sysctl(lab: &Lab, ns: &Ns, key: &str) {
    lab.exec_ok(ns, &["sysctl", "-q", "-w", key]);
}

/// Bridge `name` on `node` for a /24 whose gateway is .1, answering ARP
/// for what the node routes elsewhere (remote tasks, VIPs) at once.
fn network_bridge(lab: &Lab, node: &Ns, name: &str, prefix: &str) {
    lab.bridge(node, name, &format!("{prefix}.1/24"));
    sysctl(lab, node, &format!("net.ipv4.conf.{name}.proxy_arp=1"));
    sysctl(lab, node, &format!("net.ipv4.neigh.{name}.proxy_delay=0"));
}

/// Two nodes joined by `ovl`, which answers ARP for each side's tasks.
/// (WireGuard has no ARP; a veth does, and its requests must not come from
/// the gateway address both nodes share, or the other node refuses them
/// as martians: ovl gets addresses of its own.)
fn two_nodes(lab: &Lab) -> (Ns, Ns) {
    let a = lab.netns("a");
    let b = lab.netns("b");
    lab.link(&a, Some("198.18.8.1/24"), &b, Some("198.18.8.2/24"), "ovl");
    for node in [&a, &b] {
        sysctl(lab, node, "net.ipv4.conf.ovl.proxy_arp=1");
        sysctl(lab, node, "net.ipv4.neigh.ovl.proxy_delay=0");
    }
    (a, b)
}

fn route_over_overlay(lab: &Lab, node: &Ns, addresses: &[&str]) {
    for address in addresses {
        lab.exec_ok(node, &["ip", "route", "add", &format!("{address}/32"), "dev", "ovl"]);
    }
}

fn overlay_network(bridge: &str, subnet: &str, internal: bool) -> NetworkRules {
    NetworkRules { bridge: bridge.into(), subnet: subnet.parse().unwrap(), internal, overlay: true }
}

fn ip(text: &str) -> Ipv4Addr {
    text.parse().unwrap()
}

const FRONT: &str = "100.72.1";
const OTHER: &str = "100.72.2";
const CLOSED: &str = "100.72.3";

#[test]
fn vips_balance_across_nodes_refuse_without_backends_and_keep_networks_apart() {
    let lab = Lab::new("vip");
    let (a, b) = two_nodes(&lab);
    network_bridge(&lab, &a, "b1", FRONT);
    network_bridge(&lab, &b, "b1", FRONT);
    network_bridge(&lab, &a, "b2", OTHER);
    network_bridge(&lab, &a, "b3", CLOSED);
    let client = lab.container(&a, "b1", "client", &format!("{FRONT}.10/24"), &format!("{FRONT}.1"));
    let s1 = lab.container(&a, "b1", "s1", &format!("{FRONT}.11/24"), &format!("{FRONT}.1"));
    let s2 = lab.container(&b, "b1", "s2", &format!("{FRONT}.12/24"), &format!("{FRONT}.1"));
    let s3 = lab.container(&b, "b1", "s3", &format!("{FRONT}.13/24"), &format!("{FRONT}.1"));
    let outsider = lab.container(&a, "b2", "outsider", &format!("{OTHER}.10/24"), &format!("{OTHER}.1"));
    // An internal network's VIP, with client and backend on one node.
    let closed_client = lab.container(&a, "b3", "cclient", &format!("{CLOSED}.10/24"), &format!("{CLOSED}.1"));
    let closed_server = lab.container(&a, "b3", "cserver", &format!("{CLOSED}.11/24"), &format!("{CLOSED}.1"));
    let (vip, idle, closed_vip) = (ip(&format!("{FRONT}.2")), ip(&format!("{FRONT}.9")), ip(&format!("{CLOSED}.2")));
    // As the data plane does: remote tasks and VIPs routed to the overlay device.
    route_over_overlay(&lab, &a, &[&format!("{FRONT}.12"), &format!("{FRONT}.13"), &vip.to_string(), &idle.to_string(), &closed_vip.to_string()]);
    route_over_overlay(&lab, &b, &[&format!("{FRONT}.10"), &format!("{FRONT}.11")]);
    let _servers: Vec<IdentityEcho> =
        [&s1, &s2, &s3, &closed_server].iter().map(|s| IdentityEcho::start(&s.ns.path(), SocketAddr::from((s.addr, 80)))).collect();
    let to_vip = SocketAddr::from((vip, 80));

    // Control: without the rules nothing answers on the VIP.
    assert_eq!(tcp(&client.ns.path(), to_vip), Answer::Nothing);

    let backends = vec![s1.addr, s2.addr, s3.addr];
    let vip_of = |backends: Vec<Ipv4Addr>| VirtualIp { service: "web".into(), address: vip, bridge: "b1".into(), backends };
    let model_a = |backends: Vec<Ipv4Addr>| FirewallModel {
        networks: vec![
            overlay_network("b1", &format!("{FRONT}.0/24"), false),
            overlay_network("b2", &format!("{OTHER}.0/24"), false),
            overlay_network("b3", &format!("{CLOSED}.0/24"), true),
        ],
        overlay_device: Some("ovl".into()),
        vips: vec![
            vip_of(backends),
            VirtualIp { service: "idle".into(), address: idle, bridge: "b1".into(), backends: vec![] },
            VirtualIp { service: "db".into(), address: closed_vip, bridge: "b3".into(), backends: vec![closed_server.addr] },
        ],
        ..FirewallModel::default()
    };
    let firewall_a = Firewall::in_namespace(a.path());
    firewall_a.apply(&model_a(backends.clone())).unwrap();
    Firewall::in_namespace(b.path())
        .apply(&FirewallModel {
            networks: vec![overlay_network("b1", &format!("{FRONT}.0/24"), false)],
            overlay_device: Some("ovl".into()),
            ..FirewallModel::default()
        })
        .unwrap();

    // Round robin over all three, across nodes. Remote backends see the
    // client's own address; the one on the client's bridge sees the
    // gateway (hairpin masquerade, or its reply would skip the node).
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..9 {
        match tcp(&client.ns.path(), to_vip) {
            Answer::From(server, peer) => *seen.entry((server, peer)).or_insert(0) += 1,
            other => panic!("the VIP did not answer: {other:?}"),
        }
    }
    let gateway = ip(&format!("{FRONT}.1"));
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        vec![(s1.addr, gateway), (s2.addr, client.addr), (s3.addr, client.addr)],
        "{seen:?}"
    );
    assert!(seen.values().all(|n| *n == 3), "round robin: {seen:?}");
    let udp_client = udp_socket(&client.ns.path());
    assert!(matches!(udp(&udp_client, to_vip), Answer::From(..)), "UDP is balanced too");

    // An internal network's VIP works within it.
    assert!(matches!(tcp(&closed_client.ns.path(), SocketAddr::from((closed_vip, 80))), Answer::From(s, _) if s == closed_server.addr));

    // No backend: refused at once, not a silent timeout.
    let started = Instant::now();
    assert_eq!(tcp(&client.ns.path(), SocketAddr::from((idle, 80))), Answer::Refused);
    assert!(started.elapsed() < Duration::from_secs(1), "refused in {:?}", started.elapsed());
    // Another network's container gets nothing through the VIP (refused),
    // though it reaches the node's gateway.
    assert_eq!(tcp(&outsider.ns.path(), to_vip), Answer::Refused);
    assert!(lab.counter(&a, "inet", "shoal", "forward", "VIPs: no backend for this sender") >= 2);

    // A backend that leaves: the UDP flow that went to it keeps going
    // there while its conntrack entry lives (the control), and moves to a
    // live backend once the entry is deleted.
    let Answer::From(first, _) = udp(&udp_client, to_vip) else { panic!("no UDP answer") };
    let remaining: Vec<Ipv4Addr> = backends.iter().copied().filter(|b| *b != first).collect();
    firewall_a.apply(&model_a(remaining.clone())).unwrap();
    assert!(matches!(udp(&udp_client, to_vip), Answer::From(s, _) if s == first), "conntrack still pins the flow");
    let stale = stale_entries(&model_a(backends.clone()), &model_a(remaining.clone()));
    let deleted = crate::netns::run_in(&a.path(), || conntrack::delete_matching(&stale)).unwrap().unwrap();
    assert!(deleted >= 1, "the flow's entry was deleted");
    match udp(&udp_client, to_vip) {
        Answer::From(server, _) => assert!(remaining.contains(&server), "{server} answered after {first} left"),
        other => panic!("no answer after the backend left: {other:?}"),
    }
    for _ in 0..6 {
        assert!(matches!(tcp(&client.ns.path(), to_vip), Answer::From(s, _) if s != first), "new connections avoid {first}");
    }
    drop(lab);
}

#[test]
fn published_service_ports_reach_tasks_anywhere_through_the_mesh_and_host_mode_locally() {
    let lab = Lab::new("mesh");
    let (a, b) = two_nodes(&lab);
    let outside = lab.netns("outside");
    let (node_a, client) = (ip("198.18.7.1"), ip("198.18.7.2"));
    lab.link(&a, Some("198.18.7.1/24"), &outside, Some("198.18.7.2/24"), "up0");
    const INGRESS: &str = "100.72.0";
    for node in [&a, &b] {
        network_bridge(&lab, node, "bi", INGRESS);
        network_bridge(&lab, node, "b1", FRONT);
    }
    // The nodes' own ingress addresses, each routed to the other over ovl.
    lab.exec_ok(&a, &["ip", "addr", "add", &format!("{INGRESS}.250/32"), "dev", "bi"]);
    lab.exec_ok(&b, &["ip", "addr", "add", &format!("{INGRESS}.251/32"), "dev", "bi"]);
    let remote = lab.container(&b, "bi", "remote", &format!("{INGRESS}.12/24"), &format!("{INGRESS}.1"));
    let local = lab.container(&a, "b1", "local", &format!("{FRONT}.11/24"), &format!("{FRONT}.1"));
    route_over_overlay(&lab, &a, &[&format!("{INGRESS}.12"), &format!("{INGRESS}.251")]);
    route_over_overlay(&lab, &b, &[&format!("{INGRESS}.250")]);
    let _servers = [IdentityEcho::start(&remote.ns.path(), SocketAddr::from((remote.addr, 80))), IdentityEcho::start(&local.ns.path(), SocketAddr::from((local.addr, 80)))];
    let at_a = |port: u16| SocketAddr::from((node_a, port));
    assert_eq!(tcp(&outside.path(), at_a(8080)), Answer::Refused, "control: nothing listens on 8080");

    let networks = || vec![overlay_network("bi", &format!("{INGRESS}.0/24"), false), overlay_network("b1", &format!("{FRONT}.0/24"), false)];
    let port = |published: u16, protocol: PortProtocol, backends: Vec<Ipv4Addr>| ServicePort { service: "web".into(), protocol, published, target: 80, backends };
    Firewall::in_namespace(a.path())
        .apply(&FirewallModel {
            networks: networks(),
            overlay_device: Some("ovl".into()),
            service_ports: vec![
                // Routing mesh: a task on the other node only.
                port(8080, PortProtocol::Tcp, vec![remote.addr]),
                port(8080, PortProtocol::Udp, vec![remote.addr]),
                // No running task.
                port(8081, PortProtocol::Tcp, vec![]),
                // Host mode: this node's own task.
                port(9090, PortProtocol::Tcp, vec![local.addr]),
            ],
            mesh_source: Some(MeshSource { subnet: format!("{INGRESS}.0/24").parse().unwrap(), address: ip(&format!("{INGRESS}.250")) }),
            ..FirewallModel::default()
        })
        .unwrap();
    Firewall::in_namespace(b.path()).apply(&FirewallModel { networks: networks(), overlay_device: Some("ovl".into()), ..FirewallModel::default() }).unwrap();

    // From outside, to a node without the task: the task answers and sees
    // the accepting node's ingress address.
    let mesh_source = ip(&format!("{INGRESS}.250"));
    assert_eq!(tcp(&outside.path(), at_a(8080)), Answer::From(remote.addr, mesh_source));
    assert_eq!(udp(&udp_socket(&outside.path()), at_a(8080)), Answer::From(remote.addr, mesh_source));
    // From the node itself, to its own address.
    assert_eq!(tcp(&a.path(), at_a(8080)), Answer::From(remote.addr, mesh_source));
    // Host mode keeps the client's address.
    assert_eq!(tcp(&outside.path(), at_a(9090)), Answer::From(local.addr, client));
    // No task: refused as any closed port; a container bridge address is
    // not an entry point.
    assert_eq!(tcp(&outside.path(), at_a(8081)), Answer::Refused);
    assert_eq!(tcp(&a.path(), SocketAddr::from((ip(&format!("{FRONT}.1")), 8080))), Answer::Refused);
    // A container on another network reaches the mesh through the node's address.
    assert_eq!(tcp(&local.ns.path(), at_a(8080)), Answer::From(remote.addr, mesh_source));
    drop(lab);
}
