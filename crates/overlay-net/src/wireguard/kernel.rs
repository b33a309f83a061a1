//! Kernel WireGuard, where the kernel has it: the interface is a link of
//! kind `wireguard`, configured over generic netlink by
//! wireguard-control. It lives in the kernel, so it outlives the daemon
//! by itself. This kernel has no WireGuard module; the userspace device
//! is what runs here.

use wireguard_control::{Backend, Device, DeviceUpdate, InterfaceName};

/// Whether `name` is a kernel WireGuard link in this network namespace.
pub fn is_device(name: &InterfaceName) -> bool {
    Device::get(name, Backend::Kernel).is_ok()
}

/// Tries to create a kernel WireGuard link `name`; false when the kernel
/// has no WireGuard (creating the link fails, or loading the module did).
pub fn create(name: &InterfaceName) -> bool {
    let loaded = std::path::Path::new("/sys/module/wireguard").exists();
    // Creating the link loads the module where it is installed but not loaded.
    match DeviceUpdate::new().apply(name, Backend::Kernel) {
        Ok(()) => true,
        Err(e) => {
            if loaded {
                tracing::warn!(interface = %name, error = %e, "kernel WireGuard is loaded but creating the link failed; using the userspace device");
            } else {
                tracing::debug!(error = %e, "no kernel WireGuard; using the userspace device");
            }
            false
        }
    }
}

pub fn delete(name: &InterfaceName) -> std::io::Result<()> {
    match Device::get(name, Backend::Kernel) {
        Ok(device) => device.delete(),
        Err(_) => Ok(()),
    }
}
