//! The control API's secrets and configs: `shoal secret ...` and `shoal
//! config ...`. Both are small named values that tasks get as files; they
//! differ in who may see the value: a config's is shown by `inspect`, a
//! secret's never leaves the managers but towards a node running a task
//! that uses it ([`super::file_delivery`]). Neither changes once written (a
//! new value is a new secret), and neither goes while a service uses it.

use std::collections::{BTreeMap, HashMap};

use shoal_proto::pb;

use super::control::rfc3339;
use super::file_refs::{all_users, resolve, users_of, FileKind};
use crate::errors::ManagerError;
use crate::manager::Manager;
use crate::store::{new_object_id, Config, Meta, Object, Op, Secret, StoreState, Transaction};

/// Docker's limit, which keeps each value a small part of a Raft entry.
pub const MAX_VALUE_BYTES: usize = 500 * 1024;
const MAX_NAME_LEN: usize = 64;

fn invalid(message: String) -> ManagerError {
    ManagerError::InvalidArgument(message)
}

/// Docker's rule: 1 to 64 letters, digits, '-', '_' or '.', starting and
/// ending with a letter or digit.
pub fn validate_name(kind: FileKind, name: &str) -> Result<(), ManagerError> {
    let edges_ok = name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().last().is_some_and(|c| c.is_ascii_alphanumeric());
    let valid = name.len() <= MAX_NAME_LEN && edges_ok && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if valid {
        Ok(())
    } else {
        Err(invalid(format!(
            "{} name {name:?} is invalid; use 1 to 64 letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
            kind.as_str()
        )))
    }
}

/// 1 byte to 500 KiB; the sentence names the object, never the value.
pub fn validate_value(kind: FileKind, name: &str, data: &[u8]) -> Result<(), ManagerError> {
    if data.is_empty() {
        return Err(invalid(format!("{} {name} is empty; give it a value of 1 byte to 500 KiB", kind.as_str())));
    }
    if data.len() > MAX_VALUE_BYTES {
        return Err(invalid(format!(
            "{} {name} is {} bytes; values are limited to 500 KiB ({MAX_VALUE_BYTES} bytes)",
            kind.as_str(),
            data.len()
        )));
    }
    Ok(())
}

fn validate_labels(labels: &HashMap<String, String>) -> Result<(), ManagerError> {
    match labels.keys().find(|k| k.is_empty() || k.contains('=') || k.chars().any(char::is_whitespace)) {
        Some(key) => Err(invalid(format!("label key {key:?} is invalid; use a non-empty key without spaces or '='"))),
        None => Ok(()),
    }
}

pub fn secret_to_pb(secret: &Secret, services: Vec<String>) -> pb::Secret {
    pb::Secret {
        id: secret.meta.id.clone(),
        name: secret.name.clone(),
        labels: secret.labels.clone().into_iter().collect(),
        version: secret.meta.version,
        created_at: rfc3339(secret.meta.created_at),
        updated_at: rfc3339(secret.meta.updated_at),
        services,
    }
}

pub fn config_to_pb(config: &Config, services: Vec<String>) -> pb::Config {
    pb::Config {
        id: config.meta.id.clone(),
        name: config.name.clone(),
        data: config.data.clone(),
        labels: config.labels.clone().into_iter().collect(),
        version: config.meta.version,
        created_at: rfc3339(config.meta.created_at),
        updated_at: rfc3339(config.meta.updated_at),
        services,
    }
}

/// Checks everything, then writes the new object; nothing is written when
/// a check fails (a taken name fails the transaction as a whole).
async fn create(
    manager: &Manager,
    kind: FileKind,
    name: String,
    data: Vec<u8>,
    labels: HashMap<String, String>,
) -> Result<Object, ManagerError> {
    validate_name(kind, &name)?;
    validate_value(kind, &name, &data)?;
    validate_labels(&labels)?;
    let meta = Meta { id: new_object_id(), ..Default::default() };
    let labels: BTreeMap<String, String> = labels.into_iter().collect();
    let object = match kind {
        FileKind::Secret => Object::Secret(Secret { meta, name, labels, data }),
        FileKind::Config => Object::Config(Config { meta, name, labels, data }),
    };
    let written = manager.write(Transaction::single(Op::Create(object))).await?;
    written.into_iter().next().ok_or_else(|| ManagerError::Internal(format!("creating the {} wrote nothing", kind.as_str())))
}

/// Refused while a service uses it, naming the services. The store refuses
/// the delete too if a service came to use it meanwhile.
async fn remove(manager: &Manager, kind: FileKind, reference: &str) -> Result<(), ManagerError> {
    manager.read_barrier().await?;
    let (id, name, users) = manager.store.view(|s| {
        let (id, name) = resolve(s, kind, reference)?;
        let users = users_of(s, kind, &id);
        Ok::<_, ManagerError>((id, name, users))
    })?;
    if !users.is_empty() {
        return Err(ManagerError::FailedPrecondition(format!(
            "{} {name} is in use by {} {}; remove it from them first (`shoal service update --{}-rm {name} SERVICE`)",
            kind.as_str(),
            if users.len() == 1 { "service" } else { "services" },
            users.join(", "),
            kind.as_str()
        )));
    }
    manager.write(Transaction::single(Op::Delete { kind: kind.store_kind(), id })).await?;
    Ok(())
}

fn sorted_by_name<T>(mut items: Vec<T>, name: impl Fn(&T) -> &str) -> Vec<T> {
    items.sort_by(|a, b| name(a).cmp(name(b)));
    items
}

pub async fn create_secret(manager: &Manager, request: pb::CreateSecretRequest) -> Result<pb::Secret, ManagerError> {
    match create(manager, FileKind::Secret, request.name, request.data, request.labels).await? {
        Object::Secret(secret) => Ok(secret_to_pb(&secret, Vec::new())),
        _ => Err(ManagerError::Internal("creating the secret wrote another kind of object".into())),
    }
}

pub async fn list_secrets(manager: &Manager) -> Result<pb::ListSecretsResponse, ManagerError> {
    manager.read_barrier().await?;
    let secrets = manager.store.view(|s| {
        let mut users = all_users(s, FileKind::Secret);
        s.list_typed::<Secret>()
            .map(|secret| secret_to_pb(secret, users.remove(&secret.meta.id).unwrap_or_default().into_iter().collect()))
            .collect()
    });
    Ok(pb::ListSecretsResponse { secrets: sorted_by_name(secrets, |s: &pb::Secret| &s.name) })
}

fn found_secret(state: &StoreState, reference: &str) -> Result<pb::Secret, ManagerError> {
    let (id, _) = resolve(state, FileKind::Secret, reference)?;
    let secret = state.get_typed::<Secret>(&id).ok_or_else(|| ManagerError::Internal(format!("secret {id} vanished")))?;
    Ok(secret_to_pb(secret, users_of(state, FileKind::Secret, &id)))
}

pub async fn inspect_secret(manager: &Manager, reference: &str) -> Result<pb::Secret, ManagerError> {
    manager.read_barrier().await?;
    manager.store.view(|s| found_secret(s, reference))
}

pub async fn remove_secret(manager: &Manager, reference: &str) -> Result<(), ManagerError> {
    remove(manager, FileKind::Secret, reference).await
}

pub async fn create_config(manager: &Manager, request: pb::CreateConfigRequest) -> Result<pb::Config, ManagerError> {
    match create(manager, FileKind::Config, request.name, request.data, request.labels).await? {
        Object::Config(config) => Ok(config_to_pb(&config, Vec::new())),
        _ => Err(ManagerError::Internal("creating the config wrote another kind of object".into())),
    }
}

pub async fn list_configs(manager: &Manager) -> Result<pb::ListConfigsResponse, ManagerError> {
    manager.read_barrier().await?;
    let configs = manager.store.view(|s| {
        let mut users = all_users(s, FileKind::Config);
        s.list_typed::<Config>()
            .map(|config| config_to_pb(config, users.remove(&config.meta.id).unwrap_or_default().into_iter().collect()))
            .collect()
    });
    Ok(pb::ListConfigsResponse { configs: sorted_by_name(configs, |c: &pb::Config| &c.name) })
}

pub async fn inspect_config(manager: &Manager, reference: &str) -> Result<pb::Config, ManagerError> {
    manager.read_barrier().await?;
    manager.store.view(|s| {
        let (id, _) = resolve(s, FileKind::Config, reference)?;
        let config = s.get_typed::<Config>(&id).ok_or_else(|| ManagerError::Internal(format!("config {id} vanished")))?;
        Ok(config_to_pb(config, users_of(s, FileKind::Config, &id)))
    })
}

pub async fn remove_config(manager: &Manager, reference: &str) -> Result<(), ManagerError> {
    remove(manager, FileKind::Config, reference).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_docker() {
        for good in ["db_pass", "a", "app.conf", "x-1.v2", &"a".repeat(64)] {
            validate_name(FileKind::Secret, good).unwrap();
        }
        for bad in ["", "-lead", "trail.", "with space", "slash/y", &"a".repeat(65)] {
            let error = validate_name(FileKind::Secret, bad).unwrap_err().to_string();
            assert!(error.starts_with(&format!("secret name {bad:?} is invalid")), "{error}");
        }
    }

    #[test]
    fn values_are_one_byte_to_500_kib_and_never_quoted() {
        validate_value(FileKind::Secret, "s", b"x").unwrap();
        validate_value(FileKind::Secret, "s", &vec![7; MAX_VALUE_BYTES]).unwrap();
        assert_eq!(
            validate_value(FileKind::Secret, "db_pass", b"").unwrap_err().to_string(),
            "secret db_pass is empty; give it a value of 1 byte to 500 KiB"
        );
        let error = validate_value(FileKind::Config, "big", &vec![b'q'; MAX_VALUE_BYTES + 1]).unwrap_err().to_string();
        assert!(error.contains("512001 bytes") && !error.contains("qqq"), "{error}");
    }

    #[test]
    fn a_secret_shows_no_value_anywhere() {
        let secret = Secret { meta: Meta { id: "s1".into(), ..Default::default() }, name: "db_pass".into(), labels: Default::default(), data: b"hunter2-value".to_vec() };
        let debug = format!("{:?}", Object::Secret(secret.clone()));
        assert!(!debug.contains("hunter2") && debug.contains("13 bytes redacted"), "{debug}");
        let shown = format!("{:?}", secret_to_pb(&secret, vec!["web".into()]));
        assert!(!shown.contains("hunter2"), "{shown}");
        let txn = format!("{:?}", Transaction::single(Op::Create(Object::Secret(secret))));
        assert!(!txn.contains("hunter2"), "{txn}");
    }
}
