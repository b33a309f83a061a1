//! A running manager: its Raft node, its copy of the store, and the two
//! primitives everything else is built on: [`Manager::write`] (propose a
//! transaction, forwarded to the leader from a follower) and
//! [`Manager::read_barrier`] (Raft read-index, so a read reflects every write
//! acknowledged before it).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::{BasicNode, ChangeMembers, ServerState};
use shoal_proto::pb;
use shoal_proto::tls::ClientTls;
use tonic::transport::Channel;

use crate::errors::ManagerError;
use crate::raft::network::{Network, PeerContacts};
use crate::raft::forwarder::Forwarder;
use crate::raft::proposer::{ProposeError, Proposer};
use crate::raft::at_rest::{open_database, AtRest};
use crate::raft::own_runtime::RaftRuntime;
use crate::raft::{open_storage, NodeId, Raft};
use crate::store::{Object, Store, Transaction, TxnOutcome};

/// How long a write may wait for commit before the caller is told the
/// cluster cannot make progress (lost quorum, or partitioned from it).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long to wait for a leader to appear when none is known.
const LEADER_WAIT: Duration = Duration::from_secs(3);
const RPC_TIMEOUT: Duration = Duration::from_secs(5);

pub struct ManagerConfig<'a> {
    pub raft_id: NodeId,
    /// host:port other managers reach this one on.
    pub advertise: String,
    pub data_dir: &'a Path,
    pub tls: ClientTls,
    /// How the Raft data under `data_dir` is kept on disk: encrypted with
    /// a data key (the key file beside the node's TLS key).
    pub at_rest: AtRest,
    /// How many swarm events the manager keeps for `events --since`.
    pub event_history: usize,
}

pub struct Manager {
    pub raft_id: NodeId,
    pub advertise: String,
    /// Where the Raft log and state live (the metrics measure it).
    pub raft_dir: std::path::PathBuf,
    pub raft: Raft,
    pub store: Store,
    pub contacts: PeerContacts,
    /// Batches this manager's writes into log entries while it leads.
    proposer: Proposer,
    /// Batches this manager's writes to the leader while it follows.
    forwarder: Forwarder,
    tls: ClientTls,
    /// One channel per peer manager, for forwarding to whoever leads.
    peers: Mutex<HashMap<String, Channel>>,
    /// openraft allows one membership change at a time; this queues ours.
    membership: tokio::sync::Mutex<()>,
    /// When nodes were last heard from, and the followers' relay of them.
    pub heartbeats: crate::heartbeats::Heartbeats,
    /// Raft's own thread (see `raft::own_runtime`); declared after `raft`
    /// and everything holding it, so they go first when the manager drops.
    raft_runtime: RaftRuntime,
    /// Set once by the daemon; without it images stay as the user wrote them.
    image_pinner: std::sync::OnceLock<Arc<dyn crate::image_pinning::ImagePinner>>,
    /// Log subscriptions between `service logs` callers and the agents.
    pub logs: crate::log_broker::LogBroker,
    _db: sled::Db,
}

fn raft_config() -> Result<Arc<openraft::Config>, ManagerError> {
    // openraft's followers wait out a leader lease (= election_timeout_max)
    // and then their own election timeout, so a dead leader is replaced
    // 600-800 ms after its last heartbeat with these values: well inside
    // the 2 s failover target, while a leader must miss four 50 ms
    // heartbeats in a row before anyone stands for election.
    let config = openraft::Config {
        cluster_name: "shoal".into(),
        heartbeat_interval: 50,
        election_timeout_min: 200,
        election_timeout_max: 400,
        install_snapshot_timeout: 2_000,
        // As etcd's default snapshot count. A snapshot is a copy of the whole
        // store, so its cost grows with the store; the state machine persists
        // itself on every apply (a restart replays no snapshot), so snapshots
        // only let the log be purged and catch up a follower that fell
        // behind the log kept. Every 10,000 entries they took CPU and disk
        // from writes on a store of ~100,000 objects (control-plane bench,
        // 64 clients: manager CPU per write 0.97x etcd's, now 0.83-0.92x). The
        // cost: up to 100,000 entries of log on disk.
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(100_000),
        max_in_snapshot_log_to_keep: 1_000,
        ..Default::default()
    };
    Ok(Arc::new(config.validate().map_err(|e| ManagerError::Internal(format!("raft config: {e}")))?))
}

impl Manager {
    /// Opens (or creates) this manager's Raft storage under `data_dir` and
    /// starts its Raft node. A fresh node waits to be initialised or added.
    /// The leader-only loops are the caller's to start
    /// ([`crate::leader::spawn_leader_loops`]), once the manager is wired up.
    pub async fn start(config: ManagerConfig<'_>) -> Result<Arc<Self>, ManagerError> {
        std::fs::create_dir_all(config.data_dir)
            .map_err(|e| ManagerError::Internal(format!("creating {}: {e}", config.data_dir.display())))?;
        let raft_dir = config.data_dir.join("raft");
        // Blocking, and a one-time migration can take a while: off the runtime.
        // Its errors are sentences for the operator (wrong key file, ...).
        let (db, sealer) = {
            let (dir, at_rest) = (raft_dir.clone(), config.at_rest.clone());
            tokio::task::spawn_blocking(move || open_database(&dir, &at_rest))
                .await
                .map_err(|e| ManagerError::Internal(format!("opening raft storage: {e}")))?
                .map_err(|e| ManagerError::FailedPrecondition(e.to_string()))?
        };
        let store = Store::with_event_history(config.event_history);
        let (log_store, state_machine) = open_storage(&db, &raft_dir, store.clone(), sealer)
            .map_err(|e| ManagerError::Internal(format!("opening raft storage in {}: {e}", config.data_dir.display())))?;
        let contacts = PeerContacts::default();
        let network = Network::new(config.tls.clone(), contacts.clone());
        let raft_runtime =
            RaftRuntime::start().map_err(|e| ManagerError::Internal(format!("starting raft's thread: {e}")))?;
        // Created on Raft's thread, so the core and everything it spawns
        // (timers, replication, outbound connections) live there.
        let (raft_id, raft_config) = (config.raft_id, raft_config()?);
        let raft = raft_runtime
            .spawn(async move { Raft::new(raft_id, raft_config, network, log_store, state_machine).await })
            .await
            .map_err(|e| ManagerError::Internal(format!("starting raft: {e}")))?
            .map_err(|e| ManagerError::Internal(format!("starting raft: {e}")))?;
        let manager = Arc::new_cyclic(|this| Manager {
            forwarder: Forwarder::start(this.clone()),
            raft_id: config.raft_id,
            advertise: config.advertise,
            raft_dir: raft_dir.clone(),
            proposer: Proposer::start(raft.clone()),
            raft,
            store,
            contacts,
            tls: config.tls,
            peers: Mutex::new(HashMap::new()),
            membership: tokio::sync::Mutex::new(()),
            heartbeats: crate::heartbeats::Heartbeats::start(this.clone()),
            raft_runtime,
            image_pinner: std::sync::OnceLock::new(),
            logs: Default::default(),
            _db: db,
        });
        Ok(manager)
    }

    pub fn set_image_pinner(&self, pinner: Arc<dyn crate::image_pinning::ImagePinner>) {
        let _ = self.image_pinner.set(pinner);
    }

    pub fn image_pinner(&self) -> Option<&Arc<dyn crate::image_pinning::ImagePinner>> {
        self.image_pinner.get()
    }

    /// Makes this manager a one-member cluster and waits until it leads.
    pub async fn bootstrap(&self) -> Result<(), ManagerError> {
        let members = BTreeMap::from([(self.raft_id, BasicNode { addr: self.advertise.clone() })]);
        if let Err(e) = self.raft.initialize(members).await {
            // Already initialised is fine: a restart of a bootstrapped node.
            tracing::debug!(error = %e, "raft initialize");
        }
        self.raft
            .wait(Some(LEADER_WAIT))
            .state(ServerState::Leader, "bootstrap")
            .await
            .map_err(|_| ManagerError::NoLeader)?;
        Ok(())
    }

    /// Raft's own thread, for the work that must not queue behind the
    /// daemon's (serving other managers' Raft frames).
    pub(crate) fn raft_runtime(&self) -> &RaftRuntime {
        &self.raft_runtime
    }

    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(self.raft_id)
    }

    pub fn leader(&self) -> Option<(NodeId, String)> {
        // Called on every write: borrow the metrics rather than clone them.
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let leader = metrics.current_leader?;
        let node = metrics.membership_config.membership().get_node(&leader)?;
        Some((leader, node.addr.clone()))
    }

    pub fn voters(&self) -> BTreeSet<NodeId> {
        self.raft.metrics().borrow().membership_config.membership().voter_ids().collect()
    }

    /// Who leads and who votes, read once from Raft's metrics.
    pub fn raft_view(&self) -> RaftView {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        RaftView {
            leader: metrics.current_leader,
            voters: metrics.membership_config.membership().voter_ids().collect(),
        }
    }

    /// A gRPC channel to another manager over mutual TLS, reused across calls.
    pub fn peer_channel(&self, addr: &str) -> Result<Channel, ManagerError> {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(channel) = peers.get(addr) {
            return Ok(channel.clone());
        }
        let channel = shoal_proto::tls::connect_lazy(addr, &self.tls, RPC_TIMEOUT)
            .map_err(|e| ManagerError::Unavailable(format!("cannot connect to manager {addr}: {e}")))?;
        peers.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }

    /// Waits (bounded) until some manager is known to lead, and returns it.
    async fn wait_for_leader(&self) -> Result<(NodeId, String), ManagerError> {
        if let Some(leader) = self.leader() {
            return Ok(leader);
        }
        let mut metrics = self.raft.metrics();
        let waited = tokio::time::timeout(LEADER_WAIT, async {
            loop {
                if metrics.changed().await.is_err() {
                    return None;
                }
                if let Some(leader) = self.leader() {
                    return Some(leader);
                }
            }
        })
        .await;
        waited.ok().flatten().ok_or(ManagerError::NoLeader)
    }

    /// Commits a transaction through Raft and returns what it wrote.
    ///
    /// On a follower the transaction is handed to the leader. The whole
    /// write is bounded by [`WRITE_TIMEOUT`], so a manager cut off from the
    /// majority reports that instead of hanging.
    pub async fn write(&self, txn: Transaction) -> Result<Vec<Object>, ManagerError> {
        let outcome = tokio::time::timeout(WRITE_TIMEOUT, self.write_unbounded(txn))
            .await
            .map_err(|_| ManagerError::NoQuorum)??;
        outcome.map_err(ManagerError::from)
    }

    async fn write_unbounded(&self, txn: Transaction) -> Result<TxnOutcome, ManagerError> {
        loop {
            let (leader, addr) = self.wait_for_leader().await?;
            if leader == self.raft_id {
                match self.proposer.propose(txn.clone()).await {
                    Ok(outcome) => return Ok(outcome),
                    Err(ProposeError::NotLeader) => {
                        // Lost leadership mid-write; go round and find the new leader.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                    Err(ProposeError::Raft(e)) => return Err(ManagerError::Internal(format!("raft write: {e}"))),
                }
            }
            match self.forwarder.forward(&addr, txn.clone()).await {
                Ok(outcome) => return Ok(outcome),
                Err(ManagerError::NotLeader) | Err(ManagerError::Unavailable(_)) => {
                    // The leader moved or died under us; retry within the deadline.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Serves a batch of writes forwarded by a follower (leader side):
    /// proposed together, so the proposer usually puts them in one entry;
    /// one outcome per write, in order.
    pub async fn handle_forwarded_write(&self, data: &[u8]) -> Vec<u8> {
        let outcomes: Vec<Result<TxnOutcome, ForwardedError>> = match bincode::deserialize::<Vec<Transaction>>(data) {
            Err(e) => vec![Err(ForwardedError::Internal(format!("undecodable forwarded writes: {e}")))],
            Ok(txns) if self.is_leader() => {
                futures::future::join_all(txns.into_iter().map(|txn| async move {
                    match self.proposer.propose(txn).await {
                        Ok(outcome) => Ok(outcome),
                        Err(ProposeError::NotLeader) => Err(ForwardedError::NotLeader),
                        Err(ProposeError::Raft(e)) => Err(ForwardedError::Internal(e)),
                    }
                }))
                .await
            }
            Ok(txns) => txns.iter().map(|_| Err(ForwardedError::NotLeader)).collect(),
        };
        bincode::serialize(&outcomes).unwrap_or_default()
    }

    /// Raft read-index: returns once this manager's store reflects every
    /// write committed before the call, or fails if no quorum confirms a
    /// leader.
    pub async fn read_barrier(&self) -> Result<(), ManagerError> {
        tokio::time::timeout(WRITE_TIMEOUT, async {
            let index = loop {
                let (leader, addr) = self.wait_for_leader().await?;
                if leader == self.raft_id {
                    match self.raft.ensure_linearizable().await {
                        Ok(log_id) => break log_id.map(|l| l.index),
                        Err(_) => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    }
                }
                let mut client = pb::raft_client::RaftClient::new(self.peer_channel(&addr)?);
                match client.read_index(pb::Empty {}).await {
                    Ok(reply) => break Some(reply.into_inner().index),
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            };
            if let Some(index) = index {
                self.raft
                    .wait(Some(WRITE_TIMEOUT))
                    .applied_index_at_least(Some(index), "read barrier")
                    .await
                    .map_err(|_| ManagerError::NoQuorum)?;
            }
            Ok(())
        })
        .await
        .map_err(|_| ManagerError::NoQuorum)?
    }

    /// Leader side of the read-index RPC.
    pub async fn handle_read_index(&self) -> Result<u64, ManagerError> {
        if !self.is_leader() {
            return Err(ManagerError::NotLeader);
        }
        let log_id = tokio::time::timeout(WRITE_TIMEOUT, self.raft.ensure_linearizable())
            .await
            .map_err(|_| ManagerError::NoQuorum)?
            .map_err(|_| ManagerError::NoQuorum)?;
        Ok(log_id.map(|l| l.index).unwrap_or(0))
    }

    /// Adds a manager to Raft: first as a learner that catches up, then as a
    /// voter, so a slow joiner never counts towards quorum before it can vote.
    /// Leader only.
    pub async fn add_manager(&self, id: NodeId, addr: String) -> Result<(), ManagerError> {
        let _one_at_a_time = self.membership.lock().await;
        if !self.is_leader() {
            return Err(ManagerError::NotLeader);
        }
        if self.voters().contains(&id) {
            return Ok(());
        }
        self.raft
            .add_learner(id, BasicNode { addr }, true)
            .await
            .map_err(|e| ManagerError::Internal(format!("adding manager as learner: {e}")))?;
        self.raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(|e| ManagerError::Internal(format!("promoting manager to voter: {e}")))?;
        Ok(())
    }

    /// Adds a manager to Raft from any manager: directly on the leader,
    /// through the leader's JoinRaft RPC elsewhere.
    pub async fn join_raft(&self, id: NodeId, addr: String) -> Result<(), ManagerError> {
        let (leader, leader_addr) = self.wait_for_leader().await?;
        if leader == self.raft_id {
            return self.add_manager(id, addr).await;
        }
        let mut client = pb::raft_client::RaftClient::new(self.peer_channel(&leader_addr)?);
        client
            .join_raft(pb::JoinRaftRequest { node_id: crate::store::node_id_string(id), addr })
            .await
            .map_err(|status| ManagerError::from_forwarded(&leader_addr, status))?;
        Ok(())
    }

    /// Removes a manager from Raft from any manager (see [`Self::remove_manager`]).
    pub async fn leave_raft(&self, id: NodeId) -> Result<(), ManagerError> {
        let (leader, leader_addr) = self.wait_for_leader().await?;
        if leader == self.raft_id {
            return self.remove_manager(id).await;
        }
        let mut client = pb::raft_client::RaftClient::new(self.peer_channel(&leader_addr)?);
        client
            .leave_raft(pb::LeaveRaftRequest { node_id: crate::store::node_id_string(id) })
            .await
            .map_err(|status| match status.code() {
                tonic::Code::FailedPrecondition => ManagerError::FailedPrecondition(status.message().to_string()),
                _ => ManagerError::from_forwarded(&leader_addr, status),
            })?;
        Ok(())
    }

    /// Whether the leader currently hears from manager `id` (itself counts).
    pub fn hears_from(&self, id: NodeId) -> bool {
        id == self.raft_id
            || self.contacts.last_contact(id).is_some_and(|t| t.elapsed() < Duration::from_millis(1500))
    }

    /// Removes a manager from Raft, refusing if the managers left could not
    /// form a quorum among the reachable ones. Leader only.
    pub async fn remove_manager(&self, id: NodeId) -> Result<(), ManagerError> {
        let _one_at_a_time = self.membership.lock().await;
        if !self.is_leader() {
            return Err(ManagerError::NotLeader);
        }
        let voters = self.voters();
        if !voters.contains(&id) {
            return Ok(());
        }
        let remaining: Vec<NodeId> = voters.iter().copied().filter(|v| *v != id).collect();
        if remaining.is_empty() {
            return Err(ManagerError::LastManager);
        }
        let reachable_left = remaining.iter().filter(|v| self.hears_from(**v)).count();
        if reachable_left < remaining.len() / 2 + 1 {
            return Err(ManagerError::WouldLoseQuorum { reachable: reachable_left, remaining: remaining.len() });
        }
        self.raft
            .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
            .await
            .map_err(|e| ManagerError::Internal(format!("removing manager from raft: {e}")))?;
        Ok(())
    }

    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
    }
}

/// A snapshot of Raft's roles, for rendering manager status.
pub struct RaftView {
    pub leader: Option<NodeId>,
    pub voters: BTreeSet<NodeId>,
}

/// How a forwarded write failed, as sent back to the follower.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) enum ForwardedError {
    NotLeader,
    Internal(String),
}

impl ForwardedError {
    pub(crate) fn into_error(self) -> ManagerError {
        match self {
            ForwardedError::NotLeader => ManagerError::NotLeader,
            ForwardedError::Internal(message) => ManagerError::Internal(message),
        }
    }
}
