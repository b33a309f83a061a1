//! The forwarder against small upstreams on loopback (no root): failover on
//! SERVFAIL, REFUSED, a closed port and silence; TCP after truncation; the
//! cache; a failed upstream asked last.

use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

use super::upstream::{query, ForwardError, Forwarder};

#[derive(Clone, Copy)]
enum Behaviour {
    Answer(Ipv4Addr),
    Code(ResponseCode),
    Silent,
    /// Truncated over UDP, the full answer over TCP.
    TruncateThenTcp(Ipv4Addr),
}

/// An upstream on 127.0.0.1 with a fresh port (UDP, and TCP on the same
/// port for truncation); counts the UDP queries it got.
struct Upstream {
    address: SocketAddr,
    queries: Arc<AtomicUsize>,
}

fn reply(request: &Message, behaviour: Behaviour, over_tcp: bool) -> Option<Message> {
    let mut reply = Message::response(request.metadata.id, request.metadata.op_code);
    reply.add_queries(request.queries.clone());
    let name = request.queries.first()?.name().clone();
    match behaviour {
        Behaviour::Silent => return None,
        Behaviour::Code(code) => reply.metadata.response_code = code,
        Behaviour::Answer(address) => {
            reply.add_answer(Record::from_rdata(name, 60, RData::A(A(address))));
        }
        Behaviour::TruncateThenTcp(address) if over_tcp => {
            reply.add_answer(Record::from_rdata(name, 60, RData::A(A(address))));
        }
        Behaviour::TruncateThenTcp(_) => reply.metadata.truncation = true,
    }
    Some(reply)
}

async fn upstream(behaviour: Behaviour) -> Upstream {
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let address = udp.local_addr().unwrap();
    let tcp = TcpListener::bind(address).await.unwrap();
    let queries = Arc::new(AtomicUsize::new(0));
    let counted = queries.clone();
    tokio::spawn(async move {
        let mut buffer = vec![0u8; 4096];
        while let Ok((n, from)) = udp.recv_from(&mut buffer).await {
            counted.fetch_add(1, Ordering::SeqCst);
            let Ok(request) = Message::from_vec(&buffer[..n]) else { continue };
            if let Some(reply) = reply(&request, behaviour, false) {
                let _ = udp.send_to(&reply.to_vec().unwrap(), from).await;
            }
        }
    });
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = tcp.accept().await {
            let Ok(length) = stream.read_u16().await else { continue };
            let mut buffer = vec![0u8; usize::from(length)];
            if stream.read_exact(&mut buffer).await.is_err() {
                continue;
            }
            let Ok(request) = Message::from_vec(&buffer) else { continue };
            if let Some(reply) = reply(&request, behaviour, true) {
                let bytes = reply.to_vec().unwrap();
                let _ = stream.write_all(&(bytes.len() as u16).to_be_bytes()).await;
                let _ = stream.write_all(&bytes).await;
            }
        }
    });
    Upstream { address, queries }
}

/// A port nothing listens on (bound, then closed).
async fn closed_port() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap()
}

fn question(name: &str) -> hickory_proto::op::Query {
    query(Name::from_str(name).unwrap(), RecordType::A, DNSClass::IN)
}

fn first_address(message: &Message) -> Ipv4Addr {
    match &message.answers[0].data {
        RData::A(a) => a.0,
        other => panic!("expected A, got {other:?}"),
    }
}

#[tokio::test]
async fn servfail_refused_and_a_closed_port_move_on_to_the_next() {
    let servfail = upstream(Behaviour::Code(ResponseCode::ServFail)).await;
    let refused = upstream(Behaviour::Code(ResponseCode::Refused)).await;
    let good = upstream(Behaviour::Answer(Ipv4Addr::new(198, 18, 0, 99))).await;
    let forwarder = Forwarder::new(Duration::from_secs(2));
    let started = Instant::now();
    let upstreams = [closed_port().await, servfail.address, refused.address, good.address];
    let answer = forwarder.forward(&question("outside.test."), &upstreams).await.unwrap();
    assert_eq!(first_address(&answer), Ipv4Addr::new(198, 18, 0, 99));
    assert!(started.elapsed() < Duration::from_secs(1), "no timeout was waited for: {:?}", started.elapsed());
    assert_eq!(servfail.queries.load(Ordering::SeqCst), 1);
    assert_eq!(refused.queries.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn nxdomain_is_an_answer_not_a_failure() {
    let nxdomain = upstream(Behaviour::Code(ResponseCode::NXDomain)).await;
    let good = upstream(Behaviour::Answer(Ipv4Addr::new(198, 18, 0, 99))).await;
    let forwarder = Forwarder::default();
    let answer = forwarder.forward(&question("nothing.test."), &[nxdomain.address, good.address]).await.unwrap();
    assert_eq!(answer.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(good.queries.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_silent_upstream_costs_one_timeout_then_goes_last() {
    let silent = upstream(Behaviour::Silent).await;
    let good = upstream(Behaviour::Answer(Ipv4Addr::new(198, 18, 0, 7))).await;
    let forwarder = Forwarder::new(Duration::from_millis(300));
    let upstreams = [silent.address, good.address];
    let started = Instant::now();
    forwarder.forward(&question("a.test."), &upstreams).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300), "the silent one was waited for");
    let started = Instant::now();
    forwarder.forward(&question("b.test."), &upstreams).await.unwrap();
    assert!(started.elapsed() < Duration::from_millis(250), "the silent one is asked last now: {:?}", started.elapsed());
    assert_eq!(silent.queries.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn truncated_answers_are_asked_again_over_tcp() {
    let big = upstream(Behaviour::TruncateThenTcp(Ipv4Addr::new(198, 18, 0, 8))).await;
    let answer = Forwarder::default().forward(&question("big.test."), &[big.address]).await.unwrap();
    assert_eq!(first_address(&answer), Ipv4Addr::new(198, 18, 0, 8));
}

#[tokio::test]
async fn answers_are_cached_for_their_ttl_per_upstream_set() {
    let good = upstream(Behaviour::Answer(Ipv4Addr::new(198, 18, 0, 9))).await;
    let forwarder = Forwarder::default();
    for _ in 0..3 {
        let answer = forwarder.forward(&question("Cached.Test."), &[good.address]).await.unwrap();
        assert_eq!(first_address(&answer), Ipv4Addr::new(198, 18, 0, 9));
    }
    forwarder.forward(&question("cached.test."), &[good.address]).await.unwrap();
    assert_eq!(good.queries.load(Ordering::SeqCst), 1, "one query upstream, whatever the case");
}

#[tokio::test]
async fn nobody_to_ask_or_nobody_answering_is_an_error() {
    let forwarder = Forwarder::new(Duration::from_millis(100));
    assert_eq!(forwarder.forward(&question("x.test."), &[]).await.unwrap_err(), ForwardError::NoUpstream);
    let servfail = upstream(Behaviour::Code(ResponseCode::ServFail)).await;
    assert_eq!(forwarder.forward(&question("x.test."), &[servfail.address, closed_port().await]).await.unwrap_err(), ForwardError::AllFailed);
}
