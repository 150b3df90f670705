//! What every scenario needs: logged-in clients, the server's resource use, latency histograms,
//! and a progress line.

use std::io::Write;
use std::time::Duration;
use std::time::SystemTime;

use anyhow::Context;
use hdrhistogram::Histogram;
use parley_client::Client;
use parley_client::ClientConfig;
use parley_client::Event;
use serde_json::json;
use tokio::sync::mpsc;

use crate::wire::Protocol;

/// Where the load goes.
#[derive(Clone, Debug)]
pub struct Target {
    /// Client URLs (a cluster's edges): connection `n` goes to `urls[n % urls.len()]`.
    pub urls: Vec<String>,
    pub app_id: String,
    /// The server processes (a cluster's nodes), for their memory and CPU summed (none: not
    /// measured).
    pub server_pids: Vec<u32>,
    /// What the server speaks (`fanout`, `connections` and `churn` measure other systems too).
    pub protocol: Protocol,
}

impl Target {
    /// The URL connection `index` uses.
    pub fn url(&self, index: usize) -> &str {
        &self.urls[index % self.urls.len()]
    }
}

/// Resident memory (bytes) and CPU time used so far (seconds) of a process.
pub fn usage(pid: u32) -> anyhow::Result<(u64, f64)> {
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

/// This process's CPU seconds so far (the load generator's own cost).
pub fn own_cpu() -> f64 {
    usage(std::process::id()).map_or(0.0, |(_, cpu)| cpu)
}

/// The server's resident memory and CPU seconds so far, summed over its processes (zeros when
/// it is not measured).
pub fn server_usage(target: &Target) -> anyhow::Result<(u64, f64)> {
    target
        .server_pids
        .iter()
        .try_fold((0, 0.0), |(rss, cpu), pid| {
            let (more_rss, more_cpu) = usage(*pid)?;
            Ok((rss + more_rss, cpu + more_cpu))
        })
}

/// The server's CPU seconds so far, or 0 when it is not measured.
pub fn server_cpu(target: &Target) -> f64 {
    server_usage(target).map_or(0.0, |(_, cpu)| cpu)
}

pub async fn connect(
    target: &Target,
    index: usize,
    uid: String,
) -> anyhow::Result<(Client, mpsc::Receiver<Event>)> {
    let config = ClientConfig::new(target.url(index), &target.app_id, uid).reconnect(false);
    Client::login(config)
        .await
        .map_err(|error| anyhow::anyhow!("login: {error}"))
}

/// `count` logged-in clients named `{prefix}{n}`, connected in batches of 100.
pub async fn connect_many(
    target: &Target,
    prefix: &str,
    count: usize,
) -> anyhow::Result<Vec<(Client, mpsc::Receiver<Event>)>> {
    let mut clients = Vec::with_capacity(count);
    for chunk in (0..count).collect::<Vec<_>>().chunks(100) {
        let batch = futures_util::future::try_join_all(
            chunk
                .iter()
                .map(|n| connect(target, *n, format!("{prefix}{n}"))),
        )
        .await?;
        clients.extend(batch);
    }
    Ok(clients)
}

/// Microseconds since the Unix epoch: the clock send times are written in.
pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_micros() as u64)
}

/// A histogram of latencies in microseconds, 1 µs to 100 s, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("valid histogram bounds")
}

/// p50 … max of `histogram`, in milliseconds, as JSON.
pub fn percentiles(histogram: &Histogram<u64>) -> serde_json::Value {
    let ms = |micros: u64| micros as f64 / 1000.0;
    json!({
        "count": histogram.len(),
        "p50_ms": ms(histogram.value_at_quantile(0.50)),
        "p90_ms": ms(histogram.value_at_quantile(0.90)),
        "p99_ms": ms(histogram.value_at_quantile(0.99)),
        "p999_ms": ms(histogram.value_at_quantile(0.999)),
        "max_ms": ms(histogram.max()),
    })
}

/// A progress line on standard error, rewritten in place.
pub fn progress(what: &str, done: u64, total: u64) {
    let width = 30;
    let filled = (done.min(total) * width / total.max(1)) as usize;
    let bar = format!(
        "{}{}",
        "#".repeat(filled),
        "-".repeat(width as usize - filled)
    );
    let _ = write!(std::io::stderr(), "\r{what} [{bar}] {done}/{total}   ");
    if done >= total {
        let _ = writeln!(std::io::stderr());
    }
}

/// Waits `duration`, or less if `done` says so first (checked every 50 ms).
pub async fn wait_until(duration: Duration, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + duration;
    while tokio::time::Instant::now() < deadline && !done() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
