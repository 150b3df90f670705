//! `kill -9` of `parley dev` mid-traffic loses nothing that was acknowledged: offline messages,
//! history entries and channel attributes are all there after a restart on the same data dir.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use parley_client::Client;
use parley_client::ClientConfig;
use parley_client::Event;
use parley_client::Message;
use parley_client::PeerMessageOptions;
use parley_client::PeerMessageResult;
use parley_proto::v1;
use parley_proto::v1::reply::Result as ReplyResult;
use parley_proto::v1::request::Op;
use parley_testkit::PROMPTLY;
use tokio::io::AsyncBufReadExt;
use tokio::io::BufReader;
use tokio::process::Child;
use tokio::process::Command;

const APP_ID: &str = "0123456789abcdef0123456789abcdef";
const CERTIFICATE: &str = "00112233445566778899aabbccddeeff";

/// Starts `parley dev` on a free port; returns the process and its WebSocket URL.
async fn start_dev(data_dir: &Path) -> (Child, String) {
    start_dev_with(data_dir, &[]).await
}

async fn start_dev_with(data_dir: &Path, extra: &[&str]) -> (Child, String) {
    let mut dev = Command::new(env!("CARGO_BIN_EXE_parley"))
        .args(["dev", "--http-addr", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .args(["--app-id", APP_ID, "--app-certificate", CERTIFICATE])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn parley dev");
    let mut banner = BufReader::new(dev.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(PROMPTLY, banner.next_line())
        .await
        .expect("banner in time")
        .unwrap()
        .expect("a banner line");
    let url = first
        .split_whitespace()
        .find(|word| word.starts_with("ws://"))
        .expect("the banner names the url")
        .to_owned();
    tokio::spawn(async move { while let Ok(Some(_)) = banner.next_line().await {} });
    (dev, url)
}

fn config(url: &str, uid: &str) -> ClientConfig {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32;
    ClientConfig::new(url, APP_ID, uid)
        .token(parley_core::token::build_007(
            APP_ID,
            CERTIFICATE,
            uid,
            3600,
            now,
            1,
        ))
        .reconnect(false)
}

fn text_of(body: &Option<v1::MessageBody>) -> String {
    match body.as_ref().and_then(|body| body.content.as_ref()) {
        Some(v1::message_body::Content::Text(text)) => text.clone(),
        _ => String::new(),
    }
}

/// Sends a request and waits for the server's answer.
async fn acknowledge(client: &Client, op: Op) -> Result<(), parley_client::ErrorCode> {
    let pending = client.request(op).await.map_err(|error| error.code)?;
    pending.wait().await.map(drop).map_err(|error| error.code)
}

#[derive(Default)]
struct Acknowledged {
    offline: BTreeSet<String>,
    history: BTreeSet<String>,
    attribute: Option<u64>,
    /// The attribute write last sent: in flight at the kill, it may have been applied without
    /// its acknowledgement arriving.
    attribute_sent: Option<u64>,
}

#[tokio::test]
async fn sigkill_mid_traffic_loses_nothing_acknowledged() {
    let data_dir = parley_testkit::fresh_temp_dir();
    let (mut dev, url) = start_dev(&data_dir).await;
    let (alice, _alice_events) = Client::login(config(&url, "alice")).await.unwrap();
    alice.join("room").await.unwrap();

    let acknowledged = Arc::new(Mutex::new(Acknowledged::default()));
    let traffic = {
        let acknowledged = acknowledged.clone();
        let alice = alice.clone();
        tokio::spawn(async move {
            for n in 0u64.. {
                // Two messages per round stay under the 60 messages per second limit.
                tokio::time::sleep(Duration::from_millis(40)).await;
                let offline = format!("offline {n}");
                let options = PeerMessageOptions {
                    enable_offline_messaging: true,
                    enable_historical_messaging: false,
                };
                match alice
                    .send_message_to_peer("bob", Message::text(&offline), options)
                    .await
                {
                    Ok(sent) if sent.result() == PeerMessageResult::CachedByServer => {
                        acknowledged.lock().unwrap().offline.insert(offline);
                    }
                    _ => return,
                }
                let kept = format!("history {n}");
                let op = Op::SendMessage(v1::SendMessageRequest {
                    channel_id: "room".into(),
                    message: Message::text(&kept).0.into(),
                    enable_historical_messaging: true,
                });
                if acknowledge(&alice, op).await.is_err() {
                    return;
                }
                acknowledged.lock().unwrap().history.insert(kept);
                let op = Op::SetChannelAttributes(v1::SetChannelAttributesRequest {
                    channel_id: "room".into(),
                    attributes: [("last".to_owned(), n.to_string())].into_iter().collect(),
                    enable_notification_to_channel_members: false,
                });
                // Attribute writes are rate limited (10 per 5 s): a refusal is no failure.
                acknowledged.lock().unwrap().attribute_sent = Some(n);
                match acknowledge(&alice, op).await {
                    Ok(()) => acknowledged.lock().unwrap().attribute = Some(n),
                    Err(parley_client::ErrorCode::TooOften) => {}
                    Err(_) => return,
                }
            }
        })
    };

    // Let traffic run, then kill the server without warning while it is still coming.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if acknowledged.lock().unwrap().offline.len() >= 40 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline && !traffic.is_finished(),
            "traffic stalled before the kill"
        );
    }
    dev.start_kill().unwrap();
    dev.wait().await.unwrap();
    tokio::time::timeout(PROMPTLY, traffic)
        .await
        .expect("traffic stops once the server is gone")
        .unwrap();
    let acknowledged = std::mem::take(&mut *acknowledged.lock().unwrap());
    assert!(acknowledged.offline.len() >= 40);

    let (_dev, url) = start_dev(&data_dir).await;

    // Every acknowledged offline message reaches bob.
    let (_bob, mut bob_events) = Client::login(config(&url, "bob")).await.unwrap();
    let mut received = BTreeSet::new();
    while let Ok(Some(event)) =
        tokio::time::timeout(Duration::from_millis(500), bob_events.recv()).await
    {
        if let Event::MessageFromPeer(message) = event {
            assert!(message.is_offline_message);
            received.insert(text_of(&message.message));
        }
    }
    let missing: Vec<_> = acknowledged.offline.difference(&received).collect();
    assert!(missing.is_empty(), "offline messages lost: {missing:?}");

    // Every acknowledged history entry is there.
    let (alice, _alice_events) = Client::login(config(&url, "alice")).await.unwrap();
    alice.join("room").await.unwrap();
    let mut stored = BTreeSet::new();
    let mut cursor = String::new();
    loop {
        let op = Op::QueryHistory(v1::QueryHistoryRequest {
            conversation: Some(v1::query_history_request::Conversation::ChannelId(
                "room".into(),
            )),
            limit: 100,
            cursor: cursor.clone(),
            ..Default::default()
        });
        let Ok(ReplyResult::QueryHistory(page)) = alice.request(op).await.unwrap().wait().await
        else {
            panic!("history query failed");
        };
        stored.extend(
            page.messages
                .iter()
                .map(|message| text_of(&message.message)),
        );
        if page.next.is_empty() {
            break;
        }
        cursor = page.next;
    }
    let missing: Vec<_> = acknowledged.history.difference(&stored).collect();
    assert!(missing.is_empty(), "history entries lost: {missing:?}");

    // The channel attribute holds the last acknowledged value (or the one in flight at the kill).
    let op = Op::GetChannelAttributes(v1::GetChannelAttributesRequest {
        channel_id: "room".into(),
        keys: Vec::new(),
    });
    let Ok(ReplyResult::ChannelAttributes(attributes)) =
        alice.request(op).await.unwrap().wait().await
    else {
        panic!("attribute query failed");
    };
    let last: u64 = attributes.attributes[0].value.parse().unwrap();
    let acknowledged_last = acknowledged
        .attribute
        .expect("some attribute write was acknowledged");
    // Writes between the two may have been refused (rate limit), so the one in flight can be
    // any later one.
    assert!(
        last == acknowledged_last || Some(last) == acknowledged.attribute_sent,
        "attribute is {last}: neither the last acknowledged ({acknowledged_last}) nor the one in flight ({:?})",
        acknowledged.attribute_sent
    );
    let _ = std::fs::remove_dir_all(&data_dir);
}

/// `parley dev --store redis://…` as a user runs it: what was acknowledged survives the process.
#[tokio::test]
async fn parley_dev_on_redis_keeps_state_across_a_sigkill() {
    let redis = parley_testkit::RedisServer::start();
    let data_dir = parley_testkit::fresh_temp_dir();
    let store = ["--store", &redis.url()];
    let (mut dev, url) = start_dev_with(&data_dir, &store).await;
    let (alice, _events) = Client::login(config(&url, "alice")).await.unwrap();
    let options = PeerMessageOptions {
        enable_offline_messaging: true,
        enable_historical_messaging: true,
    };
    let sent = alice
        .send_message_to_peer("bob", Message::text("kept in redis"), options)
        .await
        .unwrap();
    assert_eq!(sent.result(), PeerMessageResult::CachedByServer);
    dev.start_kill().unwrap();
    dev.wait().await.unwrap();

    let (_dev, url) = start_dev_with(&data_dir, &store).await;
    let (bob, mut bob_events) = Client::login(config(&url, "bob")).await.unwrap();
    let event = tokio::time::timeout(PROMPTLY, async {
        loop {
            if let Some(Event::MessageFromPeer(message)) = bob_events.recv().await {
                return message;
            }
        }
    })
    .await
    .expect("the offline message arrives");
    assert!(event.is_offline_message);
    assert_eq!(text_of(&event.message), "kept in redis");
    let op = Op::CountHistory(v1::CountHistoryRequest {
        conversation: Some(v1::count_history_request::Conversation::PeerId(
            "alice".into(),
        )),
        ..Default::default()
    });
    let Ok(ReplyResult::CountHistory(count)) = bob.request(op).await.unwrap().wait().await else {
        panic!("history count failed");
    };
    assert_eq!(count.count, 1);
    let _ = std::fs::remove_dir_all(&data_dir);
}
