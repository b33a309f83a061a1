//! `down`: removes a cluster completely — processes, mounts, links, host
//! and switch namespaces, files and its subnet reservation — whether its
//! state file is intact, corrupt or missing, and whichever step of `up` it
//! died in.

use std::collections::BTreeMap;
use std::fs;
use std::io::ErrorKind;

use anyhow::Context;
use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;

use super::daemon::{self, STOP_GRACE};
use super::plan::{self, parse_host_name};
use super::process::{self, Stop};
use super::state::{ClusterState, HostState};
use super::{cgroups, mounts, registry, underlay};

/// Removes cluster `name`; returns whether there was anything to remove.
/// Running it again, or on a name that never existed, is fine.
///
/// A failing step does not stop the later ones: everything that can go,
/// goes, and the first failure is reported at the end.
pub async fn down(name: &str) -> anyhow::Result<bool> {
    plan::validate_cluster_name(name)?;
    let state = ClusterState::load(name).ok();
    let hosts = known_hosts(name, state.as_ref())?;
    let mut indices = registry::lookup(name)?;
    indices.extend(state.as_ref().map(|s| s.index));
    let dir = plan::cluster_dir(name);
    let netns = underlay::netns_dir();
    let switch = plan::switch_netns_name(name);
    let found = state.is_some()
        || !hosts.is_empty()
        || !indices.is_empty()
        || dir.exists()
        || netns.exists(&switch);
    let mut failures = Failures::default();

    let daemons: Vec<_> = hosts.iter().filter_map(daemon::tracked).collect();
    failures.note(process::stop_all(&daemons, Stop::Graceful, STOP_GRACE).await);
    // Whatever the daemons left running in their namespaces keeps the
    // namespaces (and mounts) alive, so it goes before them.
    for host in &hosts {
        if let Ok(inode) = netns.inode(&host.netns) {
            failures.note(process::kill_netns_members(inode).await);
        }
        failures.note(cgroups::remove_tree(&host.netns).await);
    }
    failures.note(mounts::unmount_below(&dir));
    failures.note(underlay::delete_links(&indices).await);
    for host in &hosts {
        failures.note(netns.delete(&host.netns).map_err(Into::into));
    }
    // The switch's bridge and veths, and so the hosts' eth0 and the
    // uplink, go with its namespace.
    failures.note(netns.delete(&switch).map_err(Into::into));
    match fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != ErrorKind::NotFound => {
            failures.note(Err(e).with_context(|| format!("could not remove {}", dir.display())))
        }
        _ => {}
    }
    // Last, so no other cluster takes the subnet while our links still exist.
    failures.note(registry::release(name));
    failures.into_result().map(|()| found)
}

/// The first failure of a run of independent cleanup steps.
#[derive(Default)]
struct Failures(Option<anyhow::Error>);

impl Failures {
    fn note(&mut self, result: anyhow::Result<()>) {
        if let Err(e) = result {
            self.0.get_or_insert(e);
        }
    }

    fn into_result(self) -> anyhow::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}

/// Removes clusters whose owner process (a test that was killed before it
/// could clean up) is gone, so abandoned clusters do not pile up.
pub async fn reap_abandoned(except: &str) -> anyhow::Result<()> {
    for (_, owner) in registry::entries()? {
        // An empty owner is a reservation being written by a concurrent `up`.
        if owner.is_empty() || owner == except || plan::validate_cluster_name(&owner).is_err() {
            continue;
        }
        let Ok(state) = ClusterState::load(&owner) else {
            continue;
        };
        let Some(owner_pid) = state.owner_pid else {
            continue;
        };
        if kill(Pid::from_raw(owner_pid as i32), None) == Err(Errno::ESRCH) {
            eprintln!(
                "removing dev cluster {owner:?}: process {owner_pid} that created it is gone"
            );
            down(&owner).await?;
        }
    }
    Ok(())
}

/// Hosts from the state file, plus any the state does not know (it is
/// missing, corrupt, or `up` died before writing it), found by their
/// namespaces and directories.
fn known_hosts(name: &str, state: Option<&ClusterState>) -> anyhow::Result<Vec<HostState>> {
    let mut hosts: BTreeMap<String, HostState> = BTreeMap::new();
    for host in state.map(|s| s.hosts.as_slice()).unwrap_or_default() {
        hosts.insert(host.name.clone(), host.clone());
    }
    let mut found_names: Vec<String> = underlay::netns_dir()
        .list()?
        .iter()
        .filter_map(|ns| plan::host_of_netns(name, ns).map(str::to_string))
        .collect();
    if let Ok(listing) = fs::read_dir(plan::cluster_dir(name)) {
        found_names.extend(
            listing
                .flatten()
                .filter_map(|entry| entry.file_name().to_str().map(str::to_string)),
        );
    }
    for host_name in found_names {
        if hosts.contains_key(&host_name) {
            continue;
        }
        if let Some((role, ordinal)) = parse_host_name(&host_name) {
            // Index and number only shape the address and veth name, which
            // teardown takes from the subnet registry instead.
            hosts.insert(host_name, HostState::new(name, 0, role, ordinal, 0));
        }
    }
    Ok(hosts.into_values().collect())
}
