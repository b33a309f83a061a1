//! The one node compose talks to: its daemon's local socket, where the
//! container runtime, the node's own bridge networks and its volumes are.

use std::collections::BTreeMap;

use shoal_proto::pb;
use tonic::transport::Channel;

use super::project::{CONFIG_HASH_LABEL, NUMBER_LABEL, PROJECT_LABEL, SERVICE_LABEL};
use crate::client::{ConnectArgs, Target};
use crate::error::{CliError, CliResult};

pub struct NodeApi {
    pub runtime: pb::runtime_client::RuntimeClient<Channel>,
    pub networks: pb::local_networks_client::LocalNetworksClient<Channel>,
    daemon: pb::daemon_client::DaemonClient<Channel>,
}

/// One of a project's containers, from the node's list.
#[derive(Debug, Clone)]
pub struct ProjectContainer {
    pub name: String,
    pub service: String,
    pub number: u64,
    pub config_hash: String,
    /// created, running, paused, exited or dead.
    pub state: String,
    pub summary: pb::ContainerSummary,
}

impl ProjectContainer {
    pub fn running(&self) -> bool {
        self.state == "running" || self.state == "paused"
    }
}

impl NodeApi {
    pub async fn connect(connect: &ConnectArgs) -> CliResult<NodeApi> {
        if !matches!(connect.target()?, Target::Unix(_)) {
            return Err(CliError::msg(
                "compose runs containers on one node through its daemon's local socket, not a remote manager; run it on the node, or use `shoal stack deploy` for the swarm",
            ));
        }
        let channel = connect.connect().await?;
        Ok(NodeApi {
            runtime: pb::runtime_client::RuntimeClient::new(channel.clone()),
            networks: pb::local_networks_client::LocalNetworksClient::new(channel.clone()),
            daemon: pb::daemon_client::DaemonClient::new(channel),
        })
    }

    /// On a swarm node `compose up` needs `--local` (see the module's note).
    pub async fn refuse_swarm_unless(&mut self, local: bool) -> CliResult {
        let info = self.daemon.info(pb::Empty {}).await?.into_inner();
        if info.swarm_state != "inactive" && !local {
            return Err(CliError::msg(
                "this node is in a swarm, so `compose up` would make containers the swarm cannot see; deploy the file with `shoal stack deploy -c FILE NAME`, or add --local to run it on this node alone",
            ));
        }
        Ok(())
    }

    /// Every container of `project`, stopped ones too, in name order.
    pub async fn containers(&mut self, project: &str) -> CliResult<Vec<ProjectContainer>> {
        let listed = self.runtime.list_containers(pb::ListContainersRequest { all: true }).await?.into_inner().containers;
        let mut found: Vec<ProjectContainer> = listed
            .into_iter()
            .filter(|c| c.labels.get(PROJECT_LABEL).map(String::as_str) == Some(project))
            .map(|c| ProjectContainer {
                name: c.name.clone(),
                service: c.labels.get(SERVICE_LABEL).cloned().unwrap_or_default(),
                number: c.labels.get(NUMBER_LABEL).and_then(|n| n.parse().ok()).unwrap_or(0),
                config_hash: c.labels.get(CONFIG_HASH_LABEL).cloned().unwrap_or_default(),
                state: c.state.clone(),
                summary: c,
            })
            .collect();
        found.sort_by(|a, b| (&a.service, a.number).cmp(&(&b.service, b.number)));
        Ok(found)
    }

    /// The node's networks by name.
    pub async fn networks_by_name(&mut self) -> CliResult<BTreeMap<String, pb::Network>> {
        let listed = self.networks.list_networks(pb::ListNetworksRequest {}).await?.into_inner().networks;
        Ok(listed.into_iter().filter_map(|n| Some((n.spec.as_ref()?.name.clone(), n))).collect())
    }

    pub async fn volumes(&mut self) -> CliResult<Vec<pb::Volume>> {
        Ok(self.runtime.list_volumes(pb::Empty {}).await?.into_inner().volumes)
    }

    /// Inspect's JSON for `container`.
    pub async fn inspect(&mut self, container: &str) -> CliResult<serde_json::Value> {
        let doc = self.runtime.inspect_container(pb::ContainerRef { name: container.to_string() }).await?.into_inner();
        Ok(serde_json::from_str(&doc.json)?)
    }

    pub async fn stop(&mut self, container: &str, timeout: Option<u32>) -> CliResult {
        self.runtime.stop_container(stop_request(container, timeout)).await?;
        Ok(())
    }

    /// Stops `containers` side by side, as docker compose does: each may
    /// take its whole grace period.
    pub async fn stop_all(&self, containers: &[&ProjectContainer], timeout: Option<u32>) -> CliResult {
        let stops = containers.iter().map(|container| {
            let mut runtime = self.runtime.clone();
            let request = stop_request(&container.name, timeout);
            async move {
                runtime.stop_container(request).await?;
                progress("Container", &container.name, "Stopped");
                Ok::<(), CliError>(())
            }
        });
        futures::future::try_join_all(stops).await?;
        Ok(())
    }

    pub async fn remove(&mut self, container: &str) -> CliResult {
        self.runtime.remove_container(pb::RemoveContainerRequest { name: container.to_string(), force: true }).await?;
        Ok(())
    }
}

/// A stop or restart of `container`: `-t` when given, else the container's
/// own grace period.
pub fn stop_request(container: &str, timeout: Option<u32>) -> pb::StopContainerRequest {
    pb::StopContainerRequest { name: container.to_string(), timeout_secs: timeout.unwrap_or(0), has_timeout: timeout.is_some() }
}

/// One line of what compose did, as docker compose prints it.
pub fn progress(kind: &str, name: &str, what: &str) {
    println!(" {kind} {name}  {what}");
}

/// "app-web-1" → "web-1": how compose prefixes a container's output.
pub fn short_name(project: &str, container: &str) -> String {
    container.strip_prefix(&format!("{project}-")).unwrap_or(container).to_string()
}
