//! The swarm's root certificate authority.
//!
//! `swarm init` generates it; its certificate and key live in the cluster
//! object in the Raft store, so every manager can issue certificates and a
//! new leader needs nothing else. It signs node and client certificates whose
//! subject carries the holder's identity (CN = id, OU = role, O = cluster id;
//! see `shoal_proto::identity`). The subject, SANs and usages always come from
//! the CA, never from the CSR: a CSR only contributes its public key, so a
//! worker cannot ask for a manager's name or role.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, CertificateSigningRequestParams,
    DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
    SerialNumber,
};
use shoal_proto::identity::Role;
use shoal_proto::join_token::ca_digest;
use shoal_proto::tls::MANAGER_SERVER_NAME;
use time::OffsetDateTime;

/// The root CA's common name; the cluster id goes in O.
pub const ROOT_CA_COMMON_NAME: &str = "shoal-root-ca";
/// Long enough that nobody has to rotate a root during a swarm's life.
const ROOT_CA_LIFETIME: Duration = Duration::from_secs(20 * 365 * 24 * 3600);
/// Certificates start this far in the past, so a node whose clock runs a
/// little behind the issuing manager's does not reject a fresh certificate.
const BACKDATE: Duration = Duration::from_secs(5 * 60);
/// Upper bound on a node certificate's lifetime; also keeps date arithmetic
/// far away from ASN.1's year 9999.
const MAX_LIFETIME: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// What can go wrong creating, loading or using the CA.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("could not create the root CA ({source}); retry `shoal swarm init`")]
    Generate {
        #[source]
        source: rcgen::Error,
    },
    #[error("the stored CA certificate cannot be loaded ({reason}); the swarm's CA state is damaged, restore it from a manager that has a good copy")]
    BadCaCertificate { reason: String },
    #[error("the stored CA private key cannot be loaded ({reason}); the swarm's CA state is damaged, restore it from a manager that has a good copy")]
    BadCaKey { reason: String },
    #[error("the stored CA private key does not belong to the CA certificate {subject:?}; the swarm's CA state is damaged, restore it from a manager that has a good copy")]
    KeyMismatch { subject: String },
    #[error("the certificate {subject:?} is not a CA certificate; pass the swarm's root CA")]
    NotACa { subject: String },
    #[error("the certificate signing request is unreadable or its signature does not verify ({source}); generate a new key and CSR and retry")]
    InvalidCsr {
        #[source]
        source: rcgen::Error,
    },
    #[error("the {field} for the new certificate is empty; pass a non-empty {field}")]
    EmptyName { field: &'static str },
    #[error("certificate lifetime {lifetime:?} is out of range; use a lifetime between 1 second and 100 years")]
    BadLifetime { lifetime: Duration },
    #[error("could not sign the certificate for {id:?} ({source}); retry, and check the CA state if it keeps failing")]
    Sign {
        id: String,
        #[source]
        source: rcgen::Error,
    },
}

/// The swarm's root CA: its certificate exactly as stored, and its key.
pub struct CertificateAuthority {
    /// The certificate as generated or stored. Kept verbatim because the
    /// join token pins its digest; `issuer` below is a re-signed copy.
    cert_pem: String,
    cert_der: Vec<u8>,
    key: KeyPair,
    /// rcgen signs with a `Certificate` as issuer but only reads its subject
    /// and key identifier, which the re-signed copy shares with the original.
    issuer: Certificate,
}

// rcgen's KeyPair derives Debug over its key bytes; never print them.
impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("digest", &self.digest())
            .field("key", &"<redacted>")
            .finish()
    }
}

impl CertificateAuthority {
    /// A new self-signed root: CN "shoal-root-ca", O = `cluster_id`,
    /// ECDSA P-256, valid for 20 years.
    pub fn generate(cluster_id: &str) -> Result<Self, CaError> {
        if cluster_id.is_empty() {
            return Err(CaError::EmptyName {
                field: "cluster id",
            });
        }
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|source| CaError::Generate { source })?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, ROOT_CA_COMMON_NAME);
        params
            .distinguished_name
            .push(DnType::OrganizationName, cluster_id);
        // Path length 0: the root signs leaves only, never another CA.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(random_serial());
        let (not_before, not_after) = validity(ROOT_CA_LIFETIME).ok_or(CaError::BadLifetime {
            lifetime: ROOT_CA_LIFETIME,
        })?;
        params.not_before = not_before;
        params.not_after = not_after;
        let cert = params
            .self_signed(&key)
            .map_err(|source| CaError::Generate { source })?;
        Ok(CertificateAuthority {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            key,
            issuer: cert,
        })
    }

    /// Loads a CA from the cluster object's PEMs, checking that the key
    /// belongs to the certificate and that it is a CA.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, CaError> {
        let bad_cert = |reason: String| CaError::BadCaCertificate { reason };
        let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
            .map_err(|e| bad_cert(e.to_string()))?;
        if pem.label != "CERTIFICATE" {
            return Err(bad_cert(format!(
                "the PEM block is {:?}, not CERTIFICATE",
                pem.label
            )));
        }
        let cert_der = pem.contents;
        let (_, parsed) =
            x509_parser::parse_x509_certificate(&cert_der).map_err(|e| bad_cert(e.to_string()))?;
        let subject = parsed.subject().to_string();
        if !parsed.is_ca() {
            return Err(CaError::NotACa { subject });
        }
        let key = KeyPair::from_pem(key_pem).map_err(|e| CaError::BadCaKey {
            reason: e.to_string(),
        })?;
        // Signing with the wrong key would "work" and yield certificates
        // nobody can verify; refuse up front instead.
        if key.public_key_der() != parsed.public_key().raw {
            return Err(CaError::KeyMismatch { subject });
        }
        let params = CertificateParams::from_ca_cert_der(&cert_der.as_slice().into())
            .map_err(|e| bad_cert(e.to_string()))?;
        let issuer = params
            .self_signed(&key)
            .map_err(|e| bad_cert(e.to_string()))?;
        Ok(CertificateAuthority {
            cert_pem: cert_pem.to_string(),
            cert_der,
            key,
            issuer,
        })
    }

    /// The root certificate, PEM.
    pub fn cert_pem(&self) -> String {
        self.cert_pem.clone()
    }

    /// The root private key, PKCS#8 PEM. Only for storing in the cluster
    /// object; never log it.
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// Hex SHA-256 of the root certificate's DER: what join tokens pin.
    pub fn digest(&self) -> String {
        ca_digest(&self.cert_der)
    }

    /// Issues a certificate for the public key in `csr_pem` (whose signature
    /// must verify), with subject CN = `node_id`, OU = `role`, O =
    /// `cluster_id`, valid for `lifetime`, for both client and server auth.
    /// Managers also get the DNS SAN [`MANAGER_SERVER_NAME`] that clients
    /// verify; `ip_sans` are added for every role.
    pub fn sign_node_csr(
        &self,
        csr_pem: &str,
        node_id: &str,
        role: Role,
        cluster_id: &str,
        lifetime: Duration,
        ip_sans: &[IpAddr],
    ) -> Result<String, CaError> {
        if node_id.is_empty() {
            return Err(CaError::EmptyName { field: "node id" });
        }
        if cluster_id.is_empty() {
            return Err(CaError::EmptyName {
                field: "cluster id",
            });
        }
        if lifetime < Duration::from_secs(1) || lifetime > MAX_LIFETIME {
            return Err(CaError::BadLifetime { lifetime });
        }
        // from_pem verifies the CSR's self-signature (rcgen's x509-parser
        // feature turns on x509-parser's `verify`), proving the requester
        // holds the private key.
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|source| CaError::InvalidCsr { source })?;

        // Start from empty parameters: nothing the CSR asked for survives.
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, node_id);
        params
            .distinguished_name
            .push(DnType::OrganizationalUnitName, role.as_str());
        params
            .distinguished_name
            .push(DnType::OrganizationName, cluster_id);
        if role == Role::Manager {
            let name = MANAGER_SERVER_NAME
                .try_into()
                .map_err(|source| CaError::Sign {
                    id: node_id.to_string(),
                    source,
                })?;
            params.subject_alt_names.push(SanType::DnsName(name));
        }
        params
            .subject_alt_names
            .extend(ip_sans.iter().map(|ip| SanType::IpAddress(*ip)));
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        // Every node is a TLS client (sessions, renewals) and managers are
        // servers; one certificate serves both.
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ClientAuth,
            ExtendedKeyUsagePurpose::ServerAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial());
        let (not_before, not_after) =
            validity(lifetime).ok_or(CaError::BadLifetime { lifetime })?;
        params.not_before = not_before;
        params.not_after = not_after;
        csr.params = params;

        let cert = csr
            .signed_by(&self.issuer, &self.key)
            .map_err(|source| CaError::Sign {
                id: node_id.to_string(),
                source,
            })?;
        Ok(cert.pem())
    }
}

/// 16 random bytes: unique serials even when a node renews with the same key
/// twice in one second. The top bit is cleared so DER keeps it positive.
fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f;
    SerialNumber::from_slice(&bytes)
}

/// (now - BACKDATE, now + lifetime), or None if that overflows.
fn validity(lifetime: Duration) -> Option<(OffsetDateTime, OffsetDateTime)> {
    let now = OffsetDateTime::now_utc();
    let backdate = time::Duration::try_from(BACKDATE).ok()?;
    let lifetime = time::Duration::try_from(lifetime).ok()?;
    Some((now.checked_sub(backdate)?, now.checked_add(lifetime)?))
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::time::SystemTime;

    use shoal_proto::identity::{generate_key_and_csr, identity_from_pem};
    use x509_parser::extensions::GeneralName;
    use x509_parser::prelude::X509Certificate;

    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn der_of(pem: &str) -> Vec<u8> {
        x509_parser::pem::parse_x509_pem(pem.as_bytes())
            .expect("pem")
            .1
            .contents
    }

    fn with_cert<R>(pem: &str, f: impl FnOnce(&X509Certificate<'_>) -> R) -> R {
        let der = der_of(pem);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("x509");
        f(&cert)
    }

    fn dns_sans(pem: &str) -> Vec<String> {
        with_cert(pem, |cert| {
            cert.subject_alternative_name()
                .expect("san ext")
                .map(|san| {
                    san.value
                        .general_names
                        .iter()
                        .filter_map(|n| match n {
                            GeneralName::DNSName(d) => Some(d.to_string()),
                            _ => None,
                        })
                        .collect()
                })
                .unwrap_or_default()
        })
    }

    fn signed_by(child_pem: &str, ca_pem: &str) -> bool {
        let ca_der = der_of(ca_pem);
        let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).expect("ca");
        with_cert(child_pem, |cert| {
            cert.verify_signature(Some(ca.public_key())).is_ok()
        })
    }

    #[test]
    fn generates_a_root() {
        let ca = CertificateAuthority::generate("cluster-1").expect("ca");
        with_cert(&ca.cert_pem(), |cert| {
            assert!(cert.is_ca());
            let subject = cert.subject();
            assert_eq!(
                subject
                    .iter_common_name()
                    .next()
                    .and_then(|c| c.as_str().ok()),
                Some(ROOT_CA_COMMON_NAME)
            );
            assert_eq!(
                subject
                    .iter_organization()
                    .next()
                    .and_then(|c| c.as_str().ok()),
                Some("cluster-1")
            );
            let years = (cert.validity().not_after.timestamp()
                - cert.validity().not_before.timestamp())
                / (365 * 86400);
            assert_eq!(years, 20);
        });
        assert_eq!(
            ca.digest(),
            shoal_proto::join_token::ca_digest_from_pem(&ca.cert_pem()).expect("digest")
        );
        assert!(!format!("{ca:?}").contains("PRIVATE"));
    }

    #[test]
    fn signs_node_csrs_with_identity_in_the_subject() {
        let ca = CertificateAuthority::generate("cluster-1").expect("ca");
        let csr = generate_key_and_csr("whatever-the-node-asked").expect("csr");
        let ip = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 7));
        let pem = ca
            .sign_node_csr(
                &csr.csr_pem,
                "node-7",
                Role::Worker,
                "cluster-1",
                DAY,
                &[ip],
            )
            .expect("signed");
        let identity = identity_from_pem(&pem).expect("identity");
        assert_eq!(
            (
                identity.id.as_str(),
                identity.role,
                identity.cluster_id.as_str()
            ),
            ("node-7", Role::Worker, "cluster-1")
        );
        let left = identity
            .not_after
            .duration_since(SystemTime::now())
            .expect("in the future");
        assert!(
            left > DAY - Duration::from_secs(60) && left <= DAY,
            "{left:?}"
        );
        assert!(signed_by(&pem, &ca.cert_pem()));
        assert!(
            dns_sans(&pem).is_empty(),
            "workers must not get the manager name"
        );
        with_cert(&pem, |cert| {
            assert!(!cert.is_ca());
            let eku = cert
                .extended_key_usage()
                .expect("eku")
                .expect("present")
                .value;
            assert!(eku.client_auth && eku.server_auth);
            let ips: Vec<_> = cert
                .subject_alternative_name()
                .expect("san")
                .expect("present")
                .value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::IPAddress(b) => Some(b.to_vec()),
                    _ => None,
                })
                .collect();
            assert_eq!(ips, vec![vec![198, 18, 0, 7]]);
        });

        let manager = ca
            .sign_node_csr(&csr.csr_pem, "node-1", Role::Manager, "cluster-1", DAY, &[])
            .expect("signed");
        assert_eq!(dns_sans(&manager), vec![MANAGER_SERVER_NAME.to_string()]);
        assert_eq!(
            identity_from_pem(&manager).expect("identity").role,
            Role::Manager
        );
    }

    #[test]
    fn ignores_what_the_csr_asks_for() {
        // A worker's CSR asking for the manager name, a manager OU and CA powers.
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut params =
            CertificateParams::new(vec![MANAGER_SERVER_NAME.to_string()]).expect("params");
        params
            .distinguished_name
            .push(DnType::OrganizationalUnitName, "manager");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let csr = params
            .serialize_request(&key)
            .expect("csr")
            .pem()
            .expect("pem");
        let ca = CertificateAuthority::generate("c").expect("ca");
        let pem = ca
            .sign_node_csr(&csr, "w1", Role::Worker, "c", DAY, &[])
            .expect("signed");
        assert!(dns_sans(&pem).is_empty());
        assert_eq!(
            identity_from_pem(&pem).expect("identity").role,
            Role::Worker
        );
        with_cert(&pem, |cert| {
            let usage = cert.key_usage().expect("ku").expect("present").value;
            assert!(!usage.key_cert_sign() && usage.digital_signature());
        });
    }

    #[test]
    fn refuses_bad_csrs_and_arguments() {
        let ca = CertificateAuthority::generate("c").expect("ca");
        let csr = generate_key_and_csr("n").expect("csr").csr_pem;
        assert!(matches!(
            ca.sign_node_csr("garbage", "n", Role::Worker, "c", DAY, &[]),
            Err(CaError::InvalidCsr { .. })
        ));
        // Change one base64 character of the second line, inside the
        // signed part (subject and key): the self-signature must not verify.
        let mut lines: Vec<String> = csr.lines().map(str::to_string).collect();
        let line = &mut lines[2];
        let flipped = if line.as_bytes()[10] == b'A' {
            "B"
        } else {
            "A"
        };
        line.replace_range(10..11, flipped);
        let tampered = lines.join("\n");
        // rcgen reports a failed CSR signature check as RingUnspecified.
        assert!(matches!(
            ca.sign_node_csr(&tampered, "n", Role::Worker, "c", DAY, &[]),
            Err(CaError::InvalidCsr {
                source: rcgen::Error::RingUnspecified
            })
        ));
        assert!(matches!(
            ca.sign_node_csr(&csr, "", Role::Worker, "c", DAY, &[]),
            Err(CaError::EmptyName { field: "node id" })
        ));
        assert!(matches!(
            ca.sign_node_csr(&csr, "n", Role::Worker, "", DAY, &[]),
            Err(CaError::EmptyName { .. })
        ));
        assert!(matches!(
            ca.sign_node_csr(&csr, "n", Role::Worker, "c", Duration::ZERO, &[]),
            Err(CaError::BadLifetime { .. })
        ));
        assert!(matches!(
            ca.sign_node_csr(&csr, "n", Role::Worker, "c", Duration::MAX, &[]),
            Err(CaError::BadLifetime { .. })
        ));
        let err = ca
            .sign_node_csr("garbage", "n", Role::Worker, "c", DAY, &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("CSR"), "{err}");
    }

    #[test]
    fn reloads_from_pem_and_keeps_issuing_verifiable_certificates() {
        let original = CertificateAuthority::generate("c").expect("ca");
        let loaded = CertificateAuthority::from_pem(&original.cert_pem(), &original.key_pem())
            .expect("loaded");
        assert_eq!(loaded.cert_pem(), original.cert_pem());
        assert_eq!(loaded.digest(), original.digest());
        let csr = generate_key_and_csr("n").expect("csr").csr_pem;
        let pem = loaded
            .sign_node_csr(&csr, "n", Role::Client, "c", DAY, &[])
            .expect("signed");
        assert!(signed_by(&pem, &original.cert_pem()));
        with_cert(&pem, |cert| {
            let ca_der = der_of(&original.cert_pem());
            let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).expect("ca");
            // Byte-identical names: path building matches issuer to subject.
            assert_eq!(cert.issuer().as_raw(), ca.subject().as_raw());
        });
    }

    #[test]
    fn refuses_mismatched_or_non_ca_material() {
        let a = CertificateAuthority::generate("a").expect("ca");
        let b = CertificateAuthority::generate("b").expect("ca");
        assert!(matches!(
            CertificateAuthority::from_pem(&a.cert_pem(), &b.key_pem()),
            Err(CaError::KeyMismatch { .. })
        ));
        assert!(matches!(
            CertificateAuthority::from_pem("junk", &a.key_pem()),
            Err(CaError::BadCaCertificate { .. })
        ));
        assert!(matches!(
            CertificateAuthority::from_pem(&a.cert_pem(), "junk"),
            Err(CaError::BadCaKey { .. })
        ));
        let node = generate_key_and_csr("n").expect("csr");
        let leaf = a
            .sign_node_csr(&node.csr_pem, "n", Role::Manager, "a", DAY, &[])
            .expect("signed");
        assert!(matches!(
            CertificateAuthority::from_pem(&leaf, &node.key_pem),
            Err(CaError::NotACa { .. })
        ));
    }
}
