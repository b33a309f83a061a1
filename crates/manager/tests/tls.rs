//! Mutual TLS end to end on 127.0.0.1: the manager's CA issues real
//! certificates, a tiny tonic server runs on `ServerTls::incoming`, and
//! clients connect with `shoal_proto::tls`. The `Ca` service stands in for
//! any RPC; its GetRootCertificate here answers with who the server thinks
//! the caller is.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use shoal_manager::ca::CertificateAuthority;
use shoal_proto::identity::{generate_key_and_csr, peer_identity, Role};
use shoal_proto::join_token::ca_digest_from_pem;
use shoal_proto::pb;
use shoal_proto::pb::ca_client::CaClient;
use shoal_proto::pb::ca_server::{Ca, CaServer};
use shoal_proto::tls::{self, ClientTls, Credentials, ServerTls, TlsError};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tonic::{Request, Response, Status};

const DAY: Duration = Duration::from_secs(24 * 3600);
const TIMEOUT: Duration = Duration::from_secs(5);
const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Reports the caller's identity as the server saw it.
struct WhoAmI;

#[tonic::async_trait]
impl Ca for WhoAmI {
    async fn get_root_certificate(
        &self,
        request: Request<pb::Empty>,
    ) -> Result<Response<pb::RootCertificate>, Status> {
        let who = match peer_identity(&request) {
            Some(id) => format!("{}/{}/{}", id.id, id.role.as_str(), id.cluster_id),
            None => "anonymous".to_string(),
        };
        Ok(Response::new(pb::RootCertificate { ca_pem: who }))
    }

    async fn issue_node_certificate(
        &self,
        _request: Request<pb::IssueNodeCertificateRequest>,
    ) -> Result<Response<pb::IssueNodeCertificateResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
}

struct Swarm {
    cluster_id: String,
    ca: CertificateAuthority,
}

impl Swarm {
    fn new(cluster_id: &str) -> Self {
        let generated = CertificateAuthority::generate(cluster_id).expect("generate CA");
        // Go through PEM, as every manager but the first does.
        let ca = CertificateAuthority::from_pem(&generated.cert_pem(), &generated.key_pem())
            .expect("reload CA");
        Swarm {
            cluster_id: cluster_id.to_string(),
            ca,
        }
    }

    fn issue(&self, id: &str, role: Role) -> Credentials {
        let key_and_csr = generate_key_and_csr(id).expect("key and csr");
        let ips: &[IpAddr] = if role == Role::Manager {
            &[LOCALHOST]
        } else {
            &[]
        };
        let cert_pem = self
            .ca
            .sign_node_csr(&key_and_csr.csr_pem, id, role, &self.cluster_id, DAY, ips)
            .expect("sign");
        Credentials {
            ca_pem: self.ca.cert_pem(),
            cert_pem,
            key_pem: key_and_csr.key_pem,
        }
    }
}

/// A server on an ephemeral port; aborted when the guard drops.
struct TestServer {
    addr: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(tls: &ServerTls) -> TestServer {
    let listener = TcpListener::bind((LOCALHOST, 0)).await.expect("bind");
    let addr = listener.local_addr().expect("local addr").to_string();
    let incoming = tls.incoming(listener);
    let task = tokio::spawn(async move {
        let served = tonic::transport::Server::builder()
            .add_service(CaServer::new(WhoAmI))
            .serve_with_incoming(incoming)
            .await;
        if let Err(e) = served {
            panic!("test server stopped: {e}");
        }
    });
    TestServer { addr, task }
}

async fn who_am_i(addr: &str, tls: &ClientTls) -> Result<String, String> {
    let channel = tls::connect(addr, tls, TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    who_am_i_on(channel).await
}

async fn who_am_i_on(channel: tonic::transport::Channel) -> Result<String, String> {
    CaClient::new(channel)
        .get_root_certificate(pb::Empty {})
        .await
        .map(|r| r.into_inner().ca_pem)
        .map_err(|s| format!("{}: {}", s.code(), s.message()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_certificates_are_accepted_and_identified() {
    let swarm = Swarm::new("cluster-a");
    let server =
        serve(&ServerTls::new(&swarm.issue("m1", Role::Manager)).expect("server tls")).await;

    let manager = ClientTls::new(&swarm.issue("m2", Role::Manager)).expect("client tls");
    assert_eq!(
        who_am_i(&server.addr, &manager).await.as_deref(),
        Ok("m2/manager/cluster-a")
    );
    let worker = ClientTls::new(&swarm.issue("w1", Role::Worker)).expect("client tls");
    assert_eq!(
        who_am_i(&server.addr, &worker).await.as_deref(),
        Ok("w1/worker/cluster-a")
    );
    let client = ClientTls::new(&swarm.issue("ci-bot", Role::Client)).expect("client tls");
    assert_eq!(
        who_am_i(&server.addr, &client).await.as_deref(),
        Ok("ci-bot/client/cluster-a")
    );

    // The lazy variant connects on first use.
    let lazy = tls::connect_lazy(&server.addr, &manager, TIMEOUT).expect("lazy channel");
    assert_eq!(
        who_am_i_on(lazy).await.as_deref(),
        Ok("m2/manager/cluster-a")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_clients_connect_without_identity() {
    let swarm = Swarm::new("cluster-a");
    let server =
        serve(&ServerTls::new(&swarm.issue("m1", Role::Manager)).expect("server tls")).await;
    let anonymous = ClientTls::anonymous(&swarm.ca.cert_pem()).expect("anonymous tls");
    assert_eq!(
        who_am_i(&server.addr, &anonymous).await.as_deref(),
        Ok("anonymous")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_certificates_are_refused_both_ways() {
    let swarm = Swarm::new("cluster-a");
    let other = Swarm::new("cluster-b");
    let server =
        serve(&ServerTls::new(&swarm.issue("m1", Role::Manager)).expect("server tls")).await;

    // A client certificate from another CA, presented to our server.
    let mut intruder = other.issue("m9", Role::Manager);
    intruder.ca_pem = swarm.ca.cert_pem(); // it trusts our server, so only the server can refuse
    let intruder = ClientTls::new(&intruder).expect("client tls");
    let refused = who_am_i(&server.addr, &intruder).await;
    assert!(
        refused.is_err(),
        "a foreign client certificate got through: {refused:?}"
    );

    // A client of the other swarm does not trust our server.
    let outsider = ClientTls::new(&other.issue("m8", Role::Manager)).expect("client tls");
    let err = who_am_i(&server.addr, &outsider)
        .await
        .expect_err("our server must not be trusted");
    assert!(
        err.starts_with(&format!(
            "the TLS handshake with manager {} failed",
            server.addr
        )),
        "{err}"
    );

    // The refusals did not hurt the server.
    let manager = ClientTls::new(&swarm.issue("m2", Role::Manager)).expect("client tls");
    assert_eq!(
        who_am_i(&server.addr, &manager).await.as_deref(),
        Ok("m2/manager/cluster-a")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_certificate_cannot_pose_as_a_manager_server() {
    let swarm = Swarm::new("cluster-a");
    // Worker certificates lack the swarm-manager name clients verify.
    let server =
        serve(&ServerTls::new(&swarm.issue("w1", Role::Worker)).expect("server tls")).await;
    let manager = ClientTls::new(&swarm.issue("m2", Role::Manager)).expect("client tls");
    let err = who_am_i(&server.addr, &manager)
        .await
        .expect_err("worker server must be refused");
    assert!(
        err.contains("TLS handshake") && err.contains("swarm-manager"),
        "{err}"
    );
    let digest = swarm.ca.digest();
    let err = tls::fetch_pinned_ca(&server.addr, &digest, TIMEOUT)
        .await
        .expect_err("worker server must be refused");
    assert!(matches!(err, TlsError::UntrustedServer { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_nodes_pin_the_ca_from_the_token() {
    let swarm = Swarm::new("cluster-a");
    let server =
        serve(&ServerTls::new(&swarm.issue("m1", Role::Manager)).expect("server tls")).await;

    let ca_pem = tls::fetch_pinned_ca(&server.addr, &swarm.ca.digest(), TIMEOUT)
        .await
        .expect("pinned CA");
    assert_eq!(
        ca_digest_from_pem(&ca_pem).expect("digest"),
        swarm.ca.digest()
    );
    // What a joiner does next: an anonymous connection trusting that CA.
    let anonymous = ClientTls::anonymous(&ca_pem).expect("anonymous tls");
    assert_eq!(
        who_am_i(&server.addr, &anonymous).await.as_deref(),
        Ok("anonymous")
    );

    let wrong = Swarm::new("cluster-b").ca.digest();
    let err = tls::fetch_pinned_ca(&server.addr, &wrong, TIMEOUT)
        .await
        .expect_err("wrong digest must fail");
    let expected = format!(
        "the manager at {} presents CA sha256:{} but the join token expects sha256:{}; check the token and the address",
        server.addr,
        swarm.ca.digest(),
        wrong
    );
    assert_eq!(err.to_string(), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_and_silent_managers_time_out_with_the_address() {
    // Accepts TCP but never speaks TLS.
    let silent = TcpListener::bind((LOCALHOST, 0)).await.expect("bind");
    let addr = silent.local_addr().expect("addr").to_string();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let err = tls::fetch_pinned_ca(&addr, &"0".repeat(64), Duration::from_millis(300))
        .await
        .expect_err("must time out");
    assert!(
        err.to_string()
            .starts_with(&format!("could not reach manager {addr} within 300ms")),
        "{err}"
    );

    let swarm = Swarm::new("cluster-a");
    let client = ClientTls::new(&swarm.issue("m2", Role::Manager)).expect("client tls");
    let started = Instant::now();
    let err = tls::connect(&addr, &client, Duration::from_millis(300))
        .await
        .expect_err("must time out");
    assert!(matches!(err, TlsError::Timeout { .. }), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    holder.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_or_garbage_handshakes_do_not_block_others() {
    let swarm = Swarm::new("cluster-a");
    let server =
        serve(&ServerTls::new(&swarm.issue("m1", Role::Manager)).expect("server tls")).await;

    // One client that never sends a byte, one that sends junk.
    let _stalled = TcpStream::connect(&server.addr).await.expect("connect");
    let mut junk = TcpStream::connect(&server.addr).await.expect("connect");
    junk.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");

    // The stalled handshake has 10 s before it times out; a good client must
    // not wait for it.
    let manager = ClientTls::new(&swarm.issue("m2", Role::Manager)).expect("client tls");
    let started = Instant::now();
    assert_eq!(
        who_am_i(&server.addr, &manager).await.as_deref(),
        Ok("m2/manager/cluster-a")
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewed_certificates_apply_to_new_connections_without_restart() {
    let swarm = Swarm::new("cluster-a");
    let server_tls = ServerTls::new(&swarm.issue("m1", Role::Manager)).expect("server tls");
    let server = serve(&server_tls).await;

    // Client side: the same ClientTls presents the renewed certificate (here
    // with a new role, as after a promotion) on its next connection.
    let client = ClientTls::new(&swarm.issue("n1", Role::Worker)).expect("client tls");
    let before = tls::connect(&server.addr, &client, TIMEOUT)
        .await
        .expect("connect");
    assert_eq!(
        who_am_i_on(before.clone()).await.as_deref(),
        Ok("n1/worker/cluster-a")
    );
    client
        .update(&swarm.issue("n1", Role::Manager))
        .expect("client update");
    assert_eq!(
        who_am_i(&server.addr, &client).await.as_deref(),
        Ok("n1/manager/cluster-a")
    );
    // The connection made before the renewal keeps its identity and works.
    assert_eq!(
        who_am_i_on(before.clone()).await.as_deref(),
        Ok("n1/worker/cluster-a")
    );

    // Server side: a renewed certificate under the same CA keeps serving.
    server_tls
        .update(&swarm.issue("m1", Role::Manager))
        .expect("server update");
    assert_eq!(
        who_am_i(&server.addr, &client).await.as_deref(),
        Ok("n1/manager/cluster-a")
    );

    // Server side, observable from outside: switch the server to a new CA.
    // New handshakes present the new chain at once, on the same listener.
    let next = Swarm::new("cluster-a");
    server_tls
        .update(&next.issue("m1", Role::Manager))
        .expect("server update");
    let ca_pem = tls::fetch_pinned_ca(&server.addr, &next.ca.digest(), TIMEOUT)
        .await
        .expect("new CA served");
    assert_eq!(
        ca_digest_from_pem(&ca_pem).expect("digest"),
        next.ca.digest()
    );
    let err = tls::fetch_pinned_ca(&server.addr, &swarm.ca.digest(), TIMEOUT)
        .await
        .expect_err("old CA gone");
    assert!(matches!(err, TlsError::CaMismatch { .. }), "{err}");
    // Clients of the old CA are refused on new connections...
    assert!(who_am_i(&server.addr, &client).await.is_err());
    // ...but the established connection is untouched.
    assert_eq!(
        who_am_i_on(before).await.as_deref(),
        Ok("n1/worker/cluster-a")
    );
    // A failed update leaves the server as it was.
    let broken = Credentials {
        key_pem: "not a key".into(),
        ..next.issue("m1", Role::Manager)
    };
    assert!(server_tls.update(&broken).is_err());
    let renewed_client = ClientTls::new(&next.issue("n1", Role::Manager)).expect("client tls");
    assert_eq!(
        who_am_i(&server.addr, &renewed_client).await.as_deref(),
        Ok("n1/manager/cluster-a")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_channels_carry_grpc_without_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("shoal.sock");
    let listener = tokio::net::UnixListener::bind(&path).expect("bind unix");
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    let task = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(CaServer::new(WhoAmI))
            .serve_with_incoming(incoming),
    );
    let channel = tls::connect_unix(&path).await.expect("connect unix");
    assert_eq!(who_am_i_on(channel).await.as_deref(), Ok("anonymous"));
    task.abort();
}
