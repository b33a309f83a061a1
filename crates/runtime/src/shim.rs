//! The per-container shim (`shoal __shim STATE_DIR`), like
//! containerd-shim: it creates the container's cgroup, starts the
//! container from its OCI bundle (see [`crate::container::init`]), is the
//! parent of the container's init, copies its output into the log,
//! records how it ended and cleans up. The daemon starts it
//! in a session of its own, so the daemon can die and restart around it.
//!
//! Synchronous on purpose (no async runtime): it must stay a few MiB.
//! The daemon forks shims through a [`crate::launcher`] (`shoal __shim
//! --launcher`), or runs `shoal __shim STATE_DIR` directly.
//!
//! It tells the daemon whether the start worked with one line on
//! [`READY_FD`]: `ok PID` or `err MESSAGE`.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use nix::sys::signal::{signal, SigHandler, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::container::cgroups::{Cgroup, Resources};
use crate::container::init::{self, Launch};
use crate::container::model::{ExitInfo, Started};
use crate::container::state::{self, ShimConfig};

mod relay;

/// How long the shim waits for the daemon to attach before a start that
/// asked for it goes on without.
const ATTACH_WAIT: Duration = Duration::from_secs(10);

/// The file descriptor the daemon reads the start result from.
pub const READY_FD: i32 = 3;

/// Entry point; `args` are the arguments after the shim's own name
/// (`shoal __shim ARGS` or `shoal-shim ARGS`): the state directory.
pub fn main(args: Vec<String>) -> ExitCode {
    let code = match args.as_slice() {
        [flag] if flag == "--launcher" => crate::launcher::serve(),
        [state_dir] => run(PathBuf::from(state_dir)),
        _ => {
            eprintln!("usage: shoal __shim STATE_DIR (started by the daemon, not by hand)");
            1
        }
    };
    ExitCode::from(code as u8)
}

/// Supervises the container in `state_dir`; the process's exit code.
pub fn run(state_dir: PathBuf) -> i32 {
    // Outlive the daemon: a session (and process group) of our own, so a
    // signal to the daemon's group or the end of its terminal session
    // does not reach us. The daemon already did this before exec (EPERM
    // then: we lead the session); done again for any other launcher.
    let _ = nix::unistd::setsid();
    // Stay deaf to the signals a dying terminal or daemon session sends.
    // A no-op handler, not SIG_IGN: ignored signals stay ignored across
    // exec, and a shell started with SIGTERM ignored cannot trap it, so
    // the container would never see `stop`. Handlers are reset by exec.
    for sig in [
        Signal::SIGHUP,
        Signal::SIGINT,
        Signal::SIGPIPE,
        Signal::SIGTERM,
    ] {
        // SAFETY: the handler does nothing, so it is async-signal-safe.
        unsafe {
            let _ = signal(sig, SigHandler::Handler(ignore_signal));
        }
    }
    // SAFETY: the daemon passes READY_FD open for us alone (see the manager).
    let mut ready = unsafe { File::from_raw_fd(READY_FD) };
    let config = match state::read_json::<ShimConfig>(&state_dir.join(state::SHIM_CONFIG_FILE)) {
        Some(config) => config,
        None => {
            let _ = writeln!(
                ready,
                "err the container's state in {} is unreadable; remove it",
                state_dir.display()
            );
            return 1;
        }
    };
    match supervise(&state_dir, &config, &mut ready) {
        Ok(()) => 0,
        Err(message) => {
            let exit = ExitInfo {
                code: 127,
                oom_killed: false,
                finished_at: state::now_rfc3339(),
                error: Some(message.clone()),
            };
            let _ = state::write_json(&state_dir.join(state::EXIT_FILE), &exit);
            let _ = writeln!(ready, "err {}", message.replace('\n', " "));
            1
        }
    }
}

extern "C" fn ignore_signal(_: i32) {}

fn supervise(state_dir: &Path, config: &ShimConfig, ready: &mut File) -> Result<(), String> {
    let spec = Spec::load(state_dir.join("config.json")).map_err(|e| {
        format!(
            "the container's OCI bundle in {} is unreadable ({e}); remove the container",
            state_dir.display()
        )
    })?;
    let cgroup = Cgroup::create(&config.cgroup_path, &resources(&spec))?;
    let stdio = relay::prepare(config).inspect_err(|_| cgroup.remove())?;
    // The attach socket is up before the process starts; when the daemon
    // attaches at the start (`run -it`), it is connected before, too.
    let listener = relay::listen(state_dir);
    let attach_marker = state_dir.join(crate::container::attach::ATTACH_AT_START_FILE);
    let first = match &listener {
        Some(listener) if std::fs::remove_file(&attach_marker).is_ok() => {
            let _ = writeln!(ready, "attach");
            relay::first_client(listener, ATTACH_WAIT)
        }
        _ => None,
    };
    match start(&spec, &cgroup, &stdio.child) {
        Ok(pid) => {
            let shim_pid = std::process::id() as i32;
            let started = Started {
                shim_pid,
                shim_start_ticks: state::process_start_ticks(shim_pid).unwrap_or(0),
                pid: pid.as_raw(),
                started_at: state::now_rfc3339(),
            };
            if let Err(e) = state::write_json(&state_dir.join(state::STARTED_FILE), &started) {
                let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
                let _ = waitpid(pid, None);
                cgroup.remove();
                return Err(format!(
                    "cannot record the start in {}: {e}",
                    state_dir.display()
                ));
            }
            let _ = writeln!(ready, "ok {}", pid.as_raw());
            // Only the container's processes may hold its ends now, so
            // end-of-file on the output means they are all gone.
            let relay::Stdio { child, ends } = stdio;
            drop(child);
            // Most of a shim's life is spent relaying; shedding the start's
            // memory waits until the container has run a while, so a
            // short-lived one (`run --rm ... true`) is not slowed by it.
            relay::relay(state_dir, config, ends, listener, first, Duration::from_millis(SHED_AFTER_MS), shed_startup_memory);
            let _ = std::fs::remove_file(state_dir.join(crate::container::attach::SOCKET_NAME));
            let code = wait_exit(pid);
            let oom_killed = cgroup.oom_kills() > 0;
            // Kills what the container's init left (nothing, normally: its
            // pid namespace died with it) and removes the directories.
            cgroup.remove();
            let exit = ExitInfo {
                code,
                oom_killed,
                finished_at: state::now_rfc3339(),
                error: None,
            };
            state::write_json(&state_dir.join(state::EXIT_FILE), &exit)
                .map_err(|e| format!("cannot record the exit: {e}"))?;
            Ok(())
        }
        Err(message) => {
            cgroup.remove();
            Err(message)
        }
    }
}

/// Clones the container's process with `stdio` as its stdin, stdout and
/// stderr; returns its pid.
fn start(spec: &Spec, cgroup: &Cgroup, stdio: &[OwnedFd; 3]) -> Result<Pid, String> {
    let network_namespace =
        match network_namespace_path(spec) {
            Some(path) => Some(File::open(&path).map_err(|e| {
                format!("cannot open the network namespace {}: {e}", path.display())
            })?),
            None => None,
        };
    let launch = Launch {
        spec,
        cgroup,
        stdio: [stdio[0].as_raw_fd(), stdio[1].as_raw_fd(), stdio[2].as_raw_fd()],
        network_namespace,
    };
    init::spawn(&launch)
}

/// The limits in the spec's `linux.resources`.
fn resources(spec: &Spec) -> Resources {
    let Some(resources) = spec.linux().as_ref().and_then(|l| l.resources().as_ref()) else {
        return Resources::default();
    };
    Resources {
        memory_bytes: resources
            .memory()
            .as_ref()
            .and_then(|m| m.limit())
            .and_then(|l| u64::try_from(l).ok()),
        cpu_quota_us: resources
            .cpu()
            .as_ref()
            .and_then(|c| c.quota())
            .and_then(|q| u64::try_from(q).ok()),
        pids: resources.pids().as_ref().map(|p| p.limit()),
    }
}

/// The network namespace the spec names to join, if any.
fn network_namespace_path(spec: &Spec) -> Option<PathBuf> {
    let namespaces = spec.linux().as_ref()?.namespaces().as_ref()?;
    namespaces
        .iter()
        .find(|n| n.typ() == LinuxNamespaceType::Network)
        .and_then(|n| n.path().clone())
}

/// How long a container runs before its shim sheds its start's memory.
const SHED_AFTER_MS: u64 = 50;

/// Gives back the memory only the start needed, since a shim lives as
/// long as its container: freed heap, and the pages of the (large, shared)
/// `shoal` binary and libraries that starting touched. File pages that were
/// never written are dropped from this process only (they stay in the page
/// cache) and fault back in if the supervision loop needs them; pages
/// written at load time (relocations) are kept, as they hold the only copy.
pub(crate) fn shed_startup_memory() {
    // SAFETY: malloc_trim only returns free heap memory to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return;
    };
    let mut mapping: Option<(usize, usize, bool)> = None;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or_default();
        if let Some((start, end)) = first.split_once('-').filter(|_| !first.ends_with(':')) {
            // `START-END PERMS OFFSET DEV INODE [PATH]`: a clean candidate if
            // read-only and backed by a file.
            let perms = fields.next().unwrap_or_default();
            let inode = fields.nth(2).unwrap_or("0");
            let candidate = !perms.contains('w') && inode != "0";
            mapping = match (
                usize::from_str_radix(start, 16),
                usize::from_str_radix(end, 16),
            ) {
                (Ok(start), Ok(end)) => Some((start, end, candidate)),
                _ => None,
            };
        } else if first == "Anonymous:" {
            // Copy-on-write pages (relocated read-only data) have no other copy.
            let untouched = fields.next() == Some("0");
            if let Some((start, end, true)) = mapping.take() {
                if untouched {
                    // SAFETY: drops the page table entries of a clean,
                    // read-only file mapping; its contents come back from
                    // the file on the next access.
                    unsafe {
                        libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
                    }
                }
            }
        }
    }
}

/// The exit status, or 128 + signal number as shells report it.
fn wait_exit(pid: Pid) -> i32 {
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => return code,
            Ok(WaitStatus::Signaled(_, sig, _)) => return 128 + sig as i32,
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return 255,
        }
    }
}

