//! Wakes log followers when something changes in a container's log
//! directory, through one inotify instance shared by the whole process.
//!
//! Shared and never closed because closing an inotify instance makes the
//! kernel wait for an SRCU grace period (fsnotify_destroy_group ->
//! synchronize_srcu, 12-13 ms measured), and a follower ending sits on the
//! critical path of every `run --rm`. Followers only add and remove
//! watches, which is cheap; a watch is shared by every follower of the
//! same directory (the kernel returns the same descriptor for the same
//! inode), so it is counted and removed with its last follower.
//!
//! Events are read by a plain thread blocked in read(2), which wakes
//! followers through `tokio::sync::watch`: that works from any thread for
//! tasks on any runtime, whereas an fd registered with one runtime's
//! reactor stops working once that runtime shuts down (tests run many).

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};

use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use tokio::sync::watch;

/// What a follower needs to hear about: a log written, created or
/// rotated into place.
const EVENTS: AddWatchFlags = AddWatchFlags::IN_MODIFY.union(AddWatchFlags::IN_CREATE).union(AddWatchFlags::IN_MOVED_TO);

/// One follower's subscription to changes in a directory; unsubscribes
/// when dropped, whichever way the follower ends.
pub(super) struct DirWatch {
    watcher: &'static Watcher,
    wd: WatchDescriptor,
    /// Which watch under that descriptor this is: once the kernel drops a
    /// watch (directory deleted) its number may later name another one,
    /// which this subscription must not unsubscribe from.
    watch_id: u64,
    changes: watch::Receiver<()>,
}

/// The watch is gone (directory deleted, or the watcher stopped): nothing
/// will wake this subscription again.
#[derive(Debug)]
pub(super) struct WatchGone;

impl DirWatch {
    /// Subscribes to changes in `dir` from now on. Fails when inotify
    /// cannot be used (no instance, out of watches, ...); the caller polls
    /// instead.
    pub(super) fn new(dir: &Path) -> io::Result<Self> {
        shared_watcher()?.subscribe(dir)
    }

    /// Returns once something changed since subscribing or since the last
    /// call; changes in between are coalesced, none is missed.
    pub(super) async fn changed(&mut self) -> Result<(), WatchGone> {
        self.changes.changed().await.map_err(|_| WatchGone)
    }
}

impl Drop for DirWatch {
    fn drop(&mut self) {
        self.watcher.unsubscribe(self.wd, self.watch_id);
    }
}

/// The process's inotify instance and who listens to which of its watches.
struct Watcher {
    inotify: Inotify,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    watches: HashMap<WatchDescriptor, Watched>,
    next_watch_id: u64,
    /// The reader thread has stopped: nothing would wake a new subscriber.
    stopped: bool,
}

struct Watched {
    id: u64,
    subscribers: usize,
    changes: watch::Sender<()>,
    /// The directory as first subscribed, for diagnostics.
    dir: PathBuf,
}

/// The watcher, started on first use. A failed start (e.g. the user's
/// inotify instance limit) is retried by the next follower.
fn shared_watcher() -> io::Result<&'static Watcher> {
    static WATCHER: OnceLock<Watcher> = OnceLock::new();
    static STARTING: Mutex<()> = Mutex::new(());
    if let Some(watcher) = WATCHER.get() {
        return Ok(watcher);
    }
    let _starting = STARTING.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(watcher) = WATCHER.get() {
        return Ok(watcher);
    }
    // Blocking: only the reader thread reads, and it has nothing else to do.
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC)?;
    let watcher = WATCHER.get_or_init(|| Watcher { inotify, state: Mutex::default() });
    let spawned = std::thread::Builder::new().name("shoal-log-watch".into()).spawn(|| watcher.read_events_forever());
    if let Err(e) = spawned {
        watcher.stop();
        return Err(e);
    }
    Ok(watcher)
}

impl Watcher {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn subscribe(&'static self, dir: &Path) -> io::Result<DirWatch> {
        // Under the lock so that the reader thread and unsubscribers see
        // each descriptor and its entry change together.
        let mut state = self.state();
        if state.stopped {
            return Err(io::Error::other("the log watcher has stopped"));
        }
        let wd = self.inotify.add_watch(dir, EVENTS)?;
        let id = state.next_watch_id;
        let watched = state.watches.entry(wd).or_insert_with(|| Watched {
            id,
            subscribers: 0,
            changes: watch::Sender::new(()),
            dir: dir.to_path_buf(),
        });
        watched.subscribers += 1;
        let (watch_id, changes) = (watched.id, watched.changes.subscribe());
        if watch_id == id {
            state.next_watch_id += 1;
        }
        Ok(DirWatch { watcher: self, wd, watch_id, changes })
    }

    fn unsubscribe(&self, wd: WatchDescriptor, watch_id: u64) {
        let mut state = self.state();
        let Some(watched) = state.watches.get_mut(&wd).filter(|w| w.id == watch_id) else {
            // Already dropped by the kernel: nothing to remove.
            return;
        };
        watched.subscribers -= 1;
        if watched.subscribers == 0 {
            state.watches.remove(&wd);
            // EINVAL if the kernel dropped it meanwhile (its IN_IGNORED not
            // yet handled): gone either way. The IN_IGNORED this causes finds
            // no entry: the kernel hands out descriptors cyclically, so the
            // number is not reused by a watch added meanwhile.
            let _ = self.inotify.rm_watch(wd);
        }
    }

    fn read_events_forever(&self) {
        loop {
            match self.inotify.read_events() {
                Ok(events) => self.dispatch(&events),
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "reading inotify events failed; log followers fall back to polling");
                    self.stop();
                    return;
                }
            }
        }
    }

    fn dispatch(&self, events: &[nix::sys::inotify::InotifyEvent]) {
        let mut state = self.state();
        for event in events {
            if event.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                // Events were lost: anyone may have missed a change.
                state.watches.values().for_each(|w| w.changes.send_replace(()));
            } else if event.mask.contains(AddWatchFlags::IN_IGNORED) {
                // The kernel dropped the watch (directory deleted): dropping
                // the sender tells its subscribers, and forgetting the number
                // keeps a later watch that reuses it from inheriting them.
                if let Some(watched) = state.watches.remove(&event.wd) {
                    tracing::debug!(dir = %watched.dir.display(), "log directory no longer watched");
                }
            } else if let Some(watched) = state.watches.get(&event.wd) {
                watched.changes.send_replace(());
            }
        }
    }

    /// Without a reader nothing would wake subscribers: tell the current
    /// ones their watch is gone and refuse new ones, so all poll.
    fn stop(&self) {
        let mut state = self.state();
        state.stopped = true;
        state.watches.clear();
    }
}

/// How many followers are subscribed to `dir` right now.
#[cfg(test)]
pub(super) fn subscribers(dir: &Path) -> usize {
    let Ok(watcher) = shared_watcher() else { return 0 };
    watcher.state().watches.values().filter(|w| w.dir == dir).map(|w| w.subscribers).sum()
}
