//! Address arithmetic for the allocator and the network API: subnets carved
//! from a pool, addresses picked inside a subnet. Pure functions over what
//! is already taken, so the same inputs always give the same answer on any
//! leader.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::store::Network;

/// Networks smaller than this have no room for a gateway and a task.
pub const MAX_PREFIX_LENGTH: u8 = 30;

/// The lowest subnet of `prefix_len` inside `pool` that overlaps none of
/// `taken`.
pub fn free_subnet(pool: Ipv4Net, prefix_len: u8, taken: &[Ipv4Net]) -> Option<Ipv4Net> {
    let mut candidates = pool.subnets(prefix_len).ok()?;
    candidates.find(|candidate| !taken.iter().any(|t| overlaps(*t, *candidate)))
}

pub fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Docker's default: the subnet's first host address.
pub fn default_gateway(subnet: Ipv4Net) -> Option<Ipv4Addr> {
    subnet.hosts().next()
}

/// The lowest address of `network` that may be handed out and is not
/// `used`. Lowest-first keeps a small network's addresses dense and makes a
/// released address the next one handed out.
pub fn free_address(network: &Network, used: impl Fn(Ipv4Addr) -> bool) -> Option<Ipv4Addr> {
    free_address_from(network, None, used)
}

/// [`free_address`] among the addresses above `after` (all of them for `None`).
pub fn free_address_from(network: &Network, after: Option<Ipv4Addr>, used: impl Fn(Ipv4Addr) -> bool) -> Option<Ipv4Addr> {
    let first = after.map_or(u32::from(network.subnet.network()), |a| u32::from(a).saturating_add(1));
    let last = u32::from(network.subnet.broadcast());
    (first..=last).map(Ipv4Addr::from).find(|address| network.is_assignable(*address) && !used(*address))
}

/// How many addresses of `network` can ever be handed out.
pub fn capacity(network: &Network) -> usize {
    network.subnet.hosts().filter(|a| network.is_assignable(*a)).count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Meta, NetworkDriver, NetworkSpec};

    fn network(subnet: &str) -> Network {
        let subnet: Ipv4Net = subnet.parse().unwrap();
        Network {
            meta: Meta::default(),
            spec: NetworkSpec {
                name: "n".into(),
                labels: Default::default(),
                driver: NetworkDriver::Overlay,
                attachable: false,
                internal: false,
                mtu: None,
                options: Default::default(),
                ingress: false,
            },
            subnet,
            gateway: default_gateway(subnet).unwrap(),
        }
    }

    #[test]
    fn subnets_are_carved_lowest_first_around_what_is_taken() {
        let pool: Ipv4Net = "100.64.0.0/10".parse().unwrap();
        assert_eq!(free_subnet(pool, 24, &[]), Some("100.64.0.0/24".parse().unwrap()));
        let taken = ["100.64.0.0/24".parse().unwrap(), "100.64.1.128/25".parse().unwrap()];
        assert_eq!(free_subnet(pool, 24, &taken), Some("100.64.2.0/24".parse().unwrap()));
        // A larger taken subnet covers several candidates.
        let taken = ["100.64.0.0/22".parse().unwrap()];
        assert_eq!(free_subnet(pool, 24, &taken), Some("100.64.4.0/24".parse().unwrap()));
        let tiny: Ipv4Net = "100.64.0.0/24".parse().unwrap();
        assert_eq!(free_subnet(tiny, 24, &[tiny]), None);
    }

    #[test]
    fn addresses_skip_the_gateway_and_what_is_used() {
        let n = network("100.80.0.0/29");
        assert_eq!(n.gateway, Ipv4Addr::new(100, 80, 0, 1));
        assert_eq!(capacity(&n), 5);
        assert_eq!(free_address(&n, |_| false), Some(Ipv4Addr::new(100, 80, 0, 2)));
        let used = |a: Ipv4Addr| a.octets()[3] <= 4;
        assert_eq!(free_address(&n, used), Some(Ipv4Addr::new(100, 80, 0, 5)));
        assert_eq!(free_address(&n, |_| true), None);
        assert_eq!(free_address_from(&n, Some(Ipv4Addr::new(100, 80, 0, 2)), |_| false), Some(Ipv4Addr::new(100, 80, 0, 3)));
        assert_eq!(free_address_from(&n, Some(Ipv4Addr::new(100, 80, 0, 6)), |_| false), None);
        assert!(!n.is_assignable(Ipv4Addr::new(100, 80, 0, 7)), "broadcast");
        assert!(!n.is_assignable(Ipv4Addr::new(100, 80, 0, 0)), "network");
        assert!(!n.is_assignable(Ipv4Addr::new(100, 80, 0, 9)), "outside");
    }
}
