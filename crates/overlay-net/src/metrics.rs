//! What the node's networking exports to Prometheus: the embedded DNS's
//! questions (by answer code) and how long answers take, and the WireGuard
//! device's bytes and handshake age per peer node, read from the device at
//! scrape time. Every overlay shares the node's one device, so the bytes
//! are per peer, not per network.

use std::sync::{Arc, LazyLock};
use std::time::SystemTime;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::dataplane::Dataplane;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    /// The answer's DNS response code: noerror, nxdomain, servfail, refused, formerr, notimp or other.
    pub code: &'static str,
}

pub struct NetworkMetrics {
    pub dns_queries: Family<CodeLabel, Counter>,
    pub dns_answer_seconds: Histogram,
}

static METRICS: LazyLock<NetworkMetrics> = LazyLock::new(|| NetworkMetrics {
    dns_queries: Family::default(),
    // 50 µs .. ~1.6 s: local names answer in microseconds, forwarded ones in milliseconds.
    dns_answer_seconds: Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.00005, 2.0, 16)),
});

pub fn metrics() -> &'static NetworkMetrics {
    &METRICS
}

/// Counts one answer with `code`, `asked` being when its question came.
pub fn dns_answered(code: hickory_proto::op::ResponseCode, asked: std::time::Instant) {
    use hickory_proto::op::ResponseCode;
    let code = match code {
        ResponseCode::NoError => "noerror",
        ResponseCode::NXDomain => "nxdomain",
        ResponseCode::ServFail => "servfail",
        ResponseCode::Refused => "refused",
        ResponseCode::FormErr => "formerr",
        ResponseCode::NotImp => "notimp",
        _ => "other",
    };
    METRICS.dns_answer_seconds.observe(asked.elapsed().as_secs_f64());
    METRICS.dns_queries.get_or_create(&CodeLabel { code }).inc();
}

/// Adds the networking metrics to `registry`; the WireGuard device of
/// `dataplane` (when the node is in a swarm) is read on each scrape.
pub fn register(registry: &mut Registry, dataplane: Option<Arc<Dataplane>>) {
    let m = metrics();
    // The usual codes from the start, so a rate never meets a missing series.
    for code in ["noerror", "nxdomain", "servfail", "refused"] {
        let _ = m.dns_queries.get_or_create(&CodeLabel { code });
    }
    registry.register("shoal_dns_queries", "Questions the embedded DNS answered, by response code", m.dns_queries.clone());
    registry.register_with_unit("shoal_dns_answer", "Time the embedded DNS took to answer", Unit::Seconds, m.dns_answer_seconds.clone());
    if let Some(dataplane) = dataplane {
        registry.register_collector(Box::new(WireguardPeers { dataplane }));
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabels {
    /// The peer node's underlay address (one per node: a bounded set).
    peer: String,
    direction: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabel {
    peer: String,
}

struct WireguardPeers {
    dataplane: Arc<Dataplane>,
}

impl std::fmt::Debug for WireguardPeers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WireguardPeers")
    }
}

impl Collector for WireguardPeers {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // The device answers over its socket (async); a scrape is served on
        // the daemon's multi-threaded runtime, where waiting in place is allowed.
        let Ok(handle) = tokio::runtime::Handle::try_current() else { return Ok(()) };
        if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
            return Ok(());
        }
        let peers = tokio::task::block_in_place(|| handle.block_on(self.dataplane.wireguard_peers()));
        let bytes = Family::<PeerLabels, Counter>::default();
        let age = Family::<PeerLabel, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        let now = SystemTime::now();
        for peer in peers {
            let name = peer.endpoint.map(|e| e.ip().to_string()).unwrap_or_else(|| "unknown".into());
            bytes.get_or_create(&PeerLabels { peer: name.clone(), direction: "rx" }).inc_by(peer.rx_bytes);
            bytes.get_or_create(&PeerLabels { peer: name.clone(), direction: "tx" }).inc_by(peer.tx_bytes);
            if let Some(at) = peer.last_handshake {
                age.get_or_create(&PeerLabel { peer: name }).set(now.duration_since(at).unwrap_or_default().as_secs_f64());
            }
        }
        let metric = encoder.encode_descriptor("shoal_wireguard_peer", "Bytes through the node's WireGuard device, by peer node and direction", Some(&Unit::Bytes), bytes.metric_type())?;
        bytes.encode(metric)?;
        let metric = encoder.encode_descriptor(
            "shoal_wireguard_last_handshake_age",
            "Time since the last WireGuard handshake with each peer node",
            Some(&Unit::Seconds),
            age.metric_type(),
        )?;
        age.encode(metric)
    }
}
