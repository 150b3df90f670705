//! `parley run`: one cluster node with the roles it is given.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::Context;
use parley_core::app::AppConfig;
use parley_core::app::AppDirectory;
use parley_core::app::MultiLogin;
use parley_core::ids::AppId;
use parley_core::ids::NodeId;
use parley_edge::EdgeConfig;
use parley_meta::MetaConfig;
use parley_owner::OwnerConfig;
use tokio::net::TcpListener;

use crate::cli::RunOptions;
use crate::cluster::NodeSpec;

/// Reads `ID=HOST:PORT,…`.
pub fn parse_metas(raw: &str) -> anyhow::Result<BTreeMap<u64, String>> {
    let mut metas = BTreeMap::new();
    for entry in raw
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
    {
        let (id, address) = entry
            .split_once('=')
            .with_context(|| format!("--meta {entry:?}: expected ID=HOST:PORT"))?;
        let id: u64 = id
            .parse()
            .with_context(|| format!("--meta {entry:?}: the id is not a number"))?;
        if address.is_empty() || !address.contains(':') {
            anyhow::bail!("--meta {entry:?}: expected ID=HOST:PORT");
        }
        if metas.insert(id, address.to_owned()).is_some() {
            anyhow::bail!("--meta: node {id} appears twice");
        }
    }
    if metas.is_empty() {
        anyhow::bail!("--meta names no meta node");
    }
    Ok(metas)
}

pub async fn run(
    options: RunOptions,
    telemetry: std::sync::Arc<parley_telemetry::Telemetry>,
) -> anyhow::Result<ExitCode> {
    let metas = parse_metas(&options.meta)?;
    let me = NodeId(options.node_id);
    match &options.cluster_secret {
        Some(secret) => parley_proto::cluster_auth::set_cluster_secret(secret)
            .map_err(|error| anyhow::anyhow!("--cluster-secret: {error}"))?,
        None => tracing::warn!(
            "no --cluster-secret: the cluster API takes calls from anyone who reaches --grpc-addr"
        ),
    }
    let cluster_tls = options.cluster_tls.install()?;
    if let Some(unknown) = options
        .roles
        .iter()
        .find(|role| !matches!(role.as_str(), "edge" | "owner" | "meta"))
    {
        anyhow::bail!("--roles: unknown role {unknown:?} (edge, owner, meta)");
    }
    let has = |role: &str| options.roles.iter().any(|known| known == role);
    let (edge, owner, meta) = (has("edge"), has("owner"), has("meta"));
    if options.production {
        if !cluster_tls {
            anyhow::bail!(
                "--production: the cluster port needs mutual TLS (--cluster-ca, --cluster-cert, --cluster-key)"
            );
        }
        if edge && !options.client_port.tls() {
            anyhow::bail!("--production: an edge's client port needs TLS (--tls-cert, --tls-key)");
        }
    } else if !cluster_tls {
        tracing::warn!("no cluster TLS: traffic between nodes is plain text");
    }
    let grpc_address = options
        .advertise_grpc
        .clone()
        .unwrap_or_else(|| options.grpc_addr.to_string());
    let meta_config = meta.then(|| {
        let mut config = MetaConfig::new(
            me.0,
            grpc_address.clone(),
            options.data_dir.join(format!("meta-{}", me.0)),
        );
        if metas.contains_key(&me.0) {
            config.initial_members = metas.clone();
        }
        config.node_timeout = options.node_timeout;
        config.forget_after = options.forget_down_after;
        config
    });
    let apps = match &options.app_id {
        Some(app_id) => {
            let app_id =
                AppId::parse(app_id).map_err(|error| anyhow::anyhow!("--app-id: {error}"))?;
            let mut app = AppConfig::new(app_id, options.app_certificate.clone());
            if options.allow_multi_login {
                app.multi_login = MultiLogin::AllowMany;
            }
            app.customer_keys = crate::node::customer_keys(&options.customer_key)?;
            app.webhook = options.webhook.webhook()?;
            AppDirectory::new([app])
        }
        None => AppDirectory::new([]),
    };
    let store = if owner {
        Some(crate::node::open_store(&options.store, &options.data_dir).await?)
    } else {
        None
    };
    let grpc = TcpListener::bind(options.grpc_addr)
        .await
        .with_context(|| format!("bind {}", options.grpc_addr))?;
    let http = if edge {
        let listener = TcpListener::bind(options.http_addr)
            .await
            .with_context(|| format!("bind {}", options.http_addr))?;
        Some(listener)
    } else {
        None
    };
    let http_address = match (&options.advertise_http, &http) {
        (Some(address), _) => address.clone(),
        (None, Some(listener)) => listener.local_addr()?.to_string(),
        (None, None) => String::new(),
    };
    let spec = NodeSpec {
        node: me,
        edge,
        owner,
        grpc_address,
        http_address: http_address.clone(),
        metas: metas.values().cloned().collect(),
        meta: meta_config,
    };
    let mut edge_config = EdgeConfig::default();
    options.client_port.apply(&mut edge_config)?;
    let node = crate::cluster::node(
        spec,
        apps,
        OwnerConfig::default(),
        edge_config,
        options.kafka.pipeline(),
        options.kafka.regions()?,
        store.clone(),
    )
    .await?;
    let ops = TcpListener::bind(options.ops_addr)
        .await
        .with_context(|| format!("bind {}", options.ops_addr))?;
    let readiness = crate::ops::node_readiness(
        (edge || owner).then(|| node.handle()),
        store,
        node.meta.clone(),
    );
    let ops_router = crate::ops::router(telemetry, readiness);
    // Served until the process ends: probes keep their answers (`/readyz`: draining) meanwhile.
    tokio::spawn(async move {
        if let Err(error) = axum::serve(ops, ops_router).await {
            tracing::warn!(%error, "the ops endpoints stopped");
        }
    });
    if edge {
        let _ = std::io::Write::write_all(
            &mut std::io::stdout(),
            format!(
                "parley node {} (edge) is listening on ws://{http_address}/v1/ws\n",
                me.0
            )
            .as_bytes(),
        );
    }
    tracing::info!(node = me.0, edge, owner, meta, "node started");
    crate::cluster::serve(node, grpc, http, crate::node::shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_lists_parse_and_bad_ones_are_named() {
        let metas = parse_metas("1=127.0.0.1:7001, 2=127.0.0.1:7002").unwrap();
        assert_eq!(metas.len(), 2);
        assert_eq!(metas[&2], "127.0.0.1:7002");
        for bad in ["", "1", "x=h:1", "1=h", "1=h:1,1=h:2"] {
            assert!(parse_metas(bad).is_err(), "{bad}");
        }
    }
}
