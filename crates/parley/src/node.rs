//! What every node is built from, whatever its roles (`parley dev` has them all, `parley run`
//! those it is given): its store, its owner with the event pipeline and the link to other
//! regions, the customer keys it serves, and the signal that stops it.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use parley_bridge::RegionConfig;
use parley_core::app::AppDirectory;
use parley_events::EventPipeline;
use parley_events::PipelineConfig;
use parley_owner::Owner;
use parley_owner::OwnerConfig;
use parley_owner::RegionLink;
use parley_store::EmbeddedStore;
use parley_store::RedisStore;
use parley_store::Store;

/// Opens the store `--store` names: `embedded` (a file in `data_dir`), `redis://HOST:PORT` or
/// `redis-cluster://HOST:PORT,HOST:PORT,…`.
pub async fn open_store(store: &str, data_dir: &Path) -> anyhow::Result<Arc<dyn Store>> {
    if store == "embedded" {
        let store = EmbeddedStore::open(data_dir)
            .with_context(|| format!("open the store in {}", data_dir.display()))?;
        Ok(Arc::new(store))
    } else if store.starts_with("redis://") || store.starts_with("redis-cluster://") {
        let redis = RedisStore::connect(store)
            .await
            .with_context(|| format!("connect to {store}"))?;
        Ok(Arc::new(redis))
    } else {
        anyhow::bail!(
            "--store must be embedded, redis://HOST:PORT or redis-cluster://HOST:PORT,…, not {store:?}"
        )
    }
}

/// Starts an owner with its event pipeline and, when `regions` are configured, its link to
/// them and the bridge that brings their traffic in (to be spawned; its `owners` route to this
/// owner until the caller gives it a router).
pub async fn start_owner(
    owner_config: OwnerConfig,
    apps: &Arc<AppDirectory>,
    store: Arc<dyn Store>,
    events: PipelineConfig,
    regions: Option<RegionConfig>,
) -> anyhow::Result<(Arc<Owner>, Option<parley_bridge::Bridge>)> {
    let events = EventPipeline::start(events, apps.clone(), store.clone())
        .map_err(|error| anyhow::anyhow!("start the event pipeline: {error}"))?;
    let link: Arc<dyn RegionLink> = match &regions {
        Some(regions) => parley_bridge::KafkaRegionLink::start(regions)
            .map_err(|error| anyhow::anyhow!("start the region link: {error}"))?,
        None => Arc::new(parley_owner::NoRegions),
    };
    let owner = Owner::start(
        owner_config,
        apps.clone(),
        store.clone(),
        events,
        link.clone(),
    )
    .await
    .map_err(|error| anyhow::anyhow!("start the owner: {error}"))?;
    let bridge = regions.map(|config| parley_bridge::Bridge {
        config,
        owners: owner.clone(),
        local: owner.clone(),
        store,
        link,
    });
    Ok((owner, bridge))
}

/// Reads `--customer-key` values.
pub fn customer_keys(raw: &[String]) -> anyhow::Result<Vec<parley_core::app::CustomerKey>> {
    raw.iter()
        .map(|raw| {
            parley_core::app::CustomerKey::parse(raw)
                .map_err(|error| anyhow::anyhow!("--customer-key: {error}"))
        })
        .collect()
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("install the SIGTERM handler");
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    tracing::info!("shutting down");
}
