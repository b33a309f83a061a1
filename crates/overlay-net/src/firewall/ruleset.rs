//! The pure translation of a [`FirewallModel`] into Shoal's two nftables
//! tables. Nothing here runs `nft`; the result is one transaction that
//! deletes and re-adds both tables, so applying it twice gives the same
//! ruleset and the kernel never holds a half-built one.
//!
//! Shape of `table inet shoal` (filter):
//!
//! ```text
//! chain forward            hook forward, priority filter, policy accept
//!   ct state established,related accept
//!   iifname vmap { <bridge>: jump from-<bridge>, <overlay>: jump from-<overlay> }
//!   oifname { ours } ct status dnat accept          (published ports, from anywhere)
//!   oifname { ours } drop                           (nothing else gets in)
//! chain from-<bridge>      traffic leaving a network's containers
//!   oifname <bridge> accept                         (same network, same node)
//!   oifname <overlay> ip saddr S ip daddr S accept  (overlay: same network, other nodes)
//!   ct status dnat accept                           (not internal: published ports)
//!   oifname != { ours } ip daddr != { subnets } accept (not internal: the outside)
//!   drop
//! chain from-<overlay>     traffic arriving from other nodes
//!   oifname <bridge> ip saddr S ip daddr S accept   (per overlay network)
//!   oifname { bridges } ct status dnat accept
//!   drop
//! ```
//!
//! Traffic that neither enters nor leaves one of our interfaces is never
//! judged: the base chain's policy is accept, so the host's own forwarding
//! (Docker's bridges, the user's) is none of our business.
//!
//! `table ip shoal-nat` DNATs published ports (prerouting for traffic from
//! outside, output for the node's own traffic to a non-loopback address of
//! its own), masquerades hairpin traffic that DNAT sent back into the
//! bridge it came from, and masquerades non-internal networks to the
//! outside.

use std::borrow::Cow;
use std::collections::HashSet;

use ipnet::Ipv4Net;
use nftables::batch::Batch;
use nftables::expr::{
    Expression, Fib, FibFlag, FibResult, Meta, MetaKey, NamedExpression, Payload, PayloadField,
    Prefix, SetItem, Verdict, CT,
};
use nftables::schema::{Chain, NfListObject, Nftables, Rule, Table};
use nftables::stmt::{Counter, JumpTarget, Match, Operator, Statement, VerdictMap, NAT};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

use super::error::FirewallError;
use super::model::{FirewallModel, NetworkRules, PublishedPort};
use super::service_rules;

/// `table inet shoal`: isolation and egress filtering.
pub const FILTER_TABLE: &str = "shoal";
/// `table ip shoal-nat`: published ports and masquerade.
pub const NAT_TABLE: &str = "shoal-nat";

const PUBLISHED_CHAIN: &str = "published-ports";
// The standard hook priorities (`filter`, `dstnat`, `srcnat`), as numbers
// because the JSON API takes numbers.
const PRIORITY_FILTER: i32 = 0;
const PRIORITY_DSTNAT: i32 = -100;
const PRIORITY_SRCNAT: i32 = 100;

/// The full transaction for `model`: both tables deleted and re-added.
pub fn ruleset(model: &FirewallModel) -> Result<Nftables<'static>, FirewallError> {
    model.validate()?;
    let mut batch = Batch::new();
    push_replacement(&mut batch, model);
    Ok(batch.to_nftables())
}

/// Appends "delete our tables, add them as `model` says" to `batch`;
/// `model` must be valid.
pub(crate) fn push_replacement(batch: &mut Batch<'static>, model: &FirewallModel) {
    push_removal(batch);
    // A rule may jump to a chain listed after it; within one transaction
    // that chain must already exist, so every table and chain goes first.
    let (rules, containers): (Vec<_>, Vec<_>) = filter_table(model)
        .into_iter()
        .chain(nat_table(model))
        .partition(|object| matches!(object, NfListObject::Rule(_)));
    for object in containers.into_iter().chain(rules) {
        batch.add(object);
    }
}

/// Appends the deletion of both tables; safe when they do not exist.
pub(crate) fn push_removal(batch: &mut Batch<'static>) {
    for (family, name) in [(NfFamily::INet, FILTER_TABLE), (NfFamily::IP, NAT_TABLE)] {
        // `add` first: deleting a table that does not exist would fail the
        // whole transaction, and adding an existing one is a no-op.
        batch.add(table(family, name));
        batch.delete(table(family, name));
    }
}

/// The chain judging traffic that arrives from interface `name`.
pub fn from_chain(name: &str) -> String {
    format!("from-{name}")
}

fn filter_table(model: &FirewallModel) -> Vec<NfListObject<'static>> {
    let t = Scope::new(NfFamily::INet, FILTER_TABLE);
    let ours = model.interfaces();
    let bridges: Vec<String> = model.networks.iter().map(|n| n.bridge.clone()).collect();
    let subnets: Vec<Ipv4Net> = model.networks.iter().map(|n| n.subnet.trunc()).collect();

    let mut objects = vec![
        table(NfFamily::INet, FILTER_TABLE),
        t.base_chain(
            "forward",
            NfChainType::Filter,
            NfHook::Forward,
            PRIORITY_FILTER,
        ),
    ];
    objects.push(t.rule(
        "forward",
        vec![
            has(ct("state"), list(&["established", "related"])),
            accept(),
        ],
        None,
    ));
    objects.extend(service_rules::filter_forward_rules(&t, model));
    objects.extend(service_rules::filter_output_chain(&t, model));
    if ours.is_empty() {
        return objects;
    }
    let dispatch = ours
        .iter()
        .map(|name| {
            SetItem::Mapping(
                Expression::String(name.clone().into()),
                Expression::Verdict(Verdict::Jump(JumpTarget {
                    target: from_chain(name).into(),
                })),
            )
        })
        .collect();
    objects.push(t.rule(
        "forward",
        vec![Statement::VerdictMap(VerdictMap {
            key: meta(MetaKey::Iifname),
            data: Expression::Named(NamedExpression::Set(dispatch)),
        })],
        None,
    ));
    objects.push(t.rule(
        "forward",
        vec![
            is(meta(MetaKey::Oifname), names(&ours)),
            has(ct("status"), word("dnat")),
            accept(),
        ],
        Some("published ports, from anywhere"),
    ));
    objects.push(t.rule(
        "forward",
        vec![is(meta(MetaKey::Oifname), names(&ours)), counter(), drop()],
        Some("nothing else enters Shoal's networks"),
    ));

    for network in &model.networks {
        objects.extend(network_chain(
            &t,
            network,
            model.overlay_device.as_deref(),
            &ours,
            &subnets,
        ));
    }
    if let Some(device) = &model.overlay_device {
        objects.extend(overlay_chain(&t, device, model, &bridges));
    }
    objects
}

/// What the containers of one network may reach.
fn network_chain(
    t: &Scope,
    network: &NetworkRules,
    overlay_device: Option<&str>,
    ours: &[String],
    subnets: &[Ipv4Net],
) -> Vec<NfListObject<'static>> {
    let chain = from_chain(&network.bridge);
    let subnet = network.subnet.trunc();
    let mut objects = vec![t.chain(&chain)];
    objects.push(t.rule(
        &chain,
        vec![
            is(meta(MetaKey::Oifname), word(&network.bridge)),
            counter(),
            accept(),
        ],
        Some("same network, this node"),
    ));
    if let (true, Some(device)) = (network.overlay, overlay_device) {
        objects.push(t.rule(
            &chain,
            vec![
                is(meta(MetaKey::Oifname), word(device)),
                is(ip("saddr"), prefix(subnet)),
                is(ip("daddr"), prefix(subnet)),
                counter(),
                accept(),
            ],
            Some("same network, other nodes"),
        ));
    }
    if !network.internal {
        objects.push(t.rule(
            &chain,
            vec![has(ct("status"), word("dnat")), counter(), accept()],
            Some("published ports"),
        ));
        objects.push(t.rule(
            &chain,
            vec![
                is_not(meta(MetaKey::Oifname), names(ours)),
                is_not(ip("daddr"), subnet_set(subnets)),
                counter(),
                accept(),
            ],
            Some("the outside"),
        ));
    }
    objects.push(t.rule(&chain, vec![counter(), drop()], Some("other networks")));
    objects
}

/// What may arrive from other nodes: only traffic within an overlay
/// network's subnet, into that network's bridge.
fn overlay_chain(
    t: &Scope,
    device: &str,
    model: &FirewallModel,
    bridges: &[String],
) -> Vec<NfListObject<'static>> {
    let chain = from_chain(device);
    let mut objects = vec![t.chain(&chain)];
    for network in model.networks.iter().filter(|n| n.overlay) {
        let subnet = network.subnet.trunc();
        objects.push(t.rule(
            &chain,
            vec![
                is(meta(MetaKey::Oifname), word(&network.bridge)),
                is(ip("saddr"), prefix(subnet)),
                is(ip("daddr"), prefix(subnet)),
                counter(),
                accept(),
            ],
            None,
        ));
    }
    if !bridges.is_empty() {
        objects.push(t.rule(
            &chain,
            vec![
                is(meta(MetaKey::Oifname), names(bridges)),
                has(ct("status"), word("dnat")),
                counter(),
                accept(),
            ],
            Some("published ports"),
        ));
    }
    objects.push(t.rule(&chain, vec![counter(), drop()], Some("other networks")));
    objects
}

fn nat_table(model: &FirewallModel) -> Vec<NfListObject<'static>> {
    let t = Scope::new(NfFamily::IP, NAT_TABLE);
    let ours = model.interfaces();
    let subnets: Vec<Ipv4Net> = model.networks.iter().map(|n| n.subnet.trunc()).collect();
    let mut objects = vec![
        table(NfFamily::IP, NAT_TABLE),
        t.base_chain(
            "prerouting",
            NfChainType::NAT,
            NfHook::Prerouting,
            PRIORITY_DSTNAT,
        ),
        t.base_chain("output", NfChainType::NAT, NfHook::Output, PRIORITY_DSTNAT),
        t.base_chain(
            "postrouting",
            NfChainType::NAT,
            NfHook::Postrouting,
            PRIORITY_SRCNAT,
        ),
        t.chain(PUBLISHED_CHAIN),
    ];
    let is_local = is(
        Expression::Named(NamedExpression::Fib(Fib {
            result: FibResult::Type,
            flags: HashSet::from([FibFlag::Daddr]),
        })),
        word("local"),
    );
    // VIPs and service ports first: their matches are narrower.
    objects.extend(service_rules::nat_entry_rules(&t, model));
    objects.push(t.rule(
        "prerouting",
        vec![is_local.clone(), jump(PUBLISHED_CHAIN)],
        None,
    ));
    // Loopback cannot be DNAT'd without route_localnet; the port relay
    // serves 127.0.0.1 instead.
    objects.push(t.rule(
        "output",
        vec![
            is_not(ip("daddr"), prefix(loopback())),
            is_local,
            jump(PUBLISHED_CHAIN),
        ],
        None,
    ));
    for port in &model.published {
        if port.host_ip.is_some_and(|ip| ip.is_loopback()) {
            continue;
        }
        objects.push(t.rule(PUBLISHED_CHAIN, dnat_rule(port), Some(&port.to_string())));
    }
    objects.extend(service_rules::nat_exit_rules(&t, model));
    for network in &model.networks {
        let subnet = network.subnet.trunc();
        // Internal networks too: a VIP may send a container to a neighbour
        // on its own bridge, whose reply would otherwise skip the node.
        objects.push(t.rule(
            "postrouting",
            vec![
                has(ct("status"), word("dnat")),
                is(meta(MetaKey::Oifname), word(&network.bridge)),
                is(ip("saddr"), prefix(subnet)),
                is(ip("daddr"), prefix(subnet)),
                Statement::Masquerade(None),
            ],
            Some("hairpin to a published port or VIP"),
        ));
        if network.internal {
            continue;
        }
        objects.push(t.rule(
            "postrouting",
            vec![
                is(ip("saddr"), prefix(subnet)),
                is_not(meta(MetaKey::Oifname), names(&ours)),
                is_not(ip("daddr"), subnet_set(&subnets)),
                Statement::Masquerade(None),
            ],
            Some("the outside"),
        ));
    }
    objects
}

fn dnat_rule(port: &PublishedPort) -> Vec<Statement<'static>> {
    let mut expr = Vec::new();
    if let Some(host_ip) = port.host_ip {
        expr.push(is(ip("daddr"), word(&host_ip.to_string())));
    }
    expr.push(is(
        Expression::Named(NamedExpression::Payload(Payload::PayloadField(
            PayloadField {
                protocol: port.protocol.as_str().into(),
                field: "dport".into(),
            },
        ))),
        Expression::Number(port.host_port.into()),
    ));
    expr.push(Statement::DNAT(Some(NAT {
        addr: Some(word(&port.container_ip.to_string())),
        family: None,
        port: Some(Expression::Number(port.container_port.into())),
        flags: None,
    })));
    expr
}

/// Family and name of one of our tables, to stamp on its chains and rules.
pub(super) struct Scope {
    family: NfFamily,
    table: &'static str,
}

impl Scope {
    pub(super) fn new(family: NfFamily, table: &'static str) -> Scope {
        Scope { family, table }
    }

    pub(super) fn chain(&self, name: &str) -> NfListObject<'static> {
        NfListObject::Chain(Chain {
            family: self.family,
            table: self.table.into(),
            name: name.to_string().into(),
            ..Chain::default()
        })
    }

    pub(super) fn base_chain(
        &self,
        name: &str,
        kind: NfChainType,
        hook: NfHook,
        prio: i32,
    ) -> NfListObject<'static> {
        NfListObject::Chain(Chain {
            family: self.family,
            table: self.table.into(),
            name: name.to_string().into(),
            _type: Some(kind),
            hook: Some(hook),
            prio: Some(prio),
            policy: Some(NfChainPolicy::Accept),
            ..Chain::default()
        })
    }

    pub(super) fn rule(
        &self,
        chain: &str,
        expr: Vec<Statement<'static>>,
        comment: Option<&str>,
    ) -> NfListObject<'static> {
        NfListObject::Rule(Rule {
            family: self.family,
            table: self.table.into(),
            chain: chain.to_string().into(),
            expr: expr.into(),
            comment: comment.map(|c| Cow::Owned(c.to_string())),
            ..Rule::default()
        })
    }
}

pub(super) fn table(family: NfFamily, name: &'static str) -> NfListObject<'static> {
    NfListObject::Table(Table {
        family,
        name: name.into(),
        handle: None,
    })
}

pub(super) fn loopback() -> Ipv4Net {
    Ipv4Net::new(std::net::Ipv4Addr::new(127, 0, 0, 0), 8).expect("8 is a valid IPv4 prefix length")
}

pub(super) fn word(value: &str) -> Expression<'static> {
    Expression::String(value.to_string().into())
}

pub(super) fn list(values: &[&str]) -> Expression<'static> {
    Expression::List(values.iter().map(|v| word(v)).collect())
}

/// One name as itself, several as an anonymous set (one lookup per packet).
pub(super) fn names(values: &[String]) -> Expression<'static> {
    match values {
        [one] => word(one),
        _ => Expression::Named(NamedExpression::Set(
            values.iter().map(|v| SetItem::Element(word(v))).collect(),
        )),
    }
}

pub(super) fn prefix(net: Ipv4Net) -> Expression<'static> {
    Expression::Named(NamedExpression::Prefix(Prefix {
        addr: Box::new(word(&net.network().to_string())),
        len: net.prefix_len().into(),
    }))
}

pub(super) fn subnet_set(nets: &[Ipv4Net]) -> Expression<'static> {
    Expression::Named(NamedExpression::Set(
        nets.iter()
            .map(|net| SetItem::Element(prefix(*net)))
            .collect(),
    ))
}

pub(super) fn meta(key: MetaKey) -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(Meta { key }))
}

pub(super) fn ip(field: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: "ip".into(),
            field: field.into(),
        },
    )))
}

pub(super) fn ct(key: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::CT(CT {
        key: key.into(),
        family: None,
        dir: None,
    }))
}

pub(super) fn matching(
    left: Expression<'static>,
    op: Operator,
    right: Expression<'static>,
) -> Statement<'static> {
    Statement::Match(Match { left, right, op })
}

pub(super) fn is(left: Expression<'static>, right: Expression<'static>) -> Statement<'static> {
    matching(left, Operator::EQ, right)
}

pub(super) fn is_not(left: Expression<'static>, right: Expression<'static>) -> Statement<'static> {
    matching(left, Operator::NEQ, right)
}

/// Flag tests (`ct state`, `ct status`) use `in`: any of the bits is set.
pub(super) fn has(left: Expression<'static>, right: Expression<'static>) -> Statement<'static> {
    matching(left, Operator::IN, right)
}

pub(super) fn accept() -> Statement<'static> {
    Statement::Accept(None)
}

pub(super) fn drop() -> Statement<'static> {
    Statement::Drop(None)
}

pub(super) fn counter() -> Statement<'static> {
    Statement::Counter(Counter::Anonymous(None))
}

pub(super) fn jump(chain: &str) -> Statement<'static> {
    Statement::Jump(JumpTarget {
        target: chain.to_string().into(),
    })
}
