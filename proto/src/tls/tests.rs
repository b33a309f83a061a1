use super::*;
use super::client::check_host_port;

fn self_signed(name: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let cert = rcgen::CertificateParams::new(vec![name.to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    (cert.pem(), key.serialize_pem())
}

#[test]
fn pem_encoding_round_trips_every_padding() {
    for len in [0usize, 1, 2, 3, 47, 48, 49, 100] {
        let der: Vec<u8> = (0..len).map(|i| (i * 37 % 256) as u8).collect();
        let pem = pem_encode("CERTIFICATE", &der);
        assert!(pem.lines().all(|l| l.len() <= 64 || l.starts_with("-----")));
        let mut reader = pem.as_bytes();
        let item = rustls_pemfile::read_one(&mut reader).expect("pem parses");
        match item {
            Some(rustls_pemfile::Item::X509Certificate(decoded)) => {
                assert_eq!(decoded.as_ref(), der.as_slice())
            }
            None if len == 0 => {}
            other => panic!("unexpected {other:?} for length {len}"),
        }
    }
    let (cert, _) = self_signed("x");
    let der = parse_certs(&cert, "certificate").expect("cert")[0].clone();
    assert_eq!(pem_encode("CERTIFICATE", &der), cert.replace("\r\n", "\n"));
}

#[test]
fn credentials_debug_hides_the_key() {
    let credentials = Credentials {
        ca_pem: "ca".into(),
        cert_pem: "cert".into(),
        key_pem: "SECRETKEY".into(),
    };
    assert!(!format!("{credentials:?}").contains("SECRETKEY"));
}

#[test]
fn bad_material_is_named() {
    let (cert, key) = self_signed("a");
    let (_, other_key) = self_signed("b");
    let good = Credentials {
        ca_pem: cert.clone(),
        cert_pem: cert.clone(),
        key_pem: key.clone(),
    };
    assert!(ServerTls::new(&good).is_ok());
    assert!(ClientTls::new(&good).is_ok());

    let no_ca = Credentials {
        ca_pem: "nothing".into(),
        ..good.clone()
    };
    assert!(matches!(
        ServerTls::new(&no_ca),
        Err(TlsError::NoCertificate {
            what: "CA certificate"
        })
    ));
    let no_key = Credentials {
        key_pem: cert.clone(),
        ..good.clone()
    };
    assert!(matches!(
        ClientTls::new(&no_key),
        Err(TlsError::BadKey { .. })
    ));
    let wrong_key = Credentials {
        key_pem: other_key,
        ..good.clone()
    };
    assert!(matches!(
        ServerTls::new(&wrong_key),
        Err(TlsError::BadCredentials { .. })
    ));
    assert!(matches!(
        ClientTls::new(&wrong_key),
        Err(TlsError::BadCredentials { .. })
    ));

    // A failed update keeps the old config working.
    let server = ServerTls::new(&good).expect("server");
    assert!(server.update(&no_ca).is_err());
    assert!(server.update(&good).is_ok());
}

#[test]
fn addresses_must_be_host_and_port() {
    assert!(check_host_port("198.18.0.1:4242").is_ok());
    assert!(check_host_port("[::1]:4242").is_ok());
    assert!(check_host_port("manager-1:4242").is_ok());
    for bad in ["198.18.0.1", ":4242", "host:port", "host:70000", ""] {
        let err = check_host_port(bad).unwrap_err();
        assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
    }
}

#[tokio::test]
async fn fetch_rejects_a_malformed_digest_before_connecting() {
    let err = fetch_pinned_ca("127.0.0.1:1", "abc", Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(matches!(err, TlsError::BadDigest { .. }), "{err}");
}

#[tokio::test]
async fn refused_connections_say_so() {
    // Bind then drop to get a port that is (almost certainly) closed.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let (cert, key) = self_signed("a");
    let tls = ClientTls::new(&Credentials {
        ca_pem: cert.clone(),
        cert_pem: cert,
        key_pem: key,
    })
    .expect("tls");
    let err = connect(&addr, &tls, Duration::from_secs(2))
        .await
        .unwrap_err();
    assert!(matches!(err, TlsError::Connect { .. }), "{err}");
    assert!(err.to_string().contains(&addr), "{err}");
    let digest = "0".repeat(64);
    let err = fetch_pinned_ca(&addr, &digest, Duration::from_secs(2))
        .await
        .unwrap_err();
    assert!(matches!(err, TlsError::Connect { .. }), "{err}");
    let err = connect_unix(Path::new("/nonexistent/shoal.sock"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("/nonexistent/shoal.sock"), "{err}");
}

#[tokio::test]
async fn silent_managers_are_tried_side_by_side_not_in_turn() {
    // Two listeners that accept TCP but never answer the TLS handshake stand
    // for managers whose hosts hang; one stagger apart, both time out
    // together instead of one after the other.
    let silent_a = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let silent_b = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addrs = vec![
        silent_a.local_addr().expect("addr").to_string(),
        silent_b.local_addr().expect("addr").to_string(),
    ];
    let (cert, key) = self_signed("a");
    let tls = ClientTls::new(&Credentials { ca_pem: cert.clone(), cert_pem: cert, key_pem: key }).expect("tls");
    let timeout = Duration::from_secs(1);
    let started = std::time::Instant::now();
    let failures = connect_first(&addrs, &tls, Duration::from_millis(100), timeout)
        .await
        .expect_err("nothing answers");
    let took = started.elapsed();
    assert!(took < timeout * 3 / 2, "the second manager waited for the first: {took:?}");
    let failed: Vec<&String> = failures.iter().map(|(addr, _)| addr).collect();
    assert_eq!(failed, addrs.iter().collect::<Vec<_>>(), "failures are reported in the managers' order");
    assert!(failures.iter().all(|(_, e)| matches!(e, TlsError::Timeout { .. })), "{failures:?}");
}
