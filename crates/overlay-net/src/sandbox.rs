//! Sandboxes: the network namespace of one task or container, and its
//! endpoints. An endpoint is a veth pair: the host end (`vs` + 13 hex chars)
//! is a port of the network's bridge in the node's namespace, the other end
//! is `eth0`, `eth1`, ... inside the sandbox with the task's address.
//!
//! Everything a restarted daemon needs to reconcile is in the kernel: the
//! sandbox is a named namespace in the caller's directory, an endpoint's
//! inner end carries the network id as its alias, and host end names derive
//! from (sandbox id, network id). So [`Sandboxes::list`] rebuilds the picture
//! and [`Sandboxes::attach`] is idempotent: attaching again repairs what is
//! off and never makes a second veth or route.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnet::Ipv4Net;
use sha2::{Digest, Sha256};

use crate::error::{NetError, Result};
use crate::netlink::{validate_ifname, validate_mtu, Ipv4Route, Link, LinkKind, Netlink};
use crate::netns::{self, NetnsDir};

/// Alias prefix that marks an endpoint's inner end; the network id follows.
const ENDPOINT_ALIAS_PREFIX: &str = "shoal-network:";
const HOST_VETH_PREFIX: &str = "vs";
const HOST_VETH_HEX_CHARS: usize = 13;

/// The host end of the veth of `sandbox_id` on `network_id`: `vs` + 13 hex
/// chars of SHA-256(sandbox id, NUL, network id). Stable across restarts and
/// versions, so a restarted daemon finds its veths by name.
pub fn host_veth_name(sandbox_id: &str, network_id: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(sandbox_id.as_bytes());
    hasher.update([0u8]);
    hasher.update(network_id.as_bytes());
    let digest = hasher.finalize();
    let hex: String = digest
        .iter()
        .flat_map(|byte| [byte >> 4, byte & 0xf])
        .take(HOST_VETH_HEX_CHARS)
        .map(|nibble| char::from_digit(u32::from(nibble), 16).unwrap_or('0'))
        .collect();
    format!("{HOST_VETH_PREFIX}{hex}")
}

/// One network attachment to make (or repair) in a sandbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointConfig {
    pub network_id: String,
    /// The network's bridge on this node (see [`crate::bridge`]).
    pub bridge: String,
    /// The task's address with the network's prefix, e.g. 100.64.3.7/24.
    pub address: Ipv4Net,
    pub mtu: u32,
    /// Route the sandbox's default traffic via this gateway (the first
    /// network of a task); `None` leaves the default route to others.
    pub default_gateway: Option<Ipv4Addr>,
}

/// An endpoint as it exists in the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub network_id: String,
    /// Host end, in the node's namespace.
    pub host_veth: String,
    /// Inner end, inside the sandbox (`eth0`, ...).
    pub interface: String,
    pub addresses: Vec<Ipv4Net>,
    pub mtu: u32,
    /// Gateway of the sandbox's default route, when that route uses this
    /// endpoint.
    pub default_gateway: Option<Ipv4Addr>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxInfo {
    pub id: String,
    /// The namespace's path, for the runtime to join.
    pub path: PathBuf,
    pub endpoints: Vec<Endpoint>,
}

/// The sandboxes of one node: namespaces under `dir`, endpoints on bridges
/// in the namespace `node` is connected to. Calls for different sandboxes may
/// run at once; calls for one sandbox must not (attach picks the next free
/// `ethN` from what exists).
pub struct Sandboxes<N: Netlink> {
    node: N,
    dir: NetnsDir,
}

impl<N: Netlink> Sandboxes<N> {
    pub fn new(node: N, dir: NetnsDir) -> Self {
        Sandboxes { node, dir }
    }

    /// The connection to the node's namespace.
    pub fn node(&self) -> &N {
        &self.node
    }

    pub fn dir(&self) -> &NetnsDir {
        &self.dir
    }

    /// Where sandbox `id`'s namespace is (or would be).
    pub fn path(&self, id: &str) -> PathBuf {
        self.dir.path(id)
    }

    /// Creates sandbox `id` with loopback up, or reuses an existing one
    /// (replacing a half-created namespace file). Returns its path.
    pub async fn create(&self, id: &str) -> Result<PathBuf> {
        validate_sandbox_id(id)?;
        let path = self.path(id);
        let sandbox = if self
            .node
            .list_netns(&self.dir)
            .await?
            .iter()
            .any(|n| n == id)
        {
            match self.node.connect(&path).await {
                Ok(sandbox) => sandbox,
                Err(e) => {
                    // A file left by a create that died before mounting.
                    tracing::warn!(sandbox = id, error = %e, "replacing an unusable sandbox namespace");
                    self.node.delete_netns(&self.dir, id).await?;
                    self.node.create_netns(&self.dir, id).await?;
                    self.node.connect(&path).await?
                }
            }
        } else {
            self.node.create_netns(&self.dir, id).await?;
            self.node.connect(&path).await?
        };
        if !sandbox.require_link("lo").await?.up {
            sandbox.set_up("lo", true).await?;
        }
        Ok(path)
    }

    /// Attaches sandbox `id` to a network, or repairs an existing attachment
    /// to match `config`. The sandbox must exist.
    pub async fn attach(&self, id: &str, config: &EndpointConfig) -> Result<Endpoint> {
        validate_sandbox_id(id)?;
        validate_endpoint(config)?;
        let path = self.path(id);
        let sandbox = self.node.connect(&path).await?;
        let host_veth = host_veth_name(id, &config.network_id);
        let alias = endpoint_alias(&config.network_id);

        let inner = find_endpoint(&sandbox, &config.network_id).await?;
        let host = self.node.link(&host_veth).await?;
        let interface = match (host, inner) {
            (Some(host), Some(inner))
                if host.kind == Some(LinkKind::Veth) && host.peer_index == Some(inner.index) =>
            {
                inner.name
            }
            (host, inner) => {
                // Nothing, or a half-made pair (a daemon died between the
                // steps below): start over, so no second veth appears.
                if let Some(inner) = inner {
                    sandbox.delete_link(&inner.name).await?;
                }
                if host.is_some() {
                    self.node.delete_link(&host_veth).await?;
                }
                let interface = free_interface_name(&sandbox).await?;
                self.node
                    .create_veth(&crate::netlink::VethPair {
                        name: &host_veth,
                        peer_name: &interface,
                        peer_netns: Some(&path),
                        master: Some(&config.bridge),
                        mtu: Some(config.mtu),
                    })
                    .await?;
                sandbox.set_alias(&interface, &alias).await?;
                tracing::info!(sandbox = id, network = %config.network_id, %host_veth, %interface, "endpoint created");
                interface
            }
        };

        self.reconcile_host_end(&host_veth, config).await?;
        reconcile_inner_end(&sandbox, &interface, config).await?;
        Ok(Endpoint {
            network_id: config.network_id.clone(),
            host_veth,
            interface,
            addresses: vec![config.address],
            mtu: config.mtu,
            default_gateway: config.default_gateway,
        })
    }

    /// Removes sandbox `id`'s endpoint on `network_id`; missing is fine.
    pub async fn detach(&self, id: &str, network_id: &str) -> Result<()> {
        validate_sandbox_id(id)?;
        if let Some(sandbox) = self.connect_existing(id).await? {
            if let Some(inner) = find_endpoint(&sandbox, network_id).await? {
                sandbox.delete_link(&inner.name).await?;
            }
        }
        // Also when the inner end was never labelled: the host end's name
        // is known, and deleting it takes the pair.
        self.node.delete_link(&host_veth_name(id, network_id)).await
    }

    /// Removes sandbox `id`: its veths (so no host end outlives it while a
    /// process still holds the namespace) and the namespace. Missing is fine.
    pub async fn destroy(&self, id: &str) -> Result<()> {
        validate_sandbox_id(id)?;
        if let Some(sandbox) = self.connect_existing(id).await? {
            for link in sandbox.links().await? {
                if link.kind == Some(LinkKind::Veth) {
                    sandbox.delete_link(&link.name).await?;
                }
            }
        }
        self.node.delete_netns(&self.dir, id).await?;
        tracing::info!(sandbox = id, "sandbox destroyed");
        Ok(())
    }

    /// Endpoints of sandbox `id`, inner interface order.
    pub async fn endpoints(&self, id: &str) -> Result<Vec<Endpoint>> {
        validate_sandbox_id(id)?;
        let sandbox = self.node.connect(&self.path(id)).await?;
        let routes = sandbox.routes().await?;
        let mut endpoints = Vec::new();
        for link in sandbox.links().await? {
            let Some(network_id) = network_of(&link) else {
                continue;
            };
            let default_gateway = routes
                .iter()
                .find(|r| r.is_default() && r.device == link.name)
                .and_then(|r| r.gateway);
            endpoints.push(Endpoint {
                host_veth: host_veth_name(id, network_id),
                network_id: network_id.to_string(),
                addresses: sandbox.addresses(&link.name).await?,
                mtu: link.mtu,
                interface: link.name,
                default_gateway,
            });
        }
        endpoints.sort_by_key(|e| interface_order(&e.interface));
        Ok(endpoints)
    }

    /// Every sandbox in the directory with its endpoints, for a restarted
    /// daemon to reconcile against. A namespace that cannot be entered is
    /// listed without endpoints (destroy removes it).
    pub async fn list(&self) -> Result<Vec<SandboxInfo>> {
        let mut sandboxes = Vec::new();
        for id in self.node.list_netns(&self.dir).await? {
            let endpoints = match self.endpoints(&id).await {
                Ok(endpoints) => endpoints,
                Err(e) => {
                    tracing::warn!(sandbox = %id, error = %e, "sandbox namespace is unusable");
                    Vec::new()
                }
            };
            sandboxes.push(SandboxInfo {
                path: self.path(&id),
                id,
                endpoints,
            });
        }
        Ok(sandboxes)
    }

    async fn connect_existing(&self, id: &str) -> Result<Option<N>> {
        if !self
            .node
            .list_netns(&self.dir)
            .await?
            .iter()
            .any(|n| n == id)
        {
            return Ok(None);
        }
        match self.node.connect(&self.path(id)).await {
            Ok(sandbox) => Ok(Some(sandbox)),
            Err(e) => {
                tracing::warn!(sandbox = id, error = %e, "cannot enter sandbox namespace");
                Ok(None)
            }
        }
    }

    async fn reconcile_host_end(&self, host_veth: &str, config: &EndpointConfig) -> Result<()> {
        let link = self.node.require_link(host_veth).await?;
        let bridge = self.node.require_link(&config.bridge).await?;
        if link.master != Some(bridge.index) {
            self.node
                .set_master(host_veth, Some(&config.bridge))
                .await?;
        }
        if link.mtu != config.mtu {
            self.node.set_mtu(host_veth, config.mtu).await?;
        }
        // A container reaching its own published port through the node's
        // address is DNAT'd back out the port it came in by; the bridge
        // only does that with hairpin mode on.
        if !self.node.hairpin(host_veth).await? {
            self.node.set_hairpin(host_veth, true).await?;
        }
        if !link.up {
            self.node.set_up(host_veth, true).await?;
        }
        Ok(())
    }
}

/// Inside the sandbox: MTU, exactly the configured address, up, and the
/// default route when asked for (in that order: a route needs an up device
/// with an address on the gateway's subnet).
async fn reconcile_inner_end<N: Netlink>(
    sandbox: &N,
    interface: &str,
    config: &EndpointConfig,
) -> Result<()> {
    let link = sandbox.require_link(interface).await?;
    if link.mtu != config.mtu {
        sandbox.set_mtu(interface, config.mtu).await?;
    }
    let present = sandbox.addresses(interface).await?;
    for stale in present.iter().filter(|a| **a != config.address) {
        sandbox.delete_address(interface, *stale).await?;
    }
    if !present.contains(&config.address) {
        sandbox.add_address(interface, config.address).await?;
    }
    if !link.up {
        sandbox.set_up(interface, true).await?;
    }
    let default_here = sandbox
        .routes()
        .await?
        .into_iter()
        .find(|r| r.is_default() && r.device == interface);
    match (config.default_gateway, default_here) {
        (Some(gateway), Some(route)) if route.gateway == Some(gateway) => {}
        (Some(gateway), _) => {
            sandbox
                .replace_route(&Ipv4Route::default_via(gateway, interface))
                .await?
        }
        (None, Some(route)) => sandbox.delete_route(&route).await?,
        (None, None) => {}
    }
    Ok(())
}

fn endpoint_alias(network_id: &str) -> String {
    format!("{ENDPOINT_ALIAS_PREFIX}{network_id}")
}

fn network_of(link: &Link) -> Option<&str> {
    if link.kind != Some(LinkKind::Veth) {
        return None;
    }
    link.alias.as_deref()?.strip_prefix(ENDPOINT_ALIAS_PREFIX)
}

async fn find_endpoint<N: Netlink>(sandbox: &N, network_id: &str) -> Result<Option<Link>> {
    Ok(sandbox
        .links()
        .await?
        .into_iter()
        .find(|link| network_of(link) == Some(network_id)))
}

/// The lowest `ethN` not taken in the sandbox.
async fn free_interface_name<N: Netlink>(sandbox: &N) -> Result<String> {
    let taken: Vec<String> = sandbox.links().await?.into_iter().map(|l| l.name).collect();
    let name = (0u32..)
        .map(|n| format!("eth{n}"))
        .find(|name| !taken.contains(name))
        .unwrap_or_else(|| "eth0".to_string());
    Ok(name)
}

/// `eth2` before `eth10`.
fn interface_order(name: &str) -> (usize, String) {
    (name.len(), name.to_string())
}

/// Sandbox ids become namespace file names.
pub fn validate_sandbox_id(id: &str) -> Result<()> {
    netns::validate_name(id).map_err(|_| NetError::InvalidName {
        what: "sandbox id",
        name: id.to_string(),
        rule: "use 1 to 64 characters from A-Z, a-z, 0-9, '-', '_' and '.', not starting with '.'",
    })
}

fn validate_endpoint(config: &EndpointConfig) -> Result<()> {
    validate_ifname(&config.bridge)?;
    validate_mtu(config.mtu)?;
    let id_ok = !config.network_id.is_empty()
        && config.network_id.len() <= 64
        && config.network_id.bytes().all(|b| b.is_ascii_graphic());
    if !id_ok {
        return Err(NetError::InvalidName {
            what: "network id",
            name: config.network_id.clone(),
            rule: "use 1 to 64 printable characters without spaces",
        });
    }
    if config.address.prefix_len() > 30 {
        return Err(NetError::InvalidValue {
            what: "endpoint address",
            value: config.address.to_string(),
            rule: "an endpoint needs the network's prefix (/30 or shorter)",
        });
    }
    if let Some(gateway) = config.default_gateway {
        if !config.address.contains(&gateway) || gateway == config.address.addr() {
            return Err(NetError::InvalidValue {
                what: "gateway",
                value: gateway.to_string(),
                rule: "the default gateway must lie in the endpoint's subnet and differ from its address",
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
