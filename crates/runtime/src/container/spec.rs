//! The OCI runtime spec for a container: oci-spec's runc-like defaults
//! (namespaces, /proc, /sys read-only, minimal /dev, Docker's masked and
//! read-only paths), tightened to Docker's capability set and
//! no_new_privs and a default seccomp profile, plus what the request and
//! image ask for.

use std::path::Path;

use oci_spec::runtime::Spec;
use serde_json::{json, Value};

use super::model::{ContainerRecord, MountSpec};
use super::cgroups::CPU_PERIOD_US;
use super::{process_options, seccomp, ContainerError};

/// The annotation that asks the container's first process to fork a
/// reaper as PID 1 (`--init`): the shim reads only the spec.
pub const INIT_ANNOTATION: &str = "io.shoal.init";



pub struct SpecInput<'a> {
    pub record: &'a ContainerRecord,
    pub rootfs: &'a Path,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub cgroups_path: String,
    pub network_namespace: Option<&'a Path>,
    /// Host directories of named volumes, in the order of `record.mounts`.
    pub volume_sources: Vec<Option<std::path::PathBuf>>,
    /// The /etc/hosts written for `--add-host`.
    pub hosts_file: Option<&'a Path>,
}

pub fn build(input: &SpecInput) -> Result<Spec, ContainerError> {
    let record = input.record;
    let mut spec = serde_json::to_value(Spec::default()).map_err(|e| ContainerError::Internal(format!("default spec: {e}")))?;

    let caps = process_options::capabilities(&record.options);
    let rlimits: Vec<Value> = record
        .options
        .ulimits
        .iter()
        .filter_map(|u| process_options::rlimit_name(&u.name).map(|kind| json!({ "type": kind, "soft": u.soft, "hard": u.hard })))
        .collect();
    spec["process"] = json!({
        "terminal": record.tty,
        "user": { "uid": input.uid, "gid": input.gid, "additionalGids": input.additional_gids },
        "args": record.args,
        "env": record.env,
        "cwd": record.workdir,
        "capabilities": { "bounding": caps, "effective": caps, "permitted": caps },
        "noNewPrivileges": true,
    });
    // Without --ulimit the container inherits the daemon's, as in docker.
    if !rlimits.is_empty() {
        spec["process"]["rlimits"] = json!(rlimits);
    }
    spec["root"] = json!({ "path": input.rootfs, "readonly": record.read_only });
    spec["hostname"] = json!(record.hostname);
    let mut annotations = record.labels.clone();
    annotations.remove(INIT_ANNOTATION);
    if record.options.init {
        annotations.insert(INIT_ANNOTATION.into(), "true".into());
    }
    spec["annotations"] = json!(annotations);

    let mounts = spec["mounts"].as_array_mut().ok_or_else(|| ContainerError::Internal("default spec has no mounts".into()))?;
    for (mount, volume_source) in record.mounts.iter().zip(&input.volume_sources) {
        // A user mount replaces a default one at the same place (e.g. /dev/shm).
        mounts.retain(|m| m["destination"] != json!(mount.target()));
        mounts.push(match mount {
            MountSpec::Bind { source, target, readonly } => json!({
                "destination": target, "type": "bind", "source": source,
                "options": bind_options(*readonly),
            }),
            MountSpec::Volume { target, readonly, .. } => json!({
                "destination": target, "type": "bind", "source": volume_source,
                "options": bind_options(*readonly),
            }),
            MountSpec::Tmpfs { target, size_bytes, mode } => {
                let mut options = vec!["nosuid".to_string(), "nodev".to_string()];
                if let Some(size) = size_bytes {
                    options.push(format!("size={size}"));
                }
                options.push(format!("mode={:o}", mode.unwrap_or(0o1777)));
                json!({ "destination": target, "type": "tmpfs", "source": "tmpfs", "options": options })
            }
        });
    }

    // --add-host: a hosts file of its own, unless the user mounts one.
    if let Some(hosts) = input.hosts_file {
        if !mounts.iter().any(|m| m["destination"] == json!("/etc/hosts")) {
            mounts.push(json!({ "destination": "/etc/hosts", "type": "bind", "source": hosts, "options": bind_options(true) }));
        }
    }

    let linux = &mut spec["linux"];
    linux["cgroupsPath"] = json!(input.cgroups_path);
    if !record.options.sysctls.is_empty() {
        linux["sysctl"] = json!(record.options.sysctls);
    }
    if let Some(netns) = input.network_namespace {
        for ns in linux["namespaces"].as_array_mut().into_iter().flatten() {
            if ns["type"] == "network" {
                ns["path"] = json!(netns);
            }
        }
    }
    let mut resources = json!({ "devices": [{ "allow": false, "access": "rwm" }] });
    if let Some(memory) = record.limits.memory_bytes {
        // Swap equal to the limit: no swap on top, as `--memory` alone means in docker without swap accounting.
        resources["memory"] = json!({ "limit": memory, "swap": memory });
    }
    if let Some(nano) = record.limits.nano_cpus {
        resources["cpu"] = json!({ "quota": nano * CPU_PERIOD_US / 1_000_000_000, "period": CPU_PERIOD_US });
    }
    if let Some(pids) = record.limits.pids {
        resources["pids"] = json!({ "limit": pids });
    }
    linux["resources"] = resources;
    linux["seccomp"] = seccomp::default_profile();

    serde_json::from_value(spec).map_err(|e| ContainerError::Internal(format!("building the OCI spec: {e}")))
}

fn bind_options(readonly: bool) -> Value {
    let mut options = vec!["rbind", "rprivate"];
    if readonly {
        options.push("ro");
    }
    json!(options)
}
