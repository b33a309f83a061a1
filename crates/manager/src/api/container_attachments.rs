//! Standalone containers on attachable overlays (`shoal run --network N`
//! on a swarm node). Their addresses come from the same pool as tasks' and
//! are recorded on the node object, so the address index, the overlay view
//! (the node serves the network, its peers learn the address) and
//! `network inspect` treat them like any other holder. The leader answers
//! at once: the container waits for its address before it is created.

use shoal_proto::pb;

use super::networks::{cidr, resolve_network};
use super::overlay_view::node_network;
use crate::allocator::ipam;
use crate::errors::ManagerError;
use crate::manager::Manager;
use crate::store::{ContainerAttachment, Node, Object, Op, Transaction, TxnError};

/// Writes can race the node's status updates; a conflict is retried.
const ATTEMPTS: usize = 5;

pub async fn attach(manager: &Manager, request: pb::AttachContainerRequest) -> Result<pb::AttachContainerResponse, ManagerError> {
    if request.sandbox_id.is_empty() || request.sandbox_id.len() > 64 {
        return Err(ManagerError::InvalidArgument(format!("sandbox id {:?} is invalid", request.sandbox_id)));
    }
    for _ in 0..ATTEMPTS {
        manager.read_barrier().await?;
        let planned = manager.store.view(|s| {
            let network = resolve_network(s, &request.network)?;
            if !network.spec.attachable {
                return Err(ManagerError::FailedPrecondition(format!(
                    "network {} is not attachable, so standalone containers cannot join it; create an overlay with `shoal network create -d overlay --attachable NAME`",
                    network.spec.name
                )));
            }
            let node = s
                .get_typed::<Node>(&request.node_id)
                .ok_or_else(|| ManagerError::NotFound(format!("node {} is not in the swarm", request.node_id)))?;
            let reply = |address| pb::AttachContainerResponse {
                network: Some(node_network(network, node.network_addresses.get(&network.meta.id))),
                address: cidr(Some(network), address),
            };
            if let Some(held) = node.container_attachments.iter().find(|c| c.sandbox_id == request.sandbox_id && c.network_id == network.meta.id) {
                return Ok(Err(reply(held.address)));
            }
            let address = ipam::free_address(network, |a| s.addresses().holder(&network.meta.id, a).is_some()).ok_or_else(|| {
                ManagerError::FailedPrecondition(format!(
                    "no free address on network {} ({} is full); remove containers or tasks from it",
                    network.spec.name, network.subnet
                ))
            })?;
            let mut updated = node.clone();
            updated.container_attachments.push(ContainerAttachment {
                sandbox_id: request.sandbox_id.clone(),
                container_name: request.container_name.clone(),
                network_id: network.meta.id.clone(),
                address,
                aliases: request.aliases.clone(),
            });
            Ok(Ok((updated, node.meta.version, reply(address))))
        })?;
        let (updated, version, reply) = match planned {
            Err(already) => return Ok(already),
            Ok(planned) => planned,
        };
        let op = Op::Update { object: Object::Node(updated), expected_version: Some(version) };
        match manager.write(Transaction::single(op)).await {
            Ok(_) => return Ok(reply),
            Err(ManagerError::Txn(TxnError::VersionConflict { .. } | TxnError::AddressInUse { .. })) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(ManagerError::Unavailable("the node kept changing while its container's address was recorded; retry".into()))
}

pub async fn detach(manager: &Manager, request: pb::DetachContainerRequest) -> Result<(), ManagerError> {
    for _ in 0..ATTEMPTS {
        manager.read_barrier().await?;
        let current = manager.store.view(|s| s.get_typed::<Node>(&request.node_id).cloned());
        // A node removed from the swarm took its attachments with it.
        let Some(node) = current else { return Ok(()) };
        if !node.container_attachments.iter().any(|c| c.sandbox_id == request.sandbox_id) {
            return Ok(());
        }
        let version = node.meta.version;
        let mut updated = node;
        updated.container_attachments.retain(|c| c.sandbox_id != request.sandbox_id);
        match manager.write(Transaction::single(Op::Update { object: Object::Node(updated), expected_version: Some(version) })).await {
            Ok(_) => return Ok(()),
            Err(ManagerError::Txn(TxnError::VersionConflict { .. })) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(ManagerError::Unavailable("the node kept changing while its container's addresses were given back; retry".into()))
}
