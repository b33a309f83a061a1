//! The Runtime service's conversions: the libraries' errors as gRPC
//! statuses (one sentence each), requests into the runtime's types, and
//! its answers into wire messages.

use std::time::Duration;

use shoal_proto::pb;
use shoal_runtime::container::logs::LogEntry;
use shoal_runtime::container::{
    ContainerError, ContainerSummary, CreateRequest, HealthStatus, Limits, MountSpec, Status as ContainerStatus,
};
use shoal_runtime::image::{ImageError, Reference};
use tonic::Status;

pub(super) fn image_status(error: ImageError) -> Status {
    let message = error.to_string();
    match error.root() {
        ImageError::InvalidReference { .. } => Status::invalid_argument(message),
        ImageError::NotFound { .. } | ImageError::NoSuchImage(_) => Status::not_found(message),
        ImageError::InUse { .. } | ImageError::MultipleTags { .. } | ImageError::AmbiguousId(_) => {
            Status::failed_precondition(message)
        }
        ImageError::AuthRefused { .. } | ImageError::LoginRefused { .. } => Status::permission_denied(message),
        ImageError::RegistryUnreachable { .. } => Status::unavailable(message),
        _ => Status::internal(message),
    }
}

pub(super) fn summary(image: &shoal_runtime::image::Image) -> pb::ImageSummary {
    let created_unix = image
        .created
        .as_deref()
        .and_then(|c| humantime::parse_rfc3339_weak(c.split('.').next().unwrap_or(c).trim_end_matches('Z')).ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    pb::ImageSummary {
        id: image.id.to_string(),
        references: image
            .repo_tags
            .iter()
            .map(|t| Reference::parse(t).map(|r| r.familiar()).unwrap_or_else(|_| t.clone()))
            .collect(),
        digest: image.repo_digests.first().cloned().unwrap_or_default(),
        size: image.size,
        created_unix,
    }
}

pub(super) fn container_status(error: ContainerError) -> Status {
    let message = error.to_string();
    match error {
        ContainerError::NotFound(_) | ContainerError::NoSuchVolume(_) => Status::not_found(message),
        ContainerError::NameInUse(_) => Status::already_exists(message),
        ContainerError::InvalidRequest(_) | ContainerError::InvalidMount(_) => Status::invalid_argument(message),
        ContainerError::Running(_) | ContainerError::NotRunning(_) | ContainerError::Ambiguous(_) => {
            Status::failed_precondition(message)
        }
        _ => Status::internal(message),
    }
}

pub(super) fn create_request(request: &pb::RunContainerRequest) -> Result<CreateRequest, Status> {
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let mounts = request
        .mounts
        .iter()
        .map(|m| match m.r#type.as_str() {
            "bind" => Ok(MountSpec::Bind { source: m.source.clone().into(), target: m.target.clone(), readonly: m.readonly }),
            // `-v /path` alone: an anonymous volume, named at random as docker does.
            "volume" if m.source.is_empty() => Ok(MountSpec::Volume { name: shoal_runtime::volume::anonymous_name(), target: m.target.clone(), readonly: m.readonly }),
            "volume" => Ok(MountSpec::Volume { name: m.source.clone(), target: m.target.clone(), readonly: m.readonly }),
            "tmpfs" => Ok(MountSpec::Tmpfs {
                target: m.target.clone(),
                size_bytes: (m.tmpfs_size > 0).then_some(m.tmpfs_size),
                mode: (m.tmpfs_mode > 0).then_some(m.tmpfs_mode),
            }),
            other => Err(Status::invalid_argument(format!("mount type {other:?} is unknown; use bind, volume or tmpfs"))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(CreateRequest {
        name: non_empty(&request.name),
        command: request.command.clone(),
        entrypoint: request.entrypoint.clone(),
        env: request.env.clone(),
        hostname: non_empty(&request.hostname),
        user: non_empty(&request.user),
        workdir: non_empty(&request.workdir),
        labels: request.labels.clone().into_iter().collect(),
        read_only: request.read_only,
        mounts,
        limits: Limits {
            memory_bytes: (request.memory_bytes > 0).then_some(request.memory_bytes),
            nano_cpus: (request.nano_cpus > 0).then_some(request.nano_cpus),
            pids: (request.pids_limit > 0).then_some(request.pids_limit),
        },
        network_namespace: None,
        auto_remove: request.auto_remove,
        tty: request.tty,
        open_stdin: request.open_stdin,
        healthcheck: request.healthcheck.as_ref().map(shoal_agent::health_config),
        options: shoal_agent::process_options(request.options.as_ref()),
        stop_signal: non_empty(&request.stop_signal),
        stop_timeout: request.stop_timeout_secs.map(|s| Duration::from_secs(s.into())),
    })
}

pub(super) fn volume_pb(volume: shoal_runtime::volume::Volume) -> pb::Volume {
    pb::Volume {
        name: volume.name,
        driver: volume.driver,
        mountpoint: volume.mountpoint.display().to_string(),
        created_at: volume.created_at,
        labels: volume.labels.into_iter().collect(),
        scope: volume.scope,
    }
}

pub(super) fn disk_usage_pb(usage: shoal_runtime::disk_usage::DiskUsage) -> pb::DiskUsageResponse {
    let category = |kind: pb::DiskUsageKind, category: shoal_runtime::disk_usage::Category| pb::DiskUsageCategory {
        kind: kind.into(),
        items: category.items.into_iter().map(|i| pb::DiskUsageItem { name: i.name, size_bytes: i.size, active: i.active }).collect(),
    };
    pb::DiskUsageResponse {
        categories: vec![
            category(pb::DiskUsageKind::Images, usage.images),
            category(pb::DiskUsageKind::Containers, usage.containers),
            category(pb::DiskUsageKind::Volumes, usage.volumes),
            category(pb::DiskUsageKind::Logs, usage.logs),
        ],
    }
}

pub(super) fn log_line(entry: LogEntry) -> pb::LogLine {
    pb::LogLine { time_unix_nanos: entry.time_unix_nanos(), stream: entry.stream.as_str().to_string(), data: entry.bytes }
}

pub(super) fn unix_secs(rfc3339: &str) -> i64 {
    humantime::parse_rfc3339(rfc3339)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// "Up 3 hours", "Exited (0) 2 minutes ago", "Created", as docker shows.
pub(super) fn status_text(c: &ContainerSummary) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let since = |t: &Option<String>| crate::output::human_duration(now.saturating_sub(t.as_deref().map(unix_secs).unwrap_or(now)).max(0) as u64);
    match c.status {
        ContainerStatus::Created => "Created".into(),
        ContainerStatus::Running if c.paused => format!("Up {} (Paused)", since(&c.started_at)),
        ContainerStatus::Running => match c.health {
            None => format!("Up {}", since(&c.started_at)),
            Some(HealthStatus::Starting) => format!("Up {} (health: starting)", since(&c.started_at)),
            Some(health) => format!("Up {} ({})", since(&c.started_at), health.as_str()),
        },
        ContainerStatus::Exited | ContainerStatus::Dead => {
            format!("Exited ({}) {} ago", c.exit_code.unwrap_or(-1), since(&c.finished_at))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_status_shows_health_as_docker() {
        let started = humantime::format_rfc3339_seconds(std::time::SystemTime::now() - std::time::Duration::from_secs(3 * 3600 + 600)).to_string();
        let row = |health| ContainerSummary {
            id: "c".into(),
            name: "c".into(),
            image: String::new(),
            image_id: String::new(),
            command: String::new(),
            created: started.clone(),
            status: ContainerStatus::Running,
            paused: false,
            exit_code: None,
            started_at: Some(started.clone()),
            finished_at: None,
            labels: Default::default(),
            health,
        };
        assert_eq!(status_text(&row(None)), "Up 3 hours");
        assert_eq!(status_text(&row(Some(HealthStatus::Starting))), "Up 3 hours (health: starting)");
        assert_eq!(status_text(&row(Some(HealthStatus::Healthy))), "Up 3 hours (healthy)");
        assert_eq!(status_text(&row(Some(HealthStatus::Unhealthy))), "Up 3 hours (unhealthy)");
    }
}
