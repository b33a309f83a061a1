//! Watching a node's embedded DNS from inside a task's sandbox, for the
//! convergence figures: a thread enters the sandbox's network namespace
//! (only its own: setns on one thread) and asks 127.0.0.11 for a name every
//! 2 ms over UDP, until an answer lacks one of the given addresses. No
//! process per query, so the watch costs the node little.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

const EMBEDDED_DNS: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 11), 53));
const EVERY: Duration = Duration::from_millis(2);

/// Starts watching `name` in the sandbox at `netns`: the thread returns
/// when an answer lacks one of `addresses` (the time since `since` was
/// set: the moment the watched change was made), or `None` after
/// `timeout`. Call [`wait_for_all`] first, so the watch starts from the
/// full set.
pub fn until_one_leaves(
    netns: PathBuf,
    name: String,
    addresses: Vec<Ipv4Addr>,
    since: Arc<OnceLock<Instant>>,
    timeout: Duration,
) -> std::thread::JoinHandle<Option<Duration>> {
    std::thread::spawn(move || {
        let namespace = std::fs::File::open(&netns).unwrap_or_else(|e| panic!("{}: {e}", netns.display()));
        nix::sched::setns(namespace.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("entering the sandbox's network namespace");
        let socket = UdpSocket::bind("0.0.0.0:0").expect("a UDP socket in the sandbox");
        socket.set_read_timeout(Some(Duration::from_millis(100))).expect("a read timeout");
        let deadline = Instant::now() + timeout;
        let mut id: u16 = 1;
        while Instant::now() < deadline {
            id = id.wrapping_add(1);
            if let Some(answer) = ask(&socket, id, &name) {
                if addresses.iter().any(|a| !answer.contains(a)) {
                    return Some(since.get().map_or(Duration::ZERO, Instant::elapsed));
                }
            }
            std::thread::sleep(EVERY);
        }
        None
    })
}

/// Blocks until the sandbox at `netns` answers `name` with all of
/// `addresses` (a watch must start from the full set).
pub fn wait_for_all(netns: &PathBuf, name: &str, addresses: &[Ipv4Addr], timeout: Duration) {
    let handle = {
        let (netns, name, addresses) = (netns.clone(), name.to_string(), addresses.to_vec());
        std::thread::spawn(move || {
            let namespace = std::fs::File::open(&netns).expect("the sandbox");
            nix::sched::setns(namespace.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("entering the sandbox");
            let socket = UdpSocket::bind("0.0.0.0:0").expect("a UDP socket");
            socket.set_read_timeout(Some(Duration::from_millis(100))).expect("a read timeout");
            let deadline = Instant::now() + timeout;
            while Instant::now() < deadline {
                if ask(&socket, 1, &name).is_some_and(|answer| addresses.iter().all(|a| answer.contains(a))) {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            false
        })
    };
    assert!(handle.join().expect("the DNS wait"), "{} never answered {name} with {addresses:?}", netns.display());
}

/// One A query; the addresses in the answer section, or `None` on no or a
/// malformed reply.
fn ask(socket: &UdpSocket, id: u16, name: &str) -> Option<Vec<Ipv4Addr>> {
    let mut query = Vec::with_capacity(64);
    query.extend_from_slice(&id.to_be_bytes());
    query.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD; one question
    for label in name.split('.') {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]); // root; type A; class IN
    socket.send_to(&query, EMBEDDED_DNS).ok()?;
    let mut reply = [0u8; 1500];
    let (n, _) = socket.recv_from(&mut reply).ok()?;
    parse_a_records(&reply[..n], id)
}

fn parse_a_records(reply: &[u8], id: u16) -> Option<Vec<Ipv4Addr>> {
    if reply.len() < 12 || u16::from_be_bytes([reply[0], reply[1]]) != id {
        return None;
    }
    let questions = u16::from_be_bytes([reply[4], reply[5]]);
    let answers = u16::from_be_bytes([reply[6], reply[7]]);
    let mut at = 12;
    for _ in 0..questions {
        at = skip_name(reply, at)? + 4;
    }
    let mut found = Vec::new();
    for _ in 0..answers {
        at = skip_name(reply, at)?;
        let header = reply.get(at..at + 10)?;
        let (kind, length) = (u16::from_be_bytes([header[0], header[1]]), u16::from_be_bytes([header[8], header[9]]) as usize);
        let data = reply.get(at + 10..at + 10 + length)?;
        if kind == 1 && length == 4 {
            found.push(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
        }
        at += 10 + length;
    }
    Some(found)
}

/// The offset after a (possibly compressed) name at `at`.
fn skip_name(message: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let length = *message.get(at)?;
        match length {
            0 => return Some(at + 1),
            l if l & 0xC0 == 0xC0 => return Some(at + 2),
            l => at += 1 + l as usize,
        }
    }
}
