//! `flood`: one channel flooded far past what the server can deliver — senders that never wait
//! for a reply, members that read everything and members that read nothing — while
//! well-behaved users beside it exchange acknowledged peer messages. Reports the well-behaved
//! users' latency and failures before and during the flood, the server's memory over time
//! (peak against before), what was offered, taken and refused, and which stalled members the
//! server shed.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use futures_util::StreamExt;
use hdrhistogram::Histogram;
use parley_client::Message as SdkMessage;
use parley_client::PeerMessageOptions;
use parley_client::PeerMessageResult;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::common;
use crate::common::Target;
use crate::wire;
use crate::wire::Lean;

const CHANNEL: &str = "flood";
/// Connections opened at once while setting up.
const SETUP_CONCURRENCY: usize = 100;

#[derive(clap::Args, Clone, Debug)]
pub struct Options {
    /// Members of the flooded channel that read everything.
    #[arg(long, default_value_t = 200)]
    pub readers: usize,
    /// Members that join and never read: slow consumers the server must shed.
    #[arg(long, default_value_t = 20)]
    pub stalled: usize,
    /// Users sending into the channel without waiting for replies.
    #[arg(long, default_value_t = 100)]
    pub flooders: usize,
    /// Messages per second offered, over all flooders.
    #[arg(long, default_value_t = 10_000.0)]
    pub rate: f64,
    /// Messages per second the server sustains into this channel (from a `fanout` run with as
    /// many members): the report states the flood as a multiple of it.
    #[arg(long)]
    pub sustainable: Option<f64>,
    /// How long to flood.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// How long the well-behaved users run alone first.
    #[arg(long, default_value_t = 3.0)]
    pub baseline: f64,
    /// Well-behaved users, each sending acknowledged peer messages to the next.
    #[arg(long, default_value_t = 10)]
    pub probes: usize,
    /// Messages per second each well-behaved user sends.
    #[arg(long, default_value_t = 5.0)]
    pub probe_rate: f64,
    /// Bytes per flood message.
    #[arg(long, default_value_t = 100)]
    pub size: usize,
}

#[derive(Default)]
struct Counters {
    offered: AtomicU64,
    taken: AtomicU64,
    refused: AtomicU64,
    refusals: Mutex<std::collections::BTreeMap<String, u64>>,
    delivered: AtomicU64,
    /// Connections the server closed during the run, by kind.
    readers_closed: AtomicU64,
    flooders_closed: AtomicU64,
}

/// Latency and failures of the well-behaved users in one phase.
struct Phase {
    latency: Histogram<u64>,
    failed: u64,
}

pub async fn run(target: &Target, options: &Options) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(
        options.probes >= 2,
        "well-behaved users talk in pairs or more"
    );
    anyhow::ensure!(options.flooders >= 1, "a flood needs a sender");
    let members = options.readers + options.stalled + options.flooders;
    let mut opened = futures_util::stream::iter(0..members)
        .map(|index| async move {
            let uid = format!("flood-{index}");
            let url = target.url(index);
            let mut lean = Lean::connect(target.protocol, url, &target.app_id, index, &uid).await?;
            lean.subscribe(CHANNEL).await?;
            anyhow::Ok((index, lean))
        })
        .buffer_unordered(SETUP_CONCURRENCY);
    let mut connections = Vec::with_capacity(members);
    while let Some(connection) = opened.next().await {
        connections.push(connection?);
        common::progress("flood: joining", connections.len() as u64, members as u64);
    }
    drop(opened);
    connections.sort_by_key(|(index, _)| *index);
    let mut connections: Vec<Lean> = connections.into_iter().map(|(_, lean)| lean).collect();
    let flooders: Vec<Lean> = connections.split_off(options.readers + options.stalled);
    let stalled: Vec<Lean> = connections.split_off(options.readers);
    let readers = connections;

    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut reading = Vec::new();
    for lean in readers {
        reading.push(tokio::spawn(read_all(lean, counters.clone(), stop.clone())));
    }

    // The server's memory, sampled every 100 ms.
    let (rss_before, _) = common::server_usage(target)?;
    let rss_peak = Arc::new(AtomicU64::new(rss_before));
    let sampler = {
        let (target, rss_peak, stop) = (target.clone(), rss_peak.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Ok((rss, _)) = common::server_usage(&target) {
                    rss_peak.fetch_max(rss, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    // The well-behaved users live on a thread and runtime of their own: a generator busy
    // reading the flood must not be what delays them.
    let started = Instant::now() + Duration::from_secs(1);
    let flood_at = started + Duration::from_secs_f64(options.baseline);
    let flood_until = flood_at + Duration::from_secs_f64(options.seconds);
    let probing = {
        let (target, options) = (target.clone(), options.clone());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let probes = common::connect_many(&target, "flood-probe-", options.probes).await?;
                tokio::time::sleep_until(started.into()).await;
                probe(probes, options, started, flood_at, flood_until).await
            })
        })
    };

    tokio::time::sleep_until(flood_at.into()).await;
    let cpu_before = common::server_cpu(target);
    let per_flooder = options.rate / options.flooders as f64;
    let mut flooding = Vec::new();
    for (n, lean) in flooders.into_iter().enumerate() {
        let phase = Duration::from_secs_f64(n as f64 / options.rate);
        flooding.push(tokio::spawn(flood(
            lean,
            per_flooder,
            flood_at + phase,
            flood_until,
            options.size,
            counters.clone(),
        )));
    }
    for task in flooding {
        task.await?;
    }
    let cpu = common::server_cpu(target) - cpu_before;
    let (baseline, during) = tokio::task::spawn_blocking(move || probing.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the well-behaved users' thread panicked"))??;
    let (rss_end, _) = common::server_usage(target)?;
    stop.store(true, Ordering::Relaxed);
    // Readers read from the flood's start until now (the server works off its backlog after
    // the senders stop).
    let reading_seconds = flood_at.elapsed().as_secs_f64();
    let _ = sampler.await;
    for task in reading {
        task.abort();
    }
    // A stalled member the server shed finds its connection closed behind what it had queued.
    let mut shed = 0;
    for lean in stalled {
        if closed_within(lean, Duration::from_secs(3)).await {
            shed += 1;
        }
    }

    let seconds = options.seconds;
    let offered = counters.offered.load(Ordering::Relaxed);
    let taken = counters.taken.load(Ordering::Relaxed);
    let refused = counters.refused.load(Ordering::Relaxed);
    let delivered = counters.delivered.load(Ordering::Relaxed);
    let refusals = counters.refusals.lock().expect("refusals lock").clone();
    let report = json!({
        "scenario": "flood",
        "readers": options.readers,
        "stalled": options.stalled,
        "flooders": options.flooders,
        "offered_per_second": offered as f64 / seconds,
        "sustainable_per_second": options.sustainable,
        "times_sustainable": options.sustainable.map(|rate| options.rate / rate),
        "taken_per_second": taken as f64 / seconds,
        "refused_per_second": refused as f64 / seconds,
        "refusals": refusals,
        "unanswered": offered.saturating_sub(taken + refused),
        "delivered": delivered,
        "delivered_per_second": delivered as f64 / reading_seconds,
        "readers_closed": counters.readers_closed.load(Ordering::Relaxed),
        "flooders_closed": counters.flooders_closed.load(Ordering::Relaxed),
        "stalled_shed": shed,
        "server_rss_before_bytes": rss_before,
        "server_rss_peak_bytes": rss_peak.load(Ordering::Relaxed),
        "server_rss_after_bytes": rss_end,
        "server_cpu_seconds": cpu,
        "probes": options.probes,
        "probe_rate": options.probe_rate,
        "probe_baseline": common::percentiles(&baseline.latency),
        "probe_baseline_failed": baseline.failed,
        "probe_flood": common::percentiles(&during.latency),
        "probe_flood_failed": during.failed,
    });
    let mb = |bytes: &serde_json::Value| bytes.as_u64().unwrap_or(0) as f64 / 1e6;
    println!(
        "flood: {offered} offered in {seconds} s ({:.0}/s{}): {:.0}/s taken, {:.0}/s refused, {:.0} deliveries/s to {} readers; {shed}/{} stalled members shed; server RSS {:.1} MB before, {:.1} MB peak, {:.1} MB after; server CPU {cpu:.2} s",
        offered as f64 / seconds,
        options
            .sustainable
            .map(|rate| format!(", {:.1}× sustainable", options.rate / rate))
            .unwrap_or_default(),
        taken as f64 / seconds,
        refused as f64 / seconds,
        delivered as f64 / reading_seconds,
        options.readers,
        options.stalled,
        mb(&report["server_rss_before_bytes"]),
        mb(&report["server_rss_peak_bytes"]),
        mb(&report["server_rss_after_bytes"]),
    );
    println!(
        "flood: well-behaved users: before p50 {} ms p99 {} ms ({} failed of {}); during p50 {} ms p99 {} ms max {} ms ({} failed of {})",
        report["probe_baseline"]["p50_ms"],
        report["probe_baseline"]["p99_ms"],
        baseline.failed,
        baseline.latency.len() + baseline.failed,
        report["probe_flood"]["p50_ms"],
        report["probe_flood"]["p99_ms"],
        report["probe_flood"]["max_ms"],
        during.failed,
        during.latency.len() + during.failed,
    );
    Ok(report)
}

/// Reads everything, counting deliveries and pinging as the protocol asks, until the run stops
/// or the server closes.
async fn read_all(mut lean: Lean, counters: Arc<Counters>, stop: Arc<AtomicBool>) {
    let every = lean
        .protocol
        .keepalive()
        .unwrap_or(Duration::from_secs(3600));
    let mut keepalive = tokio::time::interval_at((Instant::now() + every).into(), every);
    loop {
        tokio::select! {
            frame = lean.next() => match frame {
                Some(Ok(frame)) => {
                    let mut count = 0;
                    wire::deliveries(&frame.into_data(), |_| count += 1);
                    counters.delivered.fetch_add(count, Ordering::Relaxed);
                }
                _ => break,
            },
            _ = keepalive.tick() => {
                if let Some(ping) = lean.keepalive_frame()
                    && lean.send(ping).await.is_err()
                {
                    break;
                }
            }
        }
    }
    if !stop.load(Ordering::Relaxed) {
        counters.readers_closed.fetch_add(1, Ordering::Relaxed);
    }
}

/// Sends at `rate` from `from` to `until` without waiting for replies, reading replies as they
/// come; then gives the last replies a moment.
async fn flood(
    mut lean: Lean,
    rate: f64,
    from: Instant,
    until: Instant,
    size: usize,
    counters: Arc<Counters>,
) {
    let mut next = from;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let linger = until + Duration::from_secs(1);
    loop {
        let now = Instant::now();
        if now >= linger {
            break;
        }
        let sending = next < until;
        tokio::select! {
            _ = tokio::time::sleep_until(next.into()), if sending => {
                let payload = wire::payload(common::now_micros(), size);
                let frame = lean.publish_frame(CHANNEL, payload);
                counters.offered.fetch_add(1, Ordering::Relaxed);
                if lean.send(frame).await.is_err() {
                    counters.flooders_closed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                next += interval;
            }
            _ = tokio::time::sleep_until(linger.into()), if !sending => break,
            frame = lean.next() => match frame {
                Some(Ok(frame)) => count_reply(&frame, &counters),
                _ => {
                    counters.flooders_closed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            },
        }
    }
    lean.close().await;
}

fn count_reply(frame: &Message, counters: &Counters) {
    let Message::Binary(data) = frame else {
        return;
    };
    match wire::reply(data) {
        Some(Ok(())) => {
            counters.taken.fetch_add(1, Ordering::Relaxed);
        }
        Some(Err(error)) => {
            counters.refused.fetch_add(1, Ordering::Relaxed);
            *counters
                .refusals
                .lock()
                .expect("refusals lock")
                .entry(error.code().as_str_name().to_owned())
                .or_default() += 1;
        }
        None => {}
    }
}

/// The well-behaved users: each sends acknowledged peer messages to the next at its rate, from
/// `started` to `until`; latency is counted from each message's intended send time, into the
/// phase (before or during the flood) that time falls in.
async fn probe(
    probes: Vec<(
        parley_client::Client,
        tokio::sync::mpsc::Receiver<parley_client::Event>,
    )>,
    options: Options,
    started: Instant,
    flood_at: Instant,
    until: Instant,
) -> anyhow::Result<(Phase, Phase)> {
    let count = probes.len();
    let mut tasks = Vec::new();
    let mut inboxes = Vec::new();
    for (me, (client, mut events)) in probes.into_iter().enumerate() {
        inboxes.push(tokio::spawn(async move {
            while events.recv().await.is_some() {}
        }));
        let rate = options.probe_rate;
        tasks.push(tokio::spawn(async move {
            let mut phases = [
                Phase {
                    latency: common::histogram(),
                    failed: 0,
                },
                Phase {
                    latency: common::histogram(),
                    failed: 0,
                },
            ];
            let offset = Duration::from_secs_f64(me as f64 / count as f64 / rate);
            let peer = format!("flood-probe-{}", (me + 1) % count);
            for n in 0.. {
                let intended = started + offset + Duration::from_secs_f64(n as f64 / rate);
                if intended >= until {
                    break;
                }
                tokio::time::sleep_until(intended.into()).await;
                let options = PeerMessageOptions::default();
                let sent = client
                    .send_message_to_peer(&peer, SdkMessage::text(format!("probe {n}")), options)
                    .await;
                let phase = &mut phases[usize::from(intended >= flood_at)];
                match sent {
                    Ok(result) if result.result() == PeerMessageResult::ReceivedByPeer => {
                        let micros = intended.elapsed().as_micros() as u64;
                        let _ = phase.latency.record(micros.max(1));
                    }
                    _ => phase.failed += 1,
                }
            }
            (client, phases)
        }));
    }
    let mut baseline = Phase {
        latency: common::histogram(),
        failed: 0,
    };
    let mut during = Phase {
        latency: common::histogram(),
        failed: 0,
    };
    let mut clients = Vec::new();
    for task in tasks {
        let (client, [before, flood]) = task.await?;
        baseline.latency.add(&before.latency)?;
        baseline.failed += before.failed;
        during.latency.add(&flood.latency)?;
        during.failed += flood.failed;
        clients.push(client);
    }
    drop(clients);
    for inbox in inboxes {
        inbox.abort();
    }
    Ok((baseline, during))
}

/// Whether the server closes `lean` within `within`, reading whatever it had queued first.
async fn closed_within(mut lean: Lean, within: Duration) -> bool {
    tokio::time::timeout(within, async {
        loop {
            match lean.next().await {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return true,
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .unwrap_or(false)
}
