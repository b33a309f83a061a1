//! Node heartbeats: when the leader last heard from each node, and the
//! relay that brings the leader the heartbeats its followers receive.
//!
//! A node heartbeats to whichever manager holds its session. Forwarding each
//! one to the leader cost a second RPC per heartbeat, so at a few thousand
//! nodes the managers spent most of their CPU passing heartbeats on (and the
//! leader, starved, declared healthy nodes down). A follower now collects the
//! node ids it heard from and sends them to the leader in one request every
//! [`RELAY_INTERVAL`]: the leader's work per heartbeat is a map insert, and a
//! heartbeat reaches it at most one interval late (a node is down only after
//! three missed periods of at least 100 ms each).

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, Weak};
use std::time::{Duration, Instant};

use shoal_proto::pb;

use crate::errors::ManagerError;
use crate::manager::Manager;

/// How often a follower hands the leader the heartbeats it received.
pub const RELAY_INTERVAL: Duration = Duration::from_millis(100);

/// A follower that has not delivered a batch for this long tells its nodes
/// so (their heartbeats fail as if the leader were unknown) rather than
/// claiming heartbeats the leader never sees.
const RELAY_STALE_AFTER: Duration = Duration::from_secs(2);

pub struct Heartbeats {
    /// Last heartbeat per node id; only meaningful on the leader.
    last_seen: Mutex<HashMap<String, Instant>>,
    /// Node ids heard since the last batch went to the leader.
    to_relay: Mutex<HashSet<String>>,
    /// When a batch last reached the leader (or this manager led).
    relayed_at: Mutex<Instant>,
}

impl Heartbeats {
    /// Starts the relay loop, which ends with the manager.
    pub fn start(manager: Weak<Manager>) -> Self {
        tokio::spawn(relay(manager));
        Heartbeats { last_seen: Mutex::default(), to_relay: Mutex::default(), relayed_at: Mutex::new(Instant::now()) }
    }

    /// The leader heard from these nodes now.
    pub fn record<'a>(&self, node_ids: impl IntoIterator<Item = &'a str>) {
        let now = Instant::now();
        let mut last_seen = self.last_seen.lock().unwrap_or_else(|p| p.into_inner());
        let mut count = 0;
        for node_id in node_ids {
            match last_seen.get_mut(node_id) {
                Some(at) => *at = now,
                None => {
                    last_seen.insert(node_id.to_string(), now);
                }
            }
            count += 1;
        }
        crate::metrics::metrics().heartbeats.inc_by(count);
    }

    /// A follower heard from `node_id`: relayed with the next batch, or an
    /// error when batches have stopped reaching the leader.
    pub fn relay(&self, node_id: &str) -> Result<(), ManagerError> {
        if self.relayed_at.lock().unwrap_or_else(|p| p.into_inner()).elapsed() > RELAY_STALE_AFTER {
            return Err(ManagerError::NoLeader);
        }
        self.to_relay.lock().unwrap_or_else(|p| p.into_inner()).insert(node_id.to_string());
        Ok(())
    }

    /// When each node was last heard from, as the leader knows it.
    pub fn last_seen(&self) -> HashMap<String, Instant> {
        self.last_seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn take_batch(&self) -> Vec<String> {
        std::mem::take(&mut *self.to_relay.lock().unwrap_or_else(|p| p.into_inner())).into_iter().collect()
    }

    fn delivered(&self) {
        *self.relayed_at.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }
}

/// Every [`RELAY_INTERVAL`]: the heartbeats this manager received as a
/// follower go to the leader in one request (or are recorded here if this
/// manager has become the leader meanwhile).
async fn relay(manager: Weak<Manager>) {
    let mut tick = tokio::time::interval(RELAY_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(manager) = manager.upgrade() else { return };
        let batch = manager.heartbeats.take_batch();
        if manager.is_leader() {
            manager.heartbeats.record(batch.iter().map(String::as_str));
            manager.heartbeats.delivered();
            continue;
        }
        if batch.is_empty() {
            // Nothing to say; the relay stays fresh while a leader is known.
            if manager.leader().is_some() {
                manager.heartbeats.delivered();
            }
            continue;
        }
        match send(&manager, batch).await {
            Ok(()) => manager.heartbeats.delivered(),
            Err(e) => tracing::debug!(error = %e, "relaying heartbeats to the leader"),
        }
    }
}

async fn send(manager: &Manager, node_ids: Vec<String>) -> Result<(), ManagerError> {
    let (_, leader_addr) = manager.leader().ok_or(ManagerError::NoLeader)?;
    let mut client = pb::dispatcher_client::DispatcherClient::new(manager.peer_channel(&leader_addr)?);
    client
        .heartbeat(pb::HeartbeatRequest { node_id: String::new(), relayed_node_ids: node_ids })
        .await
        .map_err(|status| ManagerError::from_forwarded(&leader_addr, status))?;
    Ok(())
}
