//! TLS as users and operators meet it: the client port over wss:// (the SDK and `parley client`
//! trusting the deployment's CA), a renewed certificate taken without a restart, and a
//! production cluster whose nodes speak only mutual TLS to each other.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use parley_client::Client;
use parley_client::ClientConfig;
use parley_client::Event;
use parley_client::Message;
use parley_client::PeerMessageOptions;
use parley_client::PeerMessageResult;
use parley_proto::v1;
use parley_proto::v1::ErrorCode;
use parley_testkit::CUSTOMER_KEY;
use parley_testkit::CUSTOMER_SECRET;
use parley_testkit::PROMPTLY;
use parley_testkit::ProcessCluster;
use parley_testkit::TestServer;
use parley_testkit::fresh_temp_dir;
use parley_testkit::processes::CLUSTER_APP_ID;
use parley_testkit::processes::CLUSTER_SECRET;
use parley_tls::CertFiles;
use parley_tls::testing::TestPki;
use parley_tls::testing::common_name;
use tokio::io::AsyncBufReadExt;
use tokio::io::AsyncWriteExt;
use tokio::io::BufReader;
use tokio::process::Command;

async fn next_peer_text(events: &mut tokio::sync::mpsc::Receiver<Event>) -> String {
    tokio::time::timeout(PROMPTLY, async {
        loop {
            match events.recv().await {
                Some(Event::MessageFromPeer(received)) => {
                    match received.message.and_then(|body| body.content) {
                        Some(v1::message_body::Content::Text(text)) => return text,
                        other => panic!("not text: {other:?}"),
                    }
                }
                Some(_) => {}
                None => panic!("events ended"),
            }
        }
    })
    .await
    .expect("a peer message in time")
}

/// The common name of the certificate `port` presents to a new connection.
async fn presented(ca: &std::path::Path, port: u16) -> String {
    let roots = parley_tls::roots_from_file(ca).unwrap();
    let config = parley_tls::client_config(roots, None, &[b"http/1.1"]).unwrap();
    let stream = parley_tls::connect(config, "127.0.0.1", port)
        .await
        .unwrap();
    let der = stream.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    common_name(&der).unwrap()
}

#[tokio::test]
async fn clients_speak_wss_and_a_renewed_certificate_needs_no_restart() {
    let dir = fresh_temp_dir();
    let pki = TestPki::new(&dir);
    let files = pki.issue("edge", "edge-first");
    let cert = parley_tls::ReloadingCert::load(files).unwrap();
    let config = parley_tls::server_config(cert, None).unwrap();
    let server = TestServer::builder()
        .without_certificate()
        .edge(|edge| edge.tls = Some(config))
        .start()
        .await;
    let port = server.addr.port();
    let url = format!("wss://127.0.0.1:{port}/v1/ws");
    let app = server.app_id();

    // `parley client`, trusting the deployment's CA through SSL_CERT_FILE.
    let mut alice = Command::new(env!("CARGO_BIN_EXE_parley"))
        .args(["client", "--url", &url, "--app-id", app, "--uid", "alice"])
        .arg("--stay")
        .env("SSL_CERT_FILE", &pki.ca)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut alice_out = BufReader::new(alice.stdout.take().unwrap()).lines();
    let mut line = async || -> serde_json::Value {
        let line = tokio::time::timeout(PROMPTLY, alice_out.next_line())
            .await
            .expect("a line in time")
            .unwrap()
            .expect("output open");
        serde_json::from_str(&line).unwrap()
    };
    assert_eq!(line().await["reason"], "LOGIN_SUCCESS");

    // The SDK, trusting the CA by configuration.
    let (bob, mut bob_events) =
        Client::login(ClientConfig::new(&url, app, "bob").tls_roots(&pki.ca))
            .await
            .unwrap();
    let sent = bob
        .send_message_to_peer(
            "alice",
            Message::text("over tls"),
            PeerMessageOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(sent.result(), PeerMessageResult::ReceivedByPeer);
    let received = line().await;
    assert_eq!(received["event"], "MessageFromPeer");
    assert_eq!(received["text"], "over tls");

    // Plain text on the TLS port, or a server the client's CA did not sign: no session.
    let plain = Client::login(ClientConfig::new(
        format!("ws://127.0.0.1:{port}/v1/ws"),
        app,
        "carol",
    ))
    .await
    .err()
    .expect("no session over plain text");
    assert_eq!(plain.code, ErrorCode::Unavailable);
    let other_dir = fresh_temp_dir();
    let other = TestPki::new(&other_dir);
    let untrusted = Client::login(ClientConfig::new(&url, app, "carol").tls_roots(&other.ca))
        .await
        .err()
        .expect("no session with an untrusted server");
    assert_eq!(untrusted.code, ErrorCode::Unavailable);
    assert!(untrusted.message.contains("certificate"), "{untrusted:?}");

    // Renewal: the files are rewritten; new connections get the new certificate, and the
    // sessions already open carry on.
    assert_eq!(presented(&pki.ca, port).await, "edge-first");
    pki.issue("edge", "edge-renewed");
    tokio::time::sleep(parley_tls::RECHECK_EVERY + Duration::from_millis(200)).await;
    assert_eq!(presented(&pki.ca, port).await, "edge-renewed");
    alice
        .stdin
        .as_mut()
        .unwrap()
        .write_all(
            b"{\"id\":1,\"op\":\"sendMessageToPeer\",\"peerId\":\"bob\",\"text\":\"still here\"}\n",
        )
        .await
        .unwrap();
    assert_eq!(next_peer_text(&mut bob_events).await, "still here");

    // The server API's gRPC over https://, as `parley admin` uses it.
    let admin = Command::new(env!("CARGO_BIN_EXE_parley"))
        .args(["admin", "--server", &format!("https://127.0.0.1:{port}")])
        .args(["--app-id", app])
        .args([
            "--customer-key",
            &format!("{CUSTOMER_KEY}:{CUSTOMER_SECRET}"),
        ])
        .args([
            "send-peer",
            "--from",
            "ops",
            "--to",
            "bob",
            "--text",
            "from ops",
        ])
        .env("SSL_CERT_FILE", &pki.ca)
        .output()
        .await
        .unwrap();
    assert!(
        admin.status.success(),
        "{} {}",
        String::from_utf8_lossy(&admin.stdout),
        String::from_utf8_lossy(&admin.stderr)
    );
    assert_eq!(next_peer_text(&mut bob_events).await, "from ops");
    let (carol, _) = Client::login(ClientConfig::new(&url, app, "carol").tls_roots(&pki.ca))
        .await
        .unwrap();
    carol.logout().await.unwrap();
}

/// `--cluster-ca CA --cluster-cert … --cluster-key …`: mutual TLS with `identity`.
fn cluster_flags(ca: &Path, identity: &CertFiles) -> Vec<String> {
    let flag = |name: &str, path: &Path| [name.to_owned(), path.to_str().unwrap().to_owned()];
    [
        flag("--cluster-ca", ca),
        flag("--cluster-cert", &identity.cert),
        flag("--cluster-key", &identity.key),
    ]
    .concat()
}

/// `parley cluster status` against the cluster, with these extra arguments; its exit status.
async fn cluster_status(cluster: &ProcessCluster, extra: &[String]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_parley"))
        .args([
            "cluster",
            "status",
            "--meta",
            &cluster.meta_addresses().join(","),
        ])
        .args(extra)
        .env("PARLEY_CLUSTER_SECRET", CLUSTER_SECRET)
        .output()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_production_cluster_takes_only_tls_between_nodes_and_from_clients() {
    let dir = fresh_temp_dir();
    let pki = TestPki::new(&dir);
    // Nodes know each other by the name every node certificate carries, not by address.
    let node = pki.issue_for("node", "node", &[parley_proto::cluster_auth::NODE_NAME]);
    let edge = pki.issue("edge", "parley-edge");
    let path = |path: &Path| path.to_str().unwrap().to_owned();
    let mut tls_args = cluster_flags(&pki.ca, &node);
    tls_args.extend([
        "--production".to_owned(),
        "--tls-cert".to_owned(),
        path(&edge.cert),
        "--tls-key".to_owned(),
        path(&edge.key),
    ]);
    let tls_args: Vec<&str> = tls_args.iter().map(String::as_str).collect();
    // This process asks meta how the cluster is doing: as a node would, over mutual TLS.
    let identity = parley_tls::ReloadingCert::load(node.clone()).unwrap();
    let roots = || parley_tls::roots_from_file(&pki.ca).unwrap();
    parley_proto::cluster_auth::set_cluster_tls(parley_proto::cluster_auth::ClusterTls {
        server: parley_tls::server_config(identity.clone(), Some(roots())).unwrap(),
        client: parley_tls::client_config(roots(), Some(identity), &[b"h2"]).unwrap(),
    })
    .unwrap();
    let cluster =
        ProcessCluster::start_with(env!("CARGO_BIN_EXE_parley").as_ref(), 1, 1, 2, &tls_args).await;

    // Users on two edges: each message crosses edge → owner → edge over mutual TLS.
    let urls = cluster.edge_urls();
    assert!(urls[0].starts_with("wss://"), "{urls:?}");
    let login = |url: &str, uid: &str| {
        Client::login(ClientConfig::new(url, CLUSTER_APP_ID, uid).tls_roots(&pki.ca))
    };
    let (alice, _alice_events) = login(&urls[0], "alice").await.unwrap();
    let (_bob, mut bob_events) = login(&urls[1], "bob").await.unwrap();
    let sent = alice
        .send_message_to_peer("bob", Message::text("mtls"), PeerMessageOptions::default())
        .await
        .unwrap();
    assert_eq!(sent.result(), PeerMessageResult::ReceivedByPeer);
    assert_eq!(next_peer_text(&mut bob_events).await, "mtls");
    let plain_url = urls[0].replacen("wss://", "ws://", 1);
    let plain = Client::login(ClientConfig::new(plain_url, CLUSTER_APP_ID, "carol"))
        .await
        .err()
        .expect("no session over plain text");
    assert_eq!(plain.code, ErrorCode::Unavailable);

    // An operator needs a certificate the cluster's CA signed.
    let with_cert = cluster_status(&cluster, &cluster_flags(&pki.ca, &node)).await;
    assert!(
        with_cert.status.success(),
        "{}",
        String::from_utf8_lossy(&with_cert.stderr)
    );
    let without_cert = cluster_status(&cluster, &[]).await;
    assert!(
        !without_cert.status.success(),
        "{}",
        String::from_utf8_lossy(&without_cert.stdout)
    );
    let other_dir = fresh_temp_dir();
    let stranger = TestPki::new(&other_dir);
    let foreign = stranger.issue_for(
        "operator",
        "intruder",
        &[parley_proto::cluster_auth::NODE_NAME],
    );
    let with_foreign_cert = cluster_status(&cluster, &cluster_flags(&pki.ca, &foreign)).await;
    assert!(!with_foreign_cert.status.success());
}

#[tokio::test]
async fn production_mode_refuses_to_start_without_tls() {
    let dir = fresh_temp_dir();
    let pki = TestPki::new(&dir);
    let node: CertFiles = pki.issue("node", "parley-node");
    let run = |extra: Vec<String>| {
        let dir = dir.clone();
        async move {
            let output = Command::new(env!("CARGO_BIN_EXE_parley"))
                .args(["run", "--node-id", "1", "--roles", "edge,owner,meta"])
                .args(["--meta", "1=127.0.0.1:1", "--grpc-addr", "127.0.0.1:0"])
                .args(["--http-addr", "127.0.0.1:0", "--ops-addr", "127.0.0.1:0"])
                .arg("--data-dir")
                .arg(&dir)
                .arg("--production")
                .args(extra)
                .output()
                .await
                .unwrap();
            assert!(!output.status.success());
            String::from_utf8_lossy(&output.stderr).into_owned()
        }
    };
    let error = run(Vec::new()).await;
    assert!(error.contains("needs mutual TLS"), "{error}");
    let error = run(cluster_flags(&pki.ca, &node)).await;
    assert!(error.contains("client port needs TLS"), "{error}");
}
