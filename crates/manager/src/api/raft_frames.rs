//! The manager port's Raft connections (those that negotiated
//! `shoal_proto::tls::ALPN_RAFT`): each is served by `raft::framed`, and
//! only manager certificates of this swarm get their requests answered, as
//! on the gRPC Raft service.

use std::sync::Arc;

use shoal_proto::identity::{identity_of_chain, Role};
use shoal_proto::tls::{RaftServerStream, TlsIncoming};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::auth::refusal;
use crate::manager::Manager;
use crate::raft::framed;
use crate::raft::rpc::RaftRpcHandler;

/// Serves every Raft connection of the manager port on Raft's own thread
/// (see `raft::own_runtime`: a heartbeat must not queue behind node
/// sessions), until the port's accept loop goes away.
pub fn spawn_raft_connection_server(manager: Arc<Manager>, incoming: &mut TlsIncoming) {
    let connections = incoming.raft_connections(Some(manager.raft_runtime().handle()));
    manager.raft_runtime().spawn(serve_raft_connections(manager.clone(), connections));
}

/// Serves each connection on its own task; when `connections` closes, the
/// connections still open are closed too.
async fn serve_raft_connections(manager: Arc<Manager>, mut connections: mpsc::Receiver<RaftServerStream>) {
    let rpc = RaftRpcHandler::new(manager.raft.clone());
    let mut serving = JoinSet::new();
    loop {
        let stream = tokio::select! {
            next = connections.recv() => match next {
                Some(stream) => stream,
                None => return,
            },
            Some(_) = serving.join_next() => continue,
        };
        let identity = stream.get_ref().1.peer_certificates().and_then(identity_of_chain);
        let manager = manager.clone();
        let admit = move || match &identity {
            None => Some("Raft needs a manager certificate signed by the swarm's CA".to_string()),
            Some(identity) if identity.role != Role::Manager => {
                Some(format!("{} holds a {} certificate; Raft needs a manager certificate", identity.id, identity.role.as_str()))
            }
            Some(identity) => refusal(identity, &manager),
        };
        serving.spawn(framed::serve(stream, rpc.clone(), admit));
    }
}
