//! `shoal-wireguard`: the userspace WireGuard device on its own, for the
//! WireGuard tests and the overlay benchmark. Production runs the same code
//! as `shoal __wireguard`.
//!
//! - `shoal-wireguard __wireguard NAME PORT [MTU]`: the device itself.
//! - `shoal-wireguard __ensure NAME PORT KEY_PATH`: starts (or adopts) the
//!   device as a daemon does, prints `STARTED <device pid>` and waits to be
//!   killed, so a test can kill the process that started a device.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("__wireguard") => shoal_overlay_net::wireguard::device_main(args.collect()),
        Some("__ensure") => {
            let rest: Vec<String> = args.collect();
            match ensure_and_wait(&rest) {
                Ok(()) => ExitCode::SUCCESS,
                Err(message) => {
                    eprintln!("shoal-wireguard: {message}");
                    ExitCode::FAILURE
                }
            }
        }
        _ => {
            eprintln!("usage: shoal-wireguard __wireguard NAME PORT [MTU] | __ensure NAME PORT KEY_PATH");
            ExitCode::from(2)
        }
    }
}

fn ensure_and_wait(args: &[String]) -> Result<(), String> {
    let [name, port, key] = args else { return Err("__ensure takes NAME PORT KEY_PATH".into()) };
    let port: u16 = port.parse().map_err(|_| format!("port {port:?} is not a number"))?;
    let exe = std::env::current_exe().map_err(|e| format!("locating this binary: {e}"))?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    let device = runtime
        .block_on(shoal_overlay_net::wireguard::WireguardDevice::ensure(name, port, Path::new(key), &exe))
        .map_err(|e| e.to_string())?;
    println!("STARTED {}", device.pid().unwrap_or(0));
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    std::thread::sleep(std::time::Duration::from_secs(600));
    Ok(())
}
