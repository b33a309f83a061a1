//! Forming the swarm by running the `shoal` CLI against each host's daemon,
//! exactly as a person would.

use std::net::SocketAddrV4;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use futures::future::try_join_all;

use super::daemon;
use super::plan::{Role, SWARM_PORT};
use super::state::{ClusterState, HostState};

const CLI_TIMEOUT: Duration = Duration::from_secs(30);

/// `swarm init` on the first manager, then every other host joins it:
/// managers one at a time (each join changes the Raft membership), workers
/// all at once.
pub async fn form(shoal_exe: &Path, state: &ClusterState, init_args: &[String]) -> anyhow::Result<()> {
    let Some(first) = state.hosts.iter().find(|h| h.role == Role::Manager) else {
        bail!(
            "dev cluster {:?} has no manager to initialise the swarm on",
            state.name
        );
    };
    let advertise = first.address.to_string();
    let mut init = vec!["swarm", "init", "--advertise-addr", &advertise];
    init.extend(init_args.iter().map(String::as_str));
    shoal(shoal_exe, first, &init).await?;
    let remote = SocketAddrV4::new(first.address, SWARM_PORT);

    let others = || state.hosts.iter().filter(|h| h.name != first.name);
    if others().any(|h| h.role == Role::Manager) {
        let token = join_token(shoal_exe, first, Role::Manager).await?;
        for manager in others().filter(|h| h.role == Role::Manager) {
            join(shoal_exe, manager, &token, remote).await?;
        }
    }
    if others().any(|h| h.role == Role::Worker) {
        let token = join_token(shoal_exe, first, Role::Worker).await?;
        try_join_all(
            others()
                .filter(|h| h.role == Role::Worker)
                .map(|w| join(shoal_exe, w, &token, remote)),
        )
        .await?;
    }
    wait_until_ready(shoal_exe, first, state.hosts.len()).await
}

/// How long `up` waits for every node's first heartbeat to land.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Returns once `manager` reports `count` nodes, all ready and every
/// manager reachable, so `up` hands over a cluster that is fully formed.
async fn wait_until_ready(shoal_exe: &Path, manager: &HostState, count: usize) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    let mut last = String::new();
    loop {
        if let Ok(out) = shoal(shoal_exe, manager, &["node", "ls", "--format", "json"]).await {
            let nodes: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap_or_default();
            let ready = nodes.len() == count
                && nodes.iter().all(|n| {
                    n["status"] == "ready" && n["manager_status"] != "unreachable"
                });
            if ready {
                return Ok(());
            }
            last = out;
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "the swarm formed but not every node was ready within {}s; last `node ls`: {}",
                READY_TIMEOUT.as_secs(),
                last.trim()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Joins a host added to a running cluster through the first manager that
/// hands out a token (some may be stopped by a failure test).
pub async fn join_later(
    shoal_exe: &Path,
    state: &ClusterState,
    host: &HostState,
) -> anyhow::Result<()> {
    let mut last_error = None;
    for manager in state
        .hosts
        .iter()
        .filter(|h| h.role == Role::Manager && h.name != host.name)
    {
        if !daemon::is_running(manager) {
            continue;
        }
        match join_token(shoal_exe, manager, host.role).await {
            Ok(token) => {
                return join(
                    shoal_exe,
                    host,
                    &token,
                    SocketAddrV4::new(manager.address, SWARM_PORT),
                )
                .await
            }
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or_else(|| {
        anyhow!(
            "no manager of dev cluster {:?} is running, so {} cannot join",
            state.name,
            host.name
        )
    }))
}

pub(super) async fn join_token(shoal_exe: &Path, manager: &HostState, role: Role) -> anyhow::Result<String> {
    let token = shoal(
        shoal_exe,
        manager,
        &["swarm", "join-token", "-q", role.as_str()],
    )
    .await?;
    let token = token.trim();
    if token.is_empty() {
        bail!(
            "`swarm join-token -q {role}` on {} printed no token",
            manager.name
        );
    }
    Ok(token.to_string())
}

async fn join(
    shoal_exe: &Path,
    host: &HostState,
    token: &str,
    remote: SocketAddrV4,
) -> anyhow::Result<()> {
    let advertise = host.address.to_string();
    let remote = remote.to_string();
    shoal(
        shoal_exe,
        host,
        &[
            "swarm",
            "join",
            "--token",
            token,
            "--advertise-addr",
            &advertise,
            &remote,
        ],
    )
    .await
    .map(drop)
}

/// Runs `shoal -H <host's socket> ARGS` with a timeout; returns its stdout,
/// or an error carrying its stderr.
async fn shoal(shoal_exe: &Path, host: &HostState, args: &[&str]) -> anyhow::Result<String> {
    let shown = format!("shoal -H {} {}", host.host_uri(), args.join(" "));
    let output = tokio::process::Command::new(shoal_exe)
        .arg("-H")
        .arg(host.host_uri())
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(CLI_TIMEOUT, output)
        .await
        .map_err(|_| {
            anyhow!(
                "`{shown}` did not finish within {} s",
                CLI_TIMEOUT.as_secs()
            )
        })?
        .with_context(|| format!("could not run `{shown}`"))?;
    if !output.status.success() {
        bail!(
            "`{shown}` failed on {} ({}): {}",
            host.name,
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
