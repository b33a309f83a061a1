//! Address management of the node's bridge networks, as pure functions:
//! subnets carved from the daemon's address pool, checks of explicit
//! subnets and gateways, and the lowest free address of a network.
//!
//! Subnets come from the TOP of the pool downwards (100.127.255.0/24
//! first for the default 100.64.0.0/10): the managers hand out swarm
//! overlay subnets from the bottom up, so the two stay apart for as long
//! as the pool allows. Whatever the order, a subnet is only taken when it
//! overlaps no other network of the node and no route of the host.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use ipnet::Ipv4Net;

use super::error::{LocalNetError, Result};
use crate::netlink::Ipv4Route;

/// Largest prefix a network may have: room for the gateway and containers
/// (the bridge refuses longer ones too).
pub const MAX_PREFIX: u8 = 30;
pub const DEFAULT_SUBNET_SIZE: u8 = 24;

/// `--default-address-pool`: where subnets of new bridge networks come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddressPool {
    pub base: Ipv4Net,
    /// Prefix length of each network's subnet.
    pub size: u8,
}

impl Default for AddressPool {
    fn default() -> Self {
        AddressPool {
            base: Ipv4Net::new(Ipv4Addr::new(100, 64, 0, 0), 10)
                .expect("10 is a valid prefix length"),
            size: DEFAULT_SUBNET_SIZE,
        }
    }
}

impl fmt::Display for AddressPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "base={},size={}", self.base, self.size)
    }
}

/// `CIDR` (subnets of /24), or docker's `base=CIDR,size=N`.
impl FromStr for AddressPool {
    type Err = LocalNetError;

    fn from_str(value: &str) -> Result<Self> {
        let invalid = |rule| LocalNetError::InvalidPool {
            value: value.to_string(),
            rule,
        };
        let (base, size) = if value.contains('=') {
            let (mut base, mut size) = (None, None);
            for field in value.split(',') {
                match field.split_once('=') {
                    Some(("base", cidr)) => base = Some(cidr),
                    Some(("size", n)) => size = Some(n.parse::<u8>().map_err(|_| invalid("size must be a prefix length such as 24"))?),
                    _ => return Err(invalid("write it as CIDR or base=CIDR,size=N, e.g. 100.64.0.0/10 or base=100.64.0.0/10,size=24")),
                }
            }
            (
                base.ok_or_else(|| invalid("base=CIDR is missing"))?,
                size.unwrap_or(DEFAULT_SUBNET_SIZE),
            )
        } else {
            (value, DEFAULT_SUBNET_SIZE)
        };
        let base: Ipv4Net = base
            .trim()
            .parse()
            .map_err(|_| invalid("the base is not an IPv4 CIDR such as 100.64.0.0/10"))?;
        if base.trunc() != base {
            return Err(invalid(
                "the base has host bits set; give the network address of the range",
            ));
        }
        if size < base.prefix_len() || size > MAX_PREFIX {
            return Err(invalid(
                "the size must be at least the base's prefix length and at most 30",
            ));
        }
        Ok(AddressPool { base, size })
    }
}

impl AddressPool {
    /// The pool's subnets of its size, highest first.
    pub fn subnets_top_down(&self) -> impl Iterator<Item = Ipv4Net> + '_ {
        let count: u64 = 1u64 << (self.size - self.base.prefix_len());
        let step: u64 = 1u64 << (32 - u32::from(self.size));
        let start = u64::from(u32::from(self.base.network()));
        (0..count).rev().filter_map(move |i| {
            let address = u32::try_from(start + i * step).ok()?;
            Ipv4Net::new(Ipv4Addr::from(address), self.size).ok()
        })
    }

    /// The highest subnet of the pool that overlaps none of `taken`.
    pub fn free_subnet(&self, taken: &[Ipv4Net]) -> Option<Ipv4Net> {
        self.subnets_top_down()
            .find(|candidate| !taken.iter().any(|t| overlaps(candidate, t)))
    }
}

/// Whether two networks share any address.
pub fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// An explicit `--subnet`: IPv4 CIDR, no host bits, room for containers.
pub fn parse_subnet(value: &str) -> Result<Ipv4Net> {
    let subnet: Ipv4Net = value
        .trim()
        .parse()
        .map_err(|_| LocalNetError::InvalidSubnet {
            value: value.to_string(),
        })?;
    if subnet.trunc() != subnet {
        return Err(LocalNetError::HostBitsSet {
            subnet,
            network: subnet.trunc(),
        });
    }
    if subnet.prefix_len() > MAX_PREFIX {
        return Err(LocalNetError::SubnetTooSmall { subnet });
    }
    Ok(subnet)
}

/// The gateway of `subnet`: `given` (checked to be a host address of the
/// subnet), or the subnet's first host address.
pub fn gateway_for(subnet: Ipv4Net, given: Option<&str>) -> Result<Ipv4Addr> {
    let Some(given) = given else {
        return Ok(first_host(subnet));
    };
    let gateway: Ipv4Addr = given
        .trim()
        .parse()
        .map_err(|_| LocalNetError::InvalidGateway {
            value: given.to_string(),
        })?;
    if !subnet.contains(&gateway) || gateway == subnet.network() || gateway == subnet.broadcast() {
        return Err(LocalNetError::GatewayOutsideSubnet {
            gateway: given.to_string(),
            subnet,
        });
    }
    Ok(gateway)
}

pub fn first_host(subnet: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()) + 1)
}

/// The lowest address of `subnet` that is neither the network, broadcast
/// nor gateway address nor in `used`.
pub fn lowest_free(
    subnet: Ipv4Net,
    gateway: Ipv4Addr,
    used: &BTreeSet<Ipv4Addr>,
) -> Option<Ipv4Addr> {
    let first = u32::from(subnet.network()) + 1;
    let last = u32::from(subnet.broadcast()).checked_sub(1)?;
    (first..=last)
        .map(Ipv4Addr::from)
        .find(|a| *a != gateway && !used.contains(a))
}

/// Routes a new network must not overlap: every route of the host but the
/// default route (everything overlaps it) and those of `own_devices` (the
/// node's bridge networks, checked against their own subnets instead).
pub fn conflicting_routes<'a>(
    routes: &'a [Ipv4Route],
    own_devices: &'a BTreeSet<String>,
) -> impl Iterator<Item = &'a Ipv4Route> + 'a {
    routes
        .iter()
        .filter(move |r| !r.is_default() && !own_devices.contains(&r.device))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(value: &str) -> Ipv4Net {
        value.parse().expect("test CIDR")
    }

    #[test]
    fn the_default_pool_is_carved_from_the_top() {
        let pool = AddressPool::default();
        let mut subnets = pool.subnets_top_down();
        assert_eq!(subnets.next(), Some(net("100.127.255.0/24")));
        assert_eq!(subnets.next(), Some(net("100.127.254.0/24")));
        assert_eq!(pool.subnets_top_down().count(), 1 << 14);
        assert_eq!(pool.subnets_top_down().last(), Some(net("100.64.0.0/24")));
    }

    #[test]
    fn free_subnets_skip_networks_and_routes() {
        let pool = AddressPool::default();
        // A network, and a wider route covering the next two /24s.
        let taken = [net("100.127.255.0/24"), net("100.127.252.0/23")];
        assert_eq!(pool.free_subnet(&taken), Some(net("100.127.254.0/24")));
        let taken = [
            net("100.127.254.0/24"),
            net("100.127.255.0/24"),
            net("100.127.252.0/23"),
        ];
        assert_eq!(pool.free_subnet(&taken), Some(net("100.127.251.0/24")));
        // A route covering the whole pool leaves nothing.
        assert_eq!(pool.free_subnet(&[net("100.0.0.0/8")]), None);
    }

    #[test]
    fn pools_parse_in_both_spellings() {
        assert_eq!(
            "100.64.0.0/10".parse::<AddressPool>().unwrap(),
            AddressPool::default()
        );
        let pool: AddressPool = "base=100.96.0.0/12,size=26".parse().unwrap();
        assert_eq!((pool.base, pool.size), (net("100.96.0.0/12"), 26));
        assert_eq!(
            pool.subnets_top_down().next(),
            Some(net("100.111.255.192/26"))
        );
        for bad in [
            "100.64.0.0",
            "100.64.0.1/10",
            "base=100.64.0.0/24,size=16",
            "size=24",
            "base=x/1",
            "100.64.0.0/10,size=31",
            "base=100.64.0.0/10,size=31",
        ] {
            let err = bad.parse::<AddressPool>().unwrap_err().to_string();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn explicit_subnets_and_gateways_are_checked() {
        assert_eq!(parse_subnet("100.80.0.0/24").unwrap(), net("100.80.0.0/24"));
        let host_bits = parse_subnet("100.80.0.5/24").unwrap_err().to_string();
        assert!(
            host_bits.contains("100.80.0.5/24") && host_bits.contains("use 100.80.0.0/24"),
            "{host_bits}"
        );
        assert!(parse_subnet("100.80.0.0/31")
            .unwrap_err()
            .to_string()
            .contains("/30 or shorter"));
        assert!(parse_subnet("not-a-cidr")
            .unwrap_err()
            .to_string()
            .contains("\"not-a-cidr\""));
        assert!(parse_subnet("fd00::/64").is_err());

        let subnet = net("100.80.0.0/24");
        assert_eq!(
            gateway_for(subnet, None).unwrap(),
            Ipv4Addr::new(100, 80, 0, 1)
        );
        assert_eq!(
            gateway_for(subnet, Some("100.80.0.254")).unwrap(),
            Ipv4Addr::new(100, 80, 0, 254)
        );
        for bad in ["10.0.0.1", "100.80.0.0", "100.80.0.255"] {
            let err = gateway_for(subnet, Some(bad)).unwrap_err().to_string();
            assert!(
                err.contains(bad) && err.contains("outside subnet 100.80.0.0/24"),
                "{err}"
            );
        }
        assert!(gateway_for(subnet, Some("nope"))
            .unwrap_err()
            .to_string()
            .contains("\"nope\""));
    }

    #[test]
    fn the_lowest_free_address_skips_gateway_and_used_ones() {
        let subnet = net("100.80.0.0/29");
        let gateway = Ipv4Addr::new(100, 80, 0, 1);
        let mut used = BTreeSet::new();
        let mut handed = Vec::new();
        while let Some(address) = lowest_free(subnet, gateway, &used) {
            used.insert(address);
            handed.push(address.octets()[3]);
        }
        // .0 network, .1 gateway, .7 broadcast.
        assert_eq!(handed, vec![2, 3, 4, 5, 6]);
        // A released address is the next one handed out.
        used.remove(&Ipv4Addr::new(100, 80, 0, 3));
        assert_eq!(
            lowest_free(subnet, gateway, &used),
            Some(Ipv4Addr::new(100, 80, 0, 3))
        );
        // A gateway elsewhere in the subnet frees .1.
        let used = BTreeSet::new();
        assert_eq!(
            lowest_free(subnet, Ipv4Addr::new(100, 80, 0, 6), &used),
            Some(Ipv4Addr::new(100, 80, 0, 1))
        );
        // /30: exactly one container address next to the gateway.
        let tiny = net("100.80.0.0/30");
        let first = lowest_free(tiny, first_host(tiny), &BTreeSet::new()).unwrap();
        assert_eq!(first, Ipv4Addr::new(100, 80, 0, 2));
        assert_eq!(
            lowest_free(tiny, first_host(tiny), &BTreeSet::from([first])),
            None
        );
    }

    #[test]
    fn default_routes_and_own_bridges_do_not_conflict() {
        let routes = vec![
            Ipv4Route::default_via(Ipv4Addr::new(198, 18, 1, 254), "eth0"),
            Ipv4Route::on_link(net("198.18.1.0/24"), "eth0"),
            Ipv4Route::on_link(net("100.127.255.0/24"), "shoal0"),
        ];
        let own = BTreeSet::from(["shoal0".to_string()]);
        let conflicting: Vec<String> = conflicting_routes(&routes, &own)
            .map(|r| r.to_string())
            .collect();
        assert_eq!(conflicting, vec!["198.18.1.0/24 dev eth0"]);
    }
}
