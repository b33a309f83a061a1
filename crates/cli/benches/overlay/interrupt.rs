//! SIGINT, SIGTERM and SIGHUP: the first stops the measuring (its running
//! child processes are killed, the next step panics) so the guards remove
//! everything as on any failure; a second, or the orderly way taking over
//! three minutes, removes the cluster from the signal thread and exits.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use nix::sys::signal::{kill, SigSet, Signal};
use nix::unistd::Pid;

use super::support::{run, Cluster, SHOAL};

static REQUESTED: AtomicBool = AtomicBool::new(false);
static CLUSTER: OnceLock<String> = OnceLock::new();
/// Held while the cluster is being removed and while exiting, so the
/// orderly and the forced removal never run at once.
pub static CLEANUP: Mutex<()> = Mutex::new(());
const ORDERLY_PATIENCE: Duration = Duration::from_secs(180);

pub fn install(cluster: &str) {
    let _ = CLUSTER.set(cluster.to_string());
    let mut signals = SigSet::empty();
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        signals.add(signal);
    }
    // Blocked before any other thread starts, so they all inherit it
    // and only the waiting thread sees these signals. Child processes
    // inherit the mask too (exec keeps it): `shoal daemon` unblocks its
    // stop signals itself, and the runtime starts every container with
    // none blocked.
    signals.thread_block().expect("blocking the interrupt signals");
    std::thread::spawn(move || {
        let mut first = true;
        while let Ok(signal) = signals.wait() {
            if !first {
                eprintln!("{signal:?} again: removing the dev cluster now");
                force_cleanup();
            }
            first = false;
            eprintln!("{signal:?}: stopping the benchmark and removing everything it made");
            REQUESTED.store(true, Ordering::SeqCst);
            kill_descendants(|cmdline| !(cmdline.contains("dev-cluster") && cmdline.contains("down")));
            std::thread::spawn(|| {
                std::thread::sleep(ORDERLY_PATIENCE);
                eprintln!("the orderly cleanup takes too long: removing the dev cluster now");
                force_cleanup();
            });
        }
    });
}

pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// Unwinds (so the guards run) once an interrupt came; quietly, as it is
/// no failure.
pub fn check() {
    if requested() {
        std::panic::resume_unwind(Box::new("interrupted"));
    }
}

pub fn exit(code: i32) -> ! {
    let _serial = CLEANUP.lock().unwrap_or_else(|e| e.into_inner());
    std::process::exit(code)
}

fn force_cleanup() -> ! {
    let _serial = CLEANUP.lock().unwrap_or_else(|e| e.into_inner());
    // The registry's storage is a temporary directory named in its
    // command line; its guard will not run.
    let registry_dirs = kill_descendants(|_| true);
    if let Some(name) = CLUSTER.get() {
        let down = run(SHOAL, &["dev-cluster", "down", "--name", name], Duration::from_secs(120));
        if !down.success() {
            eprintln!("could not remove dev cluster {name}: {}", down.stderr);
        }
    }
    for dir in registry_dirs {
        let _ = std::fs::remove_dir_all(dir);
    }
    std::process::exit(130)
}

/// SIGKILLs every process below this one whose command line `pick`
/// accepts; returns the directories of docker-registry configs among them.
fn kill_descendants(pick: impl Fn(&str) -> bool) -> Vec<std::path::PathBuf> {
    let mut parents = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse::<i32>().ok()) else { continue };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<i32>().ok());
        if let Some(ppid) = ppid {
            parents.push((pid, ppid));
        }
    }
    let mut below = vec![std::process::id() as i32];
    let mut index = 0;
    while index < below.len() {
        let parent = below[index];
        below.extend(parents.iter().filter(|(_, p)| *p == parent).map(|(pid, _)| *pid));
        index += 1;
    }
    let mut registry_dirs = Vec::new();
    for &pid in &below[1..] {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if !pick(&cmdline) {
            continue;
        }
        if let Some(config) = cmdline.split_whitespace().find(|a| a.contains("/shoal-registry-") && a.ends_with("config.yml")) {
            registry_dirs.extend(std::path::Path::new(config).parent().map(|p| p.to_path_buf()));
        }
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    registry_dirs
}

/// A bench's dev cluster; dropping it removes it, never at the same time
/// as the interrupt handler's own removal.
pub struct ClusterGuard(pub Option<Cluster>);

impl ClusterGuard {
    pub fn get(&self) -> &Cluster {
        self.0.as_ref().expect("the cluster lives until the guard drops")
    }
}

impl Drop for ClusterGuard {
    fn drop(&mut self) {
        let _serial = CLEANUP.lock().unwrap_or_else(|e| e.into_inner());
        let Some(cluster) = self.0.take() else { return };
        if !requested() {
            // Its own removal, which shows the daemons' logs after a failure.
            return drop(cluster);
        }
        // Interrupted: nothing failed, so no logs; removed all the same.
        let name = cluster.name().to_string();
        std::mem::forget(cluster);
        let down = run(SHOAL, &["dev-cluster", "down", "--name", &name], Duration::from_secs(120));
        if !down.success() {
            eprintln!("could not remove dev cluster {name}: {}", down.stderr);
        }
    }
}

/// Calls `check` every `every` until it gives a value; panics after
/// `timeout`, and unwinds at once when an interrupt came.
#[track_caller]
#[allow(dead_code)] // Included by every bench; the overlay bench polls its own way.
pub fn poll_every<T>(every: Duration, timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        self::check();
        if let Some(value) = check() {
            return value;
        }
        if std::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(every);
    }
}

/// A bench's whole run: installs the signal handling for the cluster
/// `tag` makes, runs `measure`, prints its report with the load average
/// before and after (so a busy machine shows), and exits with 0, 130
/// (interrupted) or 101 (failed) once every guard has removed what it held.
pub fn run_measured<R>(tag: &str, measure: fn() -> R, print: fn(&R, &str, &str)) -> ! {
    install(&super::support::unique_name(tag));
    let load_before = loadavg();
    let code = match std::panic::catch_unwind(measure) {
        Ok(report) => {
            print(&report, &load_before, &loadavg());
            0
        }
        Err(_) if requested() => 130,
        Err(_) => 101,
    };
    exit(code)
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim().to_string()
}
