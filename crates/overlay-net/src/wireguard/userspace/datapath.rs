//! The packet loop, and the thread that drives the protocol timers
//! (rekeys, keepalives, handshake retries). [`run`] moves packets both
//! ways ([`Outbound`]: TUN device to peers; [`Inbound`]: peers to TUN
//! device), or one way when each direction has its own thread.
//!
//! On two cores or fewer one thread does both: a bulk transfer has one
//! busy direction (the data) and one that only carries its ACKs, and with
//! a thread each, every ACK woke a sleeping thread on each device, and
//! the two threads of a device fought over the peer's session lock; the
//! wakeups and context switches cost more CPU than the ACKs themselves.
//! One thread instead finds an ACK queued right after the write that made
//! it. With more cores, the two directions get a thread each, so a device
//! can encrypt and decrypt at once on two of them.
//! `SHOAL_WG_DATAPATH_THREADS=1|2` overrides the choice.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::Duration;

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::TunnResult;

use super::inbound::Inbound;
use super::outbound::Outbound;
use super::state::{lock, DeviceState, Peer, Session};
use super::udp::Udp;
use super::{read_lock, Shared};

pub const HANDSHAKE_INIT: u32 = 1;
pub const HANDSHAKE_RESPONSE: u32 = 2;
pub const COOKIE_REPLY: u32 = 3;
pub const DATA: u32 = 4;
/// What boringtun wants free at the destination of any message.
pub const MIN_MESSAGE_ROOM: usize = 148;
const TIMER_TICK: Duration = Duration::from_millis(250);
const THREADS_VARIABLE: &str = "SHOAL_WG_DATAPATH_THREADS";

/// Which directions a data path thread moves packets in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serve {
    Both,
    Outbound,
    Inbound,
}

/// How many threads the data path should have here: 1 or 2.
pub fn threads_for_this_machine() -> usize {
    match std::env::var(THREADS_VARIABLE).ok().and_then(|v| v.trim().parse::<usize>().ok()) {
        Some(threads @ (1 | 2)) => threads,
        _ => {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            if cores <= 2 {
                1
            } else {
                2
            }
        }
    }
}

/// The packet loop. Returns only when the TUN device fails (it was
/// deleted), which an inbound-only thread never sees.
pub fn run(shared: Arc<Shared>, serve: Serve) -> std::io::Error {
    match serve {
        Serve::Inbound => {
            let mut inbound = Inbound::default();
            loop {
                let udp = read_lock(&shared.udp).clone();
                // Alone with the socket: blocking in recvmmsg saves a poll.
                if !inbound.drain(&shared, &udp, false) {
                    inbound.flush(&shared);
                    inbound.drain(&shared, &udp, true);
                }
            }
        }
        Serve::Outbound => {
            let mut outbound = Outbound::default();
            loop {
                let udp = read_lock(&shared.udp).clone();
                match outbound.drain(&shared, &udp) {
                    Ok(true) => {}
                    Ok(false) => wait_readable(&[shared.tun.as_raw_fd()]),
                    Err(e) => return e,
                }
            }
        }
        Serve::Both => {
            let (mut outbound, mut inbound) = (Outbound::default(), Inbound::default());
            loop {
                let udp = read_lock(&shared.udp).clone();
                let sent = match outbound.drain(&shared, &udp) {
                    Ok(sent) => sent,
                    Err(e) => return e,
                };
                let received = inbound.drain(&shared, &udp, false);
                if !sent && !received {
                    inbound.flush(&shared);
                    wait_readable(&[shared.tun.as_raw_fd(), udp.as_raw_fd()]);
                }
            }
        }
    }
}

/// Sleeps until one of `fds` is readable (or has an error or hung up,
/// which the next read reports).
fn wait_readable(fds: &[RawFd]) {
    let mut polled: Vec<libc::pollfd> = fds.iter().map(|&fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 }).collect();
    // SAFETY: poll reads and writes `polled`, sized as passed. EINTR just
    // returns to the loop, which looks again.
    unsafe { libc::poll(polled.as_mut_ptr(), polled.len() as libc::nfds_t, -1) };
}

/// Drives every peer's timers: handshake retries, rekeys, keepalives.
pub fn run_timers(shared: Arc<Shared>, mut every_second: impl FnMut()) {
    let mut buf = vec![0u8; 2_048];
    let mut last_second = std::time::Instant::now();
    loop {
        std::thread::sleep(TIMER_TICK);
        let second_passed = last_second.elapsed() >= Duration::from_secs(1);
        if second_passed {
            last_second = std::time::Instant::now();
        }
        {
            let state = read_lock(&shared.state);
            let udp = read_lock(&shared.udp).clone();
            for peer in state.peers() {
                let mut session = lock(&peer.session);
                let endpoint = session.endpoint;
                if session.greet {
                    if let Some(SocketAddr::V4(to)) = endpoint {
                        session.greet = false;
                        if let TunnResult::WriteToNetwork(initiation) = session.tunn.format_handshake_initiation(&mut buf, false) {
                            send_logged(&udp, to, initiation);
                        }
                    }
                }
                match session.tunn.update_timers(&mut buf) {
                    TunnResult::WriteToNetwork(message) => {
                        if let Some(SocketAddr::V4(endpoint)) = endpoint {
                            send_logged(&udp, endpoint, message);
                        }
                    }
                    TunnResult::Err(WireGuardError::ConnectionExpired) => {}
                    TunnResult::Err(e) => tracing::debug!(?e, "peer timers"),
                    _ => {}
                }
            }
            if second_passed {
                state.rate_limiter.reset_count();
            }
        }
        if second_passed {
            every_second();
        }
    }
}

pub fn owns(state: &DeviceState, peer: &Arc<Peer>, address: IpAddr) -> bool {
    state.route(address).is_some_and(|owner| Arc::ptr_eq(owner, peer))
}

/// WireGuard follows a peer to the address its authenticated packets come from.
pub fn roam(session: &mut Session, sender: SocketAddrV4) {
    if session.endpoint != Some(SocketAddr::V4(sender)) {
        session.endpoint = Some(SocketAddr::V4(sender));
    }
}

pub fn message_type(datagram: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(datagram.get(..4)?.try_into().ok()?))
}

pub fn destination(packet: &[u8]) -> Option<IpAddr> {
    match packet.first()? >> 4 {
        4 => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(packet.get(16..20)?).ok()?))),
        6 => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(packet.get(24..40)?).ok()?))),
        _ => None,
    }
}

pub fn send_logged(udp: &Udp, to: SocketAddrV4, datagram: &[u8]) {
    if let Err(e) = udp.send(to, datagram) {
        tracing::debug!(error = %e, %to, "sending a datagram failed");
    }
}
