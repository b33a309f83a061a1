//! The cluster state file (`/run/shoal-dev/<name>/cluster.json`): what was
//! created, so every subcommand and the tests can find hosts, sockets and pids.

use std::fs;
use std::io::ErrorKind;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use super::plan::{self, Role, MAX_HOSTS};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClusterState {
    pub name: String,
    /// Subnet index: hosts are 198.18.<index>.<number>/24.
    pub index: u8,
    pub bridge: String,
    pub bridge_address: Ipv4Addr,
    /// Hosts without daemons: only namespaces and links (plumbing checks).
    pub network_only: bool,
    /// Daemons that form no swarm (`up --no-swarm`): standalone nodes.
    #[serde(default)]
    pub no_swarm: bool,
    /// Process that asked for this cluster (the test harness); once it is
    /// gone, the next `up` may remove the cluster as abandoned.
    pub owner_pid: Option<u32>,
    pub hosts: Vec<HostState>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HostState {
    pub name: String,
    pub role: Role,
    /// 1-based, managers first: the last octet of the address.
    pub number: u8,
    pub address: Ipv4Addr,
    pub netns: String,
    pub veth: String,
    pub socket: PathBuf,
    pub data_root: PathBuf,
    pub log: PathBuf,
    pub pid: Option<u32>,
}

impl HostState {
    pub fn new(cluster: &str, index: u8, role: Role, ordinal: u32, number: u8) -> Self {
        let name = plan::host_name(role, ordinal);
        let dir = plan::host_dir(cluster, &name);
        HostState {
            netns: plan::netns_name(cluster, &name),
            veth: plan::veth_name(index, number),
            address: plan::host_address(index, number),
            socket: dir.join("shoal.sock"),
            data_root: dir.join("data"),
            log: dir.join("daemon.log"),
            pid: None,
            name,
            role,
            number,
        }
    }

    /// `-H` value that reaches this host's daemon.
    pub fn host_uri(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    pub fn dir(&self) -> &Path {
        // Every per-host file sits directly in the host directory.
        self.socket.parent().unwrap_or(Path::new("/"))
    }

    pub fn pid_file(&self) -> PathBuf {
        self.dir().join("daemon.pid")
    }
}

impl ClusterState {
    pub fn new(name: &str, index: u8, network_only: bool, owner_pid: Option<u32>) -> Self {
        ClusterState {
            name: name.to_string(),
            index,
            bridge: plan::bridge_name(index),
            bridge_address: plan::bridge_address(index),
            network_only,
            no_swarm: false,
            owner_pid,
            hosts: Vec::new(),
        }
    }

    /// Loads the state of an existing cluster; the error tells how to create one.
    pub fn load(name: &str) -> anyhow::Result<Self> {
        let path = plan::state_file(name);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == ErrorKind::NotFound => bail!(
                "no dev cluster named {name:?} exists; create it with `shoal dev-cluster up --name {name}`"
            ),
            Err(e) => return Err(e).with_context(|| format!("could not read {}", path.display())),
        };
        serde_json::from_str(&text).with_context(|| {
            format!(
                "state file {} is corrupt; remove the cluster with `shoal dev-cluster down --name {name}`",
                path.display()
            )
        })
    }

    /// Writes via a temporary file and rename so readers never see half a file.
    pub fn save(&self) -> anyhow::Result<()> {
        let path = plan::state_file(&self.name);
        let tmp = path.with_extension("json.tmp");
        let text =
            serde_json::to_string_pretty(self).context("could not serialise the cluster state")?;
        fs::write(&tmp, text).with_context(|| format!("could not write {}", tmp.display()))?;
        fs::rename(&tmp, &path).with_context(|| format!("could not replace {}", path.display()))
    }

    pub fn host(&self, host: &str) -> anyhow::Result<&HostState> {
        match self.hosts.iter().find(|h| h.name == host) {
            Some(found) => Ok(found),
            None => bail!(
                "dev cluster {:?} has no host named {host:?} (hosts: {})",
                self.name,
                self.hosts
                    .iter()
                    .map(|h| h.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    pub fn host_mut(&mut self, host: &str) -> anyhow::Result<&mut HostState> {
        self.host(host)?;
        self.hosts
            .iter_mut()
            .find(|h| h.name == host)
            .context("host vanished from the cluster state")
    }

    /// The next host of `role`: next ordinal of that role, next free number.
    pub fn next_host(&self, role: Role) -> anyhow::Result<HostState> {
        let count = self.hosts.len() as u32;
        if count >= MAX_HOSTS {
            bail!(
                "dev cluster {:?} already has {MAX_HOSTS} hosts, the most one /24 subnet holds",
                self.name
            );
        }
        let ordinal = self.hosts.iter().filter(|h| h.role == role).count() as u32 + 1;
        let number = self.hosts.iter().map(|h| h.number).max().unwrap_or(0) + 1;
        Ok(HostState::new(
            &self.name, self.index, role, ordinal, number,
        ))
    }
}
