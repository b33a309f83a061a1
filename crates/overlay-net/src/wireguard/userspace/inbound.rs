//! Inbound: datagrams from peers to the TUN device. Every GRO run already
//! queued comes in with one recvmmsg; each datagram is decrypted straight
//! into the super-packet the coalescer is gluing together (no copy after
//! the cipher), and that goes to the TUN device once it is full or ends
//! (PSH, a short segment), or when the thread has nothing else to do: one
//! write, one trip through the kernel's stack and one ACK from the
//! receiving TCP per ~64 KiB.

use std::net::{IpAddr, SocketAddrV4};
use std::sync::Arc;

use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::{Packet, TunnResult};

use super::datapath::{
    message_type, owns, roam, send_logged, COOKIE_REPLY, DATA, HANDSHAKE_INIT, HANDSHAKE_RESPONSE, MIN_MESSAGE_ROOM,
};
use super::offload::Coalescer;
use super::state::{lock, DeviceState, Peer};
use super::udp::{Received, Udp};
use super::{read_lock, Shared};

pub struct Inbound {
    received: Received,
    /// For handshake and cookie messages, which do not go to the TUN device.
    scratch: Vec<u8>,
    coalescer: Coalescer,
}

impl Default for Inbound {
    fn default() -> Self {
        Inbound {
            received: Received::default(),
            scratch: vec![0u8; 65_536 + MIN_MESSAGE_ROOM],
            coalescer: Coalescer::default(),
        }
    }
}

impl Inbound {
    /// Decrypts every run of datagrams queued on `udp`, waiting for the
    /// first if `wait`; whether there were any. A TCP super-packet still
    /// growing waits for the next runs: call [`Inbound::flush`] before
    /// sleeping.
    pub fn drain(&mut self, shared: &Shared, udp: &Udp, wait: bool) -> bool {
        if let Err(e) = udp.recv_batch(&mut self.received, wait) {
            match e.kind() {
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => {}
                _ => {
                    tracing::debug!(error = %e, "receiving from the UDP socket failed");
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            }
            return false;
        }
        let state = read_lock(&shared.state);
        let mut write_tun = |bytes: &[u8]| write_tun(shared, bytes);
        let Inbound { received, scratch, coalescer } = self;
        let mut lookups = Lookups::new(&state);
        let mut any = false;
        // Zero bytes: the socket was shut down for a new listen port.
        for (run, segment, sender) in received.runs().filter(|(run, ..)| !run.is_empty()) {
            any = true;
            for datagram in run.chunks(segment.max(1)) {
                deliver(&mut lookups, udp, sender, datagram, scratch, coalescer, &mut write_tun);
            }
        }
        any
    }

    /// Writes the super-packet being glued together, if any.
    pub fn flush(&mut self, shared: &Shared) {
        self.coalescer.flush(&mut |bytes: &[u8]| write_tun(shared, bytes));
    }
}

fn write_tun(shared: &Shared, bytes: &[u8]) {
    if let Err(e) = shared.tun.write(bytes) {
        tracing::debug!(error = %e, "writing to the TUN device failed");
    }
}

/// The device state, with the last answers of the two table lookups
/// every datagram needs, as the datagrams of a run all ask the same: good
/// for one drain, under one read lock of the state.
struct Lookups<'s> {
    state: &'s DeviceState,
    /// Session index -> peer.
    peer: Option<(u32, &'s Arc<Peer>)>,
    /// (peer, inner source address) that cryptokey routing allowed.
    allowed: Option<(*const Peer, IpAddr)>,
}

impl<'s> Lookups<'s> {
    fn new(state: &'s DeviceState) -> Self {
        Lookups { state, peer: None, allowed: None }
    }

    /// Cryptokey routing: a peer may only send from its allowed IPs.
    fn allows(&mut self, peer: &Arc<Peer>, source: IpAddr) -> bool {
        let key = (Arc::as_ptr(peer), source);
        if self.allowed == Some(key) {
            return true;
        }
        let allowed = owns(self.state, peer, source);
        if allowed {
            self.allowed = Some(key);
        }
        allowed
    }
}

/// Decrypts one datagram into the coalescer, or answers it (handshakes).
fn deliver<'s>(
    lookups: &mut Lookups<'s>,
    udp: &Udp,
    sender: SocketAddrV4,
    datagram: &[u8],
    scratch: &mut [u8],
    coalescer: &mut Coalescer,
    write_tun: &mut impl FnMut(&[u8]),
) {
    let Some(peer) = find_peer(lookups, udp, sender, datagram, scratch) else { return };
    let source = Some(IpAddr::V4(*sender.ip()));
    // Taken before the lock: it may write the run so far to the TUN
    // device, which must not hold up an outbound thread.
    let landing = coalescer.landing(datagram.len().max(MIN_MESSAGE_ROOM), write_tun);
    let landing_start = landing.as_ptr() as usize;
    let mut session = lock(&peer.session);
    let (offset, len, inner_source) = match session.tunn.decapsulate(source, datagram, landing) {
        TunnResult::WriteToTunnelV4(packet, inner_source) => {
            (packet.as_ptr() as usize - landing_start, packet.len(), IpAddr::V4(inner_source))
        }
        TunnResult::WriteToTunnelV6(packet, inner_source) => {
            (packet.as_ptr() as usize - landing_start, packet.len(), IpAddr::V6(inner_source))
        }
        TunnResult::WriteToNetwork(reply) => {
            roam(&mut session, sender);
            send_logged(udp, sender, reply);
            coalescer.abandon();
            // A finished handshake releases the packets that waited for it.
            while let TunnResult::WriteToNetwork(queued) = session.tunn.decapsulate(None, &[], scratch) {
                send_logged(udp, sender, queued);
            }
            return;
        }
        TunnResult::Done => {
            roam(&mut session, sender);
            coalescer.abandon();
            return;
        }
        TunnResult::Err(e) => {
            coalescer.abandon();
            tracing::debug!(?e, %sender, "dropped a datagram");
            return;
        }
    };
    roam(&mut session, sender);
    drop(session);
    if lookups.allows(peer, inner_source) {
        coalescer.land(offset, len, write_tun);
    } else {
        coalescer.abandon();
    }
}

/// The peer a datagram belongs to: by our session index, or for a
/// handshake initiation by the static key inside it.
fn find_peer<'s>(
    lookups: &mut Lookups<'s>,
    udp: &Udp,
    sender: SocketAddrV4,
    datagram: &[u8],
    scratch: &mut [u8],
) -> Option<&'s Arc<Peer>> {
    let index_at = match message_type(datagram)? {
        HANDSHAKE_RESPONSE => 8,
        COOKIE_REPLY | DATA => 4,
        HANDSHAKE_INIT => {
            let state = lookups.state;
            let (private, public) = (state.private_key()?, state.public_key()?);
            // Under a handshake flood this answers with a cookie instead.
            let verified = state.rate_limiter.verify_packet(Some(IpAddr::V4(*sender.ip())), datagram, scratch);
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
    let index = u32::from_le_bytes(datagram.get(index_at..index_at + 4)?.try_into().ok()?) >> 8;
    if let Some((cached, peer)) = lookups.peer {
        if cached == index {
            return Some(peer);
        }
    }
    let peer = lookups.state.peer_by_index(index)?;
    lookups.peer = Some((index, peer));
    Some(peer)
}
