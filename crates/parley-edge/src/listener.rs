//! The edge's client listener, guarding the port before any request is read: at most
//! `max_connections_per_address` connections from one IP address (more are closed as soon as
//! they are accepted), and each connection must get a first request through within
//! `handshake_timeout` (a client that sends its headers a byte at a time, or nothing, is closed
//! then instead of holding a socket forever). With TLS, the TLS handshake happens inside that
//! time too, as the connection is first read (`parley_tls::ServerStream`), never in the accept
//! loop.

use std::io;
use std::net::IpAddr;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::task::Context;
use std::task::Poll;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use axum::serve::IncomingStream;
use axum::serve::Listener;
use parley_tls::ServerStream;
use parley_tls::TlsAcceptor;
use tokio::io::AsyncRead;
use tokio::io::AsyncWrite;
use tokio::io::ReadBuf;
use tokio::net::TcpListener;
use tokio::net::TcpStream;

use crate::tally::Held;
use crate::tally::Tally;

pub(crate) struct GuardedListener {
    inner: TcpListener,
    /// Open connections per client address.
    open: Tally<IpAddr>,
    max_per_address: usize,
    handshake_timeout: Duration,
    tls: Option<TlsAcceptor>,
}

impl GuardedListener {
    pub(crate) fn new(
        inner: TcpListener,
        max_per_address: usize,
        handshake_timeout: Duration,
        tls: Option<TlsAcceptor>,
    ) -> Self {
        GuardedListener {
            inner,
            open: Tally::new(),
            max_per_address,
            handshake_timeout,
            tls,
        }
    }
}

impl Listener for GuardedListener {
    type Io = GuardedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (GuardedStream, SocketAddr) {
        loop {
            let (stream, peer) = Listener::accept(&mut self.inner).await;
            let Some(slot) = self.open.take(peer.ip(), self.max_per_address) else {
                crate::telemetry::connection_refused("per_address");
                tracing::debug!(%peer, "too many connections from one address; closed");
                continue;
            };
            // Small frames go out at once: Nagle's algorithm would hold one back behind an
            // unacknowledged one (tens of milliseconds against a client's delayed ack).
            let _ = stream.set_nodelay(true);
            let guarded = GuardedStream {
                stream: ServerStream::new(stream, self.tls.as_ref()),
                handshake: Some(Box::pin(tokio::time::sleep(self.handshake_timeout))),
                established: Arc::new(AtomicBool::new(false)),
                slot,
            };
            return (guarded, peer);
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// A client connection that fails its reads once the handshake time is up, until a request
/// has come through ([`mark_established`]).
pub(crate) struct GuardedStream {
    stream: ServerStream<TcpStream>,
    handshake: Option<Pin<Box<tokio::time::Sleep>>>,
    established: Arc<AtomicBool>,
    /// The connection's place among its address's, given back when it is gone.
    slot: Held<IpAddr>,
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.established.load(Ordering::Relaxed) {
            this.handshake = None;
        } else if let Some(deadline) = &mut this.handshake
            && deadline.as_mut().poll(cx).is_ready()
        {
            crate::telemetry::connection_refused("handshake_timeout");
            tracing::debug!(address = %this.slot.key(), "no request in time; closed");
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no request within the handshake timeout",
            )));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// What a request learns of its connection: the flag that ends its handshake time.
#[derive(Clone)]
pub(crate) struct Connection(Arc<AtomicBool>);

impl axum::extract::connect_info::Connected<IncomingStream<'_, GuardedListener>> for Connection {
    fn connect_info(stream: IncomingStream<'_, GuardedListener>) -> Self {
        Connection(stream.io().established.clone())
    }
}

/// Middleware: a request got through, so its connection is past the handshake.
pub(crate) async fn mark_established(
    ConnectInfo(connection): ConnectInfo<Connection>,
    request: Request,
    next: Next,
) -> Response {
    connection.0.store(true, Ordering::Relaxed);
    next.run(request).await
}
