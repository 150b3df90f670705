//! The operator's endpoints of a node: `/healthz` (the process answers), `/readyz` (it should
//! be sent traffic now) and `/metrics` (every instrument, in the Prometheus text format).
//! `parley run` serves them on `--ops-addr`; `parley dev` on its one HTTP port.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use parley_telemetry::Telemetry;

/// Answers whether the node is ready, and if not, why (the body of a 503).
pub type Readiness =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// `/readyz` and `/metrics`: what `parley dev` adds to its client router, which has `/healthz`.
pub fn routes(telemetry: Arc<Telemetry>, readiness: Readiness) -> Router {
    Router::new()
        .route(
            "/readyz",
            get(move || {
                let readiness = readiness.clone();
                async move {
                    match readiness().await {
                        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
                        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let text = telemetry.prometheus_text();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        text,
                    )
                        .into_response()
                }
            }),
        )
}

/// Every operator endpoint, for a port of its own.
pub fn router(telemetry: Arc<Telemetry>, readiness: Readiness) -> Router {
    routes(telemetry, readiness).route("/healthz", get(|| async { "ok\n" }))
}

/// Readiness of a node with the given parts: each part that is there must be ready.
pub fn node_readiness(
    handle: Option<crate::cluster::ClusterHandle>,
    store: Option<Arc<dyn parley_store::Store>>,
    meta: Option<Arc<parley_meta::MetaNode>>,
) -> Readiness {
    Arc::new(move || {
        let (handle, store, meta) = (handle.clone(), store.clone(), meta.clone());
        Box::pin(async move {
            if let Some(meta) = &meta
                && meta.leader_address().is_none()
            {
                return Err("meta: no Raft leader known".to_owned());
            }
            if let Some(handle) = &handle {
                handle.ready()?;
            }
            if let Some(store) = &store {
                store
                    .ping()
                    .await
                    .map_err(|error| format!("store: {error}"))?;
            }
            Ok(())
        })
    })
}
