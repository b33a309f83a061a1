//! The node's firewall: isolation between networks, the way out for
//! non-internal networks, and published ports, as one nftables ruleset.
//!
//! The caller describes what the node needs ([`FirewallModel`]: its
//! networks' bridges and subnets, the overlay device, the published ports)
//! and [`Firewall::apply`] turns that into Shoal's own two tables in the
//! node's network namespace:
//!
//! - `table inet shoal` filters forwarded traffic that enters or leaves one
//!   of our interfaces: containers on one network reach each other (on this
//!   node, and across the overlay device within the network's subnet),
//!   different networks cannot reach each other, internal networks reach
//!   nothing outside their subnet, others reach the outside, and DNAT'd
//!   (published) traffic enters the bridges from anywhere. Traffic between
//!   other interfaces is left alone. Bridged frames count too: with
//!   br_netfilter loaded they pass the forward hook with the bridge as both
//!   input and output interface.
//! - Swarm services (service_rules.rs): VIPs DNAT'd round robin to their
//!   running tasks for connections from the VIP's own network, refused
//!   when there is no backend; ports published through the routing mesh
//!   (every node, to tasks anywhere, SNAT to the node's ingress address)
//!   or in host mode (this node's tasks, client address kept).
//! - `table ip shoal-nat` DNATs published ports (from outside in prerouting,
//!   from the node itself to its non-loopback addresses in output),
//!   masquerades hairpin traffic, and masquerades non-internal networks to
//!   the outside. A container reaching its own published port through the
//!   node leaves by the bridge port it came in by, so endpoints need
//!   hairpin mode on their bridge port (as Docker sets without its proxy).
//!
//! Loopback (`127.0.0.1:PORT`) cannot be DNAT'd without route_localnet, so
//! the daemon runs a [`port_proxy::PortProxy`] per published port as well,
//! bound on the port's address; binding it is also what detects a port that
//! is already in use. DNAT catches external traffic before it reaches the
//! relay's socket.
//!
//! Every apply is one nft transaction that deletes and re-adds both tables,
//! so there is never a moment without rules, and applying the same model
//! twice leaves the same ruleset. Rules go in before forwarding is switched
//! on (net.ipv4.ip_forward=1). [`Firewall::remove`] (or [`cleanup`]) takes
//! everything out again. Other tables are never touched, with one exception:
//!
//! **Docker hosts.** A drop in any base chain is final in nftables, so
//! where the namespace's iptables-nft `ip filter` table has a FORWARD chain
//! with policy drop (Docker sets this), our accepts alone do not let our
//! traffic through. Then `iifname X accept` / `oifname X accept` for every
//! bridge and the overlay device are inserted at the top of Docker's
//! `DOCKER-USER` chain, or of `ip filter FORWARD` when there is no
//! DOCKER-USER, in the same transaction. Each carries the comment "shoal";
//! apply replaces and cleanup removes exactly the rules with that comment.
//! Isolation is unaffected, since our own table still drops what it must.
//! If Docker starts after Shoal, the next apply adds the rules; the daemon
//! should apply on start and whenever its networks change. See
//! docker_forward.rs for details.
//!
//! Everything runs synchronously (an apply spawns `nft` two or three
//! times); call it from `spawn_blocking` in async code.

mod docker_forward;
mod error;
mod model;
mod namespace;
mod nft;
pub mod port_proxy;
mod ruleset;
mod service_model;
mod service_rules;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::time::Instant;

use nftables::batch::Batch;

pub use docker_forward::{
    allow_forwarding, remove_forwarding, ExceptionChain, DOCKER_USER_CHAIN, FORWARD_CHAIN, RULE_TAG,
};
pub use error::FirewallError;
pub use model::{FirewallModel, NetworkRules, PortProtocol, PublishedPort};
pub use port_proxy::PortProxy;
pub use ruleset::{from_chain, ruleset, FILTER_TABLE, NAT_TABLE};
pub use service_model::{MeshSource, ServicePort, VirtualIp};

/// Attempts at one apply. The only expected reason to retry: the rules we
/// delete from `ip filter` by handle changed between listing and applying.
const APPLY_ATTEMPTS: usize = 3;

/// The firewall of one network namespace (a node).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Firewall {
    netns: Option<PathBuf>,
}

/// What an apply did beyond our own tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Applied {
    /// Where accept rules went because `ip filter FORWARD` drops by policy.
    pub forward_exception: Option<ExceptionChain>,
}

impl Firewall {
    /// The firewall of the namespace this process runs in.
    pub fn current_namespace() -> Firewall {
        Firewall { netns: None }
    }

    /// The firewall of the namespace bound at `path`, e.g. /run/netns/NAME.
    pub fn in_namespace(path: impl Into<PathBuf>) -> Firewall {
        Firewall {
            netns: Some(path.into()),
        }
    }

    pub fn netns(&self) -> Option<&Path> {
        self.netns.as_deref()
    }

    /// Makes the namespace's ruleset match `model` in one transaction, then
    /// makes sure IPv4 forwarding is on.
    pub fn apply(&self, model: &FirewallModel) -> Result<Applied, FirewallError> {
        model.validate()?;
        let started = Instant::now();
        let interfaces = model.interfaces();
        let applied = namespace::run_in(self.netns(), |netns| {
            let mut attempt = 1;
            let forward_exception = loop {
                let foreign = docker_forward::read(RULE_TAG, netns)?;
                let mut batch = Batch::new();
                ruleset::push_replacement(&mut batch, model);
                let exception = docker_forward::push_exception(
                    &mut batch,
                    foreign.as_ref(),
                    &interfaces,
                    RULE_TAG,
                );
                match nft::apply(batch, "applying the firewall", netns) {
                    Ok(()) => break exception,
                    Err(error)
                        if attempt < APPLY_ATTEMPTS
                            && foreign.is_some_and(|f| !f.tagged.is_empty()) =>
                    {
                        tracing::debug!(%error, attempt, "firewall transaction failed; the ip filter table changed, retrying");
                        attempt += 1;
                    }
                    Err(error) => return Err(error),
                }
            };
            namespace::enable_ip_forward(netns)?;
            Ok(Applied { forward_exception })
        })?;
        tracing::info!(
            netns = ?self.netns,
            networks = model.networks.len(),
            published = model.published.len(),
            vips = model.vips.len(),
            service_ports = model.service_ports.len(),
            forward_exception = applied.forward_exception.map(ExceptionChain::name),
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            "firewall applied"
        );
        Ok(applied)
    }

    /// Removes our tables and our tagged rules in `ip filter`; fine when
    /// there is nothing to remove. Leaves ip_forward as it is: other
    /// software on the host may rely on it.
    pub fn remove(&self) -> Result<(), FirewallError> {
        namespace::run_in(self.netns(), |netns| {
            let foreign = docker_forward::read(RULE_TAG, netns)?;
            let mut batch = Batch::new();
            ruleset::push_removal(&mut batch);
            if let Some(foreign) = &foreign {
                docker_forward::push_tagged_removal(&mut batch, foreign);
            }
            nft::apply(batch, "removing the firewall", netns)
        })?;
        tracing::info!(netns = ?self.netns, "firewall removed");
        Ok(())
    }
}

/// Removes Shoal's firewall from namespace `netns` (`None`: this process's
/// own), e.g. when a node leaves or after a crash.
pub fn cleanup(netns: Option<&Path>) -> Result<(), FirewallError> {
    Firewall {
        netns: netns.map(Path::to_path_buf),
    }
    .remove()
}
