//! Reaching a manager: the one way the node's session, executor, reporter,
//! container attachments, certificate renewal and a joining manager pick
//! and connect to one. It goes through the managers' list in turn (the
//! session keeps the list current), optionally starting with a preferred
//! one (the node's own manager); a follower refusing a leader-only call
//! names the leader, which is tried next.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use shoal_proto::tls::{self, ClientTls};
use tonic::transport::Channel;

/// Response metadata in which a follower names the leader's address when
/// it refuses a leader-only call (the manager crate's `LEADER_METADATA`;
/// the agent does not depend on the manager crate).
const LEADER_METADATA: &str = "shoal-leader";
/// How long one connection attempt runs alone before the next starts.
const STAGGER: Duration = Duration::from_millis(250);
/// At most this many attempts pending at once.
const MAX_PENDING: usize = 4;
/// A [`ManagerDialer::persistent`] dialer reports failure after this long.
const PERSISTENT_GIVE_UP: Duration = Duration::from_secs(10);

pub struct ManagerDialer {
    tls: ClientTls,
    managers: Arc<Mutex<Vec<String>>>,
    /// Bounds connecting, and each call's wait for its response headers.
    timeout: Duration,
    /// After this long without success, `connect` stops starting attempts.
    give_up: Duration,
    next: usize,
    leader_hint: Option<String>,
    /// Tried first by every `connect` (e.g. the manager on this node)...
    preferred: Option<String>,
    /// ...unless the last one it gave failed the caller.
    skip_preferred: bool,
}

impl ManagerDialer {
    /// A dialer for one call: `connect` gives up after about `timeout`.
    pub fn new(tls: ClientTls, managers: Arc<Mutex<Vec<String>>>, timeout: Duration) -> Self {
        ManagerDialer { tls, managers, timeout, give_up: timeout, next: 0, leader_hint: None, preferred: None, skip_preferred: false }
    }

    /// Every `connect` starts with `manager` (when given), then the rest.
    pub fn preferring(mut self, manager: Option<String>) -> Self {
        self.preferred = manager;
        self
    }

    /// For a stream the node follows forever: `connect` keeps trying for
    /// longer, so there is no gap between calls in which nothing is tried.
    pub fn persistent(mut self) -> Self {
        self.give_up = PERSISTENT_GIVE_UP;
        self
    }

    /// Connects to a manager: the leader a follower named first, then each
    /// known manager in turn. Returns its address too.
    ///
    /// Attempts overlap: a new one starts every [`STAGGER`] while fewer
    /// than [`MAX_PENDING`] are pending, cycling through the managers, and
    /// the first to connect wins. A single attempt into a partition waits
    /// on TCP's SYN retransmissions (1 s apart at first); overlapping ones
    /// keep a fresh SYN going out every few hundred milliseconds, so a node
    /// whose network heals is back in well under a second, and a manager
    /// that is down costs one stagger, not a whole connect timeout. Gives
    /// up with the last error once it has tried for `give_up` without success.
    pub async fn connect(&mut self) -> Result<(String, Channel), String> {
        let started = tokio::time::Instant::now();
        let mut pending = FuturesUnordered::new();
        let mut launch = tokio::time::interval(STAGGER);
        launch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_error = String::new();
        let mut launched = 0usize;
        loop {
            let launching = started.elapsed() < self.give_up && pending.len() < MAX_PENDING;
            if !launching && pending.is_empty() {
                return Err(last_error);
            }
            tokio::select! {
                _ = launch.tick(), if launching => {
                    let Some(addr) = self.next_candidate(launched == 0) else {
                        last_error = "no manager is known yet".into();
                        continue;
                    };
                    launched += 1;
                    let tls = self.tls.clone();
                    let timeout = self.timeout;
                    pending.push(async move {
                        let result = tls::connect(&addr, &tls, timeout).await;
                        (addr, result)
                    });
                }
                Some((addr, result)) = pending.next(), if !pending.is_empty() => match result {
                    Ok(channel) => return Ok((addr, channel)),
                    Err(e) => last_error = e.to_string(),
                },
            }
        }
    }

    /// The manager to try next: the named leader once, the preferred one
    /// first in each `connect`, else the next in the list.
    fn next_candidate(&mut self, first: bool) -> Option<String> {
        if let Some(leader) = self.leader_hint.take() {
            return Some(leader);
        }
        if first && !std::mem::take(&mut self.skip_preferred) {
            if let Some(preferred) = &self.preferred {
                return Some(preferred.clone());
            }
        }
        let managers = self.managers.lock().unwrap_or_else(|p| p.into_inner());
        let others: Vec<&String> = managers.iter().filter(|m| Some(*m) != self.preferred.as_ref()).collect();
        if others.is_empty() {
            return self.preferred.clone();
        }
        let addr = others[self.next % others.len()].clone();
        self.next += 1;
        Some(addr)
    }

    /// The caller could not use `addr` (e.g. its session failed): if it is
    /// the preferred manager, the next `connect` starts with another.
    pub fn note_failure(&mut self, addr: &str) {
        if self.preferred.as_deref() == Some(addr) {
            self.skip_preferred = true;
        }
    }

    /// Whether a follower named the leader, who is tried next.
    pub fn knows_the_leader(&self) -> bool {
        self.leader_hint.is_some()
    }

    /// Remembers the leader a follower named in refusing a call.
    pub fn note_refusal(&mut self, status: &tonic::Status) {
        if let Some(leader) = leader_named_in(status) {
            self.leader_hint = Some(leader);
        }
    }
}

/// The leader's address from a follower's refusal, if it named one.
pub fn leader_named_in(status: &tonic::Status) -> Option<String> {
    let value = status.metadata().get(LEADER_METADATA)?.to_str().ok()?;
    (!value.is_empty()).then(|| value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_followers_refusal_names_the_leader() {
        let mut status = tonic::Status::failed_precondition("this manager is not the leader");
        assert_eq!(leader_named_in(&status), None);
        status.metadata_mut().insert(LEADER_METADATA, "198.18.0.2:4242".parse().unwrap());
        assert_eq!(leader_named_in(&status).as_deref(), Some("198.18.0.2:4242"));
    }
}
