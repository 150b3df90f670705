//! A short run of every scenario against a real server: each completes and loses nothing. The
//! systems Parley is compared with (nats-server, Mosquitto, a Socket.IO server; installed by
//! scripts/test) are driven through the same scenarios, and the reports make an HTML page. (How
//! fast is for docs/benchmarks.md, not for tests.)

use std::path::PathBuf;

use parley_loadtest::churn;
use parley_loadtest::common::Target;
use parley_loadtest::connections;
use parley_loadtest::failover;
use parley_loadtest::fanout;
use parley_loadtest::flood;
use parley_loadtest::p2p;
use parley_loadtest::report;
use parley_loadtest::wire::Protocol;
use parley_testkit::TestServer;

async fn server() -> (TestServer, Target) {
    let server = TestServer::builder().without_certificate().start().await;
    let target = Target {
        urls: vec![server.ws_url()],
        app_id: server.app_id().to_owned(),
        // The server runs in this process.
        server_pids: vec![std::process::id()],
        protocol: Protocol::Parley,
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
        warmup: 0.0,
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

/// The `parley` binary the workspace's tests build, for the process clusters.
fn parley_binary() -> PathBuf {
    let parley = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/parley");
    assert!(
        parley.exists(),
        "{} is missing: the workspace's tests build it (cargo build -p parley)",
        parley.display()
    );
    parley
}

#[tokio::test]
async fn failover_times_an_owner_death_on_a_process_cluster() {
    let options = failover::Options {
        parley: parley_binary(),
        rounds: 1,
        channels: 3,
        interval_ms: 50,
    };
    failover::run(options).await.unwrap();
}

/// `--cluster`: the binary starts a cluster and spreads the members over both edges, so every
/// message crosses edge → owner → edge.
#[test]
fn fanout_runs_on_a_cluster_the_command_starts() {
    let json = tempdir().join("cluster-fanout.json");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_parley-loadtest"))
        .arg("--cluster")
        .arg(parley_binary())
        .arg("--json")
        .arg(&json)
        .args(["fanout", "--channels", "2", "--members", "4"])
        .args(["--rate", "40", "--seconds", "0.5", "--size", "64"])
        .status()
        .unwrap();
    assert!(status.success());
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["sent"], 20, "{report}");
    assert_eq!(report["delivered"], 20 * 3, "{report}");
    assert_eq!(report["lost"], 0);
    // Eight processes' CPU, counted.
    assert!(
        report["server_cpu_seconds"].as_f64().unwrap() > 0.0,
        "{report}"
    );
}

/// `--regions`: two regions and a broker; half the members are in the other region, so half
/// the deliveries cross over Kafka.
#[test]
fn fanout_crosses_the_regions_the_command_starts() {
    let json = tempdir().join("regions-fanout.json");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_parley-loadtest"))
        .arg("--regions")
        .arg(parley_binary())
        .arg("--json")
        .arg(&json)
        .args([
            "fanout",
            "--channels",
            "1",
            "--members",
            "4",
            "--warmup",
            "1",
        ])
        .args(["--rate", "20", "--seconds", "0.5", "--size", "64"])
        .status()
        .unwrap();
    assert!(status.success());
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["sent"], 10, "{report}");
    assert_eq!(report["delivered"], 10 * 3, "{report}");
    assert_eq!(report["lost"], 0);
    // The sender's region has one other member, the other region two.
    let by_url = report["latency_by_url"].as_array().unwrap();
    assert_eq!(by_url[0]["latency"]["count"], 10, "{report}");
    assert_eq!(by_url[1]["latency"]["count"], 20, "{report}");
}

/// A flood far past the channel's limits: senders are refused beyond their rate (the rest wait
/// on the server, not in its memory), members that stop reading are shed, and the well-behaved
/// users beside it are all served. (Whether the reading members keep up here depends on the
/// machine — a debug build reading 16 KB messages beside other tests may not, and is then
/// rightly shed — so that is for the release figures in docs/benchmarks.md.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_is_refused_and_shed_while_others_are_served() {
    let server = TestServer::builder()
        .without_certificate()
        // Small queues, so the stalled members fill theirs within the run.
        .edge(|edge| edge.outbound_queue = 64)
        .start()
        .await;
    let target = Target {
        urls: vec![server.ws_url()],
        app_id: server.app_id().to_owned(),
        server_pids: vec![std::process::id()],
        protocol: Protocol::Parley,
    };
    let options = flood::Options {
        readers: 4,
        stalled: 2,
        flooders: 4,
        // 500 per sender: the product takes 60 per second from one user.
        rate: 2000.0,
        sustainable: None,
        seconds: 2.0,
        baseline: 0.5,
        probes: 2,
        probe_rate: 5.0,
        size: 16_000,
    };
    let report = flood::run(&target, &options).await.unwrap();
    assert!(
        report["refusals"]["TOO_OFTEN"].as_u64().unwrap_or(0) > 0,
        "no TOO_OFTEN: {report}"
    );
    assert_eq!(report["stalled_shed"], 2, "{report}");
    assert!(
        report["delivered_per_second"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    assert_eq!(report["probe_baseline_failed"], 0, "{report}");
    assert_eq!(report["probe_flood_failed"], 0, "{report}");
    assert!(
        report["probe_flood"]["count"].as_u64().unwrap() >= 15,
        "{report}"
    );
}

#[tokio::test]
async fn churn_connections_come_and_go() {
    let (_server, target) = server().await;
    let options = churn::Options {
        rate: 40.0,
        seconds: 0.5,
        lifetime: 0.2,
        channels: 2,
    };
    let report = churn::run(&target, &options).await.unwrap();
    assert_eq!(report["connections"], 20, "{report}");
    assert_eq!(report["failed"], 0);
    assert_eq!(report["login_and_join_latency"]["count"], 20);
}

/// A peer system's server, killed when dropped.
struct Peer(std::process::Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port")
        .port()
}

/// Starts `program` with `args` and waits until `port` takes connections.
async fn start_peer(program: &str, args: &[&str], port: u16) -> Peer {
    let child = std::process::Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|error| panic!("start {program} (scripts/test installs it): {error}"));
    let peer = Peer(child);
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return peer;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{program} never listened on port {port}");
}

fn peer_fanout() -> fanout::Options {
    fanout::Options {
        channels: 2,
        members: 4,
        rate: 40.0,
        seconds: 0.5,
        size: 64,
        warmup: 0.0,
    }
}

/// Runs fan-out and connections against a peer and checks nothing was lost.
async fn measure_peer(target: Target) -> Vec<serde_json::Value> {
    let fanout = fanout::run(&target, &peer_fanout()).await.unwrap();
    assert_eq!(fanout["sent"], 20, "{fanout}");
    assert_eq!(fanout["expected_deliveries"], 20 * 3);
    assert_eq!(fanout["delivered"], 20 * 3, "{fanout}");
    assert_eq!(fanout["lost"], 0);
    let options = connections::Options {
        connections: 30,
        rate: 300.0,
        hold: 0.2,
    };
    let connections = connections::run(&target, &options).await.unwrap();
    assert_eq!(connections["connections"], 30, "{connections}");
    assert_eq!(connections["failed"], 0);
    vec![fanout, connections]
}

#[tokio::test]
async fn nats_is_measured_over_its_websocket_listener() {
    let dir = tempdir();
    let (port, client_port) = (free_port(), free_port());
    let config = dir.join("nats.conf");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{client_port}\nwebsocket {{ listen: \"127.0.0.1:{port}\", no_tls: true }}\n"
        ),
    )
    .unwrap();
    let server = start_peer("nats-server", &["-c", config.to_str().unwrap()], port).await;
    measure_peer(Target {
        urls: vec![format!("ws://127.0.0.1:{port}")],
        app_id: String::new(),
        server_pids: vec![server.0.id()],
        protocol: Protocol::Nats,
    })
    .await;
}

#[tokio::test]
async fn mosquitto_is_measured_over_mqtt() {
    let dir = tempdir();
    let port = free_port();
    let config = dir.join("mosquitto.conf");
    std::fs::write(
        &config,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\n"),
    )
    .unwrap();
    let server = start_peer("mosquitto", &["-c", config.to_str().unwrap()], port).await;
    measure_peer(Target {
        urls: vec![format!("tcp://127.0.0.1:{port}")],
        app_id: String::new(),
        server_pids: vec![server.0.id()],
        protocol: Protocol::MqttTcp,
    })
    .await;
}

#[tokio::test]
async fn socketio_is_measured_and_the_runs_make_a_report() {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("peers/socketio/server.mjs");
    assert!(
        script.with_file_name("node_modules").exists(),
        "run npm ci in loadtest/peers/socketio (scripts/test does)"
    );
    let port = free_port();
    let server = start_peer("node", &[script.to_str().unwrap(), &port.to_string()], port).await;
    let reports = measure_peer(Target {
        urls: vec![format!(
            "ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket"
        )],
        app_id: String::new(),
        server_pids: vec![server.0.id()],
        protocol: Protocol::Socketio,
    })
    .await;

    let dir = tempdir();
    let mut paths = Vec::new();
    for (name, report) in ["socketio-fanout", "socketio-connections"]
        .iter()
        .zip(&reports)
    {
        let path = dir.join(format!("{name}.json"));
        std::fs::write(&path, report.to_string()).unwrap();
        paths.push(path);
    }
    let out = dir.join("report.html");
    report::write(&report::Options {
        out: out.clone(),
        reports: paths,
    })
    .unwrap();
    let html = std::fs::read_to_string(out).unwrap();
    assert!(
        html.contains("<td>socketio-fanout</td><td>socketio</td>"),
        "{html}"
    );
    assert!(html.contains("<td>socketio-connections</td><td>socketio</td>"));
    assert!(html.contains("<polyline"), "the throughput plot has a line");
}

fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "parley-loadtest-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
