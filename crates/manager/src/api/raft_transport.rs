//! The Raft gRPC service on the manager port: the leader-side halves of
//! forwarding (writes, read-index, membership), and openraft's messages as
//! managers of earlier versions send them (this version sends those as
//! frames, see `raft_frames.rs`). Only manager certificates get in.

use std::sync::Arc;

use shoal_proto::identity::Role;
use shoal_proto::pb;
use tonic::{Request, Response, Status};

use super::auth::{authorize, Transport};
use crate::errors::ManagerError;
use crate::manager::Manager;
use crate::raft::rpc::RaftRpcHandler;
use crate::store::{raft_id_of, Node, NodeRole};

pub struct RaftService {
    manager: Arc<Manager>,
    rpc: RaftRpcHandler,
}

impl RaftService {
    pub fn new(manager: Arc<Manager>) -> Self {
        let rpc = RaftRpcHandler::new(manager.raft.clone());
        RaftService { manager, rpc }
    }

    fn authorize<T>(&self, request: &Request<T>) -> Result<shoal_proto::identity::PeerIdentity, Status> {
        authorize(Transport::Tls, request, &self.manager, &[Role::Manager])?
            .ok_or_else(|| Status::unauthenticated("raft needs a manager certificate"))
    }
}

fn payload(data: Vec<u8>) -> Response<pb::RaftPayload> {
    Response::new(pb::RaftPayload { data })
}

#[tonic::async_trait]
impl pb::raft_server::Raft for RaftService {
    async fn append_entries(&self, request: Request<pb::RaftPayload>) -> Result<Response<pb::RaftPayload>, Status> {
        self.authorize(&request)?;
        Ok(payload(self.rpc.append_entries(&request.get_ref().data).await))
    }

    async fn vote(&self, request: Request<pb::RaftPayload>) -> Result<Response<pb::RaftPayload>, Status> {
        self.authorize(&request)?;
        Ok(payload(self.rpc.vote(&request.get_ref().data).await))
    }

    async fn install_snapshot(&self, request: Request<pb::RaftPayload>) -> Result<Response<pb::RaftPayload>, Status> {
        self.authorize(&request)?;
        Ok(payload(self.rpc.install_snapshot(&request.get_ref().data).await))
    }

    async fn forward_write(&self, request: Request<pb::RaftPayload>) -> Result<Response<pb::RaftPayload>, Status> {
        self.authorize(&request)?;
        Ok(payload(self.manager.handle_forwarded_write(&request.get_ref().data).await))
    }

    async fn join_raft(&self, request: Request<pb::JoinRaftRequest>) -> Result<Response<pb::Empty>, Status> {
        let caller = self.authorize(&request)?;
        let req = request.into_inner();
        let raft_id = raft_id_of(&req.node_id)
            .ok_or_else(|| Status::invalid_argument(format!("node id {:?} is malformed", req.node_id)))?;
        // A manager joins itself; another manager may relay the request.
        let wants_manager = self
            .manager
            .store
            .view(|s| s.get_typed::<Node>(&req.node_id).map(|n| n.desired_role == NodeRole::Manager));
        match wants_manager {
            Some(true) => {}
            Some(false) => {
                return Err(Status::permission_denied(format!(
                    "node {} is not meant to be a manager; promote it with `shoal node promote` first",
                    req.node_id
                )))
            }
            None => return Err(Status::not_found(format!("node {} is not part of the swarm", req.node_id))),
        }
        tracing::info!(node = %req.node_id, addr = %req.addr, via = %caller.id, "adding manager to raft");
        self.manager.join_raft(raft_id, req.addr).await?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn read_index(&self, request: Request<pb::Empty>) -> Result<Response<pb::ReadIndexResponse>, Status> {
        self.authorize(&request)?;
        let index = self.manager.handle_read_index().await?;
        Ok(Response::new(pb::ReadIndexResponse { index }))
    }

    async fn leave_raft(&self, request: Request<pb::LeaveRaftRequest>) -> Result<Response<pb::Empty>, Status> {
        self.authorize(&request)?;
        let node_id = request.into_inner().node_id;
        let raft_id = raft_id_of(&node_id)
            .ok_or_else(|| Status::invalid_argument(format!("node id {node_id:?} is malformed")))?;
        if !self.manager.is_leader() {
            return Err(ManagerError::NotLeader.into());
        }
        self.manager.remove_manager(raft_id).await?;
        Ok(Response::new(pb::Empty {}))
    }
}
