//! TLS for Parley's ports (rustls, with the ring provider).
//!
//! - [`ReloadingCert`]: a certificate chain and key read from PEM files, read again when the
//!   files change (checked at most once per [`RECHECK_EVERY`], on a handshake), so a renewed
//!   certificate — cert-manager rewriting a Kubernetes secret, say — is served without a restart.
//!   A file that does not parse, or a key that does not match, keeps the old pair and is logged.
//! - [`server_config`] and [`client_config`]: the configurations of the client port (no client
//!   certificates) and of the cluster port (mutual TLS: each node presents its certificate and
//!   accepts only peers whose certificates the cluster's CA signed).
//! - [`ServerStream`]: an accepted connection that does its handshake as it is first read, so
//!   a slow handshake never holds up the accept loop (and the edge's handshake deadline covers it).
//! - [`Connector`]: TCP then TLS, for tonic channels to other nodes.

mod connect;
mod stream;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

use parking_lot::Mutex;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use rustls::ClientConfig;
use rustls::RootCertStore;
use rustls::ServerConfig;
use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use rustls::server::ClientHello;
use rustls::server::ResolvesServerCert;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;

pub use connect::Connector;
pub use connect::connect;
pub use rustls;
pub use stream::ServerStream;
pub use tokio_rustls::TlsAcceptor;

/// How often, at most, the certificate files are looked at again.
pub const RECHECK_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no PEM private key")]
    NoKey { path: PathBuf },
    #[error("{what}: {error}")]
    Rustls { what: String, error: rustls::Error },
    #[error("no trusted certificate authority: {0}")]
    NoRoots(String),
}

/// The crypto every configuration here uses.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate chain and its key, from two PEM files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// What was last read, and when the files were last looked at.
struct Loaded {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    key: Arc<CertifiedKey>,
    checked: Instant,
}

/// The certificate a server presents (or a node presents as a client), read again when its
/// files change.
pub struct ReloadingCert {
    files: CertFiles,
    // A blocking lock: held to compare and swap, never across an await.
    loaded: Mutex<Loaded>,
}

impl std::fmt::Debug for ReloadingCert {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ReloadingCert")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Read {
        path: path.to_owned(),
        error,
    })
}

fn certified_key(
    files: &CertFiles,
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: files.cert.clone(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| TlsError::NoKey {
        path: files.key.clone(),
    })?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|error| TlsError::Rustls {
        what: format!(
            "the key {} for the certificate {}",
            files.key.display(),
            files.cert.display()
        ),
        error,
    })
}

impl ReloadingCert {
    /// Reads the files now; an error here is a configuration error to stop on.
    pub fn load(files: CertFiles) -> Result<Arc<ReloadingCert>, TlsError> {
        let cert_pem = read(&files.cert)?;
        let key_pem = read(&files.key)?;
        let key = Arc::new(certified_key(&files, &cert_pem, &key_pem)?);
        Ok(Arc::new(ReloadingCert {
            files,
            loaded: Mutex::new(Loaded {
                cert_pem,
                key_pem,
                key,
                checked: Instant::now(),
            }),
        }))
    }

    /// The pair to present now, after reading the files again if they are due a look and
    /// have changed.
    pub fn current(&self) -> Arc<CertifiedKey> {
        let mut loaded = self.loaded.lock();
        if loaded.checked.elapsed() >= RECHECK_EVERY {
            loaded.checked = Instant::now();
            self.reload(&mut loaded);
        }
        loaded.key.clone()
    }

    fn reload(&self, loaded: &mut Loaded) {
        // Small files, read at most once a second: cheaper than a watcher task, and it sees a
        // Kubernetes secret's symlink swap as any other change.
        let (Ok(cert_pem), Ok(key_pem)) = (read(&self.files.cert), read(&self.files.key)) else {
            tracing::warn!(files = ?self.files, "certificate files unreadable; keeping the loaded pair");
            return;
        };
        if cert_pem == loaded.cert_pem && key_pem == loaded.key_pem {
            return;
        }
        match certified_key(&self.files, &cert_pem, &key_pem) {
            Ok(key) => {
                tracing::info!(cert = %self.files.cert.display(), "certificate reloaded");
                loaded.key = Arc::new(key);
                loaded.cert_pem = cert_pem;
                loaded.key_pem = key_pem;
            }
            // A cert written before its key (or half written) fails to match; the next look
            // takes the pair once both are in place.
            Err(error) => {
                tracing::warn!(%error, "new certificate files refused; keeping the loaded pair")
            }
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl ResolvesClientCert for ReloadingCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The certificate authorities in a PEM file.
pub fn roots_from_file(path: &Path) -> Result<RootCertStore, TlsError> {
    let pem = read(path)?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok) {
        roots.add(cert).map_err(|error| TlsError::Rustls {
            what: format!("a certificate in {}", path.display()),
            error,
        })?;
    }
    if roots.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(roots)
}

/// The system's certificate authorities (`SSL_CERT_FILE` and `SSL_CERT_DIR` are honoured).
pub fn system_roots() -> Result<RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let errors: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
        return Err(TlsError::NoRoots(errors.join("; ")));
    }
    Ok(roots)
}

/// A server's configuration: it presents `cert`; with `client_roots` it takes only clients
/// presenting a certificate those authorities signed (mutual TLS). Offers HTTP/2 and HTTP/1.1.
pub fn server_config(
    cert: Arc<ReloadingCert>,
    client_roots: Option<RootCertStore>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|error| TlsError::Rustls {
            what: "TLS versions".into(),
            error,
        })?;
    let builder = match client_roots {
        Some(roots) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|error| TlsError::Rustls {
                    what: "the client certificate verifier".into(),
                    error: rustls::Error::General(error.to_string()),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A client's configuration: it trusts `roots`; with `identity` it presents that certificate
/// (mutual TLS). `alpn` names the protocols it asks for (`h2` for gRPC, `http/1.1` for a
/// WebSocket).
pub fn client_config(
    roots: RootCertStore,
    identity: Option<Arc<ReloadingCert>>,
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|error| TlsError::Rustls {
            what: "TLS versions".into(),
            error,
        })?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some(identity) => builder.with_client_cert_resolver(identity),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests;
