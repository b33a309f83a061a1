//! Shares one download/unpack per blob among concurrent pulls.
//!
//! The first pull to need a blob spawns the work as its own task and
//! publishes its state on a watch channel; later pulls subscribe to the same
//! channel. The work runs to completion even if the pull that started it
//! goes away, so the others are never left waiting on a cancelled future.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::error::{ImageError, Result};
use super::progress::LayerStatus;

#[derive(Debug, Clone)]
pub enum TransferState {
    Running(LayerStatus),
    Finished { already_present: bool },
    Failed(Arc<ImageError>),
}

/// Handed to the work so it can report how far it got.
#[derive(Clone)]
pub struct Reporter(Arc<watch::Sender<TransferState>>);

impl Reporter {
    pub fn report(&self, status: LayerStatus) {
        self.0.send_replace(TransferState::Running(status));
    }
}

#[derive(Default, Clone)]
pub struct Transfers {
    running: Arc<Mutex<HashMap<String, watch::Receiver<TransferState>>>>,
}

impl Transfers {
    /// Joins the transfer named `key`, starting it with `work` when none is
    /// running. `work` returns whether everything was already present.
    pub fn join_or_start<F, Fut>(&self, key: &str, work: F) -> watch::Receiver<TransferState>
    where
        F: FnOnce(Reporter) -> Fut,
        Fut: Future<Output = Result<bool>> + Send + 'static,
    {
        let mut running = self
            .running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(existing) = running.get(key) {
            return existing.clone();
        }
        let (sender, receiver) = watch::channel(TransferState::Running(LayerStatus::Waiting));
        let sender = Arc::new(sender);
        running.insert(key.to_owned(), receiver.clone());
        drop(running);

        let future = work(Reporter(sender.clone()));
        let map = self.running.clone();
        let key = key.to_owned();
        let mine = receiver.clone();
        tokio::spawn(async move {
            let outcome = future.await;
            // Drop the entry before publishing the end, so a pull arriving
            // afterwards starts afresh (and finds the content on disk).
            {
                let mut running = map.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                if running.get(&key).is_some_and(|r| r.same_channel(&mine)) {
                    running.remove(&key);
                }
            }
            sender.send_replace(match outcome {
                Ok(already_present) => TransferState::Finished { already_present },
                Err(e) => TransferState::Failed(Arc::new(e)),
            });
        });
        receiver
    }
}

/// Follows a transfer to its end, passing each new status to `on_status`.
/// Returns whether the content was already present.
pub async fn follow(
    mut receiver: watch::Receiver<TransferState>,
    on_status: impl Fn(LayerStatus),
) -> Result<bool> {
    loop {
        let state = receiver.borrow_and_update().clone();
        match state {
            TransferState::Running(status) => on_status(status),
            TransferState::Finished { already_present } => return Ok(already_present),
            TransferState::Failed(error) => return Err(ImageError::Shared(error)),
        }
        if receiver.changed().await.is_err() {
            // The sender is gone: the last value is final, or the task died.
            return match &*receiver.borrow() {
                TransferState::Finished { already_present } => Ok(*already_present),
                TransferState::Failed(error) => Err(ImageError::Shared(error.clone())),
                TransferState::Running(_) => Err(ImageError::io(
                    "a shared download stopped unexpectedly",
                    std::io::Error::other("transfer task ended without a result"),
                )),
            };
        }
    }
}
