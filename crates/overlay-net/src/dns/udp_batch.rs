//! recvmmsg/sendmmsg on the sandbox's UDP socket: under load the socket
//! holds many queries, and taking them (and sending their answers) in one
//! system call each cuts the syscalls and, more, the wakeups on both sides:
//! the client is woken once for a burst of answers instead of once per
//! answer. IPv4 only: the socket is bound to 127.0.0.11.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::RawFd;

/// Queries taken (answers sent) per system call at most.
pub const BATCH: usize = 32;
/// Room for one query; a larger one arrives truncated and is dropped.
pub const SLOT: usize = 2048;

/// Receive buffers for one batch, reused across calls.
pub struct RecvBatch {
    buffers: Vec<[u8; SLOT]>,
    addresses: Vec<libc::sockaddr_in>,
    /// Length and flags of each datagram of the last receive.
    received: Vec<(usize, libc::c_int)>,
}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch {
            buffers: vec![[0u8; SLOT]; BATCH],
            // SAFETY: sockaddr_in is plain C data; all-zero is valid.
            addresses: vec![unsafe { zeroed() }; BATCH],
            received: vec![(0, 0); BATCH],
        }
    }
}

impl RecvBatch {
    /// Takes what the socket holds, up to [`BATCH`] datagrams, without
    /// waiting; `WouldBlock` when there is none. Returns how many.
    pub fn receive(&mut self, fd: RawFd) -> io::Result<usize> {
        let mut iovecs: Vec<libc::iovec> =
            self.buffers.iter_mut().map(|buffer| libc::iovec { iov_base: buffer.as_mut_ptr().cast(), iov_len: SLOT }).collect();
        let mut headers: Vec<libc::mmsghdr> = iovecs
            .iter_mut()
            .zip(self.addresses.iter_mut())
            .map(|(iovec, address)| {
                // SAFETY: a zeroed msghdr is valid; the pointers set here outlive the call.
                let mut header: libc::msghdr = unsafe { zeroed() };
                header.msg_name = (address as *mut libc::sockaddr_in).cast();
                header.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
                header.msg_iov = iovec;
                header.msg_iovlen = 1;
                libc::mmsghdr { msg_hdr: header, msg_len: 0 }
            })
            .collect();
        // SAFETY: every header points at buffers, iovecs and addresses that
        // are alive and unaliased for the duration of the call.
        let n = unsafe { libc::recvmmsg(fd, headers.as_mut_ptr(), BATCH as libc::c_uint, libc::MSG_DONTWAIT, std::ptr::null_mut()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        for (slot, header) in self.received.iter_mut().zip(&headers) {
            *slot = (header.msg_len as usize, header.msg_hdr.msg_flags);
        }
        Ok(n as usize)
    }

    /// Datagram `i` of the last receive and who sent it; `None` for one
    /// that did not fit or came from something that is not IPv4.
    pub fn datagram(&self, i: usize) -> Option<(&[u8], SocketAddr)> {
        let (length, flags) = *self.received.get(i)?;
        if flags & libc::MSG_TRUNC != 0 {
            return None;
        }
        let address = &self.addresses[i];
        if address.sin_family != libc::AF_INET as libc::sa_family_t {
            return None;
        }
        let ip = Ipv4Addr::from(u32::from_be(address.sin_addr.s_addr));
        let from = SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(address.sin_port)));
        Some((&self.buffers[i][..length.min(SLOT)], from))
    }
}

/// Sends `packets` with as few system calls as the socket takes, without
/// waiting; returns how many went (the rest hit a full socket buffer).
pub fn send(fd: RawFd, packets: &[(Vec<u8>, SocketAddr)]) -> io::Result<usize> {
    let mut sent = 0;
    while sent < packets.len() {
        let chunk = &packets[sent..packets.len().min(sent + BATCH)];
        let mut addresses: Vec<libc::sockaddr_in> = Vec::with_capacity(chunk.len());
        for (_, to) in chunk {
            let SocketAddr::V4(to) = to else {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, "an IPv6 client on an IPv4 socket"));
            };
            // SAFETY: plain C data; all-zero is valid.
            let mut address: libc::sockaddr_in = unsafe { zeroed() };
            address.sin_family = libc::AF_INET as libc::sa_family_t;
            address.sin_port = to.port().to_be();
            address.sin_addr.s_addr = u32::from(*to.ip()).to_be();
            addresses.push(address);
        }
        let mut iovecs: Vec<libc::iovec> =
            chunk.iter().map(|(bytes, _)| libc::iovec { iov_base: bytes.as_ptr() as *mut libc::c_void, iov_len: bytes.len() }).collect();
        let mut headers: Vec<libc::mmsghdr> = (0..chunk.len())
            .map(|i| {
                // SAFETY: a zeroed msghdr is valid; the pointers set here outlive the call.
                let mut header: libc::msghdr = unsafe { zeroed() };
                header.msg_name = (&mut addresses[i] as *mut libc::sockaddr_in).cast();
                header.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
                header.msg_iov = &mut iovecs[i];
                header.msg_iovlen = 1;
                libc::mmsghdr { msg_hdr: header, msg_len: 0 }
            })
            .collect();
        // SAFETY: headers point at addresses, iovecs and packet bytes that
        // live until the call returns; the kernel only reads the payloads.
        let n = unsafe { libc::sendmmsg(fd, headers.as_mut_ptr(), headers.len() as libc::c_uint, libc::MSG_DONTWAIT) };
        if n < 0 {
            let error = io::Error::last_os_error();
            return if sent > 0 && error.kind() == io::ErrorKind::WouldBlock { Ok(sent) } else { Err(error) };
        }
        sent += n as usize;
        if (n as usize) < chunk.len() {
            return Ok(sent);
        }
    }
    Ok(sent)
}
