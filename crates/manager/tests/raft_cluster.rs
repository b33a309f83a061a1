//! Three Raft nodes in one process, talking over real manager-port servers
//! with mutual TLS on loopback (the Raft frames of `raft::framed`): they
//! replicate store transactions, and after the leader stops the other two
//! elect a new one that still commits.
//!
//! The servers answer Raft frames only, admitting every certificate of the
//! test CA; the manager's real server adds role checks and gRPC on the same
//! port.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{Fatal, RPCError, RaftError};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::VoteRequest;
use openraft::{BasicNode, Config, Vote};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};
use shoal_manager::raft::network::{Network, PeerContacts};
use shoal_manager::raft::framed;
use shoal_manager::raft::rpc::RaftRpcHandler;
use shoal_manager::raft::{open_storage, NodeId, Raft};
use shoal_manager::raft::sealed::{Dek, Sealer};
use shoal_manager::store::{Kind, Meta, Object, Op, Store, Transaction};
use shoal_proto::tls::{ClientTls, Credentials, ServerTls, MANAGER_SERVER_NAME};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use tokio_stream::StreamExt;

const WAIT: Duration = Duration::from_secs(10);

/// A CA and, per node, a certificate carrying the manager server name, as
/// the swarm CA would issue them.
struct TestPki {
    ca_cert: rcgen::Certificate,
    ca_key: KeyPair,
}

impl TestPki {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "shoal raft test CA");
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let ca_key = KeyPair::generate().expect("ca key");
        let ca_cert = params.self_signed(&ca_key).expect("ca cert");
        TestPki { ca_cert, ca_key }
    }

    fn credentials(&self, id: NodeId) -> Credentials {
        let mut params = CertificateParams::new(vec![MANAGER_SERVER_NAME.to_string()]).expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, format!("{id:016x}"));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.ca_cert, &self.ca_key).expect("leaf cert");
        Credentials { ca_pem: self.ca_cert.pem(), cert_pem: cert.pem(), key_pem: key.serialize_pem() }
    }
}

struct TestNode {
    id: NodeId,
    addr: String,
    raft: Raft,
    store: Store,
    contacts: PeerContacts,
    stop_server: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
    _db: sled::Db,
    _dir: tempfile::TempDir,
}

impl TestNode {
    async fn start(id: NodeId, pki: &TestPki, config: Arc<Config>) -> TestNode {
        let credentials = pki.credentials(id);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr").to_string();

        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::Config::new().path(dir.path().join("raft")).open().expect("sled");
        let store = Store::new();
        let (log_store, state_machine) = open_storage(&db, &dir.path().join("raft"), store.clone(), Sealer::new(&Dek::generate())).expect("storage");
        let contacts = PeerContacts::default();
        let network = Network::new(ClientTls::new(&credentials).expect("client tls"), contacts.clone());
        let raft = Raft::new(id, config, network, log_store, state_machine).await.expect("raft");

        let mut incoming = ServerTls::new(&credentials).expect("server tls").incoming(listener);
        let mut connections = incoming.raft_connections(None);
        let rpc = RaftRpcHandler::new(raft.clone());
        let (stop_server, mut stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            // Dropped on return, which closes every connection still open.
            let mut serving = JoinSet::new();
            loop {
                tokio::select! {
                    _ = &mut stopped => return,
                    // Polling the stream accepts and hands Raft connections
                    // over; a gRPC one (none expected) is dropped.
                    _ = incoming.next() => {}
                    Some(stream) = connections.recv() => {
                        serving.spawn(framed::serve(stream, rpc.clone(), || None));
                    }
                    Some(_) = serving.join_next() => {}
                }
            }
        });

        TestNode {
            id,
            addr,
            raft,
            store,
            contacts,
            stop_server: Some(stop_server),
            server: Some(server),
            _db: db,
            _dir: dir,
        }
    }

    /// Stops Raft, then the server, as a manager process going away would.
    async fn stop(&mut self) {
        let _ = self.raft.shutdown().await;
        if let Some(stop) = self.stop_server.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            if tokio::time::timeout(Duration::from_secs(2), server).await.is_err() {
                eprintln!("server of node {} did not stop gracefully", self.id);
            }
        }
    }

    /// Commits `txn` through this node (the leader): its log index and
    /// what it wrote.
    async fn write(&self, txn: Transaction) -> (u64, Vec<Object>) {
        let response = self.raft.client_write(txn.into()).await.expect("client_write");
        let outcome = response.data.into_iter().next().expect("one outcome per transaction");
        (response.log_id.index, outcome.expect("transaction applies"))
    }

    async fn wait_applied(&self, index: u64) {
        self.raft
            .wait(Some(WAIT))
            .applied_index_at_least(Some(index), "replicated")
            .await
            .unwrap_or_else(|e| panic!("node {} did not apply up to {index}: {e}", self.id));
    }
}

fn config_object(id: &str, name: &str) -> Object {
    Object::Config(shoal_manager::store::Config {
        meta: Meta { id: id.into(), ..Default::default() },
        name: name.into(),
        labels: BTreeMap::new(),
        data: name.as_bytes().to_vec(),
    })
}

/// Waits until `nodes` agree on a leader other than `not`, and returns it.
async fn wait_for_leader(nodes: &[&TestNode], not: Option<NodeId>) -> NodeId {
    let deadline = Instant::now() + WAIT;
    loop {
        let leaders: Vec<Option<NodeId>> = nodes.iter().map(|n| n.raft.metrics().borrow().current_leader).collect();
        if let Some(Some(leader)) = leaders.first() {
            let agreed = leaders.iter().all(|l| *l == Some(*leader));
            let is_member = nodes.iter().any(|n| n.id == *leader);
            if agreed && is_member && Some(*leader) != not {
                return *leader;
            }
        }
        assert!(Instant::now() < deadline, "no agreed leader (other than {not:?}) within {WAIT:?}: {leaders:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_managers_replicate_and_survive_leader_loss() {
    let config = Config {
        cluster_name: "shoal-test".into(),
        heartbeat_interval: 100,
        election_timeout_min: 300,
        election_timeout_max: 600,
        install_snapshot_timeout: 2_000,
        ..Default::default()
    };
    let config = Arc::new(config.validate().expect("raft config"));
    let pki = TestPki::new();
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(TestNode::start(id, &pki, config.clone()).await);
    }

    let members: BTreeMap<NodeId, BasicNode> =
        nodes.iter().map(|n| (n.id, BasicNode { addr: n.addr.clone() })).collect();
    nodes[0].raft.initialize(members).await.expect("initialize");
    let leader_id = wait_for_leader(&nodes.iter().collect::<Vec<_>>(), None).await;
    let leader = nodes.iter().position(|n| n.id == leader_id).expect("leader is a node");

    // Writes through the leader reach every store, identically.
    for i in 0..5 {
        let (index, written) = nodes[leader]
            .write(Transaction::single(Op::Create(config_object(&format!("c{i}"), &format!("config-{i}")))))
            .await;
        assert_eq!(written[0].meta().version, index);
    }
    let (last_index, written) =
        nodes[leader].write(Transaction::single(Op::Delete { kind: Kind::Config, id: "c0".into() })).await;
    assert_eq!(written[0].id(), "c0");
    for node in &nodes {
        node.wait_applied(last_index).await;
    }
    let expected = nodes[leader].store.snapshot();
    assert_eq!(expected.list(Kind::Config).count(), 4);
    for node in &nodes {
        assert_eq!(node.store.snapshot(), expected, "store of node {} differs from the leader's", node.id);
    }

    // The leader has heard from both followers just now.
    for node in &nodes {
        if node.id != leader_id {
            let contact = nodes[leader].contacts.last_contact(node.id).expect("leader contacted follower");
            assert!(contact.elapsed() < Duration::from_secs(1));
        }
    }

    // Losing the leader: the other two elect a new one, which commits.
    let stopped_at = Instant::now();
    nodes[leader].stop().await;
    let survivors: Vec<&TestNode> = nodes.iter().filter(|n| n.id != leader_id).collect();
    let new_leader_id = wait_for_leader(&survivors, Some(leader_id)).await;
    let new_leader = survivors.iter().find(|n| n.id == new_leader_id).expect("new leader is a survivor");
    let (index, _) = new_leader.write(Transaction::single(Op::Create(config_object("after", "after-failover")))).await;
    eprintln!("leader {leader_id} stopped; {new_leader_id} committed a write {:?} later", stopped_at.elapsed());
    for node in &survivors {
        node.wait_applied(index).await;
        assert!(node.store.view(|s| s.find_by_name(Kind::Config, "after-failover").is_some()));
    }

    for node in nodes.iter_mut() {
        node.stop().await;
    }
}

/// What openraft is told when a peer is down, or up but its Raft is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_failures_reach_openraft_as_the_right_errors() {
    let config = Arc::new(Config::default().validate().expect("raft config"));
    let pki = TestPki::new();
    let mut node = TestNode::start(1, &pki, config).await;
    let contacts = PeerContacts::default();
    let mut network = Network::new(ClientTls::new(&pki.credentials(2)).expect("client tls"), contacts.clone());
    let option = RPCOption::new(Duration::from_secs(2));
    let vote = || VoteRequest::new(Vote::new(1, 2), None);

    // Up, but its Raft has stopped: Raft's own error comes back as a remote one.
    node.raft.shutdown().await.expect("raft shutdown");
    let mut client = network.new_client(1, &BasicNode { addr: node.addr.clone() }).await;
    match client.vote(vote(), option.clone()).await {
        Err(RPCError::RemoteError(remote)) => {
            assert_eq!(remote.target, 1);
            assert!(matches!(remote.source, RaftError::Fatal(Fatal::Stopped)), "{:?}", remote.source);
        }
        other => panic!("expected a remote error, got {other:?}"),
    }
    assert!(contacts.last_contact(1).is_some(), "an answer counts as contact");

    // Down: unreachable, so that openraft backs off; first the peer whose
    // connection just closed, then one that never listened.
    node.stop().await;
    let mut client = network.new_client(1, &BasicNode { addr: node.addr.clone() }).await;
    match client.vote(vote(), option.clone()).await {
        Err(RPCError::Unreachable(_)) => {}
        other => panic!("expected unreachable after the peer stopped, got {other:?}"),
    }
    let dead_addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").to_string()
    };
    let mut client = network.new_client(9, &BasicNode { addr: dead_addr }).await;
    match client.vote(vote(), option).await {
        Err(RPCError::Unreachable(_)) => {}
        other => panic!("expected unreachable, got {other:?}"),
    }
    assert!(contacts.last_contact(9).is_none());
}
