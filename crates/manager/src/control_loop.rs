//! How the leader's control loops run: each is a pure pass from a store
//! snapshot and the time to a [`Plan`] of writes, and [`drive`] applies
//! one pass per burst of store changes (or when a deadline the last pass
//! named comes due). The orchestrators, the allocator and the scheduling
//! loop all run this way; [`crate::leader`] starts them.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;

use crate::manager::Manager;
use crate::store::{Op, StoreState, Transaction};

/// The writes one pass decided on, grouped so that a conflict on one
/// service's tasks does not hold back another's.
#[derive(Debug, Default)]
pub struct Plan {
    pub transactions: Vec<Vec<Op>>,
    /// When a pass is next due even if nothing changes (Unix ms).
    pub wake_at: Option<u64>,
}

impl Plan {
    pub fn wake_no_later_than(&mut self, at: u64) {
        self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
    }
}

const IDLE_TICK: Duration = Duration::from_secs(1);

/// Runs a leader loop around a pure `pass`: one pass per burst of store
/// changes, and at the deadline the last pass named.
pub async fn drive(manager: Arc<Manager>, what: &'static str, pass: fn(&StoreState, u64) -> Plan) {
    let mut events = manager.store.watch();
    // A new leader may not have applied everything committed before it
    // took over; planning on a stale store would duplicate tasks.
    while let Err(e) = manager.read_barrier().await {
        tracing::debug!(error = %e, "waiting for the store to catch up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    loop {
        let now = crate::store::now_ms();
        let planning = std::time::Instant::now();
        let plan = manager.store.view(|s| pass(s, now));
        crate::metrics::metrics()
            .plan_seconds
            .get_or_create(&crate::metrics::LoopName { control_loop: what })
            .observe(planning.elapsed().as_secs_f64());
        // Written concurrently: the proposer puts them into one Raft entry,
        // and each transaction still applies (or fails) on its own.
        let writes = plan.transactions.into_iter().map(|ops| manager.write(Transaction::new(ops)));
        for result in futures::future::join_all(writes).await {
            if let Err(e) = result {
                // A conflict means someone else moved first; the next pass
                // sees their write.
                tracing::debug!(error = %e, "{what} write");
            }
        }
        // Our own writes come back as events, so the next pass follows at
        // once; a failed write waits for the change that beat it.
        let sleep = plan
            .wake_at
            .map(|at| Duration::from_millis(at.saturating_sub(crate::store::now_ms())))
            .unwrap_or(IDLE_TICK)
            .min(IDLE_TICK);
        tokio::select! {
            event = events.recv() => {
                if let Err(RecvError::Closed) = event { return; }
                // Fold a burst of changes into one pass.
                while events.try_recv().is_ok() {}
            }
            _ = tokio::time::sleep(sleep) => {}
        }
    }
}

