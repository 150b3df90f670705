//! Load on a cluster under faults, and the oracle that judges it afterwards.
//!
//! [`Load`] logs users in (spread over the edges, each knowing the others for reconnects),
//! joins them to a few channels and has each send, in turn, an acknowledged peer message to the
//! next user (offline messaging on) and a channel message (history on), recording what was
//! acknowledged and what every user's application saw. [`Load::finish`] stops it, lets what is
//! in flight land, logs everyone out and answers a [`Verdict`]:
//!
//! - every acknowledged peer message reached its receiver (live or from the offline inbox);
//! - every acknowledged channel message reached every other member, or that member was told
//!   its recovery of the channel was incomplete for that sequence number;
//! - no message reached an application twice;
//! - every node that routed by a ring epoch had the same owners for it;
//! - after everyone logged out, no channel still lists a member (no orphaned membership).

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::time::Duration;

use parley_client::Client;
use parley_client::ClientConfig;
use parley_client::Event;
use parley_client::Message;
use parley_client::PeerMessageOptions;
use parley_client::PeerMessageResult;
use parley_proto::v1;
use tokio::task::JoinHandle;

/// How long after the load stops everything acknowledged must have arrived.
const SETTLE: Duration = Duration::from_secs(6);
/// How long memberships may take to clear after the last logout (members of a session lost
/// with a killed edge linger for their grace period).
const MEMBERSHIP_DEADLINE: Duration = Duration::from_secs(40);

#[derive(Default)]
struct Record {
    /// (receiver, text) of every acknowledged peer message.
    acked_peer: Vec<(usize, String)>,
    /// (sender, channel, seq, text) of every acknowledged channel message.
    acked_channel: Vec<(usize, String, u64, String)>,
    /// Per user: how many times each text arrived.
    received_peer: Vec<HashMap<String, u32>>,
    received_channel: Vec<HashMap<String, u32>>,
    /// Per user: (channel, from_seq, to_seq) of every recovery the server said was incomplete.
    told_gaps: Vec<Vec<(String, u64, u64)>>,
    /// What each data node said its ring was, by epoch.
    rings: BTreeMap<u64, BTreeSet<Vec<u64>>>,
    peer_sends: u64,
    channel_sends: u64,
}

pub struct Load {
    users: usize,
    channels: Vec<String>,
    app_id: String,
    urls: Vec<String>,
    pause: Duration,
    stop: Arc<AtomicBool>,
    record: Arc<Mutex<Record>>,
    tasks: Vec<JoinHandle<()>>,
    clients: Vec<Client>,
}

fn uid(user: usize) -> String {
    format!("user{user}")
}

fn text_of(body: Option<v1::MessageBody>) -> String {
    match body.and_then(|body| body.content) {
        Some(v1::message_body::Content::Text(text)) => text,
        _ => String::new(),
    }
}

impl Load {
    /// `users` users of `app_id` on the edges at `urls`, in `channels` channels each, every user
    /// sending one peer and one channel message per `pause`.
    pub async fn start(
        urls: &[String],
        app_id: &str,
        users: usize,
        channels: usize,
        pause: Duration,
    ) -> Load {
        let channels: Vec<String> = (0..channels).map(|n| format!("chaos-{n}")).collect();
        let record = Arc::new(Mutex::new(Record {
            received_peer: vec![HashMap::new(); users],
            received_channel: vec![HashMap::new(); users],
            told_gaps: vec![Vec::new(); users],
            ..Record::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let mut clients = Vec::new();
        let mut tasks = Vec::new();
        for user in 0..users {
            let first = user % urls.len();
            let others = urls
                .iter()
                .cycle()
                .skip(first + 1)
                .take(urls.len() - 1)
                .cloned();
            let config = ClientConfig::new(&urls[first], app_id, uid(user)).fallback_urls(others);
            let (client, mut events) = Client::login(config).await.expect("login");
            for channel in &channels {
                client.join(channel).await.expect("join");
            }
            let events_record = record.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(event) = events.recv().await {
                    let mut record = events_record.lock().expect("record lock");
                    match event {
                        Event::MessageFromPeer(message) => {
                            *record.received_peer[user]
                                .entry(text_of(message.message))
                                .or_default() += 1;
                        }
                        Event::ChannelMessage(message) => {
                            *record.received_channel[user]
                                .entry(text_of(message.message))
                                .or_default() += 1;
                        }
                        Event::ChannelRecovered(recovered) if !recovered.complete => {
                            record.told_gaps[user].push((
                                recovered.channel_id,
                                recovered.from_seq,
                                recovered.to_seq,
                            ));
                        }
                        _ => {}
                    }
                }
            }));
            clients.push(client);
        }
        let mut load = Load {
            users,
            channels,
            app_id: app_id.to_owned(),
            urls: urls.to_vec(),
            pause,
            stop,
            record,
            tasks,
            clients,
        };
        for user in 0..users {
            let task = tokio::spawn(load.send_loop(user));
            load.tasks.push(task);
        }
        load
    }

    fn send_loop(&self, user: usize) -> impl Future<Output = ()> + use<> {
        let (client, stop, record) = (
            self.clients[user].clone(),
            self.stop.clone(),
            self.record.clone(),
        );
        let (users, channels, pause) = (self.users, self.channels.clone(), self.pause);
        async move {
            let peer = (user + 1) % users;
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let text = format!("p:{user}:{n}");
                let options = PeerMessageOptions {
                    enable_offline_messaging: true,
                    ..PeerMessageOptions::default()
                };
                let sent = client
                    .send_message_to_peer(&uid(peer), Message::text(&text), options)
                    .await;
                let mut acked = false;
                if let Ok(sent) = sent
                    && matches!(
                        sent.result(),
                        PeerMessageResult::ReceivedByPeer | PeerMessageResult::CachedByServer
                    )
                {
                    acked = true;
                }
                {
                    let mut record = record.lock().expect("record lock");
                    record.peer_sends += 1;
                    if acked {
                        record.acked_peer.push((peer, text));
                    }
                }
                let text = format!("c:{user}:{n}");
                let channel = &channels[n as usize % channels.len()];
                let op = v1::request::Op::SendMessage(v1::SendMessageRequest {
                    channel_id: channel.clone(),
                    message: Some(Message::text(&text).0),
                    enable_historical_messaging: true,
                });
                let reply = match client.request(op).await {
                    Ok(pending) => pending.wait().await.ok(),
                    Err(_) => None,
                };
                {
                    let mut record = record.lock().expect("record lock");
                    record.channel_sends += 1;
                    if let Some(v1::reply::Result::SendMessage(result)) = reply {
                        record
                            .acked_channel
                            .push((user, channel.clone(), result.seq, text));
                    }
                }
                tokio::time::sleep(pause).await;
            }
        }
    }

    /// Samples every data node's ring (gRPC `host:port`s), by epoch, until the load stops.
    pub fn watch_rings(&mut self, addresses: Vec<String>) {
        let stop = self.stop.clone();
        let record = self.record.clone();
        self.tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                for address in &addresses {
                    if let Some(status) = crate::processes::node_status_at(address).await {
                        let owners: Vec<u64> = status
                            .members
                            .iter()
                            .filter(|member| member.owner)
                            .map(|member| member.node)
                            .collect();
                        record
                            .lock()
                            .expect("record lock")
                            .rings
                            .entry(status.ring_epoch)
                            .or_default()
                            .insert(owners);
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }));
    }

    /// Stops sending, lets what is in flight land, logs everyone out and judges the run.
    pub async fn finish(self) -> Verdict {
        self.stop.store(true, Ordering::Relaxed);
        tokio::time::sleep(SETTLE).await;
        let mut verdict = judge(&self.record.lock().expect("record lock"), self.users);
        for client in &self.clients {
            let _ = client.logout().await;
        }
        for task in self.tasks {
            task.abort();
        }
        verdict.orphans = orphaned_members(&self.urls, &self.app_id, &self.channels).await;
        verdict
    }
}

/// What the oracle makes of a record of `users` users.
fn judge(record: &Record, users: usize) -> Verdict {
    let mut verdict = Verdict {
        peer_sends: record.peer_sends,
        channel_sends: record.channel_sends,
        acked_peer: record.acked_peer.len() as u64,
        acked_channel: record.acked_channel.len() as u64,
        ring_epochs: record.rings.len() as u64,
        ..Verdict::default()
    };
    for (epoch, rings) in &record.rings {
        if rings.len() > 1 {
            verdict.violations.push(format!(
                "nodes disagreed on the owners of epoch {epoch}: {rings:?}"
            ));
        }
    }
    for (to, text) in &record.acked_peer {
        verdict.deliveries_checked += 1;
        if !record.received_peer[*to].contains_key(text) {
            verdict.lost_peer.push(format!("{text} to user{to}"));
        }
    }
    for (from, channel, seq, text) in &record.acked_channel {
        for user in (0..users).filter(|user| user != from) {
            verdict.deliveries_checked += 1;
            if record.received_channel[user].contains_key(text) {
                continue;
            }
            let told = record.told_gaps[user]
                .iter()
                .any(|(gap_channel, low, high)| {
                    gap_channel == channel && (*low..=*high).contains(seq)
                });
            if told {
                verdict.told_gaps += 1;
            } else {
                verdict
                    .lost_channel
                    .push(format!("{text} (seq {seq} of {channel}) to user{user}"));
            }
        }
    }
    for received in record.received_peer.iter().chain(&record.received_channel) {
        for (text, count) in received {
            if *count > 1 {
                verdict.duplicates.push(format!("{text} ×{count}"));
            }
        }
    }
    verdict
}

/// What a run under faults did, and what went wrong.
#[derive(Debug, Default)]
pub struct Verdict {
    pub peer_sends: u64,
    pub channel_sends: u64,
    pub acked_peer: u64,
    pub acked_channel: u64,
    /// Deliveries the oracle looked for: one per acknowledged peer message, one per other
    /// member per acknowledged channel message.
    pub deliveries_checked: u64,
    /// Channel deliveries missing, of which the member was told (an incomplete recovery).
    pub told_gaps: u64,
    pub ring_epochs: u64,
    pub lost_peer: Vec<String>,
    pub lost_channel: Vec<String>,
    pub duplicates: Vec<String>,
    /// "channel: members" still listed after everyone logged out.
    pub orphans: Vec<String>,
    /// Anything else the oracle refuses (rings that disagreed).
    pub violations: Vec<String>,
}

impl Verdict {
    /// Every broken invariant, a line each (at most five examples per kind).
    pub fn failures(&self) -> Vec<String> {
        let mut failures = self.violations.clone();
        let mut kind = |what: &str, found: &[String]| {
            if !found.is_empty() {
                failures.push(format!(
                    "{} {what}: {:?}",
                    found.len(),
                    &found[..found.len().min(5)]
                ));
            }
        };
        kind("acknowledged peer messages never arrived", &self.lost_peer);
        kind(
            "channel deliveries lost without telling the member",
            &self.lost_channel,
        );
        kind("messages reached an application twice", &self.duplicates);
        kind(
            "channels still list members after every logout",
            &self.orphans,
        );
        if self.acked_peer < 20 || self.acked_channel < 20 {
            failures.push(format!(
                "too little got through: {} peer, {} channel messages acknowledged",
                self.acked_peer, self.acked_channel
            ));
        }
        failures
    }

    pub fn assert_clean(&self) {
        let failures = self.failures();
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }
}

/// Channels that still list members once every user has logged out, as "channel: members":
/// asked from a fresh user on every edge (who sees itself), until the deadline.
async fn orphaned_members(urls: &[String], app_id: &str, channels: &[String]) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + MEMBERSHIP_DEADLINE;
    loop {
        let mut orphans = Vec::new();
        let mut asked = 0;
        for (n, url) in urls.iter().enumerate() {
            let inspector = format!("inspector{n}");
            let config = ClientConfig::new(url, app_id, &inspector).reconnect(false);
            // An edge a fault left dead is not asked.
            let Ok((client, _events)) = Client::login(config).await else {
                continue;
            };
            asked += 1;
            for channel in channels {
                let members = match client.join(channel).await {
                    Ok(()) => client.get_members(channel).await,
                    Err(error) => Err(error),
                };
                match members {
                    Ok(members) => {
                        let others: Vec<String> =
                            members.into_iter().filter(|m| *m != inspector).collect();
                        if !others.is_empty() {
                            orphans.push(format!("{channel}: {others:?}"));
                        }
                    }
                    Err(error) => orphans.push(format!("{channel}: {error}")),
                }
            }
            let _ = client.logout().await;
        }
        if asked == 0 {
            orphans.push("no edge took the inspector's login".to_owned());
        }
        if orphans.is_empty() || tokio::time::Instant::now() >= deadline {
            return orphans;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two users in one channel: user 0 sent peer message "p" and channel message "c" (seq 7),
    /// both acknowledged.
    fn record() -> Record {
        let mut record = Record {
            received_peer: vec![HashMap::new(); 2],
            received_channel: vec![HashMap::new(); 2],
            told_gaps: vec![Vec::new(); 2],
            ..Record::default()
        };
        record.acked_peer.push((1, "p".into()));
        record.acked_channel.push((0, "ch".into(), 7, "c".into()));
        record
    }

    #[test]
    fn what_arrived_once_is_clean() {
        let mut record = record();
        record.received_peer[1].insert("p".into(), 1);
        record.received_channel[1].insert("c".into(), 1);
        record.rings.entry(3).or_default().insert(vec![1, 2]);
        let verdict = judge(&record, 2);
        assert_eq!(verdict.deliveries_checked, 2);
        assert!(verdict.lost_peer.is_empty() && verdict.lost_channel.is_empty());
        assert!(verdict.duplicates.is_empty() && verdict.violations.is_empty());
    }

    #[test]
    fn losses_duplicates_and_split_rings_are_named() {
        let mut record = record();
        record.received_channel[1].insert("c".into(), 2);
        record.rings.entry(3).or_default().insert(vec![1, 2]);
        record.rings.entry(3).or_default().insert(vec![1]);
        let verdict = judge(&record, 2);
        assert_eq!(verdict.lost_peer, ["p to user1"]);
        assert_eq!(verdict.duplicates, ["c ×2"]);
        assert_eq!(verdict.violations.len(), 1, "{:?}", verdict.violations);
    }

    #[test]
    fn a_channel_gap_counts_only_when_the_member_was_not_told() {
        let mut record = record();
        record.received_peer[1].insert("p".into(), 1);
        let untold = judge(&record, 2);
        assert_eq!(untold.lost_channel, ["c (seq 7 of ch) to user1"]);
        record.told_gaps[1].push(("other".into(), 1, 10));
        assert_eq!(judge(&record, 2).lost_channel.len(), 1);
        record.told_gaps[1].push(("ch".into(), 5, 9));
        let told = judge(&record, 2);
        assert!(told.lost_channel.is_empty());
        assert_eq!(told.told_gaps, 1);
    }
}
