//! Outbound Raft RPCs to the other managers, over the manager port's mutual
//! TLS gRPC `Raft` service.
//!
//! Payloads are bincode openraft requests; replies are [`rpc::Reply`]s (see
//! `rpc.rs` for the receiving side). Failures are classified the way openraft
//! acts on them: a peer that cannot be reached at all is `Unreachable` (the
//! replication stream backs off instead of spinning), a missed deadline is a
//! `Timeout`, and an answer from the peer's Raft saying no is a `RemoteError`.

use std::collections::HashMap;
use std::error::Error;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{AnyError, BasicNode, RPCTypes, Vote};
use serde::de::DeserializeOwned;
use serde::Serialize;
use shoal_proto::pb;
use shoal_proto::pb::raft_client::RaftClient;
use shoal_proto::tls::ClientTls;
use tonic::transport::Channel;
use tonic::Code;

use super::rpc::Reply;
use super::{NodeId, TypeConfig};

/// Bounds connecting to a peer (TCP + TLS) and, as the channel's own
/// ceiling, any single call. Each RPC gets its real deadline from openraft
/// (`RPCOption`), which is much shorter except for snapshot chunks, so this
/// must stay above `Config::install_snapshot_timeout`. A lazy channel keeps
/// connecting in the background when the RPC that started it gives up, so a
/// slow handshake is not retried from scratch at every heartbeat.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Pauses between replication attempts to a peer that refused or dropped
/// the connection: short at first, growing to [`MAX_BACKOFF`]. openraft's
/// default is a flat 500 ms, which leaves a restarted manager that long
/// without the entries it missed; should the leader die in that window, the
/// lagging manager's doomed candidacy (its log is behind) makes the
/// up-to-date one lose a term and wait out a second election timeout (the
/// control-plane bench kills the leader ~100 ms after a restarted manager
/// first serves a write, and hit exactly this with a 200 ms ceiling).
/// Retrying a refusing peer costs only a failed connect.
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_millis(50);

/// When each peer manager last answered a Raft RPC. Shared with the control
/// API, which shows managers as reachable or not from it.
#[derive(Clone, Default)]
pub struct PeerContacts {
    last: Arc<Mutex<HashMap<NodeId, Instant>>>,
}

impl PeerContacts {
    /// When `id` last answered a Raft RPC from this manager, if ever.
    pub fn last_contact(&self, id: NodeId) -> Option<Instant> {
        self.last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .copied()
    }

    fn record(&self, id: NodeId) {
        self.last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, Instant::now());
    }
}

/// openraft's factory of per-peer clients.
///
/// Channels are cached here rather than in each client because openraft
/// creates a fresh client for every election round; caching per client would
/// mean a new TLS handshake inside each vote's short deadline.
#[derive(Clone)]
pub struct Network {
    shared: Arc<Shared>,
}

struct Shared {
    tls: ClientTls,
    contacts: PeerContacts,
    channels: Mutex<HashMap<NodeId, CachedChannel>>,
    /// Tags each channel created, so that a client only discards the channel
    /// it saw fail, not one a concurrent client has already replaced.
    next_generation: std::sync::atomic::AtomicU64,
}

#[derive(Clone)]
struct CachedChannel {
    addr: String,
    generation: u64,
    channel: Channel,
}

impl Network {
    pub fn new(tls: ClientTls, contacts: PeerContacts) -> Self {
        Network {
            shared: Arc::new(Shared {
                tls,
                contacts,
                channels: Mutex::new(HashMap::new()),
                next_generation: std::sync::atomic::AtomicU64::new(0),
            }),
        }
    }
}

impl Shared {
    /// The cached channel to `target`, or a new lazily connecting one when
    /// there is none or the peer's address changed.
    fn channel(&self, target: NodeId, addr: &str) -> Result<CachedChannel, Unreachable> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(cached) = channels.get(&target) {
            if cached.addr == addr {
                return Ok(cached.clone());
            }
        }
        let channel =
            shoal_proto::tls::connect_lazy(addr, &self.tls, CONNECT_TIMEOUT).map_err(|e| {
                Unreachable::new(&AnyError::error(format!(
                    "cannot connect to manager {target} at {addr}: {e}"
                )))
            })?;
        let generation = self
            .next_generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let cached = CachedChannel {
            addr: addr.to_string(),
            generation,
            channel,
        };
        channels.insert(target, cached.clone());
        Ok(cached)
    }

    /// Drops a channel after a transport failure so the next RPC reconnects
    /// from scratch (new TCP connection and TLS session).
    fn forget(&self, target: NodeId, generation: u64) {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if channels
            .get(&target)
            .is_some_and(|c| c.generation == generation)
        {
            channels.remove(&target);
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient {
        PeerClient {
            target,
            node: node.clone(),
            shared: self.shared.clone(),
        }
    }
}

/// Raft RPCs to one peer manager.
pub struct PeerClient {
    target: NodeId,
    node: BasicNode,
    shared: Arc<Shared>,
}

impl PeerClient {
    /// Sends one Raft RPC and decodes the peer's reply.
    ///
    /// `sender` is this node's id (from the request's vote), which openraft's
    /// `Timeout` error names.
    async fn call<Req, Resp, E>(
        &self,
        action: RPCTypes,
        sender: NodeId,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: Error + DeserializeOwned,
    {
        let data = bincode::serialize(request).map_err(|e| {
            RPCError::Network(NetworkError::new(&AnyError::error(format!(
                "encoding {action}: {e}"
            ))))
        })?;
        let cached = self.shared.channel(self.target, &self.node.addr)?;
        let mut client = RaftClient::new(cached.channel.clone());
        let mut grpc_request = tonic::Request::new(pb::RaftPayload { data });
        // The peer stops working on the request at the soft deadline and
        // says so, which reaches us before openraft abandons the RPC at the
        // hard deadline; a follower thus never acts on requests its leader
        // has already given up on.
        grpc_request.set_timeout(option.soft_ttl());
        let send = async {
            match action {
                RPCTypes::Vote => client.vote(grpc_request).await,
                RPCTypes::AppendEntries => client.append_entries(grpc_request).await,
                RPCTypes::InstallSnapshot => client.install_snapshot(grpc_request).await,
            }
        };
        let timeout = || Timeout {
            action,
            id: sender,
            target: self.target,
            timeout: option.hard_ttl(),
        };
        let payload = match tokio::time::timeout(option.hard_ttl(), send).await {
            Err(_elapsed) => return Err(RPCError::Timeout(timeout())),
            Ok(Err(status)) => return Err(self.failed(action, cached.generation, status, timeout)),
            Ok(Ok(response)) => response.into_inner().data,
        };

        let reply: Reply<Resp, E> = bincode::deserialize(&payload).map_err(|e| {
            RPCError::Unreachable(Unreachable::new(&AnyError::error(format!(
                "manager {} sent an undecodable {action} reply: {e}",
                self.target
            ))))
        })?;
        // Any well-formed answer, even a refusal, shows the peer is alive.
        self.shared.contacts.record(self.target);
        match reply {
            Reply::Handled(Ok(response)) => Ok(response),
            Reply::Handled(Err(raft_error)) => Err(RPCError::RemoteError(
                RemoteError::new_with_node(self.target, self.node.clone(), raft_error),
            )),
            Reply::Rejected(reason) => {
                Err(RPCError::Unreachable(Unreachable::new(&AnyError::error(
                    format!("manager {} rejected {action}: {reason}", self.target),
                ))))
            }
        }
    }

    /// Classifies a gRPC failure for openraft.
    fn failed<E: Error>(
        &self,
        action: RPCTypes,
        generation: u64,
        status: tonic::Status,
        timeout: impl Fn() -> Timeout<NodeId>,
    ) -> RPCError<NodeId, BasicNode, E> {
        let describe = || {
            AnyError::error(format!(
                "{action} to manager {} at {}: {}: {}",
                self.target,
                self.node.addr,
                status.code(),
                status.message()
            ))
        };
        match status.code() {
            Code::DeadlineExceeded => RPCError::Timeout(timeout()),
            // Connection refused or reset, TLS failure, peer shutting down:
            // start over with a fresh connection, after openraft's backoff.
            Code::Unavailable | Code::Unknown | Code::Cancelled => {
                self.shared.forget(self.target, generation);
                RPCError::Unreachable(Unreachable::new(&describe()))
            }
            // Refused by the peer's service itself (a certificate without the
            // manager role, a peer without the Raft service, an oversized
            // message): retrying at once would fail the same way, so back
            // off. openraft logs the error; `describe` makes it say why.
            _ => RPCError::Unreachable(Unreachable::new(&describe())),
        }
    }
}

fn sender_of(vote: &Vote<NodeId>) -> NodeId {
    // Requests carry the sender's vote, which always names the sender; 0 is
    // never a Shoal node id, so it stands out if that ever changes.
    vote.leader_id().voted_for().unwrap_or(0)
}

impl RaftNetwork<TypeConfig> for PeerClient {
    fn backoff(&self) -> Backoff {
        Backoff::new(std::iter::successors(Some(FIRST_BACKOFF), |d| Some((*d * 2).min(MAX_BACKOFF))))
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(RPCTypes::AppendEntries, sender_of(&rpc.vote), &rpc, &option)
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(
            RPCTypes::InstallSnapshot,
            sender_of(&rpc.vote),
            &rpc,
            &option,
        )
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(RPCTypes::Vote, sender_of(&rpc.vote), &rpc, &option)
            .await
    }
}
