//! `churn`: R connections per second log in, join a channel, stay for a while and go, for S
//! seconds — on its own, or in a second generator process beside `fanout` or `connections` to
//! see what churn costs them. Reports how long login and join took, failures, and server CPU.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use serde_json::json;
use tokio::sync::Mutex;

use crate::common;
use crate::common::Target;
use crate::wire::Lean;

/// Connection indexes of churn start here, so their source addresses and uids differ from those
/// of a scenario running beside it.
const INDEX_BASE: usize = 500_000;

#[derive(clap::Args, Clone, Debug)]
pub struct Options {
    /// Connections opened (and, after their lifetime, closed) per second.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// How long to churn.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// How long each connection stays.
    #[arg(long, default_value_t = 1.0)]
    pub lifetime: f64,
    /// Channels the connections join, round robin.
    #[arg(long, default_value_t = 10)]
    pub channels: usize,
}

pub async fn run(target: &Target, options: &Options) -> anyhow::Result<serde_json::Value> {
    let total = (options.rate * options.seconds).round() as usize;
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let latency = Arc::new(Mutex::new(common::histogram()));
    let first_error = Arc::new(Mutex::new(None::<String>));
    let cpu_before = common::server_cpu(target);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for n in 0..total {
        tokio::time::sleep_until(
            (started + Duration::from_secs_f64(n as f64 / options.rate)).into(),
        )
        .await;
        let target = target.clone();
        let channel = format!("churn-{}", n % options.channels.max(1));
        let lifetime = Duration::from_secs_f64(options.lifetime);
        let (done, failed) = (done.clone(), failed.clone());
        let (latency, first_error) = (latency.clone(), first_error.clone());
        tasks.push(tokio::spawn(async move {
            let index = INDEX_BASE + n;
            let begun = Instant::now();
            let joined = async {
                let mut lean = Lean::connect(
                    target.protocol,
                    target.url(index),
                    &target.app_id,
                    index,
                    &format!("churn-{n}"),
                )
                .await?;
                lean.subscribe(&channel).await?;
                anyhow::Ok(lean)
            };
            match joined.await {
                Ok(lean) => {
                    let micros = begun.elapsed().as_micros() as u64;
                    let _ = latency.lock().await.record(micros.max(1));
                    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
                    let idle = tokio::spawn(crate::connections::idle(lean, stop_rx));
                    tokio::time::sleep(lifetime).await;
                    let _ = stop_tx.send(true);
                    let _ = idle.await;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Err(error) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    first_error.lock().await.get_or_insert(format!("{error:#}"));
                }
            }
        }));
        if n % 50 == 0 {
            common::progress("churn", n as u64, total as u64);
        }
    }
    common::progress("churn", total as u64, total as u64);
    for task in tasks {
        task.await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = common::server_cpu(target) - cpu_before;
    let latency = latency.lock().await.clone();
    let report = json!({
        "scenario": "churn",
        "system": target.protocol.name(),
        "rate": options.rate,
        "seconds": options.seconds,
        "lifetime_seconds": options.lifetime,
        "connections": done.load(Ordering::Relaxed),
        "failed": failed.load(Ordering::Relaxed),
        "first_error": *first_error.lock().await,
        "login_and_join_latency": common::percentiles(&latency),
        "server_cpu_seconds": cpu,
        "elapsed_seconds": elapsed,
    });
    println!(
        "churn ({}): {} connections came and went ({} failed) at {}/s, login + join p50 {} ms p99 {} ms max {} ms, server CPU {cpu:.2} s",
        target.protocol.name(),
        report["connections"],
        report["failed"],
        options.rate,
        report["login_and_join_latency"]["p50_ms"],
        report["login_and_join_latency"]["p99_ms"],
        report["login_and_join_latency"]["max_ms"],
    );
    Ok(report)
}
