//! `shoal-wireguard __wireguard NAME PORT [MTU]`: the userspace WireGuard
//! device on its own, for the WireGuard tests and the overlay benchmark.
//! Production runs the same code as `shoal __wireguard`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("__wireguard") => shoal_overlay_net::wireguard::device_main(args.collect()),
        _ => {
            eprintln!("usage: shoal-wireguard __wireguard NAME PORT [MTU]");
            ExitCode::from(2)
        }
    }
}
