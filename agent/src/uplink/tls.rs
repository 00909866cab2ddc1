//! TLS and credentials for the upstream connection, loaded once at config time
//! so that `weir config check` already reports a missing or unparsable file.
//!
//! The server is verified against the configured CA file only (not the system
//! store): an edge device talks to one known broker. Secrets never reach logs
//! or argv: [`Secret`]'s `Debug` is redacted and passwords come from a file or
//! an environment variable.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ClientConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A string that must not be printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: String) -> Self {
        Self(s)
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// MQTT username and password.
#[derive(Clone, Debug)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password.
    pub password: Secret,
}

/// A ready rustls client configuration and where it came from (for messages).
#[derive(Clone)]
pub struct TlsSettings {
    /// The CA file the server is verified against.
    pub ca_file: PathBuf,
    /// Whether a client certificate is presented (mutual TLS).
    pub client_auth: bool,
    /// The rustls configuration handed to rumqttc.
    pub config: Arc<ClientConfig>,
}

impl fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSettings")
            .field("ca_file", &self.ca_file)
            .field("client_auth", &self.client_auth)
            .finish_non_exhaustive()
    }
}

/// What is wrong with the TLS material; the message names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file has no usable PEM content of the expected kind.
    #[error("{path} holds no {what} in PEM format")]
    NoPem {
        /// The file.
        path: PathBuf,
        /// "certificate" or "private key".
        what: &'static str,
    },
    /// rustls refused the material (e.g. the key does not match the certificate).
    #[error("TLS setup failed: {0}")]
    Rustls(#[from] rustls::Error),
    /// A CA certificate could not be added to the trust store.
    #[error("{path}: unusable CA certificate: {detail}")]
    BadCa {
        /// The file.
        path: PathBuf,
        /// Why.
        detail: String,
    },
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoPem {
            path: path.to_path_buf(),
            what: "certificate",
        });
    }
    Ok(certs)
}

/// Builds the client configuration: trust `ca_file` only; present `cert_file`
/// and `key_file` when both are given (mutual TLS).
pub fn load(ca_file: &Path, client: Option<(&Path, &Path)>) -> Result<TlsSettings, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs(ca_file)? {
        roots.add(cert).map_err(|e| TlsError::BadCa {
            path: ca_file.to_path_buf(),
            detail: e.to_string(),
        })?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = match client {
        Some((cert_file, key_file)) => {
            let chain = certs(cert_file)?;
            let key =
                PrivateKeyDer::from_pem_slice(&read(key_file)?).map_err(|_| TlsError::NoPem {
                    path: key_file.to_path_buf(),
                    what: "private key",
                })?;
            builder.with_client_auth_cert(chain, key)?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(TlsSettings {
        ca_file: ca_file.to_path_buf(),
        client_auth: client.is_some(),
        config: Arc::new(config),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_shows_in_debug_output() {
        let c = Credentials {
            username: "u".into(),
            password: Secret::new("hunter2".into()),
        };
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("***"));
    }

    #[test]
    fn a_missing_ca_file_is_named() {
        let e = load(Path::new("/nonexistent/ca.crt"), None).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/ca.crt"), "{e}");
    }

    #[test]
    fn a_file_without_certificates_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ca.crt");
        std::fs::write(&p, "not a certificate\n").unwrap();
        let e = load(&p, None).unwrap_err();
        assert!(
            matches!(
                e,
                TlsError::NoPem {
                    what: "certificate",
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("ca.crt"));
    }
}
