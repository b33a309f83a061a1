//! Autolock on a node: the local API's `swarm update --autolock`,
//! `swarm unlock-key` and `swarm unlock`, and the loop that keeps a running
//! manager's key files (`raft-dek`, `node-key.pem`) protected the way the
//! swarm's cluster object says.
//!
//! Managers learn of autolock being turned on, off or rotated only through
//! the store: each one rewrites its own files when the cluster object's
//! unlock key changes, so a rotation needs no restart and no RPC fan-out.
//! A manager that is down (or locked) during a rotation keeps its files
//! sealed with the old key until it is unlocked with that old key and
//! catches up, as in Docker.

use std::sync::{Arc, Weak};
use std::time::Duration;

use shoal_manager::autolock::UnlockKey;
use shoal_manager::lock_beacon::LockBeacon;
use shoal_manager::raft::dek_file::DekFileError;
use shoal_manager::store::{Change, Object, Op, Transaction};
use shoal_manager::Manager;
use shoal_proto::pb;
use tokio::sync::broadcast::error::RecvError;
use tonic::Status;

use super::local_api::LocalApi;
use super::node::{ManagerStart, RunningNode};
use super::state::{SwarmDir, UnlockError};

/// How often the keeper looks again when the store is quiet: it also
/// notices this way that the manager stopped.
const RECHECK: Duration = Duration::from_secs(1);

/// Applies the cluster object's autolock setting to this manager's key
/// files once. `Ok(None)`: the store has no cluster object yet (a manager
/// still joining); `Ok(Some(changed))` otherwise.
pub fn apply_autolock(node: &RunningNode, manager: &Manager) -> anyhow::Result<Option<bool>> {
    let Some(desired) = manager
        .store
        .view(|s| s.cluster().map(|c| c.autolock_key.clone()))
    else {
        return Ok(None);
    };
    let changed = node
        .dir()
        .protect_keys(&node.credentials().key_pem, desired.as_ref())?;
    if changed {
        // Whether, never which key.
        tracing::info!(
            autolock = desired.is_some(),
            "this manager's key files now follow the swarm's autolock setting"
        );
    }
    Ok(Some(changed))
}

/// Runs while `manager` is this node's manager: re-applies the autolock
/// setting when the cluster object changes (and once a second, which also
/// retries a failure). Other changes are skipped without touching the key
/// files: reading them on every write cost the managers ~4% of their CPU
/// under write load.
pub async fn keep_keys_protected(node: Weak<RunningNode>, manager: Arc<Manager>) {
    let mut changes = manager.store.watch();
    let mut last_error = None;
    loop {
        {
            let Some(node) = node.upgrade() else { return };
            if !node
                .manager()
                .is_some_and(|current| Arc::ptr_eq(&current, &manager))
            {
                return;
            }
            match apply_autolock(&node, &manager) {
                Ok(_) => last_error = None,
                Err(e) => {
                    // Once per distinct failure, not once per store event.
                    let message = format!("{e:#}");
                    if last_error.as_ref() != Some(&message) {
                        tracing::error!(error = %message, "cannot apply the swarm's autolock setting to this manager's key files; retrying on the next change");
                        last_error = Some(message);
                    }
                }
            }
        }
        let recheck = tokio::time::sleep(RECHECK);
        tokio::pin!(recheck);
        loop {
            tokio::select! {
                changed = changes.recv() => match changed {
                    Ok(event) if !event.changes.iter().any(touches_cluster) => continue,
                    Ok(_) | Err(RecvError::Lagged(_)) => break,
                    Err(RecvError::Closed) => {
                        tokio::time::sleep(RECHECK).await;
                        break;
                    }
                },
                _ = &mut recheck => break,
            }
        }
    }
}

/// Whether a store change is to the cluster object, where the unlock key lives.
fn touches_cluster(change: &Change) -> bool {
    match change {
        Change::Created(object) | Change::Deleted(object) => matches!(object, Object::Cluster(_)),
        Change::Updated { old, new } => matches!(old, Object::Cluster(_)) || matches!(new, Object::Cluster(_)),
    }
}

/// The manager this node runs, for the autolock commands.
async fn local_manager(api: &LocalApi) -> Result<Arc<Manager>, Status> {
    let node = api.node.lock().await.clone();
    match node {
        None if SwarmDir::new(&api.data_root).is_locked() => Err(Status::failed_precondition(
            "this manager is locked; unlock it first with `shoal swarm unlock`",
        )),
        None => Err(Status::failed_precondition(
            "this node is not part of a swarm; use `shoal swarm init` or `shoal swarm join` first",
        )),
        Some(node) => node.manager().ok_or_else(|| {
            Status::failed_precondition(
                "this node is not a swarm manager; run the command on a manager node",
            )
        }),
    }
}

/// Writes `change` into the cluster object, if the cluster is still at the
/// version read (a concurrent update makes the caller retry).
async fn update_cluster(
    manager: &Manager,
    change: impl FnOnce(&mut shoal_manager::store::Cluster),
) -> Result<(), Status> {
    manager.read_barrier().await?;
    let mut cluster = manager
        .store
        .view(|s| s.cluster().cloned())
        .ok_or_else(|| Status::internal("the store has no cluster object"))?;
    let version = cluster.meta.version;
    change(&mut cluster);
    manager
        .write(Transaction::single(Op::Update {
            object: Object::Cluster(cluster),
            expected_version: Some(version),
        }))
        .await?;
    Ok(())
}

fn key_text(key: &UnlockKey) -> String {
    key.to_text().as_str().to_owned()
}

/// `swarm update --autolock=true|false`.
pub async fn swarm_update(
    api: &LocalApi,
    request: pb::SwarmUpdateRequest,
) -> Result<pb::SwarmUpdateResponse, Status> {
    let manager = local_manager(api).await?;
    let Some(autolock) = request.autolock else {
        return Ok(pb::SwarmUpdateResponse::default());
    };
    manager.read_barrier().await?;
    let enabled = manager
        .store
        .view(|s| s.cluster().is_some_and(|c| c.autolock_key.is_some()));
    if enabled == autolock {
        return Ok(pb::SwarmUpdateResponse::default());
    }
    let new_key = autolock.then(UnlockKey::generate);
    let stored = new_key.clone();
    update_cluster(&manager, move |cluster| cluster.autolock_key = stored).await?;
    tracing::info!(autolock, "swarm autolock setting changed");
    Ok(pb::SwarmUpdateResponse {
        unlock_key: new_key.as_ref().map(key_text).unwrap_or_default(),
    })
}

/// `swarm unlock-key [--rotate]`.
pub async fn unlock_key(
    api: &LocalApi,
    request: pb::UnlockKeyRequest,
) -> Result<pb::UnlockKeyResponse, Status> {
    let manager = local_manager(api).await?;
    manager.read_barrier().await?;
    let current = manager
        .store
        .view(|s| s.cluster().and_then(|c| c.autolock_key.clone()));
    let Some(current) = current else {
        return Err(Status::failed_precondition(
            "autolock is off for this swarm, so it has no unlock key; turn it on with `shoal swarm update --autolock=true`",
        ));
    };
    if !request.rotate {
        return Ok(pb::UnlockKeyResponse {
            unlock_key: key_text(&current),
        });
    }
    let new_key = UnlockKey::generate();
    let stored = new_key.clone();
    update_cluster(&manager, move |cluster| cluster.autolock_key = Some(stored)).await?;
    tracing::info!("swarm unlock key rotated");
    Ok(pb::UnlockKeyResponse {
        unlock_key: key_text(&new_key),
    })
}

/// `swarm unlock`: opens a locked manager's files with the key and starts
/// the node as after any restart.
pub async fn unlock(api: &LocalApi, request: pb::SwarmUnlockRequest) -> Result<(), Status> {
    let mut slot = api.node.lock().await;
    let dir = SwarmDir::new(&api.data_root);
    if slot.is_some() || !dir.is_locked() {
        return Err(Status::failed_precondition(
            UnlockError::NotLocked.to_string(),
        ));
    }
    let key = UnlockKey::parse(&request.unlock_key)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    let (state, credentials) = dir.unlock(key).map_err(|e| match e {
        UnlockError::NotLocked => Status::failed_precondition(e.to_string()),
        UnlockError::Key(DekFileError::WrongUnlockKey { .. }) => {
            Status::invalid_argument(e.to_string())
        }
        other => Status::internal(other.to_string()),
    })?;
    // The manager needs its port back.
    api.lock_beacon.lock().unwrap_or_else(|p| p.into_inner()).take();
    let started = RunningNode::start_in(
        dir,
        state,
        credentials,
        api.slot.clone(),
        Some(ManagerStart::Resume),
        api.removed.clone(),
        api.runtime.clone(),
    )
    .await;
    let node = match started {
        Ok(node) => node,
        Err(e) => {
            announce_if_locked(&api.data_root, &api.lock_beacon).await;
            return Err(Status::internal(format!("the key is right, but the manager did not start: {e:#}")));
        }
    };
    *slot = Some(node);
    tracing::info!("swarm unlocked");
    Ok(())
}

/// Where a locked manager keeps its [`LockBeacon`].
pub type BeaconSlot = Arc<std::sync::Mutex<Option<LockBeacon>>>;

/// Starts answering as a locked manager on the manager address, when this
/// node is one; a port that cannot be had only costs the others the
/// `locked` label (they show it unreachable).
pub async fn announce_if_locked(data_root: &std::path::Path, slot: &BeaconSlot) {
    let dir = SwarmDir::new(data_root);
    let Some(state) = dir.read_state().filter(|_| dir.is_locked()) else { return };
    let Ok(listen) = state.listen.parse::<std::net::SocketAddr>() else { return };
    match LockBeacon::serve(listen, state.node_id).await {
        Ok(beacon) => *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(beacon),
        Err(e) => tracing::warn!(%listen, error = %e, "cannot tell the other managers this one is locked"),
    }
}

/// What `shoal info` shows for a locked manager.
pub fn locked_info(api: &LocalApi) -> Option<pb::InfoResponse> {
    let dir = SwarmDir::new(&api.data_root);
    if !dir.is_locked() {
        return None;
    }
    let state = dir.read_state();
    Some(pb::InfoResponse {
        hostname: api.hostname.clone(),
        swarm_state: "locked".into(),
        node_id: state
            .as_ref()
            .map(|s| s.node_id.clone())
            .unwrap_or_default(),
        role: state.as_ref().map(|s| s.role.clone()).unwrap_or_default(),
        cluster_id: state
            .as_ref()
            .map(|s| s.cluster_id.clone())
            .unwrap_or_default(),
        advertise_addr: state
            .as_ref()
            .map(|s| s.advertise.clone())
            .unwrap_or_default(),
        ..Default::default()
    })
}
