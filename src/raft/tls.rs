//! Mutual TLS of the cluster port, and the certificates it runs on.
//!
//! Invariants:
//! - Both ends authenticate: the server requires a client certificate that
//!   chains to the cluster CA (rustls `WebPkiClientVerifier`, no optional
//!   mode), and the client checks the server's certificate against the same
//!   CA and the host part of the address it dialled. Only the cluster CA is
//!   trusted; never the system roots.
//! - A private key file readable by others or writable by group is refused
//!   ([`check_private_file`]), and key bytes held here are `Zeroizing`.
//! - [`make_cluster_certs`] never overwrites a file, and writes private keys
//!   with mode 0600.
//!
//! The cryptography is rustls with the `ring` provider; the TLS handshakes
//! themselves run inside tonic (`ServerTlsConfig` / `ClientTlsConfig`).

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use thiserror::Error;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};
use zeroize::Zeroizing;

use crate::data_dir::check_private_file;

/// How long a server waits for a peer to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Validity of the cluster CA made by [`make_cluster_certs`].
pub const CA_VALIDITY_DAYS: u64 = 3650;

/// Validity of a node certificate made by [`make_cluster_certs`]; renew
/// before then with a new run into a new directory.
pub const NODE_VALIDITY_DAYS: u64 = 825;

/// Certificates start this long before "now", so peers whose clocks lag a
/// little still accept them.
const BACKDATE: Duration = Duration::from_secs(3600);

/// File name of the CA certificate.
pub const CA_CERT_FILE: &str = "ca.pem";
/// File name of the CA private key.
pub const CA_KEY_FILE: &str = "ca-key.pem";

/// Why cluster TLS material could not be loaded or made.
#[derive(Debug, Error)]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A private key file is readable by others or writable by group.
    #[error("{0}")]
    LooseKey(String),
    /// A certificate or key is malformed, or they do not fit together.
    #[error("{what}: {reason}")]
    Invalid {
        /// The file (or material) at fault.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `make_cluster_certs` would overwrite this file.
    #[error("{0} already exists; refusing to overwrite it")]
    Exists(PathBuf),
    /// A node name is not a DNS name or IP address, or clashes with another.
    #[error("node name {name:?}: {reason}")]
    BadName {
        /// The name given.
        name: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// Certificate generation failed.
    #[error("cannot make a certificate: {0}")]
    Generate(String),
}

/// The cluster identity of one node: the cluster CA, this node's
/// certificate chain and its private key, all PEM, checked to fit together.
#[derive(Clone)]
pub struct ClusterTls {
    ca_pem: Vec<u8>,
    cert_pem: Vec<u8>,
    key_pem: Arc<Zeroizing<Vec<u8>>>,
}

impl std::fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterTls")
            .field("key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl ClusterTls {
    /// Read the cluster CA (`--cluster-ca`), this node's certificate
    /// (`--cluster-cert`) and key (`--cluster-key`). The key file must not be
    /// readable by others or writable by group.
    pub fn load(ca: &Path, cert: &Path, key: &Path) -> Result<Self, TlsError> {
        check_private_file(key).map_err(|e| TlsError::LooseKey(e.to_string()))?;
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Io {
                path: path.to_owned(),
                source,
            })
        };
        let key_pem = Zeroizing::new(read(key)?);
        let what = [ca, cert, key].map(|p| p.display().to_string());
        Self::check(&read(ca)?, &read(cert)?, &key_pem, what)
    }

    /// The same from PEM bytes already in memory.
    pub fn from_pem(ca: &[u8], cert: &[u8], key: &[u8]) -> Result<Self, TlsError> {
        let what = ["cluster CA", "node certificate", "node key"].map(String::from);
        Self::check(ca, cert, key, what)
    }

    /// Parse everything, check that the key belongs to the certificate and
    /// that the certificate chains to the CA as a TLS client (so peers will
    /// accept it), then keep the PEM for tonic.
    fn check(ca: &[u8], cert: &[u8], key: &[u8], what: [String; 3]) -> Result<Self, TlsError> {
        let invalid = |i: usize, reason: String| TlsError::Invalid {
            what: what[i].clone(),
            reason,
        };
        let roots = parse_certs(ca).map_err(|r| invalid(0, r))?;
        let chain = parse_certs(cert).map_err(|r| invalid(1, r))?;
        let private = rustls_pemfile::private_key(&mut &key[..])
            .map_err(|e| invalid(2, format!("unreadable PEM: {e}")))?
            .ok_or_else(|| invalid(2, "holds no private key".into()))?;

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        CertifiedKey::from_der(chain.clone(), private, &provider)
            .map_err(|e| invalid(2, format!("does not fit certificate {}: {e}", what[1])))?;
        let mut store = RootCertStore::empty();
        for root in roots {
            store
                .add(root)
                .map_err(|e| invalid(0, format!("not a usable CA certificate: {e}")))?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider)
            .build()
            .map_err(|e| invalid(0, e.to_string()))?;
        verifier
            .verify_client_cert(&chain[0], &chain[1..], UnixTime::now())
            .map_err(|e| {
                invalid(
                    1,
                    format!(
                        "not accepted by the cluster CA {} as a client certificate: {e}",
                        what[0]
                    ),
                )
            })?;
        Ok(ClusterTls {
            ca_pem: ca.to_vec(),
            cert_pem: cert.to_vec(),
            key_pem: Arc::new(Zeroizing::new(key.to_vec())),
        })
    }

    fn identity(&self) -> Identity {
        // tonic keeps its own (non-zeroizing) copy of the key for the
        // lifetime of the server or channel.
        Identity::from_pem(&self.cert_pem, self.key_pem.as_slice())
    }

    /// Server side: present this node's certificate, require a client
    /// certificate signed by the cluster CA.
    pub fn server_config(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(self.identity())
            .client_ca_root(Certificate::from_pem(&self.ca_pem))
            .client_auth_optional(false)
            .timeout(HANDSHAKE_TIMEOUT)
    }

    /// Client side: trust only the cluster CA, expect `server_name` (the
    /// host part of the peer's address) in the server's certificate, and
    /// present this node's certificate.
    pub fn client_config(&self, server_name: &str) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(self.identity())
            .domain_name(server_name)
            .timeout(HANDSHAKE_TIMEOUT)
    }
}

fn parse_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("unreadable PEM: {e}"))?;
    if certs.is_empty() {
        return Err("holds no certificate".into());
    }
    Ok(certs)
}

/// Files written by [`make_cluster_certs`], in the order written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    /// The CA certificate: give it to every node (`--cluster-ca`).
    pub ca_cert: PathBuf,
    /// The CA private key: keep it offline; it can mint cluster identities.
    pub ca_key: PathBuf,
    /// Per node name: its certificate and its private key.
    pub nodes: Vec<(String, PathBuf, PathBuf)>,
}

/// Make a cluster CA (`ca.pem`, `ca-key.pem`) and, per name, a certificate
/// `NAME.pem` and key `NAME-key.pem` signed by it, into `out` (created with
/// mode 0700 if missing). Each node certificate has the name as its only
/// subject alternative name (a DNS name, or an IP address) and is valid for
/// both TLS server and client authentication. Keys are ECDSA P-256, written
/// with mode 0600. Refuses to overwrite any file: nothing is written when
/// one of the files exists.
pub fn make_cluster_certs(out: &Path, names: &[String]) -> Result<CertFiles, TlsError> {
    make_cluster_certs_with(out, names, &[])
}

/// [`make_cluster_certs`], with `extra_names` (e.g. the name of a service in
/// front of every node) added to every node certificate's subject
/// alternative names.
pub fn make_cluster_certs_with(
    out: &Path,
    names: &[String],
    extra_names: &[String],
) -> Result<CertFiles, TlsError> {
    if names.is_empty() {
        return Err(TlsError::BadName {
            name: String::new(),
            reason: "give at least one node name".into(),
        });
    }
    let mut files = BTreeSet::from([CA_CERT_FILE.to_string(), CA_KEY_FILE.to_string()]);
    for name in names {
        let bad = |reason: &str| TlsError::BadName {
            name: name.clone(),
            reason: reason.into(),
        };
        if ServerName::try_from(name.as_str()).is_err() {
            return Err(bad("not a DNS name or an IP address"));
        }
        for file in [format!("{name}.pem"), format!("{name}-key.pem")] {
            if !files.insert(file.clone()) {
                return Err(bad(&format!("its file {file} clashes with another file")));
            }
        }
    }
    for name in extra_names {
        if ServerName::try_from(name.as_str()).is_err() {
            return Err(TlsError::BadName {
                name: name.clone(),
                reason: "not a DNS name or an IP address".into(),
            });
        }
    }
    for file in &files {
        let path = out.join(file);
        if path.symlink_metadata().is_ok() {
            return Err(TlsError::Exists(path));
        }
    }
    create_dir(out)?;

    let generate = |e: rcgen::Error| TlsError::Generate(e.to_string());
    let ca_key = rcgen::KeyPair::generate().map_err(generate)?;
    let mut ca = rcgen::CertificateParams::default();
    ca.distinguished_name = rcgen::DistinguishedName::new();
    // A random suffix tells the CAs of different clusters apart, in logs
    // and in TLS alerts (unknown CA rather than a bad signature).
    let suffix = hex::encode(rand::random::<[u8; 4]>());
    ca.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("kstash cluster CA {suffix}"),
    );
    ca.distinguished_name
        .push(rcgen::DnType::OrganizationName, "kstash");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut ca, CA_VALIDITY_DAYS);
    let ca_cert = ca.self_signed(&ca_key).map_err(generate)?;
    let issuer = rcgen::Issuer::new(ca, ca_key);

    let result = CertFiles {
        ca_cert: out.join(CA_CERT_FILE),
        ca_key: out.join(CA_KEY_FILE),
        nodes: names
            .iter()
            .map(|n| {
                (
                    n.clone(),
                    out.join(format!("{n}.pem")),
                    out.join(format!("{n}-key.pem")),
                )
            })
            .collect(),
    };
    write_new(&result.ca_cert, ca_cert.pem().as_bytes(), false)?;
    write_new(
        &result.ca_key,
        Zeroizing::new(issuer.key().serialize_pem()).as_bytes(),
        true,
    )?;
    for (name, cert_path, key_path) in &result.nodes {
        let key = rcgen::KeyPair::generate().map_err(generate)?;
        let mut sans = vec![name.clone()];
        sans.extend(extra_names.iter().filter(|n| *n != name).cloned());
        let mut params = rcgen::CertificateParams::new(sans).map_err(generate)?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name.as_str());
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "kstash");
        params.is_ca = rcgen::IsCa::ExplicitNoCa;
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, NODE_VALIDITY_DAYS);
        let cert = params.signed_by(&key, &issuer).map_err(generate)?;
        write_new(cert_path, cert.pem().as_bytes(), false)?;
        write_new(
            key_path,
            Zeroizing::new(key.serialize_pem()).as_bytes(),
            true,
        )?;
    }
    Ok(result)
}

/// Valid from a little before now for `days`.
fn set_validity(params: &mut rcgen::CertificateParams, days: u64) {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + since_epoch.saturating_sub(BACKDATE);
    params.not_after = epoch + since_epoch + Duration::from_secs(days * 86_400);
}

fn create_dir(dir: &Path) -> Result<(), TlsError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|source| TlsError::Io {
        path: dir.to_owned(),
        source,
    })
}

/// Create `path` (failing if it exists) and write `bytes`; mode 0600 when
/// `private`, else 0644.
fn write_new(path: &Path, bytes: &[u8], private: bool) -> Result<(), TlsError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, if private { 0o600 } else { 0o644 });
    #[cfg(not(unix))]
    let _ = private;
    let io = |source: std::io::Error| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            TlsError::Exists(path.to_owned())
        } else {
            TlsError::Io {
                path: path.to_owned(),
                source,
            }
        }
    };
    let mut file = options.open(path).map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)
}

/// The host part of a `host:port` address (brackets of an IPv6 literal
/// removed): the name a peer's certificate must carry.
pub fn host_of(addr: &str) -> Option<&str> {
    let (host, port) = addr.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    let host = match host.strip_prefix('[') {
        Some(inner) => inner.strip_suffix(']')?,
        None if host.contains(':') => return None,
        None => host,
    };
    (!host.is_empty()).then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_of_addresses() {
        assert_eq!(host_of("kstash-1.kstash:7400"), Some("kstash-1.kstash"));
        assert_eq!(host_of("10.0.0.7:7400"), Some("10.0.0.7"));
        assert_eq!(host_of("[::1]:7400"), Some("::1"));
        assert_eq!(host_of("::1:7400"), None);
        assert_eq!(host_of("kstash-1"), None);
        assert_eq!(host_of(":7400"), None);
        assert_eq!(host_of("a:notaport"), None);
    }

    #[test]
    fn extra_names_go_on_every_node_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let names = ["kstash-0".to_string(), "kstash-1".to_string()];
        let extra = ["kstash.kstash.svc".to_string()];
        let files = make_cluster_certs_with(dir.path(), &names, &extra).unwrap();
        for (name, cert, _) in &files.nodes {
            let pem = std::fs::read(cert).unwrap();
            let der = rustls_pemfile::certs(&mut pem.as_slice())
                .next()
                .unwrap()
                .unwrap();
            // A dNSName is its ASCII bytes inside the DER.
            for san in [name.as_str(), "kstash.kstash.svc"] {
                assert!(
                    der.windows(san.len()).any(|w| w == san.as_bytes()),
                    "{name}'s certificate names {san}"
                );
            }
        }
        let bad = make_cluster_certs_with(&dir.path().join("b"), &names, &["no spaces".into()]);
        assert!(matches!(bad, Err(TlsError::BadName { .. })), "{bad:?}");
    }

    #[test]
    fn makes_certs_that_load_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("certs");
        let names = ["kstash-0.kstash".to_string(), "127.0.0.1".to_string()];
        let files = make_cluster_certs(&out, &names).unwrap();
        assert_eq!(files.nodes.len(), 2);
        for (_, cert, key) in &files.nodes {
            let tls = ClusterTls::load(&files.ca_cert, cert, key).unwrap();
            assert!(!format!("{tls:?}").contains("PRIVATE"));
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for key in [&files.ca_key, &files.nodes[0].2] {
                let mode = std::fs::metadata(key).unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o600, "{}", key.display());
            }
        }
        let before = std::fs::read(&files.ca_cert).unwrap();
        let again = make_cluster_certs(&out, &["other".to_string()]);
        assert!(matches!(again, Err(TlsError::Exists(_))), "{again:?}");
        assert_eq!(std::fs::read(&files.ca_cert).unwrap(), before);
        assert!(!out.join("other.pem").exists());
    }

    #[test]
    fn refuses_bad_and_clashing_names() {
        let dir = tempfile::tempdir().unwrap();
        for names in [
            vec![],
            vec!["ca".to_string()],
            vec!["a".to_string(), "a".to_string()],
            vec!["n".to_string(), "n-key".to_string()],
            vec!["no spaces".to_string()],
            vec!["../escape".to_string()],
        ] {
            let r = make_cluster_certs(dir.path(), &names);
            assert!(
                matches!(r, Err(TlsError::BadName { .. })),
                "{names:?}: {r:?}"
            );
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn refuses_a_key_of_another_certificate_and_a_foreign_ca() {
        let dir = tempfile::tempdir().unwrap();
        let a = make_cluster_certs(&dir.path().join("a"), &["n1".into(), "n2".into()]).unwrap();
        let b = make_cluster_certs(&dir.path().join("b"), &["n1".into()]).unwrap();
        let r = ClusterTls::load(&a.ca_cert, &a.nodes[0].1, &a.nodes[1].2);
        assert!(matches!(r, Err(TlsError::Invalid { .. })), "{r:?}");
        let r = ClusterTls::load(&a.ca_cert, &b.nodes[0].1, &b.nodes[0].2);
        assert!(matches!(r, Err(TlsError::Invalid { .. })), "{r:?}");
    }

    #[cfg(unix)]
    #[test]
    fn refuses_a_loose_key_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let f = make_cluster_certs(dir.path(), &["n1".into()]).unwrap();
        let key = &f.nodes[0].2;
        std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let r = ClusterTls::load(&f.ca_cert, &f.nodes[0].1, key);
        assert!(matches!(r, Err(TlsError::LooseKey(_))), "{r:?}");
        // Group-read only, as a Kubernetes Secret volume with fsGroup gives.
        std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o440)).unwrap();
        ClusterTls::load(&f.ca_cert, &f.nodes[0].1, key).unwrap();
    }
}
