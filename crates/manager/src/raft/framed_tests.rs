use std::time::Duration;

use openraft::raft::{VoteRequest, VoteResponse};
use openraft::Vote;
use tokio::io::{duplex, AsyncWriteExt};

use super::*;

const LONG: Duration = Duration::from_secs(5);

#[tokio::test]
async fn frames_read_back_as_written() {
    let (mut a, mut b) = duplex(1 << 16);
    write_frame(&mut a, &request_frame(7, Kind::Vote, Duration::from_millis(150), b"ask").unwrap()).await.unwrap();
    write_frame(&mut a, &reply_frame(7, Status::Refused, b"no").unwrap()).await.unwrap();
    let request = read_request(&mut b).await.unwrap().unwrap();
    assert_eq!((request.id, request.kind, request.deadline, request.payload.as_slice()), (7, Kind::Vote, Duration::from_millis(150), &b"ask"[..]));
    let reply = read_reply(&mut b).await.unwrap().unwrap();
    assert_eq!((reply.id, reply.status, reply.payload.as_slice()), (7, Status::Refused, &b"no"[..]));
    drop(a);
    assert!(read_request(&mut b).await.unwrap().is_none(), "a closed stream is a clean end");
}

#[tokio::test]
async fn malformed_and_oversized_frames_are_errors_not_allocations() {
    let (mut a, mut b) = duplex(1 << 16);
    a.write_all(&(MAX_FRAME as u32 + 1).to_be_bytes()).await.unwrap();
    let err = read_request(&mut b).await.unwrap_err();
    assert!(err.to_string().contains("over the"), "{err}");

    let (mut a, mut b) = duplex(1 << 16);
    write_frame(&mut a, &frame(&[0; 9], &[]).unwrap()).await.unwrap();
    assert!(read_request(&mut b).await.unwrap_err().to_string().contains("too short"));

    let (mut a, mut b) = duplex(1 << 16);
    let mut bad_kind = request_frame(1, Kind::Vote, LONG, b"").unwrap();
    bad_kind[4 + 8] = 99;
    write_frame(&mut a, &bad_kind).await.unwrap();
    assert!(read_request(&mut b).await.unwrap_err().to_string().contains("kind 99"));
}

/// A peer that answers requests in the reverse order it got them.
async fn answer_backwards(mut stream: tokio::io::DuplexStream, count: usize) {
    let mut requests = Vec::new();
    for _ in 0..count {
        requests.push(read_request(&mut stream).await.unwrap().unwrap());
    }
    for request in requests.into_iter().rev() {
        write_frame(&mut stream, &reply_frame(request.id, Status::Answered, &request.payload).unwrap()).await.unwrap();
    }
}

#[tokio::test]
async fn concurrent_calls_get_their_own_replies_in_any_order() {
    let (ours, theirs) = duplex(1 << 16);
    let client = FramedClient::new(ours);
    let peer = tokio::spawn(answer_backwards(theirs, 3));
    let calls = (0..3u8).map(|i| {
        let client = &client;
        async move { client.call(Kind::AppendEntries, LONG, &[i]).await }
    });
    let replies = tokio::time::timeout(LONG, futures::future::join_all(calls)).await.expect("replies");
    assert_eq!(replies, vec![Ok(vec![0]), Ok(vec![1]), Ok(vec![2])]);
    peer.await.unwrap();
}

#[tokio::test]
async fn a_closed_connection_fails_waiting_and_later_calls() {
    let (ours, mut theirs) = duplex(1 << 16);
    let client = FramedClient::new(ours);
    let peer = tokio::spawn(async move {
        read_request(&mut theirs).await.unwrap().unwrap();
        // Gone without answering.
    });
    let outcome = tokio::time::timeout(LONG, client.call(Kind::Vote, LONG, b"x")).await.expect("woken");
    assert!(matches!(outcome, Err(CallError::Broken(_))), "{outcome:?}");
    peer.await.unwrap();
    assert!(client.is_broken());
    assert!(matches!(client.call(Kind::Vote, LONG, b"x").await, Err(CallError::Broken(_))));
}

#[tokio::test]
async fn a_send_abandoned_halfway_gives_the_connection_up() {
    // A pipe too small for the frame: the write blocks until the caller's
    // deadline drops it, with part of the frame sent.
    let (ours, _theirs) = duplex(64);
    let client = FramedClient::new(ours);
    let outcome = tokio::time::timeout(Duration::from_millis(50), client.call(Kind::InstallSnapshot, LONG, &[0; 4096])).await;
    assert!(outcome.is_err(), "the write cannot finish");
    assert!(client.is_broken(), "the stream holds half a frame now");
}

fn vote_payload() -> Vec<u8> {
    bincode::serialize(&VoteRequest::<u64>::new(Vote::new(4, 2), None)).unwrap()
}

async fn vote_reply(payload: &[u8]) -> VoteResponse<u64> {
    match bincode::deserialize::<crate::raft::rpc::VoteReply>(payload).unwrap() {
        crate::raft::rpc::Reply::Handled(Ok(response)) => response,
        other => panic!("unexpected reply {other:?}"),
    }
}

/// A single-node Raft to answer requests for real.
async fn lone_raft() -> (crate::raft::Raft, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::Config::new().path(dir.path().join("raft")).open().unwrap();
    let sealer = crate::raft::sealed::Sealer::new(&crate::raft::sealed::Dek::generate());
    let (log, sm) = crate::raft::open_storage(&db, &dir.path().join("raft"), crate::store::Store::new(), sealer).unwrap();
    let config = std::sync::Arc::new(openraft::Config::default().validate().unwrap());
    let network = crate::raft::network::Network::new(
        shoal_proto::tls::ClientTls::anonymous(&test_ca()).unwrap(),
        crate::raft::network::PeerContacts::default(),
    );
    (crate::raft::Raft::new(1, config, network, log, sm).await.unwrap(), dir)
}

fn test_ca() -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.self_signed(&key).unwrap().pem()
}

#[tokio::test]
async fn the_server_answers_admitted_requests_through_raft_and_refuses_the_rest() {
    let (raft, _dir) = lone_raft().await;
    let rpc = RaftRpcHandler::new(raft.clone());

    let (ours, theirs) = duplex(1 << 16);
    tokio::spawn(serve(theirs, rpc.clone(), || None));
    let client = FramedClient::new(ours);
    let payload = tokio::time::timeout(LONG, client.call(Kind::Vote, LONG, &vote_payload())).await.unwrap().unwrap();
    assert_eq!(vote_reply(&payload).await.vote, Vote::new(4, 2), "a vote for a newer term is granted and echoed");

    let (ours, theirs) = duplex(1 << 16);
    tokio::spawn(serve(theirs, rpc, || Some("node x was removed from the swarm".to_string())));
    let client = FramedClient::new(ours);
    let outcome = tokio::time::timeout(LONG, client.call(Kind::Vote, LONG, &vote_payload())).await.unwrap();
    assert_eq!(outcome, Err(CallError::Refused("node x was removed from the swarm".into())));
    assert!(!client.is_broken(), "a refusal keeps the connection");
    raft.shutdown().await.unwrap();
}
