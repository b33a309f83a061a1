//! The node's directory of names and backends: the services on the
//! networks it serves (from the managers), with their VIPs, aliases, ports
//! and running tasks, and the named containers on those networks. The
//! embedded DNS answers from it and the load balancer programs VIPs and
//! published ports from it; both only ever see what the managers last
//! pushed, so an answer is as fresh as the last push (no gossip).

use std::net::Ipv4Addr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EndpointMode {
    /// A virtual IP per network, balanced over the running tasks.
    Vip,
    /// The service's name answers with its running tasks' addresses.
    Dnsrr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PublishMode {
    /// Every node accepts on the port and forwards to a task anywhere.
    Ingress,
    /// Only nodes running a task accept, for their own task.
    Host,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ServicePort {
    pub protocol: Protocol,
    /// The port the tasks listen on.
    pub target: u16,
    /// The port nodes accept on; 0 when only exposed (SRV records).
    pub published: u16,
    pub mode: PublishMode,
}

/// An address on one network.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NetworkAddress {
    pub network_id: String,
    pub address: Ipv4Addr,
}

/// A running task of a service: a backend, and `tasks.SERVICE` and
/// `SERVICE.SLOT.TASKID` names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskEntry {
    pub id: String,
    /// `SERVICE.SLOT.TASKID`.
    pub name: String,
    pub node_id: String,
    /// Its addresses on the networks this node serves.
    pub addresses: Vec<NetworkAddress>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceEntry {
    pub id: String,
    pub name: String,
    pub mode: EndpointMode,
    /// Its VIP on each network this node serves (none in dnsrr mode).
    pub vips: Vec<NetworkAddress>,
    /// Other names it answers to, per network.
    pub aliases: Vec<(String, Vec<String>)>,
    pub ports: Vec<ServicePort>,
    pub tasks: Vec<TaskEntry>,
}

impl ServiceEntry {
    /// The addresses of its running tasks on `network_id`.
    pub fn backends_on<'a>(&'a self, network_id: &'a str) -> impl Iterator<Item = Ipv4Addr> + 'a {
        self.tasks.iter().flat_map(|t| &t.addresses).filter(move |a| a.network_id == network_id).map(|a| a.address)
    }
}

/// A named container (a standalone container, on an overlay or on a bridge
/// network of this node).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerEntry {
    pub network_id: String,
    pub name: String,
    pub address: Ipv4Addr,
    pub aliases: Vec<String>,
}

/// Everything the node resolves and balances, as last pushed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Directory {
    pub services: Vec<ServiceEntry>,
    pub containers: Vec<ContainerEntry>,
}
