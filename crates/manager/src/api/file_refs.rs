//! Secrets and configs in task specs: the references a service makes
//! (`--secret`, `--config`), checked when the spec is read, resolved to
//! ids against the store, and shown back by id and name, never with a
//! value. Also who uses a secret or config, which `rm` and `ls` need.

use std::collections::{BTreeMap, BTreeSet};

use shoal_proto::pb;
use shoal_proto::task_files::container_path;

use crate::errors::ManagerError;
use crate::store::{Config, FileReference, Kind, Object, Secret, Service, StoreState, Task, TaskSpec, DEFAULT_FILE_MODE};

/// Which of the two a reference, a delivery or an API call is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FileKind {
    Secret,
    Config,
}

impl FileKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::Secret => "secret",
            FileKind::Config => "config",
        }
    }

    pub fn store_kind(self) -> Kind {
        match self {
            FileKind::Secret => Kind::Secret,
            FileKind::Config => Kind::Config,
        }
    }

    pub fn to_pb(self) -> pb::FileKind {
        match self {
            FileKind::Secret => pb::FileKind::Secret,
            FileKind::Config => pb::FileKind::Config,
        }
    }

    /// The task's references of this kind.
    pub fn references(self, task: &TaskSpec) -> &[FileReference] {
        match self {
            FileKind::Secret => &task.secrets,
            FileKind::Config => &task.configs,
        }
    }

    /// The stored object's name and value.
    pub fn lookup<'a>(self, state: &'a StoreState, id: &str) -> Option<(&'a str, &'a [u8])> {
        match self {
            FileKind::Secret => state.get_typed::<Secret>(id).map(|s| (s.name.as_str(), s.data.as_slice())),
            FileKind::Config => state.get_typed::<Config>(id).map(|c| (c.name.as_str(), c.data.as_slice())),
        }
    }
}

fn invalid(message: String) -> ManagerError {
    ManagerError::InvalidArgument(message)
}

/// Reads a spec's references, checking what needs no store: each names
/// something, and its target and mode are usable. Targets left empty take
/// the name once resolved.
pub fn references_from_pb(kind: FileKind, references: Vec<pb::FileReference>) -> Result<Vec<FileReference>, ManagerError> {
    references
        .into_iter()
        .map(|r| {
            let (id, name) = (r.id.trim().to_string(), r.name.trim().to_string());
            if id.is_empty() && name.is_empty() {
                return Err(invalid(format!(
                    "a --{0} names no {0}; use --{0} NAME or --{0} source=NAME,target=...",
                    kind.as_str()
                )));
            }
            let mode = r.mode.unwrap_or(DEFAULT_FILE_MODE);
            if mode > 0o777 {
                return Err(invalid(format!(
                    "mode {mode:o} of {} {} is invalid; give permission bits in octal, at most 0777 (e.g. 0400)",
                    kind.as_str(),
                    if name.is_empty() { &id } else { &name }
                )));
            }
            if !r.target.is_empty() {
                container_path(kind.to_pb(), &r.target).map_err(invalid)?;
            }
            Ok(FileReference { id, name, target: r.target, uid: r.uid, gid: r.gid, mode })
        })
        .collect()
}

pub fn references_to_pb(references: &[FileReference]) -> Vec<pb::FileReference> {
    references
        .iter()
        .map(|r| pb::FileReference {
            id: r.id.clone(),
            name: r.name.clone(),
            target: r.target.clone(),
            uid: r.uid,
            gid: r.gid,
            mode: Some(r.mode),
        })
        .collect()
}

/// A secret or config by id, then name, then unique id prefix; the error
/// names the reference and how to make one.
pub fn resolve(state: &StoreState, kind: FileKind, reference: &str) -> Result<(String, String), ManagerError> {
    let found = |object: &Object| match object {
        Object::Secret(s) => Some((s.meta.id.clone(), s.name.clone())),
        Object::Config(c) => Some((c.meta.id.clone(), c.name.clone())),
        _ => None,
    };
    let store_kind = kind.store_kind();
    if let Some(hit) = state.get(store_kind, reference).or_else(|| state.find_by_name(store_kind, reference)).and_then(found) {
        return Ok(hit);
    }
    let by_prefix: Vec<&Object> = if reference.is_empty() {
        Vec::new()
    } else {
        state.list(store_kind).filter(|o| o.id().starts_with(reference)).collect()
    };
    match by_prefix.as_slice() {
        [one] => found(one).ok_or_else(|| ManagerError::Internal(format!("{} {reference} is of another kind", kind.as_str()))),
        [] => Err(ManagerError::NotFound(format!(
            "{0} {reference:?} does not exist; create it with `shoal {0} create {reference} FILE` or list them with `shoal {0} ls`",
            kind.as_str()
        ))),
        many => Err(invalid(format!(
            "{} id prefix {reference:?} matches {} of them; give more of the id",
            kind.as_str(),
            many.len()
        ))),
    }
}

/// Pins every reference of `task` to the id it names now, fills names and
/// default targets, and refuses two files on one path.
pub fn resolve_references(state: &StoreState, task: &mut TaskSpec) -> Result<(), ManagerError> {
    let mut paths: BTreeMap<String, String> = BTreeMap::new();
    for kind in [FileKind::Secret, FileKind::Config] {
        let references = match kind {
            FileKind::Secret => &mut task.secrets,
            FileKind::Config => &mut task.configs,
        };
        for reference in references.iter_mut() {
            let (id, name) = if reference.id.is_empty() {
                resolve(state, kind, &reference.name)?
            } else {
                let name = kind.lookup(state, &reference.id).map(|(name, _)| name.to_string()).ok_or_else(|| {
                    ManagerError::NotFound(format!(
                        "{} {} (id {}) no longer exists; remove it from the service or name a current one",
                        kind.as_str(),
                        reference.name,
                        reference.id
                    ))
                })?;
                (reference.id.clone(), name)
            };
            reference.id = id;
            reference.name = name;
            if reference.target.is_empty() {
                reference.target = reference.name.clone();
            }
            let path = container_path(kind.to_pb(), &reference.target).map_err(invalid)?;
            let this = format!("{} {}", kind.as_str(), reference.name);
            if let Some(other) = paths.insert(path.clone(), this.clone()) {
                return Err(invalid(format!("{other} and {this} both target {path}; give each its own target")));
            }
        }
    }
    Ok(())
}

/// The services that use a secret or config: those whose spec names it,
/// and those with a task still running (or starting) with it.
pub fn users_of(state: &StoreState, kind: FileKind, id: &str) -> Vec<String> {
    let uses = |spec: &TaskSpec| kind.references(spec).iter().any(|r| r.id == id);
    let mut names: BTreeSet<String> =
        state.list_typed::<Service>().filter(|s| uses(&s.spec.task)).map(|s| s.spec.name.clone()).collect();
    names.extend(state.list_typed::<Task>().filter(|t| !t.status.state.is_terminal() && uses(&t.spec)).map(|t| t.service_name.clone()));
    names.into_iter().collect()
}

/// Every secret's or config's users at once, for `ls`.
pub fn all_users(state: &StoreState, kind: FileKind) -> BTreeMap<String, BTreeSet<String>> {
    let mut users: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let specs = state
        .list_typed::<Service>()
        .map(|s| (&s.spec.task, &s.spec.name))
        .chain(state.list_typed::<Task>().filter(|t| !t.status.state.is_terminal()).map(|t| (&t.spec, &t.service_name)));
    for (spec, service) in specs {
        for reference in kind.references(spec) {
            users.entry(reference.id.clone()).or_default().insert(service.clone());
        }
    }
    users
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{fixtures, Meta};

    fn secret(id: &str, name: &str) -> Object {
        Object::Secret(Secret { meta: Meta { id: id.into(), ..Default::default() }, name: name.into(), labels: Default::default(), data: b"v".to_vec() })
    }

    fn config(id: &str, name: &str) -> Object {
        Object::Config(Config { meta: Meta { id: id.into(), ..Default::default() }, name: name.into(), labels: Default::default(), data: b"c".to_vec() })
    }

    fn by_name(name: &str, target: &str) -> pb::FileReference {
        pb::FileReference { name: name.into(), target: target.into(), ..Default::default() }
    }

    fn state() -> StoreState {
        StoreState::from_objects([secret("sid1", "db_pass"), secret("sid2", "api_key"), config("cid1", "app.conf")])
    }

    #[test]
    fn references_resolve_to_ids_with_docker_defaults() {
        let mut task = TaskSpec {
            secrets: references_from_pb(FileKind::Secret, vec![by_name("db_pass", ""), by_name("sid2", "/etc/key")]).unwrap(),
            configs: references_from_pb(FileKind::Config, vec![by_name("app.conf", "")]).unwrap(),
            ..Default::default()
        };
        resolve_references(&state(), &mut task).unwrap();
        let db = &task.secrets[0];
        assert_eq!((db.id.as_str(), db.name.as_str(), db.target.as_str(), db.mode, db.uid), ("sid1", "db_pass", "db_pass", 0o444, 0));
        assert_eq!((task.secrets[1].id.as_str(), task.secrets[1].name.as_str()), ("sid2", "api_key"), "resolved by id, named");
        assert_eq!(task.configs[0].target, "app.conf");
        let shown = references_to_pb(&task.secrets);
        assert_eq!(shown[0].mode, Some(0o444));
        // Read back from inspect output, the references stay pinned.
        let again = references_from_pb(FileKind::Secret, shown).unwrap();
        assert_eq!(again, task.secrets);
    }

    #[test]
    fn bad_references_are_refused_naming_the_value() {
        let error = |kind, r: pb::FileReference| references_from_pb(kind, vec![r]).unwrap_err().to_string();
        assert!(error(FileKind::Secret, by_name("db_pass", "../x")).contains("\"../x\""));
        assert!(error(FileKind::Config, by_name("app.conf", "/etc/")).contains("\"/etc/\""));
        let mut wide = by_name("db_pass", "");
        wide.mode = Some(0o4755);
        assert!(error(FileKind::Secret, wide).contains("4755"));
        assert!(error(FileKind::Secret, by_name("", "")).contains("--secret NAME"));

        let mut unknown = TaskSpec { secrets: references_from_pb(FileKind::Secret, vec![by_name("nope", "")]).unwrap(), ..Default::default() };
        let message = resolve_references(&state(), &mut unknown).unwrap_err().to_string();
        assert!(message.contains("secret \"nope\" does not exist"), "{message}");

        let mut clash = TaskSpec {
            secrets: references_from_pb(FileKind::Secret, vec![by_name("db_pass", "/x"), by_name("api_key", "/x")]).unwrap(),
            ..Default::default()
        };
        let message = resolve_references(&state(), &mut clash).unwrap_err().to_string();
        assert!(message.contains("secret db_pass and secret api_key both target /x"), "{message}");

        let mut gone = TaskSpec {
            secrets: vec![FileReference { id: "old".into(), name: "was".into(), target: "was".into(), uid: 0, gid: 0, mode: 0o444 }],
            ..Default::default()
        };
        assert!(resolve_references(&state(), &mut gone).unwrap_err().to_string().contains("was (id old) no longer exists"));
    }

    #[test]
    fn users_are_services_naming_it_and_services_whose_tasks_still_run_with_it() {
        let reference = FileReference { id: "sid1".into(), name: "db_pass".into(), target: "db_pass".into(), uid: 0, gid: 0, mode: 0o444 };
        let mut service = fixtures::service("web");
        service.spec.task.secrets.push(reference.clone());
        let mut old_task = fixtures::task("t1", "api", crate::store::TaskState::Running);
        old_task.spec.secrets.push(reference);
        let mut ended = old_task.clone();
        ended.meta.id = "t2".into();
        ended.service_name = "gone".into();
        ended.status.state = crate::store::TaskState::Complete;
        let state = StoreState::from_objects(state().all_objects().cloned().chain([
            Object::Service(service),
            Object::Task(old_task),
            Object::Task(ended),
        ]));
        assert_eq!(users_of(&state, FileKind::Secret, "sid1"), ["api", "web"]);
        // The store itself refuses to delete what a service names.
        let mut store = state.clone();
        let delete = crate::store::Transaction::single(crate::store::Op::Delete { kind: Kind::Secret, id: "sid1".into() });
        let (refused, changes) = store.apply(9, &delete);
        assert_eq!(refused, Err(crate::store::TxnError::InUse { kind: Kind::Secret, name: "db_pass".into(), service: "web".into() }));
        assert!(changes.is_empty() && store.get(Kind::Secret, "sid1").is_some());
        let free = crate::store::Transaction::single(crate::store::Op::Delete { kind: Kind::Secret, id: "sid2".into() });
        store.apply(10, &free).0.expect("an unused secret goes");
        assert!(users_of(&state, FileKind::Secret, "sid2").is_empty());
        assert_eq!(all_users(&state, FileKind::Secret)["sid1"].len(), 2);
    }
}
