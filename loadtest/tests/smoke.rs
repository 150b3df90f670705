//! A short run of every scenario against a real server: each completes and loses nothing. (How
//! fast is for docs/benchmarks.md, not for tests.)

use std::path::PathBuf;

use parley_loadtest::common::Target;
use parley_loadtest::connections;
use parley_loadtest::failover;
use parley_loadtest::fanout;
use parley_loadtest::p2p;
use parley_testkit::TestServer;

async fn server() -> (TestServer, Target) {
    let server = TestServer::builder().without_certificate().start().await;
    let target = Target {
        url: server.ws_url(),
        app_id: server.app_id().to_owned(),
        // The server runs in this process.
        server_pid: std::process::id(),
    };
    (server, target)
}

#[tokio::test]
async fn connections_are_opened_held_and_measured() {
    let (_server, target) = server().await;
    let options = connections::Options {
        connections: 60,
        rate: 600.0,
        hold: 0.2,
    };
    let report = connections::run(&target, &options).await.unwrap();
    assert_eq!(report["connections"], 60);
    assert!(report["server_rss_after_bytes"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn fanout_delivers_every_message_to_every_member() {
    let (_server, target) = server().await;
    let options = fanout::Options {
        channels: 2,
        members: 5,
        // Two senders per channel: 60 per second is over one user's limit.
        rate: 120.0,
        seconds: 0.5,
        size: 64,
    };
    let report = fanout::run(&target, &options).await.unwrap();
    assert_eq!(report["sent"], 60, "{report}");
    assert_eq!(report["senders_per_channel"], 2);
    assert_eq!(report["expected_deliveries"], 60 * 4);
    assert_eq!(report["delivered"], 60 * 4, "{report}");
    assert_eq!(report["lost"], 0);
    assert_eq!(report["latency"]["count"], 60 * 4);
    assert!(report["latency"]["p99_ms"].as_f64().unwrap() > 0.0);
}

#[tokio::test]
async fn p2p_messages_are_all_acknowledged() {
    let (_server, target) = server().await;
    let options = p2p::Options {
        users: 6,
        rate: 10.0,
        seconds: 0.5,
        size: 32,
    };
    let report = p2p::run(&target, &options).await.unwrap();
    assert_eq!(report["sent"], 30, "{report}");
    assert_eq!(report["acknowledged"], 30, "{report}");
    assert_eq!(report["lost"], 0);
}

#[tokio::test]
async fn failover_times_an_owner_death_on_a_process_cluster() {
    let parley = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/parley");
    assert!(
        parley.exists(),
        "{} is missing: the workspace's tests build it (cargo build -p parley)",
        parley.display()
    );
    let options = failover::Options {
        parley,
        rounds: 1,
        channels: 3,
        interval_ms: 50,
    };
    failover::run(options).await.unwrap();
}
