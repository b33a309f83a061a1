//! Outbound Raft RPCs to the other managers, as frames over a mutual-TLS
//! connection per peer on the manager port (see `framed.rs` for why not
//! gRPC).
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
use shoal_proto::tls::{ClientTls, RaftClientStream};
use tokio::sync::watch;

use super::framed::{CallError, FramedClient, Kind};
use super::rpc::Reply;
use super::{NodeId, TypeConfig};

/// Bounds connecting to a peer (TCP + TLS). Each RPC gets its own, much
/// shorter deadline from openraft (`RPCOption`); a connection keeps being
/// made in the background when the RPC that started it gives up, so a slow
/// handshake is not retried from scratch at every heartbeat.
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
/// A connected peer that has answered nothing for this long is presumed
/// gone, and its connection made again. A live follower answers the
/// leader's heartbeats every 50 ms, so a second of silence is no slowness;
/// and a dead peer's connection costs nothing while it stays dead.
const SILENT_PEER: Duration = Duration::from_secs(1);
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
/// Connections are cached here rather than in each client because openraft
/// creates a fresh client for every election round; caching per client would
/// mean a new TLS handshake inside each vote's short deadline.
#[derive(Clone)]
pub struct Network {
    shared: Arc<Shared>,
}

struct Shared {
    tls: ClientTls,
    contacts: PeerContacts,
    links: Mutex<HashMap<NodeId, Link>>,
    /// Tags each link created, so that a client only discards the link it
    /// saw fail, not one a concurrent client has already replaced.
    next_generation: std::sync::atomic::AtomicU64,
}

/// The connection to one peer, or its making.
#[derive(Clone)]
struct Link {
    addr: String,
    generation: u64,
    state: watch::Receiver<LinkState>,
}

#[derive(Clone)]
enum LinkState {
    Connecting,
    Ready(Arc<FramedClient<RaftClientStream>>),
    Failed(String),
}

impl Link {
    /// The connected client, waiting for the connection if it is being made.
    async fn ready(&self) -> Result<Arc<FramedClient<RaftClientStream>>, String> {
        let mut state = self.state.clone();
        let state = state
            .wait_for(|s| !matches!(s, LinkState::Connecting))
            .await
            .map_err(|_| "the connection attempt was abandoned".to_string())?;
        match &*state {
            LinkState::Ready(client) => Ok(client.clone()),
            LinkState::Failed(reason) => Err(reason.clone()),
            LinkState::Connecting => unreachable!("waited for a settled state"),
        }
    }

    fn is_usable(&self) -> bool {
        match &*self.state.borrow() {
            LinkState::Connecting => true,
            LinkState::Ready(client) => !client.is_broken(),
            LinkState::Failed(_) => false,
        }
    }
}

impl Network {
    pub fn new(tls: ClientTls, contacts: PeerContacts) -> Self {
        Network {
            shared: Arc::new(Shared {
                tls,
                contacts,
                links: Mutex::new(HashMap::new()),
                next_generation: std::sync::atomic::AtomicU64::new(0),
            }),
        }
    }
}

impl Shared {
    /// The link to `target`: the cached one while it works and the peer's
    /// address is unchanged, else a new one, connecting in the background.
    fn link(&self, target: NodeId, addr: &str) -> Link {
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(cached) = links.get(&target) {
            if cached.addr == addr && cached.is_usable() {
                return cached.clone();
            }
        }
        let (settle, state) = watch::channel(LinkState::Connecting);
        let (tls, peer) = (self.tls.clone(), addr.to_string());
        tokio::spawn(async move {
            let settled = match shoal_proto::tls::connect_raft(&peer, &tls, CONNECT_TIMEOUT).await {
                Ok(stream) => LinkState::Ready(Arc::new(FramedClient::new(stream))),
                Err(e) => LinkState::Failed(format!("cannot connect to manager {target} at {peer}: {e}")),
            };
            let _ = settle.send(settled);
        });
        let generation = self.next_generation.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let link = Link { addr: addr.to_string(), generation, state };
        links.insert(target, link.clone());
        link
    }

    /// Drops a link after a failure so the next RPC reconnects from scratch
    /// (new TCP connection and TLS session).
    fn forget(&self, target: NodeId, generation: u64) {
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        if links.get(&target).is_some_and(|l| l.generation == generation) {
            links.remove(&target);
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
        let link = self.shared.link(self.target, &self.node.addr);
        let kind = match action {
            RPCTypes::Vote => Kind::Vote,
            RPCTypes::AppendEntries => Kind::AppendEntries,
            RPCTypes::InstallSnapshot => Kind::InstallSnapshot,
        };
        let timeout = || Timeout {
            action,
            id: sender,
            target: self.target,
            timeout: option.hard_ttl(),
        };
        // The peer stops working on the request at the soft deadline and
        // says so, which reaches us before openraft abandons the RPC at the
        // hard deadline; a follower thus never acts on requests its leader
        // has already given up on.
        let exchange = async {
            let client = link.ready().await.map_err(Failure::Connect)?;
            client.call(kind, option.soft_ttl(), &data).await.map_err(Failure::Call)
        };
        let payload = match tokio::time::timeout(option.hard_ttl(), exchange).await {
            Ok(Ok(payload)) => payload,
            Ok(Err(failure)) => return Err(self.failed(action, link.generation, failure, timeout)),
            Err(_elapsed) => {
                // A connected peer that has sent nothing for a while may be
                // gone without a word (powered off, cut off): start over with
                // a new connection. One that is merely slow (a follower's
                // fsync behind a burst of writes takes longer than the 50 ms
                // openraft gives an AppendEntries) keeps its connection: a
                // new one costs a handshake on a busy machine, during which
                // no heartbeat gets through and the follower stands for
                // election (1,000-node simulator). One still being made is
                // left to finish.
                let silent = match &*link.state.borrow() {
                    LinkState::Ready(client) => client.silent_for() > SILENT_PEER,
                    _ => false,
                };
                if silent {
                    self.shared.forget(self.target, link.generation);
                }
                return Err(RPCError::Timeout(timeout()));
            }
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

    /// Classifies a failed exchange for openraft.
    fn failed<E: Error>(
        &self,
        action: RPCTypes,
        generation: u64,
        failure: Failure,
        timeout: impl Fn() -> Timeout<NodeId>,
    ) -> RPCError<NodeId, BasicNode, E> {
        let describe = |what: &str| {
            AnyError::error(format!("{action} to manager {} at {}: {what}", self.target, self.node.addr))
        };
        match failure {
            // Refused or reset, TLS failure, peer shutting down: start over
            // with a fresh connection, after openraft's backoff.
            Failure::Connect(reason) | Failure::Call(CallError::Broken(reason)) => {
                self.shared.forget(self.target, generation);
                RPCError::Unreachable(Unreachable::new(&describe(&reason)))
            }
            Failure::Call(CallError::DeadlineExceeded) => RPCError::Timeout(timeout()),
            // Refused by the peer itself (a certificate without the manager
            // role, another swarm, an oversized message): retrying at once
            // would fail the same way, so back off. openraft logs the error;
            // `describe` makes it say why.
            Failure::Call(CallError::Refused(reason)) => {
                RPCError::Unreachable(Unreachable::new(&describe(&format!("refused: {reason}"))))
            }
        }
    }
}

/// How an exchange with a peer failed.
enum Failure {
    Connect(String),
    Call(CallError),
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
