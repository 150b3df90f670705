//! `fanout`: C channels × M members, messages of S bytes sent at a constant total rate P by
//! several members of each channel (each stays under Parley's per-user message limit). Reports
//! delivered messages per second, end-to-end latency percentiles, server CPU per delivery,
//! messages lost, and deliveries and latency second by second.
//!
//! Latency is measured from each message's *intended* send time (written in its payload), not
//! from when it was actually sent: a generator that falls behind does not hide the delay
//! (coordinated-omission correction). Every member is a lean connection (`wire.rs`), so the same
//! run measures Parley, NATS, MQTT and Socket.IO alike.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context;
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use crate::common;
use crate::common::Target;
use crate::wire;
use crate::wire::Lean;

/// Per-user message rate the senders stay under (Parley's limit is 60 per second).
const PER_SENDER_RATE: f64 = 50.0;
/// Connections opened at once while setting up.
const SETUP_CONCURRENCY: usize = 200;

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
    /// Seconds to wait after the joins settle before sending (regions need a moment to learn
    /// of each other's members).
    #[arg(long, default_value_t = 0.0)]
    pub warmup: f64,
}

/// What one member saw.
struct Received {
    count: u64,
    latency: Histogram<u64>,
}

/// Deliveries and latency per second of the run, shared by every member.
struct Timeline {
    started_micros: u64,
    deliveries: Vec<AtomicU64>,
    latency_sum_micros: Vec<AtomicU64>,
    latency_max_micros: Vec<AtomicU64>,
}

impl Timeline {
    fn new(started_micros: u64, seconds: usize) -> Timeline {
        let zeros = || (0..seconds).map(|_| AtomicU64::new(0)).collect();
        Timeline {
            started_micros,
            deliveries: zeros(),
            latency_sum_micros: zeros(),
            latency_max_micros: zeros(),
        }
    }

    fn record(&self, now_micros: u64, latency_micros: u64) {
        let second = (now_micros.saturating_sub(self.started_micros) / 1_000_000) as usize;
        let second = second.min(self.deliveries.len() - 1);
        self.deliveries[second].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_micros[second].fetch_add(latency_micros, Ordering::Relaxed);
        self.latency_max_micros[second].fetch_max(latency_micros, Ordering::Relaxed);
    }

    /// Seconds up to the last one with a delivery, as JSON rows.
    fn to_json(&self) -> serde_json::Value {
        let last = self
            .deliveries
            .iter()
            .rposition(|count| count.load(Ordering::Relaxed) > 0)
            .map_or(0, |last| last + 1);
        let rows: Vec<_> = (0..last)
            .map(|second| {
                let count = self.deliveries[second].load(Ordering::Relaxed);
                let sum = self.latency_sum_micros[second].load(Ordering::Relaxed);
                json!({
                    "second": second,
                    "deliveries": count,
                    "mean_latency_ms": if count > 0 { sum as f64 / count as f64 / 1000.0 } else { 0.0 },
                    "max_latency_ms": self.latency_max_micros[second].load(Ordering::Relaxed) as f64 / 1000.0,
                })
            })
            .collect();
        json!(rows)
    }
}

/// The messages one sender publishes: message `i` is due `i / rate` seconds after the start.
struct Schedule {
    channel: String,
    messages: Vec<u64>,
    rate: f64,
    size: usize,
}

/// Counters every member adds to.
#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    delivered: AtomicU64,
    /// Sends the server refused (Parley answers every send; the others do not).
    refused: AtomicU64,
    first_refusal: std::sync::Mutex<Option<String>>,
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
    let channels = options.channels as u64;
    let per_channel = senders_per_channel as u64;

    // Every member joins its channel; the first `senders_per_channel` of each also send.
    let members = options.channels * options.members;
    let mut opened = futures_util::stream::iter(0..members)
        .map(|index| {
            let (c, m) = (index / options.members, index % options.members);
            async move {
                let uid = format!("fan-c{c}-m{m}");
                let mut lean = Lean::connect(
                    target.protocol,
                    target.url(index),
                    &target.app_id,
                    index,
                    &uid,
                )
                .await?;
                lean.subscribe(&format!("fanout-{c}")).await?;
                anyhow::Ok((c, m, lean))
            }
        })
        .buffer_unordered(SETUP_CONCURRENCY);
    let mut connections = Vec::with_capacity(members);
    while let Some(connection) = opened.next().await {
        connections.push(connection?);
        common::progress("fanout: joining", connections.len() as u64, members as u64);
    }
    drop(opened);
    // Joins leave work behind (member events to everyone already in): sending starts once the
    // members have heard nothing for a while, so the first second measures messages, not joins.
    let connections = settle(connections).await?;
    tokio::time::sleep(Duration::from_secs_f64(options.warmup)).await;

    let (stop_tx, stop_rx) = watch::channel(false);
    let counters = Arc::new(Counters::default());
    // Sending starts once every member runs.
    let started = Instant::now() + Duration::from_millis(200);
    let start_micros = common::now_micros() + 200_000;
    let timeline = Arc::new(Timeline::new(
        start_micros,
        options.seconds.ceil() as usize + 30,
    ));
    let cpu_before = common::server_cpu(target);
    let generator_before = common::own_cpu();
    let members: Vec<_> = connections
        .into_iter()
        .map(|(c, m, lean)| {
            // Message i goes to channel i % C, from sender (i / C) % k of that channel.
            let schedule = (m < senders_per_channel).then(|| Schedule {
                channel: format!("fanout-{c}"),
                messages: (0..total)
                    .filter(|i| {
                        i % channels == c as u64 && (i / channels) % per_channel == m as u64
                    })
                    .collect(),
                rate: options.rate,
                size: options.size,
            });
            let edge = (c * options.members + m) % target.urls.len();
            let member = tokio::spawn(member(
                lean,
                schedule,
                (started, start_micros),
                stop_rx.clone(),
                counters.clone(),
                timeline.clone(),
            ));
            (edge, member)
        })
        .collect();

    loop {
        let sent = counters.sent.load(Ordering::Relaxed);
        common::progress("fanout: sending", sent, total);
        if sent >= total || started.elapsed().as_secs_f64() > options.seconds + 30.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let send_seconds = started.elapsed().as_secs_f64();
    let sent = counters.sent.load(Ordering::Relaxed);
    // A refused send is answered (with an error), not lost: only accepted ones must arrive. (A
    // generator that falls behind sends in bursts, which Parley's per-user rate limit refuses.)
    let accepted = sent - counters.refused.load(Ordering::Relaxed).min(sent);
    let expected_per_message = options.members as u64 - 1;
    let expected = accepted * expected_per_message;
    // Late deliveries: wait while they still come (a minute at most).
    let mut last = counters.delivered.load(Ordering::Relaxed);
    let mut quiet_since = Instant::now();
    let waiting_since = Instant::now();
    while last < expected
        && quiet_since.elapsed() < Duration::from_secs(3)
        && waiting_since.elapsed() < Duration::from_secs(60)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = counters.delivered.load(Ordering::Relaxed);
        if now > last {
            (last, quiet_since) = (now, Instant::now());
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = common::server_cpu(target) - cpu_before;
    let generator_cpu = common::own_cpu() - generator_before;
    let _ = stop_tx.send(true);
    let mut latency = common::histogram();
    // Per URL: with a sender on the first and members on each, the others' figures are the
    // crossing's (edge to edge, or region to region).
    let mut by_url = vec![common::histogram(); target.urls.len()];
    let mut count = 0;
    for (edge, member) in members {
        let received = member.await??;
        count += received.count;
        latency.add(&received.latency)?;
        by_url[edge].add(&received.latency)?;
    }

    let report = json!({
        "scenario": "fanout",
        "system": target.protocol.name(),
        "channels": options.channels,
        "members_per_channel": options.members,
        "senders_per_channel": senders_per_channel,
        "rate": options.rate,
        "seconds": options.seconds,
        "size_bytes": options.size,
        "sent": sent,
        "refused": counters.refused.load(Ordering::Relaxed),
        "first_refusal": *counters.first_refusal.lock().expect("refusal lock poisoned"),
        "send_seconds": send_seconds,
        "expected_deliveries": expected,
        "delivered": count,
        "lost": expected.saturating_sub(count),
        "deliveries_per_second": count as f64 / elapsed,
        "latency": common::percentiles(&latency),
        "latency_by_url": target.urls.iter().zip(&by_url).map(|(url, latency)| {
            json!({ "url": url, "latency": common::percentiles(latency) })
        }).collect::<Vec<_>>(),
        "server_cpu_seconds": cpu,
        "deliveries_per_server_cpu_second": if cpu > 0.0 { count as f64 / cpu } else { 0.0 },
        "generator_cpu_seconds": generator_cpu,
        "timeline": timeline.to_json(),
    });
    println!(
        "fanout ({}): {} channels × {} members, {sent} messages ({} refused) at {}/s of {} B: {count}/{expected} deliveries ({} lost), latency p50 {} ms p99 {} ms max {} ms, server CPU {cpu:.2} s ({:.0} deliveries per CPU-second), generator CPU {generator_cpu:.2} s",
        target.protocol.name(),
        options.channels,
        options.members,
        report["refused"],
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
    if target.urls.len() > 1 {
        for (url, latency) in target.urls.iter().zip(&by_url) {
            println!(
                "  members on {url}: {} deliveries, latency p50 {} ms p99 {} ms max {} ms",
                latency.len(),
                latency.value_at_quantile(0.5) as f64 / 1000.0,
                latency.value_at_quantile(0.99) as f64 / 1000.0,
                latency.max() as f64 / 1000.0,
            );
        }
    }
    Ok(report)
}

/// One member: counts its deliveries and their latency, publishes its schedule (if it is a
/// sender), keeps its connection alive, until told to stop.
async fn member(
    mut lean: Lean,
    schedule: Option<Schedule>,
    (started, start_micros): (Instant, u64),
    mut stop: watch::Receiver<bool>,
    counters: Arc<Counters>,
    timeline: Arc<Timeline>,
) -> anyhow::Result<Received> {
    let mut received = Received {
        count: 0,
        latency: common::histogram(),
    };
    let keepalive = lean
        .protocol
        .keepalive()
        .unwrap_or(Duration::from_secs(3600));
    let mut keepalive = tokio::time::interval_at((Instant::now() + keepalive).into(), keepalive);
    let mut next = 0;
    let due = |schedule: &Option<Schedule>, next: usize| {
        schedule.as_ref().and_then(|schedule| {
            let i = *schedule.messages.get(next)?;
            let offset = Duration::from_secs_f64(i as f64 / schedule.rate);
            Some((started + offset, start_micros + offset.as_micros() as u64))
        })
    };
    loop {
        let publish_at = due(&schedule, next);
        tokio::select! {
            frame = lean.next() => match frame {
                Some(Ok(frame)) => {
                    if let Some(answer) = lean.answer(&frame) {
                        lean.send(answer).await?;
                    }
                    let bytes: &[u8] = match &frame {
                        Message::Text(text) => text.as_bytes(),
                        Message::Binary(bytes) => bytes,
                        _ => continue,
                    };
                    let now = common::now_micros();
                    let mut found = 0;
                    wire::deliveries(bytes, |intended| {
                        let latency = now.saturating_sub(intended).max(1);
                        let _ = received.latency.record(latency);
                        timeline.record(now, latency);
                        found += 1;
                    });
                    received.count += found;
                    counters.delivered.fetch_add(found, Ordering::Relaxed);
                    if found == 0
                        && let Some(refusal) = wire::refusal(lean.protocol, bytes)
                    {
                        counters.refused.fetch_add(1, Ordering::Relaxed);
                        counters
                            .first_refusal
                            .lock()
                            .expect("refusal lock poisoned")
                            .get_or_insert(refusal);
                    }
                }
                Some(Err(error)) => anyhow::bail!("member connection failed: {error}"),
                None => anyhow::bail!("member connection closed by the server"),
            },
            () = sleep_until(publish_at.map(|(at, _)| at)) => {
                let schedule = schedule.as_ref().expect("a publish time comes from a schedule");
                let intended = publish_at.expect("due").1;
                let frame = lean.publish_frame(&schedule.channel, wire::payload(intended, schedule.size));
                lean.send(frame).await?;
                counters.sent.fetch_add(1, Ordering::Relaxed);
                next += 1;
            }
            _ = keepalive.tick() => {
                if let Some(frame) = lean.keepalive_frame() {
                    lean.send(frame).await?;
                }
            }
            _ = stop.changed() => break,
        }
    }
    lean.close().await;
    Ok(received)
}

/// How long the members must hear nothing before sending starts (at most `SETTLE_LIMIT`).
const QUIET: Duration = Duration::from_millis(300);
const SETTLE_LIMIT: Duration = Duration::from_secs(30);

/// Reads (and answers) what the members are sent until nothing has come for `QUIET`, and hands
/// the connections back.
async fn settle(
    connections: Vec<(usize, usize, Lean)>,
) -> anyhow::Result<Vec<(usize, usize, Lean)>> {
    let frames = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let readers: Vec<_> = connections
        .into_iter()
        .map(|(c, m, mut lean)| {
            let (frames, mut stop) = (frames.clone(), stop_rx.clone());
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        frame = lean.next() => {
                            let frame = frame.context("member connection closed while settling")??;
                            frames.fetch_add(1, Ordering::Relaxed);
                            if let Some(answer) = lean.answer(&frame) {
                                lean.send(answer).await?;
                            }
                        }
                        _ = stop.changed() => return anyhow::Ok((c, m, lean)),
                    }
                }
            })
        })
        .collect();
    let begun = Instant::now();
    let mut seen = frames.load(Ordering::Relaxed);
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < QUIET && begun.elapsed() < SETTLE_LIMIT {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = frames.load(Ordering::Relaxed);
        if now != seen {
            (seen, quiet_since) = (now, Instant::now());
        }
    }
    let _ = stop_tx.send(true);
    let mut connections = Vec::with_capacity(readers.len());
    for reader in readers {
        connections.push(reader.await??);
    }
    Ok(connections)
}

/// Sleeps until `at`, or for ever when there is nothing to wait for.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
