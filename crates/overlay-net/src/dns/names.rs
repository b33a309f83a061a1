//! What the embedded DNS answers from: the node's directory (services,
//! their VIPs, aliases, ports and running tasks; named containers) and its
//! local bridge networks' named containers, indexed per network. Pure: no
//! I/O, so the answer rules are tested against a [`Directory`] alone.
//!
//! A name answers only on the networks its target is on, and a sandbox
//! asks with the networks it is attached to, in attachment order: the
//! first network that knows the name answers (so a service on two of the
//! sandbox's networks gives the VIP on the sandbox's first one, as docker
//! does). Names:
//! - `SERVICE` and each alias of the service on the network: its VIP
//!   there (vip mode; its tasks' addresses when it has no VIP there), or
//!   its running tasks' addresses (dnsrr);
//! - `tasks.SERVICE` (and `tasks.ALIAS`): one A record per running task;
//! - `SERVICE.SLOT.TASKID`: that task's address;
//! - container names and their aliases: the container's address;
//! - SRV `_PORT._PROTO.SERVICE`, PORT being the port the tasks listen on
//!   (the target port of a published or exposed port, e.g. `_80._tcp.web`):
//!   in vip mode one record `0 0 PORT SERVICE.` (the VIP answers on every
//!   port), in dnsrr mode one record per running task `0 0 PORT TASKNAME.`;
//!   `_PORT._PROTO.tasks.SERVICE` always gives one record per running task.
//!   The addresses of the targets come along as additional records;
//! - PTR for task addresses (the task's name), container addresses (the
//!   container's name) and VIPs (the service's name).
//!
//! A name any network of the node knows, asked from a sandbox not on
//! that network, is NXDOMAIN (it is the swarm's, and never goes upstream);
//! so is the reverse name of an address in one of the node's subnets that
//! nothing holds. Everything else is forwarded.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

use hickory_proto::rr::rdata::{A, PTR, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use ipnet::{IpNet, Ipv4Net};

use crate::directory::{ContainerEntry, Directory, EndpointMode, ServiceEntry};

/// TTL of the swarm's answers: none, so no client keeps an answer the
/// swarm has since changed (docker's 600 s lets clients hold removed tasks).
pub const SWARM_TTL: u32 = 0;

/// A network the node serves, as the DNS needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkInfo {
    pub id: String,
    pub subnet: Ipv4Net,
    /// Sandboxes only on internal networks get no upstream answers.
    pub internal: bool,
}

/// The answer to one question.
#[derive(Debug, PartialEq)]
pub enum Answer {
    /// The swarm's records (answers, and addresses of SRV targets).
    Records { answers: Vec<Record>, additionals: Vec<Record> },
    /// The name is the swarm's but has no record of the type asked.
    NoData,
    /// The name is the swarm's and does not exist for this sandbox.
    NxDomain,
    /// Not a name of the swarm: ask upstream.
    Forward,
}

/// One SRV target: the name it points to and that name's address.
#[derive(Clone, Debug, PartialEq, Eq)]
struct SrvTarget {
    port: u16,
    target: String,
    address: Ipv4Addr,
}

/// The names of one network, keyed by lowercase name without the final dot.
#[derive(Default, Debug)]
struct NetworkNames {
    hosts: HashMap<String, Vec<Ipv4Addr>>,
    srv: HashMap<String, Vec<SrvTarget>>,
    reverse: HashMap<Ipv4Addr, String>,
}

impl NetworkNames {
    fn add_host(&mut self, name: &str, addresses: impl IntoIterator<Item = Ipv4Addr>) {
        let entry = self.hosts.entry(name.to_ascii_lowercase()).or_default();
        for address in addresses {
            if !entry.contains(&address) {
                entry.push(address);
            }
        }
    }

    fn add_srv(&mut self, name: String, targets: Vec<SrvTarget>) {
        let entry = self.srv.entry(name).or_default();
        for target in targets {
            if !entry.contains(&target) {
                entry.push(target);
            }
        }
    }

    fn add_reverse(&mut self, address: Ipv4Addr, name: &str) {
        // The first holder wins: a task's own name over a service alias.
        self.reverse.entry(address).or_insert_with(|| name.to_string());
    }
}

/// Every name the node answers, per network.
#[derive(Default, Debug)]
pub struct Names {
    networks: HashMap<String, NetworkNames>,
    /// Every name some network knows (lowercase, including SRV names).
    known: HashSet<String>,
    /// The subnets of the node's networks: their reverse names are ours.
    subnets: Vec<Ipv4Net>,
    internal: HashSet<String>,
}

impl Names {
    /// Indexes the managers' directory, this node's bridge networks'
    /// named containers and the node's networks.
    pub fn build(directory: &Directory, local: &[ContainerEntry], networks: &[NetworkInfo]) -> Names {
        let mut names = Names {
            subnets: networks.iter().map(|n| n.subnet).collect(),
            internal: networks.iter().filter(|n| n.internal).map(|n| n.id.clone()).collect(),
            ..Names::default()
        };
        for service in &directory.services {
            names.add_service(service);
        }
        for container in directory.containers.iter().chain(local) {
            let network = names.networks.entry(container.network_id.clone()).or_default();
            network.add_host(&container.name, [container.address]);
            for alias in &container.aliases {
                network.add_host(alias, [container.address]);
            }
            network.add_reverse(container.address, &container.name);
        }
        let mut known: HashSet<String> =
            names.networks.values().flat_map(|n| n.hosts.keys().chain(n.srv.keys())).cloned().collect();
        // A dnsrr service with no running task is on no network the
        // directory can tell; its name is still the swarm's.
        for service in &directory.services {
            let name = service.name.to_ascii_lowercase();
            known.insert(format!("tasks.{name}"));
            known.insert(name);
        }
        names.known = known;
        names
    }

    fn add_service(&mut self, service: &ServiceEntry) {
        let mut on: Vec<&str> = service.vips.iter().map(|v| v.network_id.as_str()).collect();
        on.extend(service.aliases.iter().map(|(network, _)| network.as_str()));
        on.extend(service.tasks.iter().flat_map(|t| &t.addresses).map(|a| a.network_id.as_str()));
        let mut seen = HashSet::new();
        on.retain(|network| seen.insert(*network));
        for network_id in on {
            let network = self.networks.entry(network_id.to_string()).or_default();
            let tasks: Vec<(&str, Ipv4Addr)> = service
                .tasks
                .iter()
                .flat_map(|t| t.addresses.iter().filter(|a| a.network_id == network_id).map(move |a| (t.name.as_str(), a.address)))
                .collect();
            let vip = service.vips.iter().find(|v| v.network_id == network_id).map(|v| v.address);
            let service_addresses: Vec<Ipv4Addr> = match (service.mode, vip) {
                (EndpointMode::Vip, Some(vip)) => vec![vip],
                _ => tasks.iter().map(|(_, address)| *address).collect(),
            };
            let aliases = service.aliases.iter().filter(|(network, _)| network == network_id).flat_map(|(_, aliases)| aliases);
            let service_names: Vec<String> =
                std::iter::once(&service.name).chain(aliases).map(|n| n.to_ascii_lowercase()).collect();
            for name in &service_names {
                network.add_host(name, service_addresses.iter().copied());
                network.add_host(&format!("tasks.{name}"), tasks.iter().map(|(_, address)| *address));
                for port in &service.ports {
                    let task_targets: Vec<SrvTarget> = tasks
                        .iter()
                        .map(|(task, address)| SrvTarget { port: port.target, target: task.to_ascii_lowercase(), address: *address })
                        .collect();
                    let service_targets = match (service.mode, vip) {
                        (EndpointMode::Vip, Some(vip)) => vec![SrvTarget { port: port.target, target: name.clone(), address: vip }],
                        _ => task_targets.clone(),
                    };
                    let prefix = format!("_{}._{}", port.target, port.protocol.as_str());
                    network.add_srv(format!("{prefix}.{name}"), service_targets);
                    network.add_srv(format!("{prefix}.tasks.{name}"), task_targets);
                }
            }
            for (task, address) in &tasks {
                network.add_host(task, [*address]);
                network.add_reverse(*address, task);
            }
            if let Some(vip) = vip {
                network.add_reverse(vip, &service.name);
            }
        }
    }

    /// Whether a sandbox on `scope` may have names forwarded upstream:
    /// not when every one of its networks is internal (docker's rule: an
    /// internal network reaches nothing outside, its names included).
    pub fn forwards_for(&self, scope: &[String]) -> bool {
        scope.is_empty() || scope.iter().any(|network| !self.internal.contains(network))
    }

    /// The answer for `name`/`qtype` asked from a sandbox on `scope` (its
    /// networks, in attachment order). Records carry `name` as asked.
    pub fn answer(&self, scope: &[String], name: &Name, qtype: RecordType) -> Answer {
        let key = lowercase_key(name);
        if key.ends_with(".in-addr.arpa") {
            return self.answer_reverse(scope, name, qtype);
        }
        for network in scope.iter().filter_map(|id| self.networks.get(id)) {
            if let Some(addresses) = network.hosts.get(&key) {
                return match qtype {
                    RecordType::A | RecordType::ANY if !addresses.is_empty() => Answer::Records {
                        answers: rotated(addresses).map(|address| a_record(name.clone(), address)).collect(),
                        additionals: Vec::new(),
                    },
                    _ => Answer::NoData,
                };
            }
            if let Some(targets) = network.srv.get(&key) {
                return match qtype {
                    RecordType::SRV | RecordType::ANY if !targets.is_empty() => srv_answer(name, targets),
                    _ => Answer::NoData,
                };
            }
        }
        if self.known.contains(&key) || self.known.contains(srv_owner(&key)) {
            Answer::NxDomain
        } else {
            Answer::Forward
        }
    }

    fn answer_reverse(&self, scope: &[String], name: &Name, qtype: RecordType) -> Answer {
        let Ok(IpNet::V4(net)) = name.parse_arpa_name() else { return Answer::Forward };
        if net.prefix_len() != 32 {
            return Answer::Forward;
        }
        let address = net.addr();
        for network in scope.iter().filter_map(|id| self.networks.get(id)) {
            if let Some(target) = network.reverse.get(&address) {
                return match qtype {
                    RecordType::PTR | RecordType::ANY => match fqdn(target) {
                        Some(target) => Answer::Records {
                            answers: vec![Record::from_rdata(name.clone(), SWARM_TTL, RData::PTR(PTR(target)))],
                            additionals: Vec::new(),
                        },
                        None => Answer::NxDomain,
                    },
                    _ => Answer::NoData,
                };
            }
        }
        if self.subnets.iter().any(|subnet| subnet.contains(&address)) {
            Answer::NxDomain
        } else {
            Answer::Forward
        }
    }
}

fn srv_answer(name: &Name, targets: &[SrvTarget]) -> Answer {
    let mut answers = Vec::new();
    let mut additionals = Vec::new();
    for target in rotated(targets) {
        let Some(target_name) = fqdn(&target.target) else { continue };
        answers.push(Record::from_rdata(name.clone(), SWARM_TTL, RData::SRV(SRV::new(0, 0, target.port, target_name.clone()))));
        additionals.push(a_record(target_name, target.address));
    }
    Answer::Records { answers, additionals }
}

fn a_record(name: Name, address: Ipv4Addr) -> Record {
    Record::from_rdata(name, SWARM_TTL, RData::A(A(address)))
}

/// `name.` as a DNS name; `None` for one that is not (the managers check
/// names, so this only guards against what slipped through).
fn fqdn(name: &str) -> Option<Name> {
    let mut name = Name::from_ascii(name).ok()?;
    name.set_fqdn(true);
    Some(name)
}

/// The records of a set in an order that starts at a different one each
/// time, so clients that take the first address spread over them.
fn rotated<T: Clone>(items: &[T]) -> impl Iterator<Item = T> + '_ {
    let start = if items.len() > 1 { rand::random::<usize>() % items.len() } else { 0 };
    items[start..].iter().chain(&items[..start]).cloned()
}

/// The name an SRV-shaped name `_PORT._PROTO.NAME` is about (the name
/// itself otherwise): a port a swarm name does not have is still the
/// swarm's, and does not exist.
fn srv_owner(key: &str) -> &str {
    let mut labels = key.splitn(3, '.');
    match (labels.next(), labels.next(), labels.next()) {
        (Some(port), Some(protocol), Some(owner)) if port.starts_with('_') && protocol.starts_with('_') => owner,
        _ => key,
    }
}

/// The index key of `name`: its labels in lowercase, joined by dots,
/// without the root's final dot.
pub fn lowercase_key(name: &Name) -> String {
    let mut key = String::with_capacity(name.len());
    for (i, label) in name.iter().enumerate() {
        if i > 0 {
            key.push('.');
        }
        key.extend(label.iter().map(|b| char::from(b.to_ascii_lowercase())));
    }
    key
}
