//! Runs firewall work inside a node's network namespace. `nft` inherits the
//! namespace of the thread that spawns it and /proc/sys/net shows that
//! thread's namespace, so the work runs on a short-lived thread inside the
//! namespace ([`crate::netns::run_in`]); the caller's threads never move.

use std::path::Path;

use super::error::FirewallError;

/// Runs `work` in the namespace at `netns` (a bind mount such as
/// /run/netns/X, or /proc/PID/ns/net), or right here when `None`. `work`
/// gets a description of the namespace for its error messages.
pub(crate) fn run_in<T, F>(netns: Option<&Path>, work: F) -> Result<T, FirewallError>
where
    T: Send,
    F: FnOnce(&str) -> Result<T, FirewallError> + Send,
{
    let Some(path) = netns else {
        return work("the current network namespace");
    };
    let label = format!("network namespace {}", path.display());
    crate::netns::run_in(path, || work(&label))?
}

/// Sets net.ipv4.ip_forward to 1 in the calling thread's namespace; the
/// bridges' traffic to each other, the overlay and the outside is routed.
pub(crate) fn enable_ip_forward(netns: &str) -> Result<(), FirewallError> {
    const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";
    let error = |source| FirewallError::IpForward {
        netns: netns.to_string(),
        source,
    };
    // Writing the same value is harmless, but skipping it keeps the
    // sysctl's change log (and any watcher of it) quiet.
    if std::fs::read_to_string(IP_FORWARD).map_err(error)?.trim() == "1" {
        return Ok(());
    }
    std::fs::write(IP_FORWARD, "1").map_err(error)
}
