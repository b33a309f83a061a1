//! The device's UDP socket (IPv4, the underlay of this project). Sends a
//! run of equal-sized WireGuard datagrams with one sendmsg (UDP GSO,
//! `UDP_SEGMENT`), and receives runs the kernel coalesced (UDP GRO): on a
//! veth underlay the whole run then crosses the stack as one packet.
//! [`Udp::recv_batch`] takes every run already queued with one recvmmsg:
//! a 64 KiB TCP super-packet is two GSO sends (44 + 3 datagrams at MTU
//! 1440), and taking both at once lets the inbound side glue them back
//! into one TUN write.

use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const SOL_UDP: libc::c_int = 17;
const UDP_SEGMENT: libc::c_int = 103;
const UDP_GRO: libc::c_int = 104;
/// The kernel refuses more segments than this in one GSO send.
pub const MAX_GSO_SEGMENTS: usize = 64;
/// Largest UDP payload one send may carry (IPv4 total length 65535).
pub const MAX_GSO_BYTES: usize = 65_535 - 20 - 8;
const SOCKET_BUFFER: libc::c_int = 8 << 20;
/// Runs one [`Udp::recv_batch`] takes at most.
const RECV_RUNS: usize = 8;
/// A GRO run is at most one 64 KiB UDP payload.
const RECV_SLOT: usize = 65_536;

/// Runs of datagrams from one [`Udp::recv_batch`].
pub struct Received {
    buf: Vec<u8>,
    count: usize,
    lens: [usize; RECV_RUNS],
    segments: [usize; RECV_RUNS],
    senders: [SocketAddrV4; RECV_RUNS],
}

impl Default for Received {
    fn default() -> Self {
        Received {
            buf: vec![0; RECV_RUNS * RECV_SLOT],
            count: 0,
            lens: [0; RECV_RUNS],
            segments: [0; RECV_RUNS],
            senders: [SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0); RECV_RUNS],
        }
    }
}

impl Received {
    /// Each run: its bytes, the size of each datagram in it (the last may
    /// be shorter), and the sender. A zero-length run means the socket
    /// was shut down (or an empty datagram came).
    pub fn runs(&self) -> impl Iterator<Item = (&[u8], usize, SocketAddrV4)> {
        (0..self.count).map(|i| {
            let start = i * RECV_SLOT;
            (&self.buf[start..start + self.lens[i]], self.segments[i], self.senders[i])
        })
    }
}

pub struct Udp {
    fd: OwnedFd,
}

impl Udp {
    /// Binds 0.0.0.0:`port` (0: any free port).
    pub fn bind(port: u16) -> std::io::Result<Udp> {
        // SAFETY: socket(2); the fd is owned below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd was just created and is ours alone.
        let udp = Udp { fd: unsafe { OwnedFd::from_raw_fd(fd) } };
        let address = sockaddr(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port));
        // SAFETY: address is a valid sockaddr_in of the given length.
        let bound = unsafe {
            libc::bind(fd, &address as *const libc::sockaddr_in as *const libc::sockaddr, size_of::<libc::sockaddr_in>() as u32)
        };
        if bound < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // Bulk transfers arrive in bursts of ~45 datagrams; small default
        // buffers drop them. FORCE needs CAP_NET_ADMIN, else take what we get.
        for (force, plain) in [(libc::SO_RCVBUFFORCE, libc::SO_RCVBUF), (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF)] {
            if udp.set_option(libc::SOL_SOCKET, force, SOCKET_BUFFER).is_err() {
                let _ = udp.set_option(libc::SOL_SOCKET, plain, SOCKET_BUFFER);
            }
        }
        // Without GRO we still work, one datagram per receive.
        let _ = udp.set_option(SOL_UDP, UDP_GRO, 1);
        Ok(udp)
    }

    pub fn local_port(&self) -> std::io::Result<u16> {
        // SAFETY: getsockname fills at most `len` bytes of `address`.
        let mut address: libc::sockaddr_in = unsafe { zeroed() };
        let mut len = size_of::<libc::sockaddr_in>() as u32;
        let result = unsafe {
            libc::getsockname(self.fd.as_raw_fd(), &mut address as *mut libc::sockaddr_in as *mut libc::sockaddr, &mut len)
        };
        if result < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(u16::from_be(address.sin_port))
    }

    pub fn set_fwmark(&self, mark: u32) -> std::io::Result<()> {
        self.set_option(libc::SOL_SOCKET, libc::SO_MARK, mark as libc::c_int)
    }

    /// Sends the datagrams laid end to end in `buf`: each `segment` bytes
    /// long except the last, which may be shorter.
    pub fn send_segments(&self, to: SocketAddrV4, buf: &[u8], segment: usize) -> std::io::Result<()> {
        if buf.len() <= segment {
            return self.send(to, buf);
        }
        match self.sendmsg(to, buf, Some(segment as u16)) {
            Ok(()) => Ok(()),
            // A route whose MTU is below the segment size, or no GSO: one by one.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EIO | libc::EINVAL | libc::EMSGSIZE | libc::ENOPROTOOPT)) => {
                buf.chunks(segment).try_for_each(|datagram| self.send(to, datagram))
            }
            Err(e) => Err(e),
        }
    }

    pub fn send(&self, to: SocketAddrV4, datagram: &[u8]) -> std::io::Result<()> {
        self.sendmsg(to, datagram, None)
    }

    /// Takes the runs of datagrams already queued (up to [`RECV_RUNS`]);
    /// with `wait`, waits for the first. Without, WouldBlock if none.
    pub fn recv_batch(&self, into: &mut Received, wait: bool) -> std::io::Result<()> {
        into.count = 0;
        // SAFETY: every pointer in the headers refers to `into.buf` slots
        // or to the locals below, all alive and sized as declared for the
        // length of the call.
        unsafe {
            let mut from: [libc::sockaddr_in; RECV_RUNS] = zeroed();
            let mut iovs: [libc::iovec; RECV_RUNS] = zeroed();
            let mut control = [[0u64; 8]; RECV_RUNS];
            let mut headers: [libc::mmsghdr; RECV_RUNS] = zeroed();
            let base = into.buf.as_mut_ptr();
            for i in 0..RECV_RUNS {
                iovs[i] = libc::iovec { iov_base: base.add(i * RECV_SLOT).cast(), iov_len: RECV_SLOT };
                let message = &mut headers[i].msg_hdr;
                message.msg_name = (&mut from[i] as *mut libc::sockaddr_in).cast();
                message.msg_namelen = size_of::<libc::sockaddr_in>() as u32;
                message.msg_iov = &mut iovs[i];
                message.msg_iovlen = 1;
                message.msg_control = control[i].as_mut_ptr().cast();
                message.msg_controllen = size_of::<[u64; 8]>();
            }
            let count = libc::recvmmsg(
                self.fd.as_raw_fd(),
                headers.as_mut_ptr(),
                RECV_RUNS as libc::c_uint,
                if wait { libc::MSG_WAITFORONE } else { libc::MSG_DONTWAIT },
                std::ptr::null_mut(),
            );
            if count < 0 {
                return Err(std::io::Error::last_os_error());
            }
            for (i, header) in headers.iter().enumerate().take(count as usize) {
                let len = (header.msg_len as usize).min(RECV_SLOT);
                into.lens[i] = len;
                into.segments[i] = gro_segment(&header.msg_hdr).unwrap_or(len);
                into.senders[i] =
                    SocketAddrV4::new(Ipv4Addr::from(u32::from_be(from[i].sin_addr.s_addr)), u16::from_be(from[i].sin_port));
            }
            into.count = count as usize;
            Ok(())
        }
    }

    pub fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }

    /// Wakes a thread blocked in [`Udp::recv_batch`] (it then sees 0 bytes).
    pub fn shutdown(&self) {
        // SAFETY: shutdown(2) on our own socket.
        unsafe {
            libc::shutdown(self.fd.as_raw_fd(), libc::SHUT_RDWR);
        }
    }

    fn sendmsg(&self, to: SocketAddrV4, buf: &[u8], segment: Option<u16>) -> std::io::Result<()> {
        // SAFETY: every pointer in the msghdr refers to live locals sized as declared.
        unsafe {
            let mut address = sockaddr(to);
            let mut iov = libc::iovec { iov_base: buf.as_ptr() as *mut libc::c_void, iov_len: buf.len() };
            let mut control = [0u64; 4];
            let mut message: libc::msghdr = zeroed();
            message.msg_name = (&mut address as *mut libc::sockaddr_in).cast();
            message.msg_namelen = size_of::<libc::sockaddr_in>() as u32;
            message.msg_iov = &mut iov;
            message.msg_iovlen = 1;
            if let Some(segment) = segment {
                message.msg_control = control.as_mut_ptr().cast();
                message.msg_controllen = libc::CMSG_SPACE(size_of::<u16>() as u32) as usize;
                let cmsg = libc::CMSG_FIRSTHDR(&message);
                (*cmsg).cmsg_level = SOL_UDP;
                (*cmsg).cmsg_type = UDP_SEGMENT;
                (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as usize;
                std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut u16, segment);
            }
            loop {
                if libc::sendmsg(self.fd.as_raw_fd(), &message, 0) >= 0 {
                    return Ok(());
                }
                let error = std::io::Error::last_os_error();
                if error.kind() != std::io::ErrorKind::Interrupted {
                    return Err(error);
                }
            }
        }
    }

    fn set_option(&self, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> std::io::Result<()> {
        // SAFETY: setsockopt reads one c_int.
        let result = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                level,
                name,
                &value as *const libc::c_int as *const libc::c_void,
                size_of::<libc::c_int>() as u32,
            )
        };
        if result < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

/// The datagram size of a GRO run, from a received message's control data.
///
/// # Safety
/// `message` must be a msghdr that recvmsg filled, its control buffer alive.
unsafe fn gro_segment(message: &libc::msghdr) -> Option<usize> {
    let mut segment = None;
    // SAFETY: the CMSG macros walk the control buffer the kernel filled.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(message);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == SOL_UDP && (*cmsg).cmsg_type == UDP_GRO {
                let size = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const libc::c_int);
                if size > 0 {
                    segment = Some(size as usize);
                }
            }
            cmsg = libc::CMSG_NXTHDR(message, cmsg);
        }
    }
    segment
}

fn sockaddr(address: SocketAddrV4) -> libc::sockaddr_in {
    // SAFETY: sockaddr_in is plain old data; zero is a valid value.
    let mut raw: libc::sockaddr_in = unsafe { zeroed() };
    raw.sin_family = libc::AF_INET as libc::sa_family_t;
    raw.sin_port = address.port().to_be();
    raw.sin_addr = libc::in_addr { s_addr: u32::from(*address.ip()).to_be() };
    raw
}
