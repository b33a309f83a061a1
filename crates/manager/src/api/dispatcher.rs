//! The dispatcher: every node's session with the managers.
//!
//! Heartbeats land in the leader's memory (writing each one to Raft would
//! be thousands of writes a second on a big cluster); the leader's
//! node-health loop turns missed heartbeats into `down` in the store. The
//! session stream is served from any manager's own copy of the store.

use std::sync::Arc;
use std::time::Duration;

use shoal_proto::identity::{PeerIdentity, Role};
use shoal_proto::pb;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::auth::{authorize, Transport};
use super::control::managers_of;
use crate::errors::ManagerError;
use crate::manager::Manager;
use crate::store::{Node, StoreState};

pub struct DispatcherService {
    manager: Arc<Manager>,
}

impl DispatcherService {
    pub fn new(manager: Arc<Manager>) -> Self {
        DispatcherService { manager }
    }

    /// Nodes speak for themselves; managers may relay for others.
    fn authorize_for<T>(&self, request: &Request<T>, node_id: &str) -> Result<PeerIdentity, Status> {
        let identity = authorize(Transport::Tls, request, &self.manager, &[Role::Manager, Role::Worker])?
            .ok_or_else(|| Status::unauthenticated("the dispatcher needs a node certificate"))?;
        if identity.id != node_id && identity.role != Role::Manager {
            return Err(Status::permission_denied(format!(
                "node {} cannot act for node {node_id}",
                identity.id
            )));
        }
        Ok(identity)
    }
}

fn session_message(state: &StoreState, node_id: &str) -> pb::SessionMessage {
    let cluster = state.cluster();
    match state.get_typed::<Node>(node_id) {
        Some(node) => pb::SessionMessage {
            managers: managers_of(state),
            desired_role: node.desired_role.as_str().into(),
            heartbeat_period_ms: cluster.map(|c| c.heartbeat_period_ms).unwrap_or(1000),
            removed: false,
        },
        None => pb::SessionMessage {
            managers: managers_of(state),
            desired_role: String::new(),
            heartbeat_period_ms: cluster.map(|c| c.heartbeat_period_ms).unwrap_or(1000),
            removed: cluster.is_some_and(|c| c.removed_nodes.iter().any(|r| r == node_id)),
        },
    }
}

#[tonic::async_trait]
impl pb::dispatcher_server::Dispatcher for DispatcherService {
    async fn heartbeat(&self, request: Request<pb::HeartbeatRequest>) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let node_id = request.get_ref().node_id.clone();
        self.authorize_for(&request, &node_id)?;
        let period_ms = self.manager.store.view(|s| s.cluster().map(|c| c.heartbeat_period_ms).unwrap_or(1000));
        if self.manager.is_leader() {
            self.manager.record_heartbeat(&node_id);
            return Ok(Response::new(pb::HeartbeatResponse { period_ms }));
        }
        let (_, leader_addr) = self.manager.leader().ok_or(ManagerError::NoLeader)?;
        let mut client = pb::dispatcher_client::DispatcherClient::new(self.manager.peer_channel(&leader_addr)?);
        let reply = client
            .heartbeat(pb::HeartbeatRequest { node_id })
            .await
            .map_err(|status| ManagerError::from_forwarded(&leader_addr, status))?;
        Ok(reply)
    }

    type SessionStream = ReceiverStream<Result<pb::SessionMessage, Status>>;

    async fn session(&self, request: Request<pb::SessionRequest>) -> Result<Response<Self::SessionStream>, Status> {
        let node_id = request.get_ref().node_id.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        // A removed node's certificate is refused everywhere else, but its
        // session is told why, so the node can forget the swarm by itself.
        let removed = self.manager.store.view(|s| s.cluster().is_some_and(|c| c.removed_nodes.contains(&node_id)));
        let caller_is_node = shoal_proto::identity::peer_identity(&request).is_some_and(|id| id.id == node_id);
        if removed && caller_is_node {
            let message = pb::SessionMessage { removed: true, ..Default::default() };
            let _ = tx.send(Ok(message)).await;
            return Ok(Response::new(ReceiverStream::new(rx)));
        }
        self.authorize_for(&request, &node_id)?;
        let store = self.manager.store.clone();
        tokio::spawn(async move {
            let mut events = store.watch();
            let mut last: Option<pb::SessionMessage> = None;
            loop {
                let message = store.view(|s| session_message(s, &node_id));
                if last.as_ref() != Some(&message) {
                    if tx.send(Ok(message.clone())).await.is_err() {
                        return;
                    }
                    last = Some(message);
                }
                // Wake on any store change; the periodic wake also notices a
                // closed stream when nothing changes for a while.
                tokio::select! {
                    event = events.recv() => {
                        if let Err(tokio::sync::broadcast::error::RecvError::Closed) = event { return; }
                    }
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
