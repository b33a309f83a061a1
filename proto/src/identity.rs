//! Who a certificate belongs to.
//!
//! Every certificate the swarm's CA issues names its holder in the subject:
//! CN = node id (or client name), OU = role, O = cluster id. The CA sets all
//! three itself (it ignores what a CSR asks for), so once TLS has checked a
//! peer's chain against the CA, the subject is the peer's authenticated
//! identity and role checks can trust it.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use x509_parser::prelude::{FromDer, X509Certificate, X509Name};

/// What a certificate holder may do; enforced on every RPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Runs Raft and the control plane; may use every API.
    Manager,
    /// Runs tasks; may only talk to the dispatcher and renew its certificate.
    Worker,
    /// A remote CLI user holding a client bundle; may use the control API.
    Client,
}

impl Role {
    /// The OU string in certificates and the role name on the wire.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Manager => "manager",
            Role::Worker => "worker",
            Role::Client => "client",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "manager" => Ok(Role::Manager),
            "worker" => Ok(Role::Worker),
            "client" => Ok(Role::Client),
            other => Err(IdentityError::UnknownRole {
                role: other.to_string(),
            }),
        }
    }
}

/// A certificate that does not describe a Shoal identity, or a failure to
/// make a key.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("unknown role {role:?}; use manager, worker or client")]
    UnknownRole { role: String },
    #[error("the certificate PEM could not be read ({reason}); pass a PEM file with a BEGIN CERTIFICATE block")]
    BadPem { reason: String },
    #[error(
        "the certificate is not valid X.509 ({reason}); use a certificate issued by the swarm's CA"
    )]
    BadCertificate { reason: String },
    #[error("the certificate subject {subject:?} has no single {field} field; use a certificate issued by the swarm's CA")]
    MissingSubjectField {
        field: &'static str,
        subject: String,
    },
    #[error("the certificate subject {subject:?} names role {role:?}, which is not manager, worker or client; use a certificate issued by the swarm's CA")]
    BadRole { subject: String, role: String },
    #[error("could not generate a key and certificate request for {name:?} ({source}); check that the name is plain text and retry")]
    KeyGeneration {
        name: String,
        #[source]
        source: rcgen::Error,
    },
}

/// The authenticated holder of a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// Node id, or the client name for [`Role::Client`].
    pub id: String,
    pub role: Role,
    pub cluster_id: String,
    /// When the certificate stops being valid; the renewal clock uses it.
    pub not_after: SystemTime,
}

/// Reads the Shoal identity out of a DER certificate. It does not check the
/// signature or validity period: TLS verification has done that already.
pub fn identity_from_der(der: &[u8]) -> Result<PeerIdentity, IdentityError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| IdentityError::BadCertificate {
        reason: e.to_string(),
    })?;
    let subject = cert.subject();
    let id = single_field(subject, "CN", subject.iter_common_name())?;
    let role_text = single_field(subject, "OU", subject.iter_organizational_unit())?;
    let cluster_id = single_field(subject, "O", subject.iter_organization())?;
    let role = role_text.parse().map_err(|_| IdentityError::BadRole {
        subject: subject.to_string(),
        role: role_text.clone(),
    })?;
    Ok(PeerIdentity {
        id,
        role,
        cluster_id,
        not_after: system_time(cert.validity().not_after.timestamp()),
    })
}

/// [`identity_from_der`] of the first certificate in a PEM document.
pub fn identity_from_pem(pem: &str) -> Result<PeerIdentity, IdentityError> {
    let mut reader = pem.as_bytes();
    let first = rustls_pemfile::certs(&mut reader).next();
    match first {
        Some(Ok(der)) => identity_from_der(&der),
        Some(Err(e)) => Err(IdentityError::BadPem {
            reason: e.to_string(),
        }),
        None => Err(IdentityError::BadPem {
            reason: "it holds no certificate".into(),
        }),
    }
}

/// The verified identity of the peer that sent `req`, or `None` when it came
/// without a client certificate (a joining node, or the local unix socket).
///
/// This relies on tonic 0.12's `Connected` impl for
/// `tokio_rustls::server::TlsStream<TcpStream>`: when a server is fed the
/// streams from [`crate::tls::ServerTls::incoming`], tonic stores the peer's
/// chain in the request extensions and `peer_certs()` returns it. The chain
/// has already been verified against the CA during the handshake.
pub fn peer_identity<T>(req: &tonic::Request<T>) -> Option<PeerIdentity> {
    identity_of_chain(&req.peer_certs()?)
}

/// The identity in a verified peer chain's leaf (see [`peer_identity`]).
pub fn identity_of_chain(certs: &[rustls::pki_types::CertificateDer<'_>]) -> Option<PeerIdentity> {
    let leaf = certs.first()?;
    match identity_from_der(leaf) {
        Ok(identity) => Some(identity),
        Err(e) => {
            // A CA-signed certificate without our subject layout means a
            // misconfigured CA, not an attack; treat the peer as anonymous.
            tracing::debug!(error = %e, "peer certificate carries no Shoal identity");
            None
        }
    }
}

/// A fresh private key and a CSR for it, both PEM.
#[derive(Clone)]
pub struct KeyAndCsr {
    /// PKCS#8 PEM; never log it.
    pub key_pem: String,
    pub csr_pem: String,
}

// Debug leaves the key out so a stray `{:?}` never writes it to a log.
impl fmt::Debug for KeyAndCsr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyAndCsr")
            .field("key_pem", &"<redacted>")
            .field("csr_pem", &self.csr_pem)
            .finish()
    }
}

/// Generates an ECDSA P-256 key and a CSR with `common_name` as CN. The CA
/// replaces the subject anyway; the CN only helps someone reading the CSR.
pub fn generate_key_and_csr(common_name: &str) -> Result<KeyAndCsr, IdentityError> {
    let failed = |source| IdentityError::KeyGeneration {
        name: common_name.to_string(),
        source,
    };
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(failed)?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    let csr = params.serialize_request(&key).map_err(failed)?;
    let csr_pem = csr.pem().map_err(failed)?;
    Ok(KeyAndCsr {
        key_pem: key.serialize_pem(),
        csr_pem,
    })
}

/// Exactly one value of a subject attribute: two OUs would make the role
/// ambiguous, so that is refused rather than guessed.
fn single_field<'a>(
    subject: &X509Name<'_>,
    field: &'static str,
    mut values: impl Iterator<Item = &'a x509_parser::x509::AttributeTypeAndValue<'a>>,
) -> Result<String, IdentityError> {
    let missing = || IdentityError::MissingSubjectField {
        field,
        subject: subject.to_string(),
    };
    let first = values.next().ok_or_else(missing)?;
    if values.next().is_some() {
        return Err(missing());
    }
    let value = first.as_str().map_err(|_| missing())?;
    if value.is_empty() {
        return Err(missing());
    }
    Ok(value.to_string())
}

fn system_time(unix_secs: i64) -> SystemTime {
    if unix_secs >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(unix_secs.unsigned_abs())
    } else {
        SystemTime::UNIX_EPOCH
            .checked_sub(Duration::from_secs(unix_secs.unsigned_abs()))
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_with_subject(fields: &[(rcgen::DnType, &str)]) -> String {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (ty, value) in fields {
            params.distinguished_name.push(ty.clone(), *value);
        }
        params.not_after = rcgen::date_time_ymd(2040, 1, 2);
        params.self_signed(&key).expect("cert").pem()
    }

    #[test]
    fn roles_round_trip() {
        for role in [Role::Manager, Role::Worker, Role::Client] {
            assert_eq!(role.as_str().parse::<Role>().expect("role"), role);
        }
        let err = "admin".parse::<Role>().unwrap_err();
        assert!(err.to_string().contains("\"admin\""), "{err}");
    }

    #[test]
    fn reads_subject_convention() {
        let pem = cert_with_subject(&[
            (rcgen::DnType::CommonName, "node1"),
            (rcgen::DnType::OrganizationalUnitName, "worker"),
            (rcgen::DnType::OrganizationName, "cluster1"),
        ]);
        let identity = identity_from_pem(&pem).expect("identity");
        assert_eq!(identity.id, "node1");
        assert_eq!(identity.role, Role::Worker);
        assert_eq!(identity.cluster_id, "cluster1");
        let secs = identity
            .not_after
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("after epoch")
            .as_secs();
        assert_eq!(secs, 2_209_075_200); // 2040-01-02T00:00:00Z
    }

    #[test]
    fn refuses_foreign_subjects() {
        let no_ou = cert_with_subject(&[
            (rcgen::DnType::CommonName, "n"),
            (rcgen::DnType::OrganizationName, "c"),
        ]);
        assert!(matches!(
            identity_from_pem(&no_ou),
            Err(IdentityError::MissingSubjectField { field: "OU", .. })
        ));
        let bad_role = cert_with_subject(&[
            (rcgen::DnType::CommonName, "n"),
            (rcgen::DnType::OrganizationalUnitName, "root"),
            (rcgen::DnType::OrganizationName, "c"),
        ]);
        assert!(matches!(
            identity_from_pem(&bad_role),
            Err(IdentityError::BadRole { .. })
        ));
        assert!(matches!(
            identity_from_pem("garbage"),
            Err(IdentityError::BadPem { .. })
        ));
        assert!(matches!(
            identity_from_der(b"\x30\x03\x02\x01\x00"),
            Err(IdentityError::BadCertificate { .. })
        ));
    }

    #[test]
    fn generates_a_verifiable_csr() {
        let generated = generate_key_and_csr("node-a").expect("key and csr");
        assert!(generated.key_pem.contains("PRIVATE KEY"));
        // rcgen's parser checks the CSR's self-signature.
        let csr = rcgen::CertificateSigningRequestParams::from_pem(&generated.csr_pem)
            .expect("valid csr");
        let cn = csr
            .params
            .distinguished_name
            .get(&rcgen::DnType::CommonName);
        assert_eq!(cn, Some(&rcgen::DnValue::Utf8String("node-a".into())));
        assert!(!format!("{generated:?}").contains("PRIVATE"));
    }
}
