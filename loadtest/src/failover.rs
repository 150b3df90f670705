//! `failover`: the time from an owner's death (SIGKILL) until each channel it owned serves
//! again, measured on a cluster of `parley run` processes this command starts itself.
//!
//! Per round: channels that the ring places on the victim each get a sender on one edge (one
//! user per channel, to stay under the per-user message rate) and share a receiver on the
//! other; each sender sends every `--interval-ms`; the victim is killed; a channel counts as
//! serving again when a message sent after the kill reaches the receiver. The figure per
//! channel is from the kill to that message's send.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use std::time::Instant;

use parley_client::Client;
use parley_client::ClientConfig;
use parley_client::Event;
use parley_client::Message;
use parley_core::ids::AppId;
use parley_core::ids::ChannelId;
use parley_core::ids::NodeId;
use parley_core::ring::DEFAULT_VIRTUAL_NODES;
use parley_core::ring::Ring;
use parley_proto::cluster::v1::NodeStatus;
use parley_testkit::ProcessCluster;
use parley_testkit::processes::CLUSTER_APP_ID;
use parley_testkit::processes::Role;

#[derive(clap::Args)]
pub struct Options {
    /// The `parley` binary to run (build it with `cargo build --release -p parley`).
    #[arg(long, default_value = "target/release/parley")]
    pub parley: PathBuf,
    /// Clusters to start, one owner killed in each.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Channels on the victim per round.
    #[arg(long, default_value_t = 20)]
    pub channels: usize,
    /// How often the sender sends to each channel.
    #[arg(long, default_value = "20")]
    pub interval_ms: u64,
}

pub async fn run(options: Options) -> anyhow::Result<()> {
    anyhow::ensure!(
        options.parley.exists(),
        "{} not found: cargo build --release -p parley",
        options.parley.display()
    );
    let mut all = Vec::new();
    for round in 1..=options.rounds {
        let times = one_round(&options).await?;
        let sorted = sorted_ms(&times);
        println!(
            "round {round}: {} channels back after {:.0} ms (first) … {:.0} ms (last)",
            times.len(),
            sorted[0],
            sorted[sorted.len() - 1]
        );
        all.extend(times);
    }
    let sorted = sorted_ms(&all);
    let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
    let (min, p50, p90, max) = (sorted[0], at(0.5), at(0.9), sorted[sorted.len() - 1]);
    let (channels, rounds) = (sorted.len(), options.rounds);
    println!(
        "failover over {channels} channels in {rounds} rounds: min {min:.0} ms, p50 {p50:.0} ms, p90 {p90:.0} ms, max {max:.0} ms"
    );
    println!(
        "{{\"scenario\":\"failover\",\"channels\":{channels},\"rounds\":{rounds},\"min_ms\":{min:.0},\"p50_ms\":{p50:.0},\"p90_ms\":{p90:.0},\"max_ms\":{max:.0}}}"
    );
    Ok(())
}

fn sorted_ms(times: &[Duration]) -> Vec<f64> {
    let mut sorted: Vec<f64> = times
        .iter()
        .map(|time| time.as_secs_f64() * 1000.0)
        .collect();
    sorted.sort_by(f64::total_cmp);
    sorted
}

async fn one_round(options: &Options) -> anyhow::Result<Vec<Duration>> {
    let mut cluster = ProcessCluster::start(&options.parley, 3, 3, 2).await;
    let victim = cluster.ids(Role::Owner)[1];
    let owners: Vec<NodeId> = cluster.ids(Role::Owner).into_iter().map(NodeId).collect();
    let ring = Ring::new(0, &owners, DEFAULT_VIRTUAL_NODES);
    let app = AppId::parse(CLUSTER_APP_ID).map_err(|error| anyhow::anyhow!("{error}"))?;
    let channels: Vec<String> = (0..)
        .map(|n| format!("failover{n}"))
        .filter(|name| {
            ChannelId::parse(name)
                .ok()
                .and_then(|channel| ring.channel_owner(&app, &channel))
                == Some(NodeId(victim))
        })
        .take(options.channels)
        .collect();
    let urls = cluster.edge_urls();
    let login = |url: &str, uid: &str| {
        let mut config = ClientConfig::new(url, CLUSTER_APP_ID, uid);
        config.request_timeout = Duration::from_secs(2);
        Client::login(config)
    };
    let (receiver, mut received) = login(&urls[1], "receiver")
        .await
        .map_err(|error| anyhow::anyhow!("login: {error}"))?;
    let mut senders = Vec::new();
    for (n, channel) in channels.iter().enumerate() {
        receiver.join(channel).await?;
        let (sender, events) = login(&urls[0], &format!("sender{n}"))
            .await
            .map_err(|error| anyhow::anyhow!("login: {error}"))?;
        sender.join(channel).await?;
        senders.push((sender, events, channel.clone()));
    }

    // Message texts carry the instant they were sent, relative to the kill.
    let started = Instant::now();
    let interval = Duration::from_millis(options.interval_ms);
    let sending: Vec<_> = senders
        .into_iter()
        .map(|(sender, events, channel)| {
            tokio::spawn(async move {
                let _events = events;
                loop {
                    let sent_at = started.elapsed().as_micros();
                    // Failures are expected while the owner is gone.
                    let _ = tokio::time::timeout(
                        Duration::from_secs(2),
                        sender.send_message(&channel, Message::text(sent_at.to_string())),
                    )
                    .await;
                    tokio::time::sleep(interval).await;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.kill(victim);
    let kill = Instant::now();
    let kill_offset = kill.duration_since(started);
    let mut back: BTreeMap<String, Duration> = BTreeMap::new();
    let deadline = kill + Duration::from_secs(30);
    while back.len() < channels.len() {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let Ok(Some(event)) = tokio::time::timeout(remaining, received.recv()).await else {
            anyhow::bail!(
                "only {} of {} channels came back within 30 s",
                back.len(),
                channels.len()
            );
        };
        if let Event::ChannelMessage(message) = event
            && let Some(parley_proto::v1::message_body::Content::Text(text)) =
                message.message.and_then(|body| body.content)
            && let Ok(sent_at) = text.parse::<u64>()
        {
            let sent_at = Duration::from_micros(sent_at);
            if sent_at > kill_offset {
                back.entry(message.channel_id)
                    .or_insert(sent_at - kill_offset);
            }
        }
    }
    for task in sending {
        task.abort();
    }
    let topology = cluster.topology().await;
    let down = topology
        .map(|topology| {
            parley_testkit::processes::status(&topology, victim) == Some(NodeStatus::Down)
        })
        .unwrap_or(false);
    anyhow::ensure!(down, "meta never marked the killed owner down");
    drop(cluster);
    Ok(back.into_values().collect())
}
