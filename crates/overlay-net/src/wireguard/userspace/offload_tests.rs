use super::*;

/// RFC 1071 the slow, obvious way, to check the fast one against.
fn reference_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for pair in data.chunks(2) {
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn tcp_checksum_ok(packet: &[u8]) -> bool {
    let ihl = usize::from(packet[0] & 0x0f) * 4;
    let tcp_len = packet.len() - ihl;
    let mut pseudo = packet[12..20].to_vec();
    pseudo.extend_from_slice(&[0, IPPROTO_TCP]);
    pseudo.extend_from_slice(&(tcp_len as u16).to_be_bytes());
    pseudo.extend_from_slice(&packet[ihl..]);
    reference_checksum(&pseudo) == 0
}

fn ip_checksum_ok(packet: &[u8]) -> bool {
    reference_checksum(&packet[..20]) == 0
}

/// An IPv4/TCP packet 100.64.0.1:40000 -> 100.64.0.2:5201 with a
/// timestamp option, the given flags and payload, checksums left zero.
fn tcp_packet(seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let header_len = 20 + 32;
    let mut packet = vec![0u8; header_len + payload.len()];
    packet[0] = 0x45;
    let total = packet.len() as u16;
    packet[2..4].copy_from_slice(&total.to_be_bytes());
    packet[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
    packet[6] = 0x40; // DF
    packet[8] = 64;
    packet[9] = IPPROTO_TCP;
    packet[12..16].copy_from_slice(&[100, 64, 0, 1]);
    packet[16..20].copy_from_slice(&[100, 64, 0, 2]);
    packet[20..22].copy_from_slice(&40000u16.to_be_bytes());
    packet[22..24].copy_from_slice(&5201u16.to_be_bytes());
    packet[24..28].copy_from_slice(&seq.to_be_bytes());
    packet[28..32].copy_from_slice(&77u32.to_be_bytes());
    packet[32] = 8 << 4; // 32-byte TCP header
    packet[33] = flags;
    packet[34..36].copy_from_slice(&500u16.to_be_bytes());
    packet[40..52].copy_from_slice(&[1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 3]);
    packet[header_len..].copy_from_slice(payload);
    packet
}

fn with_checksums(mut packet: Vec<u8>) -> Vec<u8> {
    set_ipv4_checksum(&mut packet, 20);
    let sum = ones_sum(&packet[20..], pseudo_header_sum(&packet, packet.len() - 20));
    packet[36..38].copy_from_slice(&(!fold(sum)).to_ne_bytes());
    packet
}

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

fn segments_of(super_packet: &mut [u8], hdr: VnetHdr) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for_each_segment(&hdr, super_packet, |segment| out.push(segment.to_vec())).unwrap();
    out
}

fn tso_hdr(mss: u16) -> VnetHdr {
    VnetHdr { flags: F_NEEDS_CSUM, gso_type: GSO_TCPV4, hdr_len: 52, gso_size: mss, csum_start: 20, csum_offset: 16 }
}

#[test]
fn the_fast_checksum_matches_rfc_1071() {
    for len in [0, 1, 2, 3, 5, 20, 63, 64, 65, 1399, 1400, 65535] {
        let data = payload(len);
        let expected = reference_checksum(&data).to_be_bytes();
        // ones_sum takes the AVX2 loop on CPUs that have it: check both.
        assert_eq!((!fold(ones_sum(&data, 0))).to_ne_bytes(), expected, "length {len}");
        assert_eq!((!fold(ones_sum_portable(&data, 0))).to_ne_bytes(), expected, "length {len}, portable");
        // Sums over a misaligned start too.
        if len > 1 {
            let expected = reference_checksum(&data[1..]).to_be_bytes();
            assert_eq!((!fold(ones_sum(&data[1..], 0))).to_ne_bytes(), expected, "length {len} from byte 1");
        }
    }
}

#[test]
fn a_super_packet_becomes_valid_wire_segments() {
    let data = payload(10_000);
    let mut super_packet = tcp_packet(1_000, TCP_ACK | TCP_PSH | TCP_CWR, &data);
    let segments = segments_of(&mut super_packet, tso_hdr(1388));
    assert_eq!(segments.len(), 8);
    let mut rebuilt = Vec::new();
    for (index, segment) in segments.iter().enumerate() {
        assert_eq!(u16::from_be_bytes([segment[2], segment[3]]) as usize, segment.len());
        assert_eq!(u16::from_be_bytes([segment[4], segment[5]]), 0x1234 + index as u16);
        assert_eq!(tcp_seq(segment, 20), 1_000 + (index * 1388) as u32);
        assert!(ip_checksum_ok(segment), "IP checksum of segment {index}");
        assert!(tcp_checksum_ok(segment), "TCP checksum of segment {index}");
        let last = index == segments.len() - 1;
        assert_eq!(segment[33] & TCP_PSH != 0, last, "PSH only on the last segment");
        assert_eq!(segment[33] & TCP_CWR != 0, index == 0, "CWR only on the first segment");
        assert_eq!(segment.len(), 52 + if last { 10_000 - 7 * 1388 } else { 1388 });
        rebuilt.extend_from_slice(&segment[52..]);
    }
    assert_eq!(rebuilt, data);
}

#[test]
fn a_partial_checksum_is_completed() {
    let mut packet = tcp_packet(5, TCP_ACK, &payload(333));
    set_ipv4_checksum(&mut packet, 20);
    let pseudo = fold(pseudo_header_sum(&packet, packet.len() - 20));
    packet[36..38].copy_from_slice(&pseudo.to_ne_bytes());
    let hdr = VnetHdr { flags: F_NEEDS_CSUM, gso_type: GSO_NONE, hdr_len: 0, gso_size: 0, csum_start: 20, csum_offset: 16 };
    let segments = segments_of(&mut packet, hdr);
    assert_eq!(segments.len(), 1);
    assert!(tcp_checksum_ok(&segments[0]));
}

#[test]
fn consecutive_segments_coalesce_back_into_one_super_packet() {
    let data = payload(20_000);
    let mut super_packet = tcp_packet(42, TCP_ACK | TCP_PSH, &data);
    let segments = segments_of(&mut super_packet, tso_hdr(1388));
    let mut coalescer = Coalescer::default();
    let mut writes: Vec<Vec<u8>> = Vec::new();
    let mut write = |bytes: &[u8]| writes.push(bytes.to_vec());
    for segment in &segments {
        coalescer.push(segment, &mut write);
    }
    coalescer.flush(&mut write);
    assert_eq!(writes.len(), 1, "one write for the whole run");
    let hdr = VnetHdr::parse(&writes[0]).unwrap();
    assert_eq!(hdr, VnetHdr { flags: F_NEEDS_CSUM, gso_type: GSO_TCPV4, hdr_len: 52, gso_size: 1388, csum_start: 20, csum_offset: 16 });
    let packet = &writes[0][VNET_HDR_LEN..];
    assert_eq!(packet.len(), 52 + data.len());
    assert_eq!(u16::from_be_bytes([packet[2], packet[3]]) as usize, packet.len());
    assert!(ip_checksum_ok(packet));
    assert_eq!(tcp_seq(packet, 20), 42);
    assert_ne!(packet[33] & TCP_PSH, 0, "the last segment's PSH is kept");
    assert_eq!(&packet[52..], &data[..]);
    // Completing the partial checksum gives a valid packet.
    let mut completed = packet.to_vec();
    complete_checksum(&mut completed, 20, 16).unwrap();
    assert!(tcp_checksum_ok(&completed));
}

#[test]
fn gaps_other_flows_and_control_packets_are_not_glued() {
    let mut coalescer = Coalescer::default();
    let mut writes: Vec<(VnetHdr, Vec<u8>)> = Vec::new();
    let mut write = |bytes: &[u8]| writes.push((VnetHdr::parse(bytes).unwrap(), bytes[VNET_HDR_LEN..].to_vec()));
    let first = with_checksums(tcp_packet(0, TCP_ACK, &payload(1000)));
    let gap = with_checksums(tcp_packet(5000, TCP_ACK, &payload(1000)));
    let syn = with_checksums(tcp_packet(6000, 0x02, &[]));
    let mut other_port = with_checksums(tcp_packet(6000, TCP_ACK, &payload(1000)));
    other_port[21] ^= 1;
    for packet in [&first, &gap, &syn, &other_port] {
        coalescer.push(packet, &mut write);
    }
    coalescer.flush(&mut write);
    assert_eq!(writes.len(), 4);
    for ((hdr, written), sent) in writes.iter().zip([&first, &gap, &syn, &other_port]) {
        assert_eq!(hdr.gso_type, GSO_NONE);
        assert_eq!(hdr.flags, F_DATA_VALID);
        assert_eq!(written, sent, "single packets pass unchanged");
    }
}

#[test]
fn a_short_segment_ends_the_run() {
    let mut coalescer = Coalescer::default();
    let mut sizes = Vec::new();
    let mut write = |bytes: &[u8]| sizes.push(bytes.len() - VNET_HDR_LEN);
    let mut seq = 0;
    for len in [1000, 1000, 400, 1000] {
        coalescer.push(&with_checksums(tcp_packet(seq, TCP_ACK, &payload(len))), &mut write);
        seq += len as u32;
    }
    coalescer.flush(&mut write);
    assert_eq!(sizes, vec![52 + 2400, 52 + 1000]);
}

/// What the data path does: decrypt into the landing bytes, which lie over
/// the tail of the run being built.
fn land(coalescer: &mut Coalescer, packet: &[u8], offset: usize, write: &mut impl FnMut(&[u8])) {
    let landing = coalescer.landing(packet.len() + offset + 16, write);
    landing[..offset + packet.len() + 16].fill(0xee);
    landing[offset..offset + packet.len()].copy_from_slice(packet);
    coalescer.land(offset, packet.len(), write);
}

#[test]
fn packets_landed_in_place_rebuild_the_run_byte_for_byte() {
    let data = payload(30_000);
    let mut super_packet = tcp_packet(7, TCP_ACK | TCP_PSH, &data);
    let segments = segments_of(&mut super_packet, tso_hdr(1388));
    let mut coalescer = Coalescer::default();
    let mut writes: Vec<Vec<u8>> = Vec::new();
    let mut write = |bytes: &[u8]| writes.push(bytes.to_vec());
    for (index, segment) in segments.iter().enumerate() {
        land(&mut coalescer, segment, index % 3, &mut write);
        if index % 4 == 1 {
            // A keepalive, a handshake or a spoofed packet: written into the
            // landing bytes, then dropped. The run must not notice.
            let landing = coalescer.landing(148, &mut write);
            landing[..148].fill(0x55);
            coalescer.abandon();
        }
    }
    coalescer.flush(&mut write);
    assert_eq!(writes.len(), 1, "one write for the whole run");
    let packet = &writes[0][VNET_HDR_LEN..];
    assert_eq!(&packet[52..], &data[..]);
    assert_eq!(u16::from_be_bytes([packet[2], packet[3]]) as usize, packet.len());
    assert!(ip_checksum_ok(packet));
    let mut completed = packet.to_vec();
    complete_checksum(&mut completed, 20, 16).unwrap();
    assert!(tcp_checksum_ok(&completed));
}

#[test]
fn a_landed_packet_of_another_flow_leaves_the_run_intact() {
    let mut coalescer = Coalescer::default();
    let mut writes: Vec<Vec<u8>> = Vec::new();
    let mut write = |bytes: &[u8]| writes.push(bytes[VNET_HDR_LEN..].to_vec());
    // Short payloads, so the landed headers cover the run's own headers too.
    let first = with_checksums(tcp_packet(0, TCP_ACK, &payload(30)));
    let second = with_checksums(tcp_packet(30, TCP_ACK, &payload(30)));
    let mut other = with_checksums(tcp_packet(60, TCP_ACK, &payload(30)));
    other[21] ^= 1;
    let ping = {
        let mut icmp = vec![0u8; 84];
        icmp[0] = 0x45;
        icmp[2..4].copy_from_slice(&84u16.to_be_bytes());
        icmp[9] = 1;
        icmp
    };
    for packet in [&first, &second] {
        land(&mut coalescer, packet, 0, &mut write);
    }
    land(&mut coalescer, &ping, 1, &mut write);
    land(&mut coalescer, &other, 0, &mut write);
    coalescer.flush(&mut write);
    assert_eq!(writes.len(), 3, "{writes:?}");
    let mut glued = first.clone();
    glued.extend_from_slice(&second[52..]);
    assert_eq!(writes[0][52..], glued[52..], "the run's payload");
    assert_eq!(writes[0][20..36], glued[20..36], "the run's TCP header up to its checksum");
    assert_eq!(writes[1], ping);
    assert_eq!(writes[2], other);
}
