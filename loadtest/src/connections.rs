//! `connections`: N logged-in connections opened at R per second (from source addresses
//! 127.0.0.2, 127.0.0.3, … so that more than one address's ephemeral ports can be used), then
//! held idle with the protocol's keep-alive. Reports the server's memory per connection (RSS from
//! /proc), its CPU while they idle, and how long logins took.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use hdrhistogram::Histogram;
use serde_json::json;
use tokio::sync::Mutex;
use tokio::sync::watch;

use crate::common;
use crate::common::Target;
use crate::wire::Lean;

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
    let before = common::server_usage(target)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let opened = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let login_latency = Arc::new(Mutex::new(common::histogram()));
    let first_error = Arc::new(Mutex::new(None::<String>));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(options.connections);
    for index in 0..options.connections {
        let due = started + Duration::from_secs_f64(index as f64 / options.rate);
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
        }
        let (target, stop) = (target.clone(), stop_rx.clone());
        let (opened_by_task, failed_by_task) = (opened.clone(), failed.clone());
        let (login_latency, first_error) = (login_latency.clone(), first_error.clone());
        tasks.push(tokio::spawn(async move {
            let (opened, failed) = (opened_by_task, failed_by_task);
            let connect_started = Instant::now();
            let uid = format!("conn-{index}");
            match Lean::connect(
                target.protocol,
                target.url(index),
                &target.app_id,
                index,
                &uid,
            )
            .await
            {
                Ok(lean) => {
                    let micros = connect_started.elapsed().as_micros() as u64;
                    let _ = login_latency.lock().await.record(micros.max(1));
                    opened.fetch_add(1, Ordering::Relaxed);
                    idle(lean, stop).await;
                }
                Err(error) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    first_error.lock().await.get_or_insert(format!("{error:#}"));
                }
            }
        }));
        if index % 100 == 0 {
            common::progress(
                "connections: opening",
                opened.load(Ordering::Relaxed),
                options.connections as u64,
            );
        }
    }
    common::wait_until(Duration::from_secs(30), || {
        opened.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed)
            >= options.connections as u64
    })
    .await;
    common::progress(
        "connections: opening",
        options.connections as u64,
        options.connections as u64,
    );
    let ramp_seconds = started.elapsed().as_secs_f64();
    // Let the server settle, then measure its idle CPU over the hold.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cpu_before_hold = common::server_cpu(target);
    tokio::time::sleep(Duration::from_secs_f64(options.hold)).await;
    let idle_cpu = common::server_cpu(target) - cpu_before_hold;
    let after = common::server_usage(target)?;
    let opened = opened.load(Ordering::Relaxed);
    let failed = failed.load(Ordering::Relaxed);
    let per_connection = after.0.saturating_sub(before.0) as f64 / opened.max(1) as f64;
    let login_latency: Histogram<u64> = login_latency.lock().await.clone();
    let report = json!({
        "scenario": "connections",
        "system": target.protocol.name(),
        "connections": opened,
        "failed": failed,
        "first_error": *first_error.lock().await,
        "ramp_seconds": ramp_seconds,
        "login_latency": common::percentiles(&login_latency),
        "server_rss_before_bytes": before.0,
        "server_rss_after_bytes": after.0,
        "server_bytes_per_connection": per_connection,
        "idle_cpu_seconds_per_second": idle_cpu / options.hold,
    });
    println!(
        "connections ({}): {opened} logged in ({failed} failed) over {ramp_seconds:.1} s, login p99 {} ms, server RSS {:.1} MB -> {:.1} MB ({:.1} KB per connection), idle CPU {:.3} s/s",
        target.protocol.name(),
        report["login_latency"]["p99_ms"],
        before.0 as f64 / 1e6,
        after.0 as f64 / 1e6,
        per_connection / 1024.0,
        idle_cpu / options.hold,
    );
    let _ = stop_tx.send(true);
    for task in tasks {
        let _ = task.await;
    }
    Ok(report)
}

/// Keeps `lean` alive (its protocol's keep-alive, answers to the server's pings) until told to
/// stop or the server closes it.
pub async fn idle(mut lean: Lean, mut stop: watch::Receiver<bool>) {
    let keepalive = lean
        .protocol
        .keepalive()
        .unwrap_or(Duration::from_secs(3600));
    let mut keepalive = tokio::time::interval_at((Instant::now() + keepalive).into(), keepalive);
    loop {
        tokio::select! {
            frame = lean.next() => match frame {
                Some(Ok(frame)) => {
                    if let Some(answer) = lean.answer(&frame)
                        && lean.send(answer).await.is_err()
                    {
                        return;
                    }
                }
                _ => return,
            },
            _ = keepalive.tick() => {
                if let Some(frame) = lean.keepalive_frame()
                    && lean.send(frame).await.is_err()
                {
                    return;
                }
            }
            _ = stop.changed() => break,
        }
    }
    lean.close().await;
}
