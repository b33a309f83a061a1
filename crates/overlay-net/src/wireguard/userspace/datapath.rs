//! The packet loops. Outbound: read a (super-)packet from the TUN device,
//! cut it into wire-sized segments, encrypt each with the peer's `Tunn`
//! into one buffer and send runs of equal-sized datagrams with one UDP GSO
//! sendmsg. Inbound: receive a GRO run of datagrams, decrypt each, glue
//! consecutive TCP segments back together and write them to the TUN
//! device. Each direction has its own thread, so on two cores encryption
//! and decryption run side by side; a third thread drives the protocol
//! timers (rekeys, keepalives, handshake retries).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::{Packet, TunnResult};

use super::offload::{for_each_segment, Coalescer, VnetHdr, VNET_HDR_LEN};
use super::state::{lock, DeviceState, Peer, Session};
use super::udp::{Udp, MAX_GSO_BYTES, MAX_GSO_SEGMENTS};
use super::{read_lock, Shared};

const HANDSHAKE_INIT: u32 = 1;
const HANDSHAKE_RESPONSE: u32 = 2;
const COOKIE_REPLY: u32 = 3;
const DATA: u32 = 4;
/// WireGuard's data header (16) and tag (16), plus padding to 16 bytes.
const MAX_OVERHEAD: usize = 32 + 15;
/// What boringtun wants free at the destination of any message.
const MIN_MESSAGE_ROOM: usize = 148;
const TIMER_TICK: Duration = Duration::from_millis(250);

/// Outbound loop; returns only when the TUN device fails (it was deleted).
pub fn run_outbound(shared: Arc<Shared>) -> std::io::Error {
    let mut input = vec![0u8; VNET_HDR_LEN + 65_535];
    let mut scratch = vec![0u8; 65_536];
    let mut out = Outbox::default();
    loop {
        let len = match shared.tun.read(&mut input) {
            Ok(len) => len,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return e,
        };
        let Some(hdr) = VnetHdr::parse(&input[..len]) else { continue };
        let packet = &mut input[VNET_HDR_LEN..len];
        let Some(destination) = destination(packet) else { continue };
        // No peer owns the address, or it has no endpoint yet: dropped, as
        // WireGuard does.
        let Some(peer) = read_lock(&shared.state).route(destination).cloned() else { continue };
        let Some(SocketAddr::V4(endpoint)) = lock(&peer.session).endpoint else { continue };
        let udp = read_lock(&shared.udp).clone();
        let result = for_each_segment(&hdr, packet, &mut scratch, |segment| {
            out.encrypt(&udp, endpoint, &peer, segment);
        });
        if let Err(e) = result {
            tracing::debug!(?e, "dropped a malformed packet from the TUN device");
        }
        out.send(&udp, endpoint);
    }
}

/// Encrypted datagrams waiting to go to one endpoint, end to end.
struct Outbox {
    buf: Vec<u8>,
    used: usize,
    lens: Vec<usize>,
}

impl Default for Outbox {
    fn default() -> Self {
        Outbox { buf: vec![0; 2 * 65_536 + 4 * MIN_MESSAGE_ROOM], used: 0, lens: Vec::with_capacity(128) }
    }
}

impl Outbox {
    fn encrypt(&mut self, udp: &Udp, endpoint: SocketAddrV4, peer: &Peer, segment: &[u8]) {
        if self.buf.len() - self.used < (segment.len() + MAX_OVERHEAD).max(MIN_MESSAGE_ROOM) {
            self.send(udp, endpoint);
        }
        // Locked per packet, not per super-packet: the inbound thread needs
        // the same session to decrypt the ACKs meanwhile.
        let mut session = lock(&peer.session);
        match session.tunn.encapsulate(segment, &mut self.buf[self.used..]) {
            TunnResult::WriteToNetwork(datagram) if message_type(datagram) == Some(DATA) => {
                self.lens.push(datagram.len());
                self.used += datagram.len();
            }
            // No session yet: the packet waits in the Tunn's queue and this
            // is the handshake initiation that will bring one.
            TunnResult::WriteToNetwork(message) => send_logged(udp, endpoint, message),
            TunnResult::Err(e) => tracing::debug!(?e, "encrypting a packet failed"),
            _ => {}
        }
    }

    /// Sends everything queued, runs of equal-sized datagrams (the last of
    /// a run may be shorter) one GSO send each.
    fn send(&mut self, udp: &Udp, endpoint: SocketAddrV4) {
        let mut offset = 0;
        let mut index = 0;
        while index < self.lens.len() {
            let size = self.lens[index];
            let mut bytes = 0;
            let mut count = 0;
            while index < self.lens.len() && count < MAX_GSO_SEGMENTS && bytes + self.lens[index] <= MAX_GSO_BYTES {
                let len = self.lens[index];
                if len > size {
                    break;
                }
                bytes += len;
                count += 1;
                index += 1;
                if len < size {
                    break;
                }
            }
            send_segments_logged(udp, endpoint, &self.buf[offset..offset + bytes], size);
            offset += bytes;
        }
        self.used = 0;
        self.lens.clear();
    }
}

/// Inbound loop; never returns.
pub fn run_inbound(shared: Arc<Shared>) {
    let mut input = vec![0u8; 65_536 + 4_096];
    let mut inbound = Inbound { plain: vec![0u8; 65_536], coalescer: Coalescer::default() };
    loop {
        let udp = read_lock(&shared.udp).clone();
        let (len, segment, sender) = match udp.recv(&mut input) {
            Ok(received) => received,
            Err(e) => {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    tracing::debug!(error = %e, "receiving from the UDP socket failed");
                    std::thread::sleep(Duration::from_millis(1));
                }
                continue;
            }
        };
        // Zero bytes: the socket was shut down for a new listen port.
        if len == 0 {
            continue;
        }
        let state = read_lock(&shared.state);
        let mut write_tun = |bytes: &[u8]| {
            if let Err(e) = shared.tun.write(bytes) {
                tracing::debug!(error = %e, "writing to the TUN device failed");
            }
        };
        for datagram in input[..len].chunks(segment.max(1)) {
            inbound.datagram(&state, &udp, sender, datagram, &mut write_tun);
        }
        inbound.coalescer.flush(&mut write_tun);
    }
}

struct Inbound {
    plain: Vec<u8>,
    coalescer: Coalescer,
}

impl Inbound {
    fn datagram(&mut self, state: &DeviceState, udp: &Udp, sender: SocketAddrV4, datagram: &[u8], write_tun: &mut impl FnMut(&[u8])) {
        let Some(peer) = self.find_peer(state, udp, sender, datagram) else { return };
        let source = Some(IpAddr::V4(*sender.ip()));
        let mut session = lock(&peer.session);
        match session.tunn.decapsulate(source, datagram, &mut self.plain) {
            TunnResult::WriteToTunnelV4(packet, inner_source) => {
                roam(&mut session, sender);
                drop(session);
                // Cryptokey routing: a peer may only send from its allowed IPs.
                if owns(state, peer, IpAddr::V4(inner_source)) {
                    self.coalescer.push(packet, write_tun);
                }
            }
            TunnResult::WriteToTunnelV6(packet, inner_source) => {
                roam(&mut session, sender);
                drop(session);
                if owns(state, peer, IpAddr::V6(inner_source)) {
                    self.coalescer.push(packet, write_tun);
                }
            }
            TunnResult::WriteToNetwork(reply) => {
                roam(&mut session, sender);
                send_logged(udp, sender, reply);
                // A finished handshake releases the packets that waited for it.
                while let TunnResult::WriteToNetwork(queued) = session.tunn.decapsulate(None, &[], &mut self.plain) {
                    send_logged(udp, sender, queued);
                }
            }
            TunnResult::Done => roam(&mut session, sender),
            TunnResult::Err(e) => tracing::debug!(?e, %sender, "dropped a datagram"),
        }
    }

    /// The peer a datagram belongs to: by our session index, or for a
    /// handshake initiation by the static key inside it.
    fn find_peer<'s>(&mut self, state: &'s DeviceState, udp: &Udp, sender: SocketAddrV4, datagram: &[u8]) -> Option<&'s Arc<Peer>> {
        let index_at = match message_type(datagram)? {
            HANDSHAKE_RESPONSE => 8,
            COOKIE_REPLY | DATA => 4,
            HANDSHAKE_INIT => {
                let (private, public) = (state.private_key()?, state.public_key()?);
                // Under a handshake flood this answers with a cookie instead.
                let verified = state.rate_limiter.verify_packet(Some(IpAddr::V4(*sender.ip())), datagram, &mut self.plain);
                return match verified {
                    Ok(Packet::HandshakeInit(init)) => {
                        let half = parse_handshake_anon(private, public, &init).ok()?;
                        state.peer_by_key(&half.peer_static_public)
                    }
                    Err(TunnResult::WriteToNetwork(cookie)) => {
                        send_logged(udp, sender, cookie);
                        None
                    }
                    _ => None,
                };
            }
            _ => return None,
        };
        let index = u32::from_le_bytes(datagram.get(index_at..index_at + 4)?.try_into().ok()?);
        state.peer_by_index(index >> 8)
    }
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

fn owns(state: &DeviceState, peer: &Arc<Peer>, address: IpAddr) -> bool {
    state.route(address).is_some_and(|owner| Arc::ptr_eq(owner, peer))
}

/// WireGuard follows a peer to the address its authenticated packets come from.
fn roam(session: &mut Session, sender: SocketAddrV4) {
    if session.endpoint != Some(SocketAddr::V4(sender)) {
        session.endpoint = Some(SocketAddr::V4(sender));
    }
}

fn message_type(datagram: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(datagram.get(..4)?.try_into().ok()?))
}

fn destination(packet: &[u8]) -> Option<IpAddr> {
    match packet.first()? >> 4 {
        4 => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(packet.get(16..20)?).ok()?))),
        6 => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(packet.get(24..40)?).ok()?))),
        _ => None,
    }
}

fn send_logged(udp: &Udp, to: SocketAddrV4, datagram: &[u8]) {
    if let Err(e) = udp.send(to, datagram) {
        tracing::debug!(error = %e, %to, "sending a datagram failed");
    }
}

fn send_segments_logged(udp: &Udp, to: SocketAddrV4, datagrams: &[u8], segment: usize) {
    if let Err(e) = udp.send_segments(to, datagrams, segment) {
        tracing::debug!(error = %e, %to, "sending datagrams failed");
    }
}
