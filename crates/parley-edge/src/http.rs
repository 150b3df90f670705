//! HTTP surface of an edge: `/v1/ws`, the server API (`rest.rs`, and `grpc.rs` over HTTP/2 on
//! the same port) and `/healthz`.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::extract::WebSocketUpgrade;
use axum::response::IntoResponse;
use axum::routing::get;
use parley_proto::Codec;
use parley_proto::SUBPROTOCOL_JSON;
use parley_proto::SUBPROTOCOL_PROTO;
use parley_tls::TlsAcceptor;
use tokio::net::TcpListener;

use crate::connection;
use crate::edge::Edge;
use crate::edge::EdgeConfig;
use crate::listener::Connection;
use crate::listener::GuardedListener;
use crate::listener::mark_established;

/// Read buffer per connection: allocated for every connection, idle or not, so it is small; a
/// frame larger than it (up to the 32 KB message limit) takes a few more reads. The tungstenite
/// default (128 KiB for reading and for writing) cost ~136 KB per idle connection
/// (docs/benchmarks.md).
const READ_BUFFER_BYTES: usize = 1024;
/// Frames are written to the socket once this much is buffered (and at every flush). The buffer
/// grows only while a connection writes.
const WRITE_BUFFER_BYTES: usize = 4 * 1024;

pub fn router(edge: Arc<Edge>) -> Router {
    Router::new()
        .route("/v1/ws", get(upgrade))
        .route("/healthz", get(|| async { "ok" }))
        .merge(crate::rest::routes())
        .with_state(edge.clone())
        .merge(crate::grpc::routes(edge))
}

/// Serves `router` on `listener` until `shutdown` completes, with `config`'s limits on
/// connections per address and on the time to the first request (`listener.rs`), over TLS when
/// `config.tls` is set (then only over TLS).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    config: &EdgeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = GuardedListener::new(
        listener,
        config.max_connections_per_address,
        config.handshake_timeout,
        config.tls.clone().map(TlsAcceptor::from),
    );
    let router = router.layer(axum::middleware::from_fn(mark_established));
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<Connection>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

async fn upgrade(State(edge): State<Arc<Edge>>, upgrade: WebSocketUpgrade) -> impl IntoResponse {
    let max_frame = edge.config().max_frame_bytes;
    upgrade
        .protocols([SUBPROTOCOL_PROTO, SUBPROTOCOL_JSON])
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_message_size(max_frame)
        .max_frame_size(max_frame)
        .on_upgrade(move |socket| {
            let codec = Codec::from_subprotocol(
                socket
                    .protocol()
                    .and_then(|protocol| protocol.to_str().ok()),
            );
            connection::run(edge, socket, codec)
        })
}
