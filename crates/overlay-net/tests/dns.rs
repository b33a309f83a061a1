//! The embedded DNS in real network namespaces, asked by a real resolver
//! client (`dig` from dnsutils) inside a sandbox namespace: swarm names over
//! UDP and TCP, answers that change with the directory, forwarding with
//! failover to upstreams in the node's namespace, sockets that close when
//! the sandbox is released and open again after a daemon restart.
//!
//! Needs root and dig: `cargo test -p shoal-overlay-net --test dns`.

use std::future::Future;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record};
use shoal_overlay_net::directory::{Directory, EndpointMode, NetworkAddress, ServiceEntry, TaskEntry};
use shoal_overlay_net::dns::{DnsService, DnsSettings, NetworkInfo};
use shoal_overlay_net::netns::{self, NetnsDir};
use tokio::net::UdpSocket;

/// A node namespace and a sandbox namespace in a private directory, both
/// with loopback up; removed on drop, also when a test fails.
struct Namespaces {
    dir: NetnsDir,
    _tempdir: tempfile::TempDir,
}

impl Namespaces {
    fn new() -> Namespaces {
        assert!(nix::unistd::geteuid().is_root(), "the DNS namespace tests need root (CI runs them as root)");
        let tempdir = tempfile::tempdir().expect("a temporary directory");
        let dir = NetnsDir::new(tempdir.path().join("netns"));
        for name in ["node", "sandbox"] {
            let path = dir.create(name).expect("a namespace");
            let up = Command::new("nsenter").arg(format!("--net={}", path.display())).args(["ip", "link", "set", "lo", "up"]).status();
            assert!(up.is_ok_and(|s| s.success()), "loopback up in {name}");
        }
        Namespaces { dir, _tempdir: tempdir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path(name)
    }

    /// Runs `test` on a runtime whose threads are in the node namespace,
    /// as the daemon's are in the node's.
    fn run_as_node<F: Future<Output = ()>>(&self, test: impl FnOnce() -> F + Send) {
        netns::run_in(&self.path("node"), || {
            tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime").block_on(test())
        })
        .expect("entering the node namespace");
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in ["sandbox", "node"] {
            let _ = self.dir.delete(name);
        }
    }
}

/// What dig got: the status and the answer section's data, sorted.
#[derive(Debug)]
struct Dug {
    status: String,
    /// The header's flags, e.g. `qr aa rd ra`.
    flags: String,
    answers: Vec<String>,
}

async fn dig(sandbox: &Path, args: &[&str]) -> Dug {
    let output = tokio::process::Command::new("nsenter")
        .arg(format!("--net={}", sandbox.display()))
        .args(["dig", "@127.0.0.11", "+tries=1", "+time=4", "+noall", "+comments", "+answer"])
        .args(args)
        .output()
        .await
        .expect("running dig (apt-get install dnsutils)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let status = text
        .split("status: ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .map(str::to_string)
        .unwrap_or_else(|| format!("no answer: {text}{}", String::from_utf8_lossy(&output.stderr)));
    let flags = text.split(";; flags: ").nth(1).and_then(|rest| rest.split(';').next()).unwrap_or_default().to_string();
    let mut answers: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .filter_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            (fields.len() >= 5).then(|| fields[4..].join(" "))
        })
        .collect();
    answers.sort();
    Dug { status, flags, answers }
}

fn at(network: &str, address: [u8; 4]) -> NetworkAddress {
    NetworkAddress { network_id: network.into(), address: Ipv4Addr::from(address) }
}

fn directory(tasks: usize) -> Directory {
    let web = ServiceEntry {
        id: "s-web".into(),
        name: "web".into(),
        mode: EndpointMode::Vip,
        vips: vec![at("front", [100, 64, 9, 2])],
        aliases: Vec::new(),
        ports: Vec::new(),
        tasks: (0..tasks)
            .map(|i| TaskEntry {
                id: format!("t{i}"),
                name: format!("web.{}.t{i}", i + 1),
                node_id: "n1".into(),
                addresses: vec![at("front", [100, 64, 9, 10 + i as u8])],
            })
            .collect(),
    };
    let db = ServiceEntry {
        id: "s-db".into(),
        name: "db".into(),
        mode: EndpointMode::Vip,
        vips: vec![at("back", [100, 64, 10, 2])],
        aliases: Vec::new(),
        ports: Vec::new(),
        tasks: Vec::new(),
    };
    Directory { services: vec![web, db], containers: Vec::new() }
}

fn networks() -> Vec<NetworkInfo> {
    vec![
        NetworkInfo { id: "front".into(), subnet: "100.64.9.0/24".parse().unwrap(), internal: false },
        NetworkInfo { id: "back".into(), subnet: "100.64.10.0/24".parse().unwrap(), internal: false },
    ]
}

/// An upstream in the node namespace on `address`:53: answers every A
/// question with 198.18.0.99, or with `code` and nothing.
async fn upstream(address: Ipv4Addr, code: Option<ResponseCode>) {
    let socket = UdpSocket::bind((address, 53)).await.expect("an upstream socket");
    tokio::spawn(async move {
        let mut buffer = vec![0u8; 4096];
        while let Ok((n, from)) = socket.recv_from(&mut buffer).await {
            let Ok(request) = Message::from_vec(&buffer[..n]) else { continue };
            let mut reply = Message::response(request.metadata.id, request.metadata.op_code);
            reply.add_queries(request.queries.clone());
            match (code, request.queries.first()) {
                (Some(code), _) => reply.metadata.response_code = code,
                (None, Some(query)) => {
                    reply.add_answer(Record::from_rdata(query.name().clone(), 30, RData::A(A(Ipv4Addr::new(198, 18, 0, 99)))));
                }
                (None, None) => continue,
            }
            let _ = socket.send_to(&reply.to_vec().expect("encoding"), from).await;
        }
    });
}

fn new_service(state: &Path) -> DnsService {
    let resolv_conf = state.join("host-resolv.conf");
    std::fs::write(&resolv_conf, "nameserver 127.0.0.1\n").expect("a host resolv.conf");
    let service = DnsService::new(state.join("dns"), resolv_conf);
    service.set_networks(networks());
    service.set_directory(&directory(3));
    service
}

#[test]
fn a_sandbox_resolves_swarm_names_and_forwards_the_rest() {
    let namespaces = Namespaces::new();
    let state = tempfile::tempdir().expect("a state directory");
    let sandbox = namespaces.path("sandbox");
    namespaces.run_as_node(|| async {
        // 127.0.0.2: nothing listens; .3 answers SERVFAIL; .1 answers.
        upstream(Ipv4Addr::new(127, 0, 0, 3), Some(ResponseCode::ServFail)).await;
        upstream(Ipv4Addr::new(127, 0, 0, 1), None).await;
        let service = new_service(state.path());
        let settings = DnsSettings::parse(
            &["127.0.0.2".into(), "127.0.0.3".into(), "127.0.0.1".into()],
            &["example.test".into()],
            &["timeout:2".into()],
        )
        .expect("valid settings");
        let resolv_conf = service.configure("sandbox", &settings).await.expect("configure");
        let text = std::fs::read_to_string(&resolv_conf).expect("the sandbox's resolv.conf");
        assert_eq!(text.lines().filter(|l| !l.starts_with('#')).collect::<Vec<_>>(), [
            "search example.test",
            "nameserver 127.0.0.11",
            "options ndots:0 timeout:2"
        ]);
        service.serve("sandbox", &sandbox, vec!["front".into()]).await.expect("serve");

        let vip = dig(&sandbox, &["web"]).await;
        assert_eq!((vip.status.as_str(), vip.answers.clone()), ("NOERROR", vec!["100.64.9.2".to_string()]), "{vip:?}");
        assert!(vip.flags.contains("aa"), "the swarm's names are answered with authority: {vip:?}");
        let tasks = dig(&sandbox, &["+tcp", "tasks.web"]).await;
        assert_eq!(tasks.answers, ["100.64.9.10", "100.64.9.11", "100.64.9.12"], "over TCP: {tasks:?}");
        let ptr = dig(&sandbox, &["-x", "100.64.9.11"]).await;
        assert_eq!(ptr.answers, ["web.2.t1."], "{ptr:?}");
        let other = dig(&sandbox, &["db"]).await;
        assert_eq!((other.status.as_str(), other.answers.len()), ("NXDOMAIN", 0), "db is on back only: {other:?}");
        let outside = dig(&sandbox, &["outside.example"]).await;
        assert_eq!((outside.status.as_str(), outside.answers.clone()), ("NOERROR", vec!["198.18.0.99".to_string()]), "{outside:?}");

        // 100 tasks do not fit in a datagram: truncated over UDP (TC), and
        // dig asks again over TCP.
        service.set_directory(&directory(100));
        let truncated = dig(&sandbox, &["+ignore", "+bufsize=512", "tasks.web"]).await;
        assert!(truncated.answers.is_empty() && truncated.flags.split(' ').any(|f| f == "tc"), "{truncated:?}");
        assert_eq!(dig(&sandbox, &["tasks.web"]).await.answers.len(), 100);
        // The directory changes: the answer changes with it, at once.
        service.set_directory(&directory(1));
        assert_eq!(dig(&sandbox, &["tasks.web"]).await.answers, ["100.64.9.10"]);
        // The sandbox joins back: db answers too (its first network first).
        service.serve("sandbox", &sandbox, vec!["back".into(), "front".into()]).await.expect("serve again");
        assert_eq!(dig(&sandbox, &["db"]).await.answers, ["100.64.10.2"]);

        // A restarted daemon (a new service on the same state) serves the
        // sandbox again, with the sandbox's own upstreams.
        drop(service);
        let restarted = new_service(state.path());
        restarted.serve("sandbox", &sandbox, vec!["front".into()]).await.expect("serve after a restart");
        assert_eq!(dig(&sandbox, &["web"]).await.answers, ["100.64.9.2"]);
        assert_eq!(dig(&sandbox, &["again.example"]).await.answers, ["198.18.0.99"]);

        // Released: the sockets close and the files go.
        restarted.stop("sandbox").await.expect("stop");
        let gone = dig(&sandbox, &["web"]).await;
        assert!(gone.status.starts_with("no answer"), "{gone:?}");
        assert!(!resolv_conf.exists(), "the sandbox's resolv.conf is removed");
        assert!(restarted.served().await.is_empty());
    });
}

#[test]
fn a_sandbox_without_dns_settings_uses_the_nodes_upstreams_but_not_its_loopback_ones() {
    let namespaces = Namespaces::new();
    let state = tempfile::tempdir().expect("a state directory");
    let sandbox = namespaces.path("sandbox");
    namespaces.run_as_node(|| async {
        upstream(Ipv4Addr::new(127, 0, 0, 1), None).await;
        let service = new_service(state.path());
        service.configure("sandbox", &DnsSettings::default()).await.expect("configure");
        service.serve("sandbox", &sandbox, vec!["front".into()]).await.expect("serve");
        // The node's 127.0.0.1 is not the sandbox's, and the daemon does not
        // run in the machine's first namespace here: nothing to ask.
        let outside = dig(&sandbox, &["outside.example"]).await;
        assert_eq!(outside.status, "SERVFAIL", "{outside:?}");
        assert_eq!(dig(&sandbox, &["web"]).await.answers, ["100.64.9.2"], "swarm names still answer");
        service.stop("sandbox").await.expect("stop");
    });
}
