//! What `compose up` does to one service's containers, decided from what
//! the node has, without asking it anything: containers whose config hash
//! matches the file are left alone (started if stopped), changed ones are
//! recreated, missing numbers are created and numbers past the replica
//! count removed, as docker compose converges a project.

use super::project::LocalService;

/// One of the project's containers as the node lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Existing {
    pub name: String,
    /// From the container-number label; 0 when it has none.
    pub number: u64,
    pub config_hash: String,
    pub running: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Up to date; `start` when it is not running.
    Keep { name: String, start: bool },
    Create { number: u64 },
    /// Its config changed: removed, then created again.
    Recreate { name: String, number: u64 },
    /// Past the replica count, or a duplicate number.
    Remove { name: String },
}

/// The steps for `service`, removals first (they free host ports), then
/// the containers in number order. `force` recreates even unchanged ones.
pub fn service_steps(service: &LocalService, existing: &[Existing], force: bool) -> Vec<Step> {
    let mut removals = Vec::new();
    let mut kept = std::collections::BTreeMap::new();
    let mut sorted: Vec<&Existing> = existing.iter().collect();
    // Running ones first, so a duplicate number keeps the one that runs.
    sorted.sort_by_key(|e| (e.number, !e.running, e.name.clone()));
    for container in sorted {
        let wanted = (1..=service.replicas).contains(&container.number);
        if !wanted || kept.contains_key(&container.number) {
            removals.push(Step::Remove { name: container.name.clone() });
        } else {
            kept.insert(container.number, container);
        }
    }
    let mut steps = removals;
    for number in 1..=service.replicas {
        steps.push(match kept.get(&number) {
            None => Step::Create { number },
            Some(c) if force || c.config_hash != service.config_hash => Step::Recreate { name: c.name.clone(), number },
            Some(c) => Step::Keep { name: c.name.clone(), start: !c.running },
        });
    }
    steps
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::commands::compose::project::{self, CONFIG_HASH_LABEL};
    use crate::compose::ComposeFile;

    fn service(replicas: u64) -> LocalService {
        let file: ComposeFile = serde_yaml_ng::from_str(&format!("services:\n  web:\n    image: busybox\n    deploy: {{replicas: {replicas}}}\n")).unwrap();
        project::convert("app", &file, &BTreeMap::new()).unwrap().services.remove(0)
    }

    fn existing(number: u64, hash: &str, running: bool) -> Existing {
        Existing { name: format!("app-web-{number}"), number, config_hash: hash.into(), running }
    }

    #[test]
    fn a_new_service_creates_every_replica() {
        assert_eq!(service_steps(&service(2), &[], false), vec![Step::Create { number: 1 }, Step::Create { number: 2 }]);
    }

    #[test]
    fn unchanged_containers_stay_and_stopped_ones_start() {
        let web = service(2);
        let hash = web.config_hash.clone();
        let steps = service_steps(&web, &[existing(1, &hash, true), existing(2, &hash, false)], false);
        assert_eq!(
            steps,
            vec![Step::Keep { name: "app-web-1".into(), start: false }, Step::Keep { name: "app-web-2".into(), start: true }]
        );
        let forced = service_steps(&web, &[existing(1, &hash, true)], true);
        assert_eq!(forced[0], Step::Recreate { name: "app-web-1".into(), number: 1 });
    }

    #[test]
    fn a_changed_file_recreates_and_a_smaller_count_removes_the_highest() {
        let web = service(1);
        let steps = service_steps(&web, &[existing(1, "old", true), existing(2, "old", true)], false);
        assert_eq!(steps, vec![Step::Remove { name: "app-web-2".into() }, Step::Recreate { name: "app-web-1".into(), number: 1 }]);
    }

    #[test]
    fn the_hash_follows_the_spec_and_is_on_the_container() {
        let one = service(1);
        let request = one.container("app", 1);
        assert_eq!(request.name, "app-web-1");
        assert_eq!(request.labels[CONFIG_HASH_LABEL], one.config_hash);
        assert_eq!(service(1).config_hash, one.config_hash, "the same file, the same hash");
        let file: ComposeFile = serde_yaml_ng::from_str("services:\n  web:\n    image: busybox:2\n").unwrap();
        let changed = project::convert("app", &file, &BTreeMap::new()).unwrap().services.remove(0);
        assert_ne!(changed.config_hash, one.config_hash);
    }
}
