//! The dispatcher: every node's session with the managers.
//!
//! Heartbeats land in the leader's memory (writing each one to Raft would
//! be thousands of writes a second on a big cluster), a follower's in
//! batches ([`crate::heartbeats`]); the leader's node-health loop turns
//! missed heartbeats into `down` in the store. The
//! session stream is served from any manager's own copy of the store.

use std::sync::Arc;
use std::time::Duration;

use shoal_proto::identity::{PeerIdentity, Role};
use shoal_proto::pb;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{assignments, container_attachments};
use super::auth::{authorize, Transport};
use super::control::managers_of;
use crate::errors::ManagerError;
use crate::manager::Manager;
use crate::store::{Change, Node, NodeDescription, NodeRole, Object, Op, StoreState, TaskState, TaskStatus, Transaction};

/// Response metadata naming the leader's address when a follower refuses
/// a leader-only stream.
pub const LEADER_METADATA: &str = "shoal-leader";

pub struct DispatcherService {
    manager: Arc<Manager>,
}

impl DispatcherService {
    pub fn new(manager: Arc<Manager>) -> Self {
        DispatcherService { manager }
    }

    fn require_leader(&self) -> Result<(), Status> {
        if self.manager.is_leader() {
            return Ok(());
        }
        let leader = self.manager.leader().map(|(_, addr)| addr).unwrap_or_default();
        let mut status = Status::failed_precondition(format!("this manager is not the leader; the leader is at {leader:?}"));
        if let Ok(value) = leader.parse() {
            status.metadata_mut().insert(LEADER_METADATA, value);
        }
        Err(status)
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

/// Whether a change can alter `node_id`'s session message: the cluster's
/// settings, its own node, or a manager (the managers' list).
fn concerns_session(change: &Change, node_id: &str) -> bool {
    let concerns = |object: &Object| match object {
        Object::Cluster(_) => true,
        Object::Node(node) => node.meta.id == node_id || node.role == NodeRole::Manager,
        _ => false,
    };
    match change {
        Change::Created(o) | Change::Deleted(o) => concerns(o),
        Change::Updated { old, new } => concerns(old) || concerns(new),
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

/// Stores what a node says about itself (CPUs, memory, engine labels) when
/// it differs from what the store has: the scheduler's input.
async fn record_description(manager: Arc<Manager>, node_id: String, description: pb::NodeDescription) {
    let description = NodeDescription {
        nano_cpus: description.nano_cpus,
        memory_bytes: description.memory_bytes,
        os: description.os,
        arch: description.arch,
        engine_labels: description.engine_labels.into_iter().collect(),
        wireguard_public_key: description.wireguard_public_key,
        data_path_port: u16::try_from(description.data_path_port).unwrap_or(0),
    };
    // The node object appears a moment after a join; retry briefly, and
    // again on a version conflict with a concurrent status update.
    for _ in 0..20 {
        let current = manager.store.view(|s| s.get_typed::<Node>(&node_id).cloned());
        let Some(node) = current else {
            tokio::time::sleep(Duration::from_millis(250)).await;
            continue;
        };
        if node.description == description {
            return;
        }
        let expected_version = Some(node.meta.version);
        let mut updated = node;
        updated.description = description.clone();
        let op = Op::Update { object: Object::Node(updated), expected_version };
        match manager.write(Transaction::single(op)).await {
            Ok(_) => return,
            Err(e) => tracing::debug!(error = %e, node = %node_id, "recording node description"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tonic::async_trait]
impl pb::dispatcher_server::Dispatcher for DispatcherService {
    async fn heartbeat(&self, request: Request<pb::HeartbeatRequest>) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let period_ms = self.manager.store.view(|s| s.cluster().map(|c| c.heartbeat_period_ms).unwrap_or(1000));
        let relayed = &request.get_ref().relayed_node_ids;
        if !relayed.is_empty() {
            // A follower's batch (crate::heartbeats): only a manager may vouch for other nodes.
            authorize(Transport::Tls, &request, &self.manager, &[Role::Manager])?
                .ok_or_else(|| Status::unauthenticated("relayed heartbeats need a manager certificate"))?;
            if !self.manager.is_leader() {
                return Err(ManagerError::NotLeader.into());
            }
            self.manager.heartbeats.record(relayed.iter().map(String::as_str));
            return Ok(Response::new(pb::HeartbeatResponse { period_ms }));
        }
        let node_id = request.get_ref().node_id.clone();
        self.authorize_for(&request, &node_id)?;
        if self.manager.is_leader() {
            self.manager.heartbeats.record([node_id.as_str()]);
        } else {
            self.manager.heartbeats.relay(&node_id)?;
        }
        Ok(Response::new(pb::HeartbeatResponse { period_ms }))
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
        if let Some(description) = request.get_ref().description.clone() {
            tokio::spawn(record_description(self.manager.clone(), node_id.clone(), description));
        }
        let store = self.manager.store.clone();
        tokio::spawn(async move {
            let sessions = &crate::metrics::metrics().sessions;
            sessions.inc();
            // Counted down however the session ends.
            struct Served;
            impl Drop for Served {
                fn drop(&mut self) {
                    crate::metrics::metrics().sessions.dec();
                }
            }
            let _served = Served;
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
                // Only changes the message could show wake it: with
                // thousands of sessions, every other node's change would
                // otherwise cost each of them a look at every node.
                loop {
                    tokio::select! {
                        event = events.recv() => match event {
                            Ok(event) if !event.changes.iter().any(|c| concerns_session(c, &node_id)) => continue,
                            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                            // Concerned, or fell behind: look again.
                            _ => break,
                        },
                        _ = tokio::time::sleep(Duration::from_secs(5)) => break,
                        _ = tx.closed() => return,
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    type AssignmentsStream = ReceiverStream<Result<pb::AssignmentsMessage, Status>>;

    /// Served by the leader only, so that log subscriptions (held in the
    /// leader's memory) reach every agent; a follower names the leader.
    async fn assignments(&self, request: Request<pb::AssignmentsRequest>) -> Result<Response<Self::AssignmentsStream>, Status> {
        let node_id = request.get_ref().node_id.clone();
        self.authorize_for(&request, &node_id)?;
        self.require_leader()?;
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(assignments::stream(self.manager.clone(), node_id, tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn update_task_status(&self, request: Request<pb::UpdateTaskStatusRequest>) -> Result<Response<pb::Empty>, Status> {
        let node_id = request.get_ref().node_id.clone();
        self.authorize_for(&request, &node_id)?;
        let mut ops = Vec::new();
        for update in request.into_inner().updates {
            let state = TaskState::parse(&update.state).ok_or_else(|| {
                Status::invalid_argument(format!("task state {:?} is unknown; this agent does not match the managers' version", update.state))
            })?;
            let status = TaskStatus {
                state,
                timestamp_ms: update.timestamp_ms,
                message: update.message,
                error: update.error,
                exit_code: update.exit_code,
                container_id: update.container_id,
            };
            ops.push(Op::TaskStatus { task_id: update.task_id, node_id: node_id.clone(), status });
        }
        if !ops.is_empty() {
            // One transaction for the whole batch: TaskStatus ops never
            // fail, so one stale report cannot sink the others.
            self.manager.write(Transaction::new(ops)).await?;
        }
        Ok(Response::new(pb::Empty {}))
    }

    async fn publish_logs(&self, request: Request<tonic::Streaming<pb::PublishLogsMessage>>) -> Result<Response<pb::Empty>, Status> {
        let identity = authorize(Transport::Tls, &request, &self.manager, &[Role::Manager, Role::Worker])?
            .ok_or_else(|| Status::unauthenticated("publishing logs needs a node certificate"))?;
        self.require_leader()?;
        let mut messages = request.into_inner();
        while let Some(message) = messages.message().await? {
            if !self.manager.logs.publish(&identity.id, message).await {
                break;
            }
        }
        Ok(Response::new(pb::Empty {}))
    }

    async fn attach_container(&self, request: Request<pb::AttachContainerRequest>) -> Result<Response<pb::AttachContainerResponse>, Status> {
        let node_id = request.get_ref().node_id.clone();
        self.authorize_for(&request, &node_id)?;
        self.require_leader()?;
        Ok(Response::new(container_attachments::attach(&self.manager, request.into_inner()).await?))
    }

    async fn detach_container(&self, request: Request<pb::DetachContainerRequest>) -> Result<Response<pb::Empty>, Status> {
        let node_id = request.get_ref().node_id.clone();
        self.authorize_for(&request, &node_id)?;
        self.require_leader()?;
        container_attachments::detach(&self.manager, request.into_inner()).await?;
        Ok(Response::new(pb::Empty {}))
    }
}
