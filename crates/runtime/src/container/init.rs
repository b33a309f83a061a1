//! Starting a container from its OCI spec: the shim clones the
//! container's first process into new namespaces ([`spawn`]), and that
//! process sets itself up and executes the command ([`setup_and_exec`]):
//! cgroup, hostname, loopback, mounts, /dev, pivot_root, masked and
//! read-only paths, user, capabilities, no_new_privs, seccomp, exec.
//!
//! One process, one clone: no intermediate process and no re-exec. The
//! steps that libcontainer does well and cheaply (capabilities, seccomp,
//! setuid with kept capabilities, pivot_root) are libcontainer's; the
//! cgroup move and the mounts are ours, because those are where its
//! general-purpose path costs most of a container start (see
//! `cgroups.rs` and `mounts.rs`).
//!
//! Errors before exec travel back to the shim through a close-on-exec
//! pipe: EOF means the command is running.

use std::convert::Infallible;
use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use libcontainer::syscall::linux::LinuxSyscall;
use libcontainer::syscall::Syscall;
use nix::mount::{mount, MsFlags};
use nix::sched::CloneFlags;
use nix::unistd::{Gid, Pid, Uid};
use oci_spec::runtime::{LinuxNamespaceType, Spec};

use super::cgroups::Cgroup;
use super::mounts;

/// What the container's first process needs besides its spec.
pub struct Launch<'a> {
    pub spec: &'a Spec,
    pub cgroup: &'a Cgroup,
    /// stdin, stdout, stderr.
    pub stdio: [RawFd; 3],
    /// A prepared network namespace to join; a new one (with `lo` up, as
    /// docker has it; the kernel leaves it down) otherwise.
    pub network_namespace: Option<File>,
}

/// Clones the container's first process and waits until it runs the
/// command: its host pid, or why it could not start (the process is
/// then reaped).
pub fn spawn(launch: &Launch) -> Result<Pid, String> {
    let linux = launch
        .spec
        .linux()
        .as_ref()
        .ok_or("the container's spec has no linux section")?;
    let namespaces = linux.namespaces().clone().unwrap_or_default();
    let wants = |kind: LinuxNamespaceType| namespaces.iter().any(|n| n.typ() == kind);
    let mut flags = CloneFlags::empty();
    for (kind, flag) in [
        (LinuxNamespaceType::Pid, CloneFlags::CLONE_NEWPID),
        (LinuxNamespaceType::Mount, CloneFlags::CLONE_NEWNS),
        (LinuxNamespaceType::Uts, CloneFlags::CLONE_NEWUTS),
        (LinuxNamespaceType::Ipc, CloneFlags::CLONE_NEWIPC),
    ] {
        if wants(kind) {
            flags |= flag;
        }
    }
    if launch.network_namespace.is_none() && wants(LinuxNamespaceType::Network) {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    let (report_read, report_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| format!("cannot create a pipe: {e}"))?;
    let cgroup_dir = launch.cgroup.v2_dir();
    let pid = clone3(flags, cgroup_dir.as_ref())
        .or_else(|e| {
            if cgroup_dir.is_some() {
                clone3(flags, None)
            } else {
                Err(e)
            }
        })
        .map_err(|e| format!("cannot create the container's process: {e}"))?;
    if pid == 0 {
        // The child: single-threaded copy of the shim; never returns.
        drop(report_read);
        let new_network = flags.contains(CloneFlags::CLONE_NEWNET);
        let Err(message) = setup_and_exec(launch, wants(LinuxNamespaceType::Cgroup), new_network);
        let mut report = File::from(report_write);
        let _ = report.write_all(message.as_bytes());
        // SAFETY: ends the child without running the shim's destructors.
        unsafe { libc::_exit(127) }
    }
    drop(report_write);
    let pid = Pid::from_raw(pid);
    let mut message = String::new();
    let _ = File::from(report_read).read_to_string(&mut message);
    if message.is_empty() {
        return Ok(pid);
    }
    let _ = nix::sys::wait::waitpid(pid, None);
    Err(message)
}

/// clone3 with fork semantics (no new stack): 0 in the child, the child's
/// pid in the parent. With a cgroup directory the child starts in it.
fn clone3(flags: CloneFlags, cgroup: Option<&File>) -> std::io::Result<i32> {
    /// The kernel's `struct clone_args` (v2, with `cgroup`).
    #[repr(C)]
    #[derive(Default)]
    struct CloneArgs {
        flags: u64,
        pidfd: u64,
        child_tid: u64,
        parent_tid: u64,
        exit_signal: u64,
        stack: u64,
        stack_size: u64,
        tls: u64,
        set_tid: u64,
        set_tid_size: u64,
        cgroup: u64,
    }
    const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
    let mut args = CloneArgs {
        flags: flags.bits() as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..Default::default()
    };
    if let Some(dir) = cgroup {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = dir.as_raw_fd() as u64;
    }
    // SAFETY: clone3 without CLONE_VM and without a stack behaves as
    // fork; the shim is single-threaded, so the child may allocate.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(pid as i32)
}

/// Everything the container's first process does before it becomes the
/// command. Returns only on failure, with why.
fn setup_and_exec(launch: &Launch, cgroup_namespace: bool, new_network: bool) -> Result<Infallible, String> {
    let spec = launch.spec;
    let syscall = LinuxSyscall;
    for (fd, target) in launch.stdio.iter().zip(0..) {
        nix::unistd::dup2(*fd, target)
            .map_err(|e| format!("cannot set up the container's output: {e}"))?;
    }
    if spec.process().as_ref().and_then(|p| p.terminal()).unwrap_or(false) {
        // `-t`: its terminal becomes the controlling one of a session of
        // its own, so Ctrl-C on it signals the container's foreground job.
        nix::unistd::setsid().map_err(|e| format!("cannot start a session: {e}"))?;
        // SAFETY: TIOCSCTTY on stdin, the terminal the shim opened.
        if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } < 0 {
            return Err(format!("cannot make the terminal the container's own: {}", std::io::Error::last_os_error()));
        }
    }
    // Before any namespace: the cgroup namespace's root is the cgroup the
    // process is in when it unshares.
    launch.cgroup.join()?;
    if cgroup_namespace {
        nix::sched::unshare(CloneFlags::CLONE_NEWCGROUP)
            .map_err(|e| format!("cannot create a cgroup namespace: {e}"))?;
    }
    match &launch.network_namespace {
        Some(netns) => nix::sched::setns(netns, CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("cannot join the container's network namespace: {e}"))?,
        None if new_network => {
            loopback_up().map_err(|e| format!("cannot bring up the loopback interface: {e}"))?
        }
        None => {}
    }
    if let Some(hostname) = spec.hostname() {
        nix::unistd::sethostname(hostname)
            .map_err(|e| format!("cannot set the hostname {hostname:?}: {e}"))?;
    }

    let root = spec
        .root()
        .as_ref()
        .ok_or("the container's spec has no root")?;
    let rootfs = root.path();
    // Nothing mounted from here on may reach the host's mount table.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| format!("cannot make the mount namespace private: {e}"))?;
    let layout = &launch.cgroup.layout;
    let root_fs = mounts::Root::open(rootfs)?;
    mounts::mount_all(&root_fs, spec.mounts().as_deref().unwrap_or_default(), layout)?;
    mounts::populate_dev(&root_fs)?;
    let process = spec
        .process()
        .as_ref()
        .ok_or("the container's spec has no process")?;
    mounts::ensure_dir(&root_fs, process.cwd())?;
    drop(root_fs);
    syscall
        .pivot_rootfs(rootfs)
        .map_err(|e| format!("cannot switch to the container's root filesystem: {e}"))?;
    let linux = spec
        .linux()
        .as_ref()
        .ok_or("the container's spec has no linux section")?;
    // Before /proc/sys turns read-only below.
    apply_sysctls(linux.sysctl().as_ref())?;
    mounts::mask(linux.masked_paths().as_deref().unwrap_or_default())?;
    mounts::make_read_only(linux.readonly_paths().as_deref().unwrap_or_default())?;
    if root.readonly().unwrap_or(false) {
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(|e| format!("cannot make the root filesystem read-only: {e}"))?;
    }

    // While the process still has CAP_SYS_RESOURCE to raise hard limits.
    apply_rlimits(process.rlimits().as_deref().unwrap_or_default())?;
    let init = spec
        .annotations()
        .as_ref()
        .is_some_and(|a| a.get(super::spec::INIT_ANNOTATION).is_some_and(|v| v == "true"));
    become_process(process, linux.seccomp().as_ref(), init)
}

/// `--sysctl`: written under the container's own /proc/sys (they are
/// namespaced, checked at create).
fn apply_sysctls(sysctls: Option<&std::collections::HashMap<String, String>>) -> Result<(), String> {
    for (key, value) in sysctls.into_iter().flatten() {
        let path = Path::new("/proc/sys").join(key.replace('.', "/"));
        std::fs::write(&path, value).map_err(|e| format!("cannot set the sysctl {key}={value}: {e}"))?;
    }
    Ok(())
}

/// `--ulimit`.
fn apply_rlimits(rlimits: &[oci_spec::runtime::PosixRlimit]) -> Result<(), String> {
    use oci_spec::runtime::PosixRlimitType as Kind;
    for rlimit in rlimits {
        let resource = match rlimit.typ() {
            Kind::RlimitCpu => libc::RLIMIT_CPU,
            Kind::RlimitFsize => libc::RLIMIT_FSIZE,
            Kind::RlimitData => libc::RLIMIT_DATA,
            Kind::RlimitStack => libc::RLIMIT_STACK,
            Kind::RlimitCore => libc::RLIMIT_CORE,
            Kind::RlimitRss => libc::RLIMIT_RSS,
            Kind::RlimitNproc => libc::RLIMIT_NPROC,
            Kind::RlimitNofile => libc::RLIMIT_NOFILE,
            Kind::RlimitMemlock => libc::RLIMIT_MEMLOCK,
            Kind::RlimitAs => libc::RLIMIT_AS,
            Kind::RlimitLocks => libc::RLIMIT_LOCKS,
            Kind::RlimitSigpending => libc::RLIMIT_SIGPENDING,
            Kind::RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
            Kind::RlimitNice => libc::RLIMIT_NICE,
            Kind::RlimitRtprio => libc::RLIMIT_RTPRIO,
            Kind::RlimitRttime => libc::RLIMIT_RTTIME,
        };
        let limit = libc::rlimit { rlim_cur: rlimit.soft(), rlim_max: rlimit.hard() };
        // SAFETY: setrlimit reads the struct passed.
        if unsafe { libc::setrlimit(resource, &limit) } != 0 {
            return Err(format!(
                "cannot set the ulimit {:?} to {}:{}: {}",
                rlimit.typ(),
                rlimit.soft(),
                rlimit.hard(),
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// The last steps of every process started in a container, its first and
/// those `exec` adds: close what is not stdio, take the user, drop
/// capabilities, no_new_privs, working directory, signals, seccomp (last,
/// so the steps before are not filtered), with `init` a reaper forked to
/// stay PID 1, exec. Returns only on failure.
pub(crate) fn become_process(
    process: &oci_spec::runtime::Process,
    seccomp: Option<&oci_spec::runtime::LinuxSeccomp>,
    init: bool,
) -> Result<Infallible, String> {
    let syscall = LinuxSyscall;
    // Nothing of the shim's may leak into the command.
    syscall
        .close_range(0)
        .map_err(|e| format!("cannot close the shim's files: {e}"))?;
    let user = process.user();
    let groups: Vec<Gid> = user
        .additional_gids()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(Gid::from_raw)
        .collect();
    syscall
        .set_groups(&groups)
        .map_err(|e| format!("cannot set supplementary groups {groups:?}: {e}"))?;
    syscall
        .set_id(Uid::from_raw(user.uid()), Gid::from_raw(user.gid()))
        .map_err(|e| format!("cannot switch to user {}:{}: {e}", user.uid(), user.gid()))?;
    libcontainer::capabilities::reset_effective(&syscall)
        .map_err(|e| format!("cannot reset capabilities: {e}"))?;
    if let Some(caps) = process.capabilities() {
        libcontainer::capabilities::drop_privileges(caps, &syscall)
            .map_err(|e| format!("cannot drop capabilities: {e}"))?;
    }
    if process.no_new_privileges().unwrap_or(false) {
        nix::sys::prctl::set_no_new_privs().map_err(|e| format!("cannot set no_new_privs: {e}"))?;
    }
    let cwd = process.cwd();
    nix::unistd::chdir(cwd).map_err(|e| {
        format!(
            "cannot change to the working directory {}: {e}",
            cwd.display()
        )
    })?;
    let env = c_strings(process.env());
    let args = c_strings(process.args());
    let program = args.first().ok_or("the container has no command")?;
    let path = find_program(program, &env);
    reset_signals();
    // Last, so the setup above is not filtered.
    if let Some(seccomp) = seccomp {
        libcontainer::seccomp::initialize_seccomp(seccomp)
            .map_err(|e| format!("cannot load the seccomp profile: {e}"))?;
    }
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    if init {
        super::reaper::fork_reaper(process.terminal().unwrap_or(false))?;
    }
    let Err(e) = nix::unistd::execve(&path, &args, &env);
    Err(format!("cannot run {}: {e}", program.to_string_lossy()))
}

/// The container's process starts as docker's do: no signal blocked and
/// none ignored. Both survive exec, and whatever started the daemon (a
/// shell script, a test harness, a service manager) may have left some
/// blocked or ignored; a SIGTERM blocked here would make every `stop` wait
/// out its grace period. Handlers need no reset: exec does that.
fn reset_signals() {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal};
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for signal in Signal::iterator().filter(|s| !matches!(s, Signal::SIGKILL | Signal::SIGSTOP)) {
        // SAFETY: installing SIG_DFL runs no code of ours.
        let _ = unsafe { sigaction(signal, &default) };
    }
    // The real-time signals, which nix's list leaves out. 32 and 33 are
    // glibc's own: its wrappers refuse them, and a threaded parent may leave
    // them ignored, so the kernel is asked directly.
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: libc::c_ulong,
        restorer: usize,
        mask: u64,
    }
    let default = KernelSigaction { handler: libc::SIG_DFL, flags: 0, restorer: 0, mask: 0 };
    for number in 32..=libc::SIGRTMAX() {
        // SAFETY: the kernel reads a sigaction of the layout it defines
        // (8-byte mask: the size passed); SIG_DFL runs no code.
        unsafe {
            libc::syscall(libc::SYS_rt_sigaction, number, &default as *const KernelSigaction, std::ptr::null_mut::<KernelSigaction>(), 8usize);
        }
    }
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}

/// Strings as execve takes them (one with a NUL byte cannot be passed).
fn c_strings(strings: &Option<Vec<String>>) -> Vec<CString> {
    strings.iter().flatten().filter_map(|s| CString::new(s.as_str()).ok()).collect()
}

/// The program as execve needs it: a path as given, or the first match
/// in the container's PATH (docker resolves it in the container's view).
fn find_program(program: &CString, env: &[CString]) -> CString {
    let bytes = program.as_bytes();
    if bytes.contains(&b'/') {
        return program.clone();
    }
    let path_var = env
        .iter()
        .find_map(|e| e.as_bytes().strip_prefix(b"PATH="))
        .unwrap_or(super::record::DEFAULT_PATH.as_bytes());
    for dir in path_var.split(|b| *b == b':').filter(|d| !d.is_empty()) {
        let candidate =
            Path::new(std::ffi::OsStr::from_bytes(dir)).join(std::ffi::OsStr::from_bytes(bytes));
        if nix::unistd::access(&candidate, nix::unistd::AccessFlags::X_OK).is_ok()
            && !candidate.is_dir()
        {
            if let Ok(found) = CString::new(candidate.as_os_str().as_bytes()) {
                return found;
            }
        }
    }
    program.clone()
}

/// Sets IFF_UP on `lo` in the current network namespace.
fn loopback_up() -> std::io::Result<()> {
    // SAFETY: plain ioctls on a socket we own, with a zeroed ifreq whose
    // name is set within bounds.
    unsafe {
        let socket = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if socket < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let socket = OwnedFd::from_raw_fd(socket);
        let mut request: libc::ifreq = std::mem::zeroed();
        for (dst, src) in request.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &request) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
