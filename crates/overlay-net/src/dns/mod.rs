//! The node's embedded DNS: every container sandbox on a bridge or
//! overlay network resolves through it at 127.0.0.11:53 (UDP and TCP),
//! named in the container's /etc/resolv.conf.
//!
//! The data plane owns one [`DnsService`]: it feeds it the managers'
//! directory, the node's networks and its bridge networks' named
//! containers, and starts and stops a sandbox's server with the sandbox
//! ([`DnsService::serve`], [`DnsService::stop`]). Callers that create
//! containers ask for the sandbox's resolv.conf ([`DnsService::configure`])
//! and bind-mount it read-only at /etc/resolv.conf.
//!
//! Swarm names are answered from the node's copy of what the managers
//! pushed ([`names`]), rebuilt whenever it changes, so an answer is never
//! older than the last push; nothing else is cached. Other names go to
//! upstream servers ([`upstream`]).
//!
//! Per sandbox, under the data plane's state directory, `dns/<sandbox>/`
//! holds `resolv.conf` and `settings.json` (its `--dns*`), so a restarted
//! daemon serves adopted sandboxes as before.

pub mod names;
pub mod resolv_conf;
pub mod server;
mod udp_batch;
pub mod upstream;

#[cfg(test)]
mod names_tests;
#[cfg(test)]
mod upstream_tests;

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use crate::directory::{ContainerEntry, Directory};
use crate::error::{NetError, Result};
pub use names::{Answer, NetworkInfo, Names};
pub use resolv_conf::DnsSettings;
use server::{SandboxServer, Scope};
use upstream::Forwarder;

/// Where a container finds its resolver configuration.
pub const CONTAINER_RESOLV_CONF: &str = "/etc/resolv.conf";
const RESOLV_CONF: &str = "resolv.conf";
const SETTINGS: &str = "settings.json";

/// What the answers are built from, kept to rebuild them when one part
/// changes.
#[derive(Default)]
struct Inputs {
    directory: Directory,
    local: Vec<ContainerEntry>,
    networks: Vec<NetworkInfo>,
}

/// State every sandbox's server reads.
pub struct Shared {
    names: RwLock<Arc<Names>>,
    inputs: Mutex<Inputs>,
    host_upstreams: RwLock<Arc<Vec<SocketAddr>>>,
    forwarder: Forwarder,
}

impl Shared {
    fn names(&self) -> Arc<Names> {
        self.names.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn host_upstreams(&self) -> Arc<Vec<SocketAddr>> {
        self.host_upstreams.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn update(&self, change: impl FnOnce(&mut Inputs)) {
        let mut inputs = self.inputs.lock().unwrap_or_else(|p| p.into_inner());
        change(&mut inputs);
        let names = Names::build(&inputs.directory, &inputs.local, &inputs.networks);
        *self.names.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(names);
    }
}

pub struct DnsService {
    shared: Arc<Shared>,
    /// `dns/` under the data plane's state directory.
    dir: PathBuf,
    /// The node's resolv.conf, read again whenever a sandbox is configured.
    host_resolv_conf: PathBuf,
    loopback_upstreams: bool,
    servers: tokio::sync::Mutex<HashMap<String, SandboxServer>>,
}

impl DnsService {
    /// Keeps sandbox files under `dir`; upstreams for containers without
    /// `--dns` come from `host_resolv_conf` (the node's /etc/resolv.conf).
    pub fn new(dir: PathBuf, host_resolv_conf: PathBuf) -> DnsService {
        let service = DnsService {
            shared: Arc::new(Shared {
                names: RwLock::new(Arc::new(Names::default())),
                inputs: Mutex::new(Inputs::default()),
                host_upstreams: RwLock::new(Arc::new(Vec::new())),
                forwarder: Forwarder::default(),
            }),
            dir,
            host_resolv_conf,
            loopback_upstreams: resolv_conf::in_initial_netns(),
            servers: tokio::sync::Mutex::new(HashMap::new()),
        };
        service.reload_host_upstreams();
        service
    }

    /// The managers' latest directory: answers change with this call.
    pub fn set_directory(&self, directory: &Directory) {
        self.shared.update(|inputs| inputs.directory = directory.clone());
    }

    /// The named containers of this node's bridge networks.
    pub fn set_local_containers(&self, containers: Vec<ContainerEntry>) {
        self.shared.update(|inputs| inputs.local = containers);
    }

    /// The networks this node serves (overlay and bridge).
    pub fn set_networks(&self, networks: Vec<NetworkInfo>) {
        self.shared.update(|inputs| inputs.networks = networks);
    }

    /// The answers as they stand, for tests and benchmarks.
    pub fn names(&self) -> Arc<Names> {
        self.shared.names()
    }

    fn reload_host_upstreams(&self) {
        let upstreams = match std::fs::read_to_string(&self.host_resolv_conf) {
            Ok(text) => resolv_conf::host_upstreams(&text, self.loopback_upstreams),
            Err(error) => {
                tracing::warn!(path = %self.host_resolv_conf.display(), %error, "cannot read the node's resolv.conf; names outside the swarm will not resolve");
                Vec::new()
            }
        };
        let mut current = self.shared.host_upstreams.write().unwrap_or_else(|p| p.into_inner());
        if **current != upstreams {
            tracing::info!(?upstreams, "upstream DNS servers of the node");
            *current = Arc::new(upstreams);
        }
    }

    fn sandbox_dir(&self, sandbox_id: &str) -> Result<PathBuf> {
        crate::sandbox::validate_sandbox_id(sandbox_id)?;
        Ok(self.dir.join(sandbox_id))
    }

    /// Records sandbox `sandbox_id`'s `--dns*` and writes its resolv.conf;
    /// returns the file's path, for the container to bind-mount read-only
    /// at /etc/resolv.conf. Calling it again with the same settings leaves
    /// the file as it is (a running container keeps seeing it).
    pub async fn configure(&self, sandbox_id: &str, settings: &DnsSettings) -> Result<PathBuf> {
        self.reload_host_upstreams();
        let dir = self.sandbox_dir(sandbox_id)?;
        std::fs::create_dir_all(&dir).map_err(|source| NetError::Io { action: "create", path: dir.clone(), source })?;
        let json = serde_json::to_string_pretty(settings).map_err(|e| NetError::Io {
            action: "encode the DNS settings for",
            path: dir.join(SETTINGS),
            source: std::io::Error::other(e),
        })?;
        write_if_changed(&dir.join(SETTINGS), &json)?;
        let resolv_conf = dir.join(RESOLV_CONF);
        write_if_changed(&resolv_conf, &resolv_conf::render(settings))?;
        if let Some(server) = self.servers.lock().await.get(sandbox_id) {
            server.scope.set_upstreams(settings.upstreams());
        }
        Ok(resolv_conf)
    }

    /// Serves sandbox `sandbox_id` (its namespace at `netns`) for names on
    /// `networks`, in attachment order: opens its sockets the first time,
    /// and after a restart or a new namespace under the same id; otherwise
    /// only updates the networks.
    pub async fn serve(&self, sandbox_id: &str, netns: &Path, networks: Vec<String>) -> Result<()> {
        let dir = self.sandbox_dir(sandbox_id)?;
        let inode = crate::netns::inode_of_path(netns)?;
        let mut servers = self.servers.lock().await;
        if let Some(server) = servers.get(sandbox_id).filter(|s| s.netns_inode == inode) {
            server.scope.set_networks(networks);
            return Ok(());
        }
        let scope = Arc::new(Scope::default());
        scope.set_networks(networks);
        scope.set_upstreams(load_settings(&dir).and_then(|s| s.upstreams()));
        let server = server::start(self.shared.clone(), scope, netns).await?;
        tracing::debug!(sandbox = sandbox_id, "embedded DNS serving");
        servers.insert(sandbox_id.to_string(), server);
        Ok(())
    }

    /// Stops serving sandbox `sandbox_id` (its sockets close) and removes
    /// its files; missing is fine.
    pub async fn stop(&self, sandbox_id: &str) -> Result<()> {
        let dir = self.sandbox_dir(sandbox_id)?;
        self.servers.lock().await.remove(sandbox_id);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(source) => Err(NetError::Io { action: "remove", path: dir, source }),
        }
    }

    /// The sandboxes served now.
    pub async fn served(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.servers.lock().await.keys().cloned().collect();
        ids.sort();
        ids
    }
}

fn load_settings(dir: &Path) -> Option<DnsSettings> {
    let text = std::fs::read_to_string(dir.join(SETTINGS)).ok()?;
    match serde_json::from_str(&text) {
        Ok(settings) => Some(settings),
        Err(error) => {
            tracing::warn!(path = %dir.join(SETTINGS).display(), %error, "ignoring unreadable DNS settings; the node's upstreams apply");
            None
        }
    }
}

/// Writes `content` in place (the file may be bind-mounted into a
/// container, which keeps the inode) unless it is there already.
fn write_if_changed(path: &Path, content: &str) -> Result<()> {
    if std::fs::read_to_string(path).is_ok_and(|current| current == content) {
        return Ok(());
    }
    std::fs::write(path, content).map_err(|source| NetError::Io { action: "write", path: path.to_path_buf(), source })
}
