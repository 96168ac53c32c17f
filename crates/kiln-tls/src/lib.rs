//! TLS trust as docker and podman have it: the system's trust store (honouring `SSL_CERT_FILE`
//! and `SSL_CERT_DIR`), plus per-host CAs and client certificates in `certs.d` directories.
//!
//! For a connection to `HOST[:PORT]`, the first of these that holds a `HOST[:PORT]` directory
//! is used (as containers/image looks them up; docker only knows the last):
//! `$XDG_CONFIG_HOME/containers/certs.d` (else `~/.config/containers/certs.d`),
//! `/etc/containers/certs.d`, `/etc/docker/certs.d`. `KILN_CERTS_D` (a `:`-separated list)
//! replaces that list. In the directory:
//!
//! * every `*.crt` is a CA (PEM, one or more certificates), trusted for this host on top of the
//!   system's store;
//! * `NAME.cert` with `NAME.key` beside it is a client certificate (chain) and its key; one
//!   without the other is an error. With several pairs, the first by name is used.
//!
//! The system store is read once per process. When it is empty (a minimal container with no
//! `ca-certificates`) and neither `SSL_CERT_FILE` nor `SSL_CERT_DIR` is set, the Mozilla root
//! list compiled into kiln is used instead, so such a machine still reaches public registries.
//!
//! Its own crate because two kinds of clients use it: kiln-registry (pull, push, login, the
//! build cache) and kiln-exec's `ADD <url>`, which knows no registry.

#![deny(missing_docs)]

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};

/// The environment variable that replaces the list of `certs.d` directories (`:`-separated).
pub const CERTS_D_ENV: &str = "KILN_CERTS_D";

/// The largest certificate or key file read from a `certs.d` directory.
const FILE_MAX: u64 = 4 << 20;

/// Why the TLS settings for a host could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file of a `certs.d` directory (or the directory) could not be read.
    #[error("{}: {source}", .path.display())]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// What reading it said.
        #[source]
        source: io::Error,
    },
    /// A CA or client certificate file that holds no usable certificate.
    #[error("{}: {reason}", .path.display())]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A client key that cannot be used (unreadable, unsupported, or not the certificate's).
    #[error("{}: {reason}", .path.display())]
    BadKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Half of a client certificate pair.
    #[error("{}: {} is missing beside it (a client certificate needs NAME.cert and NAME.key)", .found.display(), .missing.display())]
    Unpaired {
        /// The file that is there.
        found: PathBuf,
        /// The one that should be beside it.
        missing: PathBuf,
    },
    /// `SSL_CERT_FILE` or `SSL_CERT_DIR` is set but gives no certificate.
    #[error("the trust store named by SSL_CERT_FILE/SSL_CERT_DIR holds no usable certificate{}", detail_text(.detail))]
    SystemStore {
        /// What the loader reported.
        detail: String,
    },
}

fn detail_text(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(" ({detail})")
    }
}

/// Certificates from a host's `certs.d` directory.
#[derive(Debug, Clone, Default)]
pub struct HostCerts {
    /// The directory they came from; `None` when no `certs.d` has one for the host.
    pub dir: Option<PathBuf>,
    /// CAs trusted for this host on top of the system's.
    pub cas: Vec<Certificate<'static>>,
    /// The client certificate chain and key presented to the host, if any.
    pub client: Option<ClientCert>,
}

/// The `certs.d` directories looked in, in order: `KILN_CERTS_D` when set, else the user's
/// `containers/certs.d`, `/etc/containers/certs.d` and `/etc/docker/certs.d`.
pub fn certs_d_roots() -> Vec<PathBuf> {
    if let Some(list) = std::env::var_os(CERTS_D_ENV).filter(|v| !v.is_empty()) {
        return std::env::split_paths(&list)
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
    }
    let mut roots = Vec::new();
    let config_home = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|home| PathBuf::from(home).join(".config"))
        });
    if let Some(config_home) = config_home {
        roots.push(config_home.join("containers/certs.d"));
    }
    roots.push(PathBuf::from("/etc/containers/certs.d"));
    roots.push(PathBuf::from("/etc/docker/certs.d"));
    roots
}

/// Whether `host_port` can name a directory: one path component, not `.` or `..`.
fn is_directory_name(host_port: &str) -> bool {
    !host_port.is_empty()
        && host_port != "."
        && host_port != ".."
        && !host_port.contains(['/', '\\', '\0'])
}

/// The first `ROOT/HOST[:PORT]` directory of `roots` that exists.
pub fn host_dir(roots: &[PathBuf], host_port: &str) -> Option<PathBuf> {
    if !is_directory_name(host_port) {
        return None;
    }
    roots
        .iter()
        .map(|root| root.join(host_port))
        .find(|dir| dir.is_dir())
}

/// Reads a file of a `certs.d` directory, at most [`FILE_MAX`] bytes.
fn read_small(path: &Path) -> Result<Vec<u8>, TlsError> {
    use std::io::Read as _;
    let read_error = |source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut bytes = Vec::new();
    file.take(FILE_MAX.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > FILE_MAX {
        return Err(TlsError::BadCertificate {
            path: path.to_path_buf(),
            reason: format!("larger than {FILE_MAX} bytes"),
        });
    }
    Ok(bytes)
}

/// Every PEM certificate of a file; none is an error.
fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read_small(path)?;
    let bad = |reason: String| TlsError::BadCertificate {
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(bad(
            "no certificate in it (expected PEM: -----BEGIN CERTIFICATE-----)".to_string(),
        ));
    }
    Ok(certs)
}

/// Reads a host's `certs.d` directory (see the module docs).
pub fn read_host_dir(dir: &Path) -> Result<HostCerts, TlsError> {
    let entries = std::fs::read_dir(dir).map_err(|source| TlsError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| TlsError::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    let mut found = HostCerts {
        dir: Some(dir.to_path_buf()),
        ..HostCerts::default()
    };
    for name in &names {
        let path = dir.join(name);
        if let Some(stem) = name.strip_suffix(".crt") {
            if stem.is_empty() {
                continue;
            }
            for der in read_certificates(&path)? {
                // Checked here, so a broken CA file is named instead of silently skipped.
                let mut check = rustls::RootCertStore::empty();
                check
                    .add(der.clone())
                    .map_err(|e| TlsError::BadCertificate {
                        path: path.clone(),
                        reason: format!("not a usable CA certificate: {e}"),
                    })?;
                found
                    .cas
                    .push(Certificate::from_der(der.as_ref()).to_owned());
            }
        } else if let Some(stem) = name.strip_suffix(".cert") {
            let key_name = format!("{stem}.key");
            if !names.contains(&key_name) {
                return Err(TlsError::Unpaired {
                    found: path,
                    missing: dir.join(key_name),
                });
            }
            if found.client.is_none() {
                found.client = Some(client_cert(&path, &dir.join(key_name))?);
            }
        } else if let Some(stem) = name.strip_suffix(".key") {
            let cert_name = format!("{stem}.cert");
            if !names.contains(&cert_name) {
                return Err(TlsError::Unpaired {
                    found: path,
                    missing: dir.join(cert_name),
                });
            }
        }
    }
    Ok(found)
}

/// A client certificate chain and its key, checked to belong together (rustls would refuse
/// them later, where it cannot say which files they were).
fn client_cert(cert_path: &Path, key_path: &Path) -> Result<ClientCert, TlsError> {
    let chain = read_certificates(cert_path)?;
    let key_bytes = read_small(key_path)?;
    let bad_key = |reason: String| TlsError::BadKey {
        path: key_path.to_path_buf(),
        reason,
    };
    let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| {
        bad_key(format!(
            "no private key in it (expected PEM: PKCS#8, PKCS#1 or SEC1): {e}"
        ))
    })?;
    let provider = rustls::crypto::ring::default_provider();
    rustls::sign::CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider).map_err(
        |e| {
            bad_key(format!(
                "cannot be used with {}: {e}",
                cert_path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            ))
        },
    )?;
    let key = PrivateKey::from_pem(&key_bytes)
        .map_err(|e| bad_key(format!("no private key in it: {e}")))?;
    let chain: Vec<Certificate<'static>> = chain
        .iter()
        .map(|der| Certificate::from_der(der.as_ref()).to_owned())
        .collect();
    Ok(ClientCert::new_with_certs(&chain, key))
}

/// The system's trust anchors, or `None` when it has none and the compiled-in list applies.
type SystemRoots = Option<Arc<Vec<Certificate<'static>>>>;

/// The system's trust store, read once per process.
fn system_roots() -> Result<SystemRoots, TlsError> {
    static ROOTS: OnceLock<Result<SystemRoots, String>> = OnceLock::new();
    ROOTS
        .get_or_init(load_system_roots)
        .clone()
        .map_err(|detail| TlsError::SystemStore { detail })
}

fn load_system_roots() -> Result<SystemRoots, String> {
    let loaded = rustls_native_certs::load_native_certs();
    let named = std::env::var_os("SSL_CERT_FILE").is_some_and(|v| !v.is_empty())
        || std::env::var_os("SSL_CERT_DIR").is_some_and(|v| !v.is_empty());
    if loaded.certs.is_empty() {
        if named {
            let detail: Vec<String> = loaded.errors.iter().map(|e| e.to_string()).collect();
            return Err(detail.join("; "));
        }
        return Ok(None);
    }
    Ok(Some(Arc::new(
        loaded
            .certs
            .iter()
            .map(|der| Certificate::from_der(der.as_ref()).to_owned())
            .collect(),
    )))
}

/// The TLS settings for connections to `host_port` (`host` or `host:port`, as in the URL):
/// the system's trust store plus the host's `certs.d` CAs, and its client certificate. With
/// `verify` off the server's certificate is not checked, but a client certificate is still
/// presented. `certs_d` is the list of `certs.d` directories ([`certs_d_roots`] gives the
/// usual one).
pub fn tls_config_in(
    certs_d: &[PathBuf],
    host_port: &str,
    verify: bool,
) -> Result<TlsConfig, TlsError> {
    let host = match host_dir(certs_d, host_port) {
        Some(dir) => read_host_dir(&dir)?,
        None => HostCerts::default(),
    };
    let mut builder = TlsConfig::builder()
        .disable_verification(!verify)
        .client_cert(host.client);
    if verify {
        let roots = match (system_roots()?, host.cas.is_empty()) {
            (Some(system), true) => RootCerts::Specific(system),
            (Some(system), false) => {
                let mut all = Vec::with_capacity(system.len().saturating_add(host.cas.len()));
                all.extend(system.iter().cloned());
                all.extend(host.cas);
                RootCerts::from(all)
            }
            (None, true) => RootCerts::WebPki,
            (None, false) => RootCerts::from(host.cas),
        };
        builder = builder.root_certs(roots);
    }
    Ok(builder.build())
}

/// [`tls_config_in`] with the usual `certs.d` directories, for any https download (`ADD` of
/// a URL): `host_port` is the URL's authority without user information.
pub fn tls_config(host_port: &str, verify: bool) -> Result<TlsConfig, TlsError> {
    tls_config_in(&certs_d_roots(), host_port, verify)
}

/// The `host[:port]` of a URL, as `certs.d` directories are named (lowercased, without
/// user information); empty when there is none.
pub fn url_host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let authority = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    authority.to_ascii_lowercase()
}

/// The rustls error inside a ureq error, if it is one.
fn rustls_error(error: &ureq::Error) -> Option<&rustls::Error> {
    match error {
        ureq::Error::Rustls(e) => Some(e),
        ureq::Error::Io(e) => e.get_ref().and_then(|inner| inner.downcast_ref()),
        _ => None,
    }
}

/// Where a CA or client certificate for `host_port` goes, for messages.
fn certs_d_hint(host_port: &str) -> String {
    let roots = certs_d_roots();
    let shown: Vec<String> = roots
        .iter()
        .filter(|root| root.starts_with("/etc") || std::env::var_os(CERTS_D_ENV).is_some())
        .map(|root| root.join(host_port).display().to_string())
        .collect();
    match shown.as_slice() {
        [] => format!("certs.d/{host_port}/"),
        [one] => format!("{one}/"),
        [first, rest @ ..] => format!("{first}/ (or {}/)", rest.join("/ or ")),
    }
}

/// A message for a TLS failure talking to `url` that says what is wrong and how to fix it;
/// `None` when the error is not one kiln explains (the caller says what it says).
pub fn explain(error: &ureq::Error, url: &str) -> Option<String> {
    use rustls::{AlertDescription, CertificateError, Error};
    let host_port = url_host_port(url);
    let text = rustls_error(error)?;
    let message = match text {
        Error::InvalidCertificate(CertificateError::UnknownIssuer) => format!(
            "the server's certificate is signed by a certificate authority (CA) kiln does not \
             trust (invalid peer certificate: UnknownIssuer). To trust that CA, add it to the \
             system's trust store (update-ca-certificates, or SSL_CERT_FILE=/path/to/bundle.pem), \
             or put it as ca.crt in {}",
            certs_d_hint(&host_port)
        ),
        Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => format!(
            "the server's certificate is not issued for {host_port} ({text}); connect with \
             the name the certificate has, or have it reissued with this one"
        ),
        Error::InvalidCertificate(
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. },
        ) => format!(
            "the server's certificate is outside its validity period ({text}); check this \
             machine's clock, or renew the certificate"
        ),
        Error::InvalidCertificate(_) => format!("the server's certificate is refused: {text}"),
        Error::AlertReceived(
            AlertDescription::CertificateRequired
            | AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateUnknown
            | AlertDescription::AccessDenied,
        ) => format!(
            "the server refused the connection ({text}): it wants a client certificate it \
             accepts; put one as client.cert with its key client.key in {}",
            certs_d_hint(&host_port)
        ),
        _ => return None,
    };
    Some(message)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use std::process::Command;

    /// A CA and a certificate it signs for 127.0.0.1, and a client certificate, made with
    /// openssl (which the tests need: they fail when it is missing).
    struct Pki {
        dir: tempfile::TempDir,
    }

    fn openssl(dir: &Path, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("the TLS tests need openssl: apt-get install openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    impl Pki {
        fn new() -> Pki {
            let dir = tempfile::tempdir().unwrap();
            let d = dir.path();
            let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
            let mut args = vec!["req", "-x509", "-nodes", "-days", "2"];
            args.extend(ec);
            args.extend([
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-subj",
                "/CN=kiln test CA",
            ]);
            openssl(d, &args);
            let mut args = vec!["req", "-nodes"];
            args.extend(ec);
            args.extend([
                "-keyout",
                "client.key",
                "-out",
                "client.csr",
                "-subj",
                "/CN=kiln client",
            ]);
            openssl(d, &args);
            // Version 3 with extensions: webpki refuses version 1 certificates.
            std::fs::write(
                d.join("client.ext"),
                "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n",
            )
            .unwrap();
            openssl(
                d,
                &[
                    "x509",
                    "-req",
                    "-in",
                    "client.csr",
                    "-CA",
                    "ca.crt",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-days",
                    "2",
                    "-extfile",
                    "client.ext",
                    "-out",
                    "client.cert",
                ],
            );
            Pki { dir }
        }

        fn file(&self, name: &str) -> Vec<u8> {
            std::fs::read(self.dir.path().join(name)).unwrap()
        }
    }

    fn certs_d(files: &[(&str, &[u8])]) -> (tempfile::TempDir, PathBuf) {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("127.0.0.1:5000");
        std::fs::create_dir(&dir).unwrap();
        for (name, content) in files {
            std::fs::write(dir.join(name), content).unwrap();
        }
        (root, dir)
    }

    #[test]
    fn a_host_directory_gives_its_cas_and_client_certificate() {
        let pki = Pki::new();
        let (_root, dir) = certs_d(&[
            ("ca.crt", &pki.file("ca.crt")),
            ("client.cert", &pki.file("client.cert")),
            ("client.key", &pki.file("client.key")),
            ("README", b"ignored"),
        ]);
        let host = read_host_dir(&dir).unwrap();
        assert_eq!(host.cas.len(), 1);
        let client = host.client.unwrap();
        assert_eq!(client.certs().len(), 1);
        assert_eq!(host.dir.as_deref(), Some(dir.as_path()));
    }

    #[test]
    fn the_first_certs_d_with_the_host_wins() {
        let (first, _) = certs_d(&[]);
        let (second, _) = certs_d(&[]);
        let none = tempfile::tempdir().unwrap();
        let roots = vec![
            none.path().to_path_buf(),
            first.path().to_path_buf(),
            second.path().to_path_buf(),
        ];
        assert_eq!(
            host_dir(&roots, "127.0.0.1:5000"),
            Some(first.path().join("127.0.0.1:5000"))
        );
        assert_eq!(host_dir(&roots, "127.0.0.1:5001"), None);
        // Never a path outside the root.
        for bad in ["", ".", "..", "../x", "a/b"] {
            assert_eq!(host_dir(&roots, bad), None, "{bad:?}");
        }
    }

    #[test]
    fn half_a_client_pair_is_an_error_naming_the_missing_file() {
        let pki = Pki::new();
        let (_root, dir) = certs_d(&[("client.cert", &pki.file("client.cert"))]);
        let e = read_host_dir(&dir).unwrap_err().to_string();
        assert!(e.contains("client.key is missing"), "{e}");
        let (_root, dir) = certs_d(&[("me.key", &pki.file("client.key"))]);
        let e = read_host_dir(&dir).unwrap_err().to_string();
        assert!(e.contains("me.cert is missing"), "{e}");
    }

    #[test]
    fn a_key_that_is_not_the_certificates_is_refused_before_ureq_sees_it() {
        let pki = Pki::new();
        // The CA's key with the client's certificate: ureq would panic on this pair.
        let (_root, dir) = certs_d(&[
            ("client.cert", &pki.file("client.cert")),
            ("client.key", &pki.file("ca.key")),
        ]);
        let e = read_host_dir(&dir).unwrap_err();
        assert!(matches!(e, TlsError::BadKey { .. }), "{e}");
        assert!(e.to_string().contains("client.key"), "{e}");
        let (_root, dir) = certs_d(&[
            ("client.cert", &pki.file("client.cert")),
            ("client.key", b"not a key"),
        ]);
        assert!(matches!(
            read_host_dir(&dir).unwrap_err(),
            TlsError::BadKey { .. }
        ));
    }

    #[test]
    fn a_ca_file_without_a_certificate_is_named() {
        let (_root, dir) = certs_d(&[("ca.crt", b"hello")]);
        let e = read_host_dir(&dir).unwrap_err();
        assert!(matches!(e, TlsError::BadCertificate { .. }), "{e}");
        assert!(e.to_string().contains("ca.crt"), "{e}");
        let garbage = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let (_root, dir) = certs_d(&[("ca.crt", garbage)]);
        assert!(read_host_dir(&dir).is_err());
    }

    #[test]
    fn the_config_trusts_the_hosts_ca_and_presents_its_client_certificate() {
        let pki = Pki::new();
        let (root, _) = certs_d(&[
            ("ca.crt", &pki.file("ca.crt")),
            ("client.cert", &pki.file("client.cert")),
            ("client.key", &pki.file("client.key")),
        ]);
        let roots = vec![root.path().to_path_buf()];
        let config = tls_config_in(&roots, "127.0.0.1:5000", true).unwrap();
        assert!(config.client_cert().is_some());
        let RootCerts::Specific(certs) = config.root_certs() else {
            panic!("expected specific roots");
        };
        let ca = CertificateDer::from_pem_slice(&pki.file("ca.crt")).unwrap();
        assert!(certs.iter().any(|c| c.der() == ca.as_ref()));
        // Another host gets neither.
        let other = tls_config_in(&roots, "127.0.0.1:5001", true).unwrap();
        assert!(other.client_cert().is_none());
        // Without verification, the client certificate still goes.
        let unverified = tls_config_in(&roots, "127.0.0.1:5000", false).unwrap();
        assert!(unverified.disable_verification() && unverified.client_cert().is_some());
    }

    #[test]
    fn url_hosts_name_directories() {
        assert_eq!(
            url_host_port("https://H.example:8443/x?y"),
            "h.example:8443"
        );
        assert_eq!(url_host_port("https://u:pw@h/x"), "h");
        assert_eq!(url_host_port("https://[::1]:5000/v2/"), "[::1]:5000");
        assert_eq!(url_host_port("127.0.0.1:5000"), "127.0.0.1:5000");
    }

    #[test]
    fn an_unknown_issuer_names_both_ways_to_trust_the_ca() {
        let inner = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let error = ureq::Error::Io(io::Error::new(io::ErrorKind::InvalidData, inner));
        let message = explain(&error, "https://127.0.0.1:5000/v2/").unwrap();
        assert!(message.contains("certificate authority"), "{message}");
        assert!(message.contains("UnknownIssuer"), "{message}");
        assert!(message.contains("SSL_CERT_FILE"), "{message}");
        assert!(message.contains("certs.d/127.0.0.1:5000/"), "{message}");
        assert!(!message.contains("tls-verify"), "{message}");
        let required = ureq::Error::Rustls(rustls::Error::AlertReceived(
            rustls::AlertDescription::CertificateRequired,
        ));
        let message = explain(&required, "https://h:1/").unwrap();
        assert!(message.contains("client.cert"), "{message}");
        assert!(explain(&ureq::Error::HostNotFound, "https://h/").is_none());
    }
}
