//! `fanout`: C channels × M members, messages of S bytes sent at a constant total rate P by
//! several members of each channel (each stays under the per-user message limit). Reports
//! delivered messages per second, end-to-end latency percentiles, server CPU per delivery, and
//! messages lost.
//!
//! Latency is measured from each message's *intended* send time (written in its payload), not
//! from when it was actually sent: a generator that falls behind does not hide the delay
//! (coordinated-omission correction).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use hdrhistogram::Histogram;
use parley_client::Client;
use parley_client::Event;
use parley_client::Message;
use serde_json::json;
use tokio::sync::mpsc;
use tokio::sync::watch;

use crate::common;
use crate::common::Target;

/// Per-user message rate the senders stay under (the product's limit is 60 per second).
const PER_SENDER_RATE: f64 = 50.0;

#[derive(clap::Args, Clone, Debug)]
pub struct Options {
    /// Channels.
    #[arg(long, default_value_t = 1)]
    pub channels: usize,
    /// Members of each channel.
    #[arg(long, default_value_t = 100)]
    pub members: usize,
    /// Messages per second, over all channels.
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// How long to send.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Bytes per message.
    #[arg(long, default_value_t = 100)]
    pub size: usize,
}

struct Received {
    count: u64,
    latency: Histogram<u64>,
}

pub async fn run(target: &Target, options: &Options) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(
        options.members >= 2,
        "a channel needs two members to fan out"
    );
    let per_channel_rate = options.rate / options.channels as f64;
    let senders_per_channel =
        ((per_channel_rate / PER_SENDER_RATE).ceil() as usize).clamp(1, options.members);
    let total = (options.rate * options.seconds).round() as u64;

    // Members join their channels; the first `senders_per_channel` of each also send.
    let mut senders: Vec<(Client, String)> = Vec::new();
    let mut quiet: Vec<Client> = Vec::new();
    let mut inboxes: Vec<mpsc::Receiver<Event>> = Vec::new();
    for c in 0..options.channels {
        let channel = format!("fanout-{c}");
        let clients = common::connect_many(target, &format!("fan-c{c}-m"), options.members).await?;
        for (m, (client, events)) in clients.into_iter().enumerate() {
            client
                .join(&channel)
                .await
                .map_err(|error| anyhow::anyhow!("join: {error}"))?;
            inboxes.push(events);
            if m < senders_per_channel {
                senders.push((client, channel.clone()));
            } else {
                quiet.push(client);
            }
        }
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let delivered = Arc::new(AtomicU64::new(0));
    let receivers: Vec<_> = inboxes
        .into_iter()
        .map(|events| tokio::spawn(receive(events, stop_rx.clone(), delivered.clone())))
        .collect();

    let cpu_before = common::server_cpu(target);
    let generator_before = common::own_cpu();
    let started = Instant::now();
    let start_micros = common::now_micros();
    let sent = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let channels = options.channels as u64;
    let per_channel = senders_per_channel as u64;
    let sending: Vec<_> = senders
        .into_iter()
        .enumerate()
        .map(|(index, (client, channel))| {
            let (c, s) = (index as u64 / per_channel, index as u64 % per_channel);
            // Message i goes to channel i % C, from sender (i / C) % k of that channel.
            let mine: Vec<u64> = (0..total)
                .filter(|i| i % channels == c && (i / channels) % per_channel == s)
                .collect();
            let (rate, size) = (options.rate, options.size);
            let (sent, failed) = (sent.clone(), failed.clone());
            tokio::spawn(async move {
                for i in mine {
                    let offset = Duration::from_secs_f64(i as f64 / rate);
                    tokio::time::sleep_until((started + offset).into()).await;
                    let intended = start_micros + offset.as_micros() as u64;
                    let mut text = format!("{intended}:{i}:");
                    if text.len() < size {
                        text.push_str(&"x".repeat(size - text.len()));
                    }
                    match client.send_message(&channel, Message::text(text)).await {
                        Ok(_) => sent.fetch_add(1, Ordering::Relaxed),
                        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
                client
            })
        })
        .collect();

    let expected_per_message = options.members as u64 - 1;
    let progress = {
        let (sent, failed) = (sent.clone(), failed.clone());
        tokio::spawn(async move {
            loop {
                let done = sent.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed);
                common::progress("fanout: sending", done, total);
                if done >= total {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    let mut senders_back = Vec::new();
    for task in sending {
        senders_back.push(task.await?);
    }
    let send_seconds = started.elapsed().as_secs_f64();
    let _ = progress.await;
    let sent = sent.load(Ordering::Relaxed);
    let expected = sent * expected_per_message;
    // Late deliveries: give them a moment.
    common::wait_until(Duration::from_secs(5), || {
        delivered.load(Ordering::Relaxed) >= expected
    })
    .await;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = common::server_cpu(target) - cpu_before;
    let generator_cpu = common::own_cpu() - generator_before;
    let _ = stop_tx.send(true);
    let mut latency = common::histogram();
    let mut count = 0;
    for receiver in receivers {
        let received = receiver.await?;
        count += received.count;
        latency.add(&received.latency)?;
    }
    drop((senders_back, quiet));

    let report = json!({
        "scenario": "fanout",
        "channels": options.channels,
        "members_per_channel": options.members,
        "senders_per_channel": senders_per_channel,
        "rate": options.rate,
        "seconds": options.seconds,
        "size_bytes": options.size,
        "sent": sent,
        "send_failures": failed.load(Ordering::Relaxed),
        "send_seconds": send_seconds,
        "expected_deliveries": expected,
        "delivered": count,
        "lost": expected.saturating_sub(count),
        "deliveries_per_second": count as f64 / elapsed,
        "latency": common::percentiles(&latency),
        "server_cpu_seconds": cpu,
        "deliveries_per_server_cpu_second": if cpu > 0.0 { count as f64 / cpu } else { 0.0 },
        "generator_cpu_seconds": generator_cpu,
    });
    println!(
        "fanout: {} channels × {} members, {sent} messages at {}/s of {} B: {count}/{expected} deliveries ({} lost), latency p50 {} ms p99 {} ms max {} ms, server CPU {cpu:.2} s ({:.0} deliveries per CPU-second), generator CPU {generator_cpu:.2} s",
        options.channels,
        options.members,
        options.rate,
        options.size,
        report["lost"],
        report["latency"]["p50_ms"],
        report["latency"]["p99_ms"],
        report["latency"]["max_ms"],
        report["deliveries_per_server_cpu_second"]
            .as_f64()
            .unwrap_or(0.0),
    );
    Ok(report)
}

/// Counts one member's channel messages and their latency, until told to stop.
async fn receive(
    mut events: mpsc::Receiver<Event>,
    mut stop: watch::Receiver<bool>,
    delivered: Arc<AtomicU64>,
) -> Received {
    let mut received = Received {
        count: 0,
        latency: common::histogram(),
    };
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(Event::ChannelMessage(message)) => {
                    let now = common::now_micros();
                    let intended = match message.message.and_then(|body| body.content) {
                        Some(parley_proto::v1::message_body::Content::Text(text)) => text
                            .split(':')
                            .next()
                            .and_then(|micros| micros.parse::<u64>().ok()),
                        _ => None,
                    };
                    if let Some(intended) = intended {
                        let _ = received.latency.record(now.saturating_sub(intended).max(1));
                    }
                    received.count += 1;
                    delivered.fetch_add(1, Ordering::Relaxed);
                }
                Some(_) => {}
                None => break,
            },
            _ = stop.changed() => break,
        }
    }
    received
}
