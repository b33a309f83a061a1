//! TCP segmentation and receive coalescing for the TUN device, the two
//! halves of what a NIC's TSO and GRO do. Reads from the TUN device may
//! be 64 KiB TCP super-packets (virtio-net GSO): [`for_each_segment`] cuts
//! them into wire-sized packets with their own headers and checksums, in
//! place. Decrypted packets of one TCP flow arrive in runs: [`Coalescer`]
//! glues consecutive ones back into a super-packet, so the kernel takes
//! them with one write and one trip through its stack. Both avoid copying
//! payload: at ~1.4 KB a packet every memcpy costs a tenth of the cipher.

/// `struct virtio_net_hdr`, which leads every packet on the TUN device.
pub const VNET_HDR_LEN: usize = 10;
const F_NEEDS_CSUM: u8 = 1;
const F_DATA_VALID: u8 = 2;
const GSO_NONE: u8 = 0;
const GSO_TCPV4: u8 = 1;
const GSO_ECN: u8 = 0x80;

const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_ACK: u8 = 0x10;
const TCP_CWR: u8 = 0x80;
const IPPROTO_TCP: u8 = 6;
/// An IPv4 packet can be no longer.
const MAX_IP_PACKET: usize = 65_535;
/// IPv4 (no options: see [`coalescable`]) + the longest TCP header.
const MAX_COALESCED_HEADER: usize = 20 + 60;
/// IPv4 and TCP headers with options at their longest.
const MAX_SEGMENT_HEADER: usize = 60 + 60;
/// The most any datagram can need as room to be decrypted into.
const MAX_LANDING: usize = 65_536;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    pub fn parse(bytes: &[u8]) -> Option<VnetHdr> {
        let field = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]);
        (bytes.len() >= VNET_HDR_LEN).then(|| VnetHdr {
            flags: bytes[0],
            gso_type: bytes[1],
            hdr_len: field(2),
            gso_size: field(4),
            csum_start: field(6),
            csum_offset: field(8),
        })
    }

    pub fn write(&self, out: &mut [u8]) {
        out[0] = self.flags;
        out[1] = self.gso_type;
        out[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        out[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        out[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        out[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
    }

    fn plain(flags: u8) -> VnetHdr {
        VnetHdr { flags, gso_type: GSO_NONE, hdr_len: 0, gso_size: 0, csum_start: 0, csum_offset: 0 }
    }
}

/// Why a packet from the TUN device was dropped.
#[derive(Debug, PartialEq, Eq)]
pub enum Malformed {
    Truncated,
    UnsupportedGso(u8),
}

/// Calls `emit` with each wire-sized packet of `packet` (as read from the
/// TUN device, after its header), checksums complete. Segments are built
/// inside `packet`, which is left scrambled.
pub fn for_each_segment(hdr: &VnetHdr, packet: &mut [u8], mut emit: impl FnMut(&[u8])) -> Result<(), Malformed> {
    match hdr.gso_type & !GSO_ECN {
        GSO_NONE => {
            if hdr.flags & F_NEEDS_CSUM != 0 {
                complete_checksum(packet, hdr.csum_start as usize, hdr.csum_offset as usize)?;
            }
            emit(packet);
            Ok(())
        }
        GSO_TCPV4 => segment_tcp4(packet, hdr.gso_size as usize, emit),
        other => Err(Malformed::UnsupportedGso(other)),
    }
}

/// Fills in a checksum the kernel left partial: the field holds the
/// pseudo-header sum, the rest is summed from `start` to the end.
fn complete_checksum(packet: &mut [u8], start: usize, offset: usize) -> Result<(), Malformed> {
    let field = start + offset;
    if field + 2 > packet.len() {
        return Err(Malformed::Truncated);
    }
    let sum = fold(ones_sum(&packet[start..], 0));
    let mut checksum = !sum;
    // UDP sends a computed zero as all ones (zero means "none").
    if checksum == 0 && offset == 6 {
        checksum = 0xffff;
    }
    packet[field..field + 2].copy_from_slice(&checksum.to_ne_bytes());
    Ok(())
}

/// Segment `index` is its payload with a copy of the headers in front:
/// the headers go over the tail of the previous segment's payload, which
/// `emit` is done with, so no payload byte moves.
fn segment_tcp4(packet: &mut [u8], mss: usize, mut emit: impl FnMut(&[u8])) -> Result<(), Malformed> {
    let (ihl, header_len) = tcp4_header_lengths(packet).ok_or(Malformed::Truncated)?;
    let payload_len = packet.len() - header_len;
    if mss == 0 || payload_len == 0 {
        return Err(Malformed::Truncated);
    }
    let mut original = [0u8; MAX_SEGMENT_HEADER];
    let original = &mut original[..header_len];
    original.copy_from_slice(&packet[..header_len]);
    let id = u16::from_be_bytes([original[4], original[5]]);
    let seq = u32::from_be_bytes([original[ihl + 4], original[ihl + 5], original[ihl + 6], original[ihl + 7]]);
    let flags = original[ihl + 13];
    let segments = payload_len.div_ceil(mss);
    for index in 0..segments {
        let start = index * mss;
        let len = header_len + mss.min(payload_len - start);
        let segment = &mut packet[start..start + len];
        if index > 0 {
            segment[..header_len].copy_from_slice(original);
        }
        segment[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        segment[4..6].copy_from_slice(&id.wrapping_add(index as u16).to_be_bytes());
        set_ipv4_checksum(segment, ihl);
        let seq = seq.wrapping_add(start as u32);
        segment[ihl + 4..ihl + 8].copy_from_slice(&seq.to_be_bytes());
        let mut segment_flags = flags;
        if index + 1 < segments {
            // FIN and PSH belong to the end of the data, CWR to its start.
            segment_flags &= !(TCP_FIN | TCP_PSH);
        }
        if index > 0 {
            segment_flags &= !TCP_CWR;
        }
        segment[ihl + 13] = segment_flags;
        segment[ihl + 16..ihl + 18].copy_from_slice(&[0, 0]);
        let sum = ones_sum(&segment[ihl..], pseudo_header_sum(segment, len - ihl));
        segment[ihl + 16..ihl + 18].copy_from_slice(&(!fold(sum)).to_ne_bytes());
        emit(segment);
    }
    Ok(())
}

/// IPv4 header length and IPv4 + TCP header length, if `packet` is a
/// whole IPv4 TCP packet.
fn tcp4_header_lengths(packet: &[u8]) -> Option<(usize, usize)> {
    if packet.len() < 40 || packet[0] >> 4 != 4 || packet[9] != IPPROTO_TCP {
        return None;
    }
    let ihl = usize::from(packet[0] & 0x0f) * 4;
    if ihl < 20 || packet.len() < ihl + 20 {
        return None;
    }
    let header_len = ihl + usize::from(packet[ihl + 12] >> 4) * 4;
    (header_len >= ihl + 20 && packet.len() >= header_len).then_some((ihl, header_len))
}

/// One's-complement sum of `data` as native-endian 16-bit words (the
/// Internet checksum does not care about byte order as long as the result
/// is stored the same way), added to `initial`. Every segment sent is
/// summed whole: with AVX2 where the CPU has it (the crate is built for
/// baseline x86-64, so the plain loop only gets SSE2), ~3x faster.
fn ones_sum(data: &[u8], initial: u64) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        return unsafe { ones_sum_avx2(data, initial) };
    }
    ones_sum_portable(data, initial)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn ones_sum_avx2(data: &[u8], initial: u64) -> u64 {
    // The same loop, vectorised by the compiler 32 bytes at a time.
    ones_sum_portable(data, initial)
}

#[inline(always)]
fn ones_sum_portable(data: &[u8], initial: u64) -> u64 {
    let mut sum = initial;
    let mut words = data.chunks_exact(4);
    for word in &mut words {
        sum += u64::from(u32::from_ne_bytes([word[0], word[1], word[2], word[3]]));
    }
    let rest = words.remainder();
    let mut pairs = rest.chunks_exact(2);
    for pair in &mut pairs {
        sum += u64::from(u16::from_ne_bytes([pair[0], pair[1]]));
    }
    if let [last] = pairs.remainder() {
        sum += u64::from(u16::from_ne_bytes([*last, 0]));
    }
    sum
}

fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The TCP pseudo-header (addresses, protocol, length) of an IPv4 packet.
fn pseudo_header_sum(packet: &[u8], tcp_len: usize) -> u64 {
    let mut sum = ones_sum(&packet[12..20], 0);
    sum += u64::from(u16::from_ne_bytes([0, IPPROTO_TCP]));
    sum + u64::from(u16::from_ne_bytes((tcp_len as u16).to_be_bytes()))
}

fn set_ipv4_checksum(packet: &mut [u8], ihl: usize) {
    packet[10..12].copy_from_slice(&[0, 0]);
    let checksum = !fold(ones_sum(&packet[..ihl], 0));
    packet[10..12].copy_from_slice(&checksum.to_ne_bytes());
}

/// The TCP segment being grown, described by its first packet.
#[derive(Debug)]
struct Pending {
    ihl: usize,
    header_len: usize,
    /// The first packet's headers, which every later one must match but
    /// for length, id, checksums, sequence number and PSH.
    head: [u8; MAX_COALESCED_HEADER],
    /// Payload bytes of the first segment: every later one but the last
    /// must match it (that is what the kernel resegments by).
    mss: usize,
    segments: usize,
    /// Bytes built so far, headers included.
    len: usize,
    next_seq: u32,
    /// A short segment or PSH ends the run.
    closed: bool,
}

/// Glues consecutive decrypted TCP segments of one flow into super-packets
/// for the TUN device; everything else passes through one by one.
///
/// Packets are best decrypted straight into it: [`Coalescer::landing`]
/// hands out the bytes where the next packet's headers end just before the
/// end of the run so far, so that if it continues the run its payload is
/// already in place; the run's bytes under those headers are kept aside
/// and put back. [`Coalescer::push`] does the same with a copy.
pub struct Coalescer {
    /// virtio-net header + the packet being built + room to land the next.
    buf: Vec<u8>,
    pending: Option<Pending>,
    /// Where the last [`Coalescer::landing`] put the next packet.
    landing_at: usize,
    /// The run's bytes that the landed packet's headers cover.
    saved: [u8; MAX_COALESCED_HEADER],
    saved_len: usize,
    /// A landed packet that does not continue the run waits here while
    /// the run is written.
    spare: Vec<u8>,
}

impl Default for Coalescer {
    fn default() -> Self {
        Coalescer {
            buf: vec![0; VNET_HDR_LEN + MAX_IP_PACKET + MAX_LANDING],
            pending: None,
            landing_at: VNET_HDR_LEN,
            saved: [0; MAX_COALESCED_HEADER],
            saved_len: 0,
            spare: Vec::new(),
        }
    }
}

impl Coalescer {
    /// Adds one decrypted IP packet; `write` gets each finished TUN write
    /// (header included). The data path decrypts into [`Coalescer::landing`]
    /// instead; this is the same with a copy.
    #[cfg(test)]
    pub fn push(&mut self, packet: &[u8], write: &mut impl FnMut(&[u8])) {
        self.landing(packet.len(), write)[..packet.len()].copy_from_slice(packet);
        self.land(0, packet.len(), write);
    }

    /// At least `room` bytes to decrypt the next packet into; then call
    /// [`Coalescer::land`] if a packet for the TUN device came out of it,
    /// else [`Coalescer::abandon`]. Any other call in between abandons it.
    pub fn landing(&mut self, room: usize, write: &mut impl FnMut(&[u8])) -> &mut [u8] {
        self.restore();
        if self.pending.as_ref().is_some_and(|p| p.closed || p.len + p.mss > MAX_IP_PACKET) {
            // Nothing can join it: out of the way, so the next lands at the start.
            self.flush(write);
        }
        self.landing_at = match &self.pending {
            Some(pending) => {
                let at = VNET_HDR_LEN + pending.len - pending.header_len;
                self.saved[..pending.header_len].copy_from_slice(&self.buf[at..at + pending.header_len]);
                self.saved_len = pending.header_len;
                at
            }
            None => VNET_HDR_LEN,
        };
        let end = self.landing_at + room.max(MAX_COALESCED_HEADER);
        if self.buf.len() < end {
            self.buf.resize(end, 0);
        }
        &mut self.buf[self.landing_at..]
    }

    /// The landing bytes from `offset` on hold a decrypted IP packet of
    /// `len` bytes.
    pub fn land(&mut self, offset: usize, len: usize, write: &mut impl FnMut(&[u8])) {
        let at = self.landing_at;
        if offset != 0 {
            self.buf.copy_within(at + offset..at + offset + len, at);
        }
        if self.pending.is_some() {
            if self.append_landed(len) {
                return;
            }
            // Not part of the run: aside, so the run gets its bytes back.
            self.spare.clear();
            self.spare.extend_from_slice(&self.buf[at..at + len]);
            self.restore();
            self.flush(write);
            self.buf[VNET_HDR_LEN..VNET_HDR_LEN + len].copy_from_slice(&self.spare);
        }
        self.start(len, write);
    }

    /// Nothing for the TUN device came out of the landing bytes.
    pub fn abandon(&mut self) {
        self.restore();
    }

    /// Writes the packet being built, if any.
    pub fn flush(&mut self, write: &mut impl FnMut(&[u8])) {
        self.restore();
        let Some(pending) = self.pending.take() else { return };
        let packet_len = pending.len;
        let packet = &mut self.buf[VNET_HDR_LEN..VNET_HDR_LEN + packet_len];
        if pending.segments == 1 {
            VnetHdr::plain(F_DATA_VALID).write(&mut self.buf);
        } else {
            packet[2..4].copy_from_slice(&(packet_len as u16).to_be_bytes());
            set_ipv4_checksum(packet, pending.ihl);
            // A partial checksum, as the kernel's own GRO leaves it: the
            // pseudo-header sum, to be completed if the packet leaves again.
            let pseudo = fold(pseudo_header_sum(packet, packet_len - pending.ihl));
            packet[pending.ihl + 16..pending.ihl + 18].copy_from_slice(&pseudo.to_ne_bytes());
            VnetHdr {
                flags: F_NEEDS_CSUM,
                gso_type: GSO_TCPV4,
                hdr_len: pending.header_len as u16,
                gso_size: pending.mss as u16,
                csum_start: pending.ihl as u16,
                csum_offset: 16,
            }
            .write(&mut self.buf);
        }
        write(&self.buf[..VNET_HDR_LEN + packet_len]);
    }

    /// Puts back the run's bytes under the landing area.
    fn restore(&mut self) {
        if self.saved_len > 0 {
            let at = self.landing_at;
            self.buf[at..at + self.saved_len].copy_from_slice(&self.saved[..self.saved_len]);
            self.saved_len = 0;
        }
    }

    /// The packet at the start of the buffer begins a run, or is written
    /// on its own.
    fn start(&mut self, len: usize, write: &mut impl FnMut(&[u8])) {
        let packet = &self.buf[VNET_HDR_LEN..VNET_HDR_LEN + len];
        match coalescable(packet) {
            Some((ihl, header_len)) => {
                let payload = len - header_len;
                let flags = packet[ihl + 13];
                let mut head = [0u8; MAX_COALESCED_HEADER];
                head[..header_len].copy_from_slice(&packet[..header_len]);
                self.pending = Some(Pending {
                    ihl,
                    header_len,
                    head,
                    mss: payload,
                    segments: 1,
                    len,
                    next_seq: tcp_seq(packet, ihl).wrapping_add(payload as u32),
                    closed: flags & TCP_PSH != 0,
                });
            }
            None => {
                // Decrypted packets are authenticated end to end: the
                // kernel need not check their checksums again.
                VnetHdr::plain(F_DATA_VALID).write(&mut self.buf);
                write(&self.buf[..VNET_HDR_LEN + len]);
            }
        }
    }

    /// Joins the landed packet to the run if it continues it; its payload
    /// is then where it belongs already.
    fn append_landed(&mut self, len: usize) -> bool {
        let Some(pending) = &mut self.pending else { return false };
        let packet = &self.buf[self.landing_at..self.landing_at + len];
        if pending.closed {
            return false;
        }
        let Some((ihl, header_len)) = coalescable(packet) else { return false };
        let payload = len - header_len;
        let head = &pending.head[..pending.header_len];
        let same_flow = ihl == pending.ihl
            && header_len == pending.header_len
            && payload <= pending.mss
            && pending.len + payload <= MAX_IP_PACKET
            && tcp_seq(packet, ihl) == pending.next_seq
            // TOS, DF and TTL; addresses; ports; ack; window; options.
            && packet[1] == head[1]
            && packet[6] == head[6]
            && packet[8] == head[8]
            && packet[12..20] == head[12..20]
            && packet[ihl..ihl + 4] == head[ihl..ihl + 4]
            && packet[ihl + 8..ihl + 12] == head[ihl + 8..ihl + 12]
            && packet[ihl + 14..ihl + 16] == head[ihl + 14..ihl + 16]
            && packet[ihl + 20..header_len] == head[ihl + 20..header_len];
        if !same_flow {
            return false;
        }
        let flags = packet[ihl + 13];
        pending.segments += 1;
        pending.len += payload;
        pending.next_seq = pending.next_seq.wrapping_add(payload as u32);
        if payload < pending.mss || flags & TCP_PSH != 0 {
            pending.closed = true;
        }
        // The landed headers go; the payload behind them stays.
        self.restore();
        if flags & TCP_PSH != 0 {
            self.buf[VNET_HDR_LEN + ihl + 13] |= TCP_PSH;
        }
        true
    }
}

/// Header lengths of a packet that may join a super-packet: IPv4 without
/// options or fragments, TCP carrying data with only ACK (and PSH) set.
fn coalescable(packet: &[u8]) -> Option<(usize, usize)> {
    let (ihl, header_len) = tcp4_header_lengths(packet)?;
    let total = u16::from_be_bytes([packet[2], packet[3]]) as usize;
    let fragment = u16::from_be_bytes([packet[6], packet[7]]) & 0x3fff;
    let flags = packet[ihl + 13];
    let ok = ihl == 20
        && total == packet.len()
        && fragment == 0
        && packet.len() > header_len
        && flags & !(TCP_ACK | TCP_PSH) == 0
        && flags & TCP_ACK != 0;
    ok.then_some((ihl, header_len))
}

fn tcp_seq(packet: &[u8], ihl: usize) -> u32 {
    u32::from_be_bytes([packet[ihl + 4], packet[ihl + 5], packet[ihl + 6], packet[ihl + 7]])
}

#[cfg(test)]
#[path = "offload_tests.rs"]
mod tests;
