//! The rules of swarm services: VIPs balanced over their running tasks and
//! ports published through the routing mesh or in host mode. Part of the
//! same two tables and the same transaction as everything else
//! (ruleset.rs); this file only says what the services add.
//!
//! ```text
//! table ip shoal-nat
//!   chain prerouting
//!     iifname <bridge> ip daddr vmap { <vip>: jump vip-<vip>, ... }    (per network with VIPs)
//!     fib daddr type local ip daddr != { subnets } jump service-ports
//!   chain output
//!     ip daddr vmap { <vip>: jump vip-<vip>, ... }                      (the node's own)
//!     ip daddr != 127.0.0.0/8 ip daddr != { subnets } fib daddr type local jump service-ports
//!   chain vip-<a-b-c-d>        dnat to numgen inc mod N map { 0: backend, ... }
//!   chain service-ports        tcp dport P dnat to numgen inc mod N map { ... }:T
//!   chain postrouting
//!     ct status dnat ip daddr <ingress subnet> snat to <node's ingress address>
//! table inet shoal
//!   chain forward   ip daddr { vips } reject      (after established: no backend, or another network)
//!   chain output    ip daddr { vips } reject      (the node's own, no backend)
//! ```
//!
//! A VIP is not an address of any interface: the node routes it to the
//! overlay device, so the bridge answers ARP for it (proxy_arp) and the
//! client's packets reach the node, where prerouting rewrites the
//! destination before the routing decision. Only packets from the VIP's own
//! network are balanced; anything else addressed to a VIP is still
//! addressed to it at the forward hook and is rejected there, so a VIP is
//! neither a way into another network nor a silent black hole.
//!
//! `numgen inc` spreads new connections round robin per rule; only a
//! connection's first packet sees these chains (conntrack does the rest),
//! so their length costs nothing per packet.

use std::collections::BTreeMap;
use std::collections::HashSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use nftables::expr::{
    Expression, Fib, FibFlag, FibResult, Map, NamedExpression, NgMode, Numgen, Payload,
    PayloadField, SetItem, Verdict,
};
use nftables::schema::NfListObject;
use nftables::stmt::{JumpTarget, Statement, VerdictMap, NAT};
use nftables::types::{NfChainType, NfHook};

use super::model::FirewallModel;
use super::ruleset::{
    counter, has, ip, is, is_not, jump, loopback, meta, prefix, subnet_set, word, Scope,
};
use super::service_model::ServicePort;

pub(super) const SERVICE_PORTS_CHAIN: &str = "service-ports";
const PRIORITY_FILTER: i32 = 0;

/// The chain that balances one VIP.
pub(super) fn vip_chain(address: Ipv4Addr) -> String {
    format!("vip-{}", address.to_string().replace('.', "-"))
}

/// VIPs with somewhere to go; the others are refused in the filter table.
fn balanced(model: &FirewallModel) -> impl Iterator<Item = &super::service_model::VirtualIp> {
    model.vips.iter().filter(|v| !v.backends.is_empty())
}

/// Chains and rules of `table ip shoal-nat` for services, in the order the
/// nat table adds them: the per-VIP and service-port chains, then
/// prerouting and output rules (these go before the published-ports jump).
pub(super) fn nat_entry_rules(t: &Scope, model: &FirewallModel) -> Vec<NfListObject<'static>> {
    let mut objects = Vec::new();
    let mut by_bridge: BTreeMap<&str, Vec<Ipv4Addr>> = BTreeMap::new();
    for vip in balanced(model) {
        objects.push(t.chain(&vip_chain(vip.address)));
        objects.push(t.rule(
            &vip_chain(vip.address),
            vec![Statement::DNAT(Some(NAT {
                addr: Some(backends(&vip.backends)),
                family: None,
                port: None,
                flags: None,
            }))],
            Some(&vip.to_string()),
        ));
        by_bridge.entry(vip.bridge.as_str()).or_default().push(vip.address);
    }
    for (bridge, vips) in &by_bridge {
        objects.push(t.rule(
            "prerouting",
            vec![is(meta(nftables::expr::MetaKey::Iifname), word(bridge)), vip_dispatch(vips)],
            None,
        ));
    }
    let all: Vec<Ipv4Addr> = by_bridge.values().flatten().copied().collect();
    if !all.is_empty() {
        objects.push(t.rule("output", vec![vip_dispatch(&all)], Some("the node's own connections to VIPs")));
    }

    if model.service_ports.is_empty() {
        return objects;
    }
    objects.push(t.chain(SERVICE_PORTS_CHAIN));
    for port in model.service_ports.iter().filter(|p| !p.backends.is_empty()) {
        objects.push(t.rule(SERVICE_PORTS_CHAIN, service_dnat(port), Some(&port.to_string())));
    }
    // Like Docker's routing mesh: every local address but loopback (no
    // DNAT there without route_localnet) and the containers' networks.
    let subnets: Vec<Ipv4Net> = model.networks.iter().map(|n| n.subnet.trunc()).collect();
    let not_containers = is_not(ip("daddr"), subnet_set(&subnets));
    objects.push(t.rule(
        "prerouting",
        vec![is_local(), not_containers.clone(), jump(SERVICE_PORTS_CHAIN)],
        None,
    ));
    objects.push(t.rule(
        "output",
        vec![is_not(ip("daddr"), prefix(loopback())), not_containers, is_local(), jump(SERVICE_PORTS_CHAIN)],
        None,
    ));
    objects
}

/// Postrouting rules for services (before the hairpin and outside rules).
pub(super) fn nat_exit_rules(t: &Scope, model: &FirewallModel) -> Vec<NfListObject<'static>> {
    let Some(mesh) = model.mesh_source else { return Vec::new() };
    vec![t.rule(
        "postrouting",
        vec![
            has(super::ruleset::ct("status"), word("dnat")),
            is(ip("daddr"), prefix(mesh.subnet.trunc())),
            Statement::SNAT(Some(NAT {
                addr: Some(word(&mesh.address.to_string())),
                family: None,
                port: None,
                flags: None,
            })),
        ],
        Some("routing mesh: replies come back through this node"),
    )]
}

/// The `forward` rule that refuses what is still addressed to a VIP (no
/// backend, or sent from another network); goes right after the
/// established/related accept.
pub(super) fn filter_forward_rules(t: &Scope, model: &FirewallModel) -> Vec<NfListObject<'static>> {
    if model.vips.is_empty() {
        return Vec::new();
    }
    vec![t.rule("forward", refuse_vips(model), Some("VIPs: no backend for this sender"))]
}

/// An `output` chain refusing the node's own connections to a VIP with no
/// backend (they would otherwise wait on the overlay device).
pub(super) fn filter_output_chain(t: &Scope, model: &FirewallModel) -> Vec<NfListObject<'static>> {
    if model.vips.is_empty() {
        return Vec::new();
    }
    vec![
        t.base_chain("output", NfChainType::Filter, NfHook::Output, PRIORITY_FILTER),
        t.rule("output", refuse_vips(model), Some("VIPs: no backend")),
    ]
}

fn refuse_vips(model: &FirewallModel) -> Vec<Statement<'static>> {
    let unique: HashSet<Ipv4Addr> = model.vips.iter().map(|v| v.address).collect();
    let mut addresses: Vec<Ipv4Addr> = unique.into_iter().collect();
    addresses.sort();
    vec![
        is(ip("daddr"), address_set(&addresses)),
        counter(),
        // ICMP port unreachable: TCP connects fail with "connection
        // refused" at once, UDP senders get an error too.
        Statement::Reject(None),
    ]
}

fn service_dnat(port: &ServicePort) -> Vec<Statement<'static>> {
    vec![
        is(
            Expression::Named(NamedExpression::Payload(Payload::PayloadField(PayloadField {
                protocol: port.protocol.as_str().into(),
                field: "dport".into(),
            }))),
            Expression::Number(port.published.into()),
        ),
        Statement::DNAT(Some(NAT {
            addr: Some(backends(&port.backends)),
            family: None,
            port: Some(Expression::Number(port.target.into())),
            flags: None,
        })),
    ]
}

/// One backend as itself, several round robin.
fn backends(addresses: &[Ipv4Addr]) -> Expression<'static> {
    if let [one] = addresses {
        return word(&one.to_string());
    }
    let entries = addresses
        .iter()
        .enumerate()
        .map(|(i, a)| SetItem::Mapping(Expression::Number(i as u32), word(&a.to_string())))
        .collect();
    Expression::Named(NamedExpression::Map(Box::new(Map {
        key: Expression::Named(NamedExpression::Numgen(Numgen {
            mode: NgMode::Inc,
            ng_mod: addresses.len() as u32,
            offset: None,
        })),
        data: Expression::Named(NamedExpression::Set(entries)),
    })))
}

fn vip_dispatch(vips: &[Ipv4Addr]) -> Statement<'static> {
    let entries = vips
        .iter()
        .map(|v| {
            SetItem::Mapping(
                word(&v.to_string()),
                Expression::Verdict(Verdict::Jump(JumpTarget { target: vip_chain(*v).into() })),
            )
        })
        .collect();
    Statement::VerdictMap(VerdictMap { key: ip("daddr"), data: Expression::Named(NamedExpression::Set(entries)) })
}

fn address_set(addresses: &[Ipv4Addr]) -> Expression<'static> {
    match addresses {
        [one] => word(&one.to_string()),
        _ => Expression::Named(NamedExpression::Set(
            addresses.iter().map(|a| SetItem::Element(word(&a.to_string()))).collect(),
        )),
    }
}

fn is_local() -> Statement<'static> {
    is(
        Expression::Named(NamedExpression::Fib(Fib {
            result: FibResult::Type,
            flags: std::collections::HashSet::from([FibFlag::Daddr]),
        })),
        word("local"),
    )
}
