//! `PushImage` and `Login` on the Runtime service: the image store's push
//! and credential check, relayed.

use shoal_proto::pb;
use shoal_runtime::image::ImageStore;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::runtime_wire::image_status;
use crate::wire::registry_auth_from_wire;

/// Pushes the image `request` names; a layer event as each blob is done,
/// then the manifest's digest (or the failure).
pub fn push(images: ImageStore, request: pb::PushImageRequest) -> ReceiverStream<Result<pb::PushEvent, Status>> {
    let (events, stream) = mpsc::channel(64);
    tokio::spawn(async move {
        let auth = registry_auth_from_wire(request.credentials.as_ref());
        let layer_events = events.clone();
        let on_layer = move |layer: &str, already_existed: bool| {
            let layer = pb::PushedLayer { layer: layer.to_string(), already_existed };
            let _ = layer_events.try_send(Ok(pb::PushEvent { event: Some(pb::push_event::Event::Layer(layer)) }));
        };
        let last = match images.push(&request.reference, &auth, &on_layer).await {
            Ok(pushed) => Ok(pb::PushEvent {
                event: Some(pb::push_event::Event::Done(pb::PushedImage {
                    tag: pushed.reference.tag().unwrap_or("latest").to_string(),
                    digest: pushed.digest.to_string(),
                    size: pushed.size,
                })),
            }),
            Err(e) => Err(image_status(e)),
        };
        let _ = events.send(last).await;
    });
    ReceiverStream::new(stream)
}

pub async fn login(images: &ImageStore, request: pb::LoginRequest) -> Result<(), Status> {
    let auth = registry_auth_from_wire(request.credentials.as_ref());
    images.verify_login(&request.registry, &auth).await.map_err(image_status)
}
