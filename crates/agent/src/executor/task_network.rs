//! A task's network, as the executor sees it: the managers' view of the
//! overlay this node serves (kept whole here from the incremental
//! assignments messages, applied to the node's data plane by one loop),
//! and each task's sandbox: the namespace its container joins, with its
//! address on each of its networks.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ipnet::Ipv4Net;
use shoal_overlay_net::dataplane::{Attachment, Dataplane, OverlayNetwork, OverlayPeer};
use shoal_overlay_net::dns::DnsSettings;
use shoal_overlay_net::directory::{
    ContainerEntry, Directory, EndpointMode, NetworkAddress, Protocol, PublishMode, ServiceEntry, ServicePort, TaskEntry,
};
use shoal_proto::pb;
use tokio::sync::watch;

const APPLY_RETRY_MIN: Duration = Duration::from_millis(200);
const APPLY_RETRY_MAX: Duration = Duration::from_secs(5);

/// Task sandboxes are named apart from standalone containers' (which the
/// daemon names after the container), so each side only ever cleans up
/// its own.
const TASK_SANDBOX_PREFIX: &str = "task-";

pub fn sandbox_id(task_id: &str) -> String {
    format!("{TASK_SANDBOX_PREFIX}{task_id}")
}

/// The task id of a task sandbox; `None` for others.
pub fn task_of_sandbox(sandbox: &str) -> Option<&str> {
    sandbox.strip_prefix(TASK_SANDBOX_PREFIX)
}

/// The task's addresses, in the order its networks were given.
pub fn attachments(assignment: &pb::Assignment) -> Result<Vec<Attachment>, String> {
    assignment
        .networks
        .iter()
        .map(|n| {
            let address: Ipv4Net = n.address.parse().map_err(|_| {
                format!("the managers sent the address {:?} on network {}, which is not ADDRESS/PREFIX", n.address, n.network_name)
            })?;
            Ok(Attachment { network_id: n.network_id.clone(), address: address.addr() })
        })
        .collect()
}

/// The overlay as the managers last described it to this node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OverlayView {
    pub networks: BTreeMap<String, pb::NodeNetwork>,
    pub peers: BTreeMap<String, pb::OverlayPeer>,
    pub services: BTreeMap<String, pb::ServiceDirectory>,
}

impl OverlayView {
    /// Folds an assignments message in: a full message replaces the view.
    /// Returns whether the message said anything about the overlay (a
    /// full one always does).
    pub fn apply(&mut self, message: &pb::AssignmentsMessage) -> bool {
        let news = message.full
            || !message.networks_removed.is_empty()
            || !message.networks_changed.is_empty()
            || !message.peers_removed.is_empty()
            || !message.peers_changed.is_empty()
            || !message.services_removed.is_empty()
            || !message.services_changed.is_empty()
            || !message.service_tasks_changed.is_empty();
        if message.full {
            *self = OverlayView::default();
        }
        for id in &message.networks_removed {
            self.networks.remove(id);
        }
        for network in &message.networks_changed {
            self.networks.insert(network.id.clone(), network.clone());
        }
        for id in &message.peers_removed {
            self.peers.remove(id);
        }
        for peer in &message.peers_changed {
            self.peers.insert(peer.node_id.clone(), peer.clone());
        }
        for id in &message.services_removed {
            self.services.remove(id);
        }
        for service in &message.services_changed {
            self.services.insert(service.id.clone(), service.clone());
        }
        for delta in &message.service_tasks_changed {
            // A delta for a service this node does not have would be the
            // managers' mistake; the next full message corrects it.
            let Some(service) = self.services.get_mut(&delta.service_id) else { continue };
            // Kept sorted by id, as the managers send whole lists.
            for id in &delta.removed {
                if let Ok(i) = service.tasks.binary_search_by(|t| t.id.cmp(id)) {
                    service.tasks.remove(i);
                }
            }
            for task in &delta.changed {
                match service.tasks.binary_search_by(|t| t.id.cmp(&task.id)) {
                    Ok(i) => service.tasks[i] = task.clone(),
                    Err(i) => service.tasks.insert(i, task.clone()),
                }
            }
        }
        news
    }

    /// The names and backends the node resolves and balances.
    pub fn directory(&self) -> Directory {
        let services = self.services.values().map(service_entry).collect();
        let containers = self
            .networks
            .values()
            .flat_map(|n| n.containers.iter().map(move |c| (n, c)))
            .filter_map(|(network, c)| {
                Some(ContainerEntry { network_id: network.id.clone(), name: c.name.clone(), address: address_of(&c.address)?, aliases: c.aliases.clone() })
            })
            .collect();
        Directory { services, containers }
    }

    /// The data plane's terms. An entry the managers got wrong is skipped
    /// with a warning rather than holding back the rest.
    pub fn desired(&self) -> (Vec<OverlayNetwork>, Vec<OverlayPeer>) {
        let networks = self
            .networks
            .values()
            .filter_map(|n| match overlay_network(n) {
                Ok(network) => Some(network),
                Err(error) => {
                    tracing::warn!(network = %n.name, %error, "ignoring a network the managers described badly");
                    None
                }
            })
            .collect();
        let peers = self
            .peers
            .values()
            .filter_map(|p| match overlay_peer(p) {
                Ok(peer) => Some(peer),
                Err(error) => {
                    tracing::warn!(peer = %p.hostname, %error, "ignoring a peer the managers described badly");
                    None
                }
            })
            .collect();
        (networks, peers)
    }
}

fn overlay_network(n: &pb::NodeNetwork) -> Result<OverlayNetwork, String> {
    let subnet: Ipv4Net = n.subnet.parse().map_err(|_| format!("subnet {:?} is not a CIDR", n.subnet))?;
    let gateway: Ipv4Addr = n.gateway.parse().map_err(|_| format!("gateway {:?} is not an address", n.gateway))?;
    let node_address = match n.node_address.as_str() {
        "" => None,
        text => Some(text.parse::<Ipv4Addr>().map_err(|_| format!("node address {text:?} is not an address"))?),
    };
    Ok(OverlayNetwork {
        id: n.id.clone(),
        name: n.name.clone(),
        subnet,
        gateway,
        node_address,
        mtu: (n.mtu > 0).then_some(n.mtu),
        internal: n.internal,
        ingress: n.ingress,
    })
}

fn overlay_peer(p: &pb::OverlayPeer) -> Result<OverlayPeer, String> {
    Ok(OverlayPeer {
        node_id: p.node_id.clone(),
        public_key: p.public_key.parse().map_err(|e| format!("public key {:?}: {e}", p.public_key))?,
        endpoint: p.endpoint.parse().map_err(|_| format!("endpoint {:?} is not IP:PORT", p.endpoint))?,
        allowed_ips: p
            .allowed_ips
            .iter()
            .map(|ip| ip.parse().map_err(|_| format!("allowed IP {ip:?} is not a CIDR")))
            .collect::<Result<_, _>>()?,
    })
}

/// The address of an `ADDRESS/PREFIX`; `None` for a malformed one.
fn address_of(cidr: &str) -> Option<Ipv4Addr> {
    cidr.split('/').next()?.parse().ok()
}

fn network_addresses(addresses: &[pb::NetworkAddress]) -> Vec<NetworkAddress> {
    addresses.iter().filter_map(|a| Some(NetworkAddress { network_id: a.network_id.clone(), address: address_of(&a.address)? })).collect()
}

fn service_entry(service: &pb::ServiceDirectory) -> ServiceEntry {
    ServiceEntry {
        id: service.id.clone(),
        name: service.name.clone(),
        mode: match service.mode() {
            pb::EndpointMode::Dnsrr => EndpointMode::Dnsrr,
            _ => EndpointMode::Vip,
        },
        vips: network_addresses(&service.vips),
        aliases: service.aliases.iter().map(|a| (a.network_id.clone(), a.aliases.clone())).collect(),
        ports: service
            .ports
            .iter()
            .filter_map(|p| {
                Some(ServicePort {
                    protocol: match p.protocol() {
                        pb::PortProtocol::Udp => Protocol::Udp,
                        _ => Protocol::Tcp,
                    },
                    target: u16::try_from(p.target_port).ok()?,
                    published: u16::try_from(p.published_port).ok()?,
                    mode: match p.publish_mode() {
                        pb::PublishMode::Host => PublishMode::Host,
                        _ => PublishMode::Ingress,
                    },
                })
            })
            .collect(),
        tasks: service
            .tasks
            .iter()
            .map(|t| TaskEntry { id: t.id.clone(), name: t.name.clone(), node_id: t.node_id.clone(), addresses: network_addresses(&t.addresses) })
            .collect(),
    }
}

/// Applies the latest view to the data plane, one at a time, retrying a
/// failed apply; views that arrive meanwhile fold into the next apply.
pub async fn apply_views(dataplane: Arc<Dataplane>, mut views: watch::Receiver<OverlayView>) {
    // Nothing is known before the managers' first message; applying the
    // empty starting view would tear down what a restarted daemon should
    // adopt.
    views.borrow_and_update();
    if views.changed().await.is_err() {
        return;
    }
    let mut retry = APPLY_RETRY_MIN;
    loop {
        let ((networks, peers), directory) = {
            let view = views.borrow_and_update();
            (view.desired(), view.directory())
        };
        let count = (networks.len(), peers.len());
        let applied = dataplane.set_view(networks, peers, directory).await;
        match applied {
            Ok(()) => {
                tracing::debug!(networks = count.0, peers = count.1, "overlay applied");
                retry = APPLY_RETRY_MIN;
                if views.changed().await.is_err() {
                    return;
                }
            }
            Err(error) => {
                tracing::warn!(%error, "applying the overlay failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(retry) => {}
                    changed = views.changed() => if changed.is_err() { return },
                }
                retry = (retry * 2).min(APPLY_RETRY_MAX);
            }
        }
    }
}

/// A task's sandbox, ready for its container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedNetwork {
    /// The namespace the container joins.
    pub netns: PathBuf,
    /// Its resolv.conf (the node's embedded DNS), to bind-mount read-only
    /// at /etc/resolv.conf.
    pub resolv_conf: PathBuf,
}

/// The task's `--dns`, `--dns-search` and `--dns-option`.
pub fn dns_settings(assignment: &pb::Assignment) -> Result<DnsSettings, String> {
    let dns = assignment.spec.as_ref().and_then(|s| s.dns.clone()).unwrap_or_default();
    DnsSettings::parse(&dns.nameservers, &dns.search, &dns.options).map_err(|e| e.to_string())
}

/// Gives the task its sandbox and its resolv.conf; `None` for a task on
/// no network (its container gets a namespace of its own with loopback
/// only, and the image's resolv.conf).
pub async fn prepare(dataplane: Option<&Arc<Dataplane>>, assignment: &pb::Assignment) -> Result<Option<PreparedNetwork>, String> {
    if assignment.networks.is_empty() {
        return Ok(None);
    }
    let Some(dataplane) = dataplane else {
        return Err("this node has no network data plane, so it cannot run tasks attached to networks".into());
    };
    let attachments = attachments(assignment)?;
    let settings = dns_settings(assignment)?;
    let sandbox = sandbox_id(&assignment.task_id);
    let netns = dataplane.attach(&sandbox, &attachments).await.map_err(|e| format!("preparing the task's network failed: {e}"))?;
    let resolv_conf = dataplane.dns().configure(&sandbox, &settings).await.map_err(|e| format!("preparing the task's DNS failed: {e}"))?;
    Ok(Some(PreparedNetwork { netns, resolv_conf }))
}

/// Removes the task's sandbox, giving its addresses back to the node;
/// missing is fine.
pub async fn release(dataplane: Option<&Arc<Dataplane>>, task_id: &str) {
    let Some(dataplane) = dataplane else { return };
    if let Err(error) = dataplane.release(&sandbox_id(task_id)).await {
        tracing::warn!(task = %task_id, %error, "removing the task's network sandbox");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network(id: &str) -> pb::NodeNetwork {
        pb::NodeNetwork {
            id: id.into(),
            name: id.into(),
            subnet: "100.64.1.0/24".into(),
            gateway: "100.64.1.1".into(),
            ..Default::default()
        }
    }

    fn peer(id: &str) -> pb::OverlayPeer {
        pb::OverlayPeer {
            node_id: id.into(),
            hostname: id.into(),
            public_key: "YBkqzkxoT9sZo1n1p8lyaiOpaO9u5Gq/ZKHbQ8qcMxU=".into(),
            endpoint: "198.18.0.2:51820".into(),
            allowed_ips: vec!["100.64.1.7/32".into()],
        }
    }

    #[test]
    fn views_fold_incremental_messages_and_full_ones_replace() {
        let mut view = OverlayView::default();
        view.apply(&pb::AssignmentsMessage { full: true, networks_changed: vec![network("a")], peers_changed: vec![peer("n2")], ..Default::default() });
        view.apply(&pb::AssignmentsMessage { networks_changed: vec![network("b")], peers_removed: vec!["n2".into()], ..Default::default() });
        assert_eq!(view.networks.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert!(view.peers.is_empty());
        view.apply(&pb::AssignmentsMessage { full: true, networks_changed: vec![network("c")], ..Default::default() });
        assert_eq!(view.networks.keys().collect::<Vec<_>>(), ["c"]);
    }

    #[test]
    fn a_badly_described_entry_is_skipped_not_fatal() {
        let mut view = OverlayView::default();
        let mut bad = peer("n3");
        bad.endpoint = "nowhere".into();
        view.apply(&pb::AssignmentsMessage { full: true, networks_changed: vec![network("a")], peers_changed: vec![peer("n2"), bad], ..Default::default() });
        let (networks, peers) = view.desired();
        assert_eq!(networks.len(), 1);
        assert_eq!(peers.iter().map(|p| p.node_id.as_str()).collect::<Vec<_>>(), ["n2"]);
        assert_eq!(peers[0].allowed_ips[0].to_string(), "100.64.1.7/32");
    }

    #[test]
    fn service_directories_become_the_nodes_directory() {
        let mut view = OverlayView::default();
        let mut net = network("a");
        net.containers = vec![pb::NamedAddress { name: "probe".into(), address: "100.64.1.9/24".into(), aliases: vec!["p".into()] }];
        let service = pb::ServiceDirectory {
            id: "s1".into(),
            name: "web".into(),
            mode: pb::EndpointMode::Vip.into(),
            vips: vec![pb::NetworkAddress { network_id: "a".into(), address: "100.64.1.200/24".into(), ..Default::default() }],
            ports: vec![pb::PortConfig { protocol: pb::PortProtocol::Udp.into(), target_port: 53, published_port: 5353, publish_mode: pb::PublishMode::Host.into() }],
            tasks: vec![pb::TaskDirectory {
                id: "t1".into(),
                name: "web.1.t1".into(),
                node_id: "n1".into(),
                addresses: vec![pb::NetworkAddress { network_id: "a".into(), address: "100.64.1.2/24".into(), ..Default::default() }],
            }],
            ..Default::default()
        };
        view.apply(&pb::AssignmentsMessage { full: true, networks_changed: vec![net], services_changed: vec![service], ..Default::default() });
        let directory = view.directory();
        assert_eq!(directory.containers[0].address, Ipv4Addr::new(100, 64, 1, 9));
        let web = &directory.services[0];
        assert_eq!(web.backends_on("a").collect::<Vec<_>>(), [Ipv4Addr::new(100, 64, 1, 2)]);
        assert_eq!(web.ports[0], ServicePort { protocol: Protocol::Udp, target: 53, published: 5353, mode: PublishMode::Host });
        // Task by task: a second backend, then the first one gone.
        let t0 = pb::TaskDirectory {
            id: "t0".into(),
            name: "web.2.t0".into(),
            node_id: "n2".into(),
            addresses: vec![pb::NetworkAddress { network_id: "a".into(), address: "100.64.1.3/24".into(), ..Default::default() }],
        };
        let delta = pb::ServiceTasks { service_id: "s1".into(), changed: vec![t0], removed: Vec::new() };
        assert!(view.apply(&pb::AssignmentsMessage { service_tasks_changed: vec![delta], ..Default::default() }));
        let ids: Vec<&str> = view.services["s1"].tasks.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["t0", "t1"], "kept sorted by id");
        let delta = pb::ServiceTasks { service_id: "s1".into(), changed: Vec::new(), removed: vec!["t1".into()] };
        view.apply(&pb::AssignmentsMessage { service_tasks_changed: vec![delta], ..Default::default() });
        assert_eq!(view.directory().services[0].backends_on("a").collect::<Vec<_>>(), [Ipv4Addr::new(100, 64, 1, 3)]);
        view.apply(&pb::AssignmentsMessage { services_removed: vec!["s1".into()], ..Default::default() });
        assert!(view.directory().services.is_empty());
    }

    #[test]
    fn task_addresses_keep_their_order() {
        let assignment = pb::Assignment {
            task_id: "t1".into(),
            networks: vec![
                pb::NetworkAddress { network_id: "front".into(), address: "100.64.1.2/24".into(), ..Default::default() },
                pb::NetworkAddress { network_id: "back".into(), address: "100.64.2.9/24".into(), ..Default::default() },
            ],
            ..Default::default()
        };
        let attachments = attachments(&assignment).unwrap();
        assert_eq!(attachments[0], Attachment { network_id: "front".into(), address: Ipv4Addr::new(100, 64, 1, 2) });
        assert_eq!(attachments[1].network_id, "back");
        assert_eq!(task_of_sandbox(&sandbox_id("t1")), Some("t1"));
        assert_eq!(task_of_sandbox("c-123"), None);
    }
}
