//! How a service is reached and resolves names: `-p/--publish`,
//! `--endpoint-mode`, `--dns*` on `service create`, and their `-add/-rm`
//! forms on `service update`, parsed into an [`EndpointChange`].

use shoal_proto::pb;

use crate::commands::flags;
use crate::error::{CliError, CliResult};

#[derive(Debug, Default, clap::Args)]
pub struct EndpointCreateFlags {
    /// Publish a port: PUBLISHED:TARGET[/udp] or published=P,target=T[,protocol=tcp|udp][,mode=ingress|host]
    #[arg(short, long = "publish", value_name = "PORT")]
    publish: Vec<String>,
    /// vip (a virtual IP per network, balanced over the tasks) or dnsrr (DNS round robin)
    #[arg(long, value_name = "vip|dnsrr")]
    endpoint_mode: Option<String>,
    /// DNS server the tasks' embedded DNS forwards other names to
    #[arg(long = "dns", value_name = "IP")]
    dns: Vec<String>,
    /// DNS search domain for the tasks
    #[arg(long = "dns-search", value_name = "DOMAIN")]
    dns_search: Vec<String>,
    /// Option for the tasks' resolv.conf, e.g. timeout:2
    #[arg(long = "dns-option", value_name = "OPTION")]
    dns_option: Vec<String>,
}

#[derive(Debug, Default, clap::Args)]
pub struct EndpointUpdateFlags {
    /// Publish a port: PUBLISHED:TARGET[/udp] or published=P,target=T[,protocol=..][,mode=..]
    #[arg(long = "publish-add", value_name = "PORT")]
    publish_add: Vec<String>,
    /// Stop publishing a port: PUBLISHED[/udp]
    #[arg(long = "publish-rm", value_name = "PORT")]
    publish_rm: Vec<String>,
    /// vip or dnsrr
    #[arg(long, value_name = "vip|dnsrr")]
    endpoint_mode: Option<String>,
    #[arg(long = "dns-add", value_name = "IP")]
    dns_add: Vec<String>,
    #[arg(long = "dns-rm", value_name = "IP")]
    dns_rm: Vec<String>,
    #[arg(long = "dns-search-add", value_name = "DOMAIN")]
    dns_search_add: Vec<String>,
    #[arg(long = "dns-search-rm", value_name = "DOMAIN")]
    dns_search_rm: Vec<String>,
    #[arg(long = "dns-option-add", value_name = "OPTION")]
    dns_option_add: Vec<String>,
    #[arg(long = "dns-option-rm", value_name = "OPTION")]
    dns_option_rm: Vec<String>,
}

/// What a create or update changes in a spec's endpoint and DNS settings.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct EndpointChange {
    ports_add: Vec<pb::PortConfig>,
    /// (published port, protocol)
    ports_rm: Vec<(u32, i32)>,
    mode: Option<pb::EndpointMode>,
    dns_add: Vec<String>,
    dns_rm: Vec<String>,
    search_add: Vec<String>,
    search_rm: Vec<String>,
    options_add: Vec<String>,
    options_rm: Vec<String>,
}

fn parse_mode(value: &str) -> CliResult<pb::EndpointMode> {
    match value {
        "vip" => Ok(pb::EndpointMode::Vip),
        "dnsrr" => Ok(pb::EndpointMode::Dnsrr),
        other => Err(CliError::msg(format!("--endpoint-mode {other:?} is invalid; use vip or dnsrr"))),
    }
}

fn parse_dns_servers(flag: &str, values: &[String]) -> CliResult<Vec<String>> {
    values
        .iter()
        .map(|v| match v.parse::<std::net::IpAddr>() {
            Ok(_) => Ok(v.clone()),
            Err(_) => Err(CliError::msg(format!("{flag} {v:?} is not an IP address; give a DNS server's address"))),
        })
        .collect()
}

/// `8080` or `8080/udp`, as `--publish-rm` takes it.
fn parse_published(value: &str) -> CliResult<(u32, i32)> {
    let (port, protocol) = match value.rsplit_once('/') {
        Some((port, "tcp")) => (port, pb::PortProtocol::Tcp),
        Some((port, "udp")) => (port, pb::PortProtocol::Udp),
        Some(_) => return Err(CliError::msg(format!("--publish-rm {value:?} is invalid; use PORT or PORT/udp"))),
        None => (value, pb::PortProtocol::Tcp),
    };
    let port = port.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
        CliError::msg(format!("--publish-rm {value:?} is invalid; use PORT or PORT/udp"))
    })?;
    Ok((u32::from(port), protocol.into()))
}

impl EndpointCreateFlags {
    pub fn change(&self) -> CliResult<EndpointChange> {
        Ok(EndpointChange {
            ports_add: self.publish.iter().map(|p| flags::parse_service_publish("--publish", p)).collect::<CliResult<_>>()?,
            mode: self.endpoint_mode.as_deref().map(parse_mode).transpose()?,
            dns_add: parse_dns_servers("--dns", &self.dns)?,
            search_add: self.dns_search.clone(),
            options_add: self.dns_option.clone(),
            ..Default::default()
        })
    }
}

impl EndpointUpdateFlags {
    pub fn change(&self) -> CliResult<EndpointChange> {
        Ok(EndpointChange {
            ports_add: self.publish_add.iter().map(|p| flags::parse_service_publish("--publish-add", p)).collect::<CliResult<_>>()?,
            ports_rm: self.publish_rm.iter().map(|p| parse_published(p)).collect::<CliResult<_>>()?,
            mode: self.endpoint_mode.as_deref().map(parse_mode).transpose()?,
            dns_add: parse_dns_servers("--dns-add", &self.dns_add)?,
            dns_rm: self.dns_rm.clone(),
            search_add: self.dns_search_add.clone(),
            search_rm: self.dns_search_rm.clone(),
            options_add: self.dns_option_add.clone(),
            options_rm: self.dns_option_rm.clone(),
        })
    }
}

/// Removes `rm` from `list`, then appends what `add` has that it lacks.
fn edit_list(list: &mut Vec<String>, add: &[String], rm: &[String]) {
    list.retain(|v| !rm.contains(v));
    for value in add {
        if !list.contains(value) {
            list.push(value.clone());
        }
    }
}

impl EndpointChange {
    pub fn apply(&self, spec: &mut pb::ServiceSpec) {
        let endpoint = spec.endpoint.get_or_insert_with(Default::default);
        if let Some(mode) = self.mode {
            endpoint.mode = mode.into();
        }
        let protocol_of = |p: &pb::PortConfig| if p.protocol == i32::from(pb::PortProtocol::Udp) { p.protocol } else { pb::PortProtocol::Tcp.into() };
        endpoint.ports.retain(|p| !self.ports_rm.iter().any(|(port, protocol)| p.published_port == *port && protocol_of(p) == *protocol));
        for port in &self.ports_add {
            endpoint.ports.retain(|p| !(p.published_port == port.published_port && protocol_of(p) == protocol_of(port)));
            endpoint.ports.push(port.clone());
        }
        let dns = spec.task.get_or_insert_with(Default::default).dns.get_or_insert_with(Default::default);
        edit_list(&mut dns.nameservers, &self.dns_add, &self.dns_rm);
        edit_list(&mut dns.search, &self.search_add, &self.search_rm);
        edit_list(&mut dns.options, &self.options_add, &self.options_rm);
    }
}

/// docker's PORTS column: `*:8080->80/tcp`, host mode as `8080->80/tcp (host)`.
pub fn ports_column(spec: Option<&pb::ServiceSpec>) -> String {
    let Some(endpoint) = spec.and_then(|s| s.endpoint.as_ref()) else { return String::new() };
    endpoint
        .ports
        .iter()
        .filter(|p| p.published_port > 0)
        .map(|p| {
            let protocol = if p.protocol == i32::from(pb::PortProtocol::Udp) { "udp" } else { "tcp" };
            match p.publish_mode() {
                pb::PublishMode::Host => format!("{}->{}/{protocol} (host)", p.published_port, p.target_port),
                _ => format!("*:{}->{}/{protocol}", p.published_port, p.target_port),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_add_replaces_and_rm_removes_by_port_and_protocol() {
        let mut spec = pb::ServiceSpec::default();
        let create = EndpointCreateFlags { publish: vec!["8080:80".into(), "53:53/udp".into()], ..Default::default() };
        create.change().unwrap().apply(&mut spec);
        assert_eq!(ports_column(Some(&spec)), "*:8080->80/tcp, *:53->53/udp");
        let update = EndpointUpdateFlags {
            publish_add: vec!["published=8080,target=81,mode=host".into()],
            publish_rm: vec!["53/udp".into()],
            dns_add: vec!["198.18.0.53".into()],
            ..Default::default()
        };
        update.change().unwrap().apply(&mut spec);
        assert_eq!(ports_column(Some(&spec)), "8080->81/tcp (host)");
        assert_eq!(spec.task.unwrap().dns.unwrap().nameservers, ["198.18.0.53"]);
    }

    #[test]
    fn bad_flags_name_the_value() {
        let bad = EndpointCreateFlags { endpoint_mode: Some("roundrobin".into()), ..Default::default() };
        assert!(bad.change().unwrap_err().to_string().contains("\"roundrobin\""));
        let bad = EndpointCreateFlags { dns: vec!["dns.example".into()], ..Default::default() };
        assert!(bad.change().unwrap_err().to_string().contains("\"dns.example\""));
        let bad = EndpointUpdateFlags { publish_rm: vec!["80/sctp".into()], ..Default::default() };
        assert!(bad.change().unwrap_err().to_string().contains("\"80/sctp\""));
    }
}
