//! Deleting connection-tracking entries of backends that went away, over
//! ctnetlink (the kernel's conntrack netlink interface), in the calling
//! thread's network namespace.
//!
//! Why: once a VIP or a published port has DNAT'd a connection to a task,
//! conntrack keeps sending that connection's packets (TCP and, above all,
//! UDP "connections" that never end) to the task even after it left the
//! backend set; Swarm's IPVS keeps such stale entries (moby#33790). Deleting
//! them makes the next packet a new connection, which the current rules
//! send to a live backend.
//!
//! Why netlink rather than the `conntrack` tool: it needs no extra package
//! on every node, and a dump plus a few deletes costs well under a
//! millisecond on a node with a few thousand entries, against a process
//! start per filter. The kernel filters flushes by tuple only in recent
//! versions, so this dumps the IPv4 table once, matches in userspace, and
//! deletes each match by its original tuple and id (an entry that ended
//! meanwhile is simply gone).

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

const NETLINK_NETFILTER: libc::c_int = 12;
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLA_TYPE_MASK: u16 = 0x3fff;

const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_ID: u16 = 12;
const CTA_ZONE: u16 = 18;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;

const NLMSG_HEADER: usize = 16;
const NFGENMSG: usize = 4;
/// A receive that waits longer than this means the kernel is not answering.
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(2);
const RECEIVE_BUFFER: usize = 1 << 16;

/// IP protocol numbers as conntrack reports them.
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// Which entries to delete: every set field must match.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntryFilter {
    pub protocol: Option<u8>,
    /// Where the client sent it (a VIP, or the node's published port).
    pub original_destination: Option<Ipv4Addr>,
    pub original_destination_port: Option<u16>,
    /// Who answers after NAT: the backend the connection was sent to.
    pub reply_source: Option<Ipv4Addr>,
}

/// One entry's tuples, as far as the filters look at them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Tuple {
    source: Option<Ipv4Addr>,
    destination: Option<Ipv4Addr>,
    protocol: Option<u8>,
    source_port: Option<u16>,
    destination_port: Option<u16>,
}

impl EntryFilter {
    fn matches(&self, original: &Tuple, reply: &Tuple) -> bool {
        fn same<T: PartialEq>(wanted: Option<T>, found: Option<T>) -> bool {
            wanted.is_none() || wanted == found
        }
        same(self.protocol, original.protocol)
            && same(self.original_destination, original.destination)
            && same(self.original_destination_port, original.destination_port)
            && same(self.reply_source, reply.source)
    }
}

/// Deletes every IPv4 entry that matches any of `filters`; returns how many
/// went. Nothing to do for no filters.
pub fn delete_matching(filters: &[EntryFilter]) -> io::Result<usize> {
    if filters.is_empty() {
        return Ok(0);
    }
    let socket = Socket::open()?;
    socket.send(&request(IPCTNL_MSG_CT_GET, NLM_F_REQUEST | NLM_F_DUMP, &[]))?;
    // The original tuple, zone and id of each match, as the kernel sent them.
    let mut doomed: Vec<Vec<u8>> = Vec::new();
    socket.receive_all(|payload| {
        if let Some(attributes) = matching_entry(payload, filters) {
            doomed.push(attributes);
        }
    })?;
    let mut deleted = 0;
    for attributes in doomed {
        socket.send(&request(IPCTNL_MSG_CT_DELETE, NLM_F_REQUEST | NLM_F_ACK, &attributes))?;
        match socket.receive_all(|_| {}) {
            Ok(()) => deleted += 1,
            // Ended (or was deleted) between the dump and now.
            Err(error) if error.raw_os_error() == Some(libc::ENOENT) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(deleted)
}

/// The attributes that name the entry in `payload` (nfgenmsg + attributes
/// of one dumped entry) for a delete, when it matches a filter.
fn matching_entry(payload: &[u8], filters: &[EntryFilter]) -> Option<Vec<u8>> {
    let attributes = payload.get(NFGENMSG..)?;
    let mut original = None;
    let mut reply = None;
    let mut identity = Vec::new();
    for (kind, value, raw) in attributes_of(attributes) {
        match kind {
            CTA_TUPLE_ORIG => {
                original = Some(tuple(value));
                identity.extend_from_slice(raw);
            }
            CTA_TUPLE_REPLY => reply = Some(tuple(value)),
            CTA_ID | CTA_ZONE => identity.extend_from_slice(raw),
            _ => {}
        }
    }
    let (original, reply) = (original?, reply?);
    filters.iter().any(|f| f.matches(&original, &reply)).then_some(identity)
}

fn tuple(nested: &[u8]) -> Tuple {
    let mut tuple = Tuple::default();
    for (kind, value, _) in attributes_of(nested) {
        match kind {
            CTA_TUPLE_IP => {
                for (kind, value, _) in attributes_of(value) {
                    match kind {
                        CTA_IP_V4_SRC => tuple.source = address(value),
                        CTA_IP_V4_DST => tuple.destination = address(value),
                        _ => {}
                    }
                }
            }
            CTA_TUPLE_PROTO => {
                for (kind, value, _) in attributes_of(value) {
                    match kind {
                        CTA_PROTO_NUM => tuple.protocol = value.first().copied(),
                        CTA_PROTO_SRC_PORT => tuple.source_port = port(value),
                        CTA_PROTO_DST_PORT => tuple.destination_port = port(value),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    tuple
}

fn address(value: &[u8]) -> Option<Ipv4Addr> {
    let octets: [u8; 4] = value.get(..4)?.try_into().ok()?;
    Some(Ipv4Addr::from(octets))
}

/// Ports travel in network byte order.
fn port(value: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(value.get(..2)?.try_into().ok()?))
}

fn align4(length: usize) -> usize {
    (length + 3) & !3
}

/// (type without flags, value, the whole attribute with its header) of
/// each netlink attribute in `bytes`; stops at the first malformed one.
fn attributes_of(bytes: &[u8]) -> impl Iterator<Item = (u16, &[u8], &[u8])> {
    let mut rest = bytes;
    std::iter::from_fn(move || {
        let header = rest.get(..4)?;
        let length = usize::from(u16::from_ne_bytes([header[0], header[1]]));
        let kind = u16::from_ne_bytes([header[2], header[3]]) & NLA_TYPE_MASK;
        if length < 4 || length > rest.len() {
            return None;
        }
        let (raw, value) = (&rest[..length], &rest[4..length]);
        rest = rest.get(align4(length)..).unwrap_or_default();
        Some((kind, value, raw))
    })
}

/// A ctnetlink request for IPv4 entries carrying `attributes`.
fn request(message: u16, flags: u16, attributes: &[u8]) -> Vec<u8> {
    let length = NLMSG_HEADER + NFGENMSG + attributes.len();
    let mut bytes = Vec::with_capacity(length);
    bytes.extend_from_slice(&(length as u32).to_ne_bytes());
    bytes.extend_from_slice(&((NFNL_SUBSYS_CTNETLINK << 8) | message).to_ne_bytes());
    bytes.extend_from_slice(&flags.to_ne_bytes());
    bytes.extend_from_slice(&0u32.to_ne_bytes()); // sequence
    bytes.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
    bytes.push(libc::AF_INET as u8);
    bytes.push(0); // NFNETLINK_V0
    bytes.extend_from_slice(&0u16.to_be_bytes()); // resource id
    bytes.extend_from_slice(attributes);
    bytes
}

struct Socket {
    fd: OwnedFd,
}

impl Socket {
    fn open() -> io::Result<Socket> {
        // SAFETY: plain socket(2); the result is checked before use.
        let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, NETLINK_NETFILTER) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let timeout = libc::timeval { tv_sec: RECEIVE_TIMEOUT.as_secs() as libc::time_t, tv_usec: 0 };
        // SAFETY: the option value points at a timeval of the size given.
        let set = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if set < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Socket { fd })
    }

    fn send(&self, message: &[u8]) -> io::Result<()> {
        // SAFETY: an all-zero sockaddr_nl addresses the kernel.
        let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: the buffer and the address are valid for the lengths given.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                message.as_ptr().cast(),
                message.len(),
                0,
                (&kernel as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Reads the answer to the last request: each entry's payload goes to
    /// `entry`, until the dump's end or the acknowledgement. A negative
    /// acknowledgement comes back as its errno.
    fn receive_all(&self, mut entry: impl FnMut(&[u8])) -> io::Result<()> {
        let mut buffer = vec![0u8; RECEIVE_BUFFER];
        loop {
            // SAFETY: the buffer is valid for its length.
            let received = unsafe { libc::recv(self.fd.as_raw_fd(), buffer.as_mut_ptr().cast(), buffer.len(), 0) };
            if received < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut rest = &buffer[..received as usize];
            while rest.len() >= NLMSG_HEADER {
                let length = u32::from_ne_bytes(rest[0..4].try_into().unwrap_or_default()) as usize;
                let kind = u16::from_ne_bytes([rest[4], rest[5]]);
                if length < NLMSG_HEADER || length > rest.len() {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "a truncated netlink message from ctnetlink"));
                }
                let payload = &rest[NLMSG_HEADER..length];
                match kind {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        let code = payload.get(..4).map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]])).unwrap_or(0);
                        return if code == 0 { Ok(()) } else { Err(io::Error::from_raw_os_error(-code)) };
                    }
                    _ => entry(payload),
                }
                rest = rest.get(align4(length)..).unwrap_or_default();
            }
            if received == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "ctnetlink closed the socket"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attribute(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        bytes.extend_from_slice(&kind.to_ne_bytes());
        bytes.extend_from_slice(value);
        bytes.resize(align4(bytes.len()), 0);
        bytes
    }

    fn nested(kind: u16, children: &[Vec<u8>]) -> Vec<u8> {
        attribute(kind | 0x8000, &children.concat())
    }

    fn tuple_attribute(kind: u16, source: [u8; 4], destination: [u8; 4], protocol: u8, ports: (u16, u16)) -> Vec<u8> {
        nested(kind, &[
            nested(CTA_TUPLE_IP, &[attribute(CTA_IP_V4_SRC, &source), attribute(CTA_IP_V4_DST, &destination)]),
            nested(CTA_TUPLE_PROTO, &[
                attribute(CTA_PROTO_NUM, &[protocol]),
                attribute(CTA_PROTO_SRC_PORT, &ports.0.to_be_bytes()),
                attribute(CTA_PROTO_DST_PORT, &ports.1.to_be_bytes()),
            ]),
        ])
    }

    /// A client's connection to VIP 100.64.3.2:80, DNAT'd to 100.64.3.7.
    fn dumped_entry() -> (Vec<u8>, Vec<u8>) {
        let original = tuple_attribute(CTA_TUPLE_ORIG, [100, 64, 3, 5], [100, 64, 3, 2], PROTO_TCP, (40000, 80));
        let reply = tuple_attribute(CTA_TUPLE_REPLY, [100, 64, 3, 7], [100, 64, 3, 5], PROTO_TCP, (80, 40000));
        let id = attribute(CTA_ID, &7u32.to_be_bytes());
        let mut payload = vec![libc::AF_INET as u8, 0, 0, 0];
        payload.extend_from_slice(&original);
        payload.extend_from_slice(&reply);
        payload.extend_from_slice(&attribute(3, &0u32.to_be_bytes())); // status
        payload.extend_from_slice(&id);
        (payload, [original, id].concat())
    }

    #[test]
    fn an_entry_matches_on_its_original_destination_and_its_backend() {
        let (payload, identity) = dumped_entry();
        let vip = EntryFilter {
            original_destination: Some(Ipv4Addr::new(100, 64, 3, 2)),
            reply_source: Some(Ipv4Addr::new(100, 64, 3, 7)),
            ..EntryFilter::default()
        };
        assert_eq!(matching_entry(&payload, &[vip]), Some(identity), "the delete names the original tuple and id");
        let port = EntryFilter { protocol: Some(PROTO_TCP), original_destination_port: Some(80), ..vip };
        assert!(matching_entry(&payload, &[port]).is_some());

        let other_backend = EntryFilter { reply_source: Some(Ipv4Addr::new(100, 64, 3, 8)), ..vip };
        let udp = EntryFilter { protocol: Some(PROTO_UDP), ..vip };
        let other_port = EntryFilter { original_destination_port: Some(8080), ..vip };
        for filter in [other_backend, udp, other_port] {
            assert_eq!(matching_entry(&payload, &[filter]), None, "{filter:?}");
        }
        assert!(matching_entry(&payload, &[other_backend, vip]).is_some(), "any filter may match");
    }

    #[test]
    fn malformed_attributes_end_the_walk_instead_of_panicking() {
        let (payload, _) = dumped_entry();
        for cut in 0..payload.len() {
            let _ = matching_entry(&payload[..cut], &[EntryFilter::default()]);
        }
        let bogus_length = [0xff, 0xff, 1, 0, 1, 2, 3];
        assert_eq!(attributes_of(&bogus_length).count(), 0);
    }

    #[test]
    fn requests_address_ctnetlink_for_ipv4() {
        let bytes = request(IPCTNL_MSG_CT_DELETE, NLM_F_REQUEST | NLM_F_ACK, &[1, 2, 3, 4]);
        assert_eq!(u32::from_ne_bytes(bytes[0..4].try_into().unwrap()) as usize, bytes.len());
        assert_eq!(u16::from_ne_bytes([bytes[4], bytes[5]]), 0x0102);
        assert_eq!(bytes[16], libc::AF_INET as u8);
        assert_eq!(&bytes[20..], &[1, 2, 3, 4]);
    }
}
