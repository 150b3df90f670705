//! `connections`: N logged-in connections opened at R per second, then held idle. Reports the
//! server's memory per connection (RSS from /proc) and its CPU while they idle.

use std::time::Duration;
use std::time::Instant;

use serde_json::json;

use crate::common;
use crate::common::Target;

#[derive(clap::Args, Clone, Debug)]
pub struct Options {
    #[arg(long, default_value_t = 2000)]
    pub connections: usize,
    /// Connections opened per second.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// How long to hold them idle.
    #[arg(long, default_value_t = 5.0)]
    pub hold: f64,
}

pub async fn run(target: &Target, options: &Options) -> anyhow::Result<serde_json::Value> {
    let before = if target.server_pid == 0 {
        (0, 0.0)
    } else {
        common::usage(target.server_pid)?
    };
    let started = Instant::now();
    let mut clients = Vec::with_capacity(options.connections);
    let batch = ((options.rate / 10.0).ceil() as usize).max(1);
    for (index, chunk) in (0..options.connections)
        .collect::<Vec<_>>()
        .chunks(batch)
        .enumerate()
    {
        // Ten batches a second make the rate.
        let due = started + Duration::from_secs_f64(index as f64 / 10.0);
        tokio::time::sleep_until(due.into()).await;
        let opened = futures_util::future::try_join_all(
            chunk
                .iter()
                .map(|n| common::connect(target, format!("conn-{n}"))),
        )
        .await?;
        clients.extend(opened);
        common::progress(
            "connections: opening",
            clients.len() as u64,
            options.connections as u64,
        );
    }
    let ramp_seconds = started.elapsed().as_secs_f64();
    // Let the server settle, then measure its idle CPU over the hold.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cpu_before_hold = common::server_cpu(target);
    tokio::time::sleep(Duration::from_secs_f64(options.hold)).await;
    let idle_cpu = common::server_cpu(target) - cpu_before_hold;
    let after = if target.server_pid == 0 {
        (0, 0.0)
    } else {
        common::usage(target.server_pid)?
    };
    let per_connection = after.0.saturating_sub(before.0) as f64 / options.connections as f64;
    let report = json!({
        "scenario": "connections",
        "connections": clients.len(),
        "ramp_seconds": ramp_seconds,
        "server_rss_before_bytes": before.0,
        "server_rss_after_bytes": after.0,
        "server_bytes_per_connection": per_connection,
        "idle_cpu_seconds_per_second": idle_cpu / options.hold,
    });
    println!(
        "connections: {} logged in over {ramp_seconds:.1} s, server RSS {:.1} MB -> {:.1} MB ({:.1} KB per connection), idle CPU {:.3} s/s",
        clients.len(),
        before.0 as f64 / 1e6,
        after.0 as f64 / 1e6,
        per_connection / 1024.0,
        idle_cpu / options.hold,
    );
    drop(clients);
    Ok(report)
}
