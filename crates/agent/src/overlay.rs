//! The node's place in the swarm's overlay: its WireGuard device, started
//! (or adopted after a restart) when the node joins and removed when it
//! leaves. The public key and port go to the managers in the node's
//! description; the private key never leaves the node.

use std::net::IpAddr;
use std::sync::Arc;

use shoal_overlay_net::dataplane::Dataplane;
use shoal_proto::pb;

/// `wgs-` + 11 characters of the node id: unique per node, so dev-cluster
/// hosts sharing one /var/run/wireguard each have their own UAPI socket,
/// and within the 15 bytes an interface name may have.
pub fn device_name(node_id: &str) -> String {
    let id: String = node_id.chars().take(11).collect();
    format!("wgs-{id}")
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

#[cfg(test)]
mod tests {
    #[test]
    fn device_names_fit_an_interface_name() {
        let name = super::device_name("1a2b3c4d5e6f7a8b");
        assert_eq!(name, "wgs-1a2b3c4d5e6");
        assert!(name.len() <= 15);
    }
}
