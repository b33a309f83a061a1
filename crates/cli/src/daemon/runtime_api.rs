//! The `Runtime` gRPC service on the local socket: this node's images and
//! containers, as `docker image` / `docker container` reach dockerd.
//! Only translation lives here; the work is in `shoal_runtime`.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use shoal_proto::pb;
use shoal_overlay_net::dns::CONTAINER_RESOLV_CONF;
use shoal_overlay_net::local::PreparedSandbox;
use shoal_runtime::container::logs::LogOptions;
use shoal_runtime::container::{
    Attachment, ContainerError, ContainerManager, ImageInput, MountSpec, Rebind,
    Status as ContainerStatus,
};
use shoal_agent::executor::LABEL_TASK_ID as TASK_LABEL;
use shoal_runtime::commit::{self, CommitError, CommitOptions};
use shoal_runtime::image::{ImageStore, LayerStatus, Reference};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::runtime_wire::{container_status, create_request, image_status, log_line, status_text, summary, unix_secs, volume_pb};

type EventStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Cheap to clone: the local socket and, on a manager, its TLS port (for
/// client certificates) serve the same node.
#[derive(Clone)]
pub struct RuntimeApi {
    pub images: ImageStore,
    pub containers: Arc<ContainerManager>,
    /// This node's bridge networks; set once they are open.
    pub networks: Option<super::networks_api::ContainerNetworks>,
}

impl RuntimeApi {
    /// `container start`: a created container starts; a stopped one starts
    /// again, its networks prepared anew as its `run` asked; a running one
    /// is left alone, as docker does. With `attach`, the stdio of its
    /// process, connected from before it runs (or now, if it already does).
    pub(super) async fn start_any(&self, name: &str, attach: bool) -> Result<Option<Attachment>, Status> {
        let details = self.containers.inspect(name).map_err(container_status)?;
        let id = details.id.clone();
        let attachment = match details.state.status {
            ContainerStatus::Running if attach => return self.containers.attach(&id).map(Some).map_err(container_status),
            ContainerStatus::Running => return Ok(None),
            ContainerStatus::Created if attach => Some(self.containers.start_attached(&id).await.map_err(container_status)?),
            ContainerStatus::Created => {
                self.containers.start(&id).await.map_err(container_status)?;
                None
            }
            _ if details.labels.contains_key(TASK_LABEL) => {
                return Err(Status::failed_precondition(format!(
                    "container {} ran a swarm task, which the swarm replaces rather than restarts; see `shoal service ps`",
                    details.name
                )));
            }
            _ => {
                let prepared = match &self.networks {
                    Some(networks) => networks.prepare_again(&id).await?,
                    None => None,
                };
                let rebind = Rebind {
                    network_namespace: prepared.as_ref().map(|p| p.netns.clone()),
                    binds: prepared.iter().map(|p| (CONTAINER_RESOLV_CONF.to_string(), p.resolv_conf.clone())).collect(),
                };
                let started = if attach {
                    self.containers.start_again_attached(&id, rebind).await.map(Some)
                } else {
                    self.containers.start_again(&id, rebind).await.map(|()| None)
                };
                let attachment = self.settle_sandbox(prepared.as_ref(), started).await?;
                self.bind_sandbox(prepared.as_ref(), &id).await;
                attachment
            }
        };
        // Its networks go back when it exits.
        if let Some(networks) = &self.networks {
            networks.watch(id);
        }
        Ok(attachment)
    }

    /// A sandbox prepared for a create or start that failed goes back;
    /// the outcome as a reply.
    async fn settle_sandbox<T>(&self, prepared: Option<&PreparedSandbox>, outcome: Result<T, ContainerError>) -> Result<T, Status> {
        if outcome.is_err() {
            if let (Some(networks), Some(prepared)) = (&self.networks, prepared) {
                networks.abandon(prepared).await;
            }
        }
        outcome.map_err(container_status)
    }

    /// The sandbox is the container `id`'s now.
    async fn bind_sandbox(&self, prepared: Option<&PreparedSandbox>, id: &str) {
        if let (Some(networks), Some(prepared)) = (&self.networks, prepared) {
            networks.created(prepared, id).await;
        }
    }

    /// Frees a stopped or removed container's addresses and ports before
    /// the call returns, as docker does (its watcher would, a moment later),
    /// so the next `run -p` of the same port works at once.
    async fn release_networks(&self, reference: &str) {
        let Some(networks) = &self.networks else { return };
        let id = match self.containers.inspect(reference) {
            Ok(details) if details.state.status == ContainerStatus::Running => return,
            Ok(details) => details.id,
            Err(_) => reference.to_string(),
        };
        networks.release(&id).await;
    }

    /// The time a stop waits before SIGKILL: the caller's `-t`, else the
    /// container's own `--stop-timeout`, else docker's 10 s.
    fn stop_timeout(&self, request: &pb::StopContainerRequest) -> Result<Duration, Status> {
        if request.has_timeout {
            return Ok(Duration::from_secs(request.timeout_secs.into()));
        }
        let own = self.containers.stop_timeout(&request.name).map_err(container_status)?;
        Ok(own.unwrap_or(Duration::from_secs(DEFAULT_STOP_TIMEOUT_SECS)))
    }

    fn in_use(&self) -> impl Fn(&shoal_runtime::image::ImageId) -> bool {
        let used = self.containers.images_in_use();
        move |id: &shoal_runtime::image::ImageId| used.contains(&id.to_string())
    }
}

#[tonic::async_trait]
impl pb::runtime_server::Runtime for RuntimeApi {
    type PullImageStream = EventStream<pb::PullEvent>;

    async fn pull_image(&self, request: Request<pb::PullImageRequest>) -> Result<Response<Self::PullImageStream>, Status> {
        let request = request.into_inner();
        let reference = Reference::parse(&request.reference).map_err(image_status)?;
        let auth = crate::wire::registry_auth_from_wire(request.credentials.as_ref());
        let (events, stream) = mpsc::channel(64);
        let store = self.images.clone();
        tokio::spawn(async move {
            let progress_events = events.clone();
            let progress = move |p: shoal_runtime::image::PullProgress| {
                let (status, current, total) = match p.status {
                    LayerStatus::Waiting => ("Waiting", 0, 0),
                    LayerStatus::Downloading { current, total } => ("Downloading", current, total),
                    LayerStatus::Verifying => ("Verifying", 0, 0),
                    LayerStatus::Extracting => ("Extracting", 0, 0),
                    LayerStatus::Done => ("Pull complete", 0, 0),
                    LayerStatus::AlreadyExists => ("Already exists", 0, 0),
                };
                // Progress is best effort: a slow client misses bars, not the result.
                let _ = progress_events.try_send(Ok(pb::PullEvent {
                    layer: p.layer,
                    status: status.into(),
                    current,
                    total,
                    ..Default::default()
                }));
            };
            let result = store.pull(&reference, &auth, &progress).await;
            let last = match result {
                Ok(image) => Ok(pb::PullEvent {
                    image_id: image.id.to_string(),
                    digest: image
                        .repo_digests
                        .iter()
                        .find(|d| d.starts_with(&reference.name()))
                        .or(image.repo_digests.first())
                        .cloned()
                        .unwrap_or_default(),
                    ..Default::default()
                }),
                Err(e) => Err(image_status(e)),
            };
            let _ = events.send(last).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(stream))))
    }

    async fn list_images(&self, _: Request<pb::Empty>) -> Result<Response<pb::ListImagesResponse>, Status> {
        let images = self.images.list().await.iter().map(summary).collect();
        Ok(Response::new(pb::ListImagesResponse { images }))
    }

    async fn inspect_image(&self, request: Request<pb::ImageRef>) -> Result<Response<pb::JsonDocument>, Status> {
        let image = self.images.resolve(&request.into_inner().name).await.map_err(image_status)?;
        let json = serde_json::to_string(&image).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::JsonDocument { json }))
    }

    async fn image_history(&self, request: Request<pb::ImageRef>) -> Result<Response<pb::JsonDocument>, Status> {
        let steps = self.images.history(&request.into_inner().name).await.map_err(image_status)?;
        let json = serde_json::to_string(&steps).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::JsonDocument { json }))
    }

    async fn remove_image(&self, request: Request<pb::RemoveImageRequest>) -> Result<Response<pb::RemoveImageResponse>, Status> {
        let request = request.into_inner();
        let removed = self.images.remove(&request.name, request.force, &self.in_use()).await.map_err(image_status)?;
        Ok(Response::new(pb::RemoveImageResponse {
            untagged: removed.untagged,
            deleted: removed.deleted.iter().map(|d| d.to_string()).collect(),
        }))
    }

    async fn load_image(&self, request: Request<pb::LoadImageRequest>) -> Result<Response<pb::LoadImageResponse>, Status> {
        let path = std::path::PathBuf::from(request.into_inner().path);
        let images = self.images.load(&path).await.map_err(image_status)?;
        let loaded = images
            .iter()
            .flat_map(|image| {
                if image.repo_tags.is_empty() {
                    vec![image.id.to_string()]
                } else {
                    image.repo_tags.iter().map(|t| Reference::parse(t).map(|r| r.familiar()).unwrap_or_else(|_| t.clone())).collect()
                }
            })
            .collect();
        Ok(Response::new(pb::LoadImageResponse { loaded }))
    }

    async fn import_image(&self, request: Request<pb::ImportImageRequest>) -> Result<Response<pb::ImageRef>, Status> {
        let request = request.into_inner();
        let reference = Reference::parse(&request.reference).map_err(image_status)?;
        let image = self
            .images
            .import(std::path::Path::new(&request.path), &reference, request.cmd)
            .await
            .map_err(image_status)?;
        Ok(Response::new(pb::ImageRef { name: image.id.to_string() }))
    }

    async fn prune_images(&self, request: Request<pb::PruneImagesRequest>) -> Result<Response<pb::PruneImagesResponse>, Status> {
        let removed = self.images.prune(request.into_inner().all, &self.in_use()).await.map_err(image_status)?;
        Ok(Response::new(pb::PruneImagesResponse {
            deleted: removed.deleted.iter().map(|d| d.to_string()).collect(),
            reclaimed_bytes: removed.reclaimed_bytes,
        }))
    }

    async fn tag_image(&self, request: Request<pb::TagImageRequest>) -> Result<Response<pb::ImageRef>, Status> {
        let request = request.into_inner();
        let target = Reference::parse(&request.target).map_err(image_status)?;
        self.images.tag(&request.source, &target).await.map_err(image_status)?;
        Ok(Response::new(pb::ImageRef { name: target.familiar() }))
    }

    async fn disk_usage(&self, _: Request<pb::Empty>) -> Result<Response<pb::DiskUsageResponse>, Status> {
        let usage = shoal_runtime::disk_usage::measure(&self.images, &self.containers).await;
        Ok(Response::new(super::runtime_wire::disk_usage_pb(usage)))
    }

    type EventsStream = super::events_api::LocalEventStream;

    async fn events(&self, request: Request<pb::EventsRequest>) -> Result<Response<Self::EventsStream>, Status> {
        let (stream, truncated) = super::events_api::stream(request.into_inner());
        Ok(shoal_proto::event_stream::response(stream, truncated))
    }

    async fn commit_container(&self, request: Request<pb::CommitContainerRequest>) -> Result<Response<pb::ImageRef>, Status> {
        let request = request.into_inner();
        let reference = match request.reference.as_str() {
            "" => None,
            name => Some(Reference::parse(name).map_err(image_status)?),
        };
        let non_empty = |s: String| (!s.is_empty()).then_some(s);
        let options = CommitOptions {
            reference,
            author: non_empty(request.author),
            message: non_empty(request.message),
            changes: request.changes,
            pause: !request.no_pause,
        };
        let image = commit::commit(&self.containers, &self.images, &request.container, options).await.map_err(|e| match e {
            CommitError::Container(e) => container_status(e),
            CommitError::Image(e) => image_status(e),
            CommitError::InvalidChange(message) => Status::invalid_argument(message),
            CommitError::Layer(e) => Status::internal(CommitError::Layer(e).to_string()),
        })?;
        Ok(Response::new(pb::ImageRef { name: image.id.to_string() }))
    }

    type PushImageStream = EventStream<pb::PushEvent>;

    async fn push_image(&self, request: Request<pb::PushImageRequest>) -> Result<Response<Self::PushImageStream>, Status> {
        Ok(Response::new(Box::pin(super::registry_api::push(self.images.clone(), request.into_inner()))))
    }

    async fn login(&self, request: Request<pb::LoginRequest>) -> Result<Response<pb::Empty>, Status> {
        super::registry_api::login(&self.images, request.into_inner()).await?;
        Ok(Response::new(pb::Empty {}))
    }

    type RunContainerStream = EventStream<pb::RunEvent>;

    async fn run_container(&self, request: Request<pb::RunContainerRequest>) -> Result<Response<Self::RunContainerStream>, Status> {
        let request = request.into_inner();
        let detach = request.detach;
        let image = self.images.resolve(&request.image).await.map_err(image_status)?;
        let input = ImageInput::from_store(&image, &request.image);
        let mut create = create_request(&request)?;
        // In the foreground the relay below removes the container once it
        // has sent the last output and the exit; the daemon must not race it.
        create.auto_remove = request.auto_remove && detach;
        // Addresses, published ports and the sandbox come first: the
        // container is created inside the sandbox, and a port in use must
        // refuse the run before anything exists.
        let prepared = match &self.networks {
            Some(networks) => networks.prepare(&request).await?,
            None => None,
        };
        create.network_namespace = prepared.as_ref().map(|p| p.netns.clone());
        // Names resolve through the node's embedded DNS; a mount of the
        // user's own at /etc/resolv.conf wins, as in docker.
        if let Some(prepared) = &prepared {
            if !create.mounts.iter().any(|m| m.target() == CONTAINER_RESOLV_CONF) {
                create.mounts.push(MountSpec::Bind { source: prepared.resolv_conf.clone(), target: CONTAINER_RESOLV_CONF.into(), readonly: true });
            }
        }
        let created = self.containers.create(create, &input).await;
        let id = self.settle_sandbox(prepared.as_ref(), created).await?;
        self.bind_sandbox(prepared.as_ref(), &id).await;
        if let Some(networks) = &self.networks {
            networks.remember(&id, &request);
        }
        if request.create_only {
            let created = pb::RunEvent { event: Some(pb::run_event::Event::Created(id)) };
            return Ok(Response::new(Box::pin(tokio_stream::once(Ok(created)))));
        }
        if let Err(e) = self.containers.start(&id).await {
            let _ = self.containers.remove(&id, true).await;
            if let Some(networks) = &self.networks {
                networks.release(&id).await;
            }
            return Err(container_status(e));
        }
        if let (Some(networks), Some(_)) = (&self.networks, &prepared) {
            networks.watch(id.clone());
        }
        let (events, stream) = mpsc::channel(64);
        let _ = events.send(Ok(pb::RunEvent { event: Some(pb::run_event::Event::Created(id.clone())) })).await;
        if !detach {
            let containers = self.containers.clone();
            let auto_remove = request.auto_remove;
            tokio::spawn(async move {
                let options = LogOptions { follow: true, tail: None, timestamps: true };
                let Ok(mut lines) = containers.logs(&id, options) else { return };
                while let Some(line) = lines.next().await {
                    if events.send(Ok(pb::RunEvent { event: Some(pb::run_event::Event::Output(log_line(line))) })).await.is_err() {
                        return;
                    }
                }
                let exit = match containers.wait(&id).await {
                    Ok(exit) => pb::ContainerExit { code: exit.code, oom_killed: exit.oom_killed, error: exit.error.unwrap_or_default() },
                    Err(e) => pb::ContainerExit { code: 125, oom_killed: false, error: e.to_string() },
                };
                if auto_remove {
                    let _ = containers.remove(&id, true).await;
                }
                let _ = events.send(Ok(pb::RunEvent { event: Some(pb::run_event::Event::Exit(exit)) })).await;
            });
        }
        Ok(Response::new(Box::pin(ReceiverStream::new(stream))))
    }

    async fn list_containers(&self, request: Request<pb::ListContainersRequest>) -> Result<Response<pb::ListContainersResponse>, Status> {
        let containers = self
            .containers
            .list(request.into_inner().all)
            .into_iter()
            .map(|c| pb::ContainerSummary {
                status: status_text(&c),
                state: if c.paused { "paused".into() } else { c.status.as_str().into() },
                created_unix: unix_secs(&c.created),
                id: c.id,
                name: c.name,
                image: c.image,
                command: c.command,
                labels: c.labels.into_iter().collect(),
            })
            .collect();
        Ok(Response::new(pb::ListContainersResponse { containers }))
    }

    async fn inspect_container(&self, request: Request<pb::ContainerRef>) -> Result<Response<pb::JsonDocument>, Status> {
        let details = self.containers.inspect(&request.into_inner().name).map_err(container_status)?;
        let mut value = serde_json::to_value(&details).map_err(|e| Status::internal(e.to_string()))?;
        // The runtime knows nothing of networks; the daemon adds them.
        if let (Some(networks), Some(object)) = (&self.networks, value.as_object_mut()) {
            object.insert("network_settings".into(), networks.settings(&details.id).await);
        }
        let json = serde_json::to_string(&value).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::JsonDocument { json }))
    }

    async fn stop_container(&self, request: Request<pb::StopContainerRequest>) -> Result<Response<pb::Empty>, Status> {
        let request = request.into_inner();
        let timeout = self.stop_timeout(&request)?;
        self.containers.stop(&request.name, timeout).await.map_err(container_status)?;
        self.release_networks(&request.name).await;
        Ok(Response::new(pb::Empty {}))
    }

    async fn kill_container(&self, request: Request<pb::KillContainerRequest>) -> Result<Response<pb::Empty>, Status> {
        let request = request.into_inner();
        self.containers.kill(&request.name, &request.signal).await.map_err(container_status)?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn remove_container(&self, request: Request<pb::RemoveContainerRequest>) -> Result<Response<pb::Empty>, Status> {
        let request = request.into_inner();
        let id = self.containers.inspect(&request.name).map(|d| d.id).map_err(container_status)?;
        self.containers.remove(&id, request.force).await.map_err(container_status)?;
        self.release_networks(&id).await;
        if let Some(networks) = &self.networks {
            networks.forget(&id);
        }
        Ok(Response::new(pb::Empty {}))
    }

    type ContainerLogsStream = EventStream<pb::LogLine>;

    async fn container_logs(&self, request: Request<pb::ContainerLogsRequest>) -> Result<Response<Self::ContainerLogsStream>, Status> {
        let request = request.into_inner();
        let lines = self
            .containers
            .logs(&request.name, LogOptions { follow: request.follow, tail: request.tail.map(|t| t as usize), timestamps: true })
            .map_err(container_status)?;
        let (since, until) = (request.since_unix_nanos.unwrap_or(i64::MIN), request.until_unix_nanos.unwrap_or(i64::MAX));
        let stream = lines
            .take_while(move |line| std::future::ready(line.time_unix_nanos() < until))
            .filter(move |line| std::future::ready(line.time_unix_nanos() >= since))
            .map(|line| Ok(log_line(line)));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn rename_container(&self, request: Request<pb::RenameContainerRequest>) -> Result<Response<pb::Empty>, Status> {
        let request = request.into_inner();
        self.containers.rename(&request.name, &request.new_name).map_err(container_status)?;
        if let (Some(networks), Ok(details)) = (&self.networks, self.containers.inspect(&request.new_name)) {
            networks.renamed(&details.id, &request.new_name).await;
        }
        Ok(Response::new(pb::Empty {}))
    }

    async fn start_container(&self, request: Request<pb::ContainerRef>) -> Result<Response<pb::Empty>, Status> {
        self.start_any(&request.into_inner().name, false).await?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn restart_container(&self, request: Request<pb::StopContainerRequest>) -> Result<Response<pb::Empty>, Status> {
        let request = request.into_inner();
        let timeout = self.stop_timeout(&request)?;
        self.containers.stop(&request.name, timeout).await.map_err(container_status)?;
        self.release_networks(&request.name).await;
        self.start_any(&request.name, false).await?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn pause_container(&self, request: Request<pb::ContainerRef>) -> Result<Response<pb::Empty>, Status> {
        self.containers.pause(&request.into_inner().name).await.map_err(container_status)?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn unpause_container(&self, request: Request<pb::ContainerRef>) -> Result<Response<pb::Empty>, Status> {
        self.containers.unpause(&request.into_inner().name).await.map_err(container_status)?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn top_container(&self, request: Request<pb::ContainerRef>) -> Result<Response<pb::TopResponse>, Status> {
        let processes = self.containers.top(&request.into_inner().name).map_err(container_status)?;
        Ok(Response::new(pb::TopResponse {
            titles: shoal_runtime::container::top::TITLES.iter().map(|t| t.to_string()).collect(),
            processes: processes.iter().map(|p| pb::TopRow { fields: p.row() }).collect(),
        }))
    }

    async fn container_stats(&self, request: Request<pb::ContainerRef>) -> Result<Response<pb::ContainerUsage>, Status> {
        let (id, name, usage) = self.containers.stats(&request.into_inner().name).map_err(container_status)?;
        Ok(Response::new(pb::ContainerUsage {
            id,
            name,
            cpu_nanos: usage.cpu_nanos,
            memory_bytes: usage.memory_bytes,
            memory_limit_bytes: usage.memory_limit_bytes,
            pids: usage.pids,
            net_rx_bytes: usage.net_rx_bytes,
            net_tx_bytes: usage.net_tx_bytes,
            block_read_bytes: usage.block_read_bytes,
            block_write_bytes: usage.block_write_bytes,
        }))
    }

    async fn prune_containers(&self, _: Request<pb::Empty>) -> Result<Response<pb::PruneContainersResponse>, Status> {
        let mut deleted = Vec::new();
        let mut reclaimed_bytes = 0;
        for container in self.containers.list(true).into_iter().filter(|c| c.status != ContainerStatus::Running) {
            let size = self.containers.writable_layer_size(&container.id).unwrap_or(0);
            // One that started or went meanwhile is left alone.
            if self.containers.remove(&container.id, false).await.is_ok() {
                self.release_networks(&container.id).await;
                if let Some(networks) = &self.networks {
                    networks.forget(&container.id);
                }
                reclaimed_bytes += size;
                deleted.push(container.id);
            }
        }
        Ok(Response::new(pb::PruneContainersResponse { deleted, reclaimed_bytes }))
    }

    async fn create_volume(&self, request: Request<pb::CreateVolumeRequest>) -> Result<Response<pb::Volume>, Status> {
        let request = request.into_inner();
        let labels = request.labels.into_iter().collect();
        let volume = self.containers.volumes().create(Some(&request.name), labels).map_err(container_status)?;
        Ok(Response::new(volume_pb(volume)))
    }

    async fn list_volumes(&self, _: Request<pb::Empty>) -> Result<Response<pb::ListVolumesResponse>, Status> {
        let volumes = self.containers.volumes().list().into_iter().map(volume_pb).collect();
        Ok(Response::new(pb::ListVolumesResponse { volumes }))
    }

    async fn inspect_volume(&self, request: Request<pb::VolumeRef>) -> Result<Response<pb::Volume>, Status> {
        let volume = self.containers.volumes().inspect(&request.into_inner().name).map_err(container_status)?;
        Ok(Response::new(volume_pb(volume)))
    }

    async fn remove_volume(&self, request: Request<pb::VolumeRef>) -> Result<Response<pb::Empty>, Status> {
        let name = request.into_inner().name;
        let users = self.containers.volume_users().remove(&name).unwrap_or_default();
        self.containers.volumes().remove(&name, &users).map_err(container_status)?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn prune_volumes(&self, _: Request<pb::Empty>) -> Result<Response<pb::PruneVolumesResponse>, Status> {
        let (deleted, reclaimed_bytes) = self.containers.volumes().prune(&self.containers.volume_users());
        Ok(Response::new(pb::PruneVolumesResponse { deleted, reclaimed_bytes }))
    }

    type ExecContainerStream = EventStream<pb::ExecOutput>;

    async fn exec_container(
        &self,
        request: Request<tonic::Streaming<pb::ExecInput>>,
    ) -> Result<Response<Self::ExecContainerStream>, Status> {
        let replies = super::exec_api::exec(self.containers.clone(), request.into_inner()).await?;
        Ok(Response::new(Box::pin(replies)))
    }

    type CopyFromContainerStream = EventStream<pb::CopyFromReply>;

    async fn copy_from_container(&self, request: Request<pb::CopyFromRequest>) -> Result<Response<Self::CopyFromContainerStream>, Status> {
        let replies = super::copy_api::copy_from(self.containers.clone(), request.into_inner()).await?;
        Ok(Response::new(Box::pin(replies)))
    }

    async fn copy_to_container(&self, request: Request<tonic::Streaming<pb::CopyToInput>>) -> Result<Response<pb::CopyToResult>, Status> {
        Ok(Response::new(super::copy_api::copy_to(self.containers.clone(), request.into_inner()).await?))
    }

    type AttachStdioStream = EventStream<pb::ExecOutput>;

    async fn attach_stdio(&self, request: Request<tonic::Streaming<pb::AttachInput>>) -> Result<Response<Self::AttachStdioStream>, Status> {
        let mut input = request.into_inner();
        let start = match input.message().await? {
            Some(pb::AttachInput { input: Some(pb::attach_input::Input::Start(start)) }) => start,
            _ => return Err(Status::invalid_argument("an attach must first name its container (AttachStart)")),
        };
        let id = self.containers.inspect(&start.container).map(|d| d.id).map_err(container_status)?;
        // Held from before the start: the exit code survives a --rm removal.
        let exit = self.containers.waiter(&id).map_err(container_status)?;
        let attachment = if start.start {
            self.start_any(&id, true).await?.ok_or_else(|| Status::internal("the container started without its stdio"))?
        } else {
            self.containers.attach(&id).map_err(container_status)?
        };
        let replies = super::attach_api::relay(attachment, start.size, input, exit);
        Ok(Response::new(Box::pin(replies)))
    }

    async fn wait_container(&self, request: Request<pb::ContainerRef>) -> Result<Response<pb::ContainerExit>, Status> {
        let exit = self.containers.wait(&request.into_inner().name).await.map_err(container_status)?;
        Ok(Response::new(pb::ContainerExit { code: exit.code, oom_killed: exit.oom_killed, error: exit.error.unwrap_or_default() }))
    }
}

/// docker's default grace period for `stop`.
const DEFAULT_STOP_TIMEOUT_SECS: u64 = 10;

