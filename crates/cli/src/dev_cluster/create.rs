//! `up` and `add`: building hosts (namespace, veth, daemon) and joining them
//! to the swarm.

use std::fs;
use std::path::Path;

use anyhow::{bail, Context};
use futures::future::try_join_all;

use super::plan::{self, Role, MAX_HOSTS};
use super::state::{ClusterState, HostState};
use super::{daemon, registry, swarm, teardown, underlay};

pub struct UpOptions {
    pub name: String,
    pub managers: u32,
    pub workers: u32,
    /// Namespaces and links only, no daemons and no swarm.
    pub network_only: bool,
    /// Daemons, but no swarm formed.
    pub no_swarm: bool,
    /// See [`ClusterState::owner_pid`].
    pub owner_pid: Option<u32>,
    /// More arguments for `swarm init` (the simulator's `--dispatcher-heartbeat`).
    pub init_args: Vec<String>,
}

/// Creates cluster `options.name` from scratch, replacing any previous one of
/// that name, and leaves it running.
pub async fn up(shoal_exe: &Path, options: &UpOptions) -> anyhow::Result<ClusterState> {
    let name = options.name.as_str();
    plan::validate_cluster_name(name)?;
    if options.managers < 1 {
        bail!(
            "--managers {} is invalid: a cluster needs at least one manager",
            options.managers
        );
    }
    let total = options.managers.saturating_add(options.workers);
    if total > MAX_HOSTS {
        bail!(
            "{total} hosts requested, but a dev cluster holds at most {MAX_HOSTS} (one /24 subnet)"
        );
    }

    teardown::reap_abandoned(name).await?;
    if teardown::down(name).await? {
        eprintln!("removed the previous dev cluster {name:?}");
    }

    let index = registry::reserve(name)?;
    let mut state = ClusterState::new(name, index, options.network_only, options.owner_pid);
    state.no_swarm = options.no_swarm;
    let roles = (0..options.managers)
        .map(|_| Role::Manager)
        .chain((0..options.workers).map(|_| Role::Worker));
    for role in roles {
        let host = state.next_host(role)?;
        state.hosts.push(host);
    }
    let dir = plan::cluster_dir(name);
    fs::create_dir_all(&dir).with_context(|| format!("could not create {}", dir.display()))?;
    // Written before anything else exists, so `down` finds everything even
    // if we die half-way.
    state.save()?;

    // Links of this subnet here can only be leftovers of a cluster that
    // lost its reservation; they would make the uplink's name collide.
    underlay::delete_links(&[index]).await?;
    underlay::create_switch(&state).await?;
    for host in &state.hosts {
        create_host_network(&state, host).await?;
    }
    if options.network_only {
        return Ok(state);
    }

    eprintln!("starting the daemons of {} hosts", state.hosts.len());
    let pids = try_join_all(
        state
            .hosts
            .iter()
            .map(|host| daemon::start(shoal_exe, host)),
    )
    .await;
    let pids = pids.with_context(|| {
        format!(
            "dev cluster {name:?} is half-made; `shoal dev-cluster down --name {name}` removes it"
        )
    })?;
    for (host, pid) in state.hosts.iter_mut().zip(pids) {
        host.pid = Some(pid);
    }
    state.save()?;
    if options.no_swarm {
        return Ok(state);
    }

    eprintln!("forming the swarm");
    swarm::form(shoal_exe, &state, &options.init_args).await.with_context(|| {
        format!(
            "dev cluster {name:?} could not form a swarm; daemon logs are in {}",
            dir.display()
        )
    })?;
    Ok(state)
}

/// Adds one host of `role` to running cluster `name` and joins it.
pub async fn add(shoal_exe: &Path, name: &str, role: Role) -> anyhow::Result<HostState> {
    plan::validate_cluster_name(name)?;
    let mut state = ClusterState::load(name)?;
    let mut host = state.next_host(role)?;
    state.hosts.push(host.clone());
    state.save()?;
    create_host_network(&state, &host).await?;
    if state.network_only {
        return Ok(host);
    }
    let pid = daemon::start(shoal_exe, &host).await?;
    host.pid = Some(pid);
    state.host_mut(&host.name)?.pid = Some(pid);
    state.save()?;
    if !state.no_swarm {
        swarm::join_later(shoal_exe, &state, &host).await?;
    }
    Ok(host)
}

/// The namespace of `host`, its veth to the switch, its address, and its directory.
pub(super) async fn create_host_network(state: &ClusterState, host: &HostState) -> anyhow::Result<()> {
    fs::create_dir_all(host.dir())
        .with_context(|| format!("could not create {}", host.dir().display()))?;
    underlay::create_host(state, host).await
}
