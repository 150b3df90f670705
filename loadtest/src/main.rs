//! `parley-loadtest`: drives a running Parley over real WebSockets and prints what it measured,
//! including the server's memory and CPU (read from /proc for `--server-pid`).
//!
//! ```text
//! cargo run --release -p parley-loadtest -- idle --url ws://127.0.0.1:8080/v1/ws --app-id APP --server-pid PID --connections 2000
//! cargo run --release -p parley-loadtest -- fanout --url … --app-id APP --server-pid PID --members 500 --messages 200
//! cargo build --release -p parley && cargo run --release -p parley-loadtest -- failover --rounds 5
//! ```
//! The app must take logins without a token (`parley dev --app-id … ` without a certificate).

mod failover;

use std::time::Duration;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use clap::Subcommand;
use parley_client::Client;
use parley_client::ClientConfig;
use parley_client::Event;
use parley_client::Message;
use tokio::sync::mpsc;

#[derive(Parser)]
struct Cli {
    #[arg(long, default_value = "ws://127.0.0.1:8080/v1/ws")]
    url: String,
    #[arg(long, default_value = "")]
    app_id: String,
    /// The server process, for its memory and CPU figures (idle, fanout).
    #[arg(long, default_value_t = 0)]
    server_pid: u32,
    #[command(subcommand)]
    test: Test,
}

#[derive(Subcommand)]
enum Test {
    /// Logged-in connections that do nothing: server memory per connection.
    Idle {
        #[arg(long, default_value_t = 2000)]
        connections: usize,
    },
    /// One channel, `members` members, `messages` sent by one of them: deliveries per second and
    /// per server CPU-second.
    Fanout {
        #[arg(long, default_value_t = 500)]
        members: usize,
        #[arg(long, default_value_t = 200)]
        messages: usize,
    },
    /// Starts its own cluster of `parley run` processes (3 meta, 3 owners, 2 edges, Redis),
    /// kills an owner with SIGKILL and times how long until each of its channels serves again.
    Failover(failover::Options),
}

/// Resident memory (bytes) and CPU time used so far (seconds) of a process.
fn usage(pid: u32) -> anyhow::Result<(u64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).context("read status")?;
    let rss_kb: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|value| value.parse().ok())
        .context("VmRSS")?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).context("read stat")?;
    // Fields after the command name (which may hold spaces): utime is the 12th, stime the 13th.
    let after_name = &stat[stat.rfind(')').context("stat format")? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    Ok((rss_kb * 1024, ticks / 100.0))
}

async fn connect(
    url: &str,
    app_id: &str,
    uid: String,
) -> anyhow::Result<(Client, mpsc::Receiver<Event>)> {
    let config = ClientConfig::new(url, app_id, uid).reconnect(false);
    Client::login(config)
        .await
        .map_err(|error| anyhow::anyhow!("login: {error}"))
}

async fn connect_many(
    url: &str,
    app_id: &str,
    prefix: &str,
    count: usize,
) -> anyhow::Result<Vec<(Client, mpsc::Receiver<Event>)>> {
    let mut clients = Vec::with_capacity(count);
    // Logins are rate limited per uid, not per server; connect in modest batches.
    for chunk in (0..count).collect::<Vec<_>>().chunks(100) {
        let batch = futures_util::future::try_join_all(
            chunk
                .iter()
                .map(|n| connect(url, app_id, format!("{prefix}{n}"))),
        )
        .await?;
        clients.extend(batch);
    }
    Ok(clients)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.test {
        Test::Failover(options) => failover::run(options).await?,
        Test::Idle { connections } => {
            let (rss_before, _) = usage(cli.server_pid)?;
            let clients = connect_many(&cli.url, &cli.app_id, "idle-", connections).await?;
            tokio::time::sleep(Duration::from_secs(2)).await;
            let (rss_after, _) = usage(cli.server_pid)?;
            let per_connection = (rss_after.saturating_sub(rss_before)) as f64 / connections as f64;
            println!(
                "idle: {connections} logged-in connections, server RSS {:.1} MB -> {:.1} MB, {:.1} KB per connection",
                rss_before as f64 / 1e6,
                rss_after as f64 / 1e6,
                per_connection / 1024.0
            );
            drop(clients);
        }
        Test::Fanout { members, messages } => {
            let mut clients = connect_many(&cli.url, &cli.app_id, "member-", members).await?;
            for (client, _) in &clients {
                client
                    .join("fanout")
                    .await
                    .map_err(|error| anyhow::anyhow!("join: {error}"))?;
            }
            let (sender, _) = clients.remove(0);
            let receivers: Vec<mpsc::Receiver<Event>> = clients
                .into_iter()
                .map(|(client, events)| {
                    // Keep the clients alive for the whole run.
                    std::mem::forget(client);
                    events
                })
                .collect();
            let expected = messages * receivers.len();
            let (done_tx, mut done_rx) = mpsc::channel(receivers.len());
            for mut events in receivers {
                let done_tx = done_tx.clone();
                tokio::spawn(async move {
                    let mut got = 0;
                    while got < messages {
                        match events.recv().await {
                            Some(Event::ChannelMessage(_)) => got += 1,
                            Some(_) => {}
                            None => break,
                        }
                    }
                    let _ = done_tx.send(got).await;
                });
            }
            drop(done_tx);
            let (_, cpu_before) = usage(cli.server_pid)?;
            let started = Instant::now();
            for n in 0..messages {
                // 60 messages per second per sender is the product limit: stay just under it.
                sender
                    .send_message("fanout", Message::text(format!("message {n}")))
                    .await
                    .map_err(|error| anyhow::anyhow!("send: {error}"))?;
                tokio::time::sleep(Duration::from_millis(17)).await;
            }
            let mut delivered = 0;
            while let Some(got) = done_rx.recv().await {
                delivered += got;
            }
            let elapsed = started.elapsed().as_secs_f64();
            let (_, cpu_after) = usage(cli.server_pid)?;
            let cpu = cpu_after - cpu_before;
            println!(
                "fanout: {members} members, {messages} messages, {delivered}/{expected} deliveries in {elapsed:.1} s, server CPU {cpu:.2} s, {:.0} deliveries per server CPU-second",
                delivered as f64 / cpu.max(0.01)
            );
        }
    }
    Ok(())
}
