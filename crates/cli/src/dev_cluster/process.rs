//! Starting processes inside a host's namespace and stopping the ones we
//! started, without ever signalling an unrelated process that reused a pid.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::bail;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::{setsid, Pid};

use shoal_overlay_net::netns;

use super::underlay;

const POLL: Duration = Duration::from_millis(20);

/// A command that runs `program` inside network namespace `ns`, like
/// `ip netns exec` minus the /sys remount.
pub fn command_in_netns(ns: &str, program: impl AsRef<OsStr>) -> anyhow::Result<Command> {
    // Opened here, not in the child: between fork and exec only
    // async-signal-safe calls are allowed, and setns() on an open fd is one.
    // The fd is close-on-exec, so the program never inherits it.
    let ns_file = underlay::netns_dir()
        .open(ns)
        .map_err(|e| anyhow::anyhow!("{e} (is the dev cluster up?)"))?;
    let mut command = Command::new(program);
    // SAFETY: the closure only calls setns(2), which is async-signal-safe.
    unsafe {
        command.pre_exec(move || netns::enter(&ns_file).map_err(std::io::Error::from));
    }
    Ok(command)
}

/// Puts the child in its own session and process group, so a Ctrl-C aimed at
/// the command that started it does not reach it, and its group can be
/// killed as a whole.
pub fn detach(command: &mut Command) {
    // SAFETY: setsid(2) is async-signal-safe.
    unsafe {
        command.pre_exec(|| setsid().map(drop).map_err(std::io::Error::from));
    }
}

/// A process we started: its pid plus an argument its command line must
/// contain, so a pid recycled by an unrelated process is never signalled.
#[derive(Clone, Debug)]
pub struct Tracked {
    pub pid: u32,
    pub marker: String,
}

impl Tracked {
    pub fn is_alive(&self) -> bool {
        is_running(self.pid) && cmdline_contains(self.pid, &self.marker)
    }

    fn nix_pid(&self) -> Pid {
        Pid::from_raw(self.pid as i32)
    }
}

/// How [`stop_all`] ends processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM, then SIGKILL to the process group after the grace period.
    Graceful,
    /// SIGKILL to the process group right away (a crash).
    Kill,
}

/// Stops every live process in `procs` and waits until they are gone.
pub async fn stop_all(procs: &[Tracked], how: Stop, grace: Duration) -> anyhow::Result<()> {
    let live: Vec<&Tracked> = procs.iter().filter(|p| p.is_alive()).collect();
    if how == Stop::Graceful {
        for process in &live {
            let _ = kill(process.nix_pid(), Signal::SIGTERM);
        }
        wait_gone(&live, grace).await;
    }
    let stubborn: Vec<&Tracked> = live.into_iter().filter(|p| p.is_alive()).collect();
    for process in &stubborn {
        // Each daemon leads its own group (see `detach`), so the group takes
        // its helpers down with it; fall back to the pid alone.
        if killpg(process.nix_pid(), Signal::SIGKILL).is_err() {
            let _ = kill(process.nix_pid(), Signal::SIGKILL);
        }
    }
    wait_gone(&stubborn, Duration::from_secs(5)).await;
    if let Some(survivor) = stubborn.iter().find(|p| p.is_alive()) {
        bail!(
            "process {} is still running 5 s after SIGKILL",
            survivor.pid
        );
    }
    Ok(())
}

/// SIGKILLs every process whose network namespace is the one with inode
/// `netns_inode` (helpers a daemon left behind: shims, the WireGuard
/// device) and waits for them to go; a killed device's control socket,
/// which it would have removed on a clean stop, is removed too.
pub async fn kill_netns_members(netns_inode: u64) -> anyhow::Result<()> {
    let wanted = format!("net:[{netns_inode}]");
    let mut members = Vec::new();
    let Ok(listing) = fs::read_dir("/proc") else {
        return Ok(());
    };
    for entry in listing.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // Kernel threads and processes that just exited have no readable link.
        if fs::read_link(entry.path().join("ns/net"))
            .is_ok_and(|ns| ns.as_os_str() == wanted.as_str())
        {
            members.push(pid);
        }
    }
    for &pid in &members {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while members.iter().any(|&pid| is_running(pid)) {
        if Instant::now() >= deadline {
            bail!("processes in network namespace {wanted} are still running 5 s after SIGKILL");
        }
        tokio::time::sleep(POLL).await;
    }
    // The nodes' WireGuard devices were among them; their sockets (in the
    // machine's /var/run/wireguard) are swept, with any earlier dead one's.
    shoal_overlay_net::wireguard::remove_stale_sockets(shoal_agent::overlay::DEVICE_PREFIX);
    Ok(())
}

async fn wait_gone(procs: &[&Tracked], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while procs.iter().any(|p| p.is_alive()) && Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
    }
}

/// Whether `pid` exists and is not a zombie (a zombie has already exited;
/// only its parent's wait is missing).
fn is_running(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name, which is in parentheses and may
    // itself contain ')' — hence the last one.
    match stat
        .rfind(')')
        .and_then(|end| stat[end + 1..].split_whitespace().next())
    {
        Some(state) => state != "Z" && state != "X",
        None => false,
    }
}

fn cmdline_contains(pid: u32, marker: &str) -> bool {
    fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
        cmdline
            .split(|&b| b == 0)
            .any(|arg| arg == marker.as_bytes())
    })
}

/// Raises the open-files limit of process `pid` (0: this one) towards
/// `wanted`: soft and hard limit to `wanted` where that is allowed (root),
/// else the soft limit up to the hard one. Returns the soft limit reached.
/// For processes that hold a connection per simulated node; not for a
/// daemon in general, whose containers would inherit it.
pub fn raise_open_files_limit(pid: u32, wanted: u64) -> std::io::Result<u64> {
    let mut current = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: prlimit only reads and writes the structs passed.
    if unsafe { libc::prlimit(pid as libc::pid_t, libc::RLIMIT_NOFILE, std::ptr::null(), &mut current) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if current.rlim_cur >= wanted {
        return Ok(current.rlim_cur);
    }
    let raised = libc::rlimit { rlim_cur: wanted, rlim_max: current.rlim_max.max(wanted) };
    let fallback = libc::rlimit { rlim_cur: current.rlim_max, rlim_max: current.rlim_max };
    for limit in [raised, fallback] {
        // SAFETY: as above.
        if unsafe { libc::prlimit(pid as libc::pid_t, libc::RLIMIT_NOFILE, &limit, std::ptr::null_mut()) } == 0 {
            return Ok(limit.rlim_cur);
        }
    }
    Err(std::io::Error::last_os_error())
}
