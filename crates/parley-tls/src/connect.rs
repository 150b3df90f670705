//! Opening TLS connections: [`connect`] for one stream, [`Connector`] for a tonic channel.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Context;
use std::task::Poll;

use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tonic::codegen::http::Uri;

/// Connects to `host:port` over TCP (no Nagle delay), then TLS, checking the server's
/// certificate names `host` (a DNS name or an IP address).
pub async fn connect(
    config: Arc<ClientConfig>,
    host: &str,
    port: u16,
) -> io::Result<TlsStream<TcpStream>> {
    connect_to(config, host, port, None).await
}

/// [`connect`], checking the certificate names `name` instead of the host when given.
async fn connect_to(
    config: Arc<ClientConfig>,
    host: &str,
    port: u16,
    name: Option<&'static str>,
) -> io::Result<TlsStream<TcpStream>> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(name.unwrap_or(host).to_owned())
        .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?;
    let tcp = TcpStream::connect((host, port)).await?;
    tcp.set_nodelay(true)?;
    TlsConnector::from(config).connect(name, tcp).await
}

/// A tonic connector whose connections are TLS (`Endpoint::connect_with_connector_lazy`).
#[derive(Clone)]
pub struct Connector {
    config: Arc<ClientConfig>,
    name: Option<&'static str>,
}

impl Connector {
    pub fn new(config: Arc<ClientConfig>) -> Self {
        Connector { config, name: None }
    }

    /// Checks that every server's certificate names `name`, whatever address it was reached
    /// at (for peers whose addresses change, as pods' do, and share a name).
    pub fn server_name(mut self, name: &'static str) -> Self {
        self.name = Some(name);
        self
    }
}

type Connecting = Pin<Box<dyn Future<Output = io::Result<TokioIo<TlsStream<TcpStream>>>> + Send>>;

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Connecting {
        let (config, name) = (self.config.clone(), self.name);
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no host"))?;
            let port = uri.port_u16().unwrap_or(443);
            connect_to(config, host, port, name).await.map(TokioIo::new)
        })
    }
}
