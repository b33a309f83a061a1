//! The control API's services and tasks: `shoal service ...` and `node ps`.
//! The orchestrators turn what is written here into tasks.

use std::sync::Arc;
use std::time::Duration;

use shoal_proto::pb;
use tonic::Status;

use super::control::resolve_node;
use super::file_refs::resolve_references;
use super::networks::{attach_ingress, check_published_ports, resolve_attachments};
use super::service_pb::{check_reservations, resolve_service, service_to_pb, spec_from_pb, task_to_pb};
use crate::errors::ManagerError;
use crate::log_broker::LoggedTask;
use crate::manager::Manager;
use crate::store::{new_object_id, now_ms, Kind, Meta, Node, Object, Op, Service, ServiceSpec, Task, TaskState, Transaction, UpdateState, UpdateStatus};

/// How long `service logs` without `-f` waits for silent nodes (a node
/// that is down never answers).
const LOGS_QUIET_TIMEOUT: Duration = Duration::from_secs(5);

/// Pins the image to a digest and records its platforms for the scheduler;
/// a registry that cannot be asked leaves the reference as written and the
/// platform unknown (any node), with a warning, as docker does.
pub(super) async fn pin_image(manager: &Manager, spec: &mut ServiceSpec, warnings: &mut Vec<String>) {
    spec.placement.platforms.clear();
    let Some(pinner) = manager.image_pinner() else { return };
    match pinner.pin(&spec.task.image, spec.task.registry_auth.as_ref()).await {
        Ok(pinned) => {
            spec.task.image = pinned.reference;
            spec.placement.platforms = pinned.platforms;
        }
        Err(e) => warnings.push(format!(
            "image {} could not be pinned to a digest ({e}); nodes may run different versions of it",
            spec.task.image
        )),
    }
}

pub async fn create(manager: &Manager, request: pb::CreateServiceRequest) -> Result<pb::CreateServiceResponse, ManagerError> {
    let mut spec = spec_from_pb(request.spec.unwrap_or_default())?;
    manager.read_barrier().await?;
    manager.store.view(|s| {
        if s.find_by_name(Kind::Service, &spec.name).is_some() {
            return Err(ManagerError::Txn(crate::store::TxnError::NameInUse { kind: Kind::Service, name: spec.name.clone() }));
        }
        resolve_attachments(s, &mut spec.task.networks)?;
        resolve_references(s, &mut spec.task)?;
        attach_ingress(s, &mut spec)?;
        check_published_ports(s, &spec, None)?;
        check_reservations(s, &spec)
    })?;
    let network_checks = manager.store.view(|s| networks_unchanged(s, &spec));
    let mut warnings = Vec::new();
    pin_image(manager, &mut spec, &mut warnings).await;
    let service = Service { meta: Meta { id: new_object_id(), ..Default::default() }, spec, spec_version: 1, vips: Vec::new(), previous_spec: None, update_status: None };
    let mut ops = network_checks;
    ops.push(Op::Create(Object::Service(service)));
    let written = manager.write(Transaction::new(ops)).await?;
    let Some(Object::Service(service)) = written.into_iter().find(|o| o.kind() == Kind::Service) else {
        return Err(ManagerError::Internal("creating the service wrote nothing".into()));
    };
    let service = manager.store.view(|s| service_to_pb(s, &service));
    Ok(pb::CreateServiceResponse { service: Some(service), warnings })
}

pub async fn list(manager: &Manager) -> Result<pb::ListServicesResponse, ManagerError> {
    manager.read_barrier().await?;
    let services = manager.store.view(|s| {
        let mut services: Vec<pb::Service> = s.list_typed::<Service>().map(|service| service_to_pb(s, service)).collect();
        services.sort_by(|a, b| a.spec.as_ref().map(|s| &s.name).cmp(&b.spec.as_ref().map(|s| &s.name)));
        services
    });
    Ok(pb::ListServicesResponse { services })
}

pub async fn inspect(manager: &Manager, reference: &str) -> Result<pb::Service, ManagerError> {
    manager.read_barrier().await?;
    manager.store.view(|s| resolve_service(s, reference).map(|service| service_to_pb(s, service)))
}

pub async fn update(manager: &Manager, request: pb::UpdateServiceRequest) -> Result<pb::Service, ManagerError> {
    if request.rollback {
        return rollback(manager, &request.service, request.version).await;
    }
    let mut spec = spec_from_pb(request.spec.unwrap_or_default())?;
    manager.read_barrier().await?;
    let (current, network_checks) = manager.store.view(|s| {
        let current = resolve_service(s, &request.service)?.clone();
        resolve_attachments(s, &mut spec.task.networks)?;
        resolve_references(s, &mut spec.task)?;
        attach_ingress(s, &mut spec)?;
        check_published_ports(s, &spec, Some(&current.meta.id))?;
        check_reservations(s, &spec)?;
        Ok::<_, ManagerError>((current, networks_unchanged(s, &spec)))
    })?;
    if current.spec.mode.as_str() != spec.mode.as_str() {
        return Err(ManagerError::InvalidArgument(format!(
            "service {} is {} and cannot become {}; remove it and create it again",
            current.spec.name,
            current.spec.mode.as_str(),
            spec.mode.as_str()
        )));
    }
    // An update that brings no login keeps the one the service has, as
    // docker's does without --with-registry-auth.
    if spec.task.registry_auth.is_none() {
        spec.task.registry_auth = current.spec.task.registry_auth.clone();
    }
    let mut warnings = Vec::new();
    if spec.task.image == current.spec.task.image {
        spec.placement.platforms = current.spec.placement.platforms.clone();
    } else {
        pin_image(manager, &mut spec, &mut warnings).await;
    }
    for warning in &warnings {
        tracing::warn!("{warning}");
    }
    let mut updated = current.clone();
    // Only a change to what tasks run bumps the spec version and starts a
    // rollout; scaling leaves existing tasks alone.
    if current.changes_tasks(&spec) {
        updated.spec_version += 1;
        updated.update_status = Some(UpdateStatus::started(UpdateState::Updating, now_ms(), "update in progress"));
    }
    if spec != current.spec {
        updated.previous_spec = Some(Box::new(current.spec.clone()));
    }
    updated.spec = spec;
    let expected_version = Some(if request.version == 0 { current.meta.version } else { request.version });
    write_service(manager, network_checks, updated, expected_version).await
}

/// `service rollback` / `service update --rollback`: back to the previous
/// spec, with the rollback configuration.
async fn rollback(manager: &Manager, reference: &str, version: u64) -> Result<pb::Service, ManagerError> {
    manager.read_barrier().await?;
    let (rolled, network_checks) = manager.store.view(|s| {
        let current = resolve_service(s, reference)?;
        let rolled = current.rolled_back(now_ms(), "manually requested rollback").ok_or_else(|| {
            ManagerError::InvalidArgument(format!(
                "service {} has no previous spec to roll back to; it has not been updated since it was created",
                current.spec.name
            ))
        })?;
        // What the old spec names may have gone since (a network, a secret).
        let mut spec = rolled.spec.clone();
        resolve_attachments(s, &mut spec.task.networks)?;
        resolve_references(s, &mut spec.task)?;
        check_published_ports(s, &spec, Some(&current.meta.id))?;
        Ok::<_, ManagerError>((rolled, networks_unchanged(s, &spec)))
    })?;
    let expected_version = Some(if version == 0 { rolled.meta.version } else { version });
    write_service(manager, network_checks, rolled, expected_version).await
}

async fn write_service(manager: &Manager, mut ops: Vec<Op>, service: Service, expected_version: Option<u64>) -> Result<pb::Service, ManagerError> {
    ops.push(Op::Update { object: Object::Service(service), expected_version });
    let written = manager.write(Transaction::new(ops)).await?;
    let Some(Object::Service(service)) = written.into_iter().find(|o| o.kind() == Kind::Service) else {
        return Err(ManagerError::Internal("updating the service wrote nothing".into()));
    };
    Ok(manager.store.view(|s| service_to_pb(s, &service)))
}


/// Checks that commit the write only if every network, secret and config
/// the spec names still exists as read (a concurrent `network rm` or
/// `secret rm` makes the write fail instead of leaving a service naming
/// something gone).
fn networks_unchanged(state: &crate::store::StoreState, spec: &ServiceSpec) -> Vec<Op> {
    let networks = spec
        .task
        .networks
        .iter()
        .filter_map(|n| state.get_typed::<crate::store::Network>(&n.network_id))
        .map(|n| Op::Check { kind: Kind::Network, id: n.meta.id.clone(), version: n.meta.version });
    let files = [(Kind::Secret, &spec.task.secrets), (Kind::Config, &spec.task.configs)].into_iter().flat_map(|(kind, references)| {
        references.iter().filter_map(move |r| state.get(kind, &r.id)).map(|o| Op::Check { kind: o.kind(), id: o.id().to_string(), version: o.meta().version })
    });
    networks.chain(files).collect()
}

/// Deletes the service; the orchestrator then shuts its tasks down and the
/// reaper deletes them once their containers are gone.
pub async fn remove(manager: &Manager, reference: &str) -> Result<(), ManagerError> {
    manager.read_barrier().await?;
    let id = manager.store.view(|s| resolve_service(s, reference).map(|service| service.meta.id.clone()))?;
    manager.write(Transaction::single(Op::Delete { kind: Kind::Service, id })).await?;
    Ok(())
}

pub async fn list_tasks(manager: &Manager, request: pb::ListTasksRequest) -> Result<pb::ListTasksResponse, ManagerError> {
    manager.read_barrier().await?;
    let mut desired = Vec::new();
    for state in &request.desired_states {
        desired.push(TaskState::parse(state).ok_or_else(|| {
            ManagerError::InvalidArgument(format!(
                "desired state {state:?} is unknown; use running, shutdown, accepted or another task state"
            ))
        })?);
    }
    manager.store.view(|s| {
        let service_id = match request.service.as_str() {
            "" => None,
            reference => Some(resolve_service(s, reference)?.meta.id.clone()),
        };
        let node_id = match request.node.as_str() {
            "" => None,
            reference => Some(resolve_node(s, reference)?.meta.id.clone()),
        };
        let mut tasks: Vec<&Task> = s
            .list_typed::<Task>()
            .filter(|t| service_id.as_ref().is_none_or(|id| &t.service_id == id))
            .filter(|t| node_id.as_ref().is_none_or(|id| &t.node_id == id))
            .filter(|t| desired.is_empty() || desired.contains(&t.desired_state))
            .collect();
        tasks.sort_by(|a, b| {
            (&a.service_name, a.slot, &a.node_id, std::cmp::Reverse(a.meta.created_at)).cmp(&(
                &b.service_name,
                b.slot,
                &b.node_id,
                std::cmp::Reverse(b.meta.created_at),
            ))
        });
        Ok(pb::ListTasksResponse { tasks: tasks.into_iter().map(|t| task_to_pb(s, t)).collect() })
    })
}

/// The tasks `service logs REF` means: a service's tasks that have (or had)
/// a container, or one task by id or name.
fn logged_tasks(manager: &Manager, reference: &str) -> Result<Vec<LoggedTask>, ManagerError> {
    manager.store.view(|s| {
        let hostname = |node_id: &str| s.get_typed::<Node>(node_id).map(|n| n.hostname.clone()).unwrap_or_default();
        let logged = |t: &Task| LoggedTask {
            task_id: t.meta.id.clone(),
            task_name: format!("{}.{}", t.name(), t.meta.id),
            node_id: t.node_id.clone(),
            node_hostname: hostname(&t.node_id),
        };
        let has_container = |t: &&Task| !t.node_id.is_empty() && t.status.state >= TaskState::Starting;
        if let Some(task) = s.get_typed::<Task>(reference) {
            return Ok(vec![logged(task)]);
        }
        if let Some(task) = s.list_typed::<Task>().find(|t| t.name() == reference && t.is_active()) {
            return Ok(vec![logged(task)]);
        }
        let service = resolve_service(s, reference)?;
        Ok(s.list_typed::<Task>().filter(|t| t.service_id == service.meta.id).filter(has_container).map(logged).collect())
    })
}

pub type LogLines = tokio_stream::wrappers::ReceiverStream<Result<pb::ServiceLogLine, Status>>;

/// Served by the leader, which holds the agents' assignment streams; a
/// follower relays the leader's stream.
pub async fn logs(manager: &Arc<Manager>, request: pb::ServiceLogsRequest) -> Result<LogLines, ManagerError> {
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    if !manager.is_leader() {
        let (_, leader_addr) = manager.leader().ok_or(ManagerError::NoLeader)?;
        let mut client = pb::control_client::ControlClient::new(manager.peer_channel(&leader_addr)?);
        let mut stream = client
            .service_logs(request)
            .await
            .map_err(|status| ManagerError::from_forwarded(&leader_addr, status))?
            .into_inner();
        tokio::spawn(async move {
            while let Some(item) = stream.message().await.transpose() {
                if tx.send(item).await.is_err() {
                    return;
                }
            }
        });
        return Ok(LogLines::new(rx));
    }
    manager.read_barrier().await?;
    let tasks = logged_tasks(manager, &request.service)?;
    let mut lines = manager.logs.subscribe(tasks, request.follow, request.tail);
    let follow = request.follow;
    tokio::spawn(async move {
        loop {
            let next = if follow {
                lines.recv().await
            } else {
                tokio::time::timeout(LOGS_QUIET_TIMEOUT, lines.recv()).await.ok().flatten()
            };
            let Some(line) = next else { return };
            if tx.send(Ok(line)).await.is_err() {
                return;
            }
        }
    });
    Ok(LogLines::new(rx))
}
