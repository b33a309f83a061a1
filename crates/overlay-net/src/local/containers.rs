//! The standalone containers on this node's bridge networks (and on
//! attachable swarm overlays): preparing a container's sandbox with its
//! addresses and published ports, binding it to the container, `network
//! connect` / `disconnect`, and releasing it all when the container ends.

use std::path::PathBuf;

use ipnet::Ipv4Net;

use super::*;

impl BridgeNetworks {
    /// Everything a container about to be created needs: an address on
    /// each of `networks` (the first carries its default route), its
    /// published ports (relays bound first: a port in use fails here with
    /// nothing changed; then DNAT), and a sandbox namespace with its
    /// endpoints. Call [`BridgeNetworks::bind_container`] once the
    /// container exists, or [`BridgeNetworks::release_sandbox`] if it
    /// could not be created.
    pub async fn prepare_container(
        &self,
        sandbox_id: &str,
        requested: &[Requested],
        ports: &[PortMapping],
        dns: &DnsSettings,
    ) -> Result<PreparedSandbox> {
        let networks: Vec<NetworkChoice> = requested
            .iter()
            .filter_map(|r| match r {
                Requested::Local(choice) => Some(choice.clone()),
                Requested::Swarm { .. } => None,
            })
            .collect();
        // Positions follow the order asked for, across both kinds.
        let local_positions: Vec<u32> = requested
            .iter()
            .enumerate()
            .filter(|(_, r)| matches!(r, Requested::Local(_)))
            .map(|(i, _)| i as u32)
            .collect();
        let swarm: Vec<SwarmEndpoint> = requested
            .iter()
            .enumerate()
            .filter_map(|(i, r)| match r {
                Requested::Swarm { network_id, address } => {
                    Some(SwarmEndpoint { network_id: network_id.clone(), address: *address, position: i as u32 })
                }
                Requested::Local(_) => None,
            })
            .collect();
        for alias in networks.iter().flat_map(|n| &n.aliases) {
            store::validate_alias(alias)?;
        }
        let mut inner = self.inner.lock().await;
        let mut indices: Vec<usize> = Vec::new();
        for choice in &networks {
            let index = inner
                .state
                .position(&choice.network)
                .ok_or_else(|| not_found(&choice.network))?;
            if indices.contains(&index) {
                return Err(LocalNetError::DuplicateAttachment {
                    network: choice.network.clone(),
                });
            }
            indices.push(index);
        }
        if indices.is_empty() && swarm.is_empty() {
            return Err(LocalNetError::NotFound {
                reference: String::new(),
            });
        }
        if let (None, Some(port)) = (indices.first(), ports.first()) {
            return Err(LocalNetError::PublishWithoutBridge { port: port.host_side() });
        }
        if let (Some(&first), Some(port)) = (indices.first(), ports.first()) {
            if inner.state.networks[first].internal {
                return Err(LocalNetError::PublishOnInternal {
                    network: inner.state.networks[first].name.clone(),
                    port: port.host_side(),
                });
            }
        }
        let addresses = indices
            .iter()
            .map(|&i| inner.state.networks[i].free_address())
            .collect::<Result<Vec<_>>>()?;

        if inner.state.sandbox(sandbox_id).is_some() {
            return Err(LocalNetError::Internal {
                detail: format!("sandbox {sandbox_id} exists already; pick a new one with new_sandbox_id"),
            });
        }
        let sandbox_id = sandbox_id.to_string();
        let mut proxies = Vec::new();
        if let Some(&first) = indices.first() {
            let first_bridge = inner.state.networks[first].bridge.clone();
            for port in ports {
                proxies.push(
                    PortProxy::start(&port.published(addresses[0], &first_bridge))
                        .await
                        .map_err(LocalNetError::Port)?,
                );
            }
        }

        inner.state.sandboxes.push(SandboxRecord {
            id: sandbox_id.clone(),
            container_id: String::new(),
            container_name: String::new(),
            swarm,
        });
        for (nth, ((&index, choice), address)) in
            indices.iter().zip(&networks).zip(&addresses).enumerate()
        {
            let position = local_positions[nth];
            inner.state.networks[index].endpoints.push(EndpointRecord {
                sandbox_id: sandbox_id.clone(),
                address: *address,
                aliases: choice.aliases.clone(),
                published: if nth == 0 {
                    ports.to_vec()
                } else {
                    Vec::new()
                },
                position,
            });
        }
        let attached = match self
            .commit_and_attach(&mut inner, &sandbox_id, !ports.is_empty())
            .await
        {
            Ok(netns) => match self.dataplane.dns().configure(&sandbox_id, dns).await {
                Ok(resolv_conf) => Ok((netns, resolv_conf)),
                Err(error) => Err(error.into()),
            },
            Err(error) => Err(error),
        };
        match attached {
            Ok((netns, resolv_conf)) => {
                inner.proxies.insert(sandbox_id.clone(), proxies);
                tracing::info!(sandbox = %sandbox_id, ?addresses, ports = ports.len(), "container networks prepared");
                Ok(PreparedSandbox { sandbox_id, netns, resolv_conf })
            }
            Err(error) => {
                self.forget_sandbox(&mut inner, &sandbox_id).await;
                Err(error)
            }
        }
    }

    /// Saves the record (applying bridges and firewall first when
    /// `ports_changed`: the firewall depends on networks and published
    /// ports only, so most containers leave it alone), then (re)makes the
    /// sandbox's endpoints.
    async fn commit_and_attach(
        &self,
        inner: &mut Inner,
        sandbox_id: &str,
        ports_changed: bool,
    ) -> Result<PathBuf> {
        if ports_changed {
            self.apply(inner).await?;
        }
        inner.state.save(&self.state_path)?;
        Ok(self
            .dataplane
            .attach(sandbox_id, &attachments(&inner.state, sandbox_id))
            .await?)
    }

    /// Takes a sandbox out of the record and the kernel, best effort (it
    /// undoes a failed step, or follows a container that ended). Returns
    /// whether it had swarm addresses, which the caller gives back to the
    /// managers.
    async fn forget_sandbox(&self, inner: &mut Inner, sandbox_id: &str) -> bool {
        let had_swarm = inner.state.sandbox(sandbox_id).is_some_and(|s| !s.swarm.is_empty());
        inner.proxies.remove(sandbox_id);
        let had_ports = inner
            .state
            .sandbox_endpoints(sandbox_id)
            .iter()
            .any(|(_, e)| !e.published.is_empty());
        if inner.state.remove_sandbox(sandbox_id) {
            if had_ports {
                if let Err(error) = self.apply(inner).await {
                    tracing::warn!(sandbox = sandbox_id, %error, "updating the firewall after a container");
                }
            }
            if let Err(error) = inner.state.save(&self.state_path) {
                tracing::warn!(sandbox = sandbox_id, %error, "saving the local network state");
            }
        }
        self.publish_names(inner);
        if let Err(error) = self.dataplane.release(sandbox_id).await {
            tracing::warn!(sandbox = sandbox_id, %error, "removing a container's network sandbox");
        }
        had_swarm
    }

    /// A fresh sandbox id for a container about to be prepared (the
    /// managers learn it first when the container joins a swarm overlay).
    pub async fn new_sandbox_id(&self) -> String {
        let inner = self.inner.lock().await;
        loop {
            let bytes: [u8; SANDBOX_ID_HEX / 2] = rand::random();
            let id = format!(
                "{CONTAINER_SANDBOX_PREFIX}{}",
                bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
            );
            if inner.state.sandbox(&id).is_none() {
                return id;
            }
        }
    }

    /// Records which container lives in `sandbox_id`.
    pub async fn bind_container(
        &self,
        sandbox_id: &str,
        container_id: &str,
        container_name: &str,
    ) -> Result<()> {
        let mut inner = self.inner.lock().await;
        if let Some(sandbox) = inner
            .state
            .sandboxes
            .iter_mut()
            .find(|s| s.id == sandbox_id)
        {
            sandbox.container_id = container_id.to_string();
            sandbox.container_name = container_name.to_string();
        }
        self.publish_names(&inner);
        inner.state.save(&self.state_path)
    }

    /// The container `container_id` is now called `container_name`: its
    /// networks' DNS answers the new name, no longer the old one.
    pub async fn rename_container(&self, container_id: &str, container_name: &str) -> Result<()> {
        let mut inner = self.inner.lock().await;
        let mut found = false;
        for sandbox in inner.state.sandboxes.iter_mut().filter(|s| s.container_id == container_id) {
            sandbox.container_name = container_name.to_string();
            found = true;
        }
        if !found {
            return Ok(());
        }
        self.publish_names(&inner);
        inner.state.save(&self.state_path)
    }

    /// Undoes [`BridgeNetworks::prepare_container`] for a container that
    /// was never created.
    pub async fn release_sandbox(&self, sandbox_id: &str) {
        let mut inner = self.inner.lock().await;
        self.forget_sandbox(&mut inner, sandbox_id).await;
    }

    /// Frees everything of a container that ended: addresses, published
    /// ports (relays and DNAT) and its sandbox. Fine to call twice.
    /// Returns its sandbox when it held swarm addresses, for the caller to
    /// give back to the managers.
    pub async fn release_container(&self, container_id: &str) -> Option<String> {
        let mut inner = self.inner.lock().await;
        let sandbox = inner.state.sandbox_of(container_id).map(|s| s.id.clone())?;
        let had_swarm = self.forget_sandbox(&mut inner, &sandbox).await;
        tracing::info!(container = container_id, sandbox = %sandbox, "container networks released");
        had_swarm.then_some(sandbox)
    }

    /// `network connect`: attaches the running container's sandbox to one
    /// more network, live.
    pub async fn connect(
        &self,
        container_id: &str,
        container_name: &str,
        reference: &str,
        aliases: &[String],
    ) -> Result<()> {
        for alias in aliases {
            store::validate_alias(alias)?;
        }
        let mut inner = self.inner.lock().await;
        let sandbox_id = inner
            .state
            .sandbox_of(container_id)
            .map(|s| s.id.clone())
            .ok_or_else(|| LocalNetError::NoSandbox {
                container: container_name.to_string(),
            })?;
        let index = inner
            .state
            .position(reference)
            .ok_or_else(|| not_found(reference))?;
        let network = &inner.state.networks[index];
        if network.endpoints.iter().any(|e| e.sandbox_id == sandbox_id) {
            return Err(LocalNetError::AlreadyConnected {
                container: container_name.to_string(),
                network: network.name.clone(),
            });
        }
        let address = network.free_address()?;
        let position = inner
            .state
            .sandbox_endpoints(&sandbox_id)
            .last()
            .map_or(0, |(_, e)| e.position + 1);
        inner.state.networks[index].endpoints.push(EndpointRecord {
            sandbox_id: sandbox_id.clone(),
            address,
            aliases: aliases.to_vec(),
            published: Vec::new(),
            position,
        });
        if let Err(error) = self.commit_and_attach(&mut inner, &sandbox_id, false).await {
            inner.state.networks[index]
                .endpoints
                .retain(|e| e.sandbox_id != sandbox_id);
            let _ = self
                .dataplane
                .detach(&sandbox_id, &inner.state.networks[index].id.clone())
                .await;
            let _ = inner.state.save(&self.state_path);
            return Err(error);
        }
        self.publish_names(&inner);
        tracing::info!(container = container_id, network = %inner.state.networks[index].name, %address, "container connected");
        Ok(())
    }

    /// `network disconnect`: removes the container's endpoint on the
    /// network, with the published ports it carried.
    pub async fn disconnect(
        &self,
        container_id: &str,
        container_name: &str,
        reference: &str,
    ) -> Result<()> {
        let mut inner = self.inner.lock().await;
        let index = inner
            .state
            .position(reference)
            .ok_or_else(|| not_found(reference))?;
        let network_name = inner.state.networks[index].name.clone();
        let not_connected = || LocalNetError::NotConnected {
            container: container_name.to_string(),
            network: network_name.clone(),
        };
        let sandbox_id = inner
            .state
            .sandbox_of(container_id)
            .map(|s| s.id.clone())
            .ok_or_else(not_connected)?;
        let network = &mut inner.state.networks[index];
        let Some(at) = network
            .endpoints
            .iter()
            .position(|e| e.sandbox_id == sandbox_id)
        else {
            return Err(not_connected());
        };
        let endpoint = network.endpoints.remove(at);
        let network_id = network.id.clone();
        if !endpoint.published.is_empty() {
            inner.proxies.remove(&sandbox_id);
            self.apply(&mut inner).await?;
        }
        inner.state.save(&self.state_path)?;
        self.publish_names(&inner);
        self.dataplane.detach(&sandbox_id, &network_id).await?;
        tracing::info!(container = container_id, network = %network_name, "container disconnected");
        Ok(())
    }

    /// The networks of a container, in its order.
    pub async fn container_endpoints(&self, container_id: &str) -> Vec<ContainerEndpoint> {
        let inner = self.inner.lock().await;
        let Some(sandbox) = inner.state.sandbox_of(container_id) else {
            return Vec::new();
        };
        inner
            .state
            .sandbox_endpoints(&sandbox.id)
            .into_iter()
            .map(|(index, endpoint)| {
                let network = &inner.state.networks[index];
                ContainerEndpoint {
                    network_id: network.id.clone(),
                    network: network.name.clone(),
                    address: Ipv4Net::new(endpoint.address, network.subnet.prefix_len())
                        .unwrap_or(network.subnet),
                    gateway: network.gateway,
                    aliases: endpoint.aliases.clone(),
                    published: endpoint.published.clone(),
                }
            })
            .collect()
    }
}

/// The data plane's attachments of a sandbox, in its network order.
/// The sandbox's endpoints on bridge networks and swarm overlays, in the
/// order the container asked for them (the first carries its default route).
pub(super) fn attachments(state: &LocalState, sandbox_id: &str) -> Vec<Attachment> {
    let mut ordered: Vec<(u32, Attachment)> = state
        .sandbox_endpoints(sandbox_id)
        .into_iter()
        .map(|(index, endpoint)| {
            (endpoint.position, Attachment { network_id: state.networks[index].id.clone(), address: endpoint.address })
        })
        .collect();
    if let Some(sandbox) = state.sandbox(sandbox_id) {
        ordered.extend(sandbox.swarm.iter().map(|s| (s.position, Attachment { network_id: s.network_id.clone(), address: s.address })));
    }
    ordered.sort_by_key(|(position, _)| *position);
    ordered.into_iter().map(|(_, attachment)| attachment).collect()
}

