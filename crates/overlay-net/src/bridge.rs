//! The bridge of one network on a node: tasks' veths are its ports, it
//! carries the network's gateway address (the same on every node, as
//! Docker's overlay br0) and the node's own /32 on the network, and it
//! answers ARP for remote tasks (proxy_arp) whose /32 routes point at the
//! WireGuard device.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::error::{NetError, Result};
use crate::netlink::{validate_ifname, validate_mtu, LinkKind, Netlink, Sysctl};

/// The bridge of the node's default local network.
pub const DEFAULT_BRIDGE: &str = "shoal0";
pub const BRIDGE_PREFIX: &str = "shl-";
/// Characters of the network id in a bridge name: "shl-" + 11 = 15 bytes.
const BRIDGE_ID_CHARS: usize = 11;

/// `shl-` + the first 11 characters of the network id.
pub fn bridge_name(network_id: &str) -> String {
    let id: String = network_id.chars().take(BRIDGE_ID_CHARS).collect();
    format!("{BRIDGE_PREFIX}{id}")
}

/// What a network's bridge must look like on this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BridgeConfig {
    pub name: String,
    pub mtu: u32,
    /// The gateway address with the network's prefix, e.g. 100.64.3.1/24;
    /// it also gives the bridge the route to the whole subnet.
    pub gateway: Ipv4Net,
    /// This node's address on the network, carried as a /32: the source of
    /// traffic the node itself sends into the network.
    pub node_address: Option<Ipv4Addr>,
}

impl BridgeConfig {
    /// The bridge's IPv4 addresses, exactly.
    pub fn addresses(&self) -> Vec<Ipv4Net> {
        let mut addresses = vec![self.gateway];
        if let Some(node) = self.node_address {
            addresses.extend(Ipv4Net::new(node, 32).ok());
        }
        addresses
    }

    fn validate(&self) -> Result<()> {
        validate_ifname(&self.name)?;
        validate_mtu(self.mtu)?;
        if self.gateway.prefix_len() > 30 {
            return Err(NetError::InvalidValue {
                what: "gateway",
                value: self.gateway.to_string(),
                rule: "a network's gateway needs a prefix of /30 or shorter",
            });
        }
        if let Some(node) = self.node_address {
            if !self.gateway.contains(&node) || node == self.gateway.addr() {
                return Err(NetError::InvalidValue {
                    what: "node address",
                    value: node.to_string(),
                    rule: "it must lie in the network's subnet and differ from the gateway",
                });
            }
        }
        Ok(())
    }
}

/// Makes the bridge match `config`: creates it if missing, fixes its MTU,
/// addresses (removing any others), proxy_arp and up state. Returns whether
/// anything had to change; with an unchanged config a second call changes
/// nothing.
pub async fn ensure_bridge<N: Netlink>(netlink: &N, config: &BridgeConfig) -> Result<bool> {
    config.validate()?;
    let name = config.name.as_str();
    let mut changed = false;
    let mac = stable_mac(name);
    match netlink.link(name).await? {
        None => {
            netlink.create_bridge(name, Some(config.mtu)).await?;
            netlink.set_mac(name, mac).await?;
            changed = true;
        }
        Some(link) => {
            if link.kind != Some(LinkKind::Bridge) {
                return Err(NetError::WrongLinkKind {
                    name: name.to_string(),
                    netns: netlink.netns_name(),
                    expected: "bridge",
                    found: link
                        .kind
                        .map_or("device without a kind".to_string(), |k| k.to_string()),
                });
            }
            if link.mtu != config.mtu {
                netlink.set_mtu(name, config.mtu).await?;
                changed = true;
            }
            if link.mac != Some(mac) {
                netlink.set_mac(name, mac).await?;
                changed = true;
            }
            if !link.up {
                netlink.set_up(name, true).await?;
                changed = true;
            }
        }
    }

    let wanted = config.addresses();
    let present = netlink.addresses(name).await?;
    for stale in present.iter().filter(|a| !wanted.contains(a)) {
        netlink.delete_address(name, *stale).await?;
        changed = true;
    }
    for missing in wanted.iter().filter(|a| !present.contains(a)) {
        netlink.add_address(name, *missing).await?;
        changed = true;
    }

    // Remote tasks share the subnet but sit behind the WireGuard device:
    // the bridge answers ARP for them, and the /32 routes take it from there.
    let proxy_arp = Sysctl::ipv4_conf(name, "proxy_arp")?;
    if netlink.read_sysctl(&proxy_arp).await? != "1" {
        netlink.write_sysctl(&proxy_arp, "1").await?;
        changed = true;
    }
    // By default proxy ARP answers broadcasts after a random delay of up to
    // 0.8 s (measured: 1.2 s until the first packet); answer at once.
    let proxy_delay = Sysctl::new(&format!("net/ipv4/neigh/{name}/proxy_delay"))?;
    if netlink.read_sysctl(&proxy_delay).await.ok().as_deref() != Some("0") {
        netlink.write_sysctl(&proxy_delay, "0").await?;
        changed = true;
    }
    if changed {
        tracing::info!(bridge = name, mtu = config.mtu, gateway = %config.gateway, "network bridge configured");
    }
    Ok(changed)
}

/// The bridge's own hardware address, fixed and derived from its name
/// (locally administered, unicast). Left to itself a bridge takes the
/// lowest address among its ports and changes it when that port goes: a
/// container that resolved a remote task (proxy ARP) to the old address
/// then sends into the void until its neighbour entry expires, tens of
/// seconds; seen as a new task unreachable for a client while the old
/// task's port left during a rolling update.
pub fn stable_mac(name: &str) -> [u8; 6] {
    // FNV-1a: stable across builds and platforms, unlike std's hasher.
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    let b = hash.to_be_bytes();
    [(b[0] & 0xfc) | 0x02, b[1], b[2], b[3], b[4], b[5]]
}

/// Deletes the bridge; a missing one is fine. Ports still attached lose
/// their master but stay: detach or destroy sandboxes first.
pub async fn remove_bridge<N: Netlink>(netlink: &N, name: &str) -> Result<()> {
    validate_ifname(name)?;
    netlink.delete_link(name).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::{FakeNetlink, VethPair};

    fn config() -> BridgeConfig {
        BridgeConfig {
            name: bridge_name("0123456789abcdef"),
            mtu: 1440,
            gateway: "100.64.3.1/24".parse().expect("net"),
            node_address: Some(Ipv4Addr::new(100, 64, 3, 2)),
        }
    }

    #[test]
    fn bridge_names_fit_an_interface_name() {
        assert_eq!(bridge_name("0123456789abcdef"), "shl-0123456789a");
        assert_eq!(bridge_name("abc"), "shl-abc");
        assert!(bridge_name("0123456789abcdef").len() <= 15);
    }

    #[tokio::test]
    async fn ensure_creates_the_bridge_then_changes_nothing() {
        let node = FakeNetlink::new();
        let config = config();
        assert!(ensure_bridge(&node, &config).await.expect("first ensure"));
        let link = node.require_link(&config.name).await.expect("bridge");
        assert_eq!(
            (link.kind, link.mtu, link.up),
            (Some(LinkKind::Bridge), 1440, true)
        );
        let mut addresses = node.addresses(&config.name).await.expect("addresses");
        addresses.sort();
        assert_eq!(
            addresses,
            vec![
                "100.64.3.1/24".parse::<Ipv4Net>().expect("net"),
                "100.64.3.2/32".parse().expect("net")
            ]
        );
        let proxy = Sysctl::ipv4_conf(&config.name, "proxy_arp").expect("key");
        assert_eq!(node.read_sysctl(&proxy).await.expect("proxy_arp"), "1");
        let delay = Sysctl::new(&format!("net/ipv4/neigh/{}/proxy_delay", config.name)).expect("key");
        assert_eq!(node.read_sysctl(&delay).await.expect("proxy_delay"), "0");
        // A fixed address of its own, so ports coming and going never change it.
        let mac = link.mac.expect("the bridge has an address set");
        assert_eq!(mac, stable_mac(&config.name));
        assert_eq!(mac[0] & 0x03, 0x02, "locally administered unicast");
        assert_ne!(stable_mac("shl-a"), stable_mac("shl-b"));

        let before = node.mutations();
        assert!(!ensure_bridge(&node, &config).await.expect("second ensure"));
        assert_eq!(
            node.mutations(),
            before,
            "an unchanged config changed: {:?}",
            node.log()
        );
    }

    #[tokio::test]
    async fn ensure_fixes_a_changed_mtu_and_addresses() {
        let node = FakeNetlink::new();
        let mut config = config();
        ensure_bridge(&node, &config).await.expect("ensure");
        // Someone turned it down and added a stray address.
        node.set_up(&config.name, false).await.expect("down");
        node.add_address(&config.name, "10.9.9.9/8".parse().expect("net"))
            .await
            .expect("stray");

        config.mtu = 1400;
        config.node_address = Some(Ipv4Addr::new(100, 64, 3, 7));
        assert!(ensure_bridge(&node, &config).await.expect("re-ensure"));
        let link = node.require_link(&config.name).await.expect("bridge");
        assert_eq!((link.mtu, link.up), (1400, true));
        let mut addresses = node.addresses(&config.name).await.expect("addresses");
        addresses.sort();
        assert_eq!(addresses, {
            let mut wanted = config.addresses();
            wanted.sort();
            wanted
        });
    }

    #[tokio::test]
    async fn a_link_of_another_kind_is_not_taken_over() {
        let node = FakeNetlink::new();
        let config = config();
        node.create_veth(&VethPair {
            name: &config.name,
            peer_name: "other",
            peer_netns: None,
            master: None,
            mtu: None,
        })
        .await
        .expect("veth");
        let err = ensure_bridge(&node, &config)
            .await
            .expect_err("veth is no bridge");
        assert!(err.to_string().contains("is a veth, not a bridge"), "{err}");
    }

    #[tokio::test]
    async fn bad_configs_are_refused_before_any_change() {
        let node = FakeNetlink::new();
        let mut outside = config();
        outside.node_address = Some(Ipv4Addr::new(100, 64, 4, 2));
        let mut tiny_mtu = config();
        tiny_mtu.mtu = 20;
        let mut long_name = config();
        long_name.name = "a-name-that-is-too-long".to_string();
        for bad in [outside, tiny_mtu, long_name] {
            let err = ensure_bridge(&node, &bad).await.expect_err("invalid");
            assert!(err.to_string().contains("is invalid"), "{err}");
        }
        assert_eq!(node.mutations(), 0);
    }

    #[tokio::test]
    async fn remove_is_idempotent() {
        let node = FakeNetlink::new();
        let config = config();
        ensure_bridge(&node, &config).await.expect("ensure");
        remove_bridge(&node, &config.name).await.expect("remove");
        remove_bridge(&node, &config.name)
            .await
            .expect("remove again");
        assert!(node.link(&config.name).await.expect("lookup").is_none());
    }
}
