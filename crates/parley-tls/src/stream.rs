//! An accepted connection, in plain text or TLS; a TLS one does its handshake as it is first
//! read or written, inside whatever deadline its reader keeps.

use std::io;
use std::pin::Pin;
use std::task::Context;
use std::task::Poll;
use std::task::ready;

use tokio::io::AsyncRead;
use tokio::io::AsyncWrite;
use tokio::io::ReadBuf;
use tokio::net::TcpStream;
use tokio_rustls::Accept;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

pub enum ServerStream<S> {
    Plain(S),
    // Boxed: a plain connection should not carry room for a handshake.
    Handshaking(Box<Accept<S>>),
    Tls(Box<TlsStream<S>>),
    /// The handshake failed; every later call fails too.
    Failed,
}

impl<S: AsyncRead + AsyncWrite + Unpin> ServerStream<S> {
    /// `stream` as it is (no acceptor) or behind TLS.
    pub fn new(stream: S, acceptor: Option<&TlsAcceptor>) -> Self {
        match acceptor {
            Some(acceptor) => ServerStream::Handshaking(Box::new(acceptor.accept(stream))),
            None => ServerStream::Plain(stream),
        }
    }

    /// The underlying connection (for its addresses), whatever the state.
    pub fn get_ref(&self) -> Option<&S> {
        match self {
            ServerStream::Plain(stream) => Some(stream),
            ServerStream::Handshaking(accept) => accept.get_ref(),
            ServerStream::Tls(stream) => Some(stream.get_ref().0),
            ServerStream::Failed => None,
        }
    }

    /// Drives the handshake; ready once there is a stream to use.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let ServerStream::Handshaking(accept) = self {
            match ready!(Pin::new(&mut **accept).poll(cx)) {
                Ok(stream) => *self = ServerStream::Tls(Box::new(stream)),
                Err(error) => {
                    *self = ServerStream::Failed;
                    tracing::debug!(%error, "TLS handshake failed");
                    return Poll::Ready(Err(error));
                }
            }
        }
        match self {
            ServerStream::Failed => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the TLS handshake failed",
            ))),
            _ => Poll::Ready(Ok(())),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for ServerStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        ready!(self.poll_ready(cx))?;
        match &mut *self {
            ServerStream::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            ServerStream::Tls(stream) => Pin::new(stream).poll_read(cx, buf),
            _ => unreachable!("ready means plain or established"),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for ServerStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_ready(cx))?;
        match &mut *self {
            ServerStream::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            ServerStream::Tls(stream) => Pin::new(stream).poll_write(cx, buf),
            _ => unreachable!("ready means plain or established"),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_ready(cx))?;
        match &mut *self {
            ServerStream::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            ServerStream::Tls(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            _ => unreachable!("ready means plain or established"),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            ServerStream::Plain(stream) => stream.is_write_vectored(),
            ServerStream::Tls(stream) => stream.is_write_vectored(),
            _ => false,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut *self {
            ServerStream::Plain(stream) => Pin::new(stream).poll_flush(cx),
            ServerStream::Tls(stream) => Pin::new(stream).poll_flush(cx),
            _ => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut *self {
            ServerStream::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            ServerStream::Tls(stream) => Pin::new(stream).poll_shutdown(cx),
            _ => Poll::Ready(Ok(())),
        }
    }
}

impl tonic::transport::server::Connected for ServerStream<TcpStream> {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        match self.get_ref() {
            Some(stream) => stream.connect_info(),
            None => tonic::transport::server::TcpConnectInfo {
                local_addr: None,
                remote_addr: None,
            },
        }
    }
}
