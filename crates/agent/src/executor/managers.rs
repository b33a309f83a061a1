//! Which manager the executor talks to. Like the session, it goes through
//! the managers' list in turn (the session keeps the list current); a
//! follower refusing a leader-only call names the leader, which is tried
//! next.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_proto::tls::{self, ClientTls};
use tonic::transport::Channel;

/// Response metadata in which a follower names the leader's address when
/// it refuses a leader-only call (the manager crate's `LEADER_METADATA`;
/// the agent does not depend on the manager crate).
const LEADER_METADATA: &str = "shoal-leader";

pub struct ManagerDialer {
    tls: ClientTls,
    managers: Arc<Mutex<Vec<String>>>,
    /// Bounds connecting, and each call's wait for its response headers.
    timeout: Duration,
    next: usize,
    leader_hint: Option<String>,
}

impl ManagerDialer {
    pub fn new(tls: ClientTls, managers: Arc<Mutex<Vec<String>>>, timeout: Duration) -> Self {
        ManagerDialer { tls, managers, timeout, next: 0, leader_hint: None }
    }

    /// Connects to the next manager to try: the leader a follower named,
    /// else each known manager once, in turn. Returns its address too.
    pub async fn connect(&mut self) -> Result<(String, Channel), String> {
        let mut candidates = self.managers.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if candidates.is_empty() {
            return Err("no manager is known yet".into());
        }
        let start = self.next % candidates.len();
        candidates.rotate_left(start);
        if let Some(leader) = self.leader_hint.take() {
            candidates.retain(|m| *m != leader);
            candidates.insert(0, leader);
        }
        let mut last_error = String::new();
        for addr in candidates {
            self.next += 1;
            match tls::connect(&addr, &self.tls, self.timeout).await {
                Ok(channel) => return Ok((addr, channel)),
                Err(e) => last_error = e.to_string(),
            }
        }
        Err(last_error)
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
