//! The userspace WireGuard device: its own small process (`shoal
//! __wireguard NAME PORT [MTU]`), so that it outlives a daemon killed
//! with -9, as container shims do. boringtun supplies the protocol
//! (`noise::Tunn`); the I/O loop is ours because boringtun's device does
//! a syscall per packet (about 0.45 Gbit/s here), while TUN offloads and
//! UDP GSO/GRO move ~45 packets per syscall. It is configured, like any
//! userspace WireGuard, over /var/run/wireguard/NAME.sock, so `wg show`
//! and wireguard-control work with it.
//!
//! Startup is reported on stdout with one line, `ready` or `error
//! SENTENCE`. The device ends on SIGTERM or SIGINT, when its interface is
//! deleted, or when its socket file is removed or taken over (which is
//! how wireguard-control deletes userspace devices); it removes its
//! socket file on the way out, and the kernel removes the interface.

mod datapath;
mod inbound;
mod offload;
mod outbound;
mod state;
mod tun;
mod uapi;
mod udp;

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use datapath::Serve;
use state::DeviceState;
pub use tun::set_mtu_and_up;
use tun::Tun;
use udp::Udp;

/// Where userspace WireGuard devices listen for configuration.
pub const SOCKET_DIR: &str = "/var/run/wireguard";
/// The overlay MTU under a 1500-byte underlay (20 IPv4 + 8 UDP + 32 WireGuard).
pub const DEFAULT_MTU: u32 = 1440;

pub fn socket_path(name: &str) -> PathBuf {
    Path::new(SOCKET_DIR).join(format!("{name}.sock"))
}

/// What every thread of the device shares.
pub struct Shared {
    tun: Tun,
    udp: RwLock<Arc<Udp>>,
    state: RwLock<DeviceState>,
}

impl Shared {
    /// Moves the device to another UDP port (the inbound thread picks the
    /// new socket up when the old one is shut down under it).
    fn rebind(&self, state: &mut DeviceState, port: u16) -> Result<(), i32> {
        if port == state.listen_port && port != 0 {
            return Ok(());
        }
        let udp = Udp::bind(port).map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
        if state.fwmark != 0 {
            udp.set_fwmark(state.fwmark).map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
        }
        state.listen_port = udp.local_port().map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
        let old = std::mem::replace(&mut *write_lock(&self.udp), Arc::new(udp));
        old.shutdown();
        Ok(())
    }
}

pub(crate) fn read_lock<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub(crate) fn write_lock<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Entry point of `shoal __wireguard NAME PORT [MTU]`.
pub fn main(args: Vec<String>) -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).try_init();
    let parsed = match args.as_slice() {
        [name, port] => port.parse::<u16>().ok().map(|port| (name, port, DEFAULT_MTU)),
        [name, port, mtu] => port.parse::<u16>().ok().zip(mtu.parse::<u32>().ok()).map(|(port, mtu)| (name, port, mtu)),
        _ => None,
    };
    let Some((name, port, mtu)) = parsed else {
        eprintln!("usage: shoal __wireguard NAME PORT [MTU] (started by the daemon, not by hand)");
        return ExitCode::from(2);
    };
    // Signals are taken by sigwait in this thread alone: block them before
    // any other thread exists so that every thread inherits the mask.
    let signals = termination_signals();
    // SAFETY: changes this thread's signal mask only.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &signals, std::ptr::null_mut()) };
    let socket = socket_path(name);
    let identity = match start(name, port, mtu, &socket) {
        Ok(identity) => identity,
        Err(message) => {
            println!("error {message}");
            return ExitCode::FAILURE;
        }
    };
    println!("ready");
    let _ = std::io::stdout().flush();
    // Nobody reads our stdout after `ready`; a later write must not fail.
    detach_stdout();
    tracing::info!(interface = %name, port, "WireGuard device running");
    wait_for_signal(&signals);
    if socket_identity(&socket) == Some(identity) {
        let _ = std::fs::remove_file(&socket);
    }
    tracing::info!(interface = %name, "WireGuard device stopped");
    ExitCode::SUCCESS
}

/// Creates the interface, the UDP socket and the control socket, and
/// starts the threads; the identity of the socket file, or why not.
fn start(name: &str, port: u16, mtu: u32, socket: &Path) -> Result<(u64, u64), String> {
    std::fs::create_dir_all(SOCKET_DIR).map_err(|e| format!("cannot create {SOCKET_DIR} ({e})"))?;
    match UnixStream::connect(socket) {
        Ok(_) => return Err(format!("a WireGuard device already answers on {}", socket.display())),
        // The socket of a device that died: ours to replace.
        Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
            let _ = std::fs::remove_file(socket);
        }
        Err(_) => {}
    }
    let tun = Tun::create(name).map_err(|e| match e.raw_os_error() {
        Some(libc::EBUSY) => format!("another process holds a TUN interface named {name}"),
        _ => format!("cannot create the TUN interface {name} ({e})"),
    })?;
    tun::set_mtu_and_up(name, mtu).map_err(|e| format!("cannot set MTU {mtu} on {name} and bring it up ({e})"))?;
    let udp = Udp::bind(port).map_err(|e| match e.raw_os_error() {
        Some(libc::EADDRINUSE) => format!("UDP port {port} is already in use in this network namespace; choose another data path port"),
        _ => format!("cannot bind UDP port {port} ({e})"),
    })?;
    let listen_port = udp.local_port().map_err(|e| format!("cannot read the bound UDP port ({e})"))?;
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket).map_err(|e| format!("cannot listen on {} ({e})", socket.display()))?;
    // get=1 shows the private key: root only.
    let _ = std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600));
    let identity = socket_identity(socket).ok_or_else(|| format!("{} vanished as it was made", socket.display()))?;

    let shared = Arc::new(Shared { tun, udp: RwLock::new(Arc::new(udp)), state: RwLock::new(DeviceState::new(listen_port)) });
    let spawn = |name: &str, body: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new().name(name.into()).spawn(body).map_err(|e| format!("cannot start a thread ({e})"))
    };
    let two_threads = datapath::threads_for_this_machine() == 2;
    let (name, serve) = if two_threads { ("wg-out", Serve::Outbound) } else { ("wg-data", Serve::Both) };
    let outbound = shared.clone();
    spawn(
        name,
        Box::new(move || {
            let error = datapath::run(outbound, serve);
            tracing::info!(%error, "the TUN interface is gone; stopping");
            request_stop();
        }),
    )?;
    if two_threads {
        let inbound = shared.clone();
        spawn("wg-in", Box::new(move || drop(datapath::run(inbound, Serve::Inbound))))?;
    }
    let timers = shared.clone();
    let watched = socket.to_path_buf();
    spawn(
        "wg-timers",
        Box::new(move || {
            datapath::run_timers(timers, || {
                if socket_identity(&watched) != Some(identity) {
                    tracing::info!(socket = %watched.display(), "the control socket was removed or replaced; stopping");
                    request_stop();
                }
            })
        }),
    )?;
    spawn("wg-uapi", Box::new(move || uapi::serve(listener, shared)))?;
    Ok(identity)
}

fn socket_identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|metadata| (metadata.dev(), metadata.ino()))
}

fn termination_signals() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise the set we own.
    unsafe {
        let mut set = std::mem::zeroed::<libc::sigset_t>();
        libc::sigemptyset(&mut set);
        for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, signal);
        }
        set
    }
}

/// Waits for SIGTERM or SIGINT. SIGHUP (a closing terminal or daemon
/// session) is swallowed: the device outlives whoever started it.
fn wait_for_signal(signals: &libc::sigset_t) {
    loop {
        let mut signal = 0;
        // SAFETY: sigwait on a set blocked in every thread.
        if unsafe { libc::sigwait(signals, &mut signal) } == 0 && signal != libc::SIGHUP {
            return;
        }
    }
}

fn request_stop() {
    // SAFETY: signals our own process; the main thread's sigwait takes it.
    unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
}

fn detach_stdout() {
    // SAFETY: replaces fd 1 with /dev/null; nothing holds a borrowed copy.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if null >= 0 {
            libc::dup2(null, 1);
            libc::close(null);
        }
    }
}
