//! What the device knows: its key, its peers (each with a boringtun
//! `Tunn`, the WireGuard protocol state machine) and the allowed-IPs table
//! that routes packets to peers (cryptokey routing). Changed only through
//! the UAPI socket; the data path reads it.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::Tunn;
use boringtun::x25519::{PublicKey, StaticSecret};

/// Handshakes per second the device answers before it asks for cookies.
const HANDSHAKE_RATE_LIMIT: u64 = 100;

/// One peer as the data path sees it.
pub struct Peer {
    pub public_key: [u8; 32],
    /// Our index for its sessions: incoming packets name `index << 8 | n`.
    pub index: u32,
    pub session: Mutex<Session>,
}

pub struct Session {
    pub tunn: Tunn,
    /// Where its packets go; follows the peer when it roams.
    pub endpoint: Option<SocketAddr>,
    /// A handshake initiation is due as soon as the peer has an endpoint:
    /// this side has just made the peer (or its keys) anew. The peer may
    /// still hold a session with us from before (it was dropped for being
    /// down and is back): it would go on sending in that session, which we
    /// no longer know, and be dropped until WireGuard gives up on it 15 s
    /// later. Greeting it replaces that session at once. Kernel WireGuard
    /// waits for traffic instead; for a mesh whose members come and go
    /// this is the better default, at one handshake per peer added.
    pub greet: bool,
}

/// A peer's configuration, as `wg show` reports it.
struct PeerEntry {
    peer: Arc<Peer>,
    preshared_key: Option<[u8; 32]>,
    keepalive: Option<u16>,
    allowed_ips: Vec<(IpAddr, u8)>,
}

/// One peer section of a UAPI `set=1`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PeerChange {
    pub public_key: [u8; 32],
    pub remove: bool,
    pub update_only: bool,
    /// `Some(None)` clears it.
    pub preshared_key: Option<Option<[u8; 32]>>,
    pub endpoint: Option<SocketAddr>,
    /// 0 turns it off.
    pub keepalive: Option<u16>,
    pub replace_allowed_ips: bool,
    pub allowed_ips: Vec<(IpAddr, u8)>,
}

/// A peer's configuration and counters, for a UAPI `get=1`.
pub struct PeerReport {
    pub public_key: [u8; 32],
    pub preshared_key: Option<[u8; 32]>,
    pub endpoint: Option<SocketAddr>,
    pub keepalive: Option<u16>,
    pub allowed_ips: Vec<(IpAddr, u8)>,
    pub last_handshake: Option<SystemTime>,
    pub rx_bytes: usize,
    pub tx_bytes: usize,
}

pub struct DeviceState {
    key: Option<(StaticSecret, PublicKey)>,
    pub listen_port: u16,
    pub fwmark: u32,
    pub rate_limiter: Arc<RateLimiter>,
    peers: BTreeMap<[u8; 32], PeerEntry>,
    by_index: HashMap<u32, Arc<Peer>>,
    /// /32 routes, the common case (one per remote task), by address.
    host_routes: HashMap<Ipv4Addr, Arc<Peer>>,
    /// Every other allowed IP, longest prefix first.
    prefix_routes: Vec<(IpAddr, u8, Arc<Peer>)>,
    next_index: u32,
}

impl DeviceState {
    pub fn new(listen_port: u16) -> DeviceState {
        DeviceState {
            key: None,
            listen_port,
            fwmark: 0,
            rate_limiter: Arc::new(RateLimiter::new(&PublicKey::from([0u8; 32]), HANDSHAKE_RATE_LIMIT)),
            peers: BTreeMap::new(),
            by_index: HashMap::new(),
            host_routes: HashMap::new(),
            prefix_routes: Vec::new(),
            next_index: rand_index(),
        }
    }

    pub fn private_key(&self) -> Option<&StaticSecret> {
        self.key.as_ref().map(|(secret, _)| secret)
    }

    pub fn public_key(&self) -> Option<&PublicKey> {
        self.key.as_ref().map(|(_, public)| public)
    }

    /// Setting the key it already has changes nothing (sessions survive).
    pub fn set_private_key(&mut self, key: Option<[u8; 32]>) {
        if self.key.as_ref().map(|(secret, _)| secret.to_bytes()) == key {
            return;
        }
        let Some(bytes) = key else {
            // No key, no sessions: WireGuard drops every peer's state.
            self.key = None;
            for entry in self.peers.values() {
                let mut session = lock(&entry.peer.session);
                session.tunn = new_tunn(&StaticSecret::from([0u8; 32]), entry, &self.rate_limiter);
                session.greet = false;
            }
            return;
        };
        let secret = StaticSecret::from(bytes);
        let public = PublicKey::from(&secret);
        self.rate_limiter = Arc::new(RateLimiter::new(&public, HANDSHAKE_RATE_LIMIT));
        // A new key ends every session (boringtun drops them): greet all.
        for entry in self.peers.values() {
            let mut session = lock(&entry.peer.session);
            session.tunn.set_static_private(secret.clone(), public, Some(self.rate_limiter.clone()));
            session.greet = true;
        }
        self.key = Some((secret, public));
    }

    pub fn remove_all_peers(&mut self) {
        for key in self.peers.keys().copied().collect::<Vec<_>>() {
            self.remove_peer(&key);
        }
    }

    /// Adds, changes or removes one peer. A change of endpoint or allowed
    /// IPs keeps its session; a new preshared key or keepalive interval
    /// starts a fresh one (boringtun fixes both when a session is made).
    pub fn change_peer(&mut self, change: &PeerChange) -> Result<(), i32> {
        if change.remove {
            self.remove_peer(&change.public_key);
            return Ok(());
        }
        if !self.peers.contains_key(&change.public_key) {
            if change.update_only {
                return Ok(());
            }
            let index = self.allocate_index();
            let mut entry = PeerEntry {
                peer: Arc::new(Peer {
                    public_key: change.public_key,
                    index,
                    session: Mutex::new(Session { tunn: placeholder_tunn(), endpoint: None, greet: false }),
                }),
                preshared_key: None,
                keepalive: None,
                allowed_ips: Vec::new(),
            };
            entry.preshared_key = change.preshared_key.flatten();
            entry.keepalive = change.keepalive.filter(|&k| k > 0);
            let mut session = lock(&entry.peer.session);
            session.tunn = new_tunn(&self.secret_or_zero(), &entry, &self.rate_limiter);
            session.greet = self.key.is_some();
            drop(session);
            self.by_index.insert(index, entry.peer.clone());
            self.peers.insert(change.public_key, entry);
        }
        let secret = self.secret_or_zero();
        let has_key = self.key.is_some();
        let rate_limiter = self.rate_limiter.clone();
        let Some(entry) = self.peers.get_mut(&change.public_key) else { return Ok(()) };
        let mut fresh_session = false;
        if let Some(preshared_key) = change.preshared_key {
            fresh_session |= entry.preshared_key != preshared_key;
            entry.preshared_key = preshared_key;
        }
        if let Some(keepalive) = change.keepalive {
            let keepalive = (keepalive > 0).then_some(keepalive);
            fresh_session |= entry.keepalive != keepalive;
            entry.keepalive = keepalive;
        }
        {
            let mut session = lock(&entry.peer.session);
            if fresh_session {
                session.tunn = new_tunn(&secret, entry, &rate_limiter);
                session.greet = has_key;
            }
            if let Some(endpoint) = change.endpoint {
                session.endpoint = Some(endpoint);
            }
        }
        if change.replace_allowed_ips {
            entry.allowed_ips.clear();
        }
        for &(address, prefix) in &change.allowed_ips {
            let address = mask(address, prefix);
            if !entry.allowed_ips.contains(&(address, prefix)) {
                entry.allowed_ips.push((address, prefix));
            }
        }
        if !change.allowed_ips.is_empty() || change.replace_allowed_ips {
            // An allowed IP belongs to one peer only: the latest to claim it.
            let claimed = entry.allowed_ips.clone();
            let owner = change.public_key;
            for (key, other) in self.peers.iter_mut() {
                if *key != owner {
                    other.allowed_ips.retain(|ip| !claimed.contains(ip));
                }
            }
            self.rebuild_routes();
        }
        Ok(())
    }

    /// The peer that owns `address`, by longest prefix.
    pub fn route(&self, address: IpAddr) -> Option<&Arc<Peer>> {
        if let IpAddr::V4(v4) = address {
            if let Some(peer) = self.host_routes.get(&v4) {
                return Some(peer);
            }
        }
        self.prefix_routes.iter().find(|(network, prefix, _)| mask(address, *prefix) == *network).map(|(_, _, peer)| peer)
    }

    pub fn peer_by_index(&self, index: u32) -> Option<&Arc<Peer>> {
        self.by_index.get(&index)
    }

    pub fn peer_by_key(&self, public_key: &[u8; 32]) -> Option<&Arc<Peer>> {
        self.peers.get(public_key).map(|entry| &entry.peer)
    }

    pub fn peers(&self) -> impl Iterator<Item = &Arc<Peer>> {
        self.peers.values().map(|entry| &entry.peer)
    }

    pub fn report(&self) -> Vec<PeerReport> {
        self.peers
            .values()
            .map(|entry| {
                let session = lock(&entry.peer.session);
                let (since_handshake, tx_bytes, rx_bytes, ..) = session.tunn.stats();
                PeerReport {
                    public_key: entry.peer.public_key,
                    preshared_key: entry.preshared_key,
                    endpoint: session.endpoint,
                    keepalive: entry.keepalive,
                    allowed_ips: entry.allowed_ips.clone(),
                    // boringtun counts the time since; wg wants the moment.
                    last_handshake: since_handshake.and_then(|since| SystemTime::now().checked_sub(since)),
                    rx_bytes,
                    tx_bytes,
                }
            })
            .collect()
    }

    fn remove_peer(&mut self, public_key: &[u8; 32]) {
        if let Some(entry) = self.peers.remove(public_key) {
            self.by_index.remove(&entry.peer.index);
            self.rebuild_routes();
        }
    }

    fn rebuild_routes(&mut self) {
        self.host_routes.clear();
        self.prefix_routes.clear();
        for entry in self.peers.values() {
            for &(address, prefix) in &entry.allowed_ips {
                match address {
                    IpAddr::V4(v4) if prefix == 32 => {
                        self.host_routes.insert(v4, entry.peer.clone());
                    }
                    _ => self.prefix_routes.push((address, prefix, entry.peer.clone())),
                }
            }
        }
        self.prefix_routes.sort_by_key(|route| std::cmp::Reverse(route.1));
    }

    fn allocate_index(&mut self) -> u32 {
        // Session indexes are `index << 8`: 24 bits are ours to hand out.
        loop {
            self.next_index = (self.next_index + 1) & 0x00ff_ffff;
            if !self.by_index.contains_key(&self.next_index) {
                return self.next_index;
            }
        }
    }

    fn secret_or_zero(&self) -> StaticSecret {
        // Peers may be configured before the key; they cannot handshake
        // until it comes (set_private_key then rekeys them).
        self.key.as_ref().map(|(secret, _)| secret.clone()).unwrap_or_else(|| StaticSecret::from([0u8; 32]))
    }
}

fn new_tunn(secret: &StaticSecret, entry: &PeerEntry, rate_limiter: &Arc<RateLimiter>) -> Tunn {
    Tunn::new(
        secret.clone(),
        PublicKey::from(entry.peer.public_key),
        entry.preshared_key,
        entry.keepalive,
        entry.peer.index,
        Some(rate_limiter.clone()),
    )
}

fn placeholder_tunn() -> Tunn {
    Tunn::new(StaticSecret::from([0u8; 32]), PublicKey::from([0u8; 32]), None, None, 0, None)
}

/// `address` with the bits past `prefix` cleared.
pub fn mask(address: IpAddr, prefix: u8) -> IpAddr {
    match address {
        IpAddr::V4(v4) => {
            let bits = if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix.min(32))) };
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & bits))
        }
        IpAddr::V6(v6) => {
            let bits = if prefix == 0 { 0 } else { u128::MAX << (128 - u32::from(prefix.min(128))) };
            IpAddr::V6((u128::from(v6) & bits).into())
        }
    }
}

fn rand_index() -> u32 {
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or(Duration::ZERO).subsec_nanos();
    (nanos ^ std::process::id().rotate_left(12)) & 0x00ff_ffff
}

/// A poisoned lock only means another thread panicked mid-packet; the
/// protocol state is still usable.
pub fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
