//! Node-to-node authentication: with a cluster secret (`parley run --cluster-secret`), every
//! call of the cluster's gRPC API carries it in `x-parley-cluster-secret`, and a node refuses
//! calls without it (UNAUTHENTICATED). Without a secret nothing is sent or checked.
//!
//! With cluster TLS (`parley run --cluster-ca --cluster-cert --cluster-key`), every connection
//! between nodes is mutual TLS: a node serves its certificate and takes only peers presenting
//! one the cluster's CA signed, and connects to others the same way ([`channel`]). A node's
//! certificate must carry the DNS name [`NODE_NAME`]: it is what a node checks of the one it
//! called, whatever address it reached it at (pods' addresses come and go).
//!
//! Both belong to the process: every node of one cluster has the same, and a process is one
//! node (or, in tests, several nodes of one cluster), so each is set once at start
//! ([`set_cluster_secret`], [`set_cluster_tls`]) rather than threaded through every client.

use std::sync::Arc;
use std::sync::OnceLock;

use parley_tls::TlsAcceptor;
use parley_tls::rustls::ClientConfig;
use parley_tls::rustls::ServerConfig;

use tonic::Request;
use tonic::Status;
use tonic::metadata::AsciiMetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::transport::Endpoint;

/// The metadata key the secret travels in.
pub const CLUSTER_SECRET_KEY: &str = "x-parley-cluster-secret";

static SECRET: OnceLock<AsciiMetadataValue> = OnceLock::new();
static TLS: OnceLock<ClusterTls> = OnceLock::new();

/// The name every node's cluster certificate carries (a DNS subject alternative name).
pub const NODE_NAME: &str = "parley-node";

/// How nodes of this cluster speak TLS to each other.
#[derive(Clone, Debug)]
pub struct ClusterTls {
    /// Presents the node's certificate and requires one from every caller.
    pub server: Arc<ServerConfig>,
    /// Trusts the cluster's CA and presents the node's certificate.
    pub client: Arc<ClientConfig>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterSecretError {
    #[error("the cluster secret must be 16 to 256 visible ASCII characters")]
    Malformed,
    #[error("the cluster secret is already set to another value")]
    AlreadySet,
}

/// Sets the process's cluster TLS; once only.
pub fn set_cluster_tls(tls: ClusterTls) -> Result<(), ClusterTls> {
    TLS.set(tls)
}

/// What the cluster port accepts with: TLS when cluster TLS is set.
pub fn cluster_acceptor() -> Option<TlsAcceptor> {
    TLS.get().map(|tls| TlsAcceptor::from(tls.server.clone()))
}

/// A channel to the node at `address` (`host:port`) that connects on first use, over TLS when
/// cluster TLS is set; `configure` sets its timeouts.
pub fn channel(
    address: &str,
    configure: impl FnOnce(Endpoint) -> Endpoint,
) -> Result<ClusterChannel, tonic::transport::Error> {
    let endpoint = configure(Endpoint::from_shared(format!("http://{address}"))?);
    let channel = match TLS.get() {
        Some(tls) => {
            let connector = parley_tls::Connector::new(tls.client.clone()).server_name(NODE_NAME);
            endpoint.connect_with_connector_lazy(connector)
        }
        None => endpoint.connect_lazy(),
    };
    Ok(ClusterChannel::new(channel, ClusterAuth))
}

/// Sets the process's cluster secret; setting the same value again is allowed.
pub fn set_cluster_secret(secret: &str) -> Result<(), ClusterSecretError> {
    let visible = secret.bytes().all(|byte| byte.is_ascii_graphic());
    if !(16..=256).contains(&secret.len()) || !visible {
        return Err(ClusterSecretError::Malformed);
    }
    let value: AsciiMetadataValue = secret.parse().map_err(|_| ClusterSecretError::Malformed)?;
    let current = SECRET.get_or_init(|| value.clone());
    if *current == value {
        Ok(())
    } else {
        Err(ClusterSecretError::AlreadySet)
    }
}

/// A channel to another node whose calls carry the cluster secret.
pub type ClusterChannel = InterceptedService<Channel, ClusterAuth>;

/// Adds the cluster secret to each outgoing call.
#[derive(Clone, Copy, Debug, Default)]
pub struct ClusterAuth;

impl Interceptor for ClusterAuth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(secret) = SECRET.get() {
            request
                .metadata_mut()
                .insert(CLUSTER_SECRET_KEY, secret.clone());
        }
        Ok(request)
    }
}

/// The server's check of each incoming call (a `tonic::service::interceptor` for every service
/// of the cluster API).
pub fn check_cluster_secret(request: Request<()>) -> Result<Request<()>, Status> {
    let Some(expected) = SECRET.get() else {
        return Ok(request);
    };
    let given = request
        .metadata()
        .get(CLUSTER_SECRET_KEY)
        .map(AsciiMetadataValue::as_bytes)
        .unwrap_or_default();
    if equal_in_constant_time(given, expected.as_bytes()) {
        Ok(request)
    } else {
        Err(Status::unauthenticated(
            "this cluster's API needs the cluster secret",
        ))
    }
}

/// Compares without stopping at the first difference, so timing tells nothing of the secret.
fn equal_in_constant_time(given: &[u8], expected: &[u8]) -> bool {
    let mut difference = given.len() ^ expected.len();
    for (index, byte) in expected.iter().enumerate() {
        difference |= usize::from(byte ^ given.get(index).copied().unwrap_or(!byte));
    }
    difference == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparison_is_exact() {
        assert!(equal_in_constant_time(
            b"0123456789abcdef",
            b"0123456789abcdef"
        ));
        for given in [
            &b""[..],
            b"0123456789abcdeF",
            b"0123456789abcde",
            b"0123456789abcdefg",
        ] {
            assert!(!equal_in_constant_time(given, b"0123456789abcdef"));
        }
    }

    #[test]
    fn a_secret_is_checked_once_set() {
        let call = |secret: Option<&str>| {
            let mut request = Request::new(());
            if let Some(secret) = secret {
                request
                    .metadata_mut()
                    .insert(CLUSTER_SECRET_KEY, secret.parse().unwrap());
            }
            check_cluster_secret(request).map(drop)
        };
        assert!(matches!(
            set_cluster_secret("short"),
            Err(ClusterSecretError::Malformed)
        ));
        assert!(matches!(
            set_cluster_secret("has a space in it ok"),
            Err(ClusterSecretError::Malformed)
        ));
        set_cluster_secret("correct-horse-battery").unwrap();
        set_cluster_secret("correct-horse-battery").unwrap();
        assert!(matches!(
            set_cluster_secret("another-horse-battery"),
            Err(ClusterSecretError::AlreadySet)
        ));
        assert!(call(Some("correct-horse-battery")).is_ok());
        let refused = call(Some("correct-horse-batterY")).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        assert!(call(None).is_err());
        let mut outgoing = ClusterAuth.call(Request::new(())).unwrap();
        assert_eq!(
            outgoing.metadata_mut().get(CLUSTER_SECRET_KEY).unwrap(),
            "correct-horse-battery"
        );
    }
}
