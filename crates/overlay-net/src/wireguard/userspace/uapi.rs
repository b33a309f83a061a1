//! The WireGuard cross-platform UAPI on /var/run/wireguard/<iface>.sock,
//! which `wg` and wireguard-control speak to userspace devices: `get=1`
//! answers with key=value lines, `set=1` sends them; both end with
//! `errno=N` and a blank line. A `set=1` is parsed whole before any of it
//! is applied, so a bad request changes nothing.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use super::state::{DeviceState, PeerChange};
use super::{read_lock, write_lock, Shared};

/// One `set=1` request.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SetRequest {
    /// `Some(None)` removes the key.
    pub private_key: Option<Option<[u8; 32]>>,
    pub listen_port: Option<u16>,
    pub fwmark: Option<u32>,
    pub replace_peers: bool,
    pub peers: Vec<PeerChange>,
}

/// Serves the socket until the process ends, one connection at a time
/// (requests are small and rare: the daemon and an occasional `wg`).
pub fn serve(listener: UnixListener, shared: Arc<Shared>) {
    for connection in listener.incoming() {
        match connection {
            Ok(stream) => {
                // A client that stalls must not wedge configuration for good.
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                if let Err(e) = handle_connection(&stream, &shared) {
                    tracing::debug!(error = %e, "UAPI connection ended");
                }
            }
            Err(e) => tracing::warn!(error = %e, "accepting a UAPI connection failed"),
        }
    }
}

fn handle_connection(stream: &UnixStream, shared: &Shared) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    let mut writer = stream;
    loop {
        let mut command = String::new();
        if reader.read_line(&mut command)? == 0 {
            return Ok(());
        }
        let lines = read_until_blank(&mut reader)?;
        let response = match command.trim_end() {
            "get=1" => {
                let mut response = format_get(&read_lock(&shared.state));
                response.push_str("errno=0\n\n");
                response
            }
            "set=1" => {
                let errno = match parse_set(lines.iter().map(String::as_str)) {
                    Ok(request) => apply_set(shared, request),
                    Err(errno) => errno,
                };
                format!("errno={errno}\n\n")
            }
            _ => format!("errno={}\n\n", libc::EINVAL),
        };
        writer.write_all(response.as_bytes())?;
    }
}

fn read_until_blank(reader: &mut impl BufRead) -> std::io::Result<Vec<String>> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(lines);
        }
        let line = line.trim_end_matches('\n');
        if line.is_empty() {
            return Ok(lines);
        }
        lines.push(line.to_string());
    }
}

/// The `get=1` answer, without the closing `errno` line.
pub fn format_get(state: &DeviceState) -> String {
    let mut out = String::new();
    if let Some(secret) = state.private_key() {
        let _ = writeln!(out, "private_key={}", hex(&secret.to_bytes()));
    }
    let _ = writeln!(out, "listen_port={}", state.listen_port);
    if state.fwmark != 0 {
        let _ = writeln!(out, "fwmark={}", state.fwmark);
    }
    for peer in state.report() {
        let _ = writeln!(out, "public_key={}", hex(&peer.public_key));
        if let Some(preshared_key) = peer.preshared_key {
            let _ = writeln!(out, "preshared_key={}", hex(&preshared_key));
        }
        let _ = writeln!(out, "protocol_version=1");
        if let Some(endpoint) = peer.endpoint {
            let _ = writeln!(out, "endpoint={endpoint}");
        }
        let since_epoch = peer.last_handshake.and_then(|at| at.duration_since(UNIX_EPOCH).ok()).unwrap_or_default();
        let _ = writeln!(out, "last_handshake_time_sec={}", since_epoch.as_secs());
        let _ = writeln!(out, "last_handshake_time_nsec={}", since_epoch.subsec_nanos());
        let _ = writeln!(out, "tx_bytes={}", peer.tx_bytes);
        let _ = writeln!(out, "rx_bytes={}", peer.rx_bytes);
        let _ = writeln!(out, "persistent_keepalive_interval={}", peer.keepalive.unwrap_or(0));
        for (address, prefix) in peer.allowed_ips {
            let _ = writeln!(out, "allowed_ip={address}/{prefix}");
        }
    }
    out
}

/// Parses the lines of a `set=1` request; an errno for a bad one.
pub fn parse_set<'a>(lines: impl Iterator<Item = &'a str>) -> Result<SetRequest, i32> {
    let mut request = SetRequest::default();
    for line in lines {
        let (key, value) = line.split_once('=').ok_or(libc::EPROTO)?;
        if let Some(peer) = request.peers.last_mut() {
            match key {
                "public_key" => {}
                "remove" => peer.remove = parse_true(value)?,
                "update_only" => peer.update_only = parse_true(value)?,
                "preshared_key" => peer.preshared_key = Some(parse_key(value)?.filter(|key| *key != [0; 32])),
                "endpoint" => peer.endpoint = Some(value.parse::<SocketAddr>().map_err(|_| libc::EINVAL)?),
                "persistent_keepalive_interval" => peer.keepalive = Some(value.parse().map_err(|_| libc::EINVAL)?),
                "replace_allowed_ips" => peer.replace_allowed_ips = parse_true(value)?,
                "allowed_ip" => peer.allowed_ips.push(parse_allowed_ip(value)?),
                "protocol_version" if value == "1" => {}
                _ => return Err(libc::EINVAL),
            }
            if key != "public_key" {
                continue;
            }
        }
        match key {
            "private_key" => request.private_key = Some(parse_key(value)?.filter(|key| *key != [0; 32])),
            "listen_port" => request.listen_port = Some(value.parse().map_err(|_| libc::EINVAL)?),
            "fwmark" => request.fwmark = Some(value.parse().map_err(|_| libc::EINVAL)?),
            "replace_peers" => request.replace_peers = parse_true(value)?,
            "public_key" => {
                let public_key = parse_key(value)?.ok_or(libc::EINVAL)?;
                request.peers.push(PeerChange { public_key, ..PeerChange::default() });
            }
            _ => return Err(libc::EINVAL),
        }
    }
    Ok(request)
}

/// Applies a parsed request; 0 or an errno.
fn apply_set(shared: &Shared, request: SetRequest) -> i32 {
    let mut state = write_lock(&shared.state);
    if let Some(port) = request.listen_port {
        if let Err(errno) = shared.rebind(&mut state, port) {
            return errno;
        }
    }
    if let Some(mark) = request.fwmark {
        if let Err(e) = read_lock(&shared.udp).set_fwmark(mark) {
            return e.raw_os_error().unwrap_or(libc::EIO);
        }
        state.fwmark = mark;
    }
    if let Some(key) = request.private_key {
        state.set_private_key(key);
    }
    if request.replace_peers {
        state.remove_all_peers();
    }
    for change in &request.peers {
        if let Err(errno) = state.change_peer(change) {
            return errno;
        }
    }
    0
}

fn parse_true(value: &str) -> Result<bool, i32> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(libc::EINVAL),
    }
}

/// A 64-digit hex key; `None` for all zeros.
fn parse_key(value: &str) -> Result<Option<[u8; 32]>, i32> {
    if value.len() != 64 || !value.is_ascii() {
        return Err(libc::EINVAL);
    }
    let mut key = [0u8; 32];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&value[2 * i..2 * i + 2], 16).map_err(|_| libc::EINVAL)?;
    }
    Ok((key != [0; 32]).then_some(key))
}

fn parse_allowed_ip(value: &str) -> Result<(IpAddr, u8), i32> {
    let (address, prefix) = value.split_once('/').ok_or(libc::EINVAL)?;
    let address: IpAddr = address.parse().map_err(|_| libc::EINVAL)?;
    let prefix: u8 = prefix.parse().map_err(|_| libc::EINVAL)?;
    let max = if address.is_ipv4() { 32 } else { 128 };
    if prefix > max {
        return Err(libc::EINVAL);
    }
    Ok((address, prefix))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut out, byte| {
        let _ = write!(out, "{byte:02x}");
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    const KEY_B: &str = "2222222222222222222222222222222222222222222222222222222222222222";

    #[test]
    fn a_set_request_is_parsed_whole() {
        let text = format!(
            "private_key={KEY_A}\nlisten_port=51820\nreplace_peers=true\npublic_key={KEY_B}\nendpoint=198.18.0.2:51820\n\
             persistent_keepalive_interval=25\nreplace_allowed_ips=true\nallowed_ip=100.64.1.2/32\nallowed_ip=100.64.9.0/24\n\
             public_key={KEY_A}\nremove=true"
        );
        let request = parse_set(text.lines()).unwrap();
        assert_eq!(request.private_key, Some(Some([0x11; 32])));
        assert_eq!(request.listen_port, Some(51820));
        assert!(request.replace_peers);
        assert_eq!(request.peers.len(), 2);
        let first = &request.peers[0];
        assert_eq!(first.public_key, [0x22; 32]);
        assert_eq!(first.endpoint, Some("198.18.0.2:51820".parse().unwrap()));
        assert_eq!(first.keepalive, Some(25));
        assert!(first.replace_allowed_ips);
        assert_eq!(first.allowed_ips, vec![("100.64.1.2".parse().unwrap(), 32), ("100.64.9.0".parse().unwrap(), 24)]);
        assert!(request.peers[1].remove);
    }

    #[test]
    fn bad_requests_name_an_errno() {
        assert_eq!(parse_set(["private_key=zz"].into_iter()), Err(libc::EINVAL));
        assert_eq!(parse_set(["listen_port"].into_iter()), Err(libc::EPROTO));
        assert_eq!(parse_set(["bogus=1"].into_iter()), Err(libc::EINVAL));
        let peer = format!("public_key={KEY_B}");
        assert_eq!(parse_set([peer.as_str(), "allowed_ip=100.64.0.0/33"].into_iter()), Err(libc::EINVAL));
        assert_eq!(parse_set([peer.as_str(), "listen_port=1"].into_iter()), Err(libc::EINVAL));
    }

    #[test]
    fn get_reports_what_was_set() {
        let mut state = DeviceState::new(51820);
        let request = parse_set(
            format!("private_key={KEY_A}\npublic_key={KEY_B}\nendpoint=198.18.0.2:51820\nallowed_ip=100.64.1.2/32").lines(),
        )
        .unwrap();
        state.set_private_key(request.private_key.unwrap());
        state.change_peer(&request.peers[0]).unwrap();
        let text = format_get(&state);
        for line in [
            format!("private_key={KEY_A}"),
            "listen_port=51820".to_string(),
            format!("public_key={KEY_B}"),
            "endpoint=198.18.0.2:51820".to_string(),
            "allowed_ip=100.64.1.2/32".to_string(),
            "last_handshake_time_sec=0".to_string(),
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from:\n{text}");
        }
        assert!(state.route("100.64.1.2".parse().unwrap()).is_some());
        assert!(state.route("100.64.1.3".parse().unwrap()).is_none());
    }
}
