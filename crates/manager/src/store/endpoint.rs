//! How a service is reached: its endpoint mode (a virtual IP per network,
//! or DNS round robin over its tasks), the ports it publishes (on every
//! node through the routing mesh, or on the nodes running its tasks), and
//! the DNS settings its containers resolve with.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EndpointMode {
    /// One virtual IP per network, balanced over the running tasks.
    #[default]
    Vip,
    /// The service's name answers with its running tasks' addresses.
    Dnsrr,
}

impl EndpointMode {
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointMode::Vip => "vip",
            EndpointMode::Dnsrr => "dnsrr",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PortProtocol {
    Tcp,
    Udp,
}

impl PortProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            PortProtocol::Tcp => "tcp",
            PortProtocol::Udp => "udp",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PublishMode {
    /// Every node accepts on the port and forwards to a task anywhere.
    #[default]
    Ingress,
    /// Only nodes running a task accept, for their own task.
    Host,
}

impl PublishMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PublishMode::Ingress => "ingress",
            PublishMode::Host => "host",
        }
    }
}

/// `--publish published=8080,target=80,protocol=tcp,mode=ingress`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PortConfig {
    pub protocol: PortProtocol,
    /// The port the tasks listen on.
    pub target_port: u16,
    /// The port nodes accept on; 0: the port is exposed (SRV records) but
    /// not published.
    pub published_port: u16,
    pub publish_mode: PublishMode,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointSpec {
    pub mode: EndpointMode,
    pub ports: Vec<PortConfig>,
}

impl EndpointSpec {
    /// Whether any port goes through the routing mesh (the ingress network).
    pub fn uses_ingress(&self) -> bool {
        self.ports.iter().any(|p| p.published_port > 0 && p.publish_mode == PublishMode::Ingress)
    }
}

/// `--dns`, `--dns-search`, `--dns-option`: what the embedded DNS forwards
/// to, and the container's resolv.conf search list and options.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsConfig {
    pub nameservers: Vec<String>,
    pub search: Vec<String>,
    pub options: Vec<String>,
}
