//! Raft's own thread: the core, its replication and election timers, its
//! outbound connections and the serving of other managers' Raft frames run
//! on a runtime of their own, not among the daemon's tasks.
//!
//! On the daemon's runtime a Raft heartbeat waited in the same queue as
//! every node session, TLS handshake and certificate signing. A thousand
//! nodes joining at once kept that queue hundreds of milliseconds long on
//! two cores, longer than the election timeout (200-400 ms), so followers
//! stood for election in a healthy cluster and writes failed while terms
//! went 1 -> 7 (simulator, 1,000 nodes). On a thread of its own Raft waits
//! only for the operating system's scheduler, which wakes a thread that
//! slept ahead of busy ones.

use std::future::Future;

use tokio::runtime::{Builder, Handle, Runtime};
use tokio::task::JoinHandle;

/// Owns Raft's runtime; dropping it stops every task on it without
/// blocking (the manager may be dropped from async code).
pub struct RaftRuntime {
    runtime: Option<Runtime>,
    handle: Handle,
}

impl RaftRuntime {
    pub fn start() -> std::io::Result<Self> {
        // One worker: Raft's own work is light (frames, timers, hand-offs to
        // the log's flush thread); what it needs is to run promptly.
        let runtime = Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("raft")
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        Ok(RaftRuntime {
            runtime: Some(runtime),
            handle,
        })
    }

    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Runs `future` on Raft's thread; whatever it spawns stays there.
    pub fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(future)
    }
}

impl Drop for RaftRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
