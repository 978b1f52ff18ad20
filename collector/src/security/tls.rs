//! TLS for the collector's listeners (rustls): the server certificate and key from PEM files,
//! optionally client certificates verified against a CA bundle, and reloading when the files
//! change (cert-manager rotates them in place). A reload swaps the configuration new handshakes
//! use; connections already established keep their session, so filter streams survive it.

use crate::config::TlsConfig;
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::watch;

/// Why a TLS configuration could not be loaded; names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("{what} {path}: cannot read: {source}")]
    Read {
        /// Which file (`certificate`, `key`, `client CA bundle`).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// A file holds no usable PEM item of the expected kind.
    #[error("{what} {path}: {reason}")]
    Invalid {
        /// Which file.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The identity a TLS client proved with its certificate (the leaf of the chain it presented,
/// verified against the configured CA).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCertificate {
    /// The subject, RFC 4514 style (`CN=ingress,O=example`).
    pub subject: String,
    /// The subject's common name, when it has one.
    pub common_name: Option<String>,
    /// DNS subject alternative names.
    pub dns_names: Vec<String>,
    /// URI subject alternative names (SPIFFE ids).
    pub uris: Vec<String>,
    /// Hex SHA-256 of the certificate.
    pub fingerprint: String,
}

impl PeerCertificate {
    /// Parses the leaf certificate; `None` when it is not an X.509 certificate (rustls already
    /// verified it, so this does not happen in practice).
    pub fn from_der(der: &[u8]) -> Option<PeerCertificate> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let subject = cert.subject().to_string();
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_string);
        let mut dns_names = Vec::new();
        let mut uris = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    x509_parser::extensions::GeneralName::DNSName(d) => {
                        dns_names.push(d.to_string())
                    }
                    x509_parser::extensions::GeneralName::URI(u) => uris.push(u.to_string()),
                    _ => {}
                }
            }
        }
        Some(PeerCertificate {
            subject,
            common_name,
            dns_names,
            uris,
            fingerprint: hex(&Sha256::digest(der)),
        })
    }

    /// The names a credential's `certificate` pattern is matched against: URI SANs, DNS SANs,
    /// then the common name.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.uris
            .iter()
            .chain(&self.dns_names)
            .map(String::as_str)
            .chain(self.common_name.as_deref())
    }

    /// The most specific name, for logs and the audit trail.
    pub fn display_name(&self) -> &str {
        self.names().next().unwrap_or(&self.subject)
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

fn invalid(what: &'static str, path: &Path, reason: impl Into<String>) -> TlsError {
    TlsError::Invalid {
        what,
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// The files' contents, to notice a change.
fn fingerprint_files(config: &TlsConfig) -> Vec<u8> {
    let mut h = Sha256::new();
    for path in [
        Some(&config.cert),
        Some(&config.key),
        config.client_ca.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        h.update(std::fs::read(path).unwrap_or_default());
        h.update([0]);
    }
    h.finalize().to_vec()
}

/// What each listener speaks, for ALPN: gRPC is HTTP/2 only; the API is served over HTTP/1.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocols {
    /// `h2`.
    Http2,
    /// `http/1.1`.
    Http1,
}

/// Builds a rustls server configuration from the files.
pub fn server_config(
    config: &TlsConfig,
    protocols: Protocols,
) -> Result<rustls::ServerConfig, TlsError> {
    let cert_pem = read("certificate", &config.cert)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| invalid("certificate", &config.cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(invalid(
            "certificate",
            &config.cert,
            "holds no PEM CERTIFICATE",
        ));
    }
    let key_pem = read("key", &config.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| invalid("key", &config.key, format!("no PEM private key: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid("certificate", &config.cert, e.to_string()))?;
    let builder = match &config.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let pem = read("client CA bundle", ca)?;
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| invalid("client CA bundle", ca, e.to_string()))?;
                roots
                    .add(cert)
                    .map_err(|e| invalid("client CA bundle", ca, e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(invalid("client CA bundle", ca, "holds no PEM CERTIFICATE"));
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider));
            let verifier = if config.require_client_cert {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier
                .build()
                .map_err(|e| invalid("client CA bundle", ca, e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut server = builder.with_single_cert(certs, key).map_err(|e| {
        invalid(
            "key",
            &config.key,
            format!("does not match the certificate: {e}"),
        )
    })?;
    server.alpn_protocols = match protocols {
        Protocols::Http2 => vec![b"h2".to_vec()],
        Protocols::Http1 => vec![b"http/1.1".to_vec()],
    };
    Ok(server)
}

/// A listener's TLS configuration, reloaded when its files change.
pub struct ReloadingTls {
    config: TlsConfig,
    protocols: Protocols,
    what: &'static str,
    current: RwLock<(Arc<rustls::ServerConfig>, Vec<u8>)>,
    reloads: std::sync::atomic::AtomicU64,
}

impl ReloadingTls {
    /// Loads the files now; `what` names the listener in logs.
    pub fn load(
        config: &TlsConfig,
        protocols: Protocols,
        what: &'static str,
    ) -> Result<Arc<ReloadingTls>, TlsError> {
        let server = server_config(config, protocols)?;
        Ok(Arc::new(ReloadingTls {
            config: config.clone(),
            protocols,
            what,
            current: RwLock::new((Arc::new(server), fingerprint_files(config))),
            reloads: std::sync::atomic::AtomicU64::new(0),
        }))
    }

    /// The configuration new handshakes use.
    pub fn current(&self) -> Arc<rustls::ServerConfig> {
        match self.current.read() {
            Ok(c) => Arc::clone(&c.0),
            Err(poisoned) => Arc::clone(&poisoned.into_inner().0),
        }
    }

    /// How many times the files were reloaded.
    pub fn reloads(&self) -> u64 {
        self.reloads.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Reloads when the files changed. A broken new set (a key not yet written beside its
    /// certificate, say) keeps the old configuration and says why; the next check retries.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let files = fingerprint_files(&self.config);
        let unchanged = self.current.read().map(|c| c.1 == files).unwrap_or(false);
        if unchanged {
            return Ok(false);
        }
        let server = server_config(&self.config, self.protocols)?;
        if let Ok(mut c) = self.current.write() {
            *c = (Arc::new(server), files);
        }
        self.reloads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(true)
    }

    /// Checks the files every `reload_interval` until `stop`.
    pub async fn watch(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let interval = self.config.reload_interval.0.max(Duration::from_millis(50));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            match self.reload_if_changed() {
                Ok(true) => {
                    tracing::info!(listener = self.what, "TLS certificate and key reloaded")
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(listener = self.what, error = %e, "TLS files changed but cannot be loaded; keeping the previous ones")
                }
            }
        }
    }
}
