//! The one place Shoal writes outside its own tables: accept rules in the
//! iptables-nft `ip filter` table when its FORWARD chain drops by policy,
//! as Docker sets it up.
//!
//! nftables evaluates every base chain on a hook, and a drop in any of them
//! is final: our own `accept` cannot save a packet that Docker's
//! `FORWARD policy drop` throws away afterwards. So when that table's
//! FORWARD chain has policy drop, every interface we own gets
//! `iifname X accept` and `oifname X accept`, inserted at the top of
//! Docker's `DOCKER-USER` chain (the chain Docker reserves for the user and
//! never flushes) or, without Docker, at the top of `FORWARD` itself. The
//! filtering that matters stays in `table inet shoal`, whose drops still
//! apply. Each rule carries a comment tag ("shoal") and is found and removed
//! by that tag, never by position.
//!
//! One interface per rule and no sets: iptables-nft must be able to read
//! these rules back (`iptables -S DOCKER-USER` shows
//! `-A DOCKER-USER -i shl-x -m comment --comment shoal -j ACCEPT`), or
//! Docker's own iptables calls on that chain would trip over them.
//!
//! Hosts on iptables-legacy are invisible to nft; a legacy FORWARD DROP is
//! reported in a warning and left alone.

use std::borrow::Cow;
use std::path::Path;

use nftables::batch::Batch;
use nftables::expr::{Expression, Meta, MetaKey, NamedExpression};
use nftables::schema::{NfCmd, NfListObject, Rule};
use nftables::stmt::{Match, Operator, Statement};
use nftables::types::NfFamily;
use serde_json::Value;

use super::error::FirewallError;
use super::{namespace, nft};

/// The comment that marks Shoal's rules in foreign chains.
pub const RULE_TAG: &str = "shoal";
pub const DOCKER_USER_CHAIN: &str = "DOCKER-USER";
pub const FORWARD_CHAIN: &str = "FORWARD";
const FOREIGN_TABLE: &str = "filter";

/// Where the accept rules went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExceptionChain {
    /// `ip filter DOCKER-USER` (Docker is installed).
    DockerUser,
    /// `ip filter FORWARD` (a FORWARD drop policy without Docker).
    Forward,
}

impl ExceptionChain {
    pub fn name(self) -> &'static str {
        match self {
            ExceptionChain::DockerUser => DOCKER_USER_CHAIN,
            ExceptionChain::Forward => FORWARD_CHAIN,
        }
    }
}

/// What matters to us about the namespace's `ip filter` table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ForeignFilter {
    pub forward_drops: bool,
    pub has_docker_user: bool,
    /// (chain, handle) of rules carrying our tag.
    pub tagged: Vec<(String, u32)>,
}

/// Reads the `ip filter` table of the calling thread's namespace; `None`
/// when it does not exist.
pub(crate) fn read(tag: &str, netns: &str) -> Result<Option<ForeignFilter>, FirewallError> {
    let chains = nft::list_json(&["list", "chains", "ip"], netns)?;
    if !has_filter_table(&chains, netns)? {
        warn_about_legacy_iptables();
        return Ok(None);
    }
    let table = nft::list_json(&["list", "table", "ip", FOREIGN_TABLE], netns)?;
    parse_filter_table(&table, tag)
        .map(Some)
        .map_err(|detail| FirewallError::ForeignTable {
            netns: netns.to_string(),
            detail,
        })
}

/// Appends the removal of our tagged rules and, when the FORWARD policy
/// drops, the insertion of fresh accept rules for `interfaces`.
pub(crate) fn push_exception(
    batch: &mut Batch<'static>,
    foreign: Option<&ForeignFilter>,
    interfaces: &[String],
    tag: &str,
) -> Option<ExceptionChain> {
    let foreign = foreign?;
    push_tagged_removal(batch, foreign);
    if !foreign.forward_drops || interfaces.is_empty() {
        return None;
    }
    let chain = if foreign.has_docker_user {
        ExceptionChain::DockerUser
    } else {
        ExceptionChain::Forward
    };
    // Each insert lands at the top, so insert in reverse to keep the
    // listing in the order of `interfaces`.
    for interface in interfaces.iter().rev() {
        for key in [MetaKey::Oifname, MetaKey::Iifname] {
            batch.add_cmd(NfCmd::Insert(NfListObject::Rule(Rule {
                family: NfFamily::IP,
                table: FOREIGN_TABLE.into(),
                chain: chain.name().into(),
                expr: vec![
                    Statement::Match(Match {
                        left: Expression::Named(NamedExpression::Meta(Meta { key })),
                        right: Expression::String(interface.clone().into()),
                        op: Operator::EQ,
                    }),
                    Statement::Accept(None),
                ]
                .into(),
                comment: Some(Cow::Owned(tag.to_string())),
                ..Rule::default()
            })));
        }
    }
    Some(chain)
}

pub(crate) fn push_tagged_removal(batch: &mut Batch<'static>, foreign: &ForeignFilter) {
    for (chain, handle) in &foreign.tagged {
        batch.delete(NfListObject::Rule(Rule {
            family: NfFamily::IP,
            table: FOREIGN_TABLE.into(),
            chain: chain.clone().into(),
            handle: Some(*handle),
            ..Rule::default()
        }));
    }
}

/// Adds (or refreshes) tagged accept rules for `interfaces` in namespace
/// `netns` (`None`: the caller's own) when its `ip filter FORWARD` drops by
/// policy, and removes stale ones otherwise. For interfaces Shoal owns
/// outside a node's firewall, such as the dev-cluster's bridge; use a tag
/// of its own so the node firewall's cleanup leaves them alone.
pub fn allow_forwarding(
    netns: Option<&Path>,
    tag: &str,
    interfaces: &[String],
) -> Result<Option<ExceptionChain>, FirewallError> {
    namespace::run_in(netns, |label| {
        let foreign = read(tag, label)?;
        let mut batch = Batch::new();
        let chain = push_exception(&mut batch, foreign.as_ref(), interfaces, tag);
        nft::apply(batch, "updating the ip filter accept rules", label)?;
        Ok(chain)
    })
}

/// Removes every rule tagged `tag` from `ip filter` in namespace `netns`.
pub fn remove_forwarding(netns: Option<&Path>, tag: &str) -> Result<(), FirewallError> {
    namespace::run_in(netns, |label| {
        let Some(foreign) = read(tag, label)? else {
            return Ok(());
        };
        let mut batch = Batch::new();
        push_tagged_removal(&mut batch, &foreign);
        nft::apply(batch, "removing the ip filter accept rules", label)
    })
}

fn objects(json: &str) -> Result<Vec<Value>, String> {
    let mut document: Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
    match document.get_mut("nftables").map(Value::take) {
        Some(Value::Array(objects)) => Ok(objects),
        _ => Err("no \"nftables\" array in nft's output".to_string()),
    }
}

fn has_filter_table(chains_json: &str, netns: &str) -> Result<bool, FirewallError> {
    let objects = objects(chains_json).map_err(|detail| FirewallError::ForeignTable {
        netns: netns.to_string(),
        detail,
    })?;
    Ok(objects
        .iter()
        .filter_map(|o| o.get("chain"))
        .any(|chain| chain["family"] == "ip" && chain["table"] == FOREIGN_TABLE))
}

/// Reads the listing of `ip filter` as plain JSON rather than through the
/// nftables crate's types: the table belongs to iptables-nft and may hold
/// expressions (xt matches) that a strict schema would refuse, and all we
/// need are chain policies and our own rules' handles.
pub(crate) fn parse_filter_table(json: &str, tag: &str) -> Result<ForeignFilter, String> {
    let mut foreign = ForeignFilter::default();
    for object in objects(json)? {
        if let Some(chain) = object.get("chain") {
            let name = chain["name"].as_str().unwrap_or_default();
            foreign.has_docker_user |= name == DOCKER_USER_CHAIN;
            foreign.forward_drops |=
                name == FORWARD_CHAIN && chain["hook"] == "forward" && chain["policy"] == "drop";
        } else if let Some(rule) = object.get("rule") {
            if rule["comment"].as_str() != Some(tag) {
                continue;
            }
            let chain = rule["chain"]
                .as_str()
                .ok_or("a rule without a chain name")?;
            let handle = rule["handle"]
                .as_u64()
                .and_then(|h| u32::try_from(h).ok())
                .ok_or("a rule without a handle")?;
            foreign.tagged.push((chain.to_string(), handle));
        }
    }
    Ok(foreign)
}

/// iptables-legacy rules run beside nftables and nft cannot see them; say
/// so when the legacy filter table exists, since its FORWARD policy may
/// drop our traffic.
fn warn_about_legacy_iptables() {
    // thread-self: this thread may be inside another network namespace.
    let names =
        std::fs::read_to_string("/proc/thread-self/net/ip_tables_names").unwrap_or_default();
    if names.lines().any(|line| line.trim() == FOREIGN_TABLE) {
        tracing::warn!(
            "an iptables-legacy filter table exists; if its FORWARD policy is DROP, allow Shoal's bridges \
             there (iptables-legacy -I FORWARD -i <bridge> -j ACCEPT) or switch to iptables-nft"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCKER_FILTER: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
        {"table": {"family": "ip", "name": "filter", "handle": 1}},
        {"chain": {"family": "ip", "table": "filter", "name": "DOCKER-USER", "handle": 1}},
        {"chain": {"family": "ip", "table": "filter", "name": "FORWARD", "handle": 2, "type": "filter", "hook": "forward", "prio": 0, "policy": "drop"}},
        {"rule": {"family": "ip", "table": "filter", "chain": "DOCKER-USER", "handle": 7, "comment": "shoal", "expr": [{"accept": null}]}},
        {"rule": {"family": "ip", "table": "filter", "chain": "DOCKER-USER", "handle": 8, "comment": "someone else", "expr": [{"accept": null}]}},
        {"rule": {"family": "ip", "table": "filter", "chain": "DOCKER-USER", "handle": 4, "expr": [{"xt": {"type": "match", "name": "addrtype"}}, {"return": null}]}},
        {"rule": {"family": "ip", "table": "filter", "chain": "FORWARD", "handle": 3, "expr": [{"jump": {"target": "DOCKER-USER"}}]}}]}"#;

    #[test]
    fn finds_the_drop_policy_docker_user_and_only_our_rules() {
        let foreign = parse_filter_table(DOCKER_FILTER, RULE_TAG).unwrap();
        assert_eq!(
            foreign,
            ForeignFilter {
                forward_drops: true,
                has_docker_user: true,
                tagged: vec![("DOCKER-USER".to_string(), 7)],
            }
        );
    }

    fn commands(
        foreign: Option<&ForeignFilter>,
        interfaces: &[&str],
    ) -> (Option<ExceptionChain>, Value) {
        let mut batch = Batch::new();
        let interfaces: Vec<String> = interfaces.iter().map(|s| s.to_string()).collect();
        let chain = push_exception(&mut batch, foreign, &interfaces, RULE_TAG);
        (
            chain,
            serde_json::to_value(batch.to_nftables()).unwrap()["nftables"].clone(),
        )
    }

    #[test]
    fn replaces_our_rules_at_the_top_of_docker_user() {
        let foreign = parse_filter_table(DOCKER_FILTER, RULE_TAG).unwrap();
        let (chain, cmds) = commands(Some(&foreign), &["shl-a", "wgs-x"]);
        assert_eq!(chain, Some(ExceptionChain::DockerUser));
        assert_eq!(cmds[0]["delete"]["rule"]["handle"], 7);
        let mut listing: Vec<String> = cmds.as_array().unwrap()[1..]
            .iter()
            .map(|c| {
                let rule = &c["insert"]["rule"];
                assert_eq!(rule["chain"], "DOCKER-USER");
                assert_eq!(rule["comment"], "shoal");
                let m = &rule["expr"][0]["match"];
                format!(
                    "{} {}",
                    m["left"]["meta"]["key"].as_str().unwrap(),
                    m["right"].as_str().unwrap()
                )
            })
            .collect();
        // Each insert goes to the top: the last inserted is listed first.
        listing.reverse();
        assert_eq!(
            listing,
            [
                "iifname shl-a",
                "oifname shl-a",
                "iifname wgs-x",
                "oifname wgs-x"
            ]
        );
    }

    #[test]
    fn uses_forward_without_docker_and_only_removes_when_forward_accepts() {
        let mut foreign = parse_filter_table(DOCKER_FILTER, RULE_TAG).unwrap();
        foreign.has_docker_user = false;
        let (chain, cmds) = commands(Some(&foreign), &["shl-a"]);
        assert_eq!(chain, Some(ExceptionChain::Forward));
        assert_eq!(cmds[1]["insert"]["rule"]["chain"], "FORWARD");

        foreign.forward_drops = false;
        let (chain, cmds) = commands(Some(&foreign), &["shl-a"]);
        assert_eq!(chain, None);
        assert_eq!(
            cmds.as_array().unwrap().len(),
            1,
            "only the stale rule's removal: {cmds}"
        );

        let (chain, cmds) = commands(None, &["shl-a"]);
        assert_eq!((chain, cmds.as_array().unwrap().len()), (None, 0));
    }
}
