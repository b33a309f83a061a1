//! Per-layer pull progress, a plain data type so the daemon can forward it
//! over the API and the CLI can render it.

use serde::{Deserialize, Serialize};

/// One step in the life of one layer during a pull.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullProgress {
    /// The layer's short id: the first 12 hex digits of its blob digest.
    pub layer: String,
    pub status: LayerStatus,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum LayerStatus {
    Waiting,
    /// `total` is 0 when the registry did not say how large the blob is.
    Downloading {
        current: u64,
        total: u64,
    },
    Verifying,
    Extracting,
    Done,
    AlreadyExists,
}

impl LayerStatus {
    pub fn is_final(&self) -> bool {
        matches!(self, Self::Done | Self::AlreadyExists)
    }
}

/// Where pull progress goes; any `Fn(PullProgress)` works, e.g. a closure
/// sending into a channel.
pub trait ProgressSink: Fn(PullProgress) + Send + Sync {}
impl<F: Fn(PullProgress) + Send + Sync> ProgressSink for F {}

/// A sink for callers that do not show progress.
pub fn ignore_progress(_: PullProgress) {}
