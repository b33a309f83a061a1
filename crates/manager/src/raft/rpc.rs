//! The receiving side of Raft between managers, and the payload format both
//! sides agree on.
//!
//! Requests are openraft's own request types, bincode-encoded; replies are a
//! bincode [`Reply`] around openraft's `Result<Response, RaftError>`, so a
//! Raft-level refusal travels back as data and the sender turns it into
//! openraft's `RemoteError`. Nothing here knows about gRPC or TLS: the
//! manager's Raft service checks the caller's role and hands the payload
//! bytes to [`RaftRpcHandler`].

use std::future::Future;

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{AppendEntriesResponse, InstallSnapshotResponse, VoteResponse};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{NodeId, Raft};

/// A Raft RPC's response payload.
#[derive(Debug, Serialize, Deserialize)]
pub enum Reply<T, E> {
    /// The receiving Raft handled the request; this is its answer.
    Handled(Result<T, E>),
    /// The receiver could not make sense of the request (or could not encode
    /// its answer): the two managers disagree on the wire format, e.g. during
    /// a rolling upgrade. Not a Raft decision, so the sender backs off.
    Rejected(String),
}

pub type AppendEntriesReply = Reply<AppendEntriesResponse<NodeId>, RaftError<NodeId>>;
pub type VoteReply = Reply<VoteResponse<NodeId>, RaftError<NodeId>>;
pub type InstallSnapshotReply =
    Reply<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>;

/// Hands decoded Raft RPCs to the local Raft node and encodes its answers.
#[derive(Clone)]
pub struct RaftRpcHandler {
    raft: Raft,
}

impl RaftRpcHandler {
    pub fn new(raft: Raft) -> Self {
        RaftRpcHandler { raft }
    }

    pub async fn append_entries(&self, data: &[u8]) -> Vec<u8> {
        handle("append_entries", data, |request| {
            self.raft.append_entries(request)
        })
        .await
    }

    pub async fn vote(&self, data: &[u8]) -> Vec<u8> {
        handle("vote", data, |request| self.raft.vote(request)).await
    }

    /// One chunk of a snapshot; openraft reassembles the chunks itself.
    pub async fn install_snapshot(&self, data: &[u8]) -> Vec<u8> {
        handle("install_snapshot", data, |request| {
            self.raft.install_snapshot(request)
        })
        .await
    }
}

async fn handle<Req, T, E, F, Fut>(rpc: &'static str, data: &[u8], call: F) -> Vec<u8>
where
    Req: DeserializeOwned,
    T: Serialize,
    E: Serialize,
    F: FnOnce(Req) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let reply = match bincode::deserialize::<Req>(data) {
        Ok(request) => Reply::Handled(call(request).await),
        Err(e) => {
            tracing::warn!(rpc, error = %e, "undecodable raft request");
            Reply::Rejected(format!("cannot decode {rpc} request: {e}"))
        }
    };
    encode_reply(rpc, &reply)
}

fn encode_reply<T: Serialize, E: Serialize>(rpc: &'static str, reply: &Reply<T, E>) -> Vec<u8> {
    match bincode::serialize(reply) {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::error!(rpc, error = %e, "cannot encode raft reply");
            let rejected: Reply<T, E> = Reply::Rejected(format!("cannot encode {rpc} reply: {e}"));
            // A bare string always encodes; if even that failed, the sender
            // sees an undecodable payload, which it treats the same way.
            bincode::serialize(&rejected).unwrap_or_default()
        }
    }
}

#[cfg(test)]
mod tests {
    use openraft::raft::VoteRequest;
    use openraft::Vote;

    use super::*;

    fn granted(
        request: VoteRequest<NodeId>,
    ) -> std::future::Ready<Result<VoteResponse<NodeId>, RaftError<NodeId>>> {
        std::future::ready(Ok(VoteResponse::new(request.vote, None, true)))
    }

    #[tokio::test]
    async fn a_decodable_request_reaches_raft_and_its_answer_comes_back() {
        let request = VoteRequest::<NodeId>::new(Vote::new(3, 7), None);
        let bytes = bincode::serialize(&request).unwrap();
        let reply: VoteReply =
            bincode::deserialize(&handle("vote", &bytes, granted).await).unwrap();
        match reply {
            Reply::Handled(Ok(response)) => assert_eq!(response.vote, Vote::new(3, 7)),
            other => panic!("unexpected reply {other:?}"),
        }
    }

    #[tokio::test]
    async fn garbage_is_rejected_not_a_panic() {
        let reply: VoteReply =
            bincode::deserialize(&handle("vote", b"\xff\x01", granted).await).unwrap();
        assert!(matches!(reply, Reply::Rejected(reason) if reason.contains("vote")));
    }
}
