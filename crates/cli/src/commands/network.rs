//! `shoal network ...`: swarm (overlay) networks through the managers'
//! control API, and this node's bridge networks through its daemon, shown
//! together as `docker network ...` shows both scopes.

use std::collections::HashMap;

use serde::Serialize;
use shoal_proto::pb;
use tonic::transport::Channel;

use crate::client::{ConnectArgs, Target};
use crate::commands::flags;
use crate::error::{CliError, CliResult};
use crate::output::{print_json, print_table, Format};

#[derive(Debug, clap::Subcommand)]
#[command(defer = true)]
pub enum NetworkCommand {
    /// Create a network (overlay on a swarm manager, bridge elsewhere, unless -d says)
    Create {
        /// overlay (swarm-wide, encrypted between nodes) or bridge (this node only)
        #[arg(short, long, value_name = "DRIVER")]
        driver: Option<String>,
        /// Subnet in CIDR form (default: the next free one of the address pool)
        #[arg(long, value_name = "CIDR")]
        subnet: Option<String>,
        /// Gateway address (default: the subnet's first address)
        #[arg(long, value_name = "IP")]
        gateway: Option<String>,
        /// Let standalone containers (`shoal run --network`) attach to this overlay
        #[arg(long)]
        attachable: bool,
        /// No way out of the network
        #[arg(long)]
        internal: bool,
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        /// Driver option: encrypted (always on), mtu=N
        #[arg(short, long = "opt", value_name = "KEY[=VALUE]")]
        options: Vec<String>,
        name: String,
    },
    /// List networks
    Ls {
        #[arg(short, long)]
        quiet: bool,
        /// driver=..., name=..., scope=swarm|local, id=...
        #[arg(short, long = "filter", value_name = "KEY=VALUE")]
        filters: Vec<String>,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Show networks in detail (JSON)
    Inspect {
        #[arg(required = true)]
        networks: Vec<String>,
    },
    /// Remove networks
    Rm {
        #[arg(required = true)]
        networks: Vec<String>,
    },
    /// Remove every network nothing is attached to
    Prune {
        /// Do not ask for confirmation (accepted for docker compatibility)
        #[arg(short, long)]
        force: bool,
    },
    /// Attach a running container of this node to a bridge or attachable network
    Connect {
        #[arg(long = "alias", value_name = "ALIAS")]
        aliases: Vec<String>,
        network: String,
        container: String,
    },
    /// Detach a container from a network
    Disconnect {
        #[arg(short, long)]
        force: bool,
        network: String,
        container: String,
    },
}

/// The two places networks live: the managers (swarm scope) and, over the
/// local socket, this node's daemon (local scope).
struct Clients {
    control: pb::control_client::ControlClient<Channel>,
    local: Option<pb::local_networks_client::LocalNetworksClient<Channel>>,
}

impl Clients {
    async fn connect(connect: &ConnectArgs) -> CliResult<Self> {
        let channel = connect.connect().await?;
        let local = matches!(connect.target()?, Target::Unix(_)).then(|| pb::local_networks_client::LocalNetworksClient::new(channel.clone()));
        Ok(Clients { control: pb::control_client::ControlClient::new(channel), local })
    }

    fn local(&mut self) -> CliResult<&mut pb::local_networks_client::LocalNetworksClient<Channel>> {
        self.local.as_mut().ok_or_else(|| {
            CliError::msg("bridge networks belong to one node; run this on that node (over its local socket), not against a remote manager")
        })
    }

    /// Swarm networks, or none when this daemon is no manager.
    async fn swarm_networks(&mut self) -> CliResult<Vec<pb::Network>> {
        match self.control.list_networks(pb::ListNetworksRequest {}).await {
            Ok(reply) => Ok(reply.into_inner().networks),
            Err(status) if is_not_a_manager(&status) && self.local.is_some() => Ok(Vec::new()),
            Err(status) => Err(status.into()),
        }
    }

    async fn local_networks(&mut self) -> CliResult<Vec<pb::Network>> {
        match self.local.as_mut() {
            Some(local) => Ok(local.list_networks(pb::ListNetworksRequest {}).await?.into_inner().networks),
            None => Ok(Vec::new()),
        }
    }

    /// Finds a network among both scopes: local first, as docker prefers
    /// the node's own networks for a name both have.
    async fn inspect(&mut self, reference: &str) -> CliResult<pb::Network> {
        if let Some(local) = self.local.as_mut() {
            match local.inspect_network(pb::NetworkRef { network: reference.into() }).await {
                Ok(network) => return Ok(network.into_inner()),
                Err(status) if status.code() != tonic::Code::NotFound => return Err(status.into()),
                Err(_) => {}
            }
        }
        match self.control.inspect_network(pb::NetworkRef { network: reference.into() }).await {
            Ok(network) => Ok(network.into_inner()),
            Err(status) if is_not_a_manager(&status) => {
                Err(CliError::msg(format!("network {reference:?} does not exist on this node; swarm networks are listed on managers")))
            }
            Err(status) => Err(status.into()),
        }
    }

    /// Whether a network made without `-d` should be an overlay: on a swarm
    /// manager (or against a remote one) it is, as `service create
    /// --network` then finds it; elsewhere it is a bridge, as in docker.
    async fn default_is_overlay(&mut self) -> bool {
        if self.local.is_none() {
            return true;
        }
        self.control.list_networks(pb::ListNetworksRequest {}).await.is_ok()
    }
}

fn is_not_a_manager(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::FailedPrecondition && status.message().contains("not a swarm manager")
}

fn parse_driver(value: &str) -> CliResult<pb::NetworkDriver> {
    match value {
        "overlay" => Ok(pb::NetworkDriver::Overlay),
        "bridge" => Ok(pb::NetworkDriver::Bridge),
        other => Err(CliError::msg(format!("network driver {other:?} is unknown; use overlay or bridge"))),
    }
}

fn driver_name(network: &pb::Network) -> &'static str {
    match network.spec.as_ref().map(|s| s.driver()) {
        Some(pb::NetworkDriver::Bridge) => "bridge",
        _ => "overlay",
    }
}

fn scope_name(network: &pb::Network) -> &'static str {
    match network.scope() {
        pb::NetworkScope::Local => "local",
        _ => "swarm",
    }
}

fn name_of(network: &pb::Network) -> &str {
    network.spec.as_ref().map_or("", |s| s.name.as_str())
}

fn short_id(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// One `-f KEY=VALUE` of `network ls`.
fn matches(network: &pb::Network, filters: &[(String, String)]) -> bool {
    filters.iter().all(|(key, value)| match key.as_str() {
        "driver" => driver_name(network) == value,
        "scope" => scope_name(network) == value,
        "name" => name_of(network).contains(value.as_str()),
        "id" => network.id.starts_with(value.as_str()),
        "label" => match value.split_once('=') {
            Some((k, v)) => network.spec.as_ref().and_then(|s| s.labels.get(k)).is_some_and(|l| l == v),
            None => network.spec.as_ref().is_some_and(|s| s.labels.contains_key(value)),
        },
        _ => false,
    })
}

fn parse_filters(filters: &[String]) -> CliResult<Vec<(String, String)>> {
    filters
        .iter()
        .map(|f| match f.split_once('=') {
            Some((key @ ("driver" | "scope" | "name" | "id" | "label"), value)) => Ok((key.to_string(), value.to_string())),
            _ => Err(CliError::msg(format!("filter {f:?} is invalid; use driver=, scope=, name=, id= or label=")))
        })
        .collect()
}

#[derive(Serialize)]
struct NetworkJson<'a> {
    id: &'a str,
    name: &'a str,
    driver: &'static str,
    scope: &'static str,
    subnet: &'a str,
    gateway: &'a str,
    mtu: u32,
    attachable: bool,
    internal: bool,
    labels: &'a HashMap<String, String>,
    options: &'a HashMap<String, String>,
    created_at: &'a str,
    attachments: Vec<AttachmentJson<'a>>,
    nodes: Vec<NodeJson<'a>>,
}

#[derive(Serialize)]
struct AttachmentJson<'a> {
    kind: &'static str,
    id: &'a str,
    name: &'a str,
    node_id: &'a str,
    node: &'a str,
    address: &'a str,
    aliases: &'a [String],
}

#[derive(Serialize)]
struct NodeJson<'a> {
    id: &'a str,
    hostname: &'a str,
    endpoint: &'a str,
    public_key: &'a str,
}

fn to_json(network: &pb::Network) -> NetworkJson<'_> {
    static EMPTY: std::sync::OnceLock<HashMap<String, String>> = std::sync::OnceLock::new();
    let empty = EMPTY.get_or_init(HashMap::new);
    let spec = network.spec.as_ref();
    NetworkJson {
        id: &network.id,
        name: name_of(network),
        driver: driver_name(network),
        scope: scope_name(network),
        subnet: &network.subnet,
        gateway: &network.gateway,
        mtu: network.mtu,
        attachable: spec.is_some_and(|s| s.attachable),
        internal: spec.is_some_and(|s| s.internal),
        labels: spec.map_or(empty, |s| &s.labels),
        options: spec.map_or(empty, |s| &s.options),
        created_at: &network.created_at,
        attachments: network
            .attachments
            .iter()
            .map(|a| AttachmentJson {
                kind: match a.kind() {
                    pb::AttachmentKind::Task => "task",
                    pb::AttachmentKind::Node => "node",
                    pb::AttachmentKind::Vip => "vip",
                    pb::AttachmentKind::Container => "container",
                    pb::AttachmentKind::Unspecified => "",
                },
                id: &a.id,
                name: &a.name,
                node_id: &a.node_id,
                node: &a.node_hostname,
                address: &a.address,
                aliases: &a.aliases,
            })
            .collect(),
        nodes: network
            .nodes
            .iter()
            .map(|n| NodeJson { id: &n.node_id, hostname: &n.hostname, endpoint: &n.endpoint, public_key: &n.public_key })
            .collect(),
    }
}

pub async fn run(command: NetworkCommand, connect: &ConnectArgs) -> CliResult {
    let mut clients = Clients::connect(connect).await?;
    match command {
        NetworkCommand::Create { driver, subnet, gateway, attachable, internal, labels, options, name } => {
            let driver = match driver.as_deref() {
                Some(d) => parse_driver(d)?,
                None if clients.default_is_overlay().await => pb::NetworkDriver::Overlay,
                None => pb::NetworkDriver::Bridge,
            };
            let options = options
                .iter()
                .map(|o| match o.split_once('=') {
                    Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
                    None if !o.is_empty() => Ok((o.clone(), String::new())),
                    _ => Err(CliError::msg(format!("option {o:?} is invalid; use KEY or KEY=VALUE"))),
                })
                .collect::<CliResult<_>>()?;
            let spec = pb::NetworkSpec {
                name,
                labels: flags::parse_labels("--label", &labels)?,
                driver: driver.into(),
                subnet: subnet.unwrap_or_default(),
                gateway: gateway.unwrap_or_default(),
                attachable,
                internal,
                options,
                ingress: false,
            };
            let request = pb::CreateNetworkRequest { spec: Some(spec) };
            let network = match driver {
                pb::NetworkDriver::Bridge => clients.local()?.create_network(request).await?.into_inner(),
                _ => clients.control.create_network(request).await?.into_inner(),
            };
            println!("{}", network.id);
        }
        NetworkCommand::Ls { quiet, filters, format } => {
            let filters = parse_filters(&filters)?;
            let mut networks = clients.local_networks().await?;
            networks.extend(clients.swarm_networks().await?);
            networks.retain(|n| matches(n, &filters));
            networks.sort_by(|a, b| name_of(a).cmp(name_of(b)));
            if quiet {
                networks.iter().for_each(|n| println!("{}", short_id(&n.id)));
            } else if format == Format::Json {
                print_json(&networks.iter().map(to_json).collect::<Vec<_>>())?;
            } else {
                let rows = networks
                    .iter()
                    .map(|n| vec![short_id(&n.id).to_string(), name_of(n).to_string(), driver_name(n).into(), scope_name(n).into()])
                    .collect();
                print_table(&["NETWORK ID", "NAME", "DRIVER", "SCOPE"], rows);
            }
        }
        NetworkCommand::Inspect { networks } => {
            let mut found = Vec::new();
            for reference in networks {
                found.push(clients.inspect(&reference).await?);
            }
            print_json(&found.iter().map(to_json).collect::<Vec<_>>())?;
        }
        NetworkCommand::Rm { networks } => {
            for reference in networks {
                let network = clients.inspect(&reference).await?;
                let by_id = pb::NetworkRef { network: network.id.clone() };
                match network.scope() {
                    pb::NetworkScope::Local => clients.local()?.remove_network(by_id).await?,
                    _ => clients.control.remove_network(by_id).await?,
                };
                println!("{reference}");
            }
        }
        NetworkCommand::Prune { force: _ } => {
            let mut deleted = Vec::new();
            if let Some(local) = clients.local.as_mut() {
                deleted.extend(local.prune_networks(pb::Empty {}).await?.into_inner().deleted);
            }
            match clients.control.prune_networks(pb::Empty {}).await {
                Ok(reply) => deleted.extend(reply.into_inner().deleted),
                Err(status) if is_not_a_manager(&status) && clients.local.is_some() => {}
                Err(status) => return Err(status.into()),
            }
            if !deleted.is_empty() {
                println!("Deleted Networks:");
                deleted.iter().for_each(|name| println!("{name}"));
            }
        }
        NetworkCommand::Connect { aliases, network, container } => {
            clients.local()?.connect_container(pb::ConnectContainerRequest { network, container, aliases }).await?;
        }
        NetworkCommand::Disconnect { force, network, container } => {
            clients.local()?.disconnect_container(pb::DisconnectContainerRequest { network, container, force }).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network(name: &str, driver: pb::NetworkDriver, scope: pb::NetworkScope) -> pb::Network {
        pb::Network {
            id: format!("{name}0123456789abcdef"),
            spec: Some(pb::NetworkSpec { name: name.into(), driver: driver.into(), ..Default::default() }),
            scope: scope.into(),
            ..Default::default()
        }
    }

    #[test]
    fn filters_select_like_docker() {
        let overlay = network("appnet", pb::NetworkDriver::Overlay, pb::NetworkScope::Swarm);
        let bridge = network("bridge", pb::NetworkDriver::Bridge, pb::NetworkScope::Local);
        let filters = parse_filters(&["driver=overlay".into()]).unwrap();
        assert!(matches(&overlay, &filters) && !matches(&bridge, &filters));
        let filters = parse_filters(&["scope=local".into(), "name=bri".into()]).unwrap();
        assert!(!matches(&overlay, &filters) && matches(&bridge, &filters));
        let error = parse_filters(&["colour=red".into()]).unwrap_err().to_string();
        assert!(error.contains("\"colour=red\""), "{error}");
        assert_eq!(short_id(&overlay.id), "appnet012345");
    }

    #[test]
    fn drivers_are_named_or_refused() {
        assert_eq!(parse_driver("bridge").unwrap(), pb::NetworkDriver::Bridge);
        assert!(parse_driver("macvlan").unwrap_err().to_string().contains("\"macvlan\""));
    }
}
