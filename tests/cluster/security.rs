//! Join tokens and certificates decide who gets in, and as what.

use std::path::PathBuf;
use std::time::Duration;

use crate::support::{run, Cluster, SHOAL};
use crate::swarm_helpers::{info, wait_all_ready, wait_host_ready};

fn scratch_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("shoal-test-{}-{what}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating a scratch dir");
    dir
}

#[test]
fn wrong_rotated_and_foreign_tokens_are_refused() {
    let cluster = Cluster::up("token", 1, 1);
    wait_all_ready(&cluster, "manager1", 2);
    cluster.shoal("worker1", &["swarm", "leave"]).ok();

    let token = cluster.shoal("manager1", &["swarm", "join-token", "-q", "worker"]).ok().stdout.trim().to_string();
    let manager = format!("{}:4242", cluster.addr("manager1"));
    let advertise = cluster.addr("worker1").to_string();
    let join = |token: &str| cluster.shoal("worker1", &["swarm", "join", "--token", token, "--advertise-addr", &advertise, &manager]);
    let (prefix, secret) = token.rsplit_once('-').expect("token has a secret");

    let wrong = join(&format!("{prefix}-{}", "a".repeat(secret.len())));
    assert!(!wrong.success());
    assert!(wrong.stderr.contains("not valid for this swarm"), "{}", wrong.stderr);

    let foreign = join(&format!("SHLTKN-1-{}-{secret}", "0".repeat(64)));
    assert!(!foreign.success());
    assert!(foreign.stderr.contains("join token expects"), "{}", foreign.stderr);

    let rotated = cluster.shoal("manager1", &["swarm", "join-token", "--rotate", "-q", "worker"]).ok().stdout.trim().to_string();
    assert_ne!(rotated, token);
    let old = join(&token);
    assert!(!old.success());
    assert!(old.stderr.contains("rotated"), "{}", old.stderr);
    assert_eq!(info(&cluster, "worker1").map(|i| i.swarm).as_deref(), Some("inactive"));

    join(&rotated).ok();
    wait_host_ready(&cluster, "manager1", "worker1");
}

#[test]
fn only_manager_and_client_certificates_of_this_swarm_reach_the_control_api_and_client_ones_the_nodes_containers() {
    let cluster = Cluster::up("certs", 1, 1);
    wait_all_ready(&cluster, "manager1", 2);
    let endpoint = format!("tcp://{}:4242", cluster.addr("manager1"));
    let bundle = scratch_dir("bundle");
    let bundle_str = bundle.display().to_string();
    cluster.shoal("manager1", &["swarm", "client-bundle", "--out", &bundle_str]).ok();
    let file = |dir: &PathBuf, name: &str| dir.join(name).display().to_string();

    // A client bundle works from another host, with flags or docker-style env.
    let remote = cluster
        .exec("worker1", &[SHOAL, "-H", &endpoint, "--tlsverify", "--tlscacert", &file(&bundle, "ca.pem"), "--tlscert", &file(&bundle, "cert.pem"), "--tlskey", &file(&bundle, "key.pem"), "node", "ls", "-q"])
        .ok();
    assert_eq!(remote.lines().len(), 2);
    let host_env = format!("SHOAL_HOST={endpoint}");
    let cert_env = format!("SHOAL_CERT_PATH={bundle_str}");
    cluster.exec("worker1", &["env", &host_env, &cert_env, "SHOAL_TLS_VERIFY=1", SHOAL, "node", "ls"]).ok();

    // The manager's own containers, from another host, as docker's remote
    // API gives them: exec into one (its output and exit code come back).
    let tls = [
        "-H".to_string(),
        endpoint.clone(),
        "--tlscacert".into(),
        file(&bundle, "ca.pem"),
        "--tlscert".into(),
        file(&bundle, "cert.pem"),
        "--tlskey".into(),
        file(&bundle, "key.pem"),
    ];
    let remote_shoal = |args: &[&str]| {
        let mut full: Vec<&str> = vec![SHOAL];
        full.extend(tls.iter().map(String::as_str));
        full.extend_from_slice(args);
        cluster.exec("worker1", &full)
    };
    crate::support::bridge_node::import_busybox(&cluster, "manager1", "localbox:1");
    cluster.shoal("manager1", &["run", "-d", "--name", "admin-box", "localbox:1", "sleep", "300"]).ok();
    let listed = remote_shoal(&["container", "ls", "--format", "{{.Names}}"]).ok();
    assert_eq!(listed.stdout, "admin-box\n", "manager1's containers, listed from worker1");
    let exec = remote_shoal(&["exec", "admin-box", "sh", "-c", "hostname >/dev/null && echo remote-exec; exit 4"]);
    assert_eq!((exec.stdout.as_str(), exec.status.and_then(|s| s.code())), ("remote-exec\n", Some(4)), "{exec:?}");

    // The worker's own certificate is refused by the control API.
    let certs = PathBuf::from(format!("/run/shoal-dev/{}/worker1/data/swarm/certs", cluster.name()));
    let as_worker = cluster.exec(
        "worker1",
        &[SHOAL, "-H", &endpoint, "--tlscacert", &file(&certs, "ca.pem"), "--tlscert", &file(&certs, "node.pem"), "--tlskey", &file(&certs, "node-key.pem"), "node", "ls"],
    );
    assert!(!as_worker.success());
    assert!(as_worker.stderr.contains("worker certificate cannot use this API"), "{}", as_worker.stderr);
    // ...and by the node's containers.
    let worker_exec = cluster.exec(
        "worker1",
        &[SHOAL, "-H", &endpoint, "--tlscacert", &file(&certs, "ca.pem"), "--tlscert", &file(&certs, "node.pem"), "--tlskey", &file(&certs, "node-key.pem"), "exec", "admin-box", "true"],
    );
    assert!(!worker_exec.success() && worker_exec.stderr.contains("worker certificate cannot use this API"), "{}", worker_exec.stderr);
    cluster.shoal("manager1", &["container", "rm", "-f", "admin-box"]).ok();

    // A certificate from another CA does not get through the handshake.
    let evil = scratch_dir("evil");
    let openssl = |args: &[&str]| run("openssl", args, Duration::from_secs(20)).ok();
    let (ca_key, ca_cert, key, csr, cert) =
        (file(&evil, "ca-key.pem"), file(&evil, "ca.pem"), file(&evil, "key.pem"), file(&evil, "csr.pem"), file(&evil, "cert.pem"));
    openssl(&["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", &ca_key, "-out", &ca_cert, "-subj", "/CN=other-ca", "-days", "1"]);
    openssl(&["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", &key, "-out", &csr, "-subj", "/CN=intruder/OU=client/O=other"]);
    openssl(&["x509", "-req", "-in", &csr, "-CA", &ca_cert, "-CAkey", &ca_key, "-CAcreateserial", "-out", &cert, "-days", "1"]);
    let foreign = cluster.exec(
        "worker1",
        &[SHOAL, "-H", &endpoint, "--tlscacert", &file(&bundle, "ca.pem"), "--tlscert", &cert, "--tlskey", &key, "node", "ls"],
    );
    assert!(!foreign.success(), "a foreign certificate was accepted");
    assert!(foreign.stderr.starts_with("Error: "), "{}", foreign.stderr);
    assert!(!foreign.stderr.contains("panicked"), "{}", foreign.stderr);

    let _ = std::fs::remove_dir_all(&bundle);
    let _ = std::fs::remove_dir_all(&evil);
}
