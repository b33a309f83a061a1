//! The device's TUN interface, opened with a virtio-net header and TCP
//! segmentation offload: the kernel hands us TCP super-packets of up to
//! 64 KiB (we cut them into wire-sized packets ourselves) and accepts
//! coalesced super-packets back, so a bulk transfer costs one read or
//! write per ~45 packets instead of one each. Reads do not block (the
//! data path polls), so a thread can serve the UDP socket too.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
const TUN_F_CSUM: libc::c_uint = 0x01;
const TUN_F_TSO4: libc::c_uint = 0x02;

/// `struct ifreq`: the name, then a 24-byte union we fill by hand.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    data: [u8; 24],
}

impl IfReq {
    fn new(name: &str) -> IfReq {
        let mut request = IfReq { name: [0; libc::IFNAMSIZ], data: [0; 24] };
        let bytes = name.as_bytes();
        let len = bytes.len().min(libc::IFNAMSIZ - 1);
        request.name[..len].copy_from_slice(&bytes[..len]);
        request
    }
}

pub struct Tun {
    file: File,
}

impl Tun {
    /// Creates the interface `name` (it goes away when this process ends).
    /// EBUSY means another process holds a TUN device of that name.
    pub fn create(name: &str) -> std::io::Result<Tun> {
        // SAFETY: plain open(2) of a device node; the fd is owned below.
        let fd = unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd was just opened and is ours alone.
        let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        let mut request = IfReq::new(name);
        request.data[..2].copy_from_slice(&(IFF_TUN | IFF_NO_PI | IFF_VNET_HDR).to_ne_bytes());
        // SAFETY: TUNSETIFF reads and writes one struct ifreq.
        if unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut request) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: TUNSETOFFLOAD takes the flags by value.
        if unsafe { libc::ioctl(file.as_raw_fd(), TUNSETOFFLOAD, (TUN_F_CSUM | TUN_F_TSO4) as libc::c_ulong) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fcntl on our own fd.
        if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Tun { file })
    }

    pub fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.file.as_raw_fd()
    }

    /// One packet (virtio-net header first); WouldBlock if there is none.
    pub fn read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        (&self.file).read(buf)
    }

    /// One packet, virtio-net header first.
    pub fn write(&self, packet: &[u8]) -> std::io::Result<()> {
        let written = (&self.file).write(packet)?;
        if written != packet.len() {
            return Err(std::io::Error::other("short write to the TUN device"));
        }
        Ok(())
    }
}

/// Sets the MTU of `name` and brings it up.
pub fn set_mtu_and_up(name: &str, mtu: u32) -> std::io::Result<()> {
    // SAFETY: a datagram socket only used for interface ioctls.
    let socket = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if socket < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the socket was just created and is ours alone.
    let socket = unsafe { OwnedFd::from_raw_fd(socket) };
    let ioctl = |request: libc::c_ulong, ifreq: &mut IfReq| {
        // SAFETY: SIOC[GS]IF* read and write one struct ifreq.
        if unsafe { libc::ioctl(socket.as_raw_fd(), request, ifreq as *mut IfReq) } < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    let mut request = IfReq::new(name);
    request.data[..4].copy_from_slice(&(mtu as libc::c_int).to_ne_bytes());
    ioctl(libc::SIOCSIFMTU, &mut request)?;
    let mut request = IfReq::new(name);
    ioctl(libc::SIOCGIFFLAGS, &mut request)?;
    let flags = libc::c_short::from_ne_bytes([request.data[0], request.data[1]]) | libc::IFF_UP as libc::c_short;
    request.data[..2].copy_from_slice(&flags.to_ne_bytes());
    ioctl(libc::SIOCSIFFLAGS, &mut request)
}
