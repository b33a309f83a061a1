//! What the runtime exports to Prometheus: containers by state (read at
//! scrape time), how long starts take, OOM kills, image pulls and their
//! bytes. The counters are process-wide (one runtime per daemon); the
//! daemon registers them, with the collector, in its registry.

use std::sync::{Arc, LazyLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::container::{ContainerManager, Status as ContainerStatus};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `ok` or `error`.
    pub result: &'static str,
}

pub struct RuntimeMetrics {
    pub container_start_seconds: Histogram,
    pub oom_kills: Counter,
    pub image_pulls: Family<ResultLabel, Counter>,
    pub image_pull_bytes: Counter,
}

static METRICS: LazyLock<RuntimeMetrics> = LazyLock::new(|| RuntimeMetrics {
    // 5 ms .. ~10 s: a start is tens of milliseconds; a slow disk, seconds.
    container_start_seconds: Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.005, 2.0, 12)),
    oom_kills: Counter::default(),
    image_pulls: Family::default(),
    image_pull_bytes: Counter::default(),
});

pub fn metrics() -> &'static RuntimeMetrics {
    &METRICS
}

/// Adds the runtime's metrics to `registry`; `containers` is read on each scrape.
pub fn register(registry: &mut Registry, containers: Arc<ContainerManager>) {
    let m = metrics();
    // Both results from the start, so a rate never meets a missing series.
    for result in ["ok", "error"] {
        let _ = m.image_pulls.get_or_create(&ResultLabel { result });
    }
    registry.register_with_unit(
        "shoal_container_start",
        "Time from asking a container's shim to start it until its process runs",
        prometheus_client::registry::Unit::Seconds,
        m.container_start_seconds.clone(),
    );
    registry.register("shoal_container_oom_kills", "Containers the kernel killed for running out of memory", m.oom_kills.clone());
    registry.register("shoal_image_pulls", "Image pulls, by result", m.image_pulls.clone());
    registry.register_with_unit(
        "shoal_image_pull",
        "Bytes of image layers downloaded",
        prometheus_client::registry::Unit::Bytes,
        m.image_pull_bytes.clone(),
    );
    registry.register_collector(Box::new(ContainerStates { containers }));
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

/// `shoal_containers{state}`, counted from the runtime's list when scraped.
struct ContainerStates {
    containers: Arc<ContainerManager>,
}

impl std::fmt::Debug for ContainerStates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ContainerStates")
    }
}

impl Collector for ContainerStates {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let family = Family::<StateLabel, Gauge>::default();
        // Every state appears, at zero too, so a query never finds a gap.
        for state in ["created", "running", "paused", "exited", "dead"] {
            let _ = family.get_or_create(&StateLabel { state });
        }
        for container in self.containers.list(true) {
            let state = match container.status {
                ContainerStatus::Running if container.paused => "paused",
                other => other.as_str(),
            };
            family.get_or_create(&StateLabel { state }).inc();
        }
        let metric = encoder.encode_descriptor("shoal_containers", "Containers on this node, by state", None, family.metric_type())?;
        family.encode(metric)
    }
}
