//! A node that is in a swarm: its agent session, its task executor, its
//! certificates (renewed at half-life), and its manager role when it has
//! one. The node converges on the role the swarm asks for: promotion
//! starts a manager and joins Raft; demotion leaves Raft and stops it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use shoal_agent::managers::ManagerDialer;
use shoal_agent::{
    describe_node, remove_all_task_containers, remove_all_task_files, renew_certificate, run_session, Executor, ExecutorConfig,
    SessionConfig, SessionEvent, TaskRuntime,
};
use shoal_manager::api::certificates::CaService;
use shoal_manager::api::control::ControlService;
use shoal_manager::api::dispatcher::DispatcherService;
use shoal_manager::api::raft_transport::RaftService;
use shoal_manager::api::{ManagerSlot, Transport};
use shoal_manager::raft::at_rest::AtRest;
use shoal_manager::store::{now_ms, raft_id_of, Transaction};
use shoal_manager::{Manager, ManagerConfig};
use shoal_proto::identity::identity_from_pem;
use shoal_proto::pb;
use shoal_proto::tls::{ClientTls, Credentials, ServerTls};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::state::{SwarmDir, SwarmState};

/// Set (to anything) only by the control-plane benchmark, to measure what
/// encrypting the Raft data costs: the managers it starts then keep their
/// Raft data unencrypted. Never for a real swarm; the manager logs a
/// warning, and data written so is encrypted when started without it.
const BENCH_UNENCRYPTED_RAFT_ENV: &str = "SHOAL_BENCH_UNENCRYPTED_RAFT";

/// The manager's Raft data is encrypted with the key file beside the node's
/// TLS key, except in the benchmark's comparison run.
fn raft_at_rest(dir: &SwarmDir) -> AtRest {
    if std::env::var_os(BENCH_UNENCRYPTED_RAFT_ENV).is_some() {
        return AtRest::PlaintextForBenchmark;
    }
    AtRest::Encrypted { dek_file: dir.raft_dek_file(), unlock_key: dir.unlock_key() }
}

/// What the daemon lends every swarm node it runs: its images and
/// containers (the executor runs tasks with them) and how the node
/// describes itself.
pub struct NodeRuntime {
    pub tasks: TaskRuntime,
    pub engine_labels: BTreeMap<String, String>,
    /// How many swarm events this node keeps when it is a manager.
    pub event_history: usize,
    /// Standalone containers on attachable overlays ask the managers
    /// through the swarm node this daemon runs.
    pub swarm_attachments: super::networks_api::SwarmAttachments,
    /// This node's containers and images, also served on the manager port
    /// to client certificates (`shoal -H tcp://MANAGER exec ...`).
    pub runtime_api: super::runtime_api::RuntimeApi,
}

/// A running manager and the server exposing it on the manager port.
struct ManagerRole {
    manager: Arc<Manager>,
    server: JoinHandle<()>,
    stop_server: oneshot::Sender<()>,
}

pub struct RunningNode {
    dir: SwarmDir,
    state: Mutex<SwarmState>,
    managers: Arc<Mutex<Vec<String>>>,
    client_tls: ClientTls,
    server_tls: ServerTls,
    credentials: Mutex<Credentials>,
    slot: ManagerSlot,
    manager_role: tokio::sync::Mutex<Option<ManagerRole>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Runs this node's tasks; `None` before the agent starts and after stopping.
    executor: Mutex<Option<Executor>>,
    /// Told when the swarm removed this node, so the daemon can forget it.
    removed: mpsc::Sender<()>,
    runtime: Arc<NodeRuntime>,
}

/// How the node enters its manager role.
pub enum ManagerStart {
    /// `swarm init`: a one-member Raft, then the swarm's first objects.
    Bootstrap(Transaction),
    /// `swarm join` as manager, or promotion: ask the swarm to add us.
    Join,
    /// Daemon restart: Raft state on disk already has us as a member.
    Resume,
}

impl RunningNode {
    pub async fn start(
        data_root: PathBuf,
        state: SwarmState,
        credentials: Credentials,
        slot: ManagerSlot,
        manager_start: Option<ManagerStart>,
        removed: mpsc::Sender<()>,
        runtime: Arc<NodeRuntime>,
    ) -> anyhow::Result<Arc<Self>> {
        Self::start_in(SwarmDir::new(&data_root), state, credentials, slot, manager_start, removed, runtime).await
    }

    /// As [`RunningNode::start`], with a swarm directory that already knows
    /// its unlock key (`swarm unlock`).
    pub async fn start_in(
        dir: SwarmDir,
        state: SwarmState,
        credentials: Credentials,
        slot: ManagerSlot,
        manager_start: Option<ManagerStart>,
        removed: mpsc::Sender<()>,
        runtime: Arc<NodeRuntime>,
    ) -> anyhow::Result<Arc<Self>> {
        let client_tls = ClientTls::new(&credentials)?;
        let server_tls = ServerTls::new(&credentials)?;
        let node = Arc::new(RunningNode {
            dir,
            managers: Arc::new(Mutex::new(state.managers.clone())),
            state: Mutex::new(state),
            client_tls,
            server_tls,
            credentials: Mutex::new(credentials),
            slot,
            manager_role: tokio::sync::Mutex::new(None),
            tasks: Mutex::new(Vec::new()),
            executor: Mutex::new(None),
            removed,
            runtime,
        });
        if let Some(start) = manager_start {
            node.start_manager(start).await?;
        }
        node.start_agent().await;
        let renewer = node.clone();
        node.spawn(async move { renewer.renewal_loop().await });
        Ok(node)
    }

    pub fn state(&self) -> SwarmState {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The node's current certificate and key (in memory, never sealed).
    pub fn credentials(&self) -> Credentials {
        self.credentials.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn manager(&self) -> Option<Arc<Manager>> {
        self.slot.get()
    }

    fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner()).push(tokio::spawn(task));
    }

    fn update_state(&self, change: impl FnOnce(&mut SwarmState)) {
        let snapshot = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            change(&mut state);
            state.clone()
        };
        if let Err(e) = self.dir.save_state(&snapshot) {
            tracing::error!(error = %e, "saving swarm state");
        }
    }

    async fn start_agent(self: &Arc<Self>) {
        let (events_tx, mut events_rx) = mpsc::channel(16);
        let state = self.state();
        let mut description = describe_node(&self.runtime.engine_labels);
        let advertise = state.advertise.parse::<std::net::SocketAddr>().map(|a| a.ip());
        match advertise {
            Ok(ip) => shoal_agent::overlay::join(self.runtime.tasks.networks.as_ref(), &state.node_id, state.data_path_port, ip, &mut description).await,
            Err(_) => tracing::error!(advertise = %state.advertise, "the advertise address is unreadable; networks are unavailable on this node"),
        }
        let config = SessionConfig {
            node_id: state.node_id.clone(),
            tls: self.client_tls.clone(),
            managers: self.managers.clone(),
            local_manager: (state.role == "manager").then(|| state.advertise.clone()),
            events: events_tx,
            description,
        };
        self.spawn(run_session(config));
        let executor = Executor::spawn(ExecutorConfig {
            node_id: state.node_id.clone(),
            tls: self.client_tls.clone(),
            managers: self.managers.clone(),
            backend: Arc::new(self.runtime.tasks.clone()),
        });
        *self.executor.lock().unwrap_or_else(|p| p.into_inner()) = Some(executor);
        let attacher = shoal_agent::overlay::ContainerAttacher::new(state.node_id.clone(), self.client_tls.clone(), self.managers.clone());
        self.runtime.swarm_attachments.set(Some(Arc::new(attacher)));
        let node = self.clone();
        self.spawn(async move {
            while let Some(event) = events_rx.recv().await {
                node.handle_session_event(event).await;
            }
        });
    }

    async fn handle_session_event(self: &Arc<Self>, event: SessionEvent) {
        match event {
            SessionEvent::Managers(managers) => self.update_state(|s| s.managers = managers),
            SessionEvent::DesiredRole(role) => {
                if role != self.state().role {
                    if let Err(e) = self.change_role(&role).await {
                        tracing::error!(error = %e, role = %role, "changing role");
                    }
                }
            }
            SessionEvent::Removed => {
                tracing::warn!("this node was removed from the swarm");
                let _ = self.removed.send(()).await;
            }
        }
    }

    /// Promotion or demotion, driven by the desired role in the store.
    async fn change_role(self: &Arc<Self>, role: &str) -> anyhow::Result<()> {
        tracing::info!(role, "converging on new role");
        if role == "worker" {
            // The leader took us out of Raft before flipping the desired
            // role; wait for that to reach us so we stop as a non-voter.
            if let Some(manager) = self.manager() {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
                while manager.voters().contains(&manager.raft_id) && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            self.renew().await?;
            self.stop_manager().await;
            // Workers are never locked: the node key goes back in clear
            // before the data key that may seal it is erased.
            if let Err(e) = self.dir.protect_keys(&self.credentials().key_pem, None) {
                tracing::error!(error = %format!("{e:#}"), "cannot write this node's key in clear after demotion");
            }
            // The key first: once it is gone, whatever of the Raft data the
            // removal below misses is unreadable.
            let _ = std::fs::remove_file(self.dir.raft_dek_file());
            let _ = std::fs::remove_dir_all(self.dir.raft_dir());
        } else {
            self.renew().await?;
            self.start_manager(ManagerStart::Join).await?;
        }
        Ok(())
    }

    /// Starts this node's manager: Raft, the manager port, and (per `how`)
    /// bootstrap or joining.
    pub async fn start_manager(self: &Arc<Self>, how: ManagerStart) -> anyhow::Result<()> {
        let mut role = self.manager_role.lock().await;
        if role.is_some() {
            return Ok(());
        }
        let state = self.state();
        let raft_id = raft_id_of(&state.node_id).context("node id is malformed")?;
        let manager = Manager::start(ManagerConfig {
            raft_id,
            advertise: state.advertise.clone(),
            data_dir: &self.dir.raft_dir(),
            tls: self.client_tls.clone(),
            at_rest: raft_at_rest(&self.dir),
            event_history: self.runtime.event_history,
        })
        .await?;
        // Services' images are pinned to digests by this node's image store,
        // which knows the registries the daemon may use over plain HTTP.
        manager.set_image_pinner(Arc::new(super::image_pinning::StorePinner { images: self.runtime.tasks.images.clone() }));
        shoal_manager::leader::spawn_leader_loops(manager.clone());
        let listener = tokio::net::TcpListener::bind(&state.listen)
            .await
            .with_context(|| format!("cannot listen on {}", state.listen))?;
        let (stop_server, stopped) = oneshot::channel::<()>();
        let mut incoming = self.server_tls.incoming(listener);
        // Raft between managers leaves gRPC at the handshake (its own ALPN).
        shoal_manager::api::raft_frames::spawn_raft_connection_server(manager.clone(), &mut incoming);
        let router = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(1)))
            .http2_keepalive_timeout(Some(Duration::from_secs(2)))
            .add_service(pb::raft_server::RaftServer::new(RaftService::new(manager.clone())))
            .add_service(pb::ca_server::CaServer::new(CaService::new(manager.clone())))
            .add_service(pb::dispatcher_server::DispatcherServer::new(DispatcherService::new(manager.clone())))
            .add_service(pb::control_server::ControlServer::new(ControlService::new(
                ManagerSlot::with(manager.clone()),
                Transport::Tls,
            )))
            // The node's own containers, for a remote administrator only: a
            // node certificate (manager or worker) does not reach them.
            .add_service(pb::runtime_server::RuntimeServer::with_interceptor(self.runtime.runtime_api.clone(), {
                let manager = manager.clone();
                move |request: tonic::Request<()>| {
                    shoal_manager::api::auth::authorize(Transport::Tls, &request, &manager, &[shoal_proto::identity::Role::Client])?;
                    Ok(request)
                }
            }));
        let server = tokio::spawn(async move {
            if let Err(e) = router.serve_with_incoming_shutdown(incoming, async { let _ = stopped.await; }).await {
                tracing::error!(error = %e, "manager server stopped");
            }
        });
        match how {
            ManagerStart::Bootstrap(txn) => {
                manager.bootstrap().await?;
                manager.write(txn).await?;
            }
            ManagerStart::Join => self.join_raft(&manager, &state).await?,
            ManagerStart::Resume => {}
        }
        self.slot.set(Some(manager.clone()));
        // Autolock: a new swarm's (or a resumed manager's) key files are
        // protected before this returns; later changes follow the store.
        if let Err(e) = super::autolock::apply_autolock(self, &manager) {
            tracing::error!(error = %format!("{e:#}"), "cannot apply the swarm's autolock setting to this manager's key files");
        }
        self.spawn(super::autolock::keep_keys_protected(Arc::downgrade(self), manager.clone()));
        *role = Some(ManagerRole { manager, server, stop_server });
        self.update_state(|s| s.role = "manager".into());
        Ok(())
    }

    /// Asks the swarm (any manager; it relays to the leader) to add us to Raft.
    async fn join_raft(&self, manager: &Manager, state: &SwarmState) -> anyhow::Result<()> {
        let managers: Vec<String> =
            self.managers.lock().unwrap_or_else(|p| p.into_inner()).iter().filter(|m| **m != state.advertise).cloned().collect();
        let mut last_error = String::from("no other manager is known");
        let attempts = 3 * managers.len();
        let mut dialer = ManagerDialer::new(self.client_tls.clone(), Arc::new(Mutex::new(managers)), Duration::from_secs(3));
        for _ in 0..attempts {
            let (addr, channel) = match dialer.connect().await {
                Ok(connected) => connected,
                Err(error) => {
                    last_error = error;
                    continue;
                }
            };
            let request = pb::JoinRaftRequest { node_id: state.node_id.clone(), addr: state.advertise.clone() };
            match tokio::time::timeout(Duration::from_secs(30), pb::raft_client::RaftClient::new(channel).join_raft(request)).await {
                Ok(Ok(_)) => {
                    // Wait until our own Raft knows it is a voter.
                    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
                    while !manager.voters().contains(&manager.raft_id) && tokio::time::Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    return Ok(());
                }
                Ok(Err(status)) => last_error = format!("{addr}: {}", status.message()),
                Err(_) => last_error = format!("{addr}: timed out"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        anyhow::bail!("could not join the managers' Raft group: {last_error}")
    }

    pub async fn stop_manager(&self) {
        self.stop_manager_keep_role().await;
        self.update_state(|s| s.role = "worker".into());
    }

    /// Gets a fresh certificate for the role the swarm wants, and makes
    /// every new connection use it. No restart needed.
    async fn renew(&self) -> anyhow::Result<()> {
        let state = self.state();
        let managers = self.managers.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let renewed = renew_certificate(&state.node_id, &self.client_tls, &managers, &state.advertise)
            .await
            .map_err(anyhow::Error::msg)?;
        self.client_tls.update(&renewed.credentials)?;
        self.server_tls.update(&renewed.credentials)?;
        self.dir.save_credentials(&renewed.credentials)?;
        *self.credentials.lock().unwrap_or_else(|p| p.into_inner()) = renewed.credentials;
        self.update_state(|s| {
            s.cert_issued_at_ms = now_ms();
            if !renewed.managers.is_empty() {
                s.managers = renewed.managers.clone();
            }
        });
        tracing::info!(role = %renewed.role, "node certificate renewed");
        Ok(())
    }

    /// Renews the certificate at half its lifetime.
    async fn renewal_loop(self: Arc<Self>) {
        loop {
            let due_in = {
                let cert_pem = self.credentials.lock().unwrap_or_else(|p| p.into_inner()).cert_pem.clone();
                let issued = self.state().cert_issued_at_ms;
                match identity_from_pem(&cert_pem) {
                    Ok(identity) => {
                        let expires = identity
                            .not_after
                            .duration_since(std::time::UNIX_EPOCH)
                            .map(|d| d.as_millis() as u64)
                            .unwrap_or(0);
                        let half_life = expires.saturating_sub(issued) / 2;
                        Duration::from_millis((issued + half_life).saturating_sub(now_ms()))
                    }
                    Err(_) => Duration::ZERO,
                }
            };
            // Wake at least every minute: clocks jump and state changes.
            tokio::time::sleep(due_in.min(Duration::from_secs(60))).await;
            if due_in > Duration::from_secs(60) {
                continue;
            }
            if let Err(e) = self.renew().await {
                tracing::warn!(error = %e, "certificate renewal failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }

    /// Leaves: stops everything this node runs, the swarm's task
    /// containers included (nothing would look after them any more).
    pub async fn shutdown(&self) {
        self.stop_executor().await;
        remove_all_task_containers(&self.runtime.tasks.containers).await;
        remove_all_task_files(&self.runtime.tasks.task_files).await;
        shoal_agent::overlay::leave(self.runtime.tasks.networks.as_ref()).await;
        self.runtime.swarm_attachments.set(None);
        self.stop_keeping_containers().await;
    }

    /// Stops everything this node runs but its task containers, which the
    /// next daemon start adopts (daemon exit).
    pub async fn stop_keeping_containers(&self) {
        self.stop_executor().await;
        for task in self.tasks.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            task.abort();
        }
        self.stop_manager_keep_role().await;
    }

    /// The secrets and configs the executor holds for this node's tasks
    /// (kind and id; never values).
    pub fn files_held(&self) -> Vec<pb::FileKey> {
        self.executor.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(Executor::files_held).unwrap_or_default()
    }

    async fn stop_executor(&self) {
        let executor = self.executor.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(executor) = executor {
            executor.stop().await;
        }
    }

    /// Stops the manager without recording a role change (daemon exit or leave).
    async fn stop_manager_keep_role(&self) {
        let role = self.manager_role.lock().await.take();
        self.slot.set(None);
        if let Some(role) = role {
            let _ = role.stop_server.send(());
            role.manager.shutdown().await;
            // Graceful shutdown waits for open connections; do not let a
            // lingering client keep the port bound.
            let mut server = role.server;
            if tokio::time::timeout(Duration::from_secs(2), &mut server).await.is_err() {
                server.abort();
                let _ = server.await;
            }
        }
    }

    pub fn dir(&self) -> &SwarmDir {
        &self.dir
    }
}
