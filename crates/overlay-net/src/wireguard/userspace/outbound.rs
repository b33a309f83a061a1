//! Outbound: packets from the TUN device to peers. A read may be a 64 KiB
//! TCP super-packet; it is cut into wire-sized segments in place, each is
//! encrypted with the peer's `Tunn` into the outbox, and runs of
//! equal-sized datagrams leave with one UDP GSO sendmsg each.
//!
//! The TUN device is drained without waiting: a super-packet of 47
//! segments (MTU 1440) is one full GSO send of 44 and 3 left over, and
//! those 3 wait for the next read's segments instead of costing a send,
//! a receive and a TUN write of their own on the other side. Whatever is
//! left when the TUN device has nothing more goes at once.

use std::net::{SocketAddr, SocketAddrV4};

use boringtun::noise::{Tunn, TunnResult};

use super::datapath::{destination, message_type, send_logged, DATA, MIN_MESSAGE_ROOM};
use super::offload::{for_each_segment, VnetHdr, VNET_HDR_LEN};
use super::state::lock;
use super::udp::{Udp, MAX_GSO_BYTES, MAX_GSO_SEGMENTS};
use super::{read_lock, Shared};

/// WireGuard's data header (16) and tag (16), plus padding to 16 bytes.
const MAX_OVERHEAD: usize = 32 + 15;
/// TUN reads before the outbox is emptied and the other direction gets a
/// turn: bounds how long the tail of a run may wait (a few 100 µs).
const MAX_READS_PER_DRAIN: usize = 8;
/// A super-packet's datagrams and a run carried over from the last one.
const OUTBOX_BYTES: usize = 3 * 65_536;

pub struct Outbound {
    input: Vec<u8>,
    outbox: Outbox,
}

impl Default for Outbound {
    fn default() -> Self {
        Outbound { input: vec![0u8; VNET_HDR_LEN + 65_535], outbox: Outbox::default() }
    }
}

impl Outbound {
    /// Encrypts and sends what the TUN device has queued (some of it, if
    /// it has much); whether there was anything. Fails only when the TUN
    /// device does (it was deleted).
    pub fn drain(&mut self, shared: &Shared, udp: &Udp) -> std::io::Result<bool> {
        let mut any = false;
        let mut reads = 0;
        let result = loop {
            if reads == MAX_READS_PER_DRAIN {
                break Ok(any);
            }
            let len = match shared.tun.read(&mut self.input) {
                Ok(len) => len,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break Ok(any),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => break Err(e),
            };
            any = true;
            reads += 1;
            packet(shared, udp, &mut self.input[..len], &mut self.outbox);
        };
        self.outbox.send(udp, true);
        result
    }
}

/// Encrypts one read from the TUN device into the outbox.
fn packet(shared: &Shared, udp: &Udp, input: &mut [u8], outbox: &mut Outbox) {
    let Some(hdr) = VnetHdr::parse(input) else { return };
    let packet = &mut input[VNET_HDR_LEN..];
    let Some(destination) = destination(packet) else { return };
    // No peer owns the address, or it has no endpoint yet: dropped, as
    // WireGuard does.
    let Some(peer) = read_lock(&shared.state).route(destination).cloned() else { return };
    // Locked once for the whole super-packet (~40 µs of cipher at most):
    // locking per segment lets the other thread, when there is one, wake
    // up only to find it taken again.
    let mut session = lock(&peer.session);
    let Some(SocketAddr::V4(endpoint)) = session.endpoint else { return };
    outbox.address(udp, endpoint);
    let tunn = &mut session.tunn;
    let result = for_each_segment(&hdr, packet, |segment| outbox.encrypt(udp, tunn, segment));
    if let Err(e) = result {
        tracing::debug!(?e, "dropped a malformed packet from the TUN device");
    }
    drop(session);
    outbox.send(udp, false);
}

/// Encrypted datagrams waiting to go to one endpoint, end to end, from
/// `start` to `used`.
struct Outbox {
    buf: Vec<u8>,
    start: usize,
    used: usize,
    lens: Vec<usize>,
    endpoint: Option<SocketAddrV4>,
}

impl Default for Outbox {
    fn default() -> Self {
        Outbox { buf: vec![0; OUTBOX_BYTES], start: 0, used: 0, lens: Vec::with_capacity(256), endpoint: None }
    }
}

impl Outbox {
    /// Where the next datagrams go; what waits for another address leaves first.
    fn address(&mut self, udp: &Udp, endpoint: SocketAddrV4) {
        if self.endpoint != Some(endpoint) {
            self.send(udp, true);
            self.endpoint = Some(endpoint);
        }
    }

    fn encrypt(&mut self, udp: &Udp, tunn: &mut Tunn, segment: &[u8]) {
        let room = (segment.len() + MAX_OVERHEAD).max(MIN_MESSAGE_ROOM);
        if self.buf.len() - self.used < room {
            if self.start > 0 {
                // Only a run that is not full yet waits here: move it to the front.
                self.buf.copy_within(self.start..self.used, 0);
                self.used -= self.start;
                self.start = 0;
            }
            if self.buf.len() - self.used < room {
                self.send(udp, true);
            }
        }
        match tunn.encapsulate(segment, &mut self.buf[self.used..]) {
            TunnResult::WriteToNetwork(datagram) if message_type(datagram) == Some(DATA) => {
                self.lens.push(datagram.len());
                self.used += datagram.len();
            }
            // No session yet: the packet waits in the Tunn's queue and this
            // is the handshake initiation that will bring one.
            TunnResult::WriteToNetwork(message) => {
                if let Some(endpoint) = self.endpoint {
                    send_logged(udp, endpoint, message);
                }
            }
            TunnResult::Err(e) => tracing::debug!(?e, "encrypting a packet failed"),
            _ => {}
        }
    }

    /// Sends runs of equal-sized datagrams (the last of a run may be
    /// shorter), one GSO send each; all of them, or only those that are
    /// complete, keeping a last run that could still grow.
    fn send(&mut self, udp: &Udp, all: bool) {
        let Some(endpoint) = self.endpoint else {
            self.clear();
            return;
        };
        let mut index = 0;
        while index < self.lens.len() {
            let run = first_run(&self.lens[index..]);
            if !run.closed && !all {
                break;
            }
            let bytes = &self.buf[self.start..self.start + run.bytes];
            if let Err(e) = udp.send_segments(endpoint, bytes, run.size) {
                tracing::debug!(error = %e, to = %endpoint, "sending datagrams failed");
            }
            self.start += run.bytes;
            index += run.count;
        }
        self.lens.drain(..index);
        if self.lens.is_empty() {
            self.clear();
        }
    }

    fn clear(&mut self) {
        self.start = 0;
        self.used = 0;
        self.lens.clear();
    }
}

/// The datagrams one GSO send takes from the front of a queue.
#[derive(Debug, PartialEq, Eq)]
struct Run {
    count: usize,
    bytes: usize,
    /// Of each datagram but the last, which may be shorter.
    size: usize,
    /// Full, or ended by a shorter datagram or a longer one after it: no
    /// later datagram can join it.
    closed: bool,
}

/// The first run of `lens` (datagram lengths, in order; not empty).
fn first_run(lens: &[usize]) -> Run {
    let size = lens[0];
    let (mut count, mut bytes) = (0, 0);
    for &len in lens {
        if count == MAX_GSO_SEGMENTS || bytes + len > MAX_GSO_BYTES || len > size {
            return Run { count, bytes, size, closed: true };
        }
        count += 1;
        bytes += len;
        if len < size {
            return Run { count, bytes, size, closed: true };
        }
    }
    let full = count == MAX_GSO_SEGMENTS || bytes + size > MAX_GSO_BYTES;
    Run { count, bytes, size, closed: full }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_ends_when_full_or_at_a_shorter_or_longer_datagram() {
        // MTU 1440: 44 full-size datagrams fill a 64 KiB send.
        let wire = 1440 + 32;
        assert_eq!(first_run(&[wire; 50]), Run { count: 44, bytes: 44 * wire, size: wire, closed: true });
        assert_eq!(first_run(&[wire; 44]), Run { count: 44, bytes: 44 * wire, size: wire, closed: true });
        let tail = [wire, wire, wire, 520, wire];
        assert_eq!(first_run(&tail), Run { count: 4, bytes: 3 * wire + 520, size: wire, closed: true });
        assert_eq!(first_run(&[84, 84, 1472]), Run { count: 2, bytes: 168, size: 84, closed: true });
        assert_eq!(first_run(&[84; 100]), Run { count: MAX_GSO_SEGMENTS, bytes: 84 * MAX_GSO_SEGMENTS, size: 84, closed: true });
    }

    #[test]
    fn a_run_that_could_grow_stays_open() {
        let wire = 1440 + 32;
        assert_eq!(first_run(&[wire; 3]), Run { count: 3, bytes: 3 * wire, size: wire, closed: false });
        assert_eq!(first_run(&[84]), Run { count: 1, bytes: 84, size: 84, closed: false });
        // One byte short of room for another: closed.
        let size = MAX_GSO_BYTES / 2;
        assert_eq!(first_run(&[size, size]), Run { count: 2, bytes: 2 * size, size, closed: true });
    }
}
