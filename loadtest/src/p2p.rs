//! `p2p`: U users each sending r peer messages per second to random other users, every message
//! waiting for the receiver's acknowledgement. Reports acknowledged messages per second, the
//! acknowledgement latency (from each message's intended send time), and messages that were not
//! acknowledged.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use parley_client::Message;
use parley_client::PeerMessageOptions;
use parley_client::PeerMessageResult;
use rand::Rng;
use serde_json::json;

use crate::common;
use crate::common::Target;

#[derive(clap::Args, Clone, Debug)]
pub struct Options {
    /// Users, each sending and receiving.
    #[arg(long, default_value_t = 100)]
    pub users: usize,
    /// Messages per second each user sends (the product's limit is 60).
    #[arg(long, default_value_t = 1.0)]
    pub rate: f64,
    /// How long to send.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Bytes per message.
    #[arg(long, default_value_t = 100)]
    pub size: usize,
}

pub async fn run(target: &Target, options: &Options) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(options.users >= 2, "peers need two users");
    let clients = common::connect_many(target, "p2p-", options.users).await?;
    let per_user = (options.rate * options.seconds).round() as u64;
    let total = per_user * options.users as u64;
    let acknowledged = Arc::new(AtomicU64::new(0));
    let unacknowledged = Arc::new(AtomicU64::new(0));
    let cpu_before = common::server_cpu(target);
    let started = Instant::now();
    let mut tasks = Vec::new();
    let mut inboxes = Vec::new();
    for (me, (client, events)) in clients.into_iter().enumerate() {
        // The SDK acknowledges what arrives; the events themselves are not needed.
        inboxes.push(tokio::spawn(drain(events)));
        let (acknowledged, unacknowledged) = (acknowledged.clone(), unacknowledged.clone());
        let (users, rate, size) = (options.users, options.rate, options.size);
        tasks.push(tokio::spawn(async move {
            let mut latency = common::histogram();
            // Users start spread over the first interval, not all at once.
            let phase = Duration::from_secs_f64(me as f64 / users as f64 / rate);
            for n in 0..per_user {
                let intended = started + phase + Duration::from_secs_f64(n as f64 / rate);
                tokio::time::sleep_until(intended.into()).await;
                let peer = {
                    let mut rng = rand::rng();
                    let other = rng.random_range(0..users - 1);
                    if other >= me { other + 1 } else { other }
                };
                let text = format!("{n}:{}", "x".repeat(size.saturating_sub(8)));
                let options = PeerMessageOptions {
                    enable_offline_messaging: false,
                    enable_historical_messaging: false,
                };
                let sent = client
                    .send_message_to_peer(&format!("p2p-{peer}"), Message::text(text), options)
                    .await;
                match sent {
                    Ok(result) if result.result() == PeerMessageResult::ReceivedByPeer => {
                        let micros = intended.elapsed().as_micros() as u64;
                        let _ = latency.record(micros.max(1));
                        acknowledged.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        unacknowledged.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            (client, latency)
        }));
    }
    let progress = {
        let (acknowledged, unacknowledged) = (acknowledged.clone(), unacknowledged.clone());
        tokio::spawn(async move {
            loop {
                let done =
                    acknowledged.load(Ordering::Relaxed) + unacknowledged.load(Ordering::Relaxed);
                common::progress("p2p: sending", done, total);
                if done >= total {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    let mut latency = common::histogram();
    let mut clients = Vec::new();
    for task in tasks {
        let (client, histogram) = task.await?;
        latency.add(&histogram)?;
        clients.push(client);
    }
    let _ = progress.await;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = common::server_cpu(target) - cpu_before;
    drop(clients);
    for inbox in inboxes {
        inbox.abort();
    }
    let acknowledged = acknowledged.load(Ordering::Relaxed);
    let report = json!({
        "scenario": "p2p",
        "users": options.users,
        "rate_per_user": options.rate,
        "seconds": options.seconds,
        "size_bytes": options.size,
        "sent": total,
        "acknowledged": acknowledged,
        "lost": total - acknowledged,
        "acknowledged_per_second": acknowledged as f64 / elapsed,
        "latency": common::percentiles(&latency),
        "server_cpu_seconds": cpu,
    });
    println!(
        "p2p: {} users × {}/s for {} s: {acknowledged}/{total} acknowledged ({} lost), ack latency p50 {} ms p99 {} ms max {} ms, server CPU {cpu:.2} s",
        options.users,
        options.rate,
        options.seconds,
        report["lost"],
        report["latency"]["p50_ms"],
        report["latency"]["p99_ms"],
        report["latency"]["max_ms"],
    );
    Ok(report)
}

async fn drain(mut events: tokio::sync::mpsc::Receiver<parley_client::Event>) {
    while events.recv().await.is_some() {}
}
