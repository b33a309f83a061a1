//! The netlink layer, bridges, sandboxes and host routes against the real
//! kernel, in throwaway network namespaces. Needs root (CI runs as root):
//! `cargo test -p shoal-overlay-net --test kernel`.

mod support;

mod netlink;
mod sandbox;
