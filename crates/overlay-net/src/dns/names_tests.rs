//! The answer rules against a directory, without sockets or root.

use std::net::Ipv4Addr;
use std::str::FromStr;

use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::names::{Answer, NetworkInfo, Names};
use crate::directory::{
    ContainerEntry, Directory, EndpointMode, NetworkAddress, Protocol, PublishMode, ServiceEntry, ServicePort, TaskEntry,
};

fn ip(text: &str) -> Ipv4Addr {
    text.parse().unwrap()
}

fn at(network: &str, address: &str) -> NetworkAddress {
    NetworkAddress { network_id: network.into(), address: ip(address) }
}

fn task(service: &str, slot: u32, id: &str, addresses: Vec<NetworkAddress>) -> TaskEntry {
    TaskEntry { id: id.into(), name: format!("{service}.{slot}.{id}"), node_id: "n1".into(), addresses }
}

fn port(target: u16, protocol: Protocol) -> ServicePort {
    ServicePort { protocol, target, published: 0, mode: PublishMode::Ingress }
}

/// web (vip) on front and back, three tasks; db (dnsrr) on back, two
/// tasks; a container `probe` with alias `p` on front; networks front,
/// back and a closed internal one.
fn directory() -> Directory {
    Directory {
        services: vec![
            ServiceEntry {
                id: "s-web".into(),
                name: "web".into(),
                mode: EndpointMode::Vip,
                vips: vec![at("front", "100.64.1.2"), at("back", "100.64.2.2")],
                aliases: vec![("front".into(), vec!["www".into()])],
                ports: vec![port(80, Protocol::Tcp)],
                tasks: vec![
                    task("web", 1, "t1", vec![at("front", "100.64.1.10"), at("back", "100.64.2.10")]),
                    task("web", 2, "t2", vec![at("front", "100.64.1.11"), at("back", "100.64.2.11")]),
                    task("web", 3, "t3", vec![at("front", "100.64.1.12"), at("back", "100.64.2.12")]),
                ],
            },
            ServiceEntry {
                id: "s-db".into(),
                name: "db".into(),
                mode: EndpointMode::Dnsrr,
                vips: Vec::new(),
                aliases: Vec::new(),
                ports: vec![port(5432, Protocol::Tcp), port(53, Protocol::Udp)],
                tasks: vec![task("db", 1, "d1", vec![at("back", "100.64.2.20")]), task("db", 2, "d2", vec![at("back", "100.64.2.21")])],
            },
        ],
        containers: vec![ContainerEntry { network_id: "front".into(), name: "probe".into(), address: ip("100.64.1.50"), aliases: vec!["p".into()] }],
    }
}

fn networks() -> Vec<NetworkInfo> {
    vec![
        NetworkInfo { id: "front".into(), subnet: "100.64.1.0/24".parse().unwrap(), internal: false },
        NetworkInfo { id: "back".into(), subnet: "100.64.2.0/24".parse().unwrap(), internal: false },
        NetworkInfo { id: "closed".into(), subnet: "100.64.3.0/24".parse().unwrap(), internal: true },
        NetworkInfo { id: "bridge".into(), subnet: "100.65.0.0/24".parse().unwrap(), internal: false },
    ]
}

fn names() -> Names {
    let local = vec![ContainerEntry { network_id: "bridge".into(), name: "cache".into(), address: ip("100.65.0.2"), aliases: vec!["redis".into()] }];
    Names::build(&directory(), &local, &networks())
}

fn scope(networks: &[&str]) -> Vec<String> {
    networks.iter().map(|n| n.to_string()).collect()
}

fn name(text: &str) -> Name {
    Name::from_str(text).unwrap()
}

/// The A addresses of an answer, sorted; panics on anything else.
fn addresses(answer: Answer) -> Vec<Ipv4Addr> {
    let Answer::Records { answers, .. } = answer else { panic!("expected records, got {answer:?}") };
    let mut addresses: Vec<Ipv4Addr> = answers
        .iter()
        .map(|r| match &r.data {
            RData::A(a) => a.0,
            other => panic!("expected A, got {other:?}"),
        })
        .collect();
    addresses.sort();
    addresses
}

fn a(names: &Names, on: &[&str], text: &str) -> Vec<Ipv4Addr> {
    addresses(names.answer(&scope(on), &name(text), RecordType::A))
}

/// SRV answers as (port, target) sorted.
type SrvTargets = Vec<(u16, String)>;
/// The additional A records of an answer, as (name, address).
type Additionals = Vec<(String, Ipv4Addr)>;

/// SRV answers as (port, target) sorted, and the additional A records.
fn srv(names: &Names, on: &[&str], text: &str) -> (SrvTargets, Additionals) {
    let Answer::Records { answers, additionals } = names.answer(&scope(on), &name(text), RecordType::SRV) else { panic!("no SRV records for {text}") };
    let mut targets: Vec<(u16, String)> = answers
        .iter()
        .map(|r| match &r.data {
            RData::SRV(srv) => (srv.port, srv.target.to_string()),
            other => panic!("expected SRV, got {other:?}"),
        })
        .collect();
    targets.sort();
    let mut extra: Vec<(String, Ipv4Addr)> = additionals
        .iter()
        .map(|r: &Record| match &r.data {
            RData::A(a) => (r.name.to_string(), a.0),
            other => panic!("expected A, got {other:?}"),
        })
        .collect();
    extra.sort();
    (targets, extra)
}

#[test]
fn a_service_name_gives_its_vip_on_the_askers_network() {
    let names = names();
    assert_eq!(a(&names, &["front"], "web"), [ip("100.64.1.2")]);
    assert_eq!(a(&names, &["back"], "web."), [ip("100.64.2.2")]);
    // The sandbox's first network answers.
    assert_eq!(a(&names, &["back", "front"], "web"), [ip("100.64.2.2")]);
    assert_eq!(a(&names, &["front"], "WEB"), [ip("100.64.1.2")], "names are case-insensitive");
    // A record carries the name as asked (0x20 case randomisation survives).
    let Answer::Records { answers, .. } = names.answer(&scope(&["front"]), &Name::from_ascii("WeB.").unwrap(), RecordType::A) else { panic!() };
    assert_eq!(answers[0].name.to_string(), "WeB.");
    assert_eq!(answers[0].ttl, 0);
}

#[test]
fn tasks_name_gives_one_record_per_running_task_on_that_network() {
    let names = names();
    assert_eq!(a(&names, &["front"], "tasks.web"), [ip("100.64.1.10"), ip("100.64.1.11"), ip("100.64.1.12")]);
    assert_eq!(a(&names, &["back"], "tasks.web"), [ip("100.64.2.10"), ip("100.64.2.11"), ip("100.64.2.12")]);
    assert_eq!(a(&names, &["front"], "tasks.www"), [ip("100.64.1.10"), ip("100.64.1.11"), ip("100.64.1.12")], "tasks.ALIAS too");
}

#[test]
fn dnsrr_gives_task_addresses_and_no_vip() {
    let names = names();
    assert_eq!(a(&names, &["back"], "db"), [ip("100.64.2.20"), ip("100.64.2.21")]);
    assert_eq!(a(&names, &["back"], "tasks.db"), [ip("100.64.2.20"), ip("100.64.2.21")]);
}

#[test]
fn aliases_task_names_and_containers_resolve() {
    let names = names();
    assert_eq!(a(&names, &["front"], "www"), [ip("100.64.1.2")]);
    assert_eq!(names.answer(&scope(&["back"]), &name("www"), RecordType::A), Answer::NxDomain, "the alias is front's only");
    assert_eq!(a(&names, &["back"], "web.2.t2"), [ip("100.64.2.11")]);
    assert_eq!(a(&names, &["front"], "probe"), [ip("100.64.1.50")]);
    assert_eq!(a(&names, &["front"], "p"), [ip("100.64.1.50")]);
    assert_eq!(a(&names, &["bridge"], "cache"), [ip("100.65.0.2")]);
    assert_eq!(a(&names, &["bridge"], "redis"), [ip("100.65.0.2")]);
    assert_eq!(names.answer(&scope(&["front"]), &name("cache"), RecordType::A), Answer::NxDomain);
}

#[test]
fn names_of_other_networks_are_nxdomain_and_the_rest_is_forwarded() {
    let names = names();
    assert_eq!(names.answer(&scope(&["front"]), &name("db"), RecordType::A), Answer::NxDomain);
    assert_eq!(names.answer(&scope(&["front"]), &name("tasks.db"), RecordType::A), Answer::NxDomain);
    assert_eq!(names.answer(&scope(&["closed"]), &name("web"), RecordType::A), Answer::NxDomain);
    assert_eq!(names.answer(&scope(&["front"]), &name("example.com"), RecordType::A), Answer::Forward);
    assert_eq!(names.answer(&scope(&["front"]), &name("tasks.nothing"), RecordType::A), Answer::Forward);
    assert_eq!(names.answer(&scope(&[]), &name("web"), RecordType::A), Answer::NxDomain);
}

#[test]
fn other_types_on_a_swarm_name_are_nodata() {
    let names = names();
    for qtype in [RecordType::AAAA, RecordType::MX, RecordType::TXT, RecordType::SRV] {
        assert_eq!(names.answer(&scope(&["front"]), &name("web"), qtype), Answer::NoData, "{qtype}");
    }
    assert_eq!(names.answer(&scope(&["front"]), &name("_80._tcp.web"), RecordType::A), Answer::NoData);
    assert_eq!(a(&names, &["front"], "web"), addresses(names.answer(&scope(&["front"]), &name("web"), RecordType::ANY)));
}

#[test]
fn srv_follows_the_endpoint_mode() {
    let names = names();
    // vip: one record to the service name, whose VIP comes along.
    let (targets, extra) = srv(&names, &["front"], "_80._tcp.web");
    assert_eq!(targets, [(80, "web.".to_string())]);
    assert_eq!(extra, [("web.".to_string(), ip("100.64.1.2"))]);
    // the alias works the same way, pointing at itself.
    assert_eq!(srv(&names, &["front"], "_80._tcp.www").0, [(80, "www.".to_string())]);
    // tasks.: one per task, with each task's address.
    let (targets, extra) = srv(&names, &["back"], "_80._tcp.tasks.web");
    assert_eq!(targets, [(80, "web.1.t1.".into()), (80, "web.2.t2.".into()), (80, "web.3.t3.".into())]);
    assert_eq!(extra[0], ("web.1.t1.".to_string(), ip("100.64.2.10")));
    // dnsrr: one per task.
    let (targets, _) = srv(&names, &["back"], "_5432._tcp.db");
    assert_eq!(targets, [(5432, "db.1.d1.".into()), (5432, "db.2.d2.".into())]);
    assert_eq!(srv(&names, &["back"], "_53._udp.db").0.len(), 2);
    // Ports and protocols the service does not have do not exist.
    assert_eq!(names.answer(&scope(&["front"]), &name("_81._tcp.web"), RecordType::SRV), Answer::NxDomain);
    assert_eq!(names.answer(&scope(&["back"]), &name("_5432._udp.db"), RecordType::SRV), Answer::NxDomain);
    assert_eq!(names.answer(&scope(&["front"]), &name("_80._tcp.example.com"), RecordType::SRV), Answer::Forward);
    assert_eq!(names.answer(&scope(&["front"]), &name("_5432._tcp.db"), RecordType::SRV), Answer::NxDomain, "db is not on front");
}

#[test]
fn ptr_names_tasks_containers_and_vips() {
    let names = names();
    let ptr = |on: &[&str], text: &str| match names.answer(&scope(on), &name(text), RecordType::PTR) {
        Answer::Records { answers, .. } => match &answers[0].data {
            RData::PTR(target) => target.0.to_string(),
            other => panic!("expected PTR, got {other:?}"),
        },
        other => format!("{other:?}"),
    };
    assert_eq!(ptr(&["front"], "11.1.64.100.in-addr.arpa."), "web.2.t2.");
    assert_eq!(ptr(&["front"], "50.1.64.100.in-addr.arpa."), "probe.");
    assert_eq!(ptr(&["front"], "2.1.64.100.in-addr.arpa."), "web.");
    assert_eq!(ptr(&["bridge"], "2.0.65.100.in-addr.arpa."), "cache.");
    // Another network's address, or a free one in a subnet of ours: not there.
    assert_eq!(ptr(&["front"], "20.2.64.100.in-addr.arpa."), "NxDomain");
    assert_eq!(ptr(&["front"], "99.1.64.100.in-addr.arpa."), "NxDomain");
    // Outside every subnet of the node: the world's.
    assert_eq!(ptr(&["front"], "1.0.18.198.in-addr.arpa."), "Forward");
}

#[test]
fn answers_follow_a_new_directory() {
    let mut directory = directory();
    let before = Names::build(&directory, &[], &networks());
    assert_eq!(a(&before, &["front"], "tasks.web").len(), 3);
    // Scaled to one: the others' names and records are gone.
    directory.services[0].tasks.truncate(1);
    let after = Names::build(&directory, &[], &networks());
    assert_eq!(a(&after, &["front"], "tasks.web"), [ip("100.64.1.10")]);
    assert_eq!(after.answer(&scope(&["front"]), &name("web.2.t2"), RecordType::A), Answer::Forward);
    // A dnsrr service whose tasks all stopped has no address, and its
    // name never goes upstream.
    directory.services[1].tasks.clear();
    let emptied = Names::build(&directory, &[], &networks());
    assert_eq!(emptied.answer(&scope(&["back"]), &name("db"), RecordType::A), Answer::NxDomain);
    assert_eq!(emptied.answer(&scope(&["back"]), &name("tasks.db"), RecordType::A), Answer::NxDomain);
}

#[test]
fn only_internal_networks_forward_nothing() {
    let names = names();
    assert!(names.forwards_for(&scope(&["front"])));
    assert!(names.forwards_for(&scope(&["closed", "front"])));
    assert!(!names.forwards_for(&scope(&["closed"])));
}

#[test]
fn repeated_answers_rotate_over_the_set() {
    let names = names();
    let firsts: std::collections::BTreeSet<String> = (0..64)
        .map(|_| match names.answer(&scope(&["front"]), &name("tasks.web"), RecordType::A) {
            Answer::Records { answers, .. } => answers[0].data.to_string(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(firsts.len() > 1, "the first record varies: {firsts:?}");
}
