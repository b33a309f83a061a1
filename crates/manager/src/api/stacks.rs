//! `stack deploy`, `stack ls` and `stack rm`. A deploy is one transaction:
//! every network, secret, config and service of the stack is checked
//! against a scratch copy of the store with the deploy's own earlier
//! objects in it (so a service can name a network the same deploy
//! creates), and then written at once, or nothing is. Objects that did not
//! change are not written at all, so redeploying an unchanged file changes
//! nothing; a changed service goes through the rolling-update machinery as
//! `service update` would; a secret or config whose content changed gets a
//! new versioned object (`NAME.v2`) that the services roll onto.

use std::collections::{BTreeMap, BTreeSet};

use shoal_proto::pb;

use super::control::rfc3339;
use super::file_refs::{resolve_references, FileKind};
use super::networks::{attach_ingress, check_published_ports, network_from_spec, resolve_attachments};
use super::secrets::{validate_name, validate_value};
use super::service_pb::{check_reservations, spec_from_pb};
use super::services::pin_image;
use crate::errors::ManagerError;
use crate::manager::Manager;
use crate::store::{
    new_object_id, now_ms, Config, Kind, Meta, Network, Object, Op, Secret, Service, Stack, StackRevision, StoreState, Transaction,
    UpdateState, UpdateStatus, STACK_HISTORY,
};

use shoal_proto::names::STACK_NAMESPACE_LABEL as NAMESPACE_LABEL;
/// How long `stack rm` waits for the stack's tasks to leave its networks.
const NETWORK_DETACH_WAIT: std::time::Duration = std::time::Duration::from_secs(30);
/// The image a stack's service names, before the manager pins it.
const IMAGE_LABEL: &str = "com.docker.stack.image";

fn invalid(message: String) -> ManagerError {
    ManagerError::InvalidArgument(message)
}

fn in_stack(labels: &BTreeMap<String, String>, stack: &str) -> bool {
    labels.get(NAMESPACE_LABEL).is_some_and(|s| s == stack)
}

/// The ops of a deploy, checked one by one against `scratch`.
struct Plan {
    scratch: StoreState,
    ops: Vec<Op>,
    response: pb::DeployStackResponse,
}

impl Plan {
    /// Adds `op` once the scratch store accepts it.
    fn push(&mut self, op: Op, what: String, list: fn(&mut pb::DeployStackResponse) -> &mut Vec<String>) -> Result<(), ManagerError> {
        let txn = Transaction::single(op.clone());
        let (outcome, _) = self.scratch.apply(u64::MAX / 2, &txn);
        outcome.map_err(ManagerError::Txn)?;
        self.ops.push(op);
        list(&mut self.response).push(what);
        Ok(())
    }
}

pub async fn deploy(manager: &Manager, request: pb::DeployStackRequest) -> Result<pb::DeployStackResponse, ManagerError> {
    let stack = request.name.clone();
    check_stack_name(&stack)?;
    manager.read_barrier().await?;
    let state = manager.store.snapshot();
    let mut plan = Plan { scratch: state.clone(), ops: Vec::new(), response: pb::DeployStackResponse::default() };

    for name in &request.external_networks {
        if state.find_by_name(Kind::Network, name).is_none() {
            return Err(ManagerError::NotFound(format!(
                "network {name} is marked external but does not exist; create it with `shoal network create -d overlay {name}`"
            )));
        }
    }
    for spec in request.networks {
        let name = spec.name.clone();
        match state.find_by_name(Kind::Network, &name) {
            Some(Object::Network(existing)) if !in_stack(&existing.spec.labels, &stack) => {
                return Err(ManagerError::FailedPrecondition(format!(
                    "network {name} exists and is not part of stack {stack}; remove or rename it, or mark it external in the file"
                )));
            }
            Some(_) => plan.response.unchanged.push(format!("network {name}")),
            None => {
                let network = network_from_spec(&plan.scratch, spec)?;
                plan.push(Op::Create(Object::Network(network)), format!("network {name}"), |r| &mut r.created)?;
            }
        }
    }

    // Secrets and configs: reused when the content is the same, a new
    // version when it changed; services then name the version in use.
    let mut renamed: BTreeMap<(FileKind, String), String> = BTreeMap::new();
    for (kind, files) in [(FileKind::Secret, request.secrets), (FileKind::Config, request.configs)] {
        for file in files {
            let existing = versions(&state, kind, &file.name);
            if file.external {
                if existing.is_empty() {
                    return Err(ManagerError::NotFound(format!(
                        "{} {} is marked external but does not exist; create it with `shoal {} create {} FILE`",
                        kind.as_str(),
                        file.name,
                        kind.as_str(),
                        file.name
                    )));
                }
                continue;
            }
            validate_name(kind, &file.name)?;
            validate_value(kind, &file.name, &file.data)?;
            match existing.last() {
                Some((name, data, labels)) if *data == file.data => {
                    if !in_stack(labels, &stack) {
                        return Err(ManagerError::FailedPrecondition(format!(
                            "{} {name} exists and is not part of stack {stack}; remove or rename it, or mark it external",
                            kind.as_str()
                        )));
                    }
                    plan.response.unchanged.push(format!("{} {name}", kind.as_str()));
                    renamed.insert((kind, file.name.clone()), name.clone());
                }
                last => {
                    let name = match last {
                        None => file.name.clone(),
                        Some(_) => format!("{}.v{}", file.name, existing.len() + 1),
                    };
                    let meta = Meta { id: new_object_id(), ..Default::default() };
                    let labels: BTreeMap<String, String> = file.labels.into_iter().collect();
                    let object = match kind {
                        FileKind::Secret => Object::Secret(Secret { meta, name: name.clone(), labels, data: file.data }),
                        FileKind::Config => Object::Config(Config { meta, name: name.clone(), labels, data: file.data }),
                    };
                    plan.push(Op::Create(object), format!("{} {name}", kind.as_str()), |r| &mut r.created)?;
                    renamed.insert((kind, file.name), name);
                }
            }
        }
    }

    let mut named = BTreeSet::new();
    for spec in request.services {
        let mut spec = spec_from_pb(spec)?;
        if !in_stack(&spec.labels, &stack) {
            return Err(invalid(format!("service {} is not labelled as part of stack {stack}", spec.name)));
        }
        for (kind, references) in [(FileKind::Secret, &mut spec.task.secrets), (FileKind::Config, &mut spec.task.configs)] {
            for reference in references.iter_mut() {
                if let Some(actual) = renamed.get(&(kind, reference.name.clone())) {
                    reference.name = actual.clone();
                }
            }
        }
        resolve_attachments(&plan.scratch, &mut spec.task.networks)?;
        resolve_references(&plan.scratch, &mut spec.task)?;
        attach_ingress(&plan.scratch, &mut spec)?;
        let current = match state.find_by_name(Kind::Service, &spec.name) {
            Some(Object::Service(service)) => Some(service.clone()),
            _ => None,
        };
        check_published_ports(&plan.scratch, &spec, current.as_ref().map(|c| c.meta.id.as_str()))?;
        check_reservations(&plan.scratch, &spec)?;
        named.insert(spec.name.clone());
        let name = spec.name.clone();
        match current {
            Some(current) if !in_stack(&current.spec.labels, &stack) => {
                return Err(ManagerError::FailedPrecondition(format!(
                    "service {name} exists and is not part of stack {stack}; remove or rename it"
                )));
            }
            Some(current) => {
                // The image as the file names it is compared, not the pinned
                // digest: an unchanged file keeps the digest it runs.
                if current.spec.labels.get(IMAGE_LABEL) == spec.labels.get(IMAGE_LABEL) {
                    spec.task.image = current.spec.task.image.clone();
                    spec.placement.platforms = current.spec.placement.platforms.clone();
                } else {
                    pin_image(manager, &mut spec, &mut plan.response.warnings).await;
                }
                if spec.task.registry_auth.is_none() {
                    spec.task.registry_auth = current.spec.task.registry_auth.clone();
                }
                if spec == current.spec {
                    plan.response.unchanged.push(format!("service {name}"));
                    continue;
                }
                let mut updated = current.clone();
                if current.changes_tasks(&spec) {
                    updated.spec_version += 1;
                    updated.update_status = Some(UpdateStatus::started(UpdateState::Updating, now_ms(), "update in progress"));
                }
                updated.previous_spec = Some(Box::new(current.spec.clone()));
                updated.spec = spec;
                let op = Op::Update { object: Object::Service(updated), expected_version: Some(current.meta.version) };
                plan.push(op, format!("service {name}"), |r| &mut r.updated)?;
            }
            None => {
                pin_image(manager, &mut spec, &mut plan.response.warnings).await;
                let service = Service {
                    meta: Meta { id: new_object_id(), ..Default::default() },
                    spec,
                    spec_version: 1,
                    vips: Vec::new(),
                    previous_spec: None,
                    update_status: None,
                };
                plan.push(Op::Create(Object::Service(service)), format!("service {name}"), |r| &mut r.created)?;
            }
        }
    }
    if request.prune {
        for service in state.list_typed::<Service>().filter(|s| in_stack(&s.spec.labels, &stack) && !named.contains(&s.spec.name)) {
            let op = Op::Delete { kind: Kind::Service, id: service.meta.id.clone() };
            plan.push(op, format!("service {}", service.spec.name), |r| &mut r.removed)?;
        }
    }

    // The stack itself: a new revision when anything changed or the file did.
    let current = state.list_typed::<Stack>().find(|s| s.name == stack).cloned();
    let changed = !plan.ops.is_empty() || current.as_ref().is_none_or(|c| c.file_hash != request.file_hash);
    let Some(mut record) = (match (&current, changed) {
        (_, false) => None,
        (Some(current), true) => Some(current.clone()),
        (None, true) => Some(Stack {
            meta: Meta { id: new_object_id(), ..Default::default() },
            name: stack.clone(),
            revision: 0,
            file_hash: String::new(),
            history: Vec::new(),
        }),
    }) else {
        plan.response.revision = current.map_or(0, |c| c.revision);
        return Ok(plan.response);
    };
    record.revision += 1;
    record.file_hash = request.file_hash.clone();
    record.history.push(StackRevision { revision: record.revision, file_hash: request.file_hash, deployed_at: now_ms() });
    if record.history.len() > STACK_HISTORY {
        record.history.remove(0);
    }
    plan.response.revision = record.revision;
    let op = match &current {
        Some(current) => Op::Update { object: Object::Stack(record), expected_version: Some(current.meta.version) },
        None => Op::Create(Object::Stack(record)),
    };
    plan.ops.push(op);
    manager.write(Transaction::new(plan.ops)).await?;
    Ok(plan.response)
}

/// The objects named `name`, `name.v2`, `name.v3`... of `kind`, oldest
/// first: (name, data, labels).
fn versions(state: &StoreState, kind: FileKind, name: &str) -> Vec<(String, Vec<u8>, BTreeMap<String, String>)> {
    let mut found = Vec::new();
    for version in 1.. {
        let candidate = if version == 1 { name.to_string() } else { format!("{name}.v{version}") };
        let object = match (kind, state.find_by_name(kind.store_kind(), &candidate)) {
            (FileKind::Secret, Some(Object::Secret(s))) => (s.name.clone(), s.data.clone(), s.labels.clone()),
            (FileKind::Config, Some(Object::Config(c))) => (c.name.clone(), c.data.clone(), c.labels.clone()),
            _ => break,
        };
        found.push(object);
    }
    found
}

pub fn check_stack_name(name: &str) -> Result<(), ManagerError> {
    shoal_proto::names::check_stack_name(name).map_err(invalid)
}

pub async fn list(manager: &Manager) -> Result<pb::ListStacksResponse, ManagerError> {
    manager.read_barrier().await?;
    let stacks = manager.store.view(|s| {
        let mut stacks: Vec<pb::Stack> = s
            .list_typed::<Stack>()
            .map(|stack| pb::Stack {
                name: stack.name.clone(),
                revision: stack.revision,
                file_hash: stack.file_hash.clone(),
                services: s.list_typed::<Service>().filter(|svc| in_stack(&svc.spec.labels, &stack.name)).count() as u64,
                updated_at: rfc3339(stack.meta.updated_at),
            })
            .collect();
        stacks.sort_by(|a, b| a.name.cmp(&b.name));
        stacks
    });
    Ok(pb::ListStacksResponse { stacks })
}

/// Removes the stack's services, networks, secrets and configs and the
/// stack, in one transaction; volumes stay, as in docker. The networks go
/// once their tasks are gone: a network still attached is left, named.
pub async fn remove(manager: &Manager, name: &str) -> Result<pb::RemoveStackResponse, ManagerError> {
    manager.read_barrier().await?;
    let (ops, removed) = manager.store.view(|s| {
        let mut ops = Vec::new();
        let mut removed = Vec::new();
        let stack = s.list_typed::<Stack>().find(|st| st.name == name);
        for service in s.list_typed::<Service>().filter(|svc| in_stack(&svc.spec.labels, name)) {
            ops.push(Op::Delete { kind: Kind::Service, id: service.meta.id.clone() });
            removed.push(format!("service {}", service.spec.name));
        }
        for secret in s.list_typed::<Secret>().filter(|o| in_stack(&o.labels, name)) {
            ops.push(Op::Delete { kind: Kind::Secret, id: secret.meta.id.clone() });
            removed.push(format!("secret {}", secret.name));
        }
        for config in s.list_typed::<Config>().filter(|o| in_stack(&o.labels, name)) {
            ops.push(Op::Delete { kind: Kind::Config, id: config.meta.id.clone() });
            removed.push(format!("config {}", config.name));
        }
        if let Some(stack) = stack {
            ops.push(Op::Delete { kind: Kind::Stack, id: stack.meta.id.clone() });
        }
        let networks: Vec<String> =
            s.list_typed::<Network>().filter(|n| in_stack(&n.spec.labels, name)).map(|n| n.meta.id.clone()).collect();
        (ops, (removed, networks, stack.is_some()))
    });
    let (mut removed, networks, known) = removed;
    if !known && ops.is_empty() && networks.is_empty() {
        return Err(ManagerError::NotFound(format!("stack {name} does not exist; `shoal stack ls` lists the stacks")));
    }
    if !ops.is_empty() {
        manager.write(Transaction::new(ops)).await?;
    }
    // Networks last, each on its own: the tasks of the services just
    // removed detach first.
    for id in networks {
        if let Some(network) = super::networks::remove_when_detached(manager, &id, NETWORK_DETACH_WAIT).await? {
            removed.push(format!("network {network}"));
        }
    }
    Ok(pb::RemoveStackResponse { removed })
}
