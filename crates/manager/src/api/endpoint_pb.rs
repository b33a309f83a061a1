//! A service's endpoint (mode, published ports) and its tasks' DNS settings
//! between their wire form and the store's, with their validation.

use std::collections::HashSet;

use shoal_proto::pb;

use crate::errors::ManagerError;
use crate::store::{DnsConfig, EndpointMode, EndpointSpec, PortConfig, PortProtocol, PublishMode};

fn invalid(message: String) -> ManagerError {
    ManagerError::InvalidArgument(message)
}

pub fn endpoint_from_pb(service: &str, endpoint: Option<pb::EndpointSpec>) -> Result<EndpointSpec, ManagerError> {
    let endpoint = endpoint.unwrap_or_default();
    let mode = match pb::EndpointMode::try_from(endpoint.mode).unwrap_or_default() {
        pb::EndpointMode::Unspecified | pb::EndpointMode::Vip => EndpointMode::Vip,
        pb::EndpointMode::Dnsrr => EndpointMode::Dnsrr,
    };
    let mut seen = HashSet::new();
    let mut ports = Vec::new();
    for port in endpoint.ports {
        let protocol = match pb::PortProtocol::try_from(port.protocol).unwrap_or_default() {
            pb::PortProtocol::Unspecified | pb::PortProtocol::Tcp => PortProtocol::Tcp,
            pb::PortProtocol::Udp => PortProtocol::Udp,
        };
        let publish_mode = match pb::PublishMode::try_from(port.publish_mode).unwrap_or_default() {
            pb::PublishMode::Unspecified | pb::PublishMode::Ingress => PublishMode::Ingress,
            pb::PublishMode::Host => PublishMode::Host,
        };
        let target_port = u16::try_from(port.target_port).ok().filter(|p| *p > 0).ok_or_else(|| {
            invalid(format!("target port {} of service {service:?} is invalid; use a port from 1 to 65535", port.target_port))
        })?;
        let published_port = u16::try_from(port.published_port).map_err(|_| {
            invalid(format!("published port {} of service {service:?} is invalid; use a port from 1 to 65535", port.published_port))
        })?;
        if published_port > 0 && !seen.insert((published_port, protocol)) {
            return Err(invalid(format!(
                "service {service:?} publishes port {published_port}/{} twice; publish each port once",
                protocol.as_str()
            )));
        }
        ports.push(PortConfig { protocol, target_port, published_port, publish_mode });
    }
    let endpoint = EndpointSpec { mode, ports };
    if endpoint.mode == EndpointMode::Dnsrr && endpoint.uses_ingress() {
        return Err(invalid(format!(
            "service {service:?} uses --endpoint-mode dnsrr, which cannot publish ports through the routing mesh; publish with mode=host or use --endpoint-mode vip"
        )));
    }
    Ok(endpoint)
}

pub fn endpoint_to_pb(endpoint: &EndpointSpec) -> pb::EndpointSpec {
    pb::EndpointSpec {
        mode: match endpoint.mode {
            EndpointMode::Vip => pb::EndpointMode::Vip.into(),
            EndpointMode::Dnsrr => pb::EndpointMode::Dnsrr.into(),
        },
        ports: endpoint.ports.iter().map(port_to_pb).collect(),
    }
}

pub fn port_to_pb(port: &PortConfig) -> pb::PortConfig {
    pb::PortConfig {
        protocol: match port.protocol {
            PortProtocol::Tcp => pb::PortProtocol::Tcp.into(),
            PortProtocol::Udp => pb::PortProtocol::Udp.into(),
        },
        target_port: u32::from(port.target_port),
        published_port: u32::from(port.published_port),
        publish_mode: match port.publish_mode {
            PublishMode::Ingress => pb::PublishMode::Ingress.into(),
            PublishMode::Host => pb::PublishMode::Host.into(),
        },
    }
}

/// Nameservers must be addresses (the embedded DNS forwards to them);
/// search domains and options are passed to the container as given.
pub fn dns_from_pb(dns: Option<pb::DnsConfig>) -> Result<DnsConfig, ManagerError> {
    let dns = dns.unwrap_or_default();
    for server in &dns.nameservers {
        if server.parse::<std::net::IpAddr>().is_err() {
            return Err(invalid(format!("DNS server {server:?} is not an IP address; give one such as 198.18.0.53")));
        }
    }
    for domain in &dns.search {
        if domain.is_empty() || domain.contains(char::is_whitespace) {
            return Err(invalid(format!("DNS search domain {domain:?} is invalid; give a domain name")));
        }
    }
    Ok(DnsConfig { nameservers: dns.nameservers, search: dns.search, options: dns.options })
}

pub fn dns_to_pb(dns: &DnsConfig) -> pb::DnsConfig {
    pb::DnsConfig { nameservers: dns.nameservers.clone(), search: dns.search.clone(), options: dns.options.clone() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(published: u32, target: u32, mode: pb::PublishMode) -> pb::PortConfig {
        pb::PortConfig { protocol: pb::PortProtocol::Tcp.into(), target_port: target, published_port: published, publish_mode: mode.into() }
    }

    #[test]
    fn endpoints_default_like_docker_and_round_trip() {
        let spec = pb::EndpointSpec { mode: 0, ports: vec![port(8080, 80, pb::PublishMode::Unspecified)] };
        let endpoint = endpoint_from_pb("web", Some(spec)).unwrap();
        assert_eq!(endpoint.mode, EndpointMode::Vip);
        assert_eq!(endpoint.ports[0], PortConfig { protocol: PortProtocol::Tcp, target_port: 80, published_port: 8080, publish_mode: PublishMode::Ingress });
        assert!(endpoint.uses_ingress());
        assert_eq!(endpoint_from_pb("web", Some(endpoint_to_pb(&endpoint))).unwrap(), endpoint);
    }

    #[test]
    fn bad_endpoints_are_refused_naming_the_value() {
        let refuse = |spec: pb::EndpointSpec| endpoint_from_pb("web", Some(spec)).unwrap_err().to_string();
        assert!(refuse(pb::EndpointSpec { mode: 0, ports: vec![port(70000, 80, pb::PublishMode::Ingress)] }).contains("70000"));
        assert!(refuse(pb::EndpointSpec { mode: 0, ports: vec![port(8080, 0, pb::PublishMode::Ingress)] }).contains("target port 0"));
        let twice = vec![port(8080, 80, pb::PublishMode::Ingress), port(8080, 81, pb::PublishMode::Ingress)];
        assert!(refuse(pb::EndpointSpec { mode: 0, ports: twice }).contains("8080/tcp twice"));
        let dnsrr = pb::EndpointSpec { mode: pb::EndpointMode::Dnsrr.into(), ports: vec![port(8080, 80, pb::PublishMode::Ingress)] };
        assert!(refuse(dnsrr).contains("dnsrr"));
        let host = pb::EndpointSpec { mode: pb::EndpointMode::Dnsrr.into(), ports: vec![port(8080, 80, pb::PublishMode::Host)] };
        assert!(endpoint_from_pb("web", Some(host)).is_ok(), "dnsrr may publish in host mode");
        let bad_dns = pb::DnsConfig { nameservers: vec!["dns.example".into()], ..Default::default() };
        assert!(dns_from_pb(Some(bad_dns)).unwrap_err().to_string().contains("dns.example"));
    }
}
