//! The node's place in the swarm's overlay: its WireGuard device, started
//! (or adopted after a restart) when the node joins and removed when it
//! leaves. The public key and port go to the managers in the node's
//! description; the private key never leaves the node.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_overlay_net::dataplane::Dataplane;
use shoal_proto::pb;
use shoal_proto::tls::ClientTls;

use crate::managers::ManagerDialer;

/// Bounds each call to a manager.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Managers tried (following a follower's hint to the leader) before giving up.
const ATTEMPTS: usize = 4;

/// What every node's device name starts with.
pub const DEVICE_PREFIX: &str = "wgs-";

/// `wgs-` + 11 characters of the node id: unique per node, so dev-cluster
/// hosts sharing one /var/run/wireguard each have their own UAPI socket,
/// and within the 15 bytes an interface name may have.
pub fn device_name(node_id: &str) -> String {
    let id: String = node_id.chars().take(11).collect();
    format!("{DEVICE_PREFIX}{id}")
}

/// Starts the node's device and fills in the description's data path. A
/// node whose device cannot start still joins (its tasks without networks
/// run); tasks on networks are then rejected with the reason.
pub async fn join(dataplane: Option<&Arc<Dataplane>>, node_id: &str, port: u16, advertise: IpAddr, description: &mut pb::NodeDescription) {
    let Some(dataplane) = dataplane else { return };
    let IpAddr::V4(advertise) = advertise else {
        tracing::error!(%advertise, "the overlay needs an IPv4 advertise address; networks are unavailable on this node");
        return;
    };
    match dataplane.join_overlay(&device_name(node_id), port, advertise).await {
        Ok(key) => {
            description.wireguard_public_key = key.to_base64();
            description.data_path_port = u32::from(port);
        }
        Err(error) => tracing::error!(%error, "starting the overlay device failed; networks are unavailable on this node"),
    }
}

/// Removes the swarm's sandboxes (their containers are gone already), the
/// device and the overlay's bridges, routes and rules.
pub async fn leave(dataplane: Option<&Arc<Dataplane>>) {
    let Some(dataplane) = dataplane else { return };
    match dataplane.sandbox_ids().await {
        Ok(sandboxes) => {
            for task in sandboxes.iter().filter_map(|s| crate::executor::task_network::task_of_sandbox(s)) {
                crate::executor::task_network::release(Some(dataplane), task).await;
            }
        }
        Err(error) => tracing::warn!(%error, "listing the swarm's sandboxes"),
    }
    if let Err(error) = dataplane.leave_overlay().await {
        tracing::warn!(%error, "removing the overlay device");
    }
}

/// Asks the leader for the addresses of this node's standalone containers
/// on attachable overlays (`shoal run --network OVERLAY`).
pub struct ContainerAttacher {
    node_id: String,
    dialer: tokio::sync::Mutex<ManagerDialer>,
}

impl ContainerAttacher {
    pub fn new(node_id: String, tls: ClientTls, managers: Arc<Mutex<Vec<String>>>) -> Self {
        ContainerAttacher { node_id, dialer: tokio::sync::Mutex::new(ManagerDialer::new(tls, managers, CALL_TIMEOUT)) }
    }

    /// The address of sandbox `sandbox_id` on `network` (name or id):
    /// the network's id and the address. A refusal (an unknown or
    /// non-attachable network) comes back as the managers' status.
    pub async fn attach(&self, sandbox_id: &str, container_name: &str, network: &str, aliases: &[String]) -> Result<(String, Ipv4Addr), tonic::Status> {
        let request = pb::AttachContainerRequest {
            node_id: self.node_id.clone(),
            sandbox_id: sandbox_id.to_string(),
            container_name: container_name.to_string(),
            network: network.to_string(),
            aliases: aliases.to_vec(),
        };
        let reply = self.call(|mut client| {
            let request = request.clone();
            async move { client.attach_container(request).await }
        })
        .await?;
        let network_id = reply.network.map(|n| n.id).unwrap_or_default();
        let address = reply
            .address
            .split('/')
            .next()
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| tonic::Status::internal(format!("the managers sent the address {:?}, which is not ADDRESS/PREFIX", reply.address)))?;
        Ok((network_id, address))
    }

    /// Gives back every address of sandbox `sandbox_id`.
    pub async fn detach(&self, sandbox_id: &str) -> Result<(), tonic::Status> {
        let request = pb::DetachContainerRequest { node_id: self.node_id.clone(), sandbox_id: sandbox_id.to_string() };
        self.call(|mut client| {
            let request = request.clone();
            async move { client.detach_container(request).await }
        })
        .await
        .map(|_| ())
    }

    /// One leader-only call, through the managers in turn: a follower's
    /// refusal names the leader, who is tried next.
    async fn call<T, F, Fut>(&self, call: F) -> Result<T, tonic::Status>
    where
        F: Fn(pb::dispatcher_client::DispatcherClient<tonic::transport::Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut dialer = self.dialer.lock().await;
        let mut last = tonic::Status::unavailable("no manager could be reached");
        for _ in 0..ATTEMPTS {
            let (addr, channel) = match dialer.connect().await {
                Ok(connected) => connected,
                Err(error) => {
                    last = tonic::Status::unavailable(format!("no manager could be reached ({error}); is the swarm up?"));
                    continue;
                }
            };
            match tokio::time::timeout(CALL_TIMEOUT, call(pb::dispatcher_client::DispatcherClient::new(channel))).await {
                Ok(Ok(reply)) => return Ok(reply.into_inner()),
                Ok(Err(status)) if status.code() == tonic::Code::FailedPrecondition && status.message().contains("not the leader") => {
                    dialer.note_refusal(&status);
                    last = status;
                }
                Ok(Err(status)) if status.code() == tonic::Code::Unavailable => last = status,
                Ok(Err(status)) => return Err(status),
                Err(_) => last = tonic::Status::unavailable(format!("manager {addr} did not answer within {}s", CALL_TIMEOUT.as_secs())),
            }
        }
        Err(last)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn device_names_fit_an_interface_name() {
        let name = super::device_name("1a2b3c4d5e6f7a8b");
        assert_eq!(name, "wgs-1a2b3c4d5e6");
        assert!(name.len() <= 15);
    }
}
