//! The compose keys Shoal knows and does not honour, each with the reason
//! a user is told. The loader takes them out of the file with one warning
//! each before reading it, so nothing is dropped silently and anything not
//! listed here or in the model is refused as unknown.

use serde_yaml_ng::{Mapping, Value};

/// Service keys, and why they are ignored.
const SERVICE_KEYS: &[(&str, &str)] = &[
    ("build", "Shoal deploys images and does not build them; build and push the image first"),
    ("container_name", "a service's containers are named after the service and slot"),
    ("links", "services reach each other by name on shared networks"),
    ("external_links", "services reach each other by name on shared networks"),
    ("network_mode", "tasks join the networks listed under `networks`"),
    ("privileged", "Shoal does not run privileged containers"),
    ("devices", "Shoal does not pass host devices into containers"),
    ("device_cgroup_rules", "Shoal does not pass host devices into containers"),
    ("ipc", "containers do not share IPC namespaces"),
    ("pid", "containers do not share PID namespaces"),
    ("uts", "containers do not share UTS namespaces"),
    ("userns_mode", "user namespaces are not configurable"),
    ("cgroup", "cgroup namespaces are not configurable"),
    ("cgroup_parent", "Shoal places containers in its own cgroups"),
    ("security_opt", "seccomp, AppArmor and SELinux options are not configurable"),
    ("logging", "logs are kept by Shoal and read with `service logs`"),
    ("expose", "every port of a task is reachable on its networks; publish with `ports`"),
    ("profiles", "every service of the file is deployed"),
    ("platform", "images run on the node's own platform"),
    ("pull_policy", "images are pulled when a node lacks them"),
    ("domainname", "not supported"),
    ("mac_address", "addresses on Shoal networks are assigned"),
    ("shm_size", "not supported"),
    ("oom_kill_disable", "not supported"),
    ("oom_score_adj", "not supported"),
    ("mem_limit", "a version 2 key; use deploy.resources.limits.memory"),
    ("mem_reservation", "a version 2 key; use deploy.resources.reservations.memory"),
    ("memswap_limit", "not supported"),
    ("mem_swappiness", "not supported"),
    ("cpus", "a version 2 key; use deploy.resources.limits.cpus"),
    ("cpu_count", "a version 2 key; use deploy.resources.limits.cpus"),
    ("cpu_percent", "a version 2 key; use deploy.resources.limits.cpus"),
    ("cpu_shares", "a version 2 key; use deploy.resources.reservations.cpus"),
    ("cpu_quota", "a version 2 key; use deploy.resources.limits.cpus"),
    ("cpu_period", "a version 2 key; use deploy.resources.limits.cpus"),
    ("cpu_rt_runtime", "not supported"),
    ("cpu_rt_period", "not supported"),
    ("cpuset", "not supported"),
    ("pids_limit", "a version 2 key; use deploy.resources.limits.pids"),
    ("blkio_config", "not supported"),
    ("storage_opt", "not supported"),
    ("volumes_from", "share data through a named volume instead"),
    ("credential_spec", "a Windows option"),
    ("isolation", "a Windows option"),
    ("group_add", "not supported"),
    ("scale", "a version 2 key; use deploy.replicas"),
    ("runtime", "containers run on Shoal's own runtime"),
    ("annotations", "not supported"),
    ("attach", "not supported"),
    ("develop", "not supported"),
    ("label_file", "not supported"),
    ("lifecycle_hooks", "not supported"),
    ("post_start", "not supported"),
    ("pre_stop", "not supported"),
    ("gpus", "not supported"),
];

/// deploy.resources.reservations keys.
const RESERVATION_KEYS: &[(&str, &str)] = &[
    ("generic_resources", "generic resources are not scheduled"),
    ("devices", "Shoal does not pass host devices into containers"),
];

/// Top-level secret and config keys.
const FILE_OBJECT_KEYS: &[(&str, &str)] = &[
    ("driver", "secrets and configs are kept in the managers' store"),
    ("driver_opts", "secrets and configs are kept in the managers' store"),
    ("template_driver", "templated configs are not supported; the file is used as it is"),
];

/// Takes the ignored keys out of `file` (already a mapping), returning one
/// warning per key and place.
pub fn take_ignored(file: &mut Mapping) -> Vec<String> {
    let mut warnings = Vec::new();
    if let Some(Value::Mapping(services)) = file.get_mut("services") {
        for (name, service) in services.iter_mut() {
            let name = name.as_str().unwrap_or("?");
            let Value::Mapping(service) = service else { continue };
            take(service, SERVICE_KEYS, &format!("services.{name}"), &mut warnings);
            if let Some(Value::Mapping(deploy)) = service.get_mut("deploy") {
                if let Some(Value::Mapping(resources)) = deploy.get_mut("resources") {
                    if let Some(Value::Mapping(reservations)) = resources.get_mut("reservations") {
                        take(reservations, RESERVATION_KEYS, &format!("services.{name}.deploy.resources.reservations"), &mut warnings);
                    }
                }
            }
        }
    }
    for (section, keys) in [("secrets", FILE_OBJECT_KEYS), ("configs", FILE_OBJECT_KEYS)] {
        if let Some(Value::Mapping(entries)) = file.get_mut(section) {
            for (name, entry) in entries.iter_mut() {
                let name = name.as_str().unwrap_or("?");
                if let Value::Mapping(entry) = entry {
                    take(entry, keys, &format!("{section}.{name}"), &mut warnings);
                }
            }
        }
    }
    warnings
}

fn take(mapping: &mut Mapping, keys: &[(&str, &str)], path: &str, warnings: &mut Vec<String>) {
    for (key, why) in keys {
        if mapping.remove(*key).is_some() {
            warnings.push(format!("{path}.{key} is ignored: {why}"));
        }
    }
}

/// Removes `x-` extension fields wherever compose allows them (the top
/// level and each service, network, volume, secret and config, and their
/// nested options), leaving maps of user data (environment, labels) alone.
pub fn strip_extensions(value: &mut Value) {
    const USER_DATA: &[&str] = &["environment", "labels", "sysctls", "extra_hosts", "driver_opts", "options", "aux_addresses"];
    if let Value::Mapping(mapping) = value {
        mapping.retain(|key, _| !key.as_str().is_some_and(|k| k.starts_with("x-")));
        for (key, child) in mapping.iter_mut() {
            if !key.as_str().is_some_and(|k| USER_DATA.contains(&k)) {
                strip_extensions(child);
            }
        }
    } else if let Value::Sequence(items) = value {
        items.iter_mut().for_each(strip_extensions);
    }
}
