//! `shoal daemon`: one node. It always serves the local API on its unix
//! socket, runs the agent when the node is in a swarm, and runs a manager
//! when the node is one.

mod attach_api;
mod autolock;
mod copy_api;
mod events_api;
mod exec_api;
mod image_pinning;
mod local_api;
mod metrics_endpoint;
mod networks_api;
mod node;
mod registry_api;
mod runtime_api;
mod runtime_wire;
mod state;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use shoal_manager::api::control::ControlService;
use shoal_manager::api::{ManagerSlot, Transport};
use shoal_proto::pb;
use tokio::sync::{mpsc, Mutex};
use tokio_stream::wrappers::UnixListenerStream;

pub use local_api::DEFAULT_PORT;
use local_api::LocalApi;
use node::{ManagerStart, NodeRuntime, RunningNode};
use state::SwarmDir;

pub struct DaemonOptions {
    pub data_root: PathBuf,
    pub socket: PathBuf,
    /// The run directory (docker's exec root): state that must never reach
    /// a disk, such as the tmpfs of each task's secrets.
    pub exec_root: PathBuf,
    pub node_name: Option<String>,
    /// Registries reached over plain HTTP; handed to the runtime.
    pub insecure_registries: Vec<String>,
    /// Cgroup that containers are created under.
    pub cgroup_parent: String,
    /// `--label`s: sent to the managers in the node's description.
    pub engine_labels: BTreeMap<String, String>,
    /// `--default-address-pool`: subnets of this node's bridge networks.
    pub address_pool: shoal_overlay_net::local::AddressPool,
    /// Whether the node has the default bridge network (`--bridge none`: no).
    pub default_bridge: bool,
    /// `--metrics-addr`: where to serve Prometheus metrics (off when `None`).
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// `--event-history`: how many swarm events a manager keeps.
    pub event_history: usize,
}

pub use metrics_endpoint::parse_address as parse_metrics_address;

/// Set only by the observability benchmark (`cargo bench --bench
/// observability`), for its comparison run: the daemon then serves no
/// metrics and keeps no swarm events, whatever its flags say.
pub const BENCH_OBSERVABILITY_OFF_ENV: &str = "SHOAL_BENCH_OBSERVABILITY_OFF";

pub async fn run(options: DaemonOptions) -> anyhow::Result<()> {
    std::fs::create_dir_all(&options.data_root)
        .with_context(|| format!("cannot create data root {}", options.data_root.display()))?;
    std::fs::set_permissions(&options.data_root, std::fs::Permissions::from_mode(0o700))?;
    let hostname = match &options.node_name {
        Some(name) => name.clone(),
        None => nix::unistd::gethostname()?.to_string_lossy().into_owned(),
    };
    std::fs::create_dir_all(&options.exec_root)
        .with_context(|| format!("cannot create exec root {}", options.exec_root.display()))?;
    tracing::info!(data_root = %options.data_root.display(), exec_root = %options.exec_root.display(), %hostname, insecure_registries = ?options.insecure_registries, "starting");
    // The node's event history is complete from now on (`events --since`).
    let _ = shoal_runtime::events::events();
    // Bound first: a port in use stops the daemon before it touches anything.
    let observability_off = std::env::var_os(BENCH_OBSERVABILITY_OFF_ENV).is_some();
    if observability_off {
        tracing::warn!("{BENCH_OBSERVABILITY_OFF_ENV} is set: no metrics endpoint and no swarm events (a benchmark's comparison run)");
    }
    let metrics_listener = match options.metrics_addr.filter(|_| !observability_off) {
        Some(address) => Some(metrics_endpoint::bind(address).await?),
        None => None,
    };

    let slot = ManagerSlot::default();
    let node_cell: Arc<Mutex<Option<Arc<RunningNode>>>> = Arc::new(Mutex::new(None));
    let (removed_tx, mut removed_rx) = mpsc::channel(1);

    let shoal_exe = std::env::current_exe().context("locating the shoal binary")?;
    let mut runtime = runtime_api::RuntimeApi {
        networks: None,
        images: shoal_runtime::image::ImageStore::open(options.data_root.join("image"), options.insecure_registries.clone())
            .await
            .context("opening the image store")?,
        containers: shoal_runtime::container::ContainerManager::open(shoal_runtime::container::ManagerConfig {
            root: options.data_root.join("containers"),
            volumes: options.data_root.join("volumes"),
            log_rotation: Default::default(),
            cgroup_parent: options.cgroup_parent.clone(),
            shim_command: vec![shoal_exe.clone().into(), "__shim".into()],
        })
        .await
        .context("opening the container store")?,
    };
    // Every swarm node this daemon runs (after a restart, init or join)
    // runs its tasks on this runtime, and adopts the containers it
    // re-attached to.
    // Bridges, sandboxes and the overlay device. A host where they cannot
    // work (no netlink, no nftables) still runs containers without networks.
    let networks = match shoal_overlay_net::dataplane::Dataplane::open(&options.data_root.join("network"), &shoal_exe).await {
        Ok(dataplane) => Some(dataplane),
        Err(error) => {
            tracing::error!(%error, "the network data plane is unavailable; containers get loopback only");
            None
        }
    };
    // This node's bridge networks, before the agent starts (it removes
    // `shl-` bridges it does not know to be local).
    let swarm_attachments = networks_api::SwarmAttachments::default();
    let container_networks = networks_api::ContainerNetworks::open(
        &options.data_root.join("network"),
        options.address_pool,
        options.default_bridge,
        networks.clone(),
        runtime.containers.clone(),
        slot.clone(),
        hostname.clone(),
        swarm_attachments.clone(),
    )
    .await;
    runtime.networks = Some(container_networks.clone());
    if let Some(listener) = metrics_listener {
        let registry = metrics_endpoint::registry(runtime.containers.clone(), networks.clone(), slot.clone());
        metrics_endpoint::serve(listener, registry)?;
    }
    let node_runtime = Arc::new(NodeRuntime {
        tasks: shoal_agent::TaskRuntime {
            images: runtime.images.clone(),
            containers: runtime.containers.clone(),
            networks,
            task_files: options.exec_root.join("task-files"),
        },
        engine_labels: options.engine_labels.clone(),
        event_history: if observability_off { 0 } else { options.event_history },
        swarm_attachments,
        runtime_api: runtime.clone(),
    });

    // Back in the swarm we were in before the restart.
    if let Some((state, credentials)) = SwarmDir::new(&options.data_root).load()? {
        let start = (state.role == "manager").then_some(ManagerStart::Resume);
        let node = RunningNode::start(
            options.data_root.clone(),
            state,
            credentials,
            slot.clone(),
            start,
            removed_tx.clone(),
            node_runtime.clone(),
        )
            .await
            .context("resuming swarm membership")?;
        *node_cell.lock().await = Some(node);
    }
    let lock_beacon = autolock::BeaconSlot::default();
    autolock::announce_if_locked(&options.data_root, &lock_beacon).await;

    let listener = bind_socket(&options.socket)?;
    let local_api = LocalApi {
        data_root: options.data_root.clone(),
        hostname,
        slot: slot.clone(),
        node: node_cell.clone(),
        removed: removed_tx,
        runtime: node_runtime,
        lock_beacon,
    };
    let server = tonic::transport::Server::builder()
        .add_service(pb::daemon_server::DaemonServer::new(local_api))
        .add_service(pb::runtime_server::RuntimeServer::new(runtime))
        .add_service(pb::local_networks_server::LocalNetworksServer::new(networks_api::LocalNetworksApi { networks: container_networks }))
        .add_service(pb::control_server::ControlServer::new(ControlService::new(slot, Transport::LocalSocket)))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown_signal());

    // A node removed by the swarm forgets it, as `swarm leave` would.
    let forget = node_cell.clone();
    tokio::spawn(async move {
        while removed_rx.recv().await.is_some() {
            if let Some(node) = forget.lock().await.take() {
                node.shutdown().await;
                if let Err(e) = node.dir().remove() {
                    tracing::error!(error = %e, "removing swarm state");
                }
            }
        }
    });

    tracing::info!(socket = %options.socket.display(), "daemon ready");
    server.await?;
    if let Some(node) = node_cell.lock().await.take() {
        // Task containers keep running; the next start adopts them.
        node.stop_keeping_containers().await;
    }
    let _ = std::fs::remove_file(&options.socket);
    tracing::info!("daemon stopped");
    Ok(())
}

/// Binds the local socket (root only, mode 0660), replacing a stale one
/// left by a crashed daemon but never stealing a live daemon's socket.
fn bind_socket(path: &Path) -> anyhow::Result<tokio::net::UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!("another shoal daemon is already listening on {}; stop it or pass another -H", path.display());
        }
        std::fs::remove_file(path)?;
    }
    let listener = tokio::net::UnixListener::bind(path).with_context(|| format!("cannot listen on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(listener)
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}
