//! `shoal daemon --metrics-addr IP:PORT`: the node's Prometheus endpoint,
//! `GET /metrics` in Prometheus's text format. Off unless asked for, as
//! dockerd's. Each library registers its own metrics (runtime, networking,
//! manager); this only serves them.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use prometheus_client::registry::Registry;

/// Prometheus's text exposition format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Parses `--metrics-addr`.
pub fn parse_address(value: &str) -> Result<SocketAddr, String> {
    value
        .parse::<SocketAddr>()
        .map_err(|_| format!("--metrics-addr {value:?} is not an address; give IP:PORT, such as 127.0.0.1:9323 or 0.0.0.0:9323"))
}

/// Binds the endpoint's port now, so a port in use stops the daemon at
/// start with a sentence rather than later in a log line.
pub async fn bind(address: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(address).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            anyhow::anyhow!("--metrics-addr {address} is in use by another program; choose another port or stop what listens there")
        }
        std::io::ErrorKind::AddrNotAvailable => {
            anyhow::anyhow!("--metrics-addr {address} is not an address of this host; give one of its addresses, or 0.0.0.0")
        }
        _ => anyhow::anyhow!("cannot serve metrics on {address}: {e}"),
    })
}

/// Everything the node's parts registered, gathered into one registry.
pub fn registry(
    containers: Arc<shoal_runtime::container::ContainerManager>,
    dataplane: Option<Arc<shoal_overlay_net::dataplane::Dataplane>>,
    managers: shoal_manager::api::ManagerSlot,
) -> Registry {
    let mut registry = Registry::default();
    shoal_runtime::metrics::register(&mut registry, containers);
    shoal_overlay_net::metrics::register(&mut registry, dataplane);
    shoal_manager::metrics::register(&mut registry, managers);
    registry
}

/// Serves `registry` on `listener` until the daemon stops.
pub fn serve(listener: tokio::net::TcpListener, registry: Registry) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let address = listener.local_addr().context("the metrics listener's address")?;
    let registry = Arc::new(registry);
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let registry = registry.clone();
            async move {
                let mut body = String::new();
                match prometheus_client::encoding::prometheus_text::encode(&mut body, &registry) {
                    Ok(()) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response(),
                    Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "the metrics could not be written").into_response(),
                }
            }
        }),
    );
    tracing::info!(%address, "serving Prometheus metrics at /metrics");
    Ok(tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "the metrics endpoint stopped");
        }
    }))
}
