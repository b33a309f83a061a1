//! What the same-run benchmarks time with: a fine poll and a median.

use std::time::{Duration, Instant};

/// Polls every 10 ms: what is timed is a second or a few, and a coarse
/// poll would blur both sides.
pub fn poll(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn median(samples: impl Iterator<Item = Duration>) -> Duration {
    let mut samples: Vec<Duration> = samples.collect();
    samples.sort();
    samples[samples.len() / 2]
}
