//! The node's WireGuard: its key pair and its one WireGuard interface,
//! through which all overlay traffic between hosts goes, encrypted.
//!
//! - Keys ([`NodeKey`]): made on the node, the private key in a 0600 file
//!   that never leaves it; only the public key is handed out.
//! - The device ([`WireguardDevice`]): kernel WireGuard where the kernel
//!   has it, else our userspace device (boringtun's protocol core, our
//!   own offloading I/O loop) as a process of its own that outlives the
//!   daemon. Either way it is configured through wireguard-control, for
//!   userspace over /var/run/wireguard/NAME.sock, so `wg show` reads it.
//!   The device lives in the network namespace of whoever created it.
//! - Peers: [`WireguardDevice::set_peers`] makes the peer set exactly the
//!   given one, touching only peers that changed, so sessions of the
//!   others carry on.

mod error;
mod keys;
mod kernel;
mod process;
mod userspace;

use std::collections::{BTreeSet, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use ipnet::Ipv4Net;
use wireguard_control::{Backend as ControlBackend, Device, DeviceUpdate, InterfaceName, Key, PeerConfigBuilder};

pub use error::WireguardError;
pub use process::remove_stale_sockets;
pub use keys::{NodeKey, PublicKey};
pub use userspace::{socket_path, DEFAULT_MTU, SOCKET_DIR};

use error::Result;
use process::Found;

/// The default WireGuard UDP port (`--data-path-port`).
pub const DEFAULT_LISTEN_PORT: u16 = 51820;

/// Where the device runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A kernel link of kind `wireguard`.
    Kernel,
    /// Our device process (`shoal __wireguard`), a TUN interface.
    Userspace,
}

/// One peer as the device should have it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    pub public_key: PublicKey,
    /// The peer node's data-path address and port.
    pub endpoint: SocketAddr,
    /// The overlay addresses that live behind it.
    pub allowed_ips: Vec<Ipv4Net>,
    pub persistent_keepalive: Option<u16>,
}

/// A peer as the device has it, with its counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    pub public_key: PublicKey,
    /// Where its packets go now (follows the peer when it roams).
    pub endpoint: Option<SocketAddr>,
    pub allowed_ips: Vec<Ipv4Net>,
    pub persistent_keepalive: Option<u16>,
    pub last_handshake: Option<SystemTime>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// The node's WireGuard interface.
#[derive(Debug, Clone)]
pub struct WireguardDevice {
    name: String,
    interface: InterfaceName,
    backend: Backend,
    public_key: PublicKey,
    listen_port: u16,
    pid: Option<u32>,
}

impl WireguardDevice {
    /// Makes sure the interface `name` runs in this network namespace with
    /// the key at `private_key_path` (made there if missing) and
    /// `listen_port`: adopts a running device (after a daemon restart)
    /// or starts one. `shoal_exe` is the binary that runs the userspace
    /// device as `shoal_exe __wireguard NAME PORT`.
    pub async fn ensure(name: &str, listen_port: u16, private_key_path: &Path, shoal_exe: &Path) -> Result<WireguardDevice> {
        Self::ensure_with(name, listen_port, private_key_path, shoal_exe, None).await
    }

    /// [`WireguardDevice::ensure`], choosing the backend instead of taking
    /// kernel WireGuard when the kernel has it.
    pub async fn ensure_with(
        name: &str,
        listen_port: u16,
        private_key_path: &Path,
        shoal_exe: &Path,
        backend: Option<Backend>,
    ) -> Result<WireguardDevice> {
        let interface = interface_name(name)?;
        let key = NodeKey::load_or_generate(private_key_path)?;
        let (device, current) = {
            let mut attempt = 1;
            loop {
                let (backend, pid) = locate_or_create(name, &interface, listen_port, shoal_exe, backend).await?;
                let device = WireguardDevice { name: name.to_string(), interface, backend, public_key: key.public_key(), listen_port, pid };
                match device.get().await {
                    Ok(current) => break (device, current),
                    // A device killed just now still answers a connect
                    // while its threads wind down: adopted in that window,
                    // it is gone by the first request. Its socket is
                    // stale now, so looking again starts a new one.
                    Err(e) if attempt < ADOPT_ATTEMPTS && backend == Backend::Userspace && e.device_gone() => {
                        tracing::info!(interface = name, pid, "the WireGuard device ended as it was adopted; starting another");
                        attempt += 1;
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        let private = Key(key.private_bytes());
        // Setting the same key again would be harmless for the kernel but
        // is skipped anyway: nothing to do is the common case on restart.
        if current.private_key.as_ref() != Some(&private) || current.listen_port != Some(listen_port) {
            device.apply(DeviceUpdate::new().set_private_key(private).set_listen_port(listen_port)).await?;
        }
        let (backend, pid) = (device.backend, device.pid);
        if backend == Backend::Kernel && pid.is_none() {
            // A kernel link starts down, with the kernel's default MTU.
            let _ = userspace::set_mtu_and_up(name, DEFAULT_MTU);
        }
        tracing::info!(interface = name, ?backend, pid, public_key = %device.public_key, "WireGuard device ready");
        Ok(device)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn public_key(&self) -> PublicKey {
        self.public_key
    }

    pub fn listen_port(&self) -> u16 {
        self.listen_port
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The userspace device's process.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// Makes the device's peers exactly `peers`: removes the others, adds
    /// the new ones, updates those whose endpoint, allowed IPs or keepalive
    /// differ, and leaves the rest (and their sessions) alone.
    pub async fn set_peers(&self, peers: &[PeerConfig]) -> Result<()> {
        let mut seen = HashSet::new();
        for peer in peers {
            if !seen.insert(peer.public_key) {
                return Err(WireguardError::DuplicatePeer { public_key: peer.public_key.to_string() });
            }
        }
        let current: Vec<PeerStatus> = self.peers().await?;
        let mut update = DeviceUpdate::new();
        let mut changes = 0;
        for existing in &current {
            if !seen.contains(&existing.public_key) {
                update = update.remove_peer_by_key(&Key(*existing.public_key.as_bytes()));
                changes += 1;
            }
        }
        for peer in peers {
            let unchanged = current.iter().any(|existing| {
                existing.public_key == peer.public_key
                    && existing.endpoint == Some(peer.endpoint)
                    && existing.persistent_keepalive == peer.persistent_keepalive
                    && existing.allowed_ips.iter().collect::<BTreeSet<_>>() == peer.allowed_ips.iter().collect::<BTreeSet<_>>()
            });
            if unchanged {
                continue;
            }
            let mut builder = PeerConfigBuilder::new(&Key(*peer.public_key.as_bytes())).set_endpoint(peer.endpoint).replace_allowed_ips();
            for network in &peer.allowed_ips {
                builder = builder.add_allowed_ip(IpAddr::V4(network.network()), network.prefix_len());
            }
            builder = match peer.persistent_keepalive {
                Some(interval) => builder.set_persistent_keepalive_interval(interval),
                None => builder.unset_persistent_keepalive(),
            };
            update = update.add_peer(builder);
            changes += 1;
        }
        if changes > 0 {
            tracing::debug!(interface = %self.name, changes, "updating WireGuard peers");
            self.apply(update).await?;
        }
        Ok(())
    }

    /// The device's peers with their last handshake and byte counters.
    pub async fn peers(&self) -> Result<Vec<PeerStatus>> {
        let device = self.get().await?;
        Ok(device
            .peers
            .into_iter()
            .map(|info| PeerStatus {
                public_key: PublicKey::from_bytes(info.config.public_key.0),
                endpoint: info.config.endpoint,
                allowed_ips: info
                    .config
                    .allowed_ips
                    .iter()
                    .filter_map(|ip| match ip.address {
                        IpAddr::V4(v4) => Ipv4Net::new(v4, ip.cidr).ok(),
                        IpAddr::V6(_) => None,
                    })
                    .collect(),
                persistent_keepalive: info.config.persistent_keepalive_interval.filter(|&k| k > 0),
                last_handshake: info.stats.last_handshake_time.filter(|&at| at > SystemTime::UNIX_EPOCH),
                rx_bytes: info.stats.rx_bytes,
                tx_bytes: info.stats.tx_bytes,
            })
            .collect())
    }

    /// Stops and removes the interface `name`: the device process ends
    /// (its interface goes with it) and its socket file is removed; a
    /// kernel link is deleted. Nothing there is not an error.
    pub async fn remove(name: &str) -> Result<()> {
        let interface = interface_name(name)?;
        match process::probe(name) {
            Found::Running { pid } => process::stop(name, pid).await?,
            Found::Stale => process::remove_stale_socket(name),
            Found::Absent => {}
        }
        if process::link_exists(name) && kernel::is_device(&interface) {
            kernel::delete(&interface).map_err(|source| WireguardError::Configure { name: name.to_string(), source })?;
        }
        Ok(())
    }

    async fn get(&self) -> Result<Device> {
        let (interface, backend) = (self.interface, self.control_backend());
        let result = match self.backend {
            // Kernel calls are netlink in this thread's namespace: stay here.
            Backend::Kernel => Device::get(&interface, backend),
            Backend::Userspace => {
                // The device serves its socket one connection at a time; a
                // connection it dropped while busy (seen just after another
                // process configured it) is worth a second try, not an error.
                let mut attempt = 1;
                loop {
                    match blocking(move || Device::get(&interface, backend)).await {
                        Err(e) if attempt < GET_ATTEMPTS && transient(&e) => {
                            tracing::debug!(interface = %self.name, error = %e, "asking the WireGuard device again");
                            attempt += 1;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        result => break result,
                    }
                }
            }
        };
        result.map_err(|source| WireguardError::Control { name: self.name.clone(), socket: socket_path(&self.name), source })
    }

    async fn apply(&self, update: DeviceUpdate) -> Result<()> {
        // wireguard-control starts wireguard-go when no device answers:
        // never let it, a device of ours that died must be ensured again.
        if self.backend == Backend::Userspace && !matches!(process::probe(&self.name), Found::Running { .. }) {
            let source = std::io::Error::new(std::io::ErrorKind::NotFound, "no device answers");
            return Err(WireguardError::Control { name: self.name.clone(), socket: socket_path(&self.name), source });
        }
        let (interface, backend) = (self.interface, self.control_backend());
        let result = match self.backend {
            Backend::Kernel => update.apply(&interface, backend),
            Backend::Userspace => blocking(move || update.apply(&interface, backend)).await,
        };
        result.map_err(|source| WireguardError::Configure { name: self.name.clone(), source })
    }

    fn control_backend(&self) -> ControlBackend {
        match self.backend {
            Backend::Kernel => ControlBackend::Kernel,
            Backend::Userspace => ControlBackend::Userspace,
        }
    }
}

/// Entry point of `shoal __wireguard NAME PORT [MTU]`: runs the userspace
/// device until it is told to stop. Synchronous; call it before starting
/// an async runtime.
pub fn device_main(args: Vec<String>) -> ExitCode {
    userspace::main(args)
}

/// Finds the device `name` in this namespace, or creates it.
async fn locate_or_create(
    name: &str,
    interface: &InterfaceName,
    listen_port: u16,
    shoal_exe: &Path,
    preferred: Option<Backend>,
) -> Result<(Backend, Option<u32>)> {
    match process::probe(name) {
        Found::Running { pid } if process::link_exists(name) => {
            tracing::info!(interface = name, pid, "adopting the running WireGuard device");
            return Ok((Backend::Userspace, Some(pid)));
        }
        Found::Running { pid } => return Err(WireguardError::OtherNamespace { name: name.to_string(), pid }),
        Found::Stale => {
            tracing::info!(interface = name, "replacing the socket of a WireGuard device that died");
            process::remove_stale_socket(name);
        }
        Found::Absent => {}
    }
    if process::link_exists(name) {
        if kernel::is_device(interface) && preferred != Some(Backend::Userspace) {
            return Ok((Backend::Kernel, None));
        }
        // A device whose socket was just removed ends within a second or so.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        while process::link_exists(name) {
            if tokio::time::Instant::now() >= deadline {
                return Err(WireguardError::NameTaken { name: name.to_string() });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    if preferred != Some(Backend::Userspace) && kernel::create(interface) {
        return Ok((Backend::Kernel, None));
    }
    if preferred == Some(Backend::Kernel) {
        return Err(WireguardError::Start { name: name.to_string(), reason: "this kernel has no WireGuard".into() });
    }
    let pid = process::start(name, listen_port, shoal_exe).await?;
    Ok((Backend::Userspace, Some(pid)))
}

/// Tries of finding (or starting) a device that answers.
const ADOPT_ATTEMPTS: u32 = 2;

/// Tries of one read of a userspace device's state.
const GET_ATTEMPTS: u32 = 3;

/// A control socket error that says the exchange was cut, not that the
/// device is gone.
fn transient(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::UnexpectedEof
    )
}

fn interface_name(name: &str) -> Result<InterfaceName> {
    let valid = !name.is_empty()
        && name.len() < libc::IFNAMSIZ
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    valid
        .then(|| name.parse::<InterfaceName>().ok())
        .flatten()
        .ok_or_else(|| WireguardError::InvalidName { name: name.to_string() })
}

async fn blocking<T: Send + 'static>(work: impl FnOnce() -> std::io::Result<T> + Send + 'static) -> std::io::Result<T> {
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|e| Err(std::io::Error::other(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_are_checked() {
        for good in ["wgs-0123456789a", "wg0", "a.b_c-d"] {
            assert!(interface_name(good).is_ok(), "{good}");
        }
        for bad in ["", "wgs-0123456789ab", "wg 0", "wg/0", "..", "wg0\n"] {
            assert!(matches!(interface_name(bad), Err(WireguardError::InvalidName { .. })), "{bad:?}");
        }
    }
}
